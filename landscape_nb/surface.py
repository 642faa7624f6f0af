"""The result of a landscape computation: coordinates, loss and metric values.

A `Surface` is a plain, frozen container of numpy arrays. It knows nothing of
torch, Dask or Plotly, so plots and stores can use it anywhere.
"""
from __future__ import annotations

import dataclasses
import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from . import persistence as _persistence
from . import sharpness as _sharpness
from .errors import LandscapeError, warn_user

#: the zoo's models by object, with their names ("resnet20-digits", "mlp-digits small-batch"): the label of their
#: surfaces where no ``name=`` is given (two ResNets compared were both titled "ResNet", trial s57). By object, not
#: an attribute: a copy moved elsewhere (copy.deepcopy) is no longer the zoo's model (re-trial s57). Each maps to
#: (name, a zero-argument callable: whether its weights are still those zoo.load gave it), read by `zoo_label`
MODEL_NAMES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: keys of ``provenance["data"]`` saying the model's outputs (`statecheck.random_outputs_note`), or the loss or
#: a metric (`statecheck.random_values_note`), sample at random: every point is another draw
RANDOM_OUTPUTS = "random outputs"
RANDOM_VALUES = "random loss"
#: key of ``provenance["data"]``: the values are weighted means over batches (of the size it holds), not the whole
#: set's, for a loss or outputs that depend on how the samples are batched (warned by ``compute_surface``)
BATCH_MEANS = "batch means"


def notes_by_kind(data: Mapping) -> dict[str, list[tuple[str, Any]]]:
    """``provenance["data"]`` notes by their kind, each with the split it is of: a run over named splits keys them
    ``"<split>: <kind>"`` (``splits.SplitEvaluators.notes``), a run over one set ``"<kind>"`` (split ""). For the
    readers that warn of or draw a kind whatever the split (``compute_surface``, ``Surface.sampling_note``)."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for key, value in data.items():
        split, _, kind = str(key).rpartition(": ")
        out.setdefault(kind, []).append((split, value))
    return out


def metric_splits(metric_names: Iterable[str]) -> list[str]:
    """The splits a surface computed over named splits holds (``splits.column_names``): each ``<split>`` whose
    ``"<split>_loss"`` is among ``metric_names``, in their order (what ``plot.line_splits`` draws)."""
    return [m[: -len("_loss")] for m in metric_names if m.endswith("_loss")]


# Surface.centre_diverged; "the loss function or the data" missed the model's own weights (trial s55: a forward
# of exp(200·s) was inf at the model)
CENTRE_DIVERGED = ("the loss is NaN or inf at the model itself (0 on every axis), so the model's weights, the loss "
                   "function or the data give it, not the range: check model(x) and loss_fn(model(x), y) on each "
                   "batch of the data with the model alone (e.g. an exp that overflows in forward, or a sample whose "
                   "attention mask hides every token, gives inf or NaN)")


def zoo_label(model, *, unchanged_only: bool = False) -> str | None:
    """The zoo's name of ``model`` (``zoo.load``'s model or minimizers), "NAME (weights changed since zoo.load)"
    where its weights were changed in place since (a fine-tuned zoo model kept the zoo's name, re-trial s58; None
    then with ``unchanged_only``), None for other models."""
    entry = MODEL_NAMES.get(model)
    if entry is None:
        return None
    name, unchanged = entry
    if unchanged():
        return name
    return None if unchanged_only else f"{name} (weights changed since zoo.load)"


#: the symbols of the grid's axes where a label does not begin with one (``Surface.slice``, ``plot.volume_slices``)
AXIS_SYMBOLS = {"x": "α", "y": "β", "z": "γ"}


def axis_symbol(label: str | None, axis: str) -> str:
    """The symbol a label of the grid's ``axis`` begins with, a word alone or before a parenthesis ("γ" of "γ
    (random direction 3, filter-normalized)", "PC1" of "PC1 (83% of variance)"), else the axis's `AXIS_SYMBOLS`
    one: a Hessian direction's "Hessian eigenvector λ_max3 = 1.146" titled its planes "Hessian = −1" (trial s58)."""
    words = str(label or "").split(" ")
    return words[0] if words[0] and (len(words) == 1 or words[1].startswith("(")) else AXIS_SYMBOLS.get(axis, axis)


@dataclass(frozen=True, eq=False)
class Surface:
    """Loss (and metrics) over a 1D line, a 2D plane or a 3D volume.

    ``loss[j, i]`` is the value at ``(x[i], y[j])`` (2D), ``loss[i]`` at ``x[i]`` (1D) and
    ``loss[k, j, i]`` at ``(x[i], y[j], z[k])`` (3D, three directions; ``slice`` cuts a plane).
    Points not computed yet (a partial surface, while tiles stream in) are NaN and
    ``done`` is False there; a computed point may still be NaN/inf when the loss diverged.

    ``spec`` is the JSON description of everything that defines the values (model,
    data, directions, grid, evaluation settings); ``provenance`` holds descriptive
    extras (direction scheme and labels, versions, timings).

    >>> surf = lnb.compute_surface(model, data, lnb.random_directions(model), x=(-1, 1, 51), y=(-1, 1, 51))
    >>> surf.loss.shape, surf.x_label, surf.sharpness()["x"].curvature

    Parameters
    ----------
    x : numpy.ndarray
        Coordinates along direction 1, shape (n_x,), in direction units (the
        coefficient α of ``θ + α·d₁``).
    y : numpy.ndarray or None
        Coordinates along direction 2, shape (n_y,); None for a 1D surface.
    loss : numpy.ndarray
        Mean loss per point, shape (n_y, n_x) for a plane, (n_x,) for a line or
        (n_z, n_y, n_x) for a volume, in the units of the loss function.
    metrics : mapping of str to numpy.ndarray, optional
        Other quantities per point (e.g. ``"accuracy"``), each shaped like ``loss``.
    done : numpy.ndarray of bool, optional
        Which points were computed, shaped like ``loss``; None means all of them.
    spec : mapping, optional
        What defines the values (JSON-friendly); its hash keys the store.
    provenance : mapping, optional
        Descriptive extras: ``scheme``, ``label``, ``x_label``/``y_label``/``z_label``, timings.
    z : numpy.ndarray or None, optional
        Coordinates along direction 3, shape (n_z,), for a volume; None otherwise
        (keyword-only in practice: it comes last so older positional calls still fit).

    Raises
    ------
    LandscapeError
        From ``values`` (an unknown quantity) and ``check`` (arrays that do not fit
        the grid); the constructor itself does not validate, so that a partial
        surface can be built cheaply while tiles stream in.

    References
    ----------
    H. Li, Z. Xu, G. Taylor, C. Studer and T. Goldstein, "Visualizing the Loss
    Landscape of Neural Nets", NeurIPS 2018.
    """

    x: np.ndarray
    y: np.ndarray | None
    loss: np.ndarray
    metrics: Mapping[str, np.ndarray] = field(default_factory=dict)
    done: np.ndarray | None = None
    spec: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    z: np.ndarray | None = None

    @classmethod
    def empty(cls, grid: Any, metric_names: Iterable[str] = ()) -> "Surface":
        """A surface with every point missing (NaN, not done): what a live figure shows before the first tile.

        >>> Surface.empty(Grid.make((-1, 1, 51), (-1, 1, 51)), ["accuracy"]).with_provenance(label="mlp")

        Parameters
        ----------
        grid : Grid
            A ``landscape_nb.grid.Grid`` (its ``x``, ``y`` and ``z`` axes' ``values()``;
            ``y`` None for a line, ``z`` None but for a volume). Taken by duck typing:
            surface and grid are sibling modules and do not import each other.
        metric_names : iterable of str, optional
            Metrics to hold, each a NaN array shaped like ``loss``.

        Returns
        -------
        Surface
            ``loss`` and metrics of shape (n_y, n_x), (n_x,) or (n_z, n_y, n_x), all NaN,
            and ``done`` all False; empty ``spec`` and ``provenance``.
        """
        x = np.asarray(grid.x.values(), float)
        y = None if grid.y is None else np.asarray(grid.y.values(), float)
        z_axis = getattr(grid, "z", None)
        z = None if z_axis is None else np.asarray(z_axis.values(), float)
        shape = (x.size,) if y is None else (y.size, x.size) if z is None else (z.size, y.size, x.size)
        metrics = {str(m): np.full(shape, np.nan) for m in metric_names}
        return cls(x=x, y=y, loss=np.full(shape, np.nan), metrics=metrics, done=np.zeros(shape, bool), z=z)

    def with_provenance(self, **entries: Any) -> "Surface":
        """The same arrays with ``entries`` added to (or replacing keys of) ``provenance``.

        >>> surf = surf.with_provenance(label="straight line", x_label="t (a → b)")

        Parameters
        ----------
        **entries
            Provenance keys and their values (labels, scheme, notes).

        Returns
        -------
        Surface
            A new surface; the arrays are shared, not copied, and this one is unchanged.
        """
        return dataclasses.replace(self, provenance={**self.provenance, **entries})

    def check(self, ndim: int | None = None, *, where: str = "Surface") -> "Surface":
        """Check the arrays fit the grid (and, with ``ndim``, the dimension); return ``self``.

        >>> surf.check(ndim=2, where="plot.contour")

        Parameters
        ----------
        ndim : {1, 2, 3, None}, optional
            The dimension the caller needs; None accepts any.
        where : str, optional
            The caller, named at the start of every message (``"plot.contour"``).

        Returns
        -------
        Surface
            ``self``, so that a check can be chained.

        Raises
        ------
        LandscapeError
            A surface of another dimension (the message names the plot that fits
            it), or ``loss`` or a metric whose shape is not (len(y), len(x)) for a
            plane, (len(x),) for a line or (len(z), len(y), len(x)) for a volume (a
            transposed array is named as such).
        """
        if ndim is not None and self.ndim != ndim:
            fix = {
                1: "use plot.line() for 1D surfaces",
                2: "use plot.contour(), plot.heatmap() or plot.surface() for 2D surfaces",
                3: "use plot.volume() for 3D surfaces, or surface.slice(axis='z', index=k) for a plane through one",
            }[self.ndim]
            raise LandscapeError(
                f"{where}: got a {self.ndim}D surface (loss shape {self.shape}); expected a {ndim}D "
                f"surface; {fix}."
            )
        x = np.asarray(self.x)
        if self.ndim == 1:
            expected, dims = (x.size,), "(len(x),)"
            order = "loss[i] must be at x[i]"
        elif self.ndim == 3:
            expected, dims = (np.asarray(self.z).size, np.asarray(self.y).size, x.size), "(len(z), len(y), len(x))"
            order = "loss[k, j, i] must be at (x[i], y[j], z[k])"
        else:
            expected, dims = (np.asarray(self.y).size, x.size), "(len(y), len(x))"
            order = "loss[j, i] must be at (x[i], y[j])"
        arrays = {"loss": self.loss, **dict(self.metrics)}
        for name, arr in arrays.items():
            shape = np.shape(arr)
            if shape != expected:
                hint = " (it looks transposed)" if shape == expected[::-1] else ""
                raise LandscapeError(
                    f"{where}: {name!r} has shape {shape}{hint}; expected {expected} = {dims} "
                    f"for this grid; {order}."
                )
        return self

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2 if self.z is None else 3

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.loss.shape)

    @property
    def done_mask(self) -> np.ndarray:
        if self.done is None:
            return np.ones(self.loss.shape, dtype=bool)
        return self.done

    @property
    def n_done(self) -> int:
        return int(self.done_mask.sum())

    @property
    def is_complete(self) -> bool:
        return bool(self.done_mask.all())

    @property
    def complete(self) -> bool:
        """Whether every grid point was computed; False for a cancelled run or one loaded mid-way.

        ``compute_surface`` returns an incomplete surface only when the user cancelled it
        (``provenance["cancelled"]``); a run that loses its cluster raises instead.
        """
        return self.is_complete

    @property
    def n_missing(self) -> int:
        """How many grid points were not computed (NaN in ``loss`` with ``done`` False)."""
        return int(self.done_mask.size - self.n_done)

    @property
    def n_diverged(self) -> int:
        """How many computed grid points have a NaN or infinite loss (gaps in a figure)."""
        return int((self.done_mask & ~np.isfinite(self.loss)).sum())

    @property
    def centre_index(self) -> tuple[int, ...] | None:
        """The index into ``loss`` (``(z, y, x)`` order) of the grid point at 0 on every axis (the model
        itself), None where the grid holds no such point."""
        axes = [self.x] + ([] if self.ndim < 2 else [self.y]) + ([] if self.ndim < 3 else [self.z])
        hits = [np.flatnonzero(np.asarray(a, float) == 0.0) for a in axes]
        if any(h.size == 0 for h in hits):
            return None
        return tuple(int(h[0]) for h in reversed(hits))

    @property
    def centre_diverged(self) -> bool:
        """Whether the grid point at 0 on every axis (the model itself, where the grid holds it) was computed
        and has a NaN or infinite loss: then the model's weights, the loss function or the data give it, and no
        range helps."""
        at = self.centre_index
        return at is not None and bool(self.done_mask[at] and not np.isfinite(self.loss[at]))

    @property
    def sampling_note(self) -> str:
        """What a figure of this surface says when the model, the loss or a metric sampled at random as it was
        computed (``provenance["data"]``, warned by ``compute_surface``): each point is another random draw, so
        its bumps may be noise, not the landscape's (a trial's, s39, two runs of one line differed by 13 %); and
        when the values are means over batches of a loss that depends on the batching (``BATCH_MEANS``). "" if
        neither."""
        data = self.provenance.get("data")
        if not isinstance(data, Mapping):
            return ""
        kinds = {kind: [str(v) for _, v in notes if v] for kind, notes in notes_by_kind(data).items()}
        who = ["the model"] if kinds.get(RANDOM_OUTPUTS) else []
        if kinds.get(RANDOM_VALUES):
            who.append("the loss" if any(v.startswith("loss_fn") for v in kinds[RANDOM_VALUES]) else "a metric")
        said = [(f"noisy: {' and '.join(who)} sample{'s' if len(who) == 1 else ''} at random, so each point is "
                 "another draw (provenance['data'] says more)")] if who else []
        batched: dict[str, list[str]] = {}  # who -> "batches of N" (stores before s42: "batches of N", the loss's)
        for split, text in notes_by_kind(data).get(BATCH_MEANS, []):
            who, _, size = str(text).rpartition(": ")
            batched.setdefault(who or "the loss", []).append(f"{size}{f' ({split})' if split else ''}")
        for who, sizes in batched.items():  # a figure of batch means read as the whole set's (trial s41: 27 % below
            values = "each value" if who == "the loss" else "each of its values"  # it); a metric's named (s42)
            said.append(f"batch means: {who} depends on how the samples are batched, and {values} is the mean over "
                        f"{' or '.join(dict.fromkeys(sizes))}, not the whole set's (provenance['data'] says more)")
        return "; ".join(said)

    @property
    def divergence_note(self) -> str:
        """Why computed points may be NaN other than a diverging loss, for warnings: directions from a file or
        the user that move BatchNorm ``running_var`` leave it negative where a point makes it so; "" if none."""
        rule = str(self.provenance.get("running_var", ""))  # compute_surface's rule for this surface
        return rule if rule.startswith("NaN") else ""

    @property
    def x_label(self) -> str:
        return str(self.provenance.get("x_label", "α (direction 1)"))

    @property
    def y_label(self) -> str:
        return str(self.provenance.get("y_label", "β (direction 2)"))

    @property
    def z_label(self) -> str:
        return str(self.provenance.get("z_label", "γ (direction 3)"))

    def slice(self, axis: str = "z", *, index: int | None = None, value: float | None = None) -> "Surface":
        """The plane through a volume at one grid index (or the grid value nearest ``value``).

        >>> plane = vol.slice(axis="z", value=0.0)     # the (x, y) plane at γ ≈ 0
        >>> lnb.plot.contour(plane)

        Parameters
        ----------
        axis : {"x", "y", "z"}
            The axis held fixed. The remaining two become the plane's ``x`` and ``y`` in
            their order (x, y, z): fixing ``"x"`` gives a plane over (y, z), fixing ``"y"``
            one over (x, z).
        index : int, optional
            Grid index along ``axis`` (negative counts from the end).
        value : float, optional
            A coordinate along ``axis`` (direction units) within the grid's range (at most
            half a grid step beyond its ends); the nearest grid value is used. Give exactly
            one of ``index`` and ``value``.

        Returns
        -------
        Surface
            A 2D surface: ``loss`` and metrics of shape (n_b, n_a) for the two remaining
            axes a, b; ``done``, ``spec`` and ``provenance`` carried over, the axis labels
            moved with their axes, and ``provenance["slice"] = {"axis", "index", "value", "symbol"}`` (its figures'
            default title: "the plane γ = 0.5 of a volume (the model, at γ = 0, is not on it)").

        Raises
        ------
        LandscapeError
            Not a 3D surface, an unknown axis, both or neither of ``index`` and
            ``value``, an index outside the grid, or a value outside the axis' range
            (more than half a grid step beyond its ends) or not a number.
        """
        if self.ndim != 3:
            raise LandscapeError(f"slice() of a {self.ndim}D surface; expected a 3D surface (three directions, "
                                 "compute_surface(..., x=, y=, z=))")
        axes = {"x": (2, self.x), "y": (1, self.y), "z": (0, self.z)}
        if axis not in axes:
            raise LandscapeError(f"axis={axis!r}; expected one of 'x', 'y', 'z'")
        if (index is None) == (value is None):
            raise LandscapeError(f"slice(axis={axis!r}, index={index!r}, value={value!r}); give exactly one of "
                                 "index= (a grid index) or value= (a coordinate)")
        dim, coords = axes[axis]
        coords = np.asarray(coords, float)
        if value is not None:
            lo, hi = float(coords.min()), float(coords.max())
            half = 0.5 * (hi - lo) / max(coords.size - 1, 1)
            try:
                v = float(value)
            except (TypeError, ValueError):
                v = math.nan
            if not lo - half <= v <= hi + half:  # far outside: the edge plane would pass for the one asked for
                raise LandscapeError(
                    f"value={value!r} along {axis}, whose grid runs {lo:g}..{hi:g} ({coords.size} values); expected a "
                    f"coordinate within the grid (at most half a step, {half:g}, beyond its ends): pass a value in "
                    f"{lo:g}..{hi:g}, or index= (e.g. index=-1 for the last plane)")
            index = int(np.argmin(np.abs(coords - v)))
            if abs(coords[index] - v) > 2e-3 * half:  # 0.5 asked, 0.667 drawn: said; 0.1667 typed from a tick
                # label for 1/6 is that plane (trial s35)
                warn_user(f"landscape_nb: slice(axis={axis!r}, value={value!r}): no grid plane there; the nearest, {axis} = "
                          f"{coords[index]:.6g} (index {index}), is drawn. The grid's {axis} values: "
                          f"{', '.join(f'{c:.4g}' for c in coords[:12])}{' ...' if coords.size > 12 else ''}")
        elif isinstance(index, bool) or not isinstance(index, (int, np.integer)):  # 1.0 or True read as a plane
            raise LandscapeError(f"index={index!r} along {axis}; expected an integer grid index (value= takes a "
                                 "coordinate)")
        if not -coords.size <= int(index) < coords.size:
            raise LandscapeError(f"index={index} along {axis} with {coords.size} grid values; expected "
                                 f"{-coords.size} ≤ index < {coords.size}")
        index = int(index) % coords.size
        take = lambda a: np.take(np.asarray(a), index, axis=dim)  # noqa: E731
        kept = [a for a in ("x", "y", "z") if a != axis]
        labels = {"x": self.x_label, "y": self.y_label, "z": self.z_label}
        at = float(coords[index])
        symbol = axis_symbol(labels[axis], axis)  # "γ": its figures' default title names
        prov = {**self.provenance, "x_label": labels[kept[0]], "y_label": labels[kept[1]],  # the plane (trial s57)
                "slice": {"axis": axis, "index": index, "value": at, "symbol": symbol}}
        prov.pop("z_label", None)
        return Surface(x=np.asarray(getattr(self, kept[0])), y=np.asarray(getattr(self, kept[1])),
                       loss=take(self.loss), metrics={k: take(v) for k, v in self.metrics.items()},
                       done=None if self.done is None else take(self.done), spec=dict(self.spec), provenance=prov)

    def values(self, name: str = "loss") -> np.ndarray:
        """The array for ``"loss"`` or a metric name."""
        if name == "loss":
            return self.loss
        if name not in self.metrics:
            raise LandscapeError(
                f"surface has no quantity {name!r}; expected 'loss' or one of {sorted(self.metrics)}"
            )
        return self.metrics[name]

    def sharpness(self, radius: float | None = None) -> dict:
        """Loss increase at ``radius`` and curvature at the centre along each axis
        (``{"x": AxisSharpness, "y": ...}``; see ``landscape_nb.sharpness.sharpness``)."""
        if self.ndim == 3:
            raise LandscapeError("sharpness() of a 3D surface; take a plane first, e.g. "
                                 "surf.slice(axis='z', value=0).sharpness()")
        cut = self.provenance.get("slice")
        if isinstance(cut, Mapping) and cut.get("value") not in (None, 0, 0.0):  # its centre is not the model (trial
            axis, value = cut.get("axis", "z"), float(cut["value"])  # s57: read around (0, 0, 0.5), no word)
            raise LandscapeError(
                f"sharpness() of the plane {axis} = {value:g} of a volume: its centre (0, 0) is not the model, which "
                f"sits at {axis} = 0, so the loss increase and curvature there are another point's; expected the "
                f"plane through the model: volume.slice(axis={axis!r}, value=0).sharpness(), of a volume whose {axis} "
                "grid holds 0")
        return _sharpness.sharpness(self, radius)

    def topology(self, threshold: float | None = None):
        """Sublevel-set persistence, basins above ``threshold``, merge tree and SMAD of this
        surface (``landscape_nb.persistence.topology``; needs the ``topology`` extra, gudhi)."""
        return _persistence.topology(self, threshold)

    def to_xarray(self):
        """An ``xarray.Dataset`` with ``loss`` and every metric on (y, x), (x,) or (z, y, x) coords."""
        import xarray as xr

        dims = {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x")}[self.ndim]
        coords = {a: getattr(self, a) for a in dims}
        data = {"loss": (dims, self.loss)}
        data.update({name: (dims, arr) for name, arr in self.metrics.items()})
        data["done"] = (dims, self.done_mask)
        attrs = {k: v for k, v in self.provenance.items() if isinstance(v, (str, int, float))}
        return xr.Dataset(data, coords=coords, attrs=attrs)
