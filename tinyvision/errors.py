"""The one exception type the CLI turns into a single line and a non-zero exit."""


class TinyVisionError(Exception):
    """A user-facing failure: the message names the cause in one line."""
