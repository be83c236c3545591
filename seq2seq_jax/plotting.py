"""Pictures people would rather look at than numbers: attention heat maps.

Matplotlib is imported at the first picture, not with this module (it takes
about 0.3 s, which a run that draws nothing should not pay), with its Agg
backend, so plotting works on machines with no display (servers, CI).
"""

import functools
import os
from typing import Sequence

import numpy as np


@functools.cache
def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _draw(ax, weights, src_tokens, tgt_tokens, title=None):
  image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=max(float(np.max(weights)), 1e-9),
                    aspect="auto", interpolation="nearest")
  ax.set_xticks(range(len(src_tokens)))
  ax.set_xticklabels([_show(t) for t in src_tokens], rotation=90, fontsize=8)
  ax.set_yticks(range(len(tgt_tokens)))
  ax.set_yticklabels([_show(t) for t in tgt_tokens], fontsize=8)
  ax.set_xlabel("source")
  ax.set_ylabel("output")
  if title:
    ax.set_title(title, fontsize=9)
  return image


def _show(token: str) -> str:
  return "␣" if token == " " else token


def attention_figure(examples: Sequence[dict], ncols: int = 3):
  """A figure with one heat map per example.

  Each example: {"weights": [tgt, src] array, "src_tokens": [...],
  "tgt_tokens": [...], "title": optional str}; weights are cropped to the
  token lists, so padding never shows.
  """
  n = max(len(examples), 1)
  ncols = min(ncols, n)
  nrows = (n + ncols - 1) // ncols
  fig, axes = _pyplot().subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
  for ax in axes.flat[n:]:
    ax.axis("off")
  for ax, ex in zip(axes.flat, examples):
    w = np.asarray(ex["weights"])[:len(ex["tgt_tokens"]), :len(ex["src_tokens"])]
    image = _draw(ax, w, ex["src_tokens"], ex["tgt_tokens"], ex.get("title"))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
  fig.tight_layout()
  return fig


def save_attention_png(path: str, examples: Sequence[dict], ncols: int = 3) -> None:
  """Writes `attention_figure(examples)` to `path` as PNG."""
  fig = attention_figure(examples, ncols)
  fig.savefig(path, dpi=100)
  _pyplot().close(fig)


def figure_to_array(path: str) -> np.ndarray:
  """Reads a PNG back as [height, width, 3] uint8 (for TensorBoard images)."""
  image = _pyplot().imread(path)
  if image.dtype != np.uint8:
    image = (np.clip(image, 0, 1) * 255).astype(np.uint8)
  return image[..., :3]


def save_heads_png(path: str, weights, src_tokens: Sequence[str], tgt_tokens: Sequence[str],
                   title: str = "", ncols: int = 4) -> None:
  """One heat map per head of multi-head attention, in a grid.

  weights: [heads, tgt, src] (e.g. `aux["attention"][b]` of a multi-head
  model, or one layer's weights); cropped to the token lists.
  """
  weights = np.asarray(weights)
  examples = [{"weights": w, "src_tokens": src_tokens, "tgt_tokens": tgt_tokens,
               "title": f"{title} head {h}".strip()} for h, w in enumerate(weights)]
  save_attention_png(path, examples, ncols=min(ncols, len(examples)))


def save_decoded_attention(path: str, decoded: Sequence[dict], src_tok, tgt_tok) -> bool:
  """Draws the attention of decoded examples (`evaluation.decode_split`'s
  dicts) to `path`; multi-head weights are drawn as the mean of the heads.
  Returns False, drawing nothing, when the model has no attention."""
  examples = []
  for d in decoded:
    if d["attention"] is None:
      return False
    weights, title = np.asarray(d["attention"]), d["source"]
    if weights.ndim == 3:  # [tgt, heads, src]
      weights, title = weights.mean(axis=1), f"{title} (mean of {weights.shape[1]} heads)"
    examples.append({"weights": weights, "src_tokens": src_tok.split(d["source"])[:d["src_len"]],
                     "tgt_tokens": [tgt_tok.vocab.id_to_token(int(t)) for t in d["hyp_ids"]],
                     "title": title})
  if not examples:
    return False
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  save_attention_png(path, examples)
  return True
