"""The models an Explorer offers: the user's own (model, data) pairs or the zoo, loaded ahead of Compute.

A zoo model loads in a fraction of a second once cached, but its first load in a kernel
also imports the libraries that make its data (seconds); `ModelShelf.prefetch` loads a
cached model as soon as it is picked (with the panel, or in the model menu), so Compute
finds it ready.
"""
from __future__ import annotations

import collections.abc
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import LandscapeError

log = logging.getLogger(__name__)


@dataclass
class Entry:
    """A model the Explorer can evaluate: the network, its data splits, loss and the
    object handed to ``make_directions`` (a zoo Example; None for a bare user model)."""

    model: Any
    test: Any
    train: Any = None
    loss_fn: Callable | None = None
    example: Any = None


def user_entry(name: str, value) -> Entry:
    """``models[name]`` as given to the Explorer: (model, data[, loss_fn]) or an Example-like object."""
    from torch import nn

    if isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[0], nn.Module):
        model, data, loss_fn = (*value, None)[:3]
        return Entry(model, data, None, loss_fn, None)
    if isinstance(getattr(value, "model", None), nn.Module) and hasattr(value, "test"):
        for attr in ("trajectory", "minimizers"):  # read at every Compute: a generator is empty after the first
            given = getattr(value, attr, None)  # (a plane then said "0 checkpoints" of 5, trial s34)
            if isinstance(given, collections.abc.Iterator):
                raise LandscapeError(
                    f"models[{name!r}].{attr} is a {type(given).__name__}, which can be read only once, and each "
                    f"Compute reads it again; expected a list (or dict, for .minimizers): pass "
                    f"{attr}=list(...) of the state dicts, checkpoint files or models")
        return Entry(value.model, value.test, getattr(value, "train", None), getattr(value, "loss_fn", None), value)
    if isinstance(value, tuple) and len(value) in (2, 3):
        what = f"a tuple whose first item (the model) is a {type(value[0]).__name__}, not a torch.nn.Module"
    elif isinstance(value, tuple):
        what = f"a tuple of {len(value)} item(s)"
    else:
        what = f"a {type(value).__name__}"
    raise LandscapeError(
        f"models[{name!r}] is {what}; expected (model, data), (model, data, loss_fn) with a "
        "torch.nn.Module and (inputs, targets) data, or an object with .model and .test (like a zoo Example); "
        "e.g. Explorer(models={'mine': (net, (x, y))})"
    )


def _model_among(ex) -> bool:
    """Whether ``ex.model`` is one of the first two of ``ex.minimizers`` (the same object, or a model with equal
    weights): the plane through three models then has two (trial s40: offered, it failed on Compute)."""
    import torch
    from torch import nn

    given = getattr(ex, "minimizers", None)
    if not isinstance(given, (Mapping, list, tuple)):  # a generator is not read here (`user_entry` refuses it)
        return False
    firsts = list(given.values() if isinstance(given, Mapping) else given)[:2]
    model = getattr(ex, "model", None)
    if not isinstance(model, nn.Module):
        return False
    mine = model.state_dict()

    def same(m) -> bool:
        if m is model:
            return True
        theirs = m.state_dict() if isinstance(m, nn.Module) else None
        return theirs is not None and theirs.keys() == mine.keys() and all(
            theirs[k].shape == mine[k].shape and torch.equal(theirs[k], mine[k]) for k in mine)

    return any(same(m) for m in firsts)


def schemes_for(entry: Entry) -> tuple[tuple[str, ...], str]:
    """The direction schemes ``entry`` can give, in ``schemes.SCHEMES`` order, and a sentence on why the
    others cannot ("" when every one can). A model given as (model, data) has no training trajectory or
    other models, so only random directions and the Hessian's apply; an Example-like object gives pca from
    2 checkpoints (``.trajectory``; a line, 3 for a plane), the interpolation from 1 or from two
    ``.minimizers``, the plane through three models from 3 or from two minimizers. A count that cannot be
    known without reading them offers the scheme, and Compute says what is missing (a generator, read once,
    is refused by `user_entry`)."""
    from ..schemes import SCHEMES, checkpoint_count, minimizer_count

    ex = entry.example
    checkpoints, minimizers = (0, 0) if ex is None else (checkpoint_count(ex), minimizer_count(ex))

    def at_least(count, n):
        return count is None or count >= n

    can = {"random", "random-orthogonal", "hessian"}
    can |= {"pca"} if at_least(checkpoints, 2) else set()
    can |= {"interpolate"} if at_least(checkpoints, 1) or at_least(minimizers, 2) else set()
    among = ex is not None and not at_least(checkpoints, 3) and _model_among(ex)
    can |= {"plane3"} if at_least(checkpoints, 3) or (at_least(minimizers, 2) and not among) else set()
    offered = tuple(s for s in SCHEMES if s in can)
    if len(offered) == len(SCHEMES):
        return offered, ""
    given = ("it was given as (model, data), with no training checkpoints or other models" if ex is None else
             f"it has {checkpoints} checkpoint(s) (.trajectory) and {minimizers} minimizer(s) (.minimizers)"
             + (", its .model one of them (a plane through three models would have two)" if among else ""))
    return offered, (f"{given}; pca needs 2 checkpoints for a line and 3 for a plane, the interpolation 1 or two "
                     "minimizers, the plane through three models 3 or two minimizers: pass an object with .model, "
                     ".test and .trajectory (a list of state dicts or checkpoint files) or .minimizers (two more "
                     "models)")


def splits_for(entry: Entry) -> tuple[tuple[str, ...], str]:
    """The data splits ``entry`` has ("test", and "train" where it has one) and a sentence on why "train" is
    missing ("" when it is not): a model given as (model, data) has only the data given, used as "test"."""
    if entry.train is not None:
        return ("test", "train"), ""
    given = "it was given as (model, data)" if entry.example is None else "it has no .train"
    return ("test",), (f"{given}, so its only split is the data given ('test'): pass an object with .model, .test "
                       "and .train for a training split")


def split_of(entry: Entry, name: str, split: str):
    """The ``split`` ("test" or "train") data of model ``name``, or a LandscapeError saying it has none."""
    data = entry.test if split == "test" else entry.train
    if data is None:
        raise LandscapeError(
            f"model {name!r} has no {split!r} split (it was given as (model, data)); expected "
            "split 'test', or pass an object with .model, .train and .test"
        )
    return data


def zoo_names() -> list[str]:
    try:
        from .. import zoo

        return list(zoo.names())
    except (ImportError, AttributeError) as exc:  # the zoo is optional for a user's own models
        log.warning("the zoo is not available (%s)", exc)
        return []


def zoo_is_cached(name: str) -> bool:
    """Whether zoo model ``name`` is trained and cached (loading it then takes no training)."""
    try:
        from ..zoo import _cache, registry
        from ..zoo.training import fingerprint

        recipe = registry.recipe(registry.canonical_name(name))
        return _cache.cache_path(_cache.cache_dir(None), registry.canonical_name(name), fingerprint(recipe)).exists()
    except Exception as exc:  # noqa: BLE001 - a guess for prefetching only; load() reports real problems
        log.debug("cannot tell whether %r is cached (%s)", name, exc)
        return False


class ModelShelf:
    """The Explorer's models by name: the user's, or zoo models loaded once.

    Parameters
    ----------
    models : mapping or None
        As ``Explorer(models=...)``; None offers the zoo.
    """

    def __init__(self, models: Mapping[str, Any] | None):
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self.zoo = models is None
        if models is not None:
            if not isinstance(models, Mapping) or not models:
                raise LandscapeError(
                    f"models={models!r}; expected None (the zoo) or a non-empty dict name -> (model, data), "
                    "e.g. Explorer(models={'mine': (net, (x, y))})"
                )
            self._entries = {str(k): user_entry(str(k), v) for k, v in models.items()}
        self.names = list(self._entries) if models is not None else zoo_names()

    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]

    def ready(self, name: str) -> bool:
        """Whether ``name`` is loaded."""
        return name in self._entries

    def prefetch(self, name: str) -> None:
        """Load zoo model ``name`` now, in this thread, if it is cached (never trains; errors wait for Compute).

        Deliberately not in a background thread: its first load imports the data's libraries,
        and two threads importing at once can deadlock on Python's import locks (the notebook's
        main thread imports too). Loading when the model is picked, not when Compute is pressed,
        keeps that time out of Compute.
        """
        if not (self.zoo and name in self.names and not self.ready(name) and zoo_is_cached(name)):
            return
        if not self._lock.acquire(blocking=False):  # a Compute is loading (or training) a model: never wait for it
            return
        try:
            self._load(name)
        except Exception as exc:  # noqa: BLE001 - Compute loads again and reports it in the panel
            log.debug("prefetching %r failed (%s)", name, exc)
        finally:
            self._lock.release()

    def get(self, name: str, announce: Callable[[], None] | None = None) -> Entry:
        """Model ``name``, loading (and on first use training) a zoo model; ``announce`` is called
        first when that takes a load."""
        with self._lock:
            if name not in self._entries:
                if announce is not None:
                    announce()
                self._load(name)
            return self._entries[name]

    def _load(self, name: str) -> None:
        from .. import zoo

        if name not in self._entries:
            ex = zoo.load(name)
            self._entries[name] = Entry(ex.model, ex.test, ex.train, ex.loss_fn, ex)
