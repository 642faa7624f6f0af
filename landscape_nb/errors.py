"""The one exception type users catch."""


class LandscapeError(ValueError):
    """Bad input or an impossible request.

    Every message says what was given, what was expected and how to fix it.
    """
