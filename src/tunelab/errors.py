"""The one exception type a user is meant to read."""


class TunelabError(Exception):
    """A problem in the user's input or configuration, stated so that they can fix it.

    Stages print it as a single ``error: ...`` line and exit with status 2, instead of a
    traceback from deep inside a library. Messages name the file, line or key at fault.
    """
