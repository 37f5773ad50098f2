"""The one exception type users see: a one-line message saying what, where, and what to do.

Library code raises `MlxstoryError` (or a subclass) for bad input; the CLI prints the message as
`error: ...` on stderr and exits 1. Anything else escaping is a bug, and shows a traceback.
"""


class MlxstoryError(Exception):
    """A user-facing error; str(error) is the whole message."""


class DataError(MlxstoryError):
    """A data source that cannot be read or used."""


class TokenizerError(MlxstoryError):
    """A tokenizer that cannot be trained, loaded or used with this data."""


class CheckpointError(MlxstoryError):
    """A checkpoint or run directory that cannot be loaded, or does not match its config."""
