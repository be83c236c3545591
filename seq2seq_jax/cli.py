"""The contract every command keeps with its user: a mistake the user can
make (a bad flag, config value, path or data line) is one line on stderr,
`error: ...`, and exit status 2, with no traceback."""

import json
import sys
from typing import NoReturn


def fail(message: str) -> NoReturn:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags_or_exit(argv):
  """absl's flag parser (for `app.run(flags_parser=...)`), with a bad flag as
  one line and exit status 2."""
  from absl import flags  # noqa: PLC0415  (imported by commands only)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e))


def write_json(path: str, value) -> None:
  """A command's results as a JSON file (`--json=PATH`), indented, one
  trailing newline."""
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2)
    f.write("\n")
