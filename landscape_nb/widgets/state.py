"""The Explorer's state and computation, with no widgets: usable from scripts and tests.

`ExplorerState` holds the controls as typed (traitlets) traits, turns them into a
validated `ExplorerSpec` and runs ``compute_surface`` in a worker thread. The worker
never touches the traits itself: it posts each update through a `UiQueue` to the event
loop that was running when Compute was pressed (see ``_ui_thread``), so traits change only
on the kernel's main thread. Nothing here imports ipywidgets; the view is ``view.Explorer``.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import math
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import traitlets as t

from ..directions import NORMS
from ..errors import LandscapeError, check_choice
from ..grid import (
    Grid,
    grid_through_models,
    models_at,
    models_between_points,
    models_outside,
    say_models_at,
    several_at,
)
from ..schemes import SCHEMES
from ..surface import CENTRE_DIVERGED, Surface, notes_by_kind
from ._ui_thread import UiQueue
from .app_mode import HTML_SUFFIXES, IMAGE_SUFFIXES, AddressPolicy, ExportDir
from .budget import estimate_seconds_per_point
from .models import ModelShelf, schemes_for, split_of, splits_for
from .request import (
    MODEL_SCHEMES,
    SCHEME_LABELS,
    ExplorerSpec,
    RangeChoice,
    check_budget,
    empty_surface,
    figure_title,
    pick_range,
)

logger = logging.getLogger(__name__)

CLUSTERS = ("in-process", "local", "cuda", "address")
SPLITS = ("test", "train")
STATUSES = ("idle", "starting", "running", "cancelling", "done", "cancelled", "error")
POINTS = (3, 201)  # points per axis the panel's sliders offer (odd ones: step 2)
PREFETCH_SCHEMES = ("random", "random-orthogonal")  # directions drawn in milliseconds: prepared ahead of Compute
PREPARED_KEPT = 8  # preparations of zoo models kept for the next Computes


#: `Cancelled`'s argument for a Cancel while the model loads (`ExplorerState._load_entry`)
_LOADING = "loading the model"


@dataclass(frozen=True)
class Prepared:
    """What a run needs before its first tile: the centre model, its directions and the range."""

    base: Any
    directions: Any
    range: RangeChoice


def _prepare_key(spec: ExplorerSpec) -> tuple:
    """What a preparation depends on (not the resolution, the typed range, the metric or the cluster)."""
    return (spec.model, spec.scheme, spec.norm, spec.ignore, spec.seed, spec.ndim, spec.split, spec.auto_range,
            spec.rise, spec.max_samples)


def _of_split(surf: Surface | None, spec: ExplorerSpec | None) -> Surface | None:
    """``surf`` with the split it was computed on in its provenance (``"split"``), for the figure's title: a test
    and a train surface were titled alike (`request.figure_title`)."""
    if surf is not None and spec is not None:
        surf.provenance["split"] = spec.split
    return surf


def _starting(key: str) -> str:
    """What the status line says of a run's workers while `_client` starts its cluster or connects to it (the
    message line says it too; a cluster object passed in is not started)."""
    starting = {"local": "starting a local Dask cluster", "cuda": "starting GPU workers"}
    return starting.get(key, f"connecting to {key}") + "…"


def _main_thread_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running on the main thread, when called there (a notebook cell); else None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _caveats(surf: Surface) -> str:
    """What the panel says besides "Done": diverged points (the figure's gaps; their metrics, such as the
    argmax of NaN logits, mean nothing) and how the samples differ from a loop over the DataLoader given
    (otherwise only a Python warning, easily missed under a notebook cell), and a PCA plane's checkpoints
    outside the range drawn, and a plane through three models' models outside it."""
    from ..compute import diverged_at_the_model
    from ..data import loader_notes
    from ..plot.figures import (
        line_models,
        line_models_outside,
        path_outside,
        plane_models,
        plane_models_outside,
    )

    out = ""
    outside, checkpoints = path_outside(surf)
    if outside:
        out += (f" {outside} of the {checkpoints} checkpoints lie outside the range drawn, so the figure does not "
                "show that part of the training path; auto range holds them.")
    models = plane_models_outside(surf)
    if models:
        out += (f" Outside the range drawn, so not marked: {', '.join(models)}; auto range holds all three models.")
    ends = line_models_outside(surf)
    if ends:
        out += f" Outside the range drawn, so not marked: {', '.join(ends)}; auto range holds both models."
    unmarked = (plane_models(surf) or line_models(surf) or {}).get("unmarked")
    if unmarked:
        out += f" {unmarked[0].upper()}{unmarked[1:]}."
    n_bad = surf.n_diverged
    if n_bad:
        out += (f" The loss diverged (NaN or inf) at {n_bad} of {surf.n_done} points: gaps in the figure, where the "
                "metrics mean nothing; " + (f"{CENTRE_DIVERGED}." if surf.centre_diverged  # a grid without 0
                                           else f"{diverged_at_the_model(surf)}." if diverged_at_the_model(surf)
                                           else "a narrower range shows the basin."))
        out += f" {surf.divergence_note}." if surf.divergence_note else ""
    out += f" {surf.sampling_note[0].upper()}{surf.sampling_note[1:]}." if surf.sampling_note else ""
    out += "".join(f" Note: {text}." for text in loader_notes(surf.provenance.get("data") or {}))
    return out


def _off_grid_note(spec: ExplorerSpec, models: list[str] | None = None) -> str:
    """A note where the range used leaves out or misses the model at 0 (and for an interpolation or a plane through
    three models, the others at 1; ``models``, the directions' names for them, `landscape_nb.grid.models_at`): a
    typed range, or one kept because auto range could not find one, with the nearest grid the sliders can take that
    holds them (`landscape_nb.grid.grid_through_models`, odd counts). ``RangeChoice.apply`` moves automatic ranges
    so that they never do."""
    unit = spec.scheme in MODEL_SCHEMES
    axes = [(name, axis) for name, axis in zip("xy", (spec.x, spec.y)) if axis is not None]
    out = ""
    for k, (name, (start, stop, n)) in enumerate(axes):
        outside, missed = models_outside(start, stop, unit=unit), models_between_points(start, stop, n, unit=unit)
        sits = models_at(k, models, unit, len(axes))  # a plane through three: two models at 0 of each axis
        named = {w for m in (*outside, *missed) for w in sits[m]}
        them = "them" if len(named) > 1 else "it"
        if outside:
            many = several_at(sits, outside)
            out += (f" Note: {say_models_at(sits, name, outside)} {'lie' if many else 'lies'} outside the range "
                    f"{start:.10g} to {stop:.10g}, so the figure does not show {'their' if many else 'its'} own loss")
        if missed:  # "the model sits at y = 0, between ...", as the CLI says it; a plane's "a and c at x = 0 lie"
            many = several_at(sits, missed)
            whom = (f"{' and '.join(sits[m][0] for m in missed)} {'sit' if many else 'sits'} at {name} = "
                    f"{' and '.join(f'{m:g}' for m in missed)}," if all(len(sits[m]) == 1 for m in missed) else
                    f"{say_models_at(sits, name, missed)} lie")
            out += (f"{';' if outside else ' Note:'} {whom} between the {n} points of {start:.10g} to {stop:.10g}, "
                    f"so the figure does not show {'their' if many else 'its'} own loss")
        if not (outside or missed):
            continue
        fix = grid_through_models(start, stop, n, unit=unit, step=2, most=POINTS[1])
        fixes = ["auto range"] * (not spec.auto_range)
        if fix is not None:
            moved = f"{name} from {fix[1]:.10g} to {fix[2]:.10g}" if (fix[1], fix[2]) != (start, stop) else ""
            fixes.insert(0, " and ".join(w for w in (f"{fix[0]} {name} points" * (fix[0] != n), moved) if w))
        out += f"; {' or '.join(fixes)} put{'s' * (len(fixes) == 1)} {them} on the grid." if fixes else "."
    return out


class ExplorerState(t.HasTraits):
    """The Explorer's state and its computation; no widgets (usable from scripts and tests).

    Set the control traits, then ``compute()``; ``surface`` holds the latest (partial)
    result, ``status``/``message`` say what happened, ``wait()`` blocks until done. Picking a
    model that lacks the scheme or split picked says so in ``message``, and again at the end of
    the next run's message (its "Done" would otherwise replace it unread).

    For a loaded zoo model the range search runs ahead, in a background thread, when the
    model is picked or a control it depends on changes (`prefetch`); Compute then starts
    with the first tile. A user's model is evaluated only when Compute is pressed.

    ``allow_addresses`` and ``export_dir`` bound what a visitor of a served page can reach
    (see `landscape_nb.widgets.app_mode` and `Explorer`); the other arguments are `Explorer`'s.
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
    auto_range = t.Bool(True)  # the scheme's range (interpolate, plane3, pca), else where the loss rises
    rise = t.Float(5.0)  # auto range: the edge is where the loss reaches rise x the centre's
    y_points = t.Int(21)
    split = t.Enum(SPLITS, default_value="test")
    splits = t.List(t.Unicode(), default_value=list(SPLITS))  # those the picked model has (`_offer_splits`)
    metric = t.Enum(("accuracy", "none"), default_value="accuracy")
    log_scale = t.Bool(False)
    cluster = t.Unicode("in-process")
    address = t.Unicode("")
    max_samples = t.Int(0)  # 0: all samples
    time_budget = t.Float(300.0)  # seconds an estimate may reach before Compute refuses, and a run may take
    # at least this many seconds between two live-figure updates (the first tile and the end never
    # wait). Each one is a WebGL redraw that competes with the computation for the CPUs: in
    # JupyterLab with software WebGL on 2 cores resnet20-digits' 21x21 surface filled in 15.8 s
    # at 0.5 s, 10.6 s at 1 s (it computes in 6 s with no browser; bench_first_paint.py)
    update_interval = t.Float(1.0)
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
    # before the first Compute: an empty surface over the range found ahead for the current
    # controls (the view draws its axes then, not when the first values arrive)
    preview = t.Instance(Surface, allow_none=True)
    run_id = t.Int(0)

    def __init__(self, models: Mapping[str, Any] | None = None, client=None, *,
                 allow_addresses: bool | Iterable[str] = False, export_dir=None, **kwargs):
        super().__init__()
        self.shelf = ModelShelf(models)
        names = self.shelf.names
        from ..cluster import parse_client

        choice = parse_client(client)
        given = choice.kind in ("given", "cluster")  # the caller's Client or cluster object
        self._given_client = choice.client if given else None
        self.addresses = AddressPolicy(allow_addresses, given=choice.address if choice.kind == "address" else None)
        self.exports = ExportDir.make(export_dir)
        self.model_names = names
        self.model_name = names[0] if names else ""
        self.cluster, self.address = ("given" if given else choice.kind), choice.address
        self._clients: dict[str, tuple[Any, Any]] = {}
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._ui = UiQueue(throttle=self.update_interval)
        self._main_loop = _main_thread_loop()
        self.last_error: BaseException | None = None
        self.cancel_latency: float | None = None
        self._cancel_t0: float | None = None
        self.set(**kwargs)
        self.observe(lambda change: self.shelf.prefetch(change["new"]), "model_name")
        self._prepared: dict[tuple, Prepared] = {}
        self._prefetcher: threading.Thread | None = None  # set and cleared under _prefetch_lock
        self._prefetching: tuple | None = None  # the key it prepares
        self._prefetch_stop = threading.Event()
        self._prefetch_lock = threading.Lock()
        self._computing = False  # from Compute until its end is applied (UI thread)
        self._run_spec: ExplorerSpec | None = None  # what the latest run computes (its range once chosen)
        self._range_seconds: float | None = None  # the latest run's search for its range (auto), said with "Done"
        self._resumable: tuple[ExplorerSpec, Surface] | None = None  # a cancelled run's spec and partial surface
        self._before: Surface | None = None  # the surface shown when Compute was pressed
        self._queued_compute = False  # Compute pressed while a Cancel took effect: started at the run's end
        self._queued_start: threading.Thread | None = None  # starting it, where no event loop runs (`_start_after`)
        #: the `landscape_nb.directions.Directions` of the surface shown, and the model at its centre (x = y = 0;
        #: an interpolation's first minimizer, not the picked model; for a user's model, a copy of its weights as
        #: the run had them, so training it on since changes neither); None before a run's first values:
        #: ``lnb.compute_surface(state.centre, data, state.directions, ...)`` computes more of the same plane
        self.directions = self.centre = None
        self._before_run = (None, None)
        self._closed = False
        # what a model switch changed ("scheme", "split"): said at once, and again at the end of the next run,
        # whose "Done" would otherwise replace it unread; a control set again by hand drops its note
        self._switch_notes: dict[str, str] = {}
        self._run_notes: dict[str, str] = {}  # those of the run under way
        self.observe(lambda change: self._switch_notes.pop(change["name"], None), ["scheme", "split"])
        self._offer_schemes(given=kwargs.get("scheme"))
        self._offer_splits(given=kwargs.get("split"))
        self.observe(lambda change: self._offer_choices(), "model_name")
        self.observe(lambda change: self.prefetch(), ["model_name", "scheme", "norm", "ignore_biasbn", "seed", "ndim",
                                                      "split", "auto_range", "rise", "max_samples"])
        self.shelf.prefetch(self.model_name)  # a cached zoo model loads with the panel, not on Compute
        self.prefetch()
        if not names:
            self._say("No models: the zoo is not available. Pass your own, e.g. "
                      "Explorer(models={'mine': (net, (x, y))}).", "error")

    # ------------------------------------------------------------ controls ----

    def set(self, **values) -> "ExplorerState":
        """Set several controls at once, e.g. ``state.set(x_points=31, scheme="interpolate")``."""
        for name, value in values.items():
            if not self.has_trait(name) or name in _RESULT_TRAITS:
                raise LandscapeError(f"no control named {name!r}; expected one of {sorted(_CONTROL_TRAITS)}")
            if name == "scheme":
                check_choice("direction scheme", value, SCHEMES)  # a misspelling: "did you mean"
            offered = {"scheme": self.schemes, "split": self.splits}.get(name)
            if offered is not None and value not in offered:  # the menus' choices for this model
                raise LandscapeError(f"{name}={value!r} is not offered for {self.model_name!r}; expected one of "
                                     f"{list(offered)}")
            setattr(self, name, value)
        return self

    @t.validate("scheme")
    def _check_scheme(self, proposal):
        """A scheme name the Explorer knows (``set`` and the menu also keep to the ones the model can give)."""
        check_choice("direction scheme", proposal["value"], SCHEMES)
        return proposal["value"]

    @t.validate("ndim")
    def _check_ndim(self, proposal):
        if proposal["value"] not in (1, 2):
            raise t.TraitError(f"ndim={proposal['value']!r}; expected 1 (a line) or 2 (a plane)")
        return proposal["value"]

    @t.validate("x_points", "y_points")
    def _check_points(self, proposal):
        """What the panel's sliders can show (``POINTS``, odd: the centre is a grid point); the slider showed
        201 for 300 points computed, 3 for 2."""
        n, name = proposal["value"], proposal["trait"].name
        low, high = POINTS
        if not (low <= n <= high and n % 2):
            raise t.TraitError(f"{name}={n!r}; expected an odd number of points from {low} to {high} (what the "
                               f"panel's slider shows; odd puts the centre on the grid): for more, use "
                               "lnb.compute_surface along the run's directions (explorer.centre, data, "
                               "explorer.directions)")
        return n

    @t.validate("seed", "max_samples", "time_budget", "rise")
    def _check_number(self, proposal):
        """The number boxes' values, refused in words where out of range (the browser's bounded boxes clamped a
        typed -5 to 0 with no word, and the run then said "time budget 0.0 s", trial s47)."""
        value, name = proposal["value"], proposal["trait"].name
        fine, expected = {
            "seed": (0 <= value < 2**31, "an integer from 0 to 2**31 - 1"),
            "max_samples": (value >= 0, "0 (every sample) or a positive number of samples"),
            "time_budget": (math.isfinite(value) and value > 0, "a positive number of seconds (there is no 'no "
                                                                  "limit' value: for one, give a large budget, e.g. "
                                                                  "1e7)"),
            "rise": (math.isfinite(value) and value > 1, "a factor above 1 (the auto range's edge is where the "
                                                          "loss reaches that many times the centre's)"),
        }[name]
        if not fine:
            raise t.TraitError(f"{name}={value!r}; expected {expected}")
        return value

    @t.validate("cluster")
    def _check_cluster(self, proposal):
        if proposal["value"] not in self.clusters():
            if proposal["value"] == "address":
                raise t.TraitError("cluster='address' refused: this Explorer does not connect to scheduler addresses "
                                   "(the notebook's code can allow some with Explorer(allow_addresses=[...]))")
            raise t.TraitError(f"cluster={proposal['value']!r}; expected one of {self.clusters()}")
        return proposal["value"]

    def clusters(self) -> tuple[str, ...]:
        """The cluster choices offered: "address" only where allowed, "given" only with a given client."""
        policy = getattr(self, "addresses", None)
        return (tuple(c for c in CLUSTERS if c != "address" or (policy is not None and policy.enabled))
                + (("given",) if getattr(self, "_given_client", None) is not None else ()))

    @t.observe("scheme")
    def _scheme_defaults(self, change):
        """An interpolation is a 1D scan, a plane through three models 2D; with ``auto_range`` a new scheme
        starts from ±1 (schemes that suggest their own range, like pca, set it when they run)."""
        if change["new"] == "interpolate":
            self.ndim = 1
        elif change["new"] == "plane3" or change["old"] == "interpolate":
            self.ndim = 2
        if self.auto_range:
            self.set(x_min=-1.0, x_max=1.0, y_min=-1.0, y_max=1.0)

    def _offer_schemes(self, given: str | None = None) -> None:
        """Offer the schemes the picked model can give (every one for the zoo's); a scheme picked before that
        the new model cannot give becomes "random", and the message line says why. ``given``: a scheme the
        caller asked for by name, refused if this model cannot give it."""
        if given is not None:
            check_choice("direction scheme", given, SCHEMES)
        self.schemes = self._offer("scheme", given, tuple(SCHEMES), schemes_for, "random",
                                   lambda old, why: f"Directions '{SCHEME_LABELS.get(old, old)}' do not apply to "
                                                    f"{self.model_name!r} ({why}); now random.")

    def _offer_splits(self, given: str | None = None) -> None:
        """Offer the data splits the picked model has (`splits_for`; both for the zoo's), as `_offer_schemes`
        does the schemes: a split picked before that the new model lacks becomes "test", and the message line
        says why; ``given``, a split the caller asked for by name, is refused if this model lacks it."""
        self.splits = self._offer("split", given, SPLITS, splits_for, "test",
                                  lambda old, why: f"Split {old!r} does not apply to {self.model_name!r} ({why}); "
                                                   "now 'test'.")

    def _offer(self, trait: str, given: str | None, every, of_model: Callable, fallback: str,
               note: Callable[[str, str], str]) -> list[str]:
        """The choices of ``trait`` the picked model has (``of_model(entry)``: (choices, why not the others);
        ``every`` for the zoo's or a model not loaded yet); a choice it lacks is refused if ``given`` by name,
        else becomes ``fallback`` with ``note`` said at the next run's end (`_switch_note`)."""
        if self.shelf.zoo or not self.shelf.ready(self.model_name):
            offered, why = every, ""
        else:
            offered, why = of_model(self.shelf[self.model_name])
        old = getattr(self, trait)
        if old not in offered:
            if given is not None:
                raise LandscapeError(f"{trait}={given!r} for model {self.model_name!r}: {why}")
            setattr(self, trait, fallback)
            self._switch_note(trait, note(old, why))
        return list(offered)

    def _offer_choices(self) -> None:
        """Another model is picked: offer its schemes and splits; only this switch's notes are said."""
        self._switch_notes.clear()
        self._offer_schemes()
        self._offer_splits()

    def _switch_note(self, control: str, text: str) -> None:
        """Say what a model switch did to ``control``, now and at the end of the next run (`_finished`)."""
        self._switch_notes[control] = text
        self._say(" ".join(self._switch_notes.values()))

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
            why = (f" (model {self.model_name!r}: {schemes_for(self.shelf[self.model_name])[1]})"
                   if self.scheme in SCHEMES and not self.shelf.zoo else "")
            raise LandscapeError(f"direction scheme {self.scheme!r}; expected one of {self.schemes}{why}")
        if self.split not in self.splits:
            raise LandscapeError(f"split {self.split!r}; expected one of {self.splits} (model {self.model_name!r}: "
                                 f"{splits_for(self.shelf[self.model_name])[1]})")
        x = (float(self.x_min), float(self.x_max), int(self.x_points))
        y = (float(self.y_min), float(self.y_max), int(self.y_points)) if self.ndim == 2 else None
        for axis, (lo, hi, _) in (("x", x), ("y", y)) if y is not None else (("x", x),):
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):  # in the controls' words, not (lo, hi, n)
                how = "is not finite" if not (math.isfinite(lo) and math.isfinite(hi)) else "is empty or reversed"
                fix = f"e.g. from {min(lo, hi)} to {max(lo, hi)}" if math.isfinite(lo + hi) and lo != hi else \
                    "e.g. from -1 to 1"
                raise LandscapeError(f"{axis} from {lo} to {hi} {how}; expected a finite 'from' below 'to' ({fix})"
                                     + ("" if self.auto_range else ", or tick auto range"))
        Grid.make(x, y)  # its LandscapeError says what else is wrong with a range or resolution
        if self.cluster == "address":
            if not self.address.strip():
                raise LandscapeError("cluster 'scheduler address' with an empty address; expected e.g. "
                                     "tcp://127.0.0.1:8786 in the address box, or pick another cluster")
            client = self.addresses.check(self.address)
        else:
            client = {"in-process": None}.get(self.cluster, self.cluster)
        if self.max_samples < 0:
            raise LandscapeError(f"max samples {self.max_samples}; expected 0 (all) or a positive number")
        if self.auto_range and not self.rise > 1:
            raise LandscapeError(f"auto range rise ×{self.rise}; expected a factor > 1 over the centre's loss, e.g. 5")
        if not self.time_budget > 0:
            raise LandscapeError(f"time budget {self.time_budget} s; expected a positive number of seconds (there is "
                                 "no 'no limit' value: for one, give a large budget, e.g. 1e7)")
        return ExplorerSpec(
            model=self.model_name, scheme=self.scheme, norm=self.norm,
            ignore="biasbn" if self.ignore_biasbn else None, seed=int(self.seed), x=x, y=y,
            split=self.split, metric=None if self.metric == "none" else self.metric, log=bool(self.log_scale),
            client=client, max_samples=self.max_samples or None, time_budget=float(self.time_budget),
            auto_range=bool(self.auto_range), rise=float(self.rise),
        )

    # ------------------------------------------------------------- running ----

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def compute(self, wait: bool = False) -> bool:
        """Start computing the current spec in the background; False (with a message) if refused.

        A second Compute while one runs is refused (press Cancel first); pressed while a Cancel takes
        effect, it returns at once and starts when the cancelled run has stopped; with ``wait=True`` (a script
        or a cell) it waits for that one to end instead, then computes the current controls and waits
        for them, so ``surface`` is theirs when it returns. A run refused or failed once started (the
        time budget, a scheme the model lacks, an error in the model) puts back the surface shown
        before, says why in the panel and, with ``wait=True``, returns False.
        """
        if self.running and not wait and self.status == "cancelling":  # pressed while a Cancel takes effect:
            self._queued_compute = True  # started by `_ended`; waiting here blocked the kernel 10 s, then refused
            self._say("Compute starts once the cancelled run has stopped (the point it is on finishes first).")
            return True
        if self.running and (wait or not self._computing):  # wait=True; or its end applied, its thread exiting
            self.wait(None if wait else 10)
        if self.running:
            # not an error: a double click's second Compute said "Error:" in red over a run going on fine (trial s55)
            self._say("A computation is already running (this Compute is ignored); press Cancel first to start "
                      "another, or wait for it to finish.")
            return False
        try:
            spec = self.spec()
        except LandscapeError as exc:
            self.status = "error"
            self._fail(exc)
            return False
        from .. import autorange, compute, schemes  # noqa: F401 - imported here, not in two threads at once
        from ..process import release_openmp_threads

        # idle OpenMP teams of other threads make libgomp sleep at every op of the worker (~1.8x
        # slower): this thread's, and the main thread's (ipykernel 7 handles widget messages in a
        # subshell thread; the notebook's cells ran torch on the main one), released when it idles
        release_openmp_threads()
        main = self._main_loop
        if threading.current_thread() is not threading.main_thread() and main is not None:
            try:
                main.call_soon_threadsafe(release_openmp_threads)
            except RuntimeError:  # that loop has closed: nobody computes there any more
                pass

        self._ui.capture_loop()
        self._cancel = threading.Event()
        self._cancel_t0 = None
        self.cancel_latency = None
        self.last_error = None
        self.run_id += 1
        self._computing = True
        kept = self._prepared.get(_prepare_key(spec))  # only a zoo model's are kept
        # the empty figure already spans a range found ahead: the first tile then changes only the values;
        # a cancelled run of these controls is shown as it was left, and goes on from there (_run)
        shown = kept.range.apply(spec) if kept is not None else spec
        self._before = self.surface  # put back if this run is refused or fails (_failed_run)
        self._before_run = (self.directions, self.centre)  # with its directions; the new run's come with its values
        self.directions = self.centre = None
        # (a zoo model never changes; a user's may have since: then its partial is not shown, nor kept, _run)
        partial = (self._resumable[1] if self.shelf.zoo and self._resumable and _same_values(self._resumable[0], shown)
                   else None)
        # the status line first: drawing the new empty figure takes a moment (0.8 s on a loaded box), during which
        # it said the last run's "done · 441 / 441 points" (trial s46)
        # with a cancelled run's points drawn, their count (it said "running · 0 / 1,681" beside 108, trial s60)
        self.n_points, self.n_done, self.points_per_s = spec.n_points, 0 if partial is None else partial.n_done, 0.0
        self.workers = self._workers_before_start(spec.client)
        self.status = "starting"
        self._say(f"Preparing {spec.model}…")
        self.surface = partial if partial is not None else empty_surface(shown)
        self._run_spec = spec
        self._run_notes = dict(self._switch_notes)
        self._thread = threading.Thread(target=self._run, args=(spec, self._cancel, self.run_id),
                                        name="landscape_nb-explorer", daemon=True)
        self._thread.start()
        if wait:
            self.wait()
            return self.status != "error"
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

    def _busy(self) -> bool:
        """A run is on, or a Compute queued behind a Cancel is yet to start it. `_queued_start` is cleared only
        once the queued run's thread runs, and `_queued_compute` while the ended run's thread still runs, so
        `running`, read last, cannot miss a run started between the reads (read first, it did: wait returned
        on a queued run still "starting")."""
        return self._queued_start is not None or self._queued_compute or self.running

    def wait(self, timeout: float | None = None) -> Surface | None:
        """Block until the computation ends (applying its updates here); the surface.

        Interrupted (the notebook's ■, Ctrl-C in a script: ``KeyboardInterrupt``, or the ``SystemExit`` of a
        SIGINT handler that exits, as importing ``dask_jobqueue.runner`` installs) it cancels the run as Cancel
        does, its points kept for the next Compute, waits up to 30 s for it to stop (a second interrupt stops
        waiting) and raises the exception again: the run went on computing after the cell had stopped (trial
        s55)."""
        try:
            self._wait_until(None if timeout is None else time.monotonic() + timeout)
        except BaseException:  # KeyboardInterrupt; or SystemExit, from a SIGINT handler that exits (dask_jobqueue's)
            self._queued_compute = False  # nor does a Compute queued behind a Cancel start
            queued = self._queued_start
            if self.cancel() or queued is not None:
                try:  # a queued run's start sees the cancel of the run it waited for, and starts: it is
                    if queued is not None:  # cancelled once it has
                        queued.join(30)
                        self.cancel()
                    self._wait_until(time.monotonic() + 30)
                except BaseException:  # noqa: BLE001 - a second interrupt: the run stops on its own, as after Cancel
                    pass
            raise
        self._ui.drain()
        return self.surface

    def _wait_until(self, deadline: float | None) -> None:
        while self._busy():
            if deadline is not None and time.monotonic() > deadline:
                break
            # not thread.join: an interrupt inside it marks a thread still running as stopped (CPython 3.11,
            # `_wait_for_tstate_lock`), and `running` read False while the run went on
            time.sleep(0.02)
            self._ui.drain()

    def close(self) -> None:
        """Cancel any computation and close the Dask clusters this Explorer started."""
        if self.running:
            self._cancel.set()
            self._thread.join(30)
        self._closed = True
        self._prefetch_stop.set()
        prefetcher = self._prefetcher
        if prefetcher is not None:
            prefetcher.join(30)
        for client, owned in self._clients.values():
            if owned is not None:
                owned.close()
        self._clients.clear()

    # Everything below `_run` happens on the worker thread; it reaches the state only via `_post`.

    def _run(self, spec: ExplorerSpec, cancel: threading.Event, run_id: int) -> None:
        from ..compute import ResumeMismatch, compute_surface, grid_note_said_here
        from ..evaluate import Cancelled
        from ..runners import ClusterLost

        prepared = shown = None
        try:
            self._await_prefetch(_prepare_key(spec), cancel)
            entry = self._load_entry(spec.model, run_id, cancel)
            data = split_of(entry, spec.model, spec.split)
            searched, t0 = [], time.perf_counter()

            def searching():
                searched.append(True)
                self._post(run_id, "status", lambda: self._say("Finding the range (auto)…"))

            prepared, probed = self._prepare(spec, entry, data, cancel=cancel, searching=searching)
            # said with "Done": the points' seconds left out 3.2 s of a 34 s Compute (trial s38)
            self._range_seconds = time.perf_counter() - t0 if searched else None
            spec = prepared.range.apply(spec)
            self._show_range(spec, run_id)
            # probed and (in-process) evaluated; the user's model stays untouched
            private = probed if probed is not None else copy.deepcopy(prepared.base)
            # the shown run's centre (`centre`): the weights it ran with, not the user's model trained on since
            shown = prepared if self.shelf.zoo else replace(prepared, base=private)
            client, workers, link = self._client(spec.client, run_id)
            seconds_per_point = prepared.range.seconds_per_point
            if seconds_per_point is None:
                try:
                    seconds_per_point = estimate_seconds_per_point(private, data, spec.max_samples, entry.loss_fn)
                except Exception:  # noqa: BLE001 - the model's or loss's own error: compute_surface's checks
                    seconds_per_point = None  # run it first and say it in one line (the panel showed torch's, s36)
            kept = self._resumable
            resume = kept[1] if kept is not None and _same_values(kept[0], spec) else None
            if seconds_per_point is not None:
                check_budget(spec, seconds_per_point, workers, kept=0 if resume is None else resume.n_done)
            self._post(run_id, "status", lambda: self._started(workers, link, spec.client))

            def run(resume):
                with grid_note_said_here():  # the panel's own note (_off_grid_note) says it
                    return compute_surface(
                        private if client is None else prepared.base, data, prepared.directions, x=spec.x,
                        y=spec.y, loss_fn=entry.loss_fn, metrics="auto" if spec.metric else None, client=client,
                        callbacks=[self._tile_callback(run_id, shown)], cancel=cancel,
                        max_samples=spec.max_samples, name=spec.model, resume=resume)

            # the estimate times forward passes only (0.115 ms/point for 0.37 real, s36): the budget holds the run
            # itself to it, which stops as a Cancel does, its points kept for the next Compute
            over = threading.Event()
            timer = threading.Timer(spec.time_budget, lambda: (over.set(), cancel.set()))
            timer.daemon = True
            timer.start()
            try:
                try:
                    surf = run(resume)  # a cancelled run of the same controls goes on: its points are kept
                except ResumeMismatch:  # the user's model or data changed since: every point anew
                    if seconds_per_point is not None:
                        check_budget(spec, seconds_per_point, workers)
                    surf = run(None)
            finally:
                timer.cancel()
            surf = _of_split(surf, spec)
            returned = time.perf_counter()
            note = prepared.range.note + _off_grid_note(spec, prepared.directions.provenance.get("models"))
            budget = spec.time_budget if over.is_set() else None
            self._post(run_id, "end", lambda: self._finished(surf, cancel.is_set(), returned, note, shown, budget))
        except Cancelled as exc:  # before the first point: while loading the model or finding the range
            returned = time.perf_counter()
            loading = exc.args == (_LOADING,)
            self._post(run_id, "end", lambda: self._cancelled_early(returned, loading=loading))
        except ClusterLost as exc:  # the points computed are kept: the next Compute goes on from them
            logger.debug("Explorer computation lost its cluster", exc_info=exc)
            _of_split(getattr(exc, "surface", None), spec)
            self._post(run_id, "end", lambda exc=exc, p=shown: self._lost_cluster(exc, p))
        except Exception as exc:  # one readable line in the panel; the traceback stays in last_error
            logger.debug("Explorer computation failed", exc_info=exc)
            self._post(run_id, "end", lambda exc=exc: self._failed_run(exc))  # bound now: `exc` is unset after except

    def _prepare(self, spec: ExplorerSpec, entry, data, searching: Callable[[], None] | None = None,
                 cancel: threading.Event | None = None) -> tuple[Prepared, Any]:
        """(the directions and range ``spec`` asks for, the copy of the centre model probed for
        the range or None when they were kept); a zoo model's are kept for the next Computes.

        A zoo model never changes once loaded, so the same controls give the same directions
        and range; a user's model may be trained between two Computes, so its are made anew.
        ``searching`` is called before an ``auto_range`` search starts; ``cancel`` stops it
        (`landscape_nb.evaluate.Cancelled`).
        """
        from ..evaluate import EvalSettings
        from ..schemes import make_directions

        key = _prepare_key(spec)
        if key in self._prepared:  # only a zoo model's are kept
            return self._prepared[key], None
        try:
            base, directions = make_directions(
                spec.scheme, entry.model, entry.example, ndim=spec.ndim, norm=spec.norm, ignore=spec.ignore,
                seed=spec.seed, data=None if getattr(entry.example, "train", None) is not None else data,
                loss_fn=entry.loss_fn, path_data=data, path_settings=EvalSettings(max_samples=spec.max_samples))
        except LandscapeError as exc:  # the menu's words, not the API's id ('plane3', trial s47)
            said, label = f"directions {spec.scheme!r}", SCHEME_LABELS.get(spec.scheme)
            if label is None or said not in str(exc):
                raise
            raise LandscapeError(str(exc).replace(said, f"directions '{label}'")) from exc
        if spec.auto_range and searching is not None:
            searching()
        probed = copy.deepcopy(base)  # auto_range moves its weights (and puts them back)
        prepared = Prepared(base, directions, pick_range(spec, probed, data, directions, entry.loss_fn, cancel))
        if self.shelf.zoo:
            while len(self._prepared) >= PREPARED_KEPT:
                self._prepared.pop(next(iter(self._prepared)))
            self._prepared[key] = prepared
        return prepared, probed

    def prefetch(self) -> bool:
        """Prepare the current controls' run in the background (a loaded zoo model only); whether it started.

        With ``auto_range`` on and cheap directions (`PREFETCH_SCHEMES`), the range search
        (most of the wait for a first tile: 0.3 s of 0.5 s for resnet20-digits on 2 cores)
        runs while the panel is read rather than after Compute. It runs when a model is picked,
        when a control the range depends on changes and after a computation (not a cancelled
        one), and evaluates only the zoo's models, never a user's unasked. Compute waits for the
        search of its own controls and stops one for other controls; ``close`` stops it too.
        """
        with self._prefetch_lock:
            spec = None if self._closed or self._prefetcher is not None else self._prefetch_spec()
            if spec is None:
                return False  # one under way looks at the controls again before it ends
            # imported here, not in two threads at once
            from .. import (  # noqa: F401
                autorange,
                compute,
                directions,
                evaluate,
                model_paths,
                schemes,
            )
            from ..process import release_openmp_threads

            release_openmp_threads()  # as in compute(): this thread's idle team would slow the other's ops
            self._prefetch_stop = stop = threading.Event()
            # what it prepares is known before it runs: a Compute pressed before its first step waits for it
            # instead of stopping it as a search for other controls (and searching again itself)
            self._prefetching = _prepare_key(spec)
            self._prefetcher = threading.Thread(target=self._prefetch_run, args=(stop,),
                                                name="landscape_nb-explorer-prefetch", daemon=True)
            self._prefetcher.start()
        return True

    def _prefetch_spec(self, computing_ok: bool = False) -> ExplorerSpec | None:
        """The spec to prepare ahead now, or None (not a loaded zoo model, nothing to search, already
        prepared, or a computation under way unless ``computing_ok``)."""
        if not (self.shelf.zoo and self.auto_range and self.scheme in PREFETCH_SCHEMES
                and self.shelf.ready(self.model_name)) or (self._computing and not computing_ok) or self._closed:
            return None
        try:
            spec = self.spec()
        except LandscapeError:  # controls being typed: Compute says what is wrong
            return None
        return None if _prepare_key(spec) in self._prepared else spec

    def _prefetch_run(self, stop: threading.Event) -> None:
        from ..evaluate import Cancelled

        tried = set()
        while True:
            with self._prefetch_lock:  # deciding to end and ending are one step for prefetch()
                # a Compute pressed since prefetch() started this thread waits for its first round if that is
                # for its controls (``_await_prefetch``): that round goes on while it computes
                spec = None if stop.is_set() else self._prefetch_spec(computing_ok=not tried)
                if spec is not None and self._computing and _prepare_key(spec) != self._prefetching:
                    spec = None  # the controls changed after that Compute: it does not wait for these
                if spec is None or _prepare_key(spec) in tried:
                    self._prefetcher, self._prefetching = None, None
                    return
                self._prefetching = _prepare_key(spec)
            tried.add(self._prefetching)
            try:
                entry = self.shelf[spec.model]
                prepared, _ = self._prepare(spec, entry, split_of(entry, spec.model, spec.split), cancel=stop)
                self._post_preview(spec, prepared)
            except Cancelled:
                pass
            except Exception as exc:  # noqa: BLE001 - Compute prepares again and reports it in the panel
                logger.debug("preparing %s ahead of Compute failed (%s)", spec.model, exc)

    def _post_preview(self, spec: ExplorerSpec, prepared: Prepared) -> None:
        """(prefetch thread) Have the kernel's loop show the range just found in the range boxes (``auto_range``)
        and, before the first Compute, set `preview` to an empty surface over it, if the controls still ask for it.

        The figure then draws the axes' tick labels of that range while the panel is read: in
        software WebGL plotly.js turns each new 3D tick label into triangles (~10 ms a label).
        """
        loop, key = self._main_loop, _prepare_key(spec)
        if loop is None:  # a script: nothing draws
            return

        def show() -> None:
            if self._computing or self._closed:
                return
            try:
                now = self.spec()
            except LandscapeError:  # controls being typed
                return
            if _prepare_key(now) == key:
                found = prepared.range.apply(now)
                if self.surface is None:  # a computed surface stays drawn until the next Compute
                    self.preview = empty_surface(found)
                if now.auto_range:  # the boxes said -1 … 1 under a figure drawn over the range found (trial s46);
                    self._show_found(found)  # after a run, its range while the next one would use another (s60)

        try:
            loop.call_soon_threadsafe(show)
        except RuntimeError:  # that loop has closed
            pass

    def _load_entry(self, name: str, run_id: int, cancel: threading.Event):
        """(worker thread) The shelf's entry for model ``name``, loaded in a thread of its own so that Cancel stops
        the wait at once (`Cancelled` with `_LOADING`): a zoo model's first load trains it, and a Cancel then sat
        at "Cancelling…" for 30-60 s (trial s58). The load goes on and is cached for the next Compute."""
        from ..evaluate import Cancelled

        got: dict = {}

        def load() -> None:
            try:
                got["entry"] = self.shelf.get(name, announce=lambda: self._post(run_id, "status", lambda: self._say(
                    f"Loading {name} (trained on first use, then cached)…")))
            except BaseException as exc:  # noqa: BLE001 - raised again on the run's thread
                got["error"] = exc

        loader = threading.Thread(target=load, name="landscape_nb-explorer-load", daemon=True)
        loader.start()
        while loader.is_alive():
            if cancel.is_set():
                raise Cancelled(_LOADING)
            loader.join(0.05)
        if "error" in got:
            raise got["error"]
        return got["entry"]

    def _await_prefetch(self, key: tuple, cancel: threading.Event) -> None:
        """(worker thread) Let a search for ``key`` end and stop one for other controls; Cancel stops both."""
        from ..evaluate import Cancelled

        with self._prefetch_lock:
            prefetcher = self._prefetcher
            if prefetcher is not None and (self._prefetching != key or key in self._prepared):
                self._prefetch_stop.set()  # it prepares other controls: stopped before its next round of points
        while prefetcher is not None and prefetcher.is_alive():
            if cancel.is_set():
                self._prefetch_stop.set()
            prefetcher.join(0.05)
        if cancel.is_set():
            raise Cancelled()

    def _show_range(self, spec: ExplorerSpec, run_id: int) -> None:
        """Show the range a run computes in the controls (it may come from ``auto_range``)."""
        self._run_spec = spec
        if spec.auto_range:
            self._post(run_id, "status", lambda: self._show_found(spec))

    def _show_found(self, spec: ExplorerSpec) -> None:
        """Put ``spec``'s range, one ``auto_range`` found, in the range controls."""
        shown = {"x_min": spec.x[0], "x_max": spec.x[1]}
        if spec.y is not None:
            shown.update(y_min=spec.y[0], y_max=spec.y[1])
        self.set(**shown)

    def _client(self, key: str | None, run_id: int) -> tuple[Any, int, str]:
        """(client or None, number of workers, dashboard link); clusters are kept for the next Compute."""
        if key is None:
            return None, 1, ""
        if key == "given":
            client = self._given_client
        else:
            if key not in ("local", "cuda"):  # an address: checked again right before connecting
                key = self.addresses.check(key)
            client, _ = self._clients.get(key, (None, None))
            if client is None or getattr(client, "status", "running") != "running":
                from ..cluster import get_client

                what = _starting(key)

                def starting() -> None:
                    self.workers = what
                    self._say(what[0].upper() + what[1:])

                self._post(run_id, "status", starting)
                client, owned = get_client(key)
                self._clients[key] = (client, owned)
        workers = len(client.scheduler_info().get("workers", {}))
        if workers == 0:
            raise LandscapeError(f"the Dask cluster at {key!r} has no workers; start some workers or pick another cluster")
        return client, workers, str(getattr(client, "dashboard_link", "") or "")

    def _workers_before_start(self, key: str | None) -> str:
        """What the status line says of the workers from Compute until the run's cluster is up (`_started`):
        "in-process", else "" (`_client` says the cluster is starting when it starts it), never the workers of
        the run before. Not "starting" from Compute: the model is loaded (a zoo model trained on first use) and
        its range found first, and the line said a cluster was starting all that while (trial s55)."""
        return "in-process" if key is None else ""

    def _tile_callback(self, run_id: int, prepared: Prepared | None = None) -> Callable:
        """A ``compute_surface`` callback posting each partial surface and this session's points per second."""
        counted = [0]  # points computed in this session (a resumed store's points do not count)

        def on_tile(ev) -> None:
            counted[0] += ev.tile.n_points
            snap = _of_split(ev.surface(), self._run_spec)
            rate = counted[0] / ev.elapsed if ev.elapsed > 0 else 0.0
            self._post(run_id, "tile", lambda: self._tile(snap, ev.n_done, rate, prepared))

        return on_tile

    def _post(self, run_id: int, kind: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the UI thread (see `UiQueue`), unless a newer run started meanwhile."""
        def guarded():
            if run_id == self.run_id:  # a stale run's updates are dropped
                fn()

        self._ui.post(kind, guarded)

    # These run on the UI thread.

    def _started(self, workers: int, link: str, key: str | None) -> None:
        self.workers = "in-process" if key is None else f"{workers} worker{'s' * (workers != 1)}"
        self.dashboard_link = link
        if self.status == "starting":
            self.status = "running"
            self._say("Computing…")

    def _tile(self, surf: Surface, n_done: int, rate: float, prepared: Prepared | None = None) -> None:
        self.surface = surf
        self._keep_run(prepared)
        self.n_done = n_done
        self.points_per_s = rate

    def _finished(self, surf: Surface, cancelled: bool, returned: float, note: str = "",
                  prepared: Prepared | None = None, over_budget: float | None = None) -> None:
        """A run's end: ``over_budget`` is the time budget (s) that stopped it, None where it was not."""
        self.surface = surf
        self._keep_run(prepared)
        self.n_done = surf.n_done
        if self._cancel_t0 is not None:
            self.cancel_latency = max(0.0, returned - self._cancel_t0)
        seconds = surf.provenance.get("seconds")
        computed = surf.provenance.get("points_computed")
        if isinstance(seconds, float) and seconds > 0 and isinstance(computed, int) and computed:
            self.points_per_s = computed / seconds  # the run's, as the message's "N points in T s" (the last
            # tile's rate disagreed with it up to 4.7×, trial s47)
        self._resumable = (self._run_spec, surf) if cancelled and not surf.is_complete and surf.n_done else None
        if cancelled and not surf.is_complete:
            self.status = "cancelled"
            stopped = "Cancelled" if over_budget is None else f"Stopped at the time budget of {over_budget:.3g} s"
            more = "" if over_budget is None else (
                " Press Compute to go on from them (the budget counts anew), or raise the time budget." if surf.n_done
                else " The budget is shorter than the first tile takes: raise the time budget.")
            self._say(f"{stopped}: {surf.n_done} of {surf.loss.size} points computed.{more}{self._changed_note()}"
                      f"{self._said_switch_notes()}")
        else:
            self.status = "done"
            finite = surf.loss[np.isfinite(surf.loss)]
            low = f", lowest loss {finite.min():.4g}" if finite.size else ""
            took = f" in {seconds:.3g} s" if isinstance(seconds, float) else ""
            resumed = surf.provenance.get("points_resumed")
            took += f" ({resumed} kept from the cancelled run)" if resumed else ""
            range_s = self._range_seconds
            took += f", after {range_s:.2g} s finding the range" if range_s is not None and took else ""
            spec = self._run_spec
            metric = spec.metric if spec is not None else None
            if metric and metric not in surf.metrics and surf.n_done:  # a regression's MSE: no classes to count
                # why the accuracy was skipped, as compute_surface found it (tuple targets were said to be no
                # class scores, trial s46); "<split>: accuracy" keys too
                data = surf.provenance.get("data")
                said = next((str(v).removeprefix("accuracy skipped: ") for _, v in notes_by_kind(
                    data if isinstance(data, Mapping) else {}).get("accuracy", ())
                    if str(v).startswith("accuracy skipped: ")), None)
                note += (f" No {metric}: {said or 'the model outputs are not class scores (N, C) for its targets'}, "
                         "so only the loss is drawn.")
            self._say(f"Done: {surf.n_done} points{took}{low}.{note}{_caveats(surf)}{self._changed_note()}"
                      f"{self._said_switch_notes()}")
        self._ended(prepare=not cancelled)

    def _said_switch_notes(self) -> str:
        """The notes of the model switches before this run, for its end's message; said, they are dropped."""
        for control, text in self._run_notes.items():
            if self._switch_notes.get(control) == text:
                del self._switch_notes[control]
        return "".join(f" {text}" for text in self._run_notes.values())

    def _changed_note(self) -> str:
        """A sentence when the controls now ask for other values than the run that just ended computed
        (changed during it): the figure is that run's, as its title says, not the panel's."""
        ran = self._run_spec
        try:
            now = self.spec()
        except LandscapeError:  # the panel says what is wrong with them at the next Compute
            return ""
        if ran is None:
            return ""
        names = ["model", "scheme", "norm", "ignore", "seed", "split", "metric", "max_samples", "auto_range"]
        names += ["rise"] if now.auto_range or ran.auto_range else []  # no effect on a typed range
        changed = [n for n in names if getattr(now, n) != getattr(ran, n)]
        if now.grid.shape != ran.grid.shape or not now.auto_range and (now.x, now.y) != (ran.x, ran.y):
            changed.append("grid")
        if not changed:
            return ""
        return (f" The controls changed during the run ({', '.join(changed)}): this surface is of the settings "
                "Compute was pressed with, as the figure's title says; press Compute for the new ones.")

    def _cancelled_early(self, returned: float, loading: bool = False) -> None:
        if self._cancel_t0 is not None:
            self.cancel_latency = max(0.0, returned - self._cancel_t0)
        # the run shown before is shown again, with its directions: an empty grid titled as the cancelled run's
        # replaced a finished surface, and Export HTML wrote that (trial s34)
        back = self._before is not None
        if back:
            self._show_before()
        self.status = "cancelled"
        kept = self._resumable[1].n_done if self._resumable else 0
        self._say(("Cancelled while loading the model (its first load trains it, which goes on in the background: "
                   "the next Compute uses it once cached): no new points computed" if loading else
                   "Cancelled while finding the range: no new points computed")
                  + (f"; the {kept} of the cancelled run are kept" if kept else "")
                  + ("; the figure shows the run before again." if back else "."))
        self._ended(prepare=False)

    def _lost_cluster(self, exc, prepared: Prepared | None = None) -> None:
        """A lost Dask cluster: its partial surface is shown and kept, as after Cancel."""
        surf = getattr(exc, "surface", None)
        if surf is None or not surf.n_done:
            self._failed_run(exc)
            return
        self._resumable = (self._run_spec, surf)
        self.surface, self.n_done = surf, surf.n_done
        self._keep_run(prepared)
        self.last_error = exc
        self.status = "error"
        self._say(f"{getattr(exc, 'reason', exc)}. The {surf.n_done} of {surf.loss.size} points computed are kept: "
                  "Compute goes on from them (on this cluster once it is back, or another).", "error")
        self._ended(prepare=False)

    def _keep_run(self, prepared: Prepared | None) -> None:
        """The shown run's directions and the model at its centre (see ``directions``)."""
        if prepared is not None:
            self.directions, self.centre = prepared.directions, prepared.base

    def _show_before(self) -> None:
        """The surface shown when Compute was pressed, with its directions, centre and counts, shown again."""
        self.surface = self._before
        self.directions, self.centre = self._before_run
        self.n_done = 0 if self.surface is None else self.surface.n_done
        self.n_points = 0 if self.surface is None else self.surface.loss.size  # "341 / 31 points" otherwise

    def _failed_run(self, exc: BaseException) -> None:
        self._show_before()  # a refused or failed run's empty or partial values are no result
        self.status = "error"
        self._fail(exc)
        self._ended()

    def _ended(self, prepare: bool = True) -> None:
        """A run's end is applied: controls changed meanwhile are prepared for the next Compute
        (not after Cancel: that stops the work); a cluster still said to be starting never came up."""
        self._computing = False
        if self.workers.endswith("…"):
            self.workers = ""
        if self._queued_compute:  # Compute was pressed while the Cancel took effect
            self._queued_compute = False
            self._start_after(self._thread)
        elif prepare:
            self.prefetch()

    def _start_after(self, thread: threading.Thread | None) -> None:
        """Compute once ``thread`` (the run that just ended, exiting) has: here on the UI thread; applied on that
        thread itself (no event loop), from a short helper thread."""
        if thread is not None and thread is threading.current_thread():
            def start() -> None:
                try:
                    thread.join(30)
                    self.compute()
                finally:
                    self._queued_start = None

            self._queued_start = threading.Thread(target=start, name="landscape_nb-queued", daemon=True)
            self._queued_start.start()
            return
        if thread is not None:
            thread.join(30)
        self.compute()

    def _fail(self, exc: BaseException) -> None:
        """Show ``exc`` as one readable line (the exception itself is kept in ``last_error``)."""
        self.last_error = exc
        if isinstance(exc, (LandscapeError, t.TraitError)):
            from ..runners import TILES_KEPT, ClusterLost

            # the API's words for a store the panel does not have, or for the points kept in the exception,
            # which the panel does not resume from: its points are dropped (trials s34, s39)
            said = (f"{exc.reason}; {TILES_KEPT}" if hasattr(exc, "reason") and hasattr(exc, "surface")
                    and not isinstance(exc, ClusterLost) else str(exc))
            text = said.replace(TILES_KEPT, "the points computed before it are not kept (the panel keeps no store)")
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
        return plot.live(self.surface, log=self.log_scale, title=figure_title(self.surface))

    def export_html(self, path: str | None = None, figure=None) -> Path:
        """Write the figure (default: the current surface's) as one standalone offline HTML file.

        ``path`` (default: the "export to" box) must end in .html and lie inside ``export_dir``
        (a relative path is taken from there); otherwise a `LandscapeError` and nothing is written.
        """
        from ..plot._common import note_sources
        from ..plot.export import export_html, mark_partial

        target = self.exports.target(self.export_path if path is None else path, HTML_SUFFIXES)
        fig = mark_partial(figure if figure is not None else self.figure(), self.surface)
        if figure is not None and self.surface is not None:  # the live figure's meta named no run (trial s46): a
            import plotly.graph_objects as go  # copy carries this surface's provenance, as plot's figures do

            fig = go.Figure(fig) if fig is figure else fig
            note_sources(fig, [self.surface])
        out = export_html(fig, target)
        self._say(f"Wrote {out} ({out.stat().st_size / 1e6:.1f} MB, standalone, opens offline){self._partial_words()}.")
        return out

    def _partial_words(self) -> str:
        """What an export of a surface not complete holds (the message said nothing of it, trial s60)."""
        surf = self.surface
        if surf is None or surf.is_complete:
            return ""
        return f"; partial: {surf.n_done:,} of {surf.loss.size:,} points, as the figure says above its plot"

    def export_image(self, path: str | None = None, figure=None) -> Path:
        """Write the figure as a PNG (or the suffix's format) through kaleido and Chromium.

        ``path`` defaults to the "export to" box with the suffix .png; it is confined to
        ``export_dir`` as in `export_html`.
        """
        from ..plot.export import export_image, mark_partial

        target = self.exports.target(_with_suffix(self.export_path, ".png") if path is None else path, IMAGE_SUFFIXES)
        fig = mark_partial(figure if figure is not None else self.figure(), self.surface)
        out = export_image(fig, target, width=1100, height=520)
        self._say(f"Wrote {out}{self._partial_words()}.")
        return out


def _same_values(a: ExplorerSpec, b: ExplorerSpec) -> bool:
    """Whether two requests ask for the same values (the log scale, time budget and cluster aside)."""
    return replace(a, log=b.log, time_budget=b.time_budget, client=b.client) == b


def _with_suffix(text: str, suffix: str) -> str:
    try:
        return str(Path(text.strip()).with_suffix(suffix))
    except ValueError:  # no file name to put a suffix on: the export directory says what is wrong
        return text


_RESULT_TRAITS = {"status", "message", "message_kind", "n_done", "n_points", "points_per_s", "workers",
                  "dashboard_link", "surface", "run_id", "model_names", "schemes", "splits", "preview"}
_CONTROL_TRAITS = set(ExplorerState.class_trait_names()) - _RESULT_TRAITS
