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


class NoSpace(KdflowError):
    """The disk filled while an output was written; the earlier outputs are kept."""

    exit_code = 4

    def __init__(self, path: object) -> None:
        super().__init__(
            f"no space left on the device while writing {path}; free space and rerun "
            "(the stage's earlier outputs are kept, none was replaced)"
        )


def is_no_space(err: BaseException) -> bool:
    """A full disk, as the OS reports it or as a library passes the OS's message on (safetensors)."""
    import errno

    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    return "No space left on device" in str(err) or "os error 28" in str(err)
