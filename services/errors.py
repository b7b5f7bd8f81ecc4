"""Error types of kubelab: everything the user can see is a ``KubelabError``.

Every message names the object (``ref``, e.g. ``Service default/web`` or a file
name), the path of the offending field (``spec.ports[0].port``) and what would
have been accepted, so the user can fix the manifest without reading code:

    Service default/web: spec.ports[0].port: 70000 is not a valid port
    number, must be 1-65535

``ValidationError`` is one problem; ``ApplyError`` carries all problems found
in one object (or one apply), one per line.
"""


class KubelabError(Exception):
    """Base of every error that is meant to be shown to the user."""


class ValidationError(KubelabError):
    """One problem in a manifest or cluster file, with the bad field's path."""

    def __init__(self, ref: str, path: str, message: str):
        self.ref = ref
        self.path = path
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.path:
            return f"{self.ref}: {self.path}: {self.message}"
        return f"{self.ref}: {self.message}"

    def __repr__(self) -> str:
        return (f"ValidationError({self.ref!r}, {self.path!r}, "
                f"{self.message!r})")


class ApplyError(KubelabError):
    """All problems of an object (or an apply); ``str()``: one per line."""

    def __init__(self, errors: list[ValidationError]):
        self.errors = list(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)


class NotFound(KubelabError):
    """A named object, node or client does not exist."""


class AllocationError(KubelabError):
    """No IP address or port to allocate; the message names the range."""


class UsageError(KubelabError, ValueError):
    """A command used wrongly: an unknown resource type, an output format that does not
    exist. (Also a ``ValueError``, as the printers raised before it existed.)"""
