"""Bundled, offline examples: a trained model, its data, trajectory and minimizers.

    from landscape_nb import zoo
    zoo.names()                         # ['mlp-digits', 'cnn-digits', ...]
    ex = zoo.load("resnet20-digits")    # trains on first use (seconds), then cached
    ex.model, ex.test, ex.loss_fn, ex.trajectory

Data are sklearn's bundled digits and synthetic moons, so nothing is downloaded.
Weights are cached under ``$LANDSCAPE_NB_CACHE`` or the user cache directory, in a
file named by a hash of the training recipe and code, so a changed recipe retrains.
"""
from __future__ import annotations

import builtins
import logging
import os
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..surface import MODEL_NAMES
from . import _cache
from ._registry import Registry, ZooEntry
from .data import Split
from .entries import DOES_NOT_LEARN, registry
from .training import (
    Recipe,
    StateDict,
    TrainedWeights,
    Training,
    fingerprint,
    initial_model,
    train,
)

__all__ = [
    "DOES_NOT_LEARN",
    "Example",
    "Recipe",
    "Registry",
    "Training",
    "ZooEntry",
    "build_model",
    "cache_file",
    "list",
    "load",
    "model_from_state",
    "names",
    "registry",
    "train_on_workers",
]

logger = logging.getLogger(__name__)


class Trajectory(builtins.list):
    """A zoo example's checkpoints (state dicts): the initialization, then the weights after each epoch. A
    list, which also names them (``labels``: "init", "epoch 1", ...) for ``project_trajectory``'s figures."""

    @property
    def labels(self) -> builtins.list[str]:
        return ["init"] + [f"epoch {i}" for i in range(1, len(self))]


@dataclass(frozen=True, eq=False)
class Example:
    """A trained zoo model with everything needed to draw its loss landscape.

    ``model`` is the final model (CPU, float32, eval mode); ``trajectory`` its state
    dicts from initialization (first) through each epoch to the final weights (last);
    ``minimizers`` other models trained from the same initialization (for
    ``mlp-digits``: ``"small-batch"`` and ``"large-batch"``), else empty.
    """

    name: str
    description: str
    test_accuracy: float
    model: nn.Module = field(repr=False)
    train: Split = field(repr=False)
    test: Split = field(repr=False)
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(repr=False)
    trajectory: Trajectory = field(repr=False)
    minimizers: dict[str, nn.Module] = field(repr=False)


def list() -> builtins.list[ZooEntry]:  # noqa: A001 - the public name is zoo.list()
    """Every example's name and one-line description, in registration order."""
    return registry.entries()


def names() -> builtins.list[str]:
    """Every example's name, in registration order."""
    return registry.names()


def build_model(name: str) -> nn.Module:
    """A fresh, untrained model of the example's architecture (eval mode, CPU, float32).

    Its weights are the seeded initialization, equal to ``load(name).trajectory[0]``;
    load any trajectory entry into it with ``load_state_dict``.
    """
    return initial_model(registry.recipe(name))


def model_from_state(name: str, state: StateDict) -> nn.Module:
    """The example's architecture holding ``state`` (e.g. a trajectory entry), eval mode."""
    model = build_model(name)
    model.load_state_dict(state)
    return model.eval()


def cache_file(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``load(name, cache_dir)`` reads (and on first use writes) the example's trained weights: a
    file named by a hash of its recipe and training code, which may not exist yet. Raises
    ``LandscapeError`` for an unknown name."""
    name = registry.canonical_name(name)
    return _cache.cache_path(_cache.cache_dir(cache_dir), name, fingerprint(registry.recipe(name)))


def load(name: str, cache_dir: str | os.PathLike | None = None) -> Example:
    """The trained example ``name``; trains it on first use and caches the weights.

    ``cache_dir`` overrides ``$LANDSCAPE_NB_CACHE`` and the user cache directory.
    Raises ``LandscapeError`` for an unknown name, suggesting close matches.
    """
    name = registry.canonical_name(name)
    recipe = registry.recipe(name)
    train_split, test_split = recipe.data()
    reference = initial_model(recipe)
    path = cache_file(name, cache_dir)
    seen = _cache.identity(path)
    weights = _cache.read(path, reference.state_dict())
    if weights is None:
        with _cache.training_lock(path, name):
            if _cache.identity(path) != seen:  # another process trained it meanwhile (a damaged file is said once)
                weights = _cache.read(path, reference.state_dict())
            if weights is None:
                logger.info("Training zoo example %r (first use; cached at %s).", name, path)
                start = time.perf_counter()
                weights = train(recipe, train_split, test_split)
                seconds, accuracy = time.perf_counter() - start, weights.test_accuracy
                logger.info("Trained %r in %.1f s, test accuracy %.4f.", name, seconds, accuracy)
                _cache.write(path, weights)
    return _example(name, recipe, weights, reference, train_split, test_split)


def _train_on_worker(name: str, cache_dir: str) -> tuple[float, float, int]:
    """A worker's task: train ``name`` into ``cache_dir`` (``zoo.load``); (seconds, test accuracy, pid)."""
    start = time.perf_counter()
    ex = load(name, cache_dir=cache_dir)
    return time.perf_counter() - start, float(ex.test_accuracy), os.getpid()


def train_on_workers(names, client, cache_dir: str | os.PathLike | None = None) -> dict[str, int]:
    """Train the examples of ``names`` not cached yet, one task each on the workers of ``client`` (a
    ``distributed.Client``), into the cache (``cache_dir``, default ``$LANDSCAPE_NB_CACHE`` or the user
    cache directory), so that a first use trains several at once instead of one after another in this
    process (small ResNets on a 2-core CPU: two one-thread workers train about 1.75× the epochs a second
    of one two-thread process). Give the longest to train first: tasks start in that order.

    Only for a cluster on this machine (``lnb.cluster.get_client("local")``): its workers write the cache
    that ``load`` here then reads. Each is said as it starts and ends, on this module's logger (INFO). A
    task that fails is said (WARNING) and left to ``load``, which trains it again here and raises what it
    raises. Returns {name: the worker's process id} of those trained on a worker (the others were cached,
    or are said). Raises ``LandscapeError`` for a name not in the zoo, before any task starts.

    >>> client, owned = lnb.cluster.get_client("local")
    >>> lnb.zoo.train_on_workers(["resnet110-digits", "resnet56-digits"], client)
    >>> ex = lnb.zoo.load("resnet110-digits")   # read from the cache, not trained again
    >>> owned.close()
    """
    from distributed import as_completed

    paths = {n: cache_file(n, cache_dir) for n in dict.fromkeys(names)}  # each hashes the training code once
    missing = [n for n, path in paths.items() if not path.exists()]
    if not missing:
        return {}
    directory = str(paths[missing[0]].parent)
    futures = {}
    for rank, name in enumerate(missing):
        logger.info("Training zoo example %r on a worker (first use; cached at %s).", name, paths[name])
        futures[client.submit(_train_on_worker, name, directory, pure=False, priority=len(missing) - rank)] = name
    pids = {}
    try:
        for future in as_completed(futures):
            name = futures[future]
            try:
                seconds, accuracy, pid = future.result()
            except Exception as exc:  # noqa: BLE001 - zoo.load trains it again here and raises what it raises
                logger.warning("Training %r on a worker failed (%s: %s); it is trained here instead.", name,
                               type(exc).__name__, exc)
                continue
            logger.info("Trained %r in %.1f s on a worker, test accuracy %.4f.", name, seconds, accuracy)
            if not paths[name].exists():  # a worker on another machine, or a cache it could not write
                logger.warning("%r was trained on a worker, but its weights are not at %s on this machine (a worker "
                               "on another machine, or a cache it could not write); load trains it here again.",
                               name, paths[name])
                continue
            pids[name] = pid
    finally:
        client.cancel([*futures])  # (this module defines list())
    return pids


def _name(model: nn.Module, name: str) -> None:
    """Register ``name`` for ``model`` in ``MODEL_NAMES``, with a check that its floating-point state is still
    the one it holds now (per tensor the sum and the sum of magnitudes, in float64, within 1e-9 of the latter:
    changed in place by training or load_state_dict; the same weights moved to a GPU sum alike to rounding)."""
    def sums(m: nn.Module) -> list[tuple[float, float]]:
        return [(float(t.detach().double().sum()), float(t.detach().double().abs().sum()))
                for t in m.state_dict().values() if t.is_floating_point()]

    def unchanged() -> bool:
        now = None if ref() is None else sums(ref())
        return now is not None and len(now) == len(then) and all(
            abs(a - c) <= 1e-9 * d and abs(b - d) <= 1e-9 * d for (a, b), (c, d) in zip(now, then))

    then, ref = sums(model), weakref.ref(model)  # weak: the entry must not keep its own key alive
    MODEL_NAMES[model] = (name, unchanged)


def _example(
    name: str,
    recipe: Recipe,
    weights: TrainedWeights,
    model: nn.Module,
    train_split: Split,
    test_split: Split,
) -> Example:
    model.load_state_dict(weights.final)
    _name(model, name)  # its surfaces' label where no name= is given (not the class's "ResNet")
    minimizers = {}
    for key, state in weights.minimizers.items():
        minimizers[key] = initial_model(recipe)
        minimizers[key].load_state_dict(state)
        _name(minimizers[key], f"{name} {key}")
    return Example(
        name=name,
        description=registry.entry(name).description,
        test_accuracy=weights.test_accuracy,
        model=model.eval(),
        train=train_split,
        test=test_split,
        loss_fn=nn.CrossEntropyLoss(),
        trajectory=Trajectory(weights.trajectory),
        minimizers=minimizers,
    )
