"""The Explorer's state and computation, with no widgets: usable from scripts and tests.

`ExplorerState` holds the controls as typed (traitlets) traits, turns them into a
validated `ExplorerSpec` and runs ``compute_surface`` in a worker thread. The worker
never touches the traits itself: it posts each update through a `UiQueue` to the event
loop that was running when Compute was pressed (see ``_ui_thread``), so traits change only
on the kernel's main thread. Nothing here imports ipywidgets; the view is ``view.Explorer``.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import traitlets as t

from ..directions import NORMS
from ..errors import LandscapeError
from ..grid import Grid
from ..schemes import SCHEMES
from ..surface import Surface
from ._ui_thread import UiQueue
from .budget import check_time_budget, estimate_seconds_per_point

log = logging.getLogger(__name__)

CLUSTERS = ("in-process", "local", "cuda", "address")
STATUSES = ("idle", "starting", "running", "cancelling", "done", "cancelled", "error")


@dataclass(frozen=True)
class ExplorerSpec:
    """What one press of Compute computes: everything the controls say, validated.

    ``x`` and ``y`` are ``(start, stop, points)`` (``y`` None for a line); ``grid`` is the
    `landscape_nb.grid.Grid` they describe, made (and checked: a `LandscapeError` says what
    is wrong with a range or resolution) when the spec is.
    """

    model: str
    scheme: str
    norm: str
    ignore: str | None
    seed: int
    x: tuple[float, float, int]
    y: tuple[float, float, int] | None
    split: str
    metric: str | None
    log: bool
    client: str | None  # None: in-process; "local", "cuda", a scheduler address, or "given"
    max_samples: int | None
    time_budget: float
    auto_range: bool = True
    grid: Grid = field(init=False, repr=False, compare=False)  # from x and y; validates them

    def __post_init__(self):
        object.__setattr__(self, "grid", Grid.make(self.x, self.y))

    @property
    def ndim(self) -> int:
        return self.grid.ndim

    @property
    def n_points(self) -> int:
        return self.grid.n_points


@dataclass
class _Entry:
    """A model the Explorer can evaluate: the network, its data splits, loss and the
    object handed to ``make_directions`` (a zoo Example; None for a bare user model)."""

    model: Any
    test: Any
    train: Any = None
    loss_fn: Callable | None = None
    example: Any = None


def _user_entry(name: str, value) -> _Entry:
    from torch import nn

    if isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[0], nn.Module):
        model, data, loss_fn = (*value, None)[:3]
        return _Entry(model, data, None, loss_fn, None)
    if isinstance(getattr(value, "model", None), nn.Module) and hasattr(value, "test"):
        return _Entry(value.model, value.test, getattr(value, "train", None), getattr(value, "loss_fn", None), value)
    raise LandscapeError(
        f"models[{name!r}] is a {type(value).__name__}; expected (model, data), (model, data, loss_fn) with a "
        "torch.nn.Module and (inputs, targets) data, or an object with .model and .test (like a zoo Example); "
        "e.g. Explorer(models={'mine': (net, (x, y))})"
    )


def _zoo_names() -> list[str]:
    try:
        from .. import zoo

        return list(zoo.names())
    except (ImportError, AttributeError) as exc:  # the zoo is optional for a user's own models
        log.warning("the zoo is not available (%s)", exc)
        return []


class ExplorerState(t.HasTraits):
    """The Explorer's state and its computation; no widgets (usable from scripts and tests).

    Set the control traits, then ``compute()``; ``surface`` holds the latest (partial)
    result, ``status``/``message`` say what happened, ``wait()`` blocks until done.
    """

    # controls
    model_name = t.Unicode("")
    model_names = t.List(t.Unicode())
    scheme = t.Unicode("random")
    schemes = t.List(t.Unicode(), default_value=list(SCHEMES))
    norm = t.Enum(NORMS, default_value="filter")
    ignore_biasbn = t.Bool(True)
    seed = t.Int(0)
    ndim = t.Int(2)
    x_min = t.Float(-1.0)
    x_max = t.Float(1.0)
    y_min = t.Float(-1.0)
    y_max = t.Float(1.0)
    x_points = t.Int(21)
    auto_range = t.Bool(True)  # use the range a scheme suggests (interpolate, plane3, pca)
    y_points = t.Int(21)
    split = t.Enum(("test", "train"), default_value="test")
    metric = t.Enum(("accuracy", "none"), default_value="accuracy")
    log_scale = t.Bool(False)
    cluster = t.Unicode("in-process")
    address = t.Unicode("")
    max_samples = t.Int(0)  # 0: all samples
    time_budget = t.Float(300.0)  # seconds an estimate may reach before Compute refuses
    update_interval = t.Float(0.5)  # at least this many seconds between two live-figure updates
    export_path = t.Unicode("landscape.html")

    # results and progress (written on the UI thread only)
    status = t.Enum(STATUSES, default_value="idle")
    message = t.Unicode("")
    message_kind = t.Enum(("info", "error"), default_value="info")
    n_done = t.Int(0)
    n_points = t.Int(0)
    points_per_s = t.Float(0.0)
    workers = t.Unicode("")
    dashboard_link = t.Unicode("")
    surface = t.Instance(Surface, allow_none=True)
    run_id = t.Int(0)

    def __init__(self, models: Mapping[str, Any] | None = None, client=None, **kwargs):
        super().__init__()
        self._entries: dict[str, _Entry] = {}
        if models is not None:
            if not isinstance(models, Mapping) or not models:
                raise LandscapeError(
                    f"models={models!r}; expected None (the zoo) or a non-empty dict name -> (model, data), "
                    "e.g. Explorer(models={'mine': (net, (x, y))})"
                )
            self._entries = {str(k): _user_entry(str(k), v) for k, v in models.items()}
            names = list(self._entries)
        else:
            names = _zoo_names()
        from ..cluster import parse_client

        choice = parse_client(client)
        given = choice.kind in ("given", "cluster")  # the caller's Client or cluster object
        self._given_client = choice.client if given else None
        self.model_names = names
        self.model_name = names[0] if names else ""
        self.cluster, self.address = ("given" if given else choice.kind), choice.address
        self._clients: dict[str, tuple[Any, Any]] = {}
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._ui = UiQueue(throttle=self.update_interval)
        self.last_error: BaseException | None = None
        self.cancel_latency: float | None = None
        self._cancel_t0: float | None = None
        self.set(**kwargs)
        if not names:
            self._say("No models: the zoo is not available. Pass your own, e.g. "
                      "Explorer(models={'mine': (net, (x, y))}).", "error")

    # ------------------------------------------------------------ controls ----

    def set(self, **values) -> "ExplorerState":
        """Set several controls at once, e.g. ``state.set(x_points=31, scheme="interpolate")``."""
        for name, value in values.items():
            if not self.has_trait(name) or name in _RESULT_TRAITS:
                raise LandscapeError(f"no control named {name!r}; expected one of {sorted(_CONTROL_TRAITS)}")
            setattr(self, name, value)
        return self

    @t.validate("ndim")
    def _check_ndim(self, proposal):
        if proposal["value"] not in (1, 2):
            raise t.TraitError(f"ndim={proposal['value']!r}; expected 1 (a line) or 2 (a plane)")
        return proposal["value"]

    @t.validate("cluster")
    def _check_cluster(self, proposal):
        allowed = CLUSTERS + (("given",) if getattr(self, "_given_client", None) is not None else ())
        if proposal["value"] not in allowed:
            raise t.TraitError(f"cluster={proposal['value']!r}; expected one of {allowed}")
        return proposal["value"]

    @t.observe("scheme")
    def _scheme_defaults(self, change):
        """An interpolation is a 1D scan; with ``auto_range`` a new scheme starts from ±1
        (schemes that suggest their own range, like pca, set it when they run)."""
        if change["new"] == "interpolate":
            self.ndim = 1
        elif change["old"] == "interpolate":
            self.ndim = 2
        if self.auto_range:
            self.set(x_min=-1.0, x_max=1.0, y_min=-1.0, y_max=1.0)

    @t.observe("update_interval")
    def _set_throttle(self, change):
        self._ui.throttle = change["new"]

    def spec(self) -> ExplorerSpec:
        """The validated request the controls describe (raises LandscapeError if it is not valid)."""
        if self.model_name not in self.model_names:
            raise LandscapeError(
                f"model {self.model_name!r}; expected one of {self.model_names}; pick one in the model menu"
            )
        if self.scheme not in self.schemes:
            raise LandscapeError(f"direction scheme {self.scheme!r}; expected one of {self.schemes}")
        x = (float(self.x_min), float(self.x_max), int(self.x_points))
        y = (float(self.y_min), float(self.y_max), int(self.y_points)) if self.ndim == 2 else None
        Grid.make(x, y)  # its LandscapeError says what is wrong with a range or resolution
        if self.cluster == "address":
            address = self.address.strip()
            if not address:
                raise LandscapeError("cluster 'scheduler address' with an empty address; expected e.g. "
                                     "tcp://127.0.0.1:8786 in the address box, or pick another cluster")
            client = address
        else:
            client = {"in-process": None}.get(self.cluster, self.cluster)
        if self.max_samples < 0:
            raise LandscapeError(f"max samples {self.max_samples}; expected 0 (all) or a positive number")
        if not self.time_budget > 0:
            raise LandscapeError(f"time budget {self.time_budget} s; expected a positive number of seconds")
        return ExplorerSpec(
            model=self.model_name, scheme=self.scheme, norm=self.norm,
            ignore="biasbn" if self.ignore_biasbn else None, seed=int(self.seed), x=x, y=y,
            split=self.split, metric=None if self.metric == "none" else self.metric, log=bool(self.log_scale),
            client=client, max_samples=self.max_samples or None, time_budget=float(self.time_budget),
            auto_range=bool(self.auto_range),
        )

    # ------------------------------------------------------------- running ----

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def compute(self, wait: bool = False) -> bool:
        """Start computing the current spec in the background; False (with a message) if refused.

        A second Compute while one runs is refused: press Cancel first.
        """
        if self.running:
            self._say("A computation is already running; press Cancel first (or wait for it to finish).", "error")
            return False
        try:
            spec = self.spec()
        except LandscapeError as exc:
            self.status = "error"
            self._fail(exc)
            return False
        self._ui.capture_loop()
        self._cancel = threading.Event()
        self._cancel_t0 = None
        self.cancel_latency = None
        self.last_error = None
        self.run_id += 1
        self.surface = _empty_surface(spec)
        self.n_points, self.n_done, self.points_per_s = spec.n_points, 0, 0.0
        self.status = "starting"
        self._say(f"Preparing {spec.model}…")
        self._thread = threading.Thread(target=self._run, args=(spec, self._cancel, self.run_id),
                                        name="landscape_nb-explorer", daemon=True)
        self._thread.start()
        if wait:
            self.wait()
        return True

    def cancel(self) -> bool:
        """Stop the running computation; the partial surface stays on screen."""
        if not self.running:
            return False
        self._cancel_t0 = time.perf_counter()
        self._cancel.set()
        self.status = "cancelling"
        self._say("Cancelling…")
        return True

    def wait(self, timeout: float | None = None) -> Surface | None:
        """Block until the computation ends (applying its updates here); the surface."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            if deadline is not None and time.monotonic() > deadline:
                break
            self._thread.join(0.05)
            self._ui.drain()
        self._ui.drain()
        return self.surface

    def close(self) -> None:
        """Cancel any computation and close the Dask clusters this Explorer started."""
        if self.running:
            self._cancel.set()
            self._thread.join(30)
        for client, owned in self._clients.values():
            if owned is not None:
                owned.close()
        self._clients.clear()

    # Everything below `_run` happens on the worker thread; it reaches the state only via `_post`.

    def _run(self, spec: ExplorerSpec, cancel: threading.Event, run_id: int) -> None:
        from ..compute import compute_surface
        from ..schemes import make_directions

        try:
            entry = self._entry(spec.model, run_id)
            data = self._split(entry, spec)
            base, directions = make_directions(
                spec.scheme, entry.model, entry.example, ndim=spec.ndim, norm=spec.norm, ignore=spec.ignore,
                seed=spec.seed, data=None if entry.example is not None else data, loss_fn=entry.loss_fn)
            spec = self._suggested_range(spec, directions, run_id)
            client, workers, link = self._client(spec.client, run_id)
            private = copy.deepcopy(base)  # probed and (in-process) evaluated; the user's model stays untouched
            _check_budget(spec, estimate_seconds_per_point(private, data, spec.max_samples), workers)
            self._post(run_id, "status", lambda: self._started(workers, link))
            surf = compute_surface(
                private if client is None else base, data, directions, x=spec.x, y=spec.y, loss_fn=entry.loss_fn,
                metrics="auto" if spec.metric else None, client=client, callbacks=[self._tile_callback(run_id)],
                cancel=cancel, max_samples=spec.max_samples, name=spec.model,
            )
            returned = time.perf_counter()
            self._post(run_id, "end", lambda: self._finished(surf, cancel.is_set(), returned))
        except Exception as exc:  # one readable line in the panel; the traceback stays in last_error
            log.debug("Explorer computation failed", exc_info=exc)
            self._post(run_id, "end", lambda: self._failed_run(exc))

    def _suggested_range(self, spec: ExplorerSpec, directions, run_id: int) -> ExplorerSpec:
        """With ``auto_range``, the range the scheme suggests (e.g. covering a PCA path); shown in the controls."""
        prov = directions.provenance
        x = prov.get("x_range") if spec.auto_range else None
        y = prov.get("y_range") if spec.auto_range and spec.y is not None else None
        if x is None and y is None:
            return spec
        new_x = (float(x[0]), float(x[1]), spec.x[2]) if x is not None else spec.x
        new_y = (float(y[0]), float(y[1]), spec.y[2]) if y is not None else spec.y
        shown = {"x_min": new_x[0], "x_max": new_x[1]}
        if new_y is not None:
            shown.update(y_min=new_y[0], y_max=new_y[1])
        self._post(run_id, "status", lambda: self.set(**shown))
        return replace(spec, x=new_x, y=new_y)

    def _entry(self, name: str, run_id: int) -> _Entry:
        if name not in self._entries:
            from .. import zoo

            self._post(run_id, "status", lambda: self._say(f"Loading {name} (trained on first use, then cached)…"))
            ex = zoo.load(name)
            self._entries[name] = _Entry(ex.model, ex.test, ex.train, ex.loss_fn, ex)
        return self._entries[name]

    @staticmethod
    def _split(entry: _Entry, spec: ExplorerSpec):
        data = entry.test if spec.split == "test" else entry.train
        if data is None:
            raise LandscapeError(
                f"model {spec.model!r} has no {spec.split!r} split (it was given as (model, data)); expected "
                "split 'test', or pass an object with .model, .train and .test"
            )
        return data

    def _client(self, key: str | None, run_id: int) -> tuple[Any, int, str]:
        """(client or None, number of workers, dashboard link); clusters are kept for the next Compute."""
        if key is None:
            return None, 1, ""
        if key == "given":
            client = self._given_client
        else:
            client, _ = self._clients.get(key, (None, None))
            if client is None or getattr(client, "status", "running") != "running":
                from ..cluster import get_client

                what = {"local": "Starting a local Dask cluster", "cuda": "Starting GPU workers"}.get(
                    key, f"Connecting to {key}")
                self._post(run_id, "status", lambda: self._say(f"{what}…"))
                client, owned = get_client(key)
                self._clients[key] = (client, owned)
        workers = len(client.scheduler_info().get("workers", {}))
        if workers == 0:
            raise LandscapeError(f"the Dask cluster at {key!r} has no workers; start some workers or pick another cluster")
        return client, workers, str(getattr(client, "dashboard_link", "") or "")

    def _tile_callback(self, run_id: int) -> Callable:
        """A ``compute_surface`` callback posting each partial surface and this session's points per second."""
        counted = [0]  # points computed in this session (a resumed store's points do not count)

        def on_tile(ev) -> None:
            counted[0] += ev.tile.n_points
            snap = ev.surface()
            rate = counted[0] / ev.elapsed if ev.elapsed > 0 else 0.0
            self._post(run_id, "tile", lambda: self._tile(snap, ev.n_done, rate))

        return on_tile

    def _post(self, run_id: int, kind: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the UI thread (see `UiQueue`), unless a newer run started meanwhile."""
        def guarded():
            if run_id == self.run_id:  # a stale run's updates are dropped
                fn()

        self._ui.post(kind, guarded)

    # These run on the UI thread.

    def _started(self, workers: int, link: str) -> None:
        self.workers = "in-process" if self.cluster == "in-process" else f"{workers} worker{'s' * (workers != 1)}"
        self.dashboard_link = link
        if self.status == "starting":
            self.status = "running"
            self._say("Computing…")

    def _tile(self, surf: Surface, n_done: int, rate: float) -> None:
        self.surface = surf
        self.n_done = n_done
        self.points_per_s = rate

    def _finished(self, surf: Surface, cancelled: bool, returned: float) -> None:
        self.surface = surf
        self.n_done = surf.n_done
        if self._cancel_t0 is not None:
            self.cancel_latency = max(0.0, returned - self._cancel_t0)
        seconds = surf.provenance.get("seconds")
        if cancelled and not surf.is_complete:
            self.status = "cancelled"
            self._say(f"Cancelled: {surf.n_done} of {surf.loss.size} points computed.")
        else:
            self.status = "done"
            finite = surf.loss[np.isfinite(surf.loss)]
            low = f", lowest loss {finite.min():.4g}" if finite.size else ""
            took = f" in {seconds:.3g} s" if isinstance(seconds, float) else ""
            self._say(f"Done: {surf.n_done} points{took}{low}.")

    def _failed_run(self, exc: BaseException) -> None:
        self.status = "error"
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """Show ``exc`` as one readable line (the exception itself is kept in ``last_error``)."""
        self.last_error = exc
        if isinstance(exc, (LandscapeError, t.TraitError)):
            text = str(exc)
        else:  # e.g. the user's model failing on its data
            text = f"{type(exc).__name__}: {exc} (the traceback is in explorer.state.last_error)"
        self._say(text, "error")

    def _say(self, text: str, kind: str = "info") -> None:
        self.message_kind = kind
        self.message = text

    # -------------------------------------------------------------- output ----

    def figure(self):
        """A static Plotly figure of the current surface (the live figure's layout)."""
        from .. import plot

        if self.surface is None:
            raise LandscapeError("nothing to show yet; press Compute first")
        return plot.live(self.surface, log=self.log_scale)

    def export_html(self, path: str | None = None, figure=None) -> Path:
        """Write the figure (default: the current surface's) as one standalone offline HTML file."""
        from ..plot.export import export_html

        fig = figure if figure is not None else self.figure()
        out = export_html(fig, path or self.export_path)
        self._say(f"Wrote {out} ({out.stat().st_size / 1e6:.1f} MB, standalone, opens offline).")
        return out

    def export_image(self, path: str | None = None, figure=None) -> Path:
        """Write the figure as a PNG (or the suffix's format) through kaleido and Chromium."""
        from ..plot.export import export_image

        fig = figure if figure is not None else self.figure()
        target = Path(path or self.export_path)
        if path is None:
            target = target.with_suffix(".png")
        out = export_image(fig, target, width=1100, height=520)
        self._say(f"Wrote {out}.")
        return out


_RESULT_TRAITS = {"status", "message", "message_kind", "n_done", "n_points", "points_per_s", "workers",
                  "dashboard_link", "surface", "run_id", "model_names", "schemes"}
_CONTROL_TRAITS = set(ExplorerState.class_trait_names()) - _RESULT_TRAITS


def _grid_text(spec: ExplorerSpec) -> str:
    return "×".join(str(n) for n in reversed(spec.grid.shape))  # x first: "201×101"


def _empty_surface(spec: ExplorerSpec) -> Surface:
    """All points missing: what the live figure shows before the first tile."""
    grid, shape = spec.grid, spec.grid.shape
    metrics = {spec.metric: np.full(shape, np.nan)} if spec.metric else {}
    return Surface(x=grid.x.values(), y=None if grid.y is None else grid.y.values(), loss=np.full(shape, np.nan),
                   metrics=metrics, done=np.zeros(shape, bool), provenance={"scheme": spec.scheme, "label": spec.model})


def _check_budget(spec: ExplorerSpec, seconds_per_point: float, workers: int) -> None:
    over = check_time_budget(spec.n_points, seconds_per_point, workers, spec.time_budget)
    if over is not None:
        raise LandscapeError(over.message(_grid_text(spec), spec.ndim))
