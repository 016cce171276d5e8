"""The errors driftloop raises for bad input; the CLI turns them into a message and exit code 1."""


class DriftloopError(Exception):
    """Base class: bad input, named by file, column or key."""


class DataError(DriftloopError):
    """The data breaks the contract (empty, unreadable, bad target, too few rows...)."""


class RegistryError(DriftloopError):
    """A registry operation cannot be done (unknown version, nothing to roll back to...)."""


class IntegrityError(DriftloopError):
    """A model's files do not match the SHA-256 manifest recorded when it was logged (or none was recorded)."""
