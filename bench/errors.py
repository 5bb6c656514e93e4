"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class BenchError(Exception):
    """Bad input or a bad file: the user can fix it; the message says how."""
