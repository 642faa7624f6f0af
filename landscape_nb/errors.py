"""The one exception type users catch, the one did-you-mean check, and the argument checks every layer uses."""
from __future__ import annotations

import contextlib
import difflib
import math
import numbers
import os
import sys
import warnings
from typing import Any, Collection, Mapping, TypeVar

T = TypeVar("T")


class LandscapeError(ValueError):
    """Bad input or an impossible request.

    Every message says what was given, what was expected and how to fix it.
    """


_OWN_FILES = (os.path.dirname(os.path.abspath(__file__)) + os.sep, os.path.abspath(contextlib.__file__))


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` pointing at the user's line: the stack level of the first frame outside
    landscape_nb (and ``contextlib``, whose frames sit between a ``with`` and its manager), however deep
    in the package the warning is raised."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_OWN_FILES):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


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


def closest_name(name: str, names: Collection[str]) -> str | None:
    """The one of ``names`` ``name`` was most likely meant to be (``difflib``), else one it starts with or that
    starts with it (``tolerance`` for ``tol``, which difflib rates too far); None where there is none."""
    close = difflib.get_close_matches(name, list(names), n=1) or [n for n in names
                                                                   if name.startswith(n) or n.startswith(name)]
    return close[0] if close else None


HIDDEN_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


@contextlib.contextmanager
def recording_warnings(said: list, *, portable: bool = False, each=None):
    """Record the warnings given inside (none shown), each ``(message, category)`` once, in ``said``: for a
    caller in another place (another process, or after a Dask task) to give them. ``portable``: a category of
    the user's own is kept as ``UserWarning`` (the receiving process may not import its class). The categories
    Python hides by default outside ``__main__`` (``HIDDEN_BY_DEFAULT``) are not recorded. ``each``: also called
    with each ``(message, category)`` as it is given (a Dask worker telling its caller while it still runs)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if each is not None:
            def show(message, category, filename, lineno, file=None, line=None):  # warnings.showwarning's signature
                caught.append(warnings.WarningMessage(message, category, filename, lineno, file, line))
                now: list = []
                _keep(caught[-1:], now, portable)
                for kept in now:
                    each(kept)

            warnings.showwarning = show  # put back by catch_warnings
        try:
            yield said
        finally:  # also those given before the body raised (lost on a worker whose loss then failed, review s38)
            _keep(caught, said, portable)


def _keep(caught: list, said: list, portable: bool) -> None:
    for w in caught:
        if issubclass(w.category, HIDDEN_BY_DEFAULT):  # shown where given only in __main__: given again at the
            continue  # caller's frame, a library's DeprecationWarning showed on Dask and not in-process (review s38)
        category = w.category if not portable or w.category.__module__ == "builtins" else UserWarning
        if (str(w.message), category) not in said:
            said.append((str(w.message), category))


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (for naming a value in a message)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(exc: BaseException | str, limit: int = 600, whole: str = "the original exception is chained") -> str:
    """``str(exc)`` on one line, cut at a word before ``limit`` characters (in a word where the last space
    comes before half of them) and saying how much was left out and where ``whole`` of it is (a
    load_state_dict mismatch cut mid-word read as a different key, trial s34)."""
    text = " ".join(str(exc).split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    if len(cut) < limit // 2:  # one long word ("bad keys: a,b,c,..."): cut in it rather than keep nine characters
        cut = text[:limit]
    return f"{cut} … ({len(text) - len(cut)} more characters: {whole})"


def is_int(value: Any) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name: str, value: Any, *, none: str | None = None, fix: str = "") -> None:
    """``value`` must be an integer ≥ 1 (not a bool, not a float), or None when ``none`` says what None means;
    ``fix`` (how to fix it, e.g. what the value means and a typical one) ends the message.

    Raises
    ------
    LandscapeError
        Naming ``name``, the value given and what is expected.
    """
    if value is None and none is not None:
        return
    if not is_int(value) or value < 1:
        alt = f" or None ({none})" if none is not None else ""
        raise LandscapeError(f"{name}={short_repr(value)}; expected a positive integer{alt}{': ' + fix if fix else ''}")


def seed_int(value: Any, what: str, name: str = "seed") -> None:
    """``value`` must be an integer from 0 to 2**64 - 1 (not a bool, not a float: ``int(1.5)`` would silently
    seed with 1; not negative: ``torch.Generator`` takes -1 as 2**64 - 1); ``what`` says what it seeds.

    Raises
    ------
    LandscapeError
        Naming the value given and what is expected.
    """
    if not is_int(value) or not 0 <= value < 2**64:
        raise LandscapeError(f"{name}={short_repr(value)}; expected an integer from 0 to 2**64 - 1 "
                             f"(the seed of {what}), "
                             f"e.g. {name}=0")


def positive_number(name: str, value: Any, *, fix: str = "") -> None:
    """``value`` must be a finite real number > 0 (an int or float, not a bool); ``fix`` ends the message.

    Raises
    ------
    LandscapeError
        Naming ``name``, the value given and what is expected.
    """
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (real and math.isfinite(value) and value > 0):
        raise LandscapeError(f"{name}={short_repr(value)}; expected a positive finite number{': ' + fix if fix else ''}")


def differing(stored: Mapping, now: Mapping, empty: str = "") -> str:
    """``"a, b differ"`` (at most six names; ``empty`` stands for the name ``""``) for the keys whose values
    differ between two mappings."""
    names = [n or empty for n in dict.fromkeys([*stored, *now]) if stored.get(n) != now.get(n)]
    more = " ..." if len(names) > 6 else ""
    return f"{', '.join(names[:6])}{more} {'differs' if len(names) == 1 else 'differ'}"


def user_frame(exc: BaseException) -> str:
    """`` (at file.py:11 in helper())``: the innermost frame of ``exc``'s traceback in the user's own code (not
    the standard library, an installed package or landscape_nb), "" where there is none. An AttributeError in
    a helper of forward named no file, line or function, even with -v (trial s34)."""
    import sysconfig
    import traceback

    skip = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder holding landscape_nb/
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = os.path.realpath(frame.filename)
        if (frame.filename.startswith("<") or any(path.startswith(p + os.sep) for p in skip)
                or path.startswith(os.path.join(package, "landscape_nb") + os.sep)
                or "site-packages" in path or "dist-packages" in path):
            continue
        return f" (at {os.path.basename(path)}:{frame.lineno} in {frame.name}())"
    return ""
