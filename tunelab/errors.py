"""Error hierarchy.

Every error a user can cause by their input is a ``TunelabError`` subclass. The CLI catches
these, prints the message (which names the file, line, field or flag and says how to fix it)
and exits with code 2: users never see a traceback for bad input.
"""

from __future__ import annotations


class TunelabError(Exception):
    """Base class of all user-facing errors. ``str(err)`` is the whole message."""

    exit_code = 2


class ConfigError(TunelabError):
    """A config file, a ``key.path=value`` override or a CLI flag is invalid."""


class DataError(TunelabError):
    """A dataset file or row is unreadable or malformed."""


class ModelError(TunelabError):
    """A model cannot be found, resolved or loaded."""


class CheckpointError(TunelabError):
    """A checkpoint or run folder is missing, incomplete or incompatible."""


class TrainingError(TunelabError):
    """Training cannot continue (e.g. too many non-finite steps in a row)."""


class ServeError(TunelabError):
    """The server or a generation request cannot be served."""


class SecurityError(TunelabError):
    """A security check refused an input, output, file or dataset."""
