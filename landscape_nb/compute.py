"""Orchestration: SurfaceSpec → tiles → runner (in-process or Dask) → store, listeners, Surface.

The runner only turns tiles into values; everything else (spec, resume, store,
listeners) happens here in the caller's process, whatever the runner.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from . import validate
from .data import NON_FINITE_DATA
from .directions import Directions, as_directions, how_made
from .errors import LandscapeError, warn_user
from .evaluate import EvalSettings
from .grid import (
    MAX_PER_AXIS,
    MAX_POINTS,
    Grid,
    ModelOffGrid,
    Tile,
    coarse_to_fine,
    grid_through_models,
    models_at,
    models_between_points,
    models_outside,
    say_models_at,
    several_at,
)
from .hessian import RATIO_WORDS, HessianEvaluator
from .metrics import (
    PROBABILITY_OUTPUTS,
    SKIPPED_ACCURACY,
    UNCOUNTED_TARGETS,
    loss_name,
    split_values,
    unwrap_compiled,
)
from .params import (
    batchnorm_modules,
    float_state_buffers,
    model_dtype,
    moved_variances,
    unwrap_model,
)
from .runners import (
    TILES_KEPT,
    ClusterLost,
    DataInfo,
    InProcessRunner,
    Job,
    Runner,
    library_versions,
)
from .spec import (
    CODE_VERSION,
    SurfaceSpec,
    _callable_fingerprint,
    code_fingerprint,
    globals_and_structures,
    made_around,
    made_around_buffers,
    model_fingerprint,
)
from .store import SurfaceStore, make_surface
from .store_mismatch import code_differences, describe_differences
from .surface import (
    CENTRE_DIVERGED,
    RANDOM_OUTPUTS,
    RANDOM_VALUES,
    Surface,
    notes_by_kind,
    zoo_label,
)

logger = logging.getLogger(__name__)

# what a grid point holds: None is loss and metrics; otherwise a class wrapping the loss Evaluator
QUANTITIES: dict[str, Callable | None] = {"loss": None, "hessian": HessianEvaluator}


class _FromSettings:
    def __repr__(self) -> str:
        return "<from settings>"


FROM_SETTINGS: Any = _FromSettings()  # default of the evaluation keywords: keep the ``settings`` field


@dataclass(frozen=True)
class TileDone:
    """What listeners receive for each finished tile (values are ``tile.shape`` arrays: (rows, cols) or
    (depth, rows, cols))."""

    tile: Tile
    values: dict[str, np.ndarray]
    n_done: int
    n_points: int
    elapsed: float
    surface: Callable[[], Surface] = field(repr=False, compare=False)


class _SurfaceBuffer:
    """The surface being filled: loss, metric and done arrays of ``Grid.store_shape``, written tile by tile."""

    def __init__(self, spec: SurfaceSpec, provenance: dict, loss, metrics: dict, done):
        self.spec, self.provenance = spec.to_json(), {**provenance, "key": spec.key}
        self.metric_names = list(spec.metric_names)
        self.loss, self.metrics, self.done = loss, metrics, done

    @classmethod
    def empty(cls, spec: SurfaceSpec, provenance: dict, shape: tuple[int, ...]) -> "_SurfaceBuffer":
        return cls(spec, provenance, np.full(shape, np.nan), {m: np.full(shape, np.nan) for m in spec.metric_names},
                   np.zeros(shape, dtype=bool))

    def write(self, tile: Tile, values: np.ndarray) -> None:
        sl = tile.region
        for name, v in split_values(values, self.metric_names).items():
            (self.loss if name == "loss" else self.metrics[name])[sl] = v
        self.done[sl] = True

    def surface(self) -> Surface:
        return make_surface(self.spec, self.loss, self.metrics, self.done, self.provenance)

    def snapshot(self) -> Surface:
        """A copy of the surface so far; sealed, so a callback's last one can be given to ``resume=``."""
        return _sealed(make_surface(self.spec, self.loss.copy(), {k: v.copy() for k, v in self.metrics.items()},
                                    self.done.copy(), dict(self.provenance)))

    def event(self, tile: Tile, values: np.ndarray, elapsed: float) -> TileDone:
        return TileDone(tile, split_values(values, self.metric_names), int(self.done.sum()), self.done.size,
                        elapsed, self.snapshot)


def _todo_tiles(grid: Grid, tile_shape: tuple[int, ...], done: np.ndarray) -> list[Tile]:
    """The tiles not yet done, in coarse-to-fine order (the first ones spread over the whole grid)."""
    tiles = {t.index: t for t in grid.tiles(tile_shape)}
    index_shape = tuple(int(n) + 1 for n in np.max(list(tiles), axis=0))
    order = (tiles[ij] for ij in coarse_to_fine(index_shape))
    return [t for t in order if not done[t.region].all()]


def compute_surface(
    model: nn.Module,
    data,
    directions,
    x=(-1.0, 1.0, 51),
    y=None,
    z=None,
    *,
    loss_fn: Callable | None = None,
    metrics="auto",
    client=None,
    store: str | Path | None = None,
    resume: Surface | None = None,
    tile=None,
    callbacks: Iterable[Callable[[TileDone], None]] = (),
    cancel: threading.Event | None = None,
    settings: EvalSettings | None = None,
    max_samples: int | None = FROM_SETTINGS,
    subset_seed: int = FROM_SETTINGS,
    mode: str = FROM_SETTINGS,
    bn_data=None,
    batch_size: int | None = FROM_SETTINGS,
    precision: str = FROM_SETTINGS,
    channels_last: bool = FROM_SETTINGS,
    compile: bool | str = FROM_SETTINGS,
    points_per_pass: int | None = FROM_SETTINGS,
    fold_bn: bool = FROM_SETTINGS,
    device: str | None = None,
    name: str | None = None,
    provenance: Mapping | None = None,
    n_workers: int | None = None,
    quantity: str = "loss",
    quantity_options: dict | None = None,
    target_key: str | int | None = FROM_SETTINGS,
    progress: bool = False,
) -> Surface:
    """Loss and metrics of ``model`` on ``data`` over a 1D line (``y=None``), a 2D plane or a 3D volume.

    >>> d = lnb.random_directions(model, n=2)
    >>> surf = lnb.compute_surface(model, (inputs, targets), d, x=(-1, 1, 51), y=(-1, 1, 51))
    >>> surf.loss.shape   # (51, 51); surf.loss[j, i] is at (surf.x[i], surf.y[j])

    The value at grid point (α, β) is the mean loss at weights ``w0 + α d1 + β d2`` [1]_; with
    three directions and ``z`` it is the volume of points (α, β, γ) at ``w0 + α d1 + β d2 + γ d3``,
    ``surf.loss[k, j, i]`` at ``(surf.x[i], surf.y[j], surf.z[k])`` (``surf.slice`` cuts planes).
    In-process, ``model`` is perturbed in place and in eval mode for the whole run, between
    tiles too (callbacks see it so); it is restored bit-identically when the call returns or
    raises.

    Parameters
    ----------
    model : torch.nn.Module
        The network at the centre ``w0`` of the plot.
    data : (inputs, targets), Dataset, DataLoader or zero-argument callable, or a mapping of them
        Evaluation data, ``n_samples`` along the first axis. A mapping of named splits, e.g.
        ``{"train": ..., "test": ...}``, evaluates every split at each point in this one computation
        (``splits.SplitEvaluator``): ``loss`` is the first split's, and ``metrics`` holds
        ``"<split>_loss"`` and ``"<split>_<metric>"`` for each (``"train_loss"``, ``"test_accuracy"``);
        ``lnb.plot.line_splits`` draws a line of them as in Li et al. (2018), Figure 1.
    directions : Directions, or list of 1 (line), 2 (plane) or 3 (volume) state-dict-like mappings
        The axes, in weight units (e.g. ``random_directions(model, n=2)``; for a volume
        ``random_directions(model, n=3)``, ``hessian_directions(model, data, which=("max", "max2", "max3"))``,
        ``pca_directions(checkpoints, final=model, n=3)`` or three of your own).
    x, y, z : (start, stop, num)
        Coefficients along each direction (dimensionless); ``y=None`` for a line, ``z=None`` (the
        default) for a plane.
    loss_fn : callable (outputs, targets) -> scalar mean, optional
        Default cross-entropy.
    metrics : "auto", None, str, list or dict name -> callable
        Evaluated next to the loss; ``"auto"``: accuracy for classifiers, the argmax of the logits
        against class-index targets, skipped with the reason in ``provenance["data"]["accuracy"]`` where
        it means nothing (one logit a sample, multi-hot or regression targets, a loss whose gradient
        shows another rule of prediction: `metrics.loss_disagrees`), and warned of unless the targets are
        a regression's (floating point) or absent; ``"accuracy"`` named raises
        ``LandscapeError`` where the shapes make it meaningless, and is warned of where the loss's
        gradient disagrees. A callable ``(outputs, targets) -> scalar`` returns the batch's mean (a sum
        over the batch is refused).
    client : None, "in-process", "local", "cuda", scheduler address, distributed.Client or cluster
        A cluster object (``LocalCluster``, ``dask_jobqueue.SLURMCluster``) gets a client made here.
        Where tiles run (see ``cluster.parse_client``); ``n_workers`` sizes a cluster made here.
    store : path, optional
        A directory; a rerun with the same spec resumes and computes only missing tiles.
    resume : Surface, optional
        A partial surface of this same call, as a cancelled run returns it, a lost cluster's
        ``ClusterLost.surface`` holds it, or a callback got it (``TileDone.surface()``, e.g. the last
        one before an interrupt): its computed points are kept and only the missing tiles
        computed (``provenance["points_resumed"]``), without a store, in the partial's tiling. Refused
        (``ResumeMismatch``): a surface of another computation (model weights, data, directions, grid,
        settings: its ``provenance["key"]``; or the model's module settings, its classes' source, the
        globals the code reads, as a store compares them), one edited after it was returned
        (``provenance["values_sha256"]``), one without a key (loaded from a file: pass ``store=``),
        another ``tile``, and ``resume`` with ``store`` (a store resumes by itself).
    tile : int, (rows, cols) or, for a volume, (depth, rows, cols), optional
        Points per task; default from the grid (or the store's own tiling when resuming). A volume's
        default tiles are one z slice deep (``Grid.check_tile``).
    callbacks : iterable of callable(TileDone)
        Called in this process after each finished tile.
    cancel : threading.Event, optional
        Set it to stop early; the partial surface is returned (NaN where not computed,
        ``surface.complete`` False, ``provenance["cancelled"]`` True). Only a cancelled run
        returns a partial surface.
    settings : EvalSettings, optional
        How points are evaluated. The keywords ``max_samples``, ``subset_seed``, ``mode``,
        ``batch_size``, ``precision``, ``channels_last``, ``compile``, ``points_per_pass`` and
        ``fold_bn`` override its fields; left out, the field of ``settings`` (or its default) holds.
        ``mode``: ``"eval"`` (BN running statistics) or ``"bn-recompute"`` (BN statistics
        re-estimated at every point on ``bn_data``, default the evaluation data (with named
        splits: the first split's, for every split), with only the
        BatchNorm layers in train mode: Dropout stays off, unlike ``torch.optim.swa_utils.update_bn``,
        which runs the whole model in train mode; ``"bn"`` is an accepted short alias, stored as
        ``"bn-recompute"``). ``max_samples`` takes a
        fixed-seed subset. ``batch_size`` (default: tuned) changes values only by rounding for a
        loss that is a mean over samples; for one that is not (a mean over non-padding tokens)
        every point keeps one batching, see ``evaluate.Evaluator``; so a store resumes only with
        the ``batch_size`` it was started with (None, tuned, included). ``precision`` ("tf32", "bf16" autocast),
        ``channels_last`` and ``compile`` (True, or a ``torch.compile`` mode from ``choices.COMPILE_MODES``) are
        opt-in speed modes; ``precision`` is part of the spec (on a GPU the default ``"fp32"`` is fp32
        throughout: PyTorch's own default runs fp32 convolutions in TF32, here that takes
        ``"tf32"``); ``points_per_pass`` (several points per vmapped pass), ``fold_bn`` (conv→BatchNorm pairs as one
        conv, see ``landscape_nb.fold``), ``channels_last`` and ``compile`` change values only by float rounding and
        are provenance (a store resumes across them).
    device : str, optional
        Evaluate there (default: the model's device).
    name : str, optional
        Label of the surface in figures (``provenance["label"]``). Default: a zoo model's name
        ("resnet20-digits", a minimizer's "mlp-digits small-batch"), else the model's class name.
    provenance : dict, optional
        What the run cannot tell by itself, kept in the surface's provenance and its store, e.g.
        ``{"split": "train"}`` (figure titles say the split; `plot.figures.run_title`). Keys are str, values
        str, numbers, bools or None; a key the run records itself (``"label"``, ``"seconds"``...) is refused.
    quantity : {"loss", "hessian"}
        What each point holds: loss and metrics, or the loss plus extreme Hessian eigenvalues
        (use ``lnb.eigen_map``); ``quantity_options`` go to ``hessian.HessianEvaluator`` (whose ``ratio``
        defaults to ``"abs"``, ``eigen_map``'s to ``"negative"``). Both are part of the spec.
    target_key : str or int, optional
        Where the targets are in dict batches (default ``"labels"``) or tuples of more than two
        tensors (default the last); see ``data.read_data``. The rule used is in
        ``provenance["data"]``.
    progress : bool
        Show a tqdm.auto bar of the points computed.

    Returns
    -------
    Surface
        ``loss`` and ``metrics`` of shape (num_y, num_x) for a plane, (num_x,) for a line,
        (num_z, num_y, num_x) for a volume;
        ``provenance`` holds the spec key, timing, device, runner, batch size and points per pass, and
        where this run's points came from: ``points_from_store`` (read from ``store``, a resumed run),
        ``points_computed`` (evaluated by this run) and ``store`` (the path, or None); the function
        ``landscape_nb.compute.points_summary(surface)`` says it in one line, which is also logged
        (``logging.INFO``).
        On Dask each worker tunes its own: ``batch_size``/``points_per_pass`` are the values all
        workers chose (None where they differ) and ``provenance["workers"]`` maps each worker's
        address to its ``{"batch_size", "points_per_pass", "versions", "tiles", "left"}``: ``tiles`` it
        computed in this run, ``left`` True for a worker that sent tiles and died or left the cluster before
        the end (the tiles it sent are kept; those it was running ran again on another; one that died before
        sending any computed none of the surface and is not listed).

    Raises
    ------
    LandscapeError
        Before any point is computed (``landscape_nb.validate``): an argument of the wrong
        type or value, a non-finite weight or direction, a range whose weights overflow, a
        model on the meta device, an unknown device, a store path that is a file or a store
        holding a different surface. An exception raised by the model, loss or a metric
        becomes one line naming the function and, during the run, the tile and spec key
        (the original is ``__cause__``).
    landscape_nb.runners.ClusterLost
        A ``LandscapeError``: the Dask scheduler or workers were lost and did not come back
        within the budget (``cluster.DaskRunner``); the message says how many points are
        stored and that rerunning resumes; its ``surface`` holds the points computed (pass it
        as ``resume`` to go on without a store).
    landscape_nb.compute.ResumeMismatch
        A ``LandscapeError``: ``resume`` is a surface of another spec.

    Notes
    -----
    Speed choices are made by timing the first real points (no extra passes): the batch size, the
    memory format, a shared first layer and how many points run stacked in one ``vmap`` pass
    (``points_per_pass``; on a 2-core CPU 16-32 for mlp-digits, one for conv nets). Tiles smaller
    than a stacked pass are evaluated together and still stored and announced one by one.
    On a CPU in-process run on Linux (glibc), the first call asks the C library to keep up to
    256 MiB of freed heap mapped and to serve blocks up to 32 MiB from its heaps
    (``process.keep_heap_top``): the activations freed and allocated again at every pass were
    otherwise page-faulted back in each time (mlp-digits, 32 points a pass: 0.2 vs 0.11 ms a
    point). It holds for the rest of the process; ``LANDSCAPE_NB_MALLOC=default`` leaves malloc
    alone. ``provenance["malloc"]`` says which ("kept", "default" or "unchanged").

    References
    ----------
    .. [1] H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the Loss Landscape of
       Neural Nets", NeurIPS 2018.
    """
    validate.check_arguments(model=model, data=data, loss_fn=loss_fn, metrics=metrics, store=store, tile=tile,
                             callbacks=callbacks, cancel=cancel, device=device, name=name, n_workers=n_workers,
                             bn_data=bn_data, quantity=quantity, quantity_options=quantity_options,
                             quantities=QUANTITIES, resume=resume)
    given_provenance = _check_given_provenance(provenance)
    callbacks = validate.check_callbacks(callbacks)
    model = unwrap_model(model)
    # evaluated as what they wrap (metrics.unwrap_compiled): Dask workers get, and the store keys, the originals
    loss_fn = unwrap_compiled(loss_fn)
    if isinstance(metrics, Mapping):
        metrics = {name: unwrap_compiled(fn) for name, fn in metrics.items()}
    grid, d = _grid_and_directions(model, directions, x, y, z)
    validate.check_numbers(model, d, grid)  # a NaN weight or direction, or an overflowing range: refused here
    if resume is not None:  # what the surface itself tells, before the model runs; its spec and code once known
        tile = _check_resume(resume, grid, tile)
        _check_resume_geometry(resume, model, d, grid)
    grid.check_tile(tile)  # a tile form that does not fit the grid: refused before the model runs
    settings = _eval_settings(settings, loss_fn, max_samples=max_samples, subset_seed=subset_seed, mode=mode,
                              batch_size=batch_size, precision=precision, channels_last=channels_last,
                              compile=compile, points_per_pass=points_per_pass, fold_bn=fold_bn,
                              target_key=target_key)
    settings = _running_var_rule(settings, d)
    who = f"landscape_nb.{'eigen_map' if quantity == 'hessian' else 'compute_surface'}"  # what warnings name
    warn_if_made_around_another_model(model, d, who)
    _warn_if_grid_misses_models(grid, d, who)
    _warn_if_made_around_other_statistics(model, d, settings.mode, who)
    if settings.mode == "eval" and d.provenance.get("eval_mode_note"):  # a curve's plane (paths.ModeCurve)
        warn_user(f"{who}: {d.provenance['eval_mode_note']}")
    validate.check_precision(model, settings, quantity)
    _refuse_hessian_of_recomputed_bn(quantity, settings)
    _warn_if_no_statistics_to_recompute(model, settings)
    options = dict(quantity_options or {})
    job = Job(model, data, d.vectors, d.layout, loss_fn, metrics, settings, device, bn_data,
              wrap=_wrap(quantity, options))
    runner, owned = make_runner(client, n_workers=n_workers)
    cancel = cancel or threading.Event()
    st = bar = None
    try:
        info = runner.prepare(job)
        code_globals = globals_and_structures(model, loss_fn, metrics)  # what the user's code reads: stored, compared
        if settings.precision == "tf32" and not info.device.startswith("cuda"):  # labelled tf32, ran fp32 (trial s58)
            warn_user(f"{who}: precision='tf32' on {info.device}: TF32 is a mode of NVIDIA GPUs' matrix products "
                      "and convolutions, so these points are fp32 (their provenance says so); precision='bf16' is the "
                      "faster, rounded mode there")
            settings = dataclasses.replace(settings, precision="fp32")  # the spec too: an fp32 run resumes it (s59)
        for message, category in info.warnings:  # said on the Dask worker that probed the job: e.g. that a
            if (message, category) not in getattr(runner, "said_live", ()):  # loop over the loader sees other
                warn_user(message, category)  # samples, or the batches of a loss; not those given as they came
        spec = _surface_spec(model, d, grid, settings, info, loss_fn, bn_data, quantity, options, metrics)
        job.key = spec.key
        st, buffer, tile_shape = _open(store, spec, grid, tile, {
            **given_provenance, **_provenance(model, d, name, runner, info, settings, code_globals),
            **({"eig_ratio": RATIO_WORDS.get(options.get("ratio", "abs"), str(options.get("ratio")))}
               if quantity == "hessian" else {})})
        if st is not None and not st.is_complete:
            try:
                st.save_directions(d)  # once per store: load_directions gives them back
            except LandscapeError as exc:  # the values matter more: the run goes on without them
                logger.warning("the directions were not kept in the store: %s", exc)
        n_from_store = int(buffer.done.sum())  # read from the store, not computed by this run
        buffer.provenance["tile"] = list(tile_shape)  # a partial resumes with its tiling (_check_resume)
        n_resumed = 0 if resume is None else _resume_from(buffer, resume, spec)
        if (n_from_store or n_resumed) and code_globals[2]:  # CFG["slope"] changed: a store mixed two models (s37)
            warn_user(f"{who}: {n_from_store + n_resumed} points computed earlier are kept, and "
                      f"the model, loss_fn or metrics read {', '.join(code_globals[2][:6])} (module-level dicts, "
                      "lists or namespaces, or variables of a closure its code assigns: not compared, as a forward "
                      "may change them as it runs); if their values "
                      "changed since, those points are of other settings: use another store path (or delete this "
                      "one), and keep settings in numbers, strings or tuples, which are compared")
        todo = _todo_tiles(grid, tile_shape, buffer.done)
        logger.info("%d tiles to compute (%s)%s", len(todo), runner.description,
                    f"; {n_from_store} points are already in the store {str(store)!r}" if n_from_store else "")
        callbacks = list(callbacks)
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(buffer.done.size), initial=int(buffer.done.sum()), desc="compute_surface",
                       unit="point")
            callbacks.append(lambda event: bar.update(event.n_done - bar.n))
        try:
            elapsed, n_computed = _run_tiles(runner, job, grid, todo, cancel, st, buffer, callbacks)
        except ClusterLost as exc:
            raise _lost(str(exc), st, buffer) from None
        except Exception as exc:  # the user's error on a worker: the warnings its tiles gave first are said too
            _give_worker_warnings(runner.settled(), info)  # (not on Ctrl-C; a loss warning before it raised was lost)
            if isinstance(exc, LandscapeError) and len(exc.args) == 1 and n_from_store + n_resumed < buffer.done.sum():
                # e.g. a worker that joined late and cannot import the model's module: the points done were
                # lost with the exception, which did not say whether the store held them (trial s39)
                exc.reason = str(exc.args[0]).replace(f"; {TILES_KEPT}", "")  # as ClusterLost's (_lost)
                exc.args = (f"{exc.reason}; {_kept(st, buffer)}",)
                exc.surface = buffer.snapshot()
            raise
        if not cancel.is_set() and not buffer.done.all():  # never a silent partial: only the user stops early
            raise _lost(f"the {runner.description} runner ended with {int((~buffer.done).sum())} points "
                        "not computed", st, buffer)
        surface = _finish(runner, info, st, buffer, cancel, elapsed, n_computed, n_from_store, n_resumed, who)
        _warn_if_flat(surface, d, who)
        return surface
    finally:
        if bar is not None:
            bar.close()
        runner.close()
        if owned is not None:
            owned.close()
        if st is not None:
            st.close()  # flush buffered tiles, release the writer lock


def _run_tiles(runner: Runner, job: Job, grid: Grid, todo: list[Tile], cancel: threading.Event,
               st: SurfaceStore | None, buffer: _SurfaceBuffer, callbacks: list) -> tuple[float, int]:
    """Store, buffer and announce each tile as it arrives; (seconds, points computed)."""
    t0, n_computed = time.perf_counter(), 0
    for t, values in runner.run(job, grid, todo, cancel):
        if job.wrap is None:  # loss and metrics (not another quantity's columns)
            values = _metrics_undefined_where_loss_is_nan(values)
        if st is not None:
            st.write(t, values)  # buffered; flushed within store.FLUSH_SECONDS, on the last tile and on close
        buffer.write(t, values)
        n_computed += t.n_points
        if callbacks:
            event = buffer.event(t, values, time.perf_counter() - t0)
            for cb in callbacks:
                cb(event)
    return time.perf_counter() - t0, n_computed


def _metrics_undefined_where_loss_is_nan(values: np.ndarray) -> np.ndarray:
    """``values`` (..., 1 + n_metrics) with the metrics NaN where the loss is NaN: the model's outputs are not
    numbers there, and a metric of them is no measurement (accuracy's argmax of NaN logits picks class 0: 0.103
    on digits, a plausible value over a gap of the loss)."""
    nan = np.isnan(values[..., 0])
    if values.shape[-1] == 1 or not nan.any():
        return values
    values = values.copy()
    values[nan, 1:] = np.nan
    return values


def _kept(st: SurfaceStore | None, buffer: _SurfaceBuffer) -> str:
    """What a failed run leaves behind, and how to go on."""
    n_done, n = int(buffer.done.sum()), buffer.done.size
    if st is not None:
        where = str(getattr(st, "path", "the store"))
        return (f"{n_done} of {n} points are stored in {where!r}; rerunning the same compute_surface "
                "call (or command) resumes from there")
    return (f"{n_done} of {n} points were computed, kept in this exception's .surface: rerun the same call with "
            "resume=exc.surface to compute only the rest (or pass store=PATH, which keeps them on disk)")


def _lost(reason: str, st: SurfaceStore | None, buffer: _SurfaceBuffer) -> ClusterLost:
    """A ``ClusterLost`` saying ``reason`` and what was kept; ``reason`` and the partial surface as attributes
    (``surface``: for ``compute_surface(resume=...)``)."""
    exc = ClusterLost(f"{reason}; {_kept(st, buffer)}")
    exc.reason, exc.surface = reason, buffer.snapshot()  # not the buffer: a TileDone.surface() called later
    return exc


class ResumeMismatch(LandscapeError):
    """``compute_surface(resume=...)`` was given a surface it cannot go on from: of another computation (spec,
    model code, globals read), without a spec key, edited since it was returned, or tiled otherwise."""


def _values_digest(surface: Surface) -> str:
    """SHA-256 of a surface's loss, metrics (by name) and done mask: what ``resume=`` checks is unchanged."""
    import hashlib

    h = hashlib.sha256()
    for name, values in [("loss", surface.loss), *sorted(surface.metrics.items())]:
        h.update(name.encode())
        h.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(surface.done_mask, dtype=bool).tobytes())
    return h.hexdigest()


def _sealed(surface: Surface) -> Surface:
    """``surface`` with ``provenance["values_sha256"]``, so that ``resume=`` can tell an edited copy."""
    surface.provenance["values_sha256"] = _values_digest(surface)
    return surface


_RESUME_FIX = ("expected the partial surface this same call returned when cancelled, or ClusterLost.surface; "
               "without resume= every point is computed")


def _check_resume(resume: Surface, grid: Grid, tile):
    """Refuse a surface that was not returned by ``compute_surface`` as it is (no key, values edited) or whose
    tiling differs from ``tile``; the tile to run with (the surface's, where ``tile`` is None)."""
    prov = resume.provenance
    if prov.get("key") is None:
        raise ResumeMismatch("resume= a surface without a spec key (loaded from a file, or not made by "
                             f"compute_surface); {_RESUME_FIX}. To go on from a store, pass store= its path")
    if prov.get("values_sha256") != _values_digest(resume):
        raise ResumeMismatch("resume= a surface whose values or done mask were changed after compute_surface returned "
                             f"it: the points kept would not be this computation's; {_RESUME_FIX}")
    kept = tuple(prov.get("tile") or ())
    if len(kept) != len(grid.default_tile()):  # none kept, or another kind of grid (its spec is refused later)
        return tile
    if tile is None:
        return kept
    if grid.check_tile(tile) != kept:
        raise ResumeMismatch(f"resume= a surface tiled {kept}, but tile={tile!r} was given: its part-done tiles would "
                             "be recomputed over the points kept; pass tile=None (its tiling)")
    return tile


def _check_resume_geometry(resume: Surface, model, d: Directions, grid: Grid) -> None:
    """Refuse ``resume=`` a surface of another model, directions or grid before any runner starts (a Dask
    cluster ships the model and data, and tunes, before the whole spec is known to ``_resume_from``)."""
    keys = ("model", "directions", "grid")
    stored = {k: resume.spec[k] for k in keys if isinstance(resume.spec, Mapping) and k in resume.spec}
    if len(stored) < len(keys):
        return  # an older spec: compared whole by _resume_from
    now = {"model": {"class": type(model).__qualname__, "layout": d.layout.fingerprint(),
                     "weights": model_fingerprint(model)},
           "directions": {"fingerprint": d.fingerprint(), "n": d.n, "scheme": d.scheme}, "grid": grid.to_json()}
    reasons = describe_differences(stored, now, resume.provenance, {"directions": dict(d.provenance)})
    if reasons:
        raise ResumeMismatch(_another_computation(reasons))


def _another_computation(reasons: list[str]) -> str:
    """The refusal of a ``resume=`` surface of another computation, its differences in the API's words (a store's
    are "0 stored, 5 now", with the CLI's flag)."""
    import re

    shown = [re.sub(r" \(CLI [^)]*\)", "", r).replace(" stored, ", " in the surface given, ") for r in reasons[:8]]
    return ("the surface given as resume= is of another computation, so its points cannot be kept; what differs: "
            + "; ".join(shown) + f". {_RESUME_FIX}")


def _resume_from(buffer: _SurfaceBuffer, resume: Surface, spec: SurfaceSpec) -> int:
    """Copy the computed points of ``resume`` (a partial surface of the same computation) into ``buffer``;
    how many. Refused (``ResumeMismatch``) where the spec or the code the values came from differ."""
    reasons = []
    if resume.provenance.get("key") != spec.key:
        reasons = describe_differences(resume.spec, spec.to_json(), resume.provenance, buffer.provenance) or [
            f"the spec (key {resume.provenance.get('key')!r} then, {spec.key!r} now)"]
    code = code_differences(resume.provenance, buffer.provenance)
    reasons += [f"{what}: {code[part]}" for part, what in (
        ("source", "the source code of the model's classes"),
        ("modules", "the model's module settings"),
        ("globals", "what the model, loss_fn or metrics read from their modules")) if part in code]
    if reasons:
        raise ResumeMismatch(_another_computation(reasons))
    shape = buffer.done.shape
    done = np.reshape(resume.done_mask, shape)
    buffer.loss[done] = np.reshape(resume.loss, shape)[done]
    for name, values in buffer.metrics.items():
        values[done] = np.reshape(resume.metrics[name], shape)[done]
    buffer.done |= done
    return int(done.sum())


#: provenance entries a run records itself (`_provenance`, `_finish`, `_sealed`, a store, `eigen_map`), never
#: the caller's: ``provenance=`` giving one is refused before the model runs
RUN_KEYS = frozenset({"label", "scheme", "directions", "data", "x_label", "y_label", "z_label", "landscape_nb",
                      "torch", "python", "code_version", "model_code", "code_globals", "code_structures", "device",
                      "precision", "bn_fold",
                      "channels_last", "compile", "running_var", "malloc",
                      "key", "tile", "seconds", "points_computed", "points_from_store", "points_resumed", "store",
                      "seconds_per_point", "cancelled", "batch_size", "points_per_pass", "runner", "workers",
                      "values_sha256", "damaged_tiles", "lanczos_not_converged", "lambda_max_zero",
                      "nonfinite_curvature", "slice", "directions_stored", "damaged_chunks", "eig_ratio"})


def _check_given_provenance(given) -> dict:
    """``compute_surface``'s ``provenance=`` as a dict: plain values under str keys that the run does not record
    itself (`RUN_KEYS`); `LandscapeError` otherwise."""
    if given is None:
        return {}
    if not isinstance(given, Mapping) or not all(isinstance(k, str) for k in given):
        raise LandscapeError(f"provenance={given!r:.80}; expected a dict with str keys, e.g. {{'split': 'train'}}, "
                             "or None")
    bad = [k for k, v in given.items() if not isinstance(v, (str, int, float, bool, type(None)))]
    if bad:
        raise LandscapeError(f"provenance[{bad[0]!r}] is a {type(given[bad[0]]).__name__}; expected a str, number, "
                             "bool or None (it is kept in the store as JSON)")
    clash = sorted(set(given) & RUN_KEYS)
    if clash:
        raise LandscapeError(f"provenance= gives {', '.join(map(repr, clash))}, which the run records itself; "
                             "give the entry another name (e.g. 'my_' + its name)")
    return dict(given)


def _finish(runner: Runner, info: DataInfo, st: SurfaceStore | None, buffer: _SurfaceBuffer,
            cancel: threading.Event, elapsed: float, n_computed: int, n_from_store: int,
            n_resumed: int, who: str) -> Surface:
    """Record timing, where the points came from and the speed choices the evaluator settled on; the final
    Surface (its ``points_summary`` logged)."""
    final = runner.settled() or info
    _give_worker_warnings(final, info)
    extra = {"seconds": elapsed, "points_computed": n_computed, "points_from_store": n_from_store,
             "points_resumed": n_resumed,
             "store": None if st is None else str(st.path),
             "seconds_per_point": elapsed / n_computed if n_computed else None,
             "cancelled": bool(cancel.is_set() and not buffer.done.all()),
             "batch_size": final.batch_size, "points_per_pass": final.points_per_pass,
             "runner": runner.description}  # this run's: a resumed store may have started on another
    notes = dict(final.notes)
    if notes:  # notes added while running (e.g. why points were not stacked)
        extra["data"] = notes
    # sampling noise, a softmax taken twice, an accuracy of positions the loss leaves out: not the weights'
    # a classifier's figure without its accuracy had no word (trials s38, s40)
    warned: dict[str, list[str]] = {}  # text -> the splits it holds for ("train: uncounted targets", line_splits)
    kinds = notes_by_kind(notes)
    for kind in (RANDOM_OUTPUTS, RANDOM_VALUES, PROBABILITY_OUTPUTS, UNCOUNTED_TARGETS, SKIPPED_ACCURACY,
                 NON_FINITE_DATA):
        for split, text in kinds.get(kind, []):
            if text:
                warned.setdefault(text, []).append(split)
    for text, splits in warned.items():
        warn_user(f"landscape_nb: {', '.join(splits) + ': ' if any(splits) else ''}{text}")
    if final.per_worker:  # Dask: each worker tuned its own evaluator
        extra["workers"] = {addr: {"batch_size": bs, "points_per_pass": k, "versions": dict(v), "tiles": n,
                                   "left": left} for addr, bs, k, v, n, left in final.per_worker}
    if st is not None:
        st.update_provenance(extra)
    buffer.provenance.update(extra)
    surface = buffer.snapshot()  # copies: an edit of it reached a TileDone.surface() called after the run (s37)
    said = diverged_at_the_model(surface)
    if said:  # said by the CLI and the Explorer; Python's figure said "diverged" only (trial s39)
        warn_user(f"{who}: {_in_this_runs_words(said, surface)}"
                  + (f"; {surface.divergence_note}" if surface.divergence_note else ""))
    logger.info("compute_surface: %s", points_summary(surface))
    return surface


#: why a loss stays where it is wherever the directions go (`_warn_if_flat`; `auto_range` says it too, trial s57)
UNREAD_WEIGHTS = ("the model's outputs do not depend on the weights the directions move (a forward that reads a copy "
                  "of them, cached or detached on an earlier call, or other tensors than its registered parameters)")
#: how to tell
CHECK_UNREAD = "check that model(x) changes when those weights do"


def _warn_if_flat(surface: Surface, d: Directions, who: str) -> None:
    """Warn where the loss is the same to the last bit at every point computed (at least 3, directions none of them
    all zeros: `directions._warn_if_a_point` says that): a plausible plateau, when the directions move weights
    the outputs do not read (a forward reading a copy of its weight cached on an earlier call, trial s57)."""
    done = surface.done_mask
    values = surface.loss[done]
    if values.size < 3 or not np.isfinite(values).all() or (values != values.flat[0]).any() \
            or not bool(d.vectors.ne(0).any(1).all()):
        return
    warn_user(f"{who}: the loss is {values.flat[0] + 0.0:.6g} at every one of the {values.size} points computed, to the "
              f"last bit, so the figure is flat: either {UNREAD_WEIGHTS}, or the loss is saturated there (e.g. 0 where "
              f"every margin is huge); {CHECK_UNREAD}")


def diverged_at_the_model(surface: Surface) -> str:
    """Why the loss or the data, not the range, give a surface's NaN or inf losses: the loss (or a named
    split's, ``"<split>_loss"``) is not finite at the model itself, or, on a grid without it, at every point
    computed; "" otherwise (a loss diverging away from the model is the figure's gaps, and said there)."""
    splits = {k[: -len("_loss")]: v for k, v in surface.metrics.items() if k.endswith("_loss")}
    losses = splits or {"": surface.loss}
    done = surface.done_mask
    at = surface.centre_index
    if at is not None:
        bad = [name for name, v in losses.items() if done[at] and not np.isfinite(v[at])]
        if not bad:
            return ""
        if splits:
            return f"split {', '.join(map(repr, bad))}: {CENTRE_DIVERGED}"
        return f"{CENTRE_DIVERGED}; the loss diverged (NaN or inf) at {surface.n_diverged} of {surface.n_done} points"
    bad = [name for name, v in losses.items() if done.any() and not np.isfinite(v[done]).any()]
    if not bad:
        return ""
    where = f" on split {', '.join(map(repr, bad))}" if splits else ""
    return (f"the loss is NaN or inf at every one of the {surface.n_done} points computed{where} (the grid holds "
            "no point at the model itself, 0 on every axis), so the model's weights, the loss function or the data "
            "likely give it: check model(x) and loss_fn(model(x), y) on each batch of the data with the model alone, "
            "or draw a grid through 0")


def _in_this_runs_words(said: str, surface: Surface) -> str:
    """``diverged_at_the_model``'s text for this run: the model's own outputs.loss named where it was the loss (no
    loss_fn was given: "check loss_fn(...)" sent a trial to one, s42), and where the points ran in several batches,
    that a batch holding only targets the loss leaves out gives NaN, with the batch size that runs the whole set
    at once (the NaN of label-sorted padding was blamed on the loss or the data)."""
    data = surface.provenance.get("data") or {}
    if "own outputs.loss" in str(data.get("loss", "")):
        said = said.replace("check model(x) and loss_fn(model(x), y) on each batch", "check the model's own "
                            "outputs.loss on each batch")
    size, n = surface.provenance.get("batch_size"), (surface.spec.get("data") or {}).get("n_samples")
    if isinstance(size, int) and isinstance(n, int) and size < n:
        said += (f"; the points ran in batches of {size}, and a batch holding only targets the loss leaves out "
                 f"(padding, e.g. first in label-sorted data) gives NaN: batch_size={n} runs the whole set at once, "
                 "or shuffle the data")
    return said


def _give_worker_warnings(final: DataInfo | None, info: DataInfo) -> None:
    """The warnings Dask workers gave after their probe (``final``: the runner's ``settled()``; a Hessian's first
    product, the user's own loss), each once; those of the probe (``info``) were given before the run."""
    for message, category in () if final is None else final.warnings:
        if (message, category) not in info.warnings:
            warn_user(message, category)


def points_summary(surface: Surface) -> str:
    """How many points ``surface`` holds and where they came from, in one line.

    >>> points_summary(lnb.compute_surface(model, data, d, x=(-1, 1, 21), y=(-1, 1, 21), store="r.zarr"))
    "441 points: 300 from the store at 'r.zarr', 141 computed"

    Reads ``provenance["points_from_store"]``, ``["points_computed"]`` and ``["store"]``, which
    ``compute_surface`` records for its run (a resumed run reads the first from the store, the
    second counts the points it evaluated); a run without a store says ``"441 points computed"``,
    a cancelled one how many of the grid's points it holds. A surface from elsewhere (``load_surface``
    of a store written before these counts) gives ``"300 of 441 points"``.
    """
    n, n_done = int(np.size(surface.loss)), surface.n_done
    prov = surface.provenance
    held = f"{n} points" if n_done == n else f"{n_done} of {n} points"
    computed, from_store = prov.get("points_computed"), prov.get("points_from_store")
    if computed is None or from_store is None:
        return held
    tail = "" if n_done == n else " (cancelled)" if prov.get("cancelled") else " (not finished)"
    if prov.get("points_resumed"):
        return f"{held}: {prov['points_resumed']} kept from the surface resumed, {computed} computed{tail}"
    if prov.get("store") is None:
        return f"{held} computed{tail}"
    return f"{held}: {from_store} from the store at {prov['store']!r}, {computed} computed{tail}"


def _grid_and_directions(model, directions, x, y, z=None) -> tuple[Grid, Directions]:
    grid = Grid.make(x, y, z)
    d = as_directions(model, directions)
    if d.n != grid.ndim:
        fix = (f"directions.select({list(range(grid.ndim))})" if d.n > grid.ndim
               else f"random_directions(model, n={grid.ndim})")
        missing = {2: " or pass y=(start, stop, num)", 3: " or pass z=(start, stop, num)"}.get(d.n, "") \
            if d.n > grid.ndim else ""
        raise LandscapeError(
            f"{d.n} direction(s) for a {grid.ndim}D grid; expected {grid.ndim} (one per axis): use {fix}" + missing
        )
    return grid, d


def _eval_settings(settings: EvalSettings | None, loss_fn, **keywords) -> EvalSettings:
    """``settings`` with the keywords given overriding its fields; ``loss_name`` from ``loss_fn``."""
    if settings is not None and not isinstance(settings, EvalSettings):
        raise LandscapeError(f"settings={settings!r}; expected an EvalSettings or None (the defaults)")
    out = (settings or EvalSettings()).with_overrides(**{k: v for k, v in keywords.items() if v is not FROM_SETTINGS})
    validate.check_settings(out)
    return dataclasses.replace(out, loss_name=loss_name(loss_fn),
                               mode="bn-recompute" if out.mode == "bn" else out.mode)  # "bn": the short alias


def _refuse_hessian_of_recomputed_bn(quantity: str, settings: EvalSettings) -> None:
    """A Hessian (``eigen_map``) with ``mode="bn-recompute"`` is refused: the loss there is a function of the
    weights through the BatchNorm statistics re-estimated at each point, while the Hessian-vector products
    hold those statistics fixed, so the eigenvalues were another function's: λ_max 6.63 where the loss's own
    curvature was 3.88 (+71 %, trial s34), with no word."""
    if quantity == "hessian" and settings.mode == "bn-recompute":
        raise LandscapeError(
            "quantity='hessian' (eigen_map) with mode='bn-recompute': the loss at each point re-estimates the "
            "BatchNorm statistics there, so it depends on the weights through them, while the Hessian would hold "
            "them fixed and give another function's eigenvalues; use mode='eval' (the Hessian of the loss with "
            "the model's running statistics), or, for the curvature of the re-estimated loss along directions "
            "of your choice, compute_surface(..., mode='bn-recompute') and Surface.sharpness()")


def _warn_if_no_statistics_to_recompute(model, settings: EvalSettings) -> None:
    """``mode="bn-recompute"`` on a model with no BatchNorm running statistics (no BatchNorm layer, trial s50, or
    only ``track_running_stats=False`` ones, trial s52) ran with no word: its values are eval's, one point a
    pass."""
    if settings.mode != "bn-recompute":
        return
    model = unwrap_model(model)
    layers = batchnorm_modules(model)
    if not any(m.track_running_stats for m in layers):
        has = "BatchNorm layers that keep no running statistics" if layers else "no BatchNorm layer"
        warn_user(f"landscape_nb.compute_surface: mode='bn-recompute' re-estimates BatchNorm running statistics at "
                  f"every point, but this {type(model).__name__} has {has}, so the values are those of mode='eval', "
                  "computed one point a pass (slower); use mode='eval'")


def _state_buffers(model) -> list:
    """The floating-point state buffers of the model inside any wrapper (`params.float_state_buffers`)."""
    return [b for _, b in float_state_buffers(unwrap_model(model))]


def _centred_elsewhere(model, d: Directions, mode: str) -> bool:
    """Whether a path's directions (an interpolation, a plane through three models) were made around other weights
    than ``model``'s, or, spanning buffers and with ``mode="eval"`` (``"bn-recompute"`` re-estimates them at every
    point), other BatchNorm statistics (`spec.made_around_buffers`): the models they name are then not where the
    axes put them."""
    return d.scheme in ("interpolate", "plane3") and (
        made_around(d.provenance, model) is False
        or (mode == "eval" and made_around_buffers(d.provenance, _state_buffers(model)) is False))


#: set (``grid_note_said_here``) on a thread whose caller says a grid that misses a model in its own words
_GRID_NOTE = threading.local()


@contextlib.contextmanager
def grid_note_said_here():
    """On this thread, `compute_surface` leaves `ModelOffGrid` to the caller, which says it itself (the Explorer's
    panel; a ``warnings`` filter would reach every thread)."""
    before, _GRID_NOTE.said = getattr(_GRID_NOTE, "said", False), True
    try:
        yield
    finally:
        _GRID_NOTE.said = before


def _warn_if_grid_misses_models(grid: Grid, d: Directions, who: str) -> None:
    """Warn (`ModelOffGrid`) where the grid leaves out, or has no point at, the model at 0 on an axis (and for
    an interpolation or a plane through three models, the other at 1): no point then holds that model's own
    loss, and its figure neither (trial s54b: a 2×2 grid on -1..1 said nothing; the CLI and the Explorer note
    it). Grids that hold them are named (`grid.grid_through_models`, within the grid's limits)."""
    if getattr(_GRID_NOTE, "said", False):
        return
    unit = d.scheme in ("interpolate", "plane3")
    axes = [(name, axis) for name, axis in zip("xyz", (grid.x, grid.y, grid.z)) if axis is not None]
    said, fixes, models = [], {}, set()
    for k, (name, axis) in enumerate(axes):
        start, stop, n = axis.start, axis.stop, axis.num
        outside = models_outside(start, stop, unit=unit)
        missed = models_between_points(start, stop, n, unit=unit)
        sits = models_at(k, d.provenance.get("models"), unit, len(axes))  # a plane's two models at 0 (of three)
        for where, found in (("outside the range", outside), (f"between the {n} points of", missed)):
            if found:
                many = several_at(sits, found)
                said.append(f"{say_models_at(sits, name, found)} {'lie' if many else 'lies'} {where} {start:.10g} to "
                            f"{stop:.10g}")
                models.update(w for m in found for w in sits[m])
        fix = (grid_through_models(start, stop, n, unit=unit, most=min(4 * n + 1, MAX_PER_AXIS))
               if outside or missed else None)
        fixes[name] = fix if fix is not None else (n, start, stop)
    if not said:
        return
    many = len(models) > 1
    them = "them" if many else "it"
    text = (f"{who}: {'; '.join(said)}, so no point holds {'their' if many else 'its'} own loss and a figure of "
            f"the surface does not show {them}")
    moved = {name: fix for name, fix in fixes.items()
             if fix != (getattr(grid, name).num, getattr(grid, name).start, getattr(grid, name).stop)}
    if moved and math.prod(fix[0] for fix in fixes.values()) <= MAX_POINTS:
        text += (f"; {', '.join(f'{name}=({b:.10g}, {c:.10g}, {a})' for name, (a, b, c) in moved.items())} "
                 f"hold{'s' * (len(moved) == 1)} {them}")
    warn_user(text, ModelOffGrid)


def warn_if_made_around_another_model(model, d: Directions, who: str) -> None:
    """Warn where ``d`` was made around other weights than ``model``'s (`spec.made_around`): random
    directions normalized to another model's filters compared two models' sharpness the wrong way round (their
    filter norms were the first model's: Li et al. 2018, §4), and an interpolation computed around b put
    2b − a at x = 1 under the label "a → b" (trial s35)."""
    prov = d.provenance
    normalized = (f"they are {prov.get('norm')}-normalized to that model's weights, so their scale is not this "
                  "model's and sharpness read from the surface compares neither (Li et al. 2018, §4): make them for "
                  "this model, random_directions(model, ...), with the same seed")
    readable = not prov.get("orthogonalized") or _first_drawn_at(prov) is not None
    if d.scheme.startswith("random") and prov.get("norm") in ("filter", "layer") and readable:  # read back from
        if not _normalized_to_other_weights(model, d):  # the weights: a float16 copy of the model is the same
            return
        why = normalized
    elif (d.scheme.startswith("random") and prov.get("norm") in (None, "none")  # raw: reused on purpose
          or made_around(prov, model) in (None, True)):  # a float64 copy is the same model (re-trial s38)
        return
    elif d.scheme.startswith("random"):  # norm="weight" (scaled elementwise), or a selection of orthogonalized
        why = normalized  # ones without the one drawn first
    elif d.scheme == "hessian":
        why = ("they are that model's Hessian eigenvectors and their labels its eigenvalues, not this model's: "
               "compute hessian_directions(model, data, ...) for this one")
    else:
        why = ("the surface is centred at this model, so the points the directions name (the other models at 1, a "
               "path's checkpoints) are not where its axes put them: pass the model they were made around (the "
               "first model of a path, the final model of a PCA)")
    warn_user(f"{who}: these {d.scheme} directions were made around another model's weights "
              f"than this {type(model).__name__}'s; {why}")


def _warn_if_made_around_other_statistics(model, d: Directions, mode: str, who: str) -> None:
    """Warn where a path spanning buffers was made around other BatchNorm statistics than ``model``'s, its weights
    the same, and they are used as they are (``mode="eval"``): A's weights with B's statistics passed as the centre
    of the plane through A, B and C put none of the three where the axes said, with no word (re-trial s49)."""
    if mode == "eval" and d.scheme in ("interpolate", "plane3") and made_around(d.provenance, model) is not False \
            and made_around_buffers(d.provenance, _state_buffers(model)) is False:
        warn_user(f"{who}: these {d.scheme} directions were made around the same weights but "
                  f"other BatchNorm statistics (buffers) than this {type(model).__name__}'s (a forward pass in train "
                  "mode updates them), so the points the directions name (the other models at 1) are not where its "
                  "axes put them: pass the model as it was when the directions were made, or make them again")


def _normalized_to_other_weights(model, d: Directions) -> bool:
    """Whether filter- or layer-normalized random directions (orthogonalized ones holding the vector drawn first)
    have other norms than ``model``'s weights give them (normalizing them again to those weights moves some filter
    by more than 1 %: a float16 copy of the same model moves none by 0.1 %)."""
    prov = d.provenance
    first = _first_drawn_at(prov)  # where a selection put the vector drawn first (Directions.select)
    weights = d.layout.tensors(unwrap_model(model))
    for v in (d.vectors[first:first + 1] if prov.get("orthogonalized") else d.vectors):
        for part, w in zip(d.layout.split(v), weights):
            if not _norms_as_normalized(part, w.detach(), prov["norm"], prov.get("ignore")):
                return True
    return False  # orthogonalized: only the vector drawn first is as normalized, the others are components
    # orthogonal to those before, whose filter norms hold only roughly (trial s38: none was checked)


def _first_drawn_at(prov) -> int | None:
    """Where the vector drawn (and normalized) first sits in an orthogonalized set: 0, or where a selection put
    it, None where a selection left it out (directions saved earlier that day: ``first_drawn`` False)."""
    return None if prov.get("first_drawn") is False and "first_drawn_at" not in prov else prov.get("first_drawn_at", 0)


def _norms_as_normalized(d: torch.Tensor, w: torch.Tensor, norm: str, ignore: str | None) -> bool:
    """Whether direction tensor ``d`` has the norms `normalize_like` gives it from weight tensor ``w`` (each
    filter's, or the whole tensor's), to 1 %; its zero filters left out. Norms in float64 without copies: the
    normalized copies it compared took 2.1 s of a 3.6 s rerun on a 19M-parameter model (trial s38)."""
    if d.ndim <= 1 and ignore == "biasbn":
        return True  # zero by construction
    n_rows = d.shape[0] if norm == "filter" and d.ndim > 1 else 1  # each filter, or the tensor as one
    dn, wn = (torch.linalg.vector_norm(t.reshape(n_rows, -1), dim=1, dtype=torch.float64).cpu() for t in (d, w))
    moved = dn > 0
    return bool(((wn[moved] - dn[moved]).abs() <= 1e-2 * dn[moved]).all())


def _wrap(quantity: str, options: dict):
    if quantity not in QUANTITIES:
        raise LandscapeError(f"quantity={quantity!r}; expected one of {tuple(QUANTITIES)}")
    make = QUANTITIES[quantity]
    return None if make is None else functools.partial(make, **options)


#: settings that change values only by float rounding: provenance, not the spec, so a store resumes across them
#: (a resume with --channels-last or --compile was refused: trial s34). channels_last and compile stay in the spec
#: at their defaults, which keeps the keys of earlier stores
ROUNDING_ONLY = {"points_per_pass": None, "fold_bn": None, "channels_last": False, "compile": False}


def spec_settings(settings: EvalSettings) -> dict:
    """``settings.to_json()`` as the spec holds it: the `ROUNDING_ONLY` fields left out or at their defaults."""
    out = settings.to_json()
    if isinstance(out.get("target_key"), int):  # a position in tuple samples: read_data puts the targets last,
        del out["target_key"]  # in the data the fingerprint covers (--target-key 1 for pairs was refused, s34)
    for name, kept in ROUNDING_ONLY.items():
        if kept is None:
            out.pop(name)
        else:
            out[name] = kept
    return out


def _surface_spec(model, d: Directions, grid: Grid, settings: EvalSettings, info: DataInfo, loss_fn, bn_data,
                  quantity: str, options: dict, metrics=None) -> SurfaceSpec:
    return SurfaceSpec(
        model_class=type(model).__qualname__, layout=d.layout.fingerprint(), weights=model_fingerprint(model),
        data_fingerprint=info.fingerprint, n_samples=info.n_samples,
        directions_fingerprint=d.fingerprint(), n_directions=d.n, scheme=d.scheme, grid=grid.to_json(),
        settings=spec_settings(settings),
        metric_names=tuple(info.metric_names), loss_fingerprint=_callable_fingerprint(loss_fn),
        bn_data_given=(bn_data is not None or info.bn_fingerprint is not None) and settings.mode != "eval",
        bn_data_fingerprint=info.bn_fingerprint, bn_pass_size=info.bn_pass_size,
        metric_fingerprints={str(name): fn if isinstance(fn, str) else _callable_fingerprint(fn)
                             for name, fn in metrics.items()} if isinstance(metrics, Mapping) else None,
        quantity=None if quantity == "loss" else {"name": quantity, **options},
    )


def _open(store, spec: SurfaceSpec, grid: Grid, tile, provenance: dict):
    """(store or None, buffer holding what is already done, tile shape): a store resumes with its tiling."""
    tile_shape = grid.check_tile(tile)
    if store is None:
        return None, _SurfaceBuffer.empty(spec, provenance, grid.store_shape), tile_shape
    st = SurfaceStore.open_or_create(store, spec=spec.to_json(), key=spec.key,
                                     tile=None if tile is None else tile_shape, default_tile=tile_shape,
                                     metric_names=list(spec.metric_names), provenance=provenance)
    return st, _SurfaceBuffer(spec, provenance, *st.read()), st.tile


def _plain(value) -> bool:
    """Whether a directions' provenance entry is kept in the surface's: a string, number, bool or None, or a
    list of strings or of up to 10,000 numbers (a PCA plane's training path, ``path_x``/``path_y``, which
    its figure draws; large arrays stay with the directions, ``store.load_directions``)."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return True
    return isinstance(value, list) and (all(isinstance(s, str) for s in value) or (
        len(value) <= 10_000 and all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in value)))


def _provenance(model, d: Directions, name, runner: Runner, info: DataInfo, settings: EvalSettings,
                code_globals: tuple[dict, dict]) -> dict:
    """How the surface was made (not part of the spec): labels, versions, device, runner, speed modes, and
    what a store compares on resume besides the key (the model's code, the globals the user's code reads and
    the syntax of the functions it calls: ``code_globals``, `spec.globals_and_structures`)."""
    versions = dict(library_versions())
    return {
        "label": name or zoo_label(model) or type(model).__name__, "scheme": d.scheme,
        # where the models a path names are not where the axes put them, its figures leave their marks out (s49)
        "directions": {k: v for k, v in d.provenance.items() if _plain(v)} | (
            {"made_around_another_model": True} if _centred_elsewhere(model, d, settings.mode) else {}),
        "data": dict(info.notes),
        **_labels(d, d.n), "landscape_nb": versions["landscape_nb"], "torch": versions["torch"],
        "python": versions["python"],  # the syntax trees compared on resume are of this version
        "code_version": CODE_VERSION,  # what code_globals records (spec.CODE_VERSION)
        "model_code": code_fingerprint(model), "code_globals": code_globals[0], "code_structures": code_globals[1],
        "device": info.device, "runner": runner.description, "precision": _precision_label(model, settings),
        "bn_fold": info.bn_fold, "channels_last": settings.channels_last, "compile": settings.compile,
        **({} if settings.clamp_running_var is None else
           {"running_var": RUNNING_VAR_CLAMPED if settings.clamp_running_var else RUNNING_VAR_NAN}),
        **({"malloc": runner.malloc} if getattr(runner, "malloc", None) else {}),
    }


RUNNING_VAR_NAN = "NaN where a point makes a BatchNorm running_var the directions move negative, as in the reference"
RUNNING_VAR_CLAMPED = "BatchNorm running_var the directions move clamped at 0 where a point makes it negative"


def _running_var_rule(settings: EvalSettings, d: Directions) -> EvalSettings:
    """``settings`` with ``clamp_running_var`` decided: None where no running_var moves or the mode re-estimates
    BN statistics (no effect, so not in the spec key); else as given, or by default True for paths between models
    (``provenance["clamp_running_var"]``) and False for directions from files or the user: a negative variance
    gives NaN there as in the reference (clamped at 0 it gave a finite, made-up loss: 1e7 where it has NaN)."""
    if settings.mode != "eval" or not moved_variances(d.layout, d.vectors):
        return dataclasses.replace(settings, clamp_running_var=None)
    if settings.clamp_running_var is None:
        return dataclasses.replace(settings, clamp_running_var=bool(d.provenance.get("clamp_running_var")))
    return settings


def _precision_label(model, settings: EvalSettings) -> str:
    """The precision the points ran in: ``settings.precision`` (tf32 off a GPU already made fp32 by
    `compute_surface`), or the model's own dtype where that is not float32 (fp32 and tf32 leave a float64 or
    float16 model in its dtype; bf16 refuses one, validate)."""
    dtype = model_dtype(model)
    if settings.precision == "bf16" or dtype == torch.float32:
        return settings.precision
    return {torch.float64: "fp64", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(
        dtype, str(dtype).removeprefix("torch."))


def _labels(directions: Directions, ndim: int = 2) -> dict[str, str]:
    prov = directions.provenance
    if directions.scheme.startswith("random"):
        suffix = how_made(prov)
        out = {"x_label": f"α (random direction 1, {suffix})", "y_label": f"β (random direction 2, {suffix})"}
        z = f"γ (random direction 3, {suffix})"
    else:
        out = {"x_label": str(prov.get("x_label", "α (direction 1)")),
               "y_label": str(prov.get("y_label", "β (direction 2)"))}
        z = str(prov.get("z_label", "γ (direction 3)"))
    if ndim == 1:  # a line has no y axis to name ("β (direction 2)" was kept on interpolation lines)
        del out["y_label"]
    return {**out, "z_label": z} if ndim == 3 else out


def make_runner(client, n_workers: int | None = None) -> tuple[Runner, Any]:
    """(runner, thing to close or None) for a ``client`` argument (spellings: ``cluster.parse_client``)."""
    if client is None:  # the default needs no Dask import to know it runs here
        return InProcessRunner(), None
    from .cluster import get_client, parse_client
    from .dask_runner import DaskRunner

    choice = parse_client(client)
    if choice.kind == "in-process":
        return InProcessRunner(), None
    cl, owned = get_client(choice, n_workers=n_workers)
    return DaskRunner(cl), owned


__all__ = ["compute_surface", "TileDone", "make_runner", "points_summary", "QUANTITIES"]
