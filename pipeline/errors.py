"""User-facing errors: printed as one line by Hydra, with no traceback."""

from hydra.errors import CompactHydraException


class PipelineError(CompactHydraException):
    """A problem the user can fix (bad input, bad config, unreachable store).

    Hydra prints only the message of a ``CompactHydraException``; the full stack
    trace appears with ``HYDRA_FULL_ERROR=1``.
    """


class ConfigError(PipelineError):
    """The composed config has a wrong key, type or value."""


class TrackingError(PipelineError):
    """The MLflow tracking store cannot be reached or written."""


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an exception, so the run can end KILLED and flush its metrics."""
