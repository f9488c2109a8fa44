"""Errors a user can act on. Each carries the process exit status the CLI uses."""


class KdflowError(Exception):
    """A problem with the user's input, reported as one line and a non-zero exit."""

    exit_code = 2


class ConfigError(KdflowError):
    """params.yaml is malformed: unknown key, wrong type, value out of range."""


class DataError(KdflowError):
    """An input data file or directory is missing or unreadable."""


class ValidationFailed(KdflowError):
    """A Great Expectations suite failed; the report path is in the message."""

    exit_code = 3
