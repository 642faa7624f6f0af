"""Runners turn tiles into values: the job they share, what they report back, the in-process one.

``cluster.DaskRunner`` is the other runner. Neither knows which quantity a point computes:
``Job.wrap`` turns the loss ``Evaluator`` into whatever ``compute.QUANTITIES`` asked for.
"""
from __future__ import annotations

import functools
import sys
import threading
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from .errors import LandscapeError
from .evaluate import Cancelled, EvalSettings, Evaluator, PointEvaluator
from .grid import Grid, Tile
from .params import ParamLayout
from .process import heap_policy
from .splits import SplitEvaluator, is_splits
from .statecheck import culprit, user_error


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
    # (worker address, batch_size, points_per_pass, versions, tiles computed, left before the end) of each Dask
    per_worker: tuple = ()  # worker that ran tiles (`dask_runner.DaskRunner.settled`)
    bn_fingerprint: str | None = None  # mode="bn-recompute" with separate bn_data: its hash
    bn_pass_size: int | None = None  # mode="bn-recompute" over more than one pass: samples a pass
    warnings: tuple = ()  # (message, category) of landscape_nb's warnings on a Dask worker (dask_runner.saying)
    versions: tuple = ()  # (name, version) of the process that built it (`library_versions`)


@functools.cache
def library_versions() -> tuple[tuple[str, str], ...]:
    """``(name, version)`` of what decides a point's values besides the job, in this process: landscape_nb
    ("unknown" when run from a source tree never installed), torch, NumPy and Python (major.minor)."""
    try:
        ours = version("landscape_nb")
    except PackageNotFoundError:
        ours = "unknown"
    return (("landscape_nb", ours), ("torch", torch.__version__), ("numpy", np.__version__),
            ("python", "{}.{}".format(*sys.version_info[:2])))


def describe(ev: PointEvaluator) -> DataInfo:
    tuning = getattr(ev, "tuning", False)
    return DataInfo(tuple(ev.metric_names), ev.data_fingerprint, ev.n_samples, str(ev.device), ev.bn_fold,
                    None if tuning else ev.batch_size, ev.points_per_pass, tuple(getattr(ev, "notes", {}).items()),
                    bn_fingerprint=getattr(ev, "bn_fingerprint", None), bn_pass_size=getattr(ev, "bn_pass_size", None),
                    warnings=tuple(getattr(ev, "said_on_worker", ())), versions=library_versions())


class Runner(Protocol):
    """Turns tiles into values. ``run`` yields ``(tile, values)`` in completion order, values
    shaped (tile rows, tile cols, 1 + n_metrics)."""

    description: str

    def prepare(self, job: Job) -> DataInfo: ...

    def run(self, job: Job, grid: Grid, tiles: Sequence[Tile], cancel: threading.Event) -> Iterator[tuple[Tile, np.ndarray]]: ...

    def settled(self) -> DataInfo | None:
        """After a run: the batch size and points per pass the evaluator settled on (None if unknown here)."""

    def close(self) -> None: ...


class ClusterLost(LandscapeError):
    """The run lost its Dask scheduler or workers and could not get them back within the budget.

    ``compute.compute_surface`` re-raises it with how many points are stored and that a rerun resumes.
    """


# ------------------------------------------------------- user-code errors ----

#: the end of a user-code error's line, where compute_surface had no points of its own to say are kept
TILES_KEPT = "finished tiles are kept when compute_surface has a store"


def user_code_error(exc: BaseException, job: "Job", tile: Tile | list[Tile] | None = None,
                    grid: Grid | None = None) -> LandscapeError:
    """One clear line for an exception raised by the user's model, loss or metric while evaluating ``tile``
    (``statecheck.user_error``), with the coordinates of its points where ``grid`` is given; the original
    exception is meant to be chained as ``__cause__``."""
    tiles = tile if isinstance(tile, list) else [] if tile is None else [tile]
    which = (f"tile {tiles[0].index}" if len(tiles) == 1 else
             f"tiles {', '.join(str(t.index) for t in tiles)} (evaluated together)")
    n = sum(t.n_points for t in tiles)
    where = (f"while evaluating {which} ({n} point{'' if n == 1 else 's'}{_spans(grid, tiles)}) of surface "
             f"{job.key or '(no key yet)'}" if tiles else "while checking the model, loss and metrics on a first batch")
    return user_error(exc, job.model, job.loss_fn, job.metrics, where, TILES_KEPT)


def _spans(grid: Grid | None, tiles: list[Tile]) -> str:
    """``": x -2 to -1.5, y 0.5"``: where the points of ``tiles`` lie on ``grid`` (a tile's index alone named no
    coordinates: trial s46); empty without a grid."""
    if grid is None or not tiles:
        return ""
    coords = np.concatenate([grid.coords(t) for t in tiles])
    spans = [f"{axis} {lo:.4g}" + (f" to {hi:.4g}" if hi > lo else "")
             for axis, lo, hi in zip("xyz", coords.min(0), coords.max(0))]
    return ": " + ", ".join(spans)


def raise_from_user_code(exc: BaseException, job: "Job", tile: Tile | list[Tile] | None = None,
                         grid: Grid | None = None):
    """Raise ``exc`` as one clear line (``from_user_code``), chained to it unless it is a ``LandscapeError``."""
    err = from_user_code(exc, job, tile, grid)
    if err is exc:
        raise exc
    raise err from exc


def from_user_code(exc: BaseException, job: "Job", tile: Tile | list[Tile] | None = None,
                   grid: Grid | None = None) -> LandscapeError:
    """``exc`` as one clear line: a ``LandscapeError`` already (its user cause's traceback trimmed) or wrapped."""
    if isinstance(exc, LandscapeError):
        if exc.__cause__ is not None:
            culprit(exc.__cause__, job.model, job.loss_fn, job.metrics)  # trims its traceback to the user's frames
        return exc
    return user_code_error(exc, job, tile, grid)


class InProcessRunner:
    """Evaluates tiles one after another in this process, on the model's own weights.

    One evaluator session spans all tiles: the model is snapshotted once, stays perturbed
    between tiles, and is restored bit-identically when the run ends or ``close`` is called.
    """

    description = "in-process"
    malloc: str | None = None  # process.heap_policy() once a CPU evaluator is prepared

    def __init__(self):
        self._evaluator: PointEvaluator | None = None
        self._running: Iterator | None = None

    def prepare(self, job: Job) -> DataInfo:
        try:
            self._evaluator = job.evaluator()
        except Exception as exc:  # the user's model, loss or metric failing on a first batch
            raise_from_user_code(exc, job)
        if self._evaluator.device.type == "cpu":  # freed activations kept mapped (process.heap_policy)
            self.malloc = heap_policy()
        return describe(self._evaluator)

    def run(self, job, grid, tiles, cancel):
        if self._evaluator is None:
            self._evaluator = job.evaluator()
        self._running = self._tiles(self._evaluator, job, grid, tiles, cancel)
        return self._running

    @staticmethod
    def _tiles(ev, job, grid, tiles, cancel):
        """Tiles in order; consecutive small tiles go to the evaluator together when it asks for more
        points per call than one holds (``points_wanted``: several points per vmapped pass)."""
        pending = list(tiles)
        grouping = hasattr(ev, "points_wanted")
        if grouping:
            ev.grouped_calls = True
        with ev.session():
            while pending:
                if cancel.is_set():
                    return
                want = ev.points_wanted() if grouping else 1
                group = [pending.pop(0)]
                n = group[0].n_points
                while pending and n < want:
                    group.append(pending.pop(0))
                    n += group[-1].n_points
                try:
                    values = ev.evaluate(np.concatenate([grid.coords(t) for t in group]), should_stop=cancel.is_set)
                except Cancelled:
                    return
                except Exception as exc:
                    if len(group) == 1:
                        raise_from_user_code(exc, job, group, grid)
                    values = None  # run again below, outside this handler (its error is not the one to chain)
                if values is None:
                    if (yield from InProcessRunner._one_by_one(ev, job, grid, group, cancel)):
                        return
                    continue
                start = 0
                for tile in group:
                    yield tile, values[start:start + tile.n_points].reshape(*tile.shape, -1)
                    start += tile.n_points

    @staticmethod
    def _one_by_one(ev, job, grid, group, cancel):
        """Tiles run together that failed together, run again one at a time: every good one yielded, then the first
        failing one raised, named with its coordinates (the group's good points were lost and the error named the
        whole group's span, x -1 to 1 for one bad end, trial s46). Returns True where cancelled."""
        failed = None
        for tile in group:
            if cancel.is_set():
                return True
            try:
                with warnings.catch_warnings():  # the group's run said them already: not twice
                    warnings.simplefilter("ignore")
                    one = ev.evaluate(grid.coords(tile), should_stop=cancel.is_set)
            except Cancelled:
                return True
            except Exception as exc:  # noqa: BLE001 - raised below, once the group's rest ran
                failed = failed or (exc, tile)
                continue
            yield tile, one.reshape(*tile.shape, -1)
        if failed is not None:
            raise_from_user_code(failed[0], job, failed[1], grid)
        return False

    def settled(self) -> DataInfo | None:
        if self._evaluator is None:
            return None
        if hasattr(self._evaluator, "settle"):
            self._evaluator.settle()
        return describe(self._evaluator)

    def close(self) -> None:
        if self._running is not None:  # a run left mid-way: end its session, restoring the model
            self._running.close()
            self._running = None
        self._evaluator = None


__all__ = ["Job", "DataInfo", "describe", "Runner", "InProcessRunner", "ClusterLost", "user_code_error",
           "from_user_code", "raise_from_user_code"]
