"""The errors an operator sees, each as one `error:` line with an exit status.

    IngestError              exit 1: the run failed; the table may be partially written
      UserError              exit 2: an operator mistake (an option, a config key, a file, a table)
        ConfigError          a bad or missing option or config key; the message names it
        InputError           an input that cannot be read; the message names the file and chunk
          StorageTimeout     storage that accepts connections and never answers
        TableError           the target table cannot be used as asked (exists, differs, missing)
        CheckpointError      a checkpoint that is missing or incomplete
        CommandError         an operator command that cannot go on (its own exit status)
      IngestFailed           the job failed after the table was created
      IncompleteError        the run's results do not prove every chunk written
      WorkersLost            a Dask scheduler dropped silent workers

The launcher (`launch/ingest.py`) and the operator commands (`cli.py`) catch `IngestError`
once and exit with its `exit_status`. Errors raised inside the pipeline travel back wrapped
in the runner's own exceptions; the launcher finds them in the cause chain (`user_error_in`).
"""
from __future__ import annotations


class IngestError(Exception):
    exit_status = 1


class UserError(IngestError):
    exit_status = 2


class ConfigError(UserError, ValueError):
    """A bad or missing option or config key; the message names it."""


class InputError(UserError, ValueError):
    """An input file that cannot be read; the message names the file and chunk."""


class StorageTimeout(InputError):
    """A storage call that got no answer before its deadline."""


class TableError(UserError, RuntimeError):
    """The target table cannot be used as asked (exists, differs, missing...)."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing or incomplete."""


class CommandError(UserError):
    """An operator command that cannot go on; `code` is its exit status (2 by default)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.exit_status = code

    def __reduce__(self):
        return type(self), (str(self), self.exit_status)


class IngestFailed(IngestError, RuntimeError):
    """The pipeline failed after the table was created: says that it is partially written."""


class IncompleteError(IngestError, RuntimeError):
    """The run's own results do not prove a complete table; the message names what is missing."""


class WorkersLost(IngestError, RuntimeError):
    """A failed run on a Dask cluster whose scheduler dropped silent workers."""


def causes(exc: BaseException | None):
    """`exc` and every exception it was raised from or during, outermost first."""
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def user_error_in(exc: BaseException | None) -> UserError | None:
    """The first operator mistake in `exc`'s cause chain (raised in a worker, wrapped by the runner)."""
    return next((e for e in causes(exc) if isinstance(e, UserError)), None)
