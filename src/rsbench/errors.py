"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class RsbenchError(Exception):
    """A problem with the user's input (file, key, option) rather than a bug in rsbench."""

    exit_code = 1  # the CLI's exit status for this error


class ConfigError(RsbenchError):
    """An invalid configuration key or value."""


class DataError(RsbenchError):
    """An unreadable, corrupt or inconsistent input file or folder."""


class EngineError(RsbenchError):
    """An external engine (SLURM, a Dask scheduler) refused the work or could not be reached."""
