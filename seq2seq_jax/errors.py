"""Errors a user can cause.

Each one is reported by `train.py` (and the other command-line tools) as a
single line naming the problem, with exit status 2 and no traceback. Anything
that is not a `UserError` is a bug in this package and keeps its traceback.
"""


class UserError(Exception):
  """Base class: a problem with the user's config, data, files or workdir."""


class ConfigError(UserError):
  """A config field has a value outside its allowed set or range."""


class DataError(UserError):
  """A data file is missing, unreadable or has a malformed line."""


class CheckpointError(UserError):
  """A workdir's checkpoint cannot be used with the requested run."""


class LengthError(UserError):
  """A sequence longer than the model has positions for (a Transformer's
  max_len): to encode, to teacher-force or to decode."""


class DivergenceError(UserError):
  """Training produced a non-finite loss or gradient and was told to stop."""
