"""The Explorer: pick a model, a direction scheme and a grid, watch the landscape fill in live.

    import landscape_nb as lnb
    explorer = lnb.Explorer()                                  # the bundled zoo
    explorer = lnb.Explorer(models={"mine": (model, (inputs, targets))})
    explorer                                                   # show the panel; press Compute

Two layers, as in ipympl: `ExplorerState` holds the typed (traitlets) state, turns it
into an `ExplorerSpec` and runs ``compute_surface`` in a background thread; it knows
nothing about widgets and works with no browser attached. `Explorer` is the ipywidgets
view: controls linked to the state, a live Plotly ``FigureWidget``, a progress bar, a
status line and buttons.

Threads: the computation runs in a worker thread. Its tile callback never touches the
state directly; it posts the update to the kernel's event loop (captured when Compute is
pressed), so traits and the figure change only on the kernel's main thread and the kernel
stays responsive. Figure updates are coalesced to at most one per ``update_interval`` (each
one makes the browser redraw a WebGL surface); the final surface is always shown. Without
an event loop (a plain script) every update applies at once, on the worker thread.
"""
from __future__ import annotations

import asyncio
import copy
import html
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import ipywidgets as w
import numpy as np
import traitlets as t

from .errors import LandscapeError
from .schemes import SCHEMES
from .surface import Surface

log = logging.getLogger(__name__)

__all__ = ["Explorer", "ExplorerState", "ExplorerSpec", "SCHEME_LABELS", "CLUSTERS"]

SCHEME_LABELS = {
    "random": "random (normalized)",
    "random-orthogonal": "random, orthogonalized",
    "interpolate": "interpolation between minimizers (1D)",
    "plane3": "plane through three checkpoints",
    "pca": "PCA of the training trajectory",
    "hessian": "Hessian eigenvectors",
}
NORMS = ("filter", "layer", "weight", "none")
CLUSTERS = ("in-process", "local", "cuda", "address")
CLUSTER_LABELS = {"in-process": "in-process (this kernel)", "local": "local Dask cluster",
                  "cuda": "GPU workers (dask-cuda)", "address": "scheduler address", "given": "given client"}
FIGURE_WIDTH = 940  # px, the live 2D figure (3D surface + contours side by side)
STATUSES = ("idle", "starting", "running", "cancelling", "done", "cancelled", "error")


@dataclass(frozen=True)
class ExplorerSpec:
    """What one press of Compute computes: everything the controls say, validated."""

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

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2

    @property
    def n_points(self) -> int:
        return self.x[2] * (1 if self.y is None else self.y[2])


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
        from . import zoo

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
        self._given_client = None
        if client is not None and not isinstance(client, str):
            self._given_client = client
            client = "given"
        self.model_names = names
        self.model_name = names[0] if names else ""
        self.cluster, self.address = self._cluster_choice(client)
        self._clients: dict[str, tuple[Any, Any]] = {}
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[str, Callable[[], None]]] = []
        self._last_tile = 0.0
        self._lock = threading.Lock()
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

    def _cluster_choice(self, client) -> tuple[str, str]:
        if client is None or client in ("in-process", "inprocess", "none"):
            return "in-process", ""
        if client in ("local", "cuda", "given"):
            return client, ""
        if isinstance(client, str):
            return "address", client
        raise LandscapeError(f"client={client!r}; expected None, 'local', 'cuda', an address or a distributed.Client")

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

    def spec(self) -> ExplorerSpec:
        """The validated request the controls describe (raises LandscapeError if it is not valid)."""
        from .grid import Grid

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
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
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
            self._drain()
        self._drain()
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
        from .compute import compute_surface
        from .schemes import make_directions

        try:
            entry = self._entry(spec.model, run_id)
            data = self._split(entry, spec)
            base, directions = make_directions(
                spec.scheme, entry.model, entry.example, ndim=spec.ndim, norm=spec.norm, ignore=spec.ignore,
                seed=spec.seed, data=None if entry.example is not None else data, loss_fn=entry.loss_fn)
            spec = self._suggested_range(spec, directions, run_id)
            client, workers, link = self._client(spec.client, run_id)
            private = copy.deepcopy(base)  # probed and (in-process) evaluated; the user's model stays untouched
            per_point = _seconds_per_point(private, data, spec.max_samples)
            n_workers = max(1, workers)
            estimate = spec.n_points * per_point / n_workers
            if estimate > spec.time_budget:
                fit = int((spec.time_budget * n_workers / per_point) ** (1 / spec.ndim))
                raise LandscapeError(
                    f"{_grid_text(spec)} = {spec.n_points} points at about {per_point * 1e3:.3g} ms per point on "
                    f"{n_workers} worker(s) would take about {estimate:.0f} s, over the time budget of "
                    f"{spec.time_budget:.0f} s; lower the resolution to about {max(2, fit)} points per axis, "
                    "evaluate fewer samples (max samples), use more workers, or raise the time budget"
                )
            if client is None:
                base = private
            self._post(run_id, "status", lambda: self._started(workers, link))
            counted = [0]

            def on_tile(ev) -> None:
                counted[0] += ev.tile.n_points
                snap = ev.surface()
                rate = counted[0] / ev.elapsed if ev.elapsed > 0 else 0.0
                self._post(run_id, "tile", lambda: self._tile(snap, ev.n_done, rate))

            surf = compute_surface(
                base, data, directions, x=spec.x, y=spec.y, loss_fn=entry.loss_fn,
                metrics="auto" if spec.metric else None, client=client, callbacks=[on_tile], cancel=cancel,
                max_samples=spec.max_samples, name=spec.model,
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
            from . import zoo

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
                from .cluster import get_client

                what = {"local": "Starting a local Dask cluster", "cuda": "Starting GPU workers"}.get(
                    key, f"Connecting to {key}")
                self._post(run_id, "status", lambda: self._say(f"{what}…"))
                client, owned = get_client(key)
                self._clients[key] = (client, owned)
        workers = len(client.scheduler_info().get("workers", {}))
        if workers == 0:
            raise LandscapeError(f"the Dask cluster at {key!r} has no workers; start some workers or pick another cluster")
        return client, workers, str(getattr(client, "dashboard_link", "") or "")

    def _post(self, run_id: int, kind: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the UI thread (the loop captured at Compute); a tile replaces an older pending tile."""
        def guarded():
            if run_id == self.run_id:  # a stale run's updates are dropped
                fn()

        loop = self._loop
        if loop is None or loop.is_closed():
            guarded()
            return
        with self._lock:
            if kind == "tile":
                self._pending = [p for p in self._pending if p[0] != "tile"]
            self._pending.append((kind, guarded))
        try:
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop closed meanwhile; whoever waits drains
            pass

    def _drain(self) -> None:
        """Apply posted updates in order. Tiles are throttled to one per ``update_interval``
        seconds (the browser redraws a WebGL surface per update); the final result never waits."""
        now = time.monotonic()
        with self._lock:
            pending, self._pending = self._pending, []
            ended = any(kind == "end" for kind, _ in pending)
            due = []
            for kind, fn in pending:
                if kind == "tile" and not ended and now - self._last_tile < self.update_interval:
                    self._pending.append((kind, fn))  # the newest tile, kept for later
                    continue
                if kind == "tile" and ended:
                    continue
                due.append((kind, fn))
        for kind, fn in due:
            fn()
            if kind == "tile":
                self._last_tile = time.monotonic()  # measured after the update: spacing >= interval
        with self._lock:
            wait = self.update_interval - (time.monotonic() - self._last_tile) if self._pending else None
        if wait is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_later(max(wait, 0.01), self._drain)

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
        from . import plot

        if self.surface is None:
            raise LandscapeError("nothing to show yet; press Compute first")
        return plot.live(self.surface, log=self.log_scale)

    def export_html(self, path: str | None = None, figure=None) -> Path:
        """Write the figure (default: the current surface's) as one standalone offline HTML file."""
        from .export import export_html

        fig = figure if figure is not None else self.figure()
        out = export_html(fig, path or self.export_path)
        self._say(f"Wrote {out} ({out.stat().st_size / 1e6:.1f} MB, standalone, opens offline).")
        return out

    def export_image(self, path: str | None = None, figure=None) -> Path:
        """Write the figure as a PNG (or the suffix's format) through kaleido and Chromium."""
        from .export import export_image

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
    return f"{spec.x[2]}" if spec.y is None else f"{spec.x[2]}×{spec.y[2]}"


def _empty_surface(spec: ExplorerSpec) -> Surface:
    """All points missing: what the live figure shows before the first tile."""
    x = np.linspace(*spec.x)
    y = None if spec.y is None else np.linspace(*spec.y)
    shape = (x.size,) if y is None else (y.size, x.size)
    metrics = {spec.metric: np.full(shape, np.nan)} if spec.metric else {}
    return Surface(x=x, y=y, loss=np.full(shape, np.nan), metrics=metrics, done=np.zeros(shape, bool),
                   provenance={"scheme": spec.scheme, "label": spec.model})


def _seconds_per_point(model, data, max_samples: int | None) -> float:
    """A grid point's cost: the fastest of a few timed forward passes over the evaluation data."""
    import torch

    from .evaluate import as_tensors, subset
    from .params import eval_mode

    x, y = as_tensors(data)
    x, _ = subset(x, y, max_samples, 0)
    with eval_mode(model):  # never update BN statistics here
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        batches = [x[i:i + 1024].to(device) for i in range(0, len(x), 1024)]
        best, spent = float("inf"), 0.0
        with torch.no_grad():
            model(batches[0][:8])  # warm-up
            for _ in range(5):  # the minimum ignores a pass slowed down by other processes
                t0 = time.perf_counter()
                for xb in batches:
                    model(xb)
                dt = time.perf_counter() - t0
                best, spent = min(best, dt), spent + dt
                if spent > 1.0:
                    break
        return max(best, 1e-6)


# ---------------------------------------------------------------------------------------
# The view
# ---------------------------------------------------------------------------------------


class Explorer(w.VBox):
    """An ipywidgets panel for loss landscapes: model, direction scheme and options,
    ranges, resolution, split/metric, log scale, cluster; Compute, Cancel, Export.

    ``models``: None (the bundled zoo) or ``{"name": (model, data[, loss_fn])}`` (or
    objects with ``.model`` and ``.test``). ``client``: None (in-process), ``"local"``,
    ``"cuda"``, a scheduler address or a ``distributed.Client``. The state lives in
    ``explorer.state`` (an `ExplorerState`); ``explorer.figure`` is the live
    ``FigureWidget``.
    """

    def __init__(self, models: Mapping[str, Any] | None = None, client=None, **controls):
        state = ExplorerState(models=models, client=client, **controls)
        self.state = state
        self.figure = None
        self._figure_run = None
        wide = {"description_width": "initial"}
        clusters = CLUSTERS + (("given",) if state.cluster == "given" else ())

        def dd(options, description, width):
            return w.Dropdown(options=options, description=description, style=wide, layout=w.Layout(width=width))

        self.controls: dict[str, w.Widget] = {
            "model_name": dd(state.model_names, "model", "250px"),
            "scheme": dd([(SCHEME_LABELS.get(s, s), s) for s in state.schemes], "directions", "330px"),
            "ndim": w.ToggleButtons(options=[("1D line", 1), ("2D plane", 2)], style={"button_width": "80px"}),
            "norm": dd([(f"{n} norm" if n != "none" else "no norm", n) for n in NORMS], "normalize", "200px"),
            "ignore_biasbn": w.Checkbox(description="zero direction for biases / BN (biasbn)", indent=False,
                                        layout=w.Layout(width="280px")),
            "seed": w.BoundedIntText(min=0, max=2**31 - 1, description="seed", style=wide, layout=w.Layout(width="140px")),
            "x_min": w.FloatText(description="x from", style=wide, layout=w.Layout(width="130px")),
            "x_max": w.FloatText(description="to", style=wide, layout=w.Layout(width="110px")),
            "x_points": w.IntSlider(min=3, max=201, step=2, description="x points", style=wide),
            "auto_range": w.Checkbox(description="range from scheme (pca, interpolate, plane3)", indent=False,
                                     layout=w.Layout(width="320px")),
            "y_min": w.FloatText(description="y from", style=wide, layout=w.Layout(width="130px")),
            "y_max": w.FloatText(description="to", style=wide, layout=w.Layout(width="110px")),
            "y_points": w.IntSlider(min=3, max=201, step=2, description="y points", style=wide),
            "split": w.ToggleButtons(options=["test", "train"], style={"button_width": "60px"}),
            "metric": dd([("loss + accuracy", "accuracy"), ("loss only", "none")], "metric", "220px"),
            "log_scale": w.Checkbox(description="log scale", indent=False, layout=w.Layout(width="110px")),
            "max_samples": w.BoundedIntText(min=0, max=10**9, description="max samples (0: all)", style=wide,
                                            layout=w.Layout(width="210px")),
            "cluster": dd([(CLUSTER_LABELS[c], c) for c in clusters], "cluster", "280px"),
            "address": w.Text(placeholder="tcp://host:8786", description="address", style=wide,
                              layout=w.Layout(width="260px")),
            "time_budget": w.BoundedFloatText(min=0, max=1e7, description="time budget (s)", style=wide,
                                              layout=w.Layout(width="190px")),
            "export_path": w.Text(description="export to", style=wide, layout=w.Layout(width="300px")),
        }
        for name, widget in self.controls.items():
            widget.add_class(f"lnb-{name.replace('_', '-')}")
            t.link((state, name), (widget, "value"))
        t.dlink((state, "model_names"), (self.controls["model_name"], "options"))

        self.compute_button = w.Button(description="Compute", button_style="primary", icon="play")
        self.cancel_button = w.Button(description="Cancel", button_style="warning", icon="stop", disabled=True)
        self.export_button = w.Button(description="Export HTML", icon="download")
        self.export_png_button = w.Button(description="Export PNG", icon="image")
        for b, cls in ((self.compute_button, "compute"), (self.cancel_button, "cancel"),
                       (self.export_button, "export-html"), (self.export_png_button, "export-png")):
            b.add_class(f"lnb-{cls}")
        self.compute_button.on_click(lambda _: self.compute())
        self.cancel_button.on_click(lambda _: self.cancel())
        self.export_button.on_click(lambda _: self._export("html"))
        self.export_png_button.on_click(lambda _: self._export("png"))

        self.progress = w.IntProgress(min=0, max=1, value=0, layout=w.Layout(width="320px"))
        self.status_line = w.HTML()
        self.message_box = w.HTML()
        self.figure_box = w.Box(layout=w.Layout(width="100%", min_height="40px", display="block"))
        for widget, cls in ((self.status_line, "status"), (self.message_box, "message"),
                            (self.figure_box, "figure"), (self.progress, "progress")):
            widget.add_class(f"lnb-{cls}")

        c = self.controls
        self._y_row = w.HBox([c["y_min"], c["y_max"], c["y_points"]])
        rows = [
            w.HBox([c["model_name"], c["scheme"], c["ndim"]]),
            w.HBox([c["norm"], c["ignore_biasbn"], c["seed"]]),
            w.HBox([c["x_min"], c["x_max"], c["x_points"], c["auto_range"]]),
            self._y_row,
            w.HBox([c["split"], c["metric"], c["log_scale"], c["max_samples"]]),
            w.HBox([c["cluster"], c["address"], c["time_budget"]]),
            w.HBox([self.compute_button, self.cancel_button, self.export_button, self.export_png_button,
                    c["export_path"]]),
            w.HBox([self.progress, self.status_line]),
            self.message_box,
            self.figure_box,
        ]
        super().__init__(rows, layout=w.Layout(width="100%"))
        self.add_class("lnb-explorer")

        state.observe(self._on_surface, "surface")
        state.observe(self._on_log, "log_scale")
        state.observe(self._on_progress, ["status", "n_done", "n_points", "points_per_s", "workers",
                                          "dashboard_link"])
        state.observe(self._on_message, ["message", "message_kind"])
        state.observe(self._on_layout, ["ndim", "cluster"])
        self._on_layout()
        self._on_progress()
        self._on_message()

    # state -> view

    def _on_surface(self, change=None) -> None:
        import plotly.graph_objects as go

        from . import plot

        surf = self.state.surface
        if surf is None:
            return
        if self.figure is None or self._figure_run != self.state.run_id:
            scheme = str(surf.provenance.get("scheme", ""))
            title = f"{surf.provenance.get('label', '')}: {SCHEME_LABELS.get(scheme, scheme)} directions"
            fig = plot.live(surf, log=self.state.log_scale, title=title)
            if surf.ndim == 2:  # the widget is drawn before it has a width to autosize to
                fig.update_layout(width=FIGURE_WIDTH)
            self.figure = go.FigureWidget(fig)
            self._figure_run = self.state.run_id
            self.figure_box.children = [self.figure]
        else:
            plot.update(self.figure, surf, log=self.state.log_scale)

    def _on_log(self, change) -> None:
        from . import plot

        if self.figure is not None and self.state.surface is not None:
            plot.update(self.figure, self.state.surface, log=change["new"])

    def _on_progress(self, change=None) -> None:
        s = self.state
        running = s.status in ("starting", "running", "cancelling")
        self.compute_button.disabled = running
        self.cancel_button.disabled = not running or s.status == "cancelling"
        self.progress.max = max(1, s.n_points)
        self.progress.value = min(s.n_done, self.progress.max)
        self.progress.bar_style = {"done": "success", "cancelled": "warning", "error": "danger"}.get(s.status, "info")
        parts = [f"<b>{s.status}</b>"]
        if s.n_points:
            parts.append(f"{s.n_done:,} / {s.n_points:,} points")
        if s.points_per_s:
            parts.append(f"{s.points_per_s:,.1f} points/s")
        if s.workers:
            parts.append(html.escape(s.workers))
        if s.dashboard_link:
            link = html.escape(s.dashboard_link, quote=True)
            parts.append(f'<a href="{link}" target="_blank">Dask dashboard</a>')
        self.status_line.value = " · ".join(parts)

    def _on_message(self, change=None) -> None:
        s = self.state
        if not s.message:
            self.message_box.value = ""
            return
        color = "#a40000" if s.message_kind == "error" else "#333"
        prefix = "<b>Error:</b> " if s.message_kind == "error" else ""
        self.message_box.value = (f'<div class="lnb-{s.message_kind}" style="color:{color};white-space:pre-wrap">'
                                  f"{prefix}{html.escape(s.message)}</div>")

    def _on_layout(self, change=None) -> None:
        self._y_row.layout.display = "" if self.state.ndim == 2 else "none"
        self.controls["address"].layout.display = "" if self.state.cluster == "address" else "none"

    def _export(self, kind: str) -> None:
        try:
            if kind == "html":
                self.state.export_html(figure=self.figure)
            else:
                self.state.export_image(figure=self.figure)
        except LandscapeError as exc:
            self.state._fail(exc)
        except Exception as exc:  # a readable line in the panel, the traceback in last_error
            log.debug("export failed", exc_info=exc)
            self.state._fail(exc)

    # the state's verbs, for convenience

    def compute(self, wait: bool = False) -> bool:
        """Press Compute (``wait=True`` blocks until done)."""
        return self.state.compute(wait=wait)

    def cancel(self) -> bool:
        return self.state.cancel()

    def wait(self, timeout: float | None = None) -> Surface | None:
        return self.state.wait(timeout)

    def spec(self) -> ExplorerSpec:
        return self.state.spec()

    @property
    def surface(self) -> Surface | None:
        return self.state.surface

    def export_html(self, path: str | None = None) -> Path:
        return self.state.export_html(path, figure=self.figure)

    def export_image(self, path: str | None = None) -> Path:
        return self.state.export_image(path, figure=self.figure)

    def close(self) -> None:
        self.state.close()
        super().close()
