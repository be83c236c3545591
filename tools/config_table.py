"""Rewrites the table of config fields in README.md from the comments in
seq2seq_jax/config_defaults.py (run after changing a field):

  python tools/config_table.py
"""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rows():
  out = []
  with open(os.path.join(ROOT, "seq2seq_jax", "config_defaults.py"), encoding="utf-8") as f:
    for line in f:
      m = re.match(r"^  (\w+)\.([\w.]+) = (.+?)  # (.*)$", line)
      if not m or "ConfigDict()" in m.group(3):
        continue
      var, rest, value, comment = m.groups()
      name = {"config": "", "data": "data.", "model": "model.", "train": "train.",
              "ev": "eval.", "parallel": "parallel."}.get(var)
      if name is None:
        raise SystemExit(f"unknown config variable {var!r} in: {line.strip()}")
      comment = comment.replace("|", "&#124;")
      out.append(f"| `{name}{rest}` | `{value}` | {comment} |")
  return out


def main():
  path = os.path.join(ROOT, "README.md")
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  start = next(i for i, l in enumerate(lines) if l.startswith("| field | default | meaning |"))
  end = start + 2
  while end < len(lines) and lines[end].startswith("| `"):
    end += 1
  lines[start + 2:end] = rows()
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines))


if __name__ == "__main__":
  main()
