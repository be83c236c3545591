"""g2p-en's neural network on this project's fixed CMUdict test words: the
baseline the G2P results table compares with.

  pip install g2p_en      # not a dependency of the project
  python tools/g2p_en_baseline.py                 # stress removed
  python tools/g2p_en_baseline.py --stress        # stress must match

g2p-en (PyPI) looks a word up in CMUdict first and only falls back to its
network for unknown words; its lookup needs an NLTK download. Here every
test word goes through the network itself (`G2p.predict`), with the NLTK
lookup bypassed, so the figures measure the model, offline. The network was
trained on CMUdict, so it has probably seen many of these words. Scoring is
the project's own: a word is right if it matches any of its reference
pronunciations (`metrics.g2p_error_rates`).
"""

import os
import sys
import time
import types

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

from seq2seq_jax import metrics  # noqa: E402
from seq2seq_jax.cli import fail, write_json  # noqa: E402
from seq2seq_jax.config_defaults import get_config  # noqa: E402
from seq2seq_jax.data import cmudict_source, sources  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_bool("stress", False, "Keep stress digits (AH0/AH1) in predictions and references.")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")


def g2p_en_network():
  """g2p-en's G2p with its CMUdict lookup and NLTK downloads bypassed."""
  try:
    import nltk  # pylint: disable=import-outside-toplevel
  except ImportError:
    fail("g2p_en is not installed (pip install g2p_en); it is not a dependency of the project")
  nltk.download = lambda *args, **kwargs: False  # no network at import
  try:
    from g2p_en import g2p as module  # pylint: disable=import-outside-toplevel
  except ImportError:
    fail("g2p_en is not installed (pip install g2p_en); it is not a dependency of the project")
  module.cmudict = types.SimpleNamespace(dict=dict)  # an empty lookup: the network only
  return module.G2p()


def main(argv):
  del argv
  config = get_config()
  config.data.source = "cmudict"
  config.data.cmudict_stress = FLAGS.stress
  test = sources.load_splits(config.data, only=("test",))["test"]
  references = {}
  for word, phonemes in test:
    references.setdefault(word, []).append(phonemes)
  model = g2p_en_network()
  start = time.perf_counter()
  hypotheses = []
  for word in references:
    phonemes = " ".join(model.predict(word))
    hypotheses.append(phonemes if FLAGS.stress else cmudict_source.strip_stress(phonemes))
  seconds = time.perf_counter() - start
  wer, per = metrics.g2p_error_rates(hypotheses, list(references.values()))
  out = {"words": len(references), "stress": FLAGS.stress, "wer": wer, "per": per,
         "words_per_s": len(references) / seconds}
  print(f"g2p-en network on {out['words']:,} test words, stress "
        f"{'kept' if FLAGS.stress else 'removed'}: WER {100 * wer:.2f} %, PER {100 * per:.2f} %")
  if FLAGS.json:
    write_json(FLAGS.json, out)


if __name__ == "__main__":
  app.run(main)
