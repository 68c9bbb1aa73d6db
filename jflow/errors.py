"""Exceptions jflow raises for bad input. Torch-free: shared by the host and the device side.

Every message says what is wrong, where, and what to do about it; the CLI prints it without a trace.
"""


class JFlowError(Exception):
    """Base class: a problem with the user's input or environment, not a bug in jflow."""


class CheckpointError(JFlowError):
    """A checkpoint folder is missing, incomplete, corrupt or does not match its config."""


class ConfigError(JFlowError):
    """A config file is missing a field, has a wrong value or contradicts another field."""


class InputError(JFlowError):
    """A request (prompt, image, sampling setting) cannot be served."""


class OutputError(InputError):
    """An output file or folder cannot be written (missing or read-only folder, name taken, disk full)."""
