"""Errors the repositories raise: each says what was refused and why."""


class StorageError(Exception):
    """Base class of every refusal from storage/."""


class NotFound(StorageError):
    pass


class InvalidTransition(StorageError):
    """A state change the entity's state machine does not allow (e.g. approving a rejected pair)."""


class PermissionDenied(StorageError):
    """The actor's role does not allow the action."""


class InvalidInput(StorageError):
    """Input that cannot be stored as it is (empty text, malformed import line, ...)."""
