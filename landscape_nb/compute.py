"""Orchestration: SurfaceSpec → tiles → runner (in-process or Dask) → store, listeners, Surface.

The runner only turns tiles into values; everything else (spec, resume, store,
listeners) happens here in the caller's process, whatever the runner.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from . import __version__
from .directions import Directions, as_directions
from .errors import LandscapeError
from .evaluate import Cancelled, EvalSettings, Evaluator, hash_tensor, loss_name
from .grid import Grid, Tile, coarse_to_fine
from .params import ParamLayout
from .store import SurfaceStore, make_surface
from .surface import Surface

log = logging.getLogger(__name__)


@dataclass
class Job:
    """Everything a worker needs to build an Evaluator; shipped once per worker, never per tile."""

    model: nn.Module
    data: Any
    vectors: torch.Tensor
    layout: ParamLayout
    loss_fn: Callable | None
    metrics: Any
    settings: EvalSettings
    device: str | None = None
    bn_data: Any = None
    key: str = ""
    quantity: str = "loss"
    quantity_options: dict = field(default_factory=dict)

    def evaluator(self) -> Evaluator:
        """The per-point evaluator: loss and metrics, or another ``QUANTITIES`` entry wrapping it."""
        ev = Evaluator(self.model, self.data, self.vectors, self.layout, loss_fn=self.loss_fn,
                       metrics=self.metrics, settings=self.settings, device=self.device, bn_data=self.bn_data)
        if self.quantity == "loss":
            return ev
        if self.quantity == "hessian":
            from .hessian import HessianEvaluator

            return HessianEvaluator(ev, **self.quantity_options)
        raise LandscapeError(f"quantity={self.quantity!r}; expected one of {QUANTITIES}")


QUANTITIES = ("loss", "hessian")  # "hessian": loss, λ_max, λ_min, |λ_min/λ_max| per point (see hessian.eigen_map)


@dataclass(frozen=True)
class DataInfo:
    metric_names: tuple[str, ...]
    fingerprint: str
    n_samples: int
    device: str
    bn_fold: str = "off"


def describe(ev: Evaluator) -> DataInfo:
    """What the spec needs to know about an evaluator's data (built where the data lives)."""
    return DataInfo(tuple(ev.metric_names), ev.data_fingerprint, ev.n_samples, str(ev.device),
                    ev.bn_fold)


class Runner(Protocol):
    """Turns tiles into values. ``run`` yields ``(tile, values)`` in completion order."""

    def prepare(self, job: Job) -> DataInfo: ...

    def run(self, job: Job, grid: Grid, tiles: Sequence[Tile], cancel: threading.Event) -> Iterator[tuple[Tile, np.ndarray]]: ...

    def close(self) -> None: ...


class InProcessRunner:
    """Evaluates tiles one after another in this process, on the model's own weights.

    One evaluator session spans all tiles: the model is snapshotted once, stays perturbed
    between tiles, and is restored bit-identically when the run ends or ``close`` is called.
    """

    description = "in-process"

    def __init__(self):
        self._evaluator: Evaluator | None = None
        self._running: Iterator | None = None

    def prepare(self, job: Job) -> DataInfo:
        self._evaluator = job.evaluator()
        return describe(self._evaluator)

    def run(self, job, grid, tiles, cancel):
        self._running = self._tiles(self._evaluator or job.evaluator(), grid, tiles, cancel)
        return self._running

    @staticmethod
    def _tiles(ev, grid, tiles, cancel):
        with ev.session():
            for tile in tiles:
                if cancel.is_set():
                    return
                try:
                    values = ev.evaluate(grid.coords(tile), should_stop=cancel.is_set)
                except Cancelled:
                    return
                yield tile, values.reshape(*tile.shape, -1)

    def close(self) -> None:
        if self._running is not None:  # a run left mid-way: end its session, restoring the model
            self._running.close()
            self._running = None
        self._evaluator = None


@dataclass(frozen=True)
class TileDone:
    """What listeners receive for each finished tile (values are (rows, cols) arrays)."""

    tile: Tile
    values: dict[str, np.ndarray]
    n_done: int
    n_points: int
    elapsed: float
    surface: Callable[[], Surface] = field(repr=False, compare=False)


def model_fingerprint(model: nn.Module) -> str:
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, t in model.state_dict().items():
        hash_tensor(h, t, name)
    return h.hexdigest()[:24]


def _callable_fingerprint(fn) -> str | None:
    if fn is None:
        return None
    try:
        import cloudpickle

        return hashlib.sha256(cloudpickle.dumps(fn)).hexdigest()[:16]
    except Exception:  # unpicklable callables are identified by name only
        return loss_name(fn)


def spec_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def _labels(directions: Directions, ndim: int) -> dict[str, str]:
    prov = directions.provenance
    scheme = directions.scheme
    if scheme.startswith("random"):
        suffix = f"{prov.get('norm', '')}-normalized" if prov.get("norm") not in (None, "none") else "raw"
        return {"x_label": f"α (random direction 1, {suffix})", "y_label": f"β (random direction 2, {suffix})"}
    return {"x_label": str(prov.get("x_label", "α (direction 1)")), "y_label": str(prov.get("y_label", "β (direction 2)"))}


def compute_surface(
    model: nn.Module,
    data,
    directions,
    x=(-1.0, 1.0, 51),
    y=None,
    *,
    loss_fn: Callable | None = None,
    metrics="auto",
    client=None,
    store: str | Path | None = None,
    tile=None,
    callbacks: Iterable[Callable[[TileDone], None]] = (),
    cancel: threading.Event | None = None,
    max_samples: int | None = None,
    subset_seed: int = 0,
    mode: str = "eval",
    bn_data=None,
    batch_size: int | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    points_per_pass: int | None = None,
    fold_bn: bool = True,
    device: str | None = None,
    name: str | None = None,
    n_workers: int | None = None,
    quantity: str = "loss",
    quantity_options: dict | None = None,
) -> Surface:
    """Loss and metrics of ``model`` on ``data`` over a 1D line (``y=None``) or a 2D plane.

    >>> d = lnb.random_directions(model, n=2)
    >>> surf = lnb.compute_surface(model, (inputs, targets), d, x=(-1, 1, 51), y=(-1, 1, 51))
    >>> surf.loss.shape   # (51, 51); surf.loss[j, i] is at (surf.x[i], surf.y[j])

    ``data``: ``(inputs, targets)``, a Dataset, a DataLoader or a zero-argument factory.
    ``loss_fn``: any ``(outputs, targets) -> scalar mean``; default cross-entropy.
    ``client``: None (in-process), ``"local"``, ``"cuda"``, a scheduler address or a
    ``distributed.Client``. ``store``: a directory; a rerun with the same spec resumes
    and computes only missing tiles, a different spec refuses. ``callbacks`` get a
    ``TileDone`` per finished tile; ``cancel`` (an Event) stops early and returns the
    partial surface (NaN where not computed). In-process, ``model`` is perturbed in place
    and in eval mode for the whole run, between tiles too (callbacks see it so); it is
    restored bit-identically when the call returns or raises.

    Evaluation: eval mode (BN running statistics) by default, ``mode="bn-recompute"``
    re-estimates BN statistics at every point (on ``bn_data``, default the evaluation
    data); ``max_samples`` takes a fixed-seed subset. Opt-in speed: ``precision``
    ("tf32", "bf16" autocast), ``channels_last``, ``compile``; all recorded in the
    spec. ``points_per_pass`` stacks several points into one vmapped pass (default:
    1 on CPU, measured on a GPU); it changes values only by float rounding, as does
    ``fold_bn`` (eval mode: each conv→BatchNorm pair runs as one convolution, see
    ``landscape_nb.fold``; recorded in ``provenance["bn_fold"]``).
    ``name`` labels the surface in figures (``provenance["label"]``).

    ``quantity``: what each point holds, ``"loss"`` (default) or ``"hessian"``
    (loss plus extreme Hessian eigenvalues; use ``hessian.eigen_map``), with its
    ``quantity_options``; both are part of the spec.
    """
    grid = Grid.make(x, y)
    d = as_directions(model, directions)
    if d.n != grid.ndim:
        fix = "directions.select([0])" if d.n > grid.ndim else "random_directions(model, n=2)"
        raise LandscapeError(
            f"{d.n} direction(s) for a {grid.ndim}D grid; expected {grid.ndim} (one per axis): use {fix}"
            + (" or pass y=(start, stop, num)" if d.n == 2 else "")
        )
    settings = EvalSettings(
        loss_name=loss_name(loss_fn), mode="bn-recompute" if mode in ("bn-recompute", "bn") else mode, max_samples=max_samples,
        subset_seed=subset_seed, batch_size=batch_size, precision=precision, channels_last=channels_last,
        compile=compile, points_per_pass=points_per_pass, fold_bn=fold_bn,
    )
    if quantity not in QUANTITIES:
        raise LandscapeError(f"quantity={quantity!r}; expected one of {QUANTITIES}")
    options = dict(quantity_options or {})
    job = Job(model, data, d.vectors, d.layout, loss_fn, metrics, settings, device, bn_data,
              quantity=quantity, quantity_options=options)
    runner, owned = make_runner(client, n_workers=n_workers)
    cancel = cancel or threading.Event()
    st = None
    try:
        info = runner.prepare(job)
        spec = {
            "version": 1,
            "model": {"class": type(model).__qualname__, "layout": d.layout.fingerprint(),
                      "weights": model_fingerprint(model)},
            "data": {"fingerprint": info.fingerprint, "n_samples": info.n_samples},
            "directions": {"fingerprint": d.fingerprint(), "n": d.n, "scheme": d.scheme},
            "grid": grid.to_json(),
            "eval": {**{k: v for k, v in settings.to_json().items() if k not in ("points_per_pass", "fold_bn")},
                     "metrics": list(info.metric_names),
                     "loss_fingerprint": _callable_fingerprint(loss_fn),
                     "bn_data": None if bn_data is None or settings.mode == "eval" else "given"},
        }
        if quantity != "loss":
            spec["quantity"] = {"name": quantity, **options}
        key = spec_key(spec)
        job.key = key
        provenance = {
            "label": name or type(model).__name__, "scheme": d.scheme,
            "directions": {k: v for k, v in d.provenance.items() if isinstance(v, (str, int, float, bool, type(None)))},
            **_labels(d, grid.ndim), "landscape_nb": __version__, "torch": torch.__version__,
            "device": info.device, "runner": getattr(runner, "description", type(runner).__name__),
            "precision": precision, "bn_fold": info.bn_fold,
        }
        tile_shape = grid.check_tile(tile)
        if store is not None:
            st = SurfaceStore.open_or_create(store, spec, key, None if tile is None else tile_shape,
                                             tile_shape, list(info.metric_names), provenance)
            tile_shape = st.tile
            loss, metrics_arr, done = st.read()
        else:
            shape = grid.shape2d
            loss = np.full(shape, np.nan)
            metrics_arr = {m: np.full(shape, np.nan) for m in info.metric_names}
            done = np.zeros(shape, dtype=bool)
        tiles = {t.index: t for t in grid.tiles(tile_shape)}
        n_rows = max(i for i, _ in tiles) + 1
        n_cols = max(j for _, j in tiles) + 1
        todo = [tiles[ij] for ij in coarse_to_fine((n_rows, n_cols))
                if not done[tiles[ij].y0:tiles[ij].y1, tiles[ij].x0:tiles[ij].x1].all()]
        n_points = grid.n_points
        log.info("%d of %d tiles to compute (%s)", len(todo), len(tiles), provenance["runner"])

        def snapshot() -> Surface:
            return make_surface(spec, loss.copy(), {k: v.copy() for k, v in metrics_arr.items()}, done.copy(),
                                {**provenance, "key": key})

        callbacks = list(callbacks)
        t0 = time.perf_counter()
        n_computed = 0
        for t, values in runner.run(job, grid, todo, cancel):
            sl = (slice(t.y0, t.y1), slice(t.x0, t.x1))
            if st is not None:
                st.write(t, values)
            loss[sl] = values[..., 0]
            for k, m in enumerate(info.metric_names, start=1):
                metrics_arr[m][sl] = values[..., k]
            done[sl] = True
            n_computed += t.n_points
            event = TileDone(t, {"loss": values[..., 0], **{m: values[..., k] for k, m in enumerate(
                info.metric_names, start=1)}}, int(done.sum()), n_points, time.perf_counter() - t0, snapshot)
            for cb in callbacks:
                cb(event)
        elapsed = time.perf_counter() - t0
        extra = {"seconds": elapsed, "points_computed": n_computed,
                 "seconds_per_point": elapsed / n_computed if n_computed else None,
                 "cancelled": bool(cancel.is_set() and not done.all())}
        if st is not None:
            st.update_provenance(extra)
        provenance.update(extra)
        return make_surface(spec, loss, metrics_arr, done, {**provenance, "key": key})
    finally:
        runner.close()
        if owned is not None:
            owned.close()
        if st is not None:
            st.close()  # flush buffered tiles, release the writer lock


def make_runner(client, n_workers: int | None = None):
    """(runner, thing to close) for a ``client`` argument; see ``compute_surface``."""
    if client is None or client == "inprocess":
        return InProcessRunner(), None
    from .cluster import DaskRunner, get_client

    cl, owned = get_client(client, n_workers=n_workers)
    return DaskRunner(cl), owned
