"""What one press of Compute asks for (`ExplorerSpec`), and the pure steps around it.

The empty surface the live figure starts from, the time-budget check and the range the
"auto" option picks (the scheme's own range, else `landscape_nb.autorange.auto_range`)
depend only on the spec, the model and the directions, not on widgets or threads.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import LandscapeError
from ..grid import Grid, range_through
from ..plot.figures import run_title as figure_title  # noqa: F401 (the panel's name for it)
from ..schemes import SCHEME_READS
from ..surface import Surface
from .budget import check_time_budget

AUTO_RANGE_TOL = 0.05  # relative accuracy of the auto range's edges: a plot range, not a measurement


@dataclass(frozen=True)
class ExplorerSpec:
    """What one press of Compute computes: everything the controls say, validated.

    ``x`` and ``y`` are ``(start, stop, points)`` (``y`` None for a line); ``grid`` is the
    `landscape_nb.grid.Grid` they describe, made (and checked: a `LandscapeError` says what
    is wrong with a range or resolution) when the spec is. With ``auto_range``, the range
    is replaced when the run starts (see `pick_range`); ``rise`` is the factor over the
    centre's loss that marks the edge of an automatic range.
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
    rise: float = 5.0
    grid: Grid = field(init=False, repr=False, compare=False)  # from x and y; validates them

    def __post_init__(self):
        object.__setattr__(self, "grid", Grid.make(self.x, self.y))

    @property
    def ndim(self) -> int:
        return self.grid.ndim

    @property
    def n_points(self) -> int:
        return self.grid.n_points


SCHEME_LABELS = {
    "random": "random (normalized)",
    "random-orthogonal": "random, orthogonalized",
    "interpolate": "interpolation between two models (1D)",
    "plane3": "plane through three models (2D)",
    "pca": "PCA of the training trajectory",
    "hessian": "Hessian eigenvectors",
}
MODEL_SCHEMES = ("interpolate", "plane3")  # their axes run from the model at 0 to another model at 1
_AXES = {"interpolate": "its axis runs between the two models as they are",
         "plane3": "its axes run between the three models as they are",
         "pca": "its axes are the principal components of the training trajectory",
         "hessian": "its axes are unit Hessian eigenvectors"}


def ignored_controls(scheme: str) -> dict[str, str]:
    """The normalization, biasbn and seed controls (``"norm"``, ``"ignore"``, ``"seed"``) when ``scheme`` does not
    read them (``schemes.SCHEME_READS``), each with a sentence why: the panel disables them. Only random directions
    are normalized; only they and the PCA of a trajectory zero biases and BatchNorm (``ignore``); the seed draws random
    directions and starts the Hessian's Lanczos iteration (its eigenvectors agree to its tolerance whatever the
    seed), while the schemes between models and the PCA of a trajectory draw nothing at random."""
    reads, label = SCHEME_READS.get(scheme, ("norm", "ignore", "seed")), SCHEME_LABELS.get(scheme, scheme)
    why = {"norm": f"Not used by {label}: {_AXES.get(scheme, 'its axes are given')}, not normalized",
           "ignore": f"Not used by {label}: {_AXES.get(scheme, 'its axes are given')}, biases and BatchNorm included",
           "seed": f"Not used by {label}: nothing in it is drawn at random"}
    return {name: text for name, text in why.items() if name not in reads}


def shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(n) for n in reversed(shape))  # x first: "201×101"


def grid_text(spec: ExplorerSpec) -> str:
    return shape_text(spec.grid.shape)


def empty_surface(spec: ExplorerSpec) -> Surface:
    """All points missing: what the live figure shows before the first tile."""
    grid, shape = spec.grid, spec.grid.shape
    metrics = {spec.metric: np.full(shape, np.nan)} if spec.metric else {}
    return Surface(x=grid.x.values(), y=None if grid.y is None else grid.y.values(), loss=np.full(shape, np.nan),
                   metrics=metrics, done=np.zeros(shape, bool),
                   provenance={"scheme": spec.scheme, "label": spec.model, "split": spec.split,
                               "directions": {"seed": spec.seed, "norm": spec.norm, "ignore": spec.ignore}})


def check_budget(spec: ExplorerSpec, seconds_per_point: float, workers: int, kept: int = 0) -> None:
    """Refuse a run whose points still to compute (all but the ``kept`` ones of a cancelled run) exceed the
    time budget (`LandscapeError`, with what would fit)."""
    over = check_time_budget(spec.n_points - kept, seconds_per_point, workers, spec.time_budget)
    if over is not None:
        text = grid_text(spec) + (f" less the {kept} points kept" if kept else "")
        raise LandscapeError(over.message(text, spec.ndim))


@dataclass(frozen=True)
class RangeChoice:
    """The range ``auto_range`` chose for one spec's model and directions (see `pick_range`).

    ``x``/``y`` are ``(start, stop)``, or None where the typed range stays; ``seconds_per_point``
    is the measured cost of a point when the search timed some, and ``note`` a sentence for the
    message line ("" when there is nothing to say).
    """

    x: tuple[float, float] | None = None
    y: tuple[float, float] | None = None
    seconds_per_point: float | None = None
    note: str = ""

    def apply(self, spec: ExplorerSpec) -> ExplorerSpec:
        """``spec`` with this range and ``spec``'s own resolution, moved (`landscape_nb.grid.range_through`)
        so that its points include the model at 0, and for the schemes between models (interpolation, plane
        through three) the other models at 1: an asymmetric range would otherwise miss them."""
        unit = spec.scheme in MODEL_SCHEMES

        def snapped(chosen, axis):
            return (*range_through(*chosen, axis[2], unit=unit), axis[2]) if chosen is not None else axis

        return replace(spec, x=snapped(self.x, spec.x), y=None if spec.y is None else snapped(self.y, spec.y))


def pick_range(spec: ExplorerSpec, model, data, directions, loss_fn=None, cancel=None) -> RangeChoice:
    """The range ``auto_range`` chooses for ``spec`` (`RangeChoice.apply` puts it in the spec).

    The range a scheme suggests (``directions.provenance["x_range"]``: the interpolation's
    minimizers, the plane's three models, the PCA path) wins; otherwise, per direction and
    sign, the distance at which the loss reaches ``spec.rise`` × the centre's loss
    (`landscape_nb.autorange.auto_range`, on the same samples as the surface). Its points
    are timed, so the time-budget check needs no separate estimate. Where the loss at the
    centre is not positive (no factor over it means anything), the typed range stays and the
    note says so. Without ``auto_range`` the typed range stays. ``cancel`` (a
    ``threading.Event``) stops the search: ``landscape_nb.evaluate.Cancelled`` is raised.
    """
    if not spec.auto_range:
        return RangeChoice()
    prov = directions.provenance
    x, y = prov.get("x_range"), prov.get("y_range") if spec.y is not None else None
    seconds_per_point, note = None, ""
    if x is None and y is None:
        from ..autorange import auto_range

        t0 = time.perf_counter()
        try:
            found = auto_range(model, data, directions, rise=spec.rise, loss_fn=loss_fn, tol=AUTO_RANGE_TOL,
                               max_samples=spec.max_samples, cancel=cancel)
        except LandscapeError as exc:
            return RangeChoice(note=f" (auto range not used: {exc})")
        seconds_per_point = found.seconds_per_point  # its setup and tuning, paid once, left out
        if not seconds_per_point > 0:  # nothing timed after the centre
            seconds_per_point = (time.perf_counter() - t0) / found.n_points
        x = found.ranges[0]
        y = found.ranges[1] if spec.y is not None else None
        if any(any(sides) for sides in found.undefined[: spec.ndim]):
            note = (f" (on some side the loss turns NaN before reaching {spec.rise:g}× the centre's loss, so the "
                    "range stops at the last finite point found there)")
        elif not all(all(sides) for sides in found.reached[: spec.ndim]):
            note = (f" (on some side the loss stays below {spec.rise:g}× the centre's loss as far as auto_range "
                    "looks, so the range stops there)")
    return RangeChoice(x=None if x is None else (float(x[0]), float(x[1])),
                       y=None if y is None else (float(y[0]), float(y[1])),
                       seconds_per_point=seconds_per_point, note=note)
