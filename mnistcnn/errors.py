"""Typed errors: the library raises these; only the CLI turns them into messages and exit codes."""


class MnistCnnError(Exception):
    """Base of every error a user can cause and fix."""

    exit_code = 1


class ConfigError(MnistCnnError):
    """A config file or override is invalid (names the file and the key path)."""

    exit_code = 2


class DataError(MnistCnnError):
    """A data file is missing, corrupt or foreign (names the file)."""

    exit_code = 2


class CheckpointError(MnistCnnError):
    """A checkpoint is missing, corrupt, tampered with or incompatible."""

    exit_code = 2


class UsageError(MnistCnnError):
    """A command was given an argument that cannot work (a bad path, index or layer name)."""

    exit_code = 2


class NonFiniteError(MnistCnnError):
    """Training produced a NaN or infinity; says where it first appeared."""

    exit_code = 3


class WriteError(MnistCnnError):
    """A file could not be written (disk full, no permission); the previous version is intact."""

    exit_code = 1
