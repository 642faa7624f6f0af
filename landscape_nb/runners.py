"""Runners turn tiles into values: the job they share, what they report back, the in-process one.

``cluster.DaskRunner`` is the other runner. Neither knows which quantity a point computes:
``Job.wrap`` turns the loss ``Evaluator`` into whatever ``compute.QUANTITIES`` asked for.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
from torch import nn

from .evaluate import Cancelled, EvalSettings, Evaluator, PointEvaluator
from .grid import Grid, Tile
from .errors import LandscapeError
from .params import ParamLayout
from .splits import SplitEvaluator, is_splits


@dataclass
class Job:
    """Everything a worker needs to build a point evaluator; shipped once per worker, never per tile.

    ``wrap`` (picklable, e.g. a ``functools.partial`` of a class) turns the loss ``Evaluator``
    into another point evaluator; None evaluates loss and metrics. ``key`` is the surface's
    spec key, set once known, for error messages.
    """

    model: nn.Module
    data: Any
    vectors: Any  # torch.Tensor (n_dirs, n_params)
    layout: ParamLayout
    loss_fn: Callable | None
    metrics: Any
    settings: EvalSettings
    device: str | None = None
    bn_data: Any = None
    wrap: Callable[[Evaluator], PointEvaluator] | None = None
    key: str = ""

    def evaluator(self) -> PointEvaluator:
        if is_splits(self.data):  # named splits, e.g. {"train": ..., "test": ...}
            if self.wrap is not None:
                raise LandscapeError("data given as named splits with a quantity other than 'loss'; expected "
                                     "one data set for quantity='hessian' (compute one surface per split)")
            return SplitEvaluator(self.model, self.data, self.vectors, self.layout, loss_fn=self.loss_fn,
                                  metrics=self.metrics, settings=self.settings, device=self.device,
                                  bn_data=self.bn_data)
        ev = Evaluator(self.model, self.data, self.vectors, self.layout, loss_fn=self.loss_fn,
                       metrics=self.metrics, settings=self.settings, device=self.device, bn_data=self.bn_data)
        return ev if self.wrap is None else self.wrap(ev)


@dataclass(frozen=True)
class DataInfo:
    """What the spec and the provenance need to know about an evaluator (built where the data lives)."""

    metric_names: tuple[str, ...]
    fingerprint: str
    n_samples: int
    device: str
    bn_fold: str = "off"
    batch_size: int | None = None  # None: still being tuned (or tuned on each Dask worker)
    points_per_pass: int | None = None  # None: not chosen yet
    notes: tuple = ()  # (name, text) pairs: how targets, loss and accuracy were chosen (evaluator.notes)


def describe(ev: PointEvaluator) -> DataInfo:
    tuning = getattr(ev, "tuning", False)
    return DataInfo(tuple(ev.metric_names), ev.data_fingerprint, ev.n_samples, str(ev.device), ev.bn_fold,
                    None if tuning else ev.batch_size, ev.points_per_pass, tuple(getattr(ev, "notes", {}).items()))


class Runner(Protocol):
    """Turns tiles into values. ``run`` yields ``(tile, values)`` in completion order, values
    shaped (tile rows, tile cols, 1 + n_metrics)."""

    description: str

    def prepare(self, job: Job) -> DataInfo: ...

    def run(self, job: Job, grid: Grid, tiles: Sequence[Tile], cancel: threading.Event) -> Iterator[tuple[Tile, np.ndarray]]: ...

    def settled(self) -> DataInfo | None:
        """After a run: the batch size and points per pass the evaluator settled on (None if unknown here)."""

    def close(self) -> None: ...


def tile_note(tile: Tile, key: str) -> str:
    """The context added to an exception raised while a tile was evaluated."""
    return (f"while evaluating tile {tile.index} ({tile.n_points} points) of surface {key or '(no key yet)'}; "
            "finished tiles are in the store, when compute_surface was given one")


class InProcessRunner:
    """Evaluates tiles one after another in this process, on the model's own weights.

    One evaluator session spans all tiles: the model is snapshotted once, stays perturbed
    between tiles, and is restored bit-identically when the run ends or ``close`` is called.
    """

    description = "in-process"

    def __init__(self):
        self._evaluator: PointEvaluator | None = None
        self._running: Iterator | None = None

    def prepare(self, job: Job) -> DataInfo:
        self._evaluator = job.evaluator()
        return describe(self._evaluator)

    def run(self, job, grid, tiles, cancel):
        if self._evaluator is None:
            self._evaluator = job.evaluator()
        self._running = self._tiles(self._evaluator, job.key, grid, tiles, cancel)
        return self._running

    @staticmethod
    def _tiles(ev, key, grid, tiles, cancel):
        with ev.session():
            for tile in tiles:
                if cancel.is_set():
                    return
                try:
                    values = ev.evaluate(grid.coords(tile), should_stop=cancel.is_set)
                except Cancelled:
                    return
                except Exception as exc:
                    exc.add_note(tile_note(tile, key))
                    raise
                yield tile, values.reshape(*tile.shape, -1)

    def settled(self) -> DataInfo | None:
        return None if self._evaluator is None else describe(self._evaluator)

    def close(self) -> None:
        if self._running is not None:  # a run left mid-way: end its session, restoring the model
            self._running.close()
            self._running = None
        self._evaluator = None


__all__ = ["Job", "DataInfo", "describe", "Runner", "InProcessRunner"]
