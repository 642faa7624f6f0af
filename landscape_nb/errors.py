"""The one exception type users catch, and the one did-you-mean check."""
from __future__ import annotations

import difflib
from typing import Collection, TypeVar

T = TypeVar("T")


class LandscapeError(ValueError):
    """Bad input or an impossible request.

    Every message says what was given, what was expected and how to fix it.
    """


def check_choice(name: str, value: T, choices: Collection, *, fix: str = "", n: int = 1,
                 cutoff: float = 0.6) -> T:
    """Return ``value`` if it is one of ``choices``; otherwise raise with a did-you-mean.

    >>> check_choice("norm", "filtre", ("filter", "layer"))
    Traceback (most recent call last):
    ...
    landscape_nb.errors.LandscapeError: unknown norm 'filtre'; expected one of ['filter', 'layer'] (did you mean 'filter'?)

    Parameters
    ----------
    name : str
        What ``value`` is, as the message names it (``"norm"``, ``"directions"``).
    value : object
        The value given.
    choices : collection
        The accepted values; close string matches (``difflib``) are suggested.
    fix : str, optional
        How else to fix it, appended to the message after ``"; "``.
    n : int, optional
        At most this many suggestions.
    cutoff : float, optional
        Similarity in [0, 1] a suggestion needs (``difflib.get_close_matches``).

    Returns
    -------
    object
        ``value``, unchanged.

    Raises
    ------
    LandscapeError
        If ``value`` is not in ``choices``: the message says what was given, the
        choices, the closest ones, and ``fix``.
    """
    try:
        if value in choices:
            return value
    except TypeError:  # an unhashable value against a set or dict of choices
        pass
    by_text = {str(c): c for c in choices}
    close = difflib.get_close_matches(str(value), list(by_text), n=n, cutoff=cutoff)
    hint = f" (did you mean {' or '.join(repr(by_text[c]) for c in close)}?)" if close else ""
    raise LandscapeError(f"unknown {name} {value!r}; expected one of {list(choices)}{hint}"
                         + (f"; {fix}" if fix else ""))
