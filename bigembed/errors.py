"""The one place bigembed's exceptions live.

Library code raises these; only :mod:`bigembed.cli` turns them into a one-line
message and an exit code. Each subclass also inherits the builtin a caller
would naturally catch, so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class BigembedError(Exception):
    """Root of every error bigembed raises on purpose."""


class ConfigError(BigembedError, ValueError):
    """A config value is missing, unknown or out of range (names the dotted key)."""


class InputFormatError(BigembedError, ValueError):
    """An edge file cannot be parsed (names the file and line)."""


class DataLayoutError(BigembedError, ValueError):
    """A DATA directory is missing, incomplete or of an unknown format version."""


class CheckpointError(BigembedError, RuntimeError):
    """A RUN directory or one of its shards is missing or damaged."""


class ConfigConflictError(BigembedError, ValueError):
    """A resumed run was given settings that differ from the ones it was started with."""


class TrainingDivergedError(BigembedError, ArithmeticError):
    """A loss or an embedding became NaN or infinite; nothing of it was committed."""
