"""The one exception type whose message reaches the user as a single line."""


class KpError(Exception):
    """Something is wrong with the input or the target; the message says what to do."""


class KpUsageError(KpError):
    """Bad command-line arguments."""
