"""The exceptions nanochat-py raises for bad input; each message names the problem and the fix."""


class NanochatError(Exception):
    """Base class: anything the user can fix (a bad source, a bad file, a bad request)."""


class CheckpointError(NanochatError):
    """A checkpoint that cannot be found, read, recognised or loaded strictly."""


class UnsafeFileError(NanochatError):
    """A file whose pickle tries to import or call something other than plain data; nothing in it ran."""


class ConversationError(NanochatError, ValueError):
    """A conversation that does not follow nanochat's chat format (roles, content types)."""
