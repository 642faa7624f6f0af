"""What every figure shares: input checks, the display transform (non-finite → gap, log10,
clip), hover text, JSON-safe arrays, colour and contour-level helpers, and the parameter
docs substituted into each builder's docstring.

Imports neither torch, Dask nor ipywidgets.
"""
from __future__ import annotations

import html
import itertools
import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
import plotly.graph_objects as go

from ..errors import LandscapeError, warn_user
from ..surface import Surface, metric_splits

COLORSCALE = "Viridis"
TRAJECTORY_COLORSCALE = "Reds"
CLIP_FACTOR = 5.0
SURFACE_LEVELS = 20  # contour lines drawn on (and projected under) 3D surfaces

# Layout arithmetic: figures are laid out for plotly.js's size of a figure without one
# (700 x 450 px, margins 80/80/100/80), the smallest they are shown at; wider places (the
# Explorer, a notebook cell) only give the text more room.
DEFAULT_WIDTH, DEFAULT_HEIGHT = 700, 450
DEFAULT_MARGIN = dict(l=80, r=80, t=100, b=80)
TITLE_FONT = 14  # px, plotly.js's axis-title size for its 12 px default font
CAPTION_FONT = 12  # px, the caption under a 3D scene
CHAR_WIDTH = 0.5  # an upper bound of the average glyph width of plotly.js's font, in font sizes
SCENE_EYE = dict(x=1.35, y=1.35, z=0.95)  # 3D camera for a wide scene; narrower ones step back
SCENE_ASPECT = dict(x=1.0, y=1.0, z=0.8)  # a box a little flatter than a cube
SCENE_TITLE_FRACTION = 0.4  # a 3D axis title may span this share of its scene's width
SCENE_Z_TITLE_PX = 420  # narrower scenes clip the z title (drawn left of the box): the caption names z
SCENE_Z_CLEAR = 0.25  # no z tick in this bottom share of a 3D box: there the y axis's end label is drawn
HELD_FIXED_NAMES = 6  # hover text names at most this many held-fixed tensors, then "+N more"
HELD_FIXED_LINE = 90  # characters of hover text on one line before the groups go on lines of their own

# ---------------------------------------------------------------------------------------
# Shared docstring pieces, substituted with `_doc` (the plotly.express habit): a parameter
# documented twice is documented here once. Each piece is written for a docstring indented
# by four spaces, as every function body is.
# ---------------------------------------------------------------------------------------

_PARAMS = {
    "surface": """surface : Surface
        A 2D landscape, computed or partial: ``loss`` and every metric have shape
        ``(len(y), len(x))`` and ``loss[j, i]`` is at ``(x[i], y[j])``. ``x`` and ``y`` are
        step sizes along the two directions (multiples of each direction vector); the loss
        is in the loss function's units. NaN marks points not computed yet.""",
    "surface_any": """surface : Surface
        A 1D landscape (``loss`` of shape ``(len(x),)``, ``loss[i]`` at ``x[i]``) or a 2D one
        (shape ``(len(y), len(x))``, ``loss[j, i]`` at ``(x[i], y[j])``), possibly partial
        (NaN where not computed yet).""",
    "surfaces_1d": """surface : Surface or sequence of Surface
        1D landscapes: ``loss`` of shape ``(len(x),)`` with ``loss[i]`` at ``x[i]``; grids may
        differ. Each curve is named by its ``provenance["label"]``.""",
    "log": """log : bool, default False
        Show log10(loss) instead of the loss. Non-positive losses have no logarithm and
        become gaps.""",
    "clip": """clip : None, False or float, default None
        Cap on the displayed loss, in loss units. None: automatic, the displayed values are
        capped at ``min + 5 * (median - min)`` of the finite values (no cap when most points
        sit at the minimum). False: no cap. Hover text always shows the true values.""",
    "title": """title : str, optional
        Figure title (Plotly markup: ``<br>``, ``<b>``); defaults to ``surface.provenance["title"]``, shown as
        written, when present.""",
    "run_title": """title : str, optional
        Figure title (Plotly markup: ``<br>``, ``<b>``); defaults to ``surface.provenance["title"]``, shown as
        written, when present, else for a computed surface to what the CLI titles it (`plot.figures.run_title`:
        model, directions, split, grid, e.g. "mlp-digits: random (filter-normalized) directions, seed 0, test
        split, 51×51 points"; not for lines of several surfaces); ``""`` for none.""",
    "levels": """levels : int, default 30
        Number of contour lines, evenly spaced over the displayed range.""",
    "name": """name : str, default "loss"
        Which array to show: ``"loss"`` or the name of one of ``surface.metrics``.""",
    "quantity": """quantity : str, optional
        Deprecated alias of ``name`` (emits a DeprecationWarning); ``quantity`` now only
        means what a point computes, as in ``compute_surface``.""",
    "fig": """fig : plotly.graph_objects.Figure or FigureWidget
        A figure, e.g. one returned by ``landscape_nb.plot.contour(surf)``.""",
    "path": """path : str or os.PathLike
        Output file; ``~`` is expanded and missing parent directories are created.""",
    "returns": """Returns
    -------
    plotly.graph_objects.Figure
        A new figure; call ``.show()`` or ``landscape_nb.export_html`` yourself.""",
    "raises": """Raises
    ------
    LandscapeError
        If a surface is not a ``landscape_nb.Surface`` of the expected dimension or its
        arrays do not match its grid (e.g. a transposed ``loss``).""",
    "bad_clip": """``clip`` is not None, False or a finite number (positive when ``log=True``)""",
    "li2018": """.. [1] H. Li, Z. Xu, G. Taylor, C. Studer and T. Goldstein, "Visualizing the Loss
       Landscape of Neural Nets", NeurIPS 2018, arXiv:1712.09913.""",
}


def _doc(func):
    """Fill ``%(name)s`` placeholders in ``func``'s docstring from `_PARAMS`."""
    if func.__doc__:  # None under python -OO
        func.__doc__ = func.__doc__ % _PARAMS
    return func


def _renamed_keyword(name: str, quantity: str | None, *, where: str) -> str:
    """Resolve the deprecated ``quantity=`` alias of the display keyword ``name=``."""
    if quantity is None:
        return name
    warn_user(
        f"{where}: the keyword quantity= is deprecated; use name={quantity!r} instead "
        "(quantity now only means what a point computes, as in compute_surface).",
        DeprecationWarning,
    )
    if name != "loss" and name != quantity:
        raise LandscapeError(
            f"{where}: got name={name!r} and quantity={quantity!r}; expected one of them. "
            f"Fix: pass only name= (quantity= is its deprecated alias)."
        )
    return quantity


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


def _check_surface(surf: Any, *, ndim: int | None, where: str) -> Surface:
    if not isinstance(surf, Surface):
        raise LandscapeError(
            f"{where}: got a {type(surf).__name__}; expected a landscape_nb.Surface. "
            "Build one with landscape_nb.compute_surface(...) or Surface(x=..., y=..., loss=...)."
        )
    return surf.check(ndim=ndim, where=where)


def _check_clip(clip: Any, log: bool) -> None:
    if clip is None or clip is False or clip is True:
        return
    if not isinstance(clip, Real) or not np.isfinite(clip) or (log and clip <= 0):
        raise LandscapeError(
            f"clip={clip!r}; expected None (automatic), False (no cap) or a finite number in "
            "loss units (positive when log=True); e.g. clip=10."
        )


def _check_levels(levels: Any) -> int:
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise LandscapeError(f"levels={levels!r}; expected a positive integer, e.g. levels=30.")
    return int(levels)


# ---------------------------------------------------------------------------------------
# The display transform: non-finite → NaN, explicit cap, log10, automatic cap
# ---------------------------------------------------------------------------------------


def clip_limit(values: np.ndarray) -> float | None:
    """The automatic cap for displayed values.

    ``min + 5 * (median - min)`` of the finite values, or their maximum when that rule
    would cap nothing sensible (more than half the points at the minimum). The median
    tracks the typical loss across the plane, so a few diverged points (e.g. at the edges
    of a plane around a network without skip connections) do not set the scale.

    Parameters
    ----------
    values : array_like of float, any shape
        Displayed values (loss units, or log10 of them); NaN and inf are ignored.

    Returns
    -------
    float or None
        The cap, in the units of ``values``; None when no value is finite.
    """
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    cap = lo + CLIP_FACTOR * (float(np.median(finite)) - lo)
    return hi if not cap > lo else min(cap, hi)


def _above(value: float) -> str:
    """A round number a little above ``value`` (an example cap), e.g. 1.0243 -> '2'."""
    return f"{float(np.ceil(value * 1.5 if value > 0 else value + 1)):g}"


def _transform(values: np.ndarray, *, log: bool, clip: Any) -> np.ndarray:
    """The log/explicit-clip part of the display transform (no automatic cap)."""
    z = np.array(values, dtype=float)
    z[~np.isfinite(z)] = np.nan
    if clip is not None and clip is not False and clip is not True:
        lowest = np.nanmin(z) if np.isfinite(z).any() else np.nan
        if lowest >= float(clip):  # every point at the cap: a flat figure that looks like a flat landscape
            raise LandscapeError(
                f"clip={clip!r} is at or below every value shown (the lowest is {lowest:.6g}), so the figure would "
                f"be flat at the cap; expected a cap above the lowest value, e.g. clip={_above(lowest)} (or None: "
                "automatic, False: no cap)")
        z = np.minimum(z, float(clip))  # NaN stays NaN
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(z > 0, np.log10(np.where(z > 0, z, 1.0)), np.nan)
    return z


@_doc
def display_values(
    values: Surface | np.ndarray,
    *,
    log: bool = False,
    clip: Any = None,
    name: str = "loss",
    quantity: str | None = None,
) -> np.ndarray:
    """The float array a figure shows: non-finite → NaN, optional log10, then the cap.

    Every builder, the live figure widget and the VTK export use this one transform.

    Parameters
    ----------
    values : Surface or array_like of float
        A surface (its ``name`` array is used) or the raw values themselves, any shape.
    %(log)s
    %(clip)s
    %(name)s
        Ignored when ``values`` is an array.
    %(quantity)s

    Returns
    -------
    numpy.ndarray of float, same shape as the values
        Loss units (log10 of them when ``log=True``); NaN for gaps.

    Raises
    ------
    LandscapeError
        If ``clip`` is not None, False or a finite number (positive when ``log=True``),
        if ``name`` is not ``"loss"`` or a metric of the surface, or if both ``name`` and
        the deprecated ``quantity`` are given and differ.
    """
    name = _renamed_keyword(name, quantity, where="display_values")
    _check_clip(clip, log)
    arr = values.values(name) if isinstance(values, Surface) else values
    z = _transform(arr, log=log, clip=clip)
    if clip is None or clip is True:
        cap = clip_limit(z)
        if cap is not None:
            z = np.minimum(z, cap)
    return z


def to_plotly_z(array: Any) -> list:
    """Nested lists of Python floats with None for NaN/inf: JSON-safe z for Plotly.

    NaN is not valid JSON; Plotly renders ``null`` as a gap. Use this when sending data
    as JSON yourself (e.g. patching a live ``FigureWidget``).

    Parameters
    ----------
    array : array_like of float, any shape

    Returns
    -------
    list
        Nested lists of the same shape; None where the value was not finite.

    >>> to_plotly_z([[1.0, float("nan")], [float("inf"), 2.0]])
    [[1.0, None], [None, 2.0]]
    """
    return plotly_array(array).tolist()


def plotly_array(array: Any) -> np.ndarray:
    """`to_plotly_z`'s values as a numpy object array (Python floats, None where not finite), same shape.

    What a live ``FigureWidget`` is given: plotly keeps a numpy array as it is and converts it to lists once, in
    C, where nested lists are validated and serialized element by element in Python (a 101×101 grid's update held
    the kernel's event loop about a second, and over 2 s on a loaded 2-core machine).
    """
    a = np.asarray(array, dtype=float)
    out = a.astype(object)
    out[~np.isfinite(a)] = None
    return out


# ---------------------------------------------------------------------------------------
# Hover, titles, colour range and contour levels
# ---------------------------------------------------------------------------------------


def text_width(text: str, size: float = TITLE_FONT, *, plain: bool = False) -> float:
    """An upper estimate of the width in px of ``text`` in plotly.js's default font at ``size`` px: of Plotly
    markup, its longest ``<br>`` line with tags dropped and entities (``&lt;``) as the one character each shows;
    with ``plain``, of the text as written (a name holding ``<b>`` shows it: dropped as a tag, a long label was
    measured short and left unwrapped)."""
    import re

    if plain:
        return len(str(text)) * size * CHAR_WIDTH
    lines = re.split(r"<br\s*/?>", str(text))
    return max(len(html.unescape(re.sub(r"<[^>]+>", "", line))) for line in lines) * size * CHAR_WIDTH


def fit_title(text: str, width_px: float, size: float = TITLE_FONT) -> str:
    """``text`` (plain text: an axis label holding a user's model or direction names) as Plotly markup, broken
    into ``<br>``-separated lines of at most ``width_px`` px where it can be: after ", " and before " (" (e.g.
    "α (random direction 1, filter-normalized)" becomes "α (random direction 1,<br>filter-normalized)" in a
    narrow panel). Markup in the text is escaped: a model named "<b>a</b>" was drawn bold in an axis title."""
    import re

    if text_width(text, size, plain=True) <= width_px:
        return as_written(text)
    for pattern in (r"(?<=, )|(?= \()", r"(?<= )"):  # at ", " and " (" first; then at any space
        lines: list[str] = []
        for piece in (p for p in re.split(pattern, str(text)) if p):
            if lines and text_width(lines[-1] + piece, size, plain=True) <= width_px:
                lines[-1] += piece
            else:
                lines.append(piece)
        if all(text_width(line, size, plain=True) <= width_px for line in lines):
            break
    return "<br>".join(as_written(line.strip()) for line in lines)


def scene_title(label: str, width_px: float, size: float = TITLE_FONT, symbol: str = "",
                height_px: float | None = None) -> tuple[str, str | None]:
    """A 3D axis title that fits its scene, and the caption that says the rest.

    Axis titles inside a 3D scene are drawn along the axis and clipped at the scene's edge,
    so a long label ("β (random direction 2, filter-normalized)") is cut off. The front axes
    run down the scene as much as across it, so its ``height_px`` bounds a title too: at
    plotly's default 700×450, and in the Explorer, "PC2 (6.7% of variance)" ran out of the
    scene's bottom (trial s58). When ``label`` is wider than `SCENE_TITLE_FRACTION` of the
    scene's smaller side, its symbol (the part
    before " (") becomes the title and the caption gives the full label ("β: random direction
    2, filter-normalized"); where that is too wide as well, ``symbol`` (the axis's coefficient,
    α or β: two labels cut short could read the same, "Hessian eigenvector λ_m…"), else a
    shortened form.
    """
    room = SCENE_TITLE_FRACTION * min(width_px, width_px if height_px is None else height_px)
    if text_width(label, size, plain=True) <= room:
        return label, None
    head, sep, rest = str(label).partition(" (")
    if sep and rest.endswith(")") and text_width(head, size, plain=True) <= room:
        return head, f"{head}: {rest[:-1]}"
    if symbol:
        return symbol, f"{symbol}: {label}"
    n = max(1, int(room // (size * CHAR_WIDTH)) - 1)
    short = label[:n].rstrip() + "…"
    return short, f"{short}: {label}"


#: px a colour bar with a short title ("loss") and its tick labels takes (plotly.js, measured in Chromium: 67)
COLORBAR_PX = 67
#: the font size of a colour bar's title (plotly.js's default, 14 px)
COLORBAR_TITLE_FONT = 14


def plot_area(*, colorbar: bool | str = True, width: float = DEFAULT_WIDTH, height: float = DEFAULT_HEIGHT,
              margin: dict | None = None) -> tuple[float, float]:
    """Width and height in px of the plotting area of a figure of the given size: the
    margins (plotly.js's defaults unless given) and a colour bar's room taken off. ``colorbar`` may be the
    colour bar's title: a title wider than the bar (a capped scale's "310 of 961 points above (shaded),")
    widens it, and plotly.js narrows the plots by as much (a live figure's 3D scene drawn 359 px wide for 465,
    its z title clipped at the figure's edge, trial s55)."""
    m = {**DEFAULT_MARGIN, **(margin or {})}
    room = 40 if colorbar else 0
    if isinstance(colorbar, str):  # its widest line
        room += max(0.0, text_width(colorbar, COLORBAR_TITLE_FONT) - COLORBAR_PX)
    return width - m["l"] - m["r"] - room, height - m["t"] - m["b"]


def scene_eye(width_px: float, height_px: float, z: np.ndarray | None = None) -> dict:
    """The 3D camera position that keeps the whole box, tick labels and titles included,
    inside a scene of the given size: plotly.js's perspective has a fixed vertical field
    of view, so a scene taller than it is wide crops the box at its sides unless the
    camera steps back. With ``z`` (the displayed values, shape (len(y), len(x))), from the
    corner `low_corner` picks."""
    k = max(1.0, 1.45 * height_px / width_px)
    eye = {a: round(v * k, 3) for a, v in SCENE_EYE.items()}
    if z is not None:
        sx, sy = low_corner(z)
        eye["x"], eye["y"] = sx * eye["x"], sy * eye["y"]
    return eye


def low_corner(z: np.ndarray) -> tuple[int, int]:
    """The signs ``(sx, sy)`` of the camera's x and y for a 3D view of ``z`` (the displayed values, shape
    (len(y), len(x))): the default corner (+1, +1), unless the quadrant of the grid nearest it stands higher on
    average than the lowest quadrant by more than a tenth of the values' span; then that lowest one. A capped corner
    in front drew a flat wall at the cap across the middle of the view, read as a peak at the minimizer (trial
    s58); from the low side the basin is seen with the high ground behind it. A quadrant without a finite value
    is not picked."""
    z = np.asarray(z, dtype=float)
    finite = np.isfinite(z)
    if z.ndim != 2 or min(z.shape) < 2 or not finite.any():
        return 1, 1
    ny, nx = z.shape
    half = lambda n, sign: slice(0, n // 2) if sign < 0 else slice((n + 1) // 2, n)  # the middle line in neither
    means = {}
    for sx in (1, -1):
        for sy in (1, -1):
            part = z[half(ny, sy), half(nx, sx)]
            means[sx, sy] = float(np.nanmean(part)) if np.isfinite(part).any() else np.inf
    best = min(means, key=means.get)
    span = float(np.nanmax(z[finite]) - np.nanmin(z[finite]))
    return best if means[1, 1] - means[best] > 0.1 * span else (1, 1)


def scene_axes(x_label: str, y_label: str, z_label: str, width_px: float,
               height_px: float = DEFAULT_HEIGHT - DEFAULT_MARGIN["t"] - DEFAULT_MARGIN["b"], *,
               grid: tuple[Sequence[float], Sequence[float]] | None = None,
               z: np.ndarray | None = None) -> tuple[dict, str | None]:
    """``layout.scene`` settings for a 3D plot of ``width_px`` x ``height_px``: axis titles
    that fit (`scene_title`), a camera that keeps the whole box in view (`scene_eye`), and
    the caption for the labels that had to be shortened (None when none was); with ``z`` (the displayed values),
    the camera at the corner `low_corner` picks. With ``grid``,
    the surface's ``(x, y)``, the floor spans the whole grid: plotly.js fits the box to the
    points that have values, so a partial surface (a stopped run, a store being filled) was
    drawn in a box shrunk to its computed rows, its range read as the grid's."""
    titles, notes = [], []
    for label, symbol in ((x_label, "α"), (y_label, "β")):
        title, note = scene_title(label, width_px, symbol=symbol if label != symbol else "", height_px=height_px)
        titles.append(as_written(title))  # plain text, as fit_title has it
        if note:
            notes.append(fit_title(note, width_px, size=CAPTION_FONT))  # centred under the scene: no wider
    if width_px >= SCENE_Z_TITLE_PX:
        titles.append(z_label)
    else:
        titles.append("")
        notes.append(f"height: {z_label}")
    settings = dict(xaxis_title=titles[0], yaxis_title=titles[1], zaxis_title=titles[2],
                    camera=dict(eye=scene_eye(width_px, height_px, z)), aspectmode="manual",
                    aspectratio=SCENE_ASPECT)
    if grid is not None:
        for axis, values in zip("xy", grid):
            lo, hi = float(np.min(values)), float(np.max(values))
            if hi > lo:  # one value: plotly.js's own range around it
                settings[f"{axis}axis_range"] = [lo, hi]
    return settings, "<br>".join(notes) or None


def scene_z_ticks(zmin: float | None, zmax: float | None, n_ticks: int = 5) -> dict:
    """``layout.scene.zaxis`` settings that keep the z tick labels off the y axis's: the range
    ``[zmin, zmax]`` and about ``n_ticks`` round tick values, none in the bottom `SCENE_Z_CLEAR`
    of it. plotly.js draws the z tick labels up the box's left edge and the y axis's labels
    along its floor from the same corner, so a z tick at the floor (e.g. "2.3026" at a loss
    minimum of 2.302585) was printed over the y axis's end label ("−0.05"). ``{}`` (plotly.js's
    automatic ticks) where there is no finite range."""
    if zmin is None or zmax is None or not (np.isfinite(zmin) and np.isfinite(zmax)) or not zmax > zmin:
        return {}
    span = zmax - zmin
    lowest = zmin + SCENE_Z_CLEAR * span
    raw = span / n_ticks
    step = 10.0 ** math.floor(math.log10(raw))
    step *= min((1, 2, 2.5, 5, 10), key=lambda m: abs(math.log(m * step / raw)))  # the round step nearest
    while True:
        first = math.ceil(lowest / step - 1e-9) * step
        vals = np.arange(first, zmax + step * 1e-9, step)
        if vals.size >= 3 or step <= span * 1e-6:
            break
        step /= 2
    digits = max(0, 1 - math.floor(math.log10(step)))  # k·step, not k·step plus rounding error
    return {"range": [zmin, zmax], "tickvals": [round(float(v), digits) for v in vals]}


CAPTION = "axis caption"  # the name of the annotation that spells out shortened 3D axis titles


def set_caption(fig, text: str | None, *, x: float = 0.5, key: str = "") -> None:
    """Add, replace or (``text=None``) remove the caption under a 3D scene centred at
    paper ``x``; ``key`` tells the captions of several scenes apart."""
    name = f"{CAPTION}{key}"
    kept = [a for a in (fig.layout.annotations or ()) if a.name != name]
    if text:
        kept.append(go.layout.Annotation(
            text=text, name=name, xref="paper", yref="paper", x=x, y=0.0, xanchor="center",
            yanchor="top", showarrow=False, font=dict(size=CAPTION_FONT), align="center",
        ))
    fig.layout.annotations = kept


def _axis_label(log: bool, name: str = "loss") -> str:
    return f"log10({name})" if log else name


def _quantity_names(surf: Surface) -> list[str]:
    return ["loss", *surf.metrics]


def hover_customdata(surf: Surface) -> np.ndarray:
    """Per point ``[loss, metric...]`` (true values, unclipped), last axis stacked.

    Parameters
    ----------
    surf : Surface
        A 1D or 2D landscape.

    Returns
    -------
    numpy.ndarray of float, shape ``surf.shape + (1 + len(surf.metrics),)``
        Loss first, then the metrics in ``surf.metrics`` order.
    """
    return np.stack([np.asarray(surf.values(n), dtype=float) for n in _quantity_names(surf)], -1)


def as_written(text: Any) -> str:
    """``text`` (a name or label of the user's: a model, a metric, a direction) as Plotly markup that shows it as
    written, in a title, an axis title, a legend entry or a note: ``<``, ``>`` and ``&`` escaped (a name holding
    ``<b>..</b>`` was drawn bold, trial s47)."""
    return html.escape(str(text), quote=False)


def template_text(text: Any) -> str:
    """``text`` (a name or label of the user's) as it must stand in a Plotly ``hovertemplate`` to be shown as
    written: markup escaped (``<b>`` was drawn bold) and ``%{`` broken by an entity, which plotly.js draws as
    "{" (it filled a name holding ``%{x}`` with the x value, trial s50)."""
    return as_written(text).replace("%{", "%&#123;")


def hover_template(surf: Surface) -> str:
    """Hover text for a grid trace using `hover_customdata`: x, y, loss and every metric,
    then the parameters the directions held fixed (`held_fixed_text`), when there are any.

    Parameters
    ----------
    surf : Surface
        A 2D landscape; its axis labels name x and y.

    Returns
    -------
    str
        A Plotly ``hovertemplate``.
    """
    lines = [f"{template_text(surf.x_label)}: %{{x:.4g}}", f"{template_text(surf.y_label)}: %{{y:.4g}}"]
    lines += [f"{template_text(n)}: %{{customdata[{k}]:.4g}}" for k, n in enumerate(_quantity_names(surf))]
    fixed = held_fixed_text(surf)
    if fixed:
        lines.append(fixed)
    return "<br>".join(lines) + "<extra></extra>"


_BIASBN = "biases/norm weights"  # the 1-D tensors ``ignore="biasbn"`` gives a zero direction


def held_fixed(surf: Surface) -> dict[str, list[str]]:
    """The parameters that the surface's directions did not perturb, grouped by why.

    Read from ``surf.provenance["directions"]`` as `landscape_nb.random_directions`
    records it: ``excluded`` (``"name (frozen)"``: parameters left out of the layout) and
    ``zeroed`` (1-D tensors given a zero direction by ``ignore="biasbn"``).

    Parameters
    ----------
    surf : Surface
        Any landscape; one without that provenance (hand-made, from an older version or a
        store written before it was recorded) has nothing held fixed.

    Returns
    -------
    dict of str to list of str
        Reason (``"frozen"``, ``"biases/norm weights"``, ...) to parameter names in
        ``named_parameters()`` order; empty when nothing was held fixed or nothing is known.
    """
    prov = surf.provenance.get("directions") if isinstance(surf.provenance, Mapping) else None
    if not isinstance(prov, Mapping):
        return {}
    groups: dict[str, list[str]] = {}
    excluded, zeroed = prov.get("excluded"), prov.get("zeroed")
    for entry in excluded if isinstance(excluded, (list, tuple)) else ():
        name, sep, reason = str(entry).rpartition(" (")
        if not (sep and reason.endswith(")")):
            name, reason = str(entry), "excluded)"
        groups.setdefault(reason[:-1], []).append(name)
    names = [str(n) for n in zeroed] if isinstance(zeroed, (list, tuple)) else []
    if names:
        groups.setdefault(_BIASBN if prov.get("ignore") == "biasbn" else "zero direction", []).extend(names)
    return groups


def held_fixed_text(surf: Surface) -> str | None:
    """One short hover line naming the parameters held fixed (see `held_fixed`), or None.

    At most `HELD_FIXED_NAMES` names in all, then "+N more" per group, e.g.
    ``"held fixed: 1 frozen (embed.weight); 4 biases/norm weights (fc.bias, bn.weight,
    bn.bias, +1 more)"``; the groups go on lines of their own when that would be long.
    The full lists are in the figure's ``layout.meta["held_fixed"]``.
    """
    groups = held_fixed(surf)
    if not groups:
        return None
    budget, parts = HELD_FIXED_NAMES, []
    for reason, names in groups.items():
        shown = names[:max(1, budget)]
        budget -= len(shown)
        listed = ", ".join(as_written(n) for n in shown)
        if len(names) > len(shown):
            listed += f", +{len(names) - len(shown)} more"
        parts.append(f"{len(names)} {as_written(reason)} ({listed})")
    text = "held fixed: " + "; ".join(parts)
    return text if len(text) <= HELD_FIXED_LINE else "held fixed: " + ";<br>".join(parts)


def held_fixed_notes(surfaces: Sequence[Surface]) -> list[dict]:
    """The full lists of held-fixed parameters (`held_fixed`): one ``{"surface": label,
    reason: names, ...}`` per surface that held any fixed."""
    notes = []
    for k, s in enumerate(surfaces):
        groups = held_fixed(s)
        if groups:
            notes.append({"surface": str(s.provenance.get("label", f"surface {k}")), **groups})
    return notes


def note_sources(fig, surfaces: Sequence[Surface]) -> None:
    """Record in ``fig.layout.meta`` what the figure was computed from, so that a figure written to HTML
    (`export_html`) or JSON keeps it: ``"provenance"``, each surface's ``provenance`` (model and data
    fingerprints, directions, grid, library versions; values JSON cannot hold written as text), and
    ``"held_fixed"``, `held_fixed_notes` where any surface held parameters fixed. Other ``meta`` keys are
    kept. A standalone figure said nothing of how it was made (s40)."""
    import json

    surfaces = [s for s in surfaces if isinstance(getattr(s, "provenance", None), Mapping)]  # also a Topology's
    meta = dict(fig.layout.meta) if isinstance(fig.layout.meta, Mapping) else {}  # or a Spectrum's
    meta["provenance"] = [json.loads(json.dumps(dict(s.provenance), default=str)) for s in surfaces]
    notes = held_fixed_notes(surfaces)
    if notes:
        meta["held_fixed"] = notes
    fig.layout.meta = meta


def _title(title: str | None, surf: Surface | None) -> str | None:
    """``title`` as given (markup), else the surface's ``provenance["title"]``, a user's text shown as written (as
    `compare`'s default panel titles show it), else for a volume's plane (``provenance["slice"]``) which plane."""
    if title is not None:
        return title
    given = None if surf is None else surf.provenance.get("title")
    cut = None if surf is None else surf.provenance.get("slice")
    if given is None and isinstance(cut, Mapping) and "value" in cut:  # a volume's plane: which one (trial s57: a
        symbol, at = cut.get("symbol") or cut.get("axis", "z"), float(cut["value"])  # plane at γ = 0.5 looked like
        given = (f"the plane {symbol} = {at:g} of a volume"  # the model's)
                 + ("" if at == 0 else f" (the model, at {symbol} = 0, is not on it)"))
    return None if given is None else as_written(given)


def _range(zs: Sequence[np.ndarray]) -> tuple[float | None, float | None]:
    finite = [z[np.isfinite(z)] for z in zs]
    finite = [f for f in finite if f.size]
    if not finite:
        return None, None
    lo = float(min(f.min() for f in finite))
    hi = float(max(f.max() for f in finite))
    return lo, hi


def cap_words(value: float, log: bool, name: str = "loss") -> str:
    """A colour cap of displayed values as a colour bar says it: ``value`` itself, or on a log scale (``value`` a
    log10) in the values' own units with its log10 beside it, "loss 2.61 (log10 0.418)"."""
    return (f"{name} {10 ** value:.4g} (log10 " + f"{value:.3g})".replace("-", "\u2212")) if log else f"{value:.4g}"


def _colorbar_title(log: bool, zmax: float | None, raw: np.ndarray, shaded: bool = False) -> str:
    """Colorbar title; says so when the display is capped below the true maximum (``shaded``: where the
    figure shades the points above the cap, `above_cap_trace`), and how many points a log scale leaves blank."""
    label = _axis_label(log)
    raw_disp = _transform(raw, log=log, clip=False)
    if zmax is not None and np.nanmax(raw_disp, initial=-np.inf) > zmax:
        # how many points sit at the cap, and how high they go: a contour panel leaves them blank, read as a
        # flat basin (103 of 441 points up to 6.4e4 under "capped at 1.442", trial s47)
        above, values = raw_disp > zmax, np.asarray(raw, dtype=float)
        top = float(np.nanmax(values[above & np.isfinite(values)], initial=np.nan))
        # on a log scale both in loss units: "capped at 0.4177 ... up to 44.6" mixed a log10 cap with a loss (s58)
        label += (f"<br>(capped at {cap_words(zmax, log)}:<br>{int(above.sum())} of {int(np.isfinite(raw_disp).sum())} points "
                  f"above{' (shaded)' if shaded else ''},<br>up to {'loss ' if log else ''}{top:.3g})")
    return label + non_positive_note(log, [raw])


def non_positive_range(values: Sequence[np.ndarray]) -> tuple[float, float] | None:
    """(min, max) of the finite ``values`` when none of them is positive (a log scale would show nothing),
    else None; None too when no value is finite (a surface not computed yet: nothing is known of it)."""
    finite = [v[np.isfinite(v)] for v in (np.asarray(v, dtype=float) for v in values)]
    finite = [f for f in finite if f.size]
    if not finite or any((f > 0).any() for f in finite):
        return None
    return min(float(f.min()) for f in finite), max(float(f.max()) for f in finite)


def refuse_log_of_non_positive(log: bool, values: Sequence[np.ndarray], where: str) -> None:
    """Raise ``LandscapeError`` when ``log`` and the finite ``values`` hold no positive one: a log axis would
    show an empty figure (a loss that is negative everywhere, e.g. a negated likelihood or an ELBO). Values
    with no finite entry (a surface not computed yet) pass: nothing is known about them."""
    bounds = non_positive_range(values) if log else None
    if bounds is not None:
        lo, hi = bounds
        raise LandscapeError(
            f"{where}: log=True but every loss is ≤ 0 (from {lo:.6g} to {hi:.6g}), which has no logarithm: the "
            "figure would be empty; expected positive losses for a log scale; use log=False (a loss that can be "
            "negative, e.g. a log-likelihood, is drawn on a linear axis)")


def log_ticks(values: Sequence[np.ndarray], top: Any = None) -> dict:
    """Tick settings for a log-scale loss axis of ``values`` (arrays), capped at ``top`` (a ``clip`` in loss units;
    None, True or False: none): over more than a decade, explicit ticks at 1, 2 and 5 of each decade (1 alone past
    four decades, at most eight decades apart) labelled in full, e.g. 0.2, 0.5, 1, 2, 5, 10; {} otherwise,
    plotly.js's own. plotly.js labels a log axis's ticks inside a decade by their first digit alone, so 0.2, 2
    and 20 all read "2", and at a larger size every digit 2...9 in small type, crowded at each decade (trial
    s58)."""
    v = np.concatenate([np.asarray(a, dtype=float).ravel() for a in values]) if len(values) else np.empty(0)
    v = v[np.isfinite(v) & (v > 0)]
    if top is not None and not isinstance(top, bool):  # the axis stops there (review s59: ticks of 7 decades)
        v = np.minimum(v, float(top))
    if v.size == 0 or v.max() < 10 * v.min():
        return {}
    lo, hi = math.floor(math.log10(v.min())), math.ceil(math.log10(v.max()))
    mantissas = (1, 2, 5) if hi - lo <= 4 else (1,)
    step = math.ceil((hi - lo) / 8)
    ticks = [m * 10.0 ** e for e in range(lo, hi + 1, step) for m in mantissas]
    ticks = [t for t in ticks if v.min() / 1.5 <= t <= v.max() * 1.5]
    return dict(tickmode="array", tickvals=ticks, ticktext=[f"{t:.6g}" for t in ticks])


def non_positive_note(log: bool, values: Sequence[np.ndarray]) -> str:
    """``"<br>(N points ≤ 0 not shown)"`` when ``log`` and some finite values have no logarithm, else ""."""
    if not log:
        return ""
    n = sum(int(np.count_nonzero(np.isfinite(v) & (v <= 0))) for v in (np.asarray(v, dtype=float) for v in values))
    return f"<br>({n} point{'s' if n != 1 else ''} ≤ 0 not shown)" if n else ""


def _contour_spec(zmin: float | None, zmax: float | None, levels: int) -> dict:
    """Exactly ``levels`` lines, centred in ``levels`` equal bands of [zmin, zmax]."""
    if zmin is None:
        return dict(autocontour=True, ncontours=levels)
    if not zmax > zmin:
        return dict(autocontour=False, ncontours=1, contours=dict(start=zmin, end=zmin, size=1.0))
    size = (zmax - zmin) / levels
    return dict(
        autocontour=False,
        ncontours=levels,
        contours=dict(start=zmin + size / 2, end=zmax - size / 2, size=size),
    )


def surface_contours_drawn(z: np.ndarray) -> bool:
    """Whether a 3D surface draws its contour lines: only when ``z`` has no gap (NaN).

    plotly.js's WebGL contour lines next to a gap cost seconds a frame without a GPU
    (Chromium's software WebGL, measured: a 21×21 surface with one missing point 2.1 s a
    frame, with 44 missing 28 s, complete 0.26 s), and a frame is drawn at every update
    and rotation. A partial surface shows its contours once it is complete; the 2D contour
    plot draws them around gaps at no such cost.
    """
    return bool(np.isfinite(np.asarray(z, dtype=float)).all())


#: the name of the trace `lone_points_trace` adds: its points' neighbours may be computed but diverged, or not
#: shown on a log scale, not only missing ("no computed neighbours" named a diverged corner's point wrongly, trial s35)
LONE_POINTS = "points on no drawn cell (a neighbour missing, diverged or not shown)"
#: the name of the annotation `note_partial` adds
PARTIAL_NOTE = "partial"
#: the name of `not_computed_trace`'s tint, and its colour: a partial contour plot's computed cells that no
#: level crosses looked like those not computed (trial s57)
NOT_COMPUTED = "not computed yet"
NOT_COMPUTED_FILL = "rgba(70, 110, 200, 0.14)"
#: the name of the annotation `note_axes` adds
AXES_NOTE = "axes differ"
METRICS_NOTE = "metrics not drawn"  # plot.line's and line_splits' (note_undrawn_metrics)
#: how far above the last one a note above the plot sits, in px: a 12 px line and a gap
NOTE_LINE_PX = 22


def note_partial(fig, surfaces: Surface | Sequence[Surface] | None, names: Sequence[str] | None = None) -> None:
    """Say above the plot, once, how many points each of ``surfaces`` not complete (cancelled, interrupted,
    streaming) holds: "partial: 441 of 2601 points", and how many of them no computed cell holds, drawn as
    markers (`lone_points_trace`; a volume's marker trace counts in ``meta["past_boxes"]`` the points of
    cubes beyond the boxes drawn as shells); with several surfaces each is named (``names``, default their
    labels). The static figures call it, so a partial surface's figure says so wherever it is exported;
    nothing for complete ones."""
    if any(getattr(a, "name", None) == PARTIAL_NOTE for a in fig.layout.annotations):
        return
    note = partial_note(fig.data, fig.layout.annotations, surfaces, names)
    if note is not None:
        fig.add_annotation(**note)


def sync_partial_note(fig, surface: Surface) -> None:
    """A live figure's note (`note_partial`) set to what ``surface`` holds now, in one assignment where it
    changed: removed once complete. A line's note, made from its empty grid, said "partial: 0 of 21 points"
    on a complete line, and a cancelled 2D live figure said nothing (trial s34)."""
    kept = [a for a in fig.layout.annotations if getattr(a, "name", None) != PARTIAL_NOTE]
    replace_note(fig, PARTIAL_NOTE, partial_note(fig.data, kept, surface))


def replace_note(fig, name: str, note: dict | None) -> None:
    """Make ``note`` (keyword arguments of ``add_annotation``; None: none) ``fig``'s one annotation called ``name``,
    in one assignment of ``layout.annotations`` and only where its text changed (a live figure's updates: a
    ``FigureWidget`` sends each assignment to the browser)."""
    old = next((a.text for a in fig.layout.annotations if getattr(a, "name", None) == name), None)
    if (note or {}).get("text") != old:
        fig.layout.annotations = [a for a in fig.layout.annotations if getattr(a, "name", None) != name] + (
            [go.layout.Annotation(**note)] if note else [])


def partial_note(traces, annotations, surfaces: Surface | Sequence[Surface] | None,
                 names: Sequence[str] | None = None) -> dict | None:
    """The annotation `note_partial` adds to a figure of ``traces`` and ``annotations`` (keyword arguments of
    ``add_annotation``), None for complete surfaces with every loss finite that no random sampling made
    (``Surface.sampling_note``, a line of its own). Computed points whose loss is NaN or
    inf (diverged) are gaps too, and are counted: a store's 15 diverged points were gaps with no word in its
    figure, read as points not computed (trial s34)."""
    many = isinstance(surfaces, Sequence) and not isinstance(surfaces, Surface)
    listed = [s for s in (surfaces if many else [surfaces]) if s is not None]
    partial = [(k, s) for k, s in enumerate(listed) if not s.is_complete or getattr(s, "n_diverged", 0)]
    noisy = list(dict.fromkeys(s.sampling_note for s in listed if s.sampling_note))  # a random model's bumps
    if not partial:  # looked like the landscape's (trial s39)
        return _note_above("<br>".join(noisy), PARTIAL_NOTE, _titled_shift(annotations)) if noisy else None
    marked = [t for t in traces if t.name == LONE_POINTS and t.x is not None]
    # the live figure marks the same points on both panels (3D and contours): counted once (second trial s34)
    lone = sum(len(t.x) for t in _distinct_panels(marked))
    past = sum(int((t.meta or {}).get("past_boxes", 0)) if isinstance(t.meta, Mapping) else 0 for t in marked)

    def count(s) -> str:
        size, bad = int(np.size(s.loss)), getattr(s, "n_diverged", 0)
        diverged = "diverged (loss NaN or inf)" + (  # "9 of 9 diverged" sent a trial to the range (s39)
            ", the model itself among them: its weights, the loss or the data give it" if getattr(s, "centre_diverged", False)
            else "")
        if s.is_complete:
            return f"{bad} of {size} points {diverged}"
        return f"{s.n_done} of {size} points" + (f", {bad} of them {diverged}" if bad else "")

    counts = [count(s) for _, s in partial]
    prefix = "partial: " if any(not s.is_complete for _, s in partial) else ""
    if len(listed) > 1:
        named = list(names) if names is not None else [s.provenance.get("label") for s in listed]
        counts = [f"{named[k] or f'surface {k + 1}'}: {c}" for (k, _), c in zip(partial, counts)]
    cell = "cell of finite losses" if any(getattr(s, "n_diverged", 0) for _, s in partial) else "computed cell"
    why = (f"no {cell} around {lone - past} of them, {past} past the shells drawn" if past else
           f"no {cell} around them")
    markers = f"; {lone} drawn as markers ({why})" if lone else ""
    return _note_above("<br>".join([f"{prefix}{'; '.join(counts)}{markers}", *noisy]), PARTIAL_NOTE,
                       _titled_shift(annotations))


def _titled_shift(annotations) -> float:
    """How far up a note above the plot sits: a line above the panels' titles, if any."""
    return NOTE_LINE_PX if any(a.yref == "paper" and (a.y or 0) >= 0.99 for a in annotations) else 0


def _note_above(text: str, name: str, yshift: float) -> dict:
    """A note above the plot, left-aligned, ``yshift`` px up (keyword arguments of ``add_annotation``)."""
    return {"text": text, "name": name, "xref": "paper", "yref": "paper", "x": 0.0, "y": 1.0, "xanchor": "left",
            "yanchor": "bottom", "yshift": yshift, "showarrow": False, "font": {"color": "firebrick"}}


def note_axes(fig, surfaces: Sequence[Surface], names: Sequence[str], *, overlaid: bool) -> None:
    """Say above the plot, above its titles and notes, where ``surfaces`` (called ``names``) drawn together are not
    on one scale, which the figure alone hides (trial s35). Side by side (`compare`), each panel spans its own
    grid: planes over [-1, 1]² and [-0.2, 0.2]² looked alike, so each one's range is named where they differ.
    Overlaid on one x axis (`line`), steps along filter-normalized and raw directions were drawn as one, titled by
    the first curve's label: each curve's x axis label is named where they differ. Nothing where they agree; such
    comparisons can be deliberate, so they are said, not refused."""
    def span(values) -> str:
        return f"[{float(np.min(values)):.4g}, {float(np.max(values)):.4g}]"

    if overlaid:
        labels = [s.x_label for s in surfaces]
        said = ([as_written(f"{n}: {label}") for n, label in zip(names, labels)]
                if len(set(labels)) > 1 else [])
        head = "x axes differ, drawn as one"
    else:
        axes = [(axis, [getattr(s, f"{axis}_label").partition(" (")[0] for s in surfaces],
                 [span(getattr(s, axis)) for s in surfaces]) for axis in "xy"]
        differ = [(symbols, spans) for _, symbols, spans in axes if len(set(spans)) > 1]
        said = [as_written(f"{n}: " + ", ".join(f"{symbols[k]} ∈ {spans[k]}" for symbols, spans in differ))
                for k, n in enumerate(names)] if differ else []
        head = "panels span different ranges, each drawn to its own"
    if said:
        room = (fig.layout.width or DEFAULT_WIDTH) - DEFAULT_MARGIN["l"]  # from the plot's left edge to the figure's
        text = f"{head}: {'; '.join(said)}"
        if text_width(text, CAPTION_FONT) > room:  # a line a surface
            text = f"{head}:<br>" + ";<br>".join(said)
        fig.add_annotation(**_note_above(text, AXES_NOTE, _above_notes(fig)))


def _above_notes(fig, but: str | None = None) -> float:
    """How far up a new note goes to sit above the titles and notes already above the plot (but the one named
    ``but``, the note being replaced), in px."""
    return max((float(a.yshift or 0) + NOTE_LINE_PX * (1 + str(a.text).count("<br>")) for a in fig.layout.annotations
                if a.yref == "paper" and (a.y or 0) >= 0.99 and (but is None or getattr(a, "name", None) != but)),
               default=0.0)


def curve_labels(surfaces: Sequence[Surface]) -> list[str]:
    """Each surface's ``provenance["label"]`` ("surface k" without one), those alike numbered from their second
    on ("mlp: loss", "mlp (2): loss"): two interpolations of one model class were both named "Sequential" in
    an overlay, the legend, hover and notes alike (trial s42)."""
    return numbered([str(s.provenance.get("label", f"surface {k}")) for k, s in enumerate(surfaces)])


def numbered(labels: Sequence[str]) -> list[str]:
    """``labels`` with those alike numbered from their second on: "mlp", "mlp (2)"."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def default_metric(metric: str | None, names: Sequence[Sequence[str]]) -> str | None:
    """The metric a line figure draws on its right axis for ``metric`` (their default "accuracy"), given each
    curve's metric ``names``: where none has an accuracy and all have the same one metric and no other (a
    regression's "mse", dropped with no word before, trial s41), that one; else ``metric`` as given."""
    if metric == "accuracy" and not any("accuracy" in n for n in names):
        alike = {tuple(sorted(n)) for n in names}
        if len(alike) == 1 and len(only := next(iter(alike))) == 1:
            return only[0]
    return metric


def note_undrawn_metrics(fig, metric: str | None, names: Mapping[str, Sequence[str]],
                         loss_split: str | None = None) -> None:
    """Say above the plot what of the curves' metrics (``names``: each curve's, by its name) it leaves out:
    where ``metric``, the one drawn after `default_metric`, is on none of them, the metrics they hold (a
    regression's "mae" and "mse" under the default "accuracy" drew the loss alone with no word, s41), and a
    surface's "<split>_loss" metrics as the splits ``plot.line_splits`` draws (they were listed as metrics,
    review s42); where it is on some only, the curves without it (a test split with "r2" where the train one
    has "mae", trial s42). ``loss_split``: the split whose loss is drawn (the others and every split's metrics are
    not). Wrapped to the figure's width. Nothing where ``metric`` is None (loss only, as asked) or every curve
    draws it."""
    if metric is None or all(metric in n for n in names.values()):
        return
    shown = as_written  # the user's names, as written (markup in them was drawn, as in the legend's, s52)
    if any(metric in n for n in names.values()):
        lacking = [shown(k) for k, n in names.items() if metric not in n]
        parts = [f"{shown(metric)}: not on {', '.join(lacking)}"]
    else:
        left = sorted({m for n in names.values() for m in n})
        splits = metric_splits(left)
        own = [m for m in left if not any(m.startswith(f"{k}_") for k in splits)]
        parts = []
        if own:
            parts.append(f"not drawn: {', '.join(map(shown, own))} (pass metric=\"{shown(own[0])}\" to draw one on "
                         "the right axis)")
        others = [k for k in splits if k != loss_split]
        if loss_split in splits:  # its loss drawn, said beside "not drawn" (trial s57: the note read as if none was)
            parts.append(f"drawn: the {shown(loss_split)} split's loss; not drawn: "
                         + (f"the split{'s' * (len(others) > 1)} {', '.join(map(shown, others))} and " if others
                            else "") + "each split's metrics: plot.line_splits draws them")
        elif splits:
            parts.append(f"the splits {', '.join(map(shown, splits))} are not drawn: plot.line_splits draws them")
        if not parts:
            return
    room = (fig.layout.width or DEFAULT_WIDTH) - DEFAULT_MARGIN["l"]
    lines = []
    for part in parts:  # wrapped at its commas where wider than the figure
        line = ""
        for word in part.split(", "):
            candidate = f"{line}, {word}" if line else word
            if line and text_width(candidate, CAPTION_FONT) > room:
                lines.append(line + ",")
                candidate = word
            line = candidate
        lines.append(line)
    fig.add_annotation(**_note_above("<br>".join(lines), METRICS_NOTE, _above_notes(fig)))


def _distinct_panels(marked: list) -> list:
    """The marker traces of ``marked`` with a trace holding the same coordinates as an earlier one left out."""
    out, seen = [], set()
    for t in marked:
        key = (tuple(np.asarray(t.x, dtype=float).tolist()), tuple(np.asarray(t.y, dtype=float).tolist()))
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def lone_points(z: np.ndarray) -> np.ndarray:
    """Which points of ``z`` (a line (n,) or a plane (ny, nx)) have a value (finite) but are a corner of no
    grid cell (a segment or square) whose corners all have one: points a line, a 3D surface or a contour
    plot cannot draw.

    plotly.js draws a surface and traces contours cell by cell from the cell's corners,
    so a partial surface whose points came back spread out (a run interrupted early with small tiles, whose
    coarse-to-fine order spreads the first ones over the grid) drew nothing at all: a trial's store of
    152 of 441 points had no complete cell. Returns a boolean array of ``z``'s shape."""
    have = np.isfinite(np.asarray(z, dtype=float))
    return have & ~cell_corners(complete_cells(have))


def complete_cells(mask: np.ndarray) -> np.ndarray:
    """Which cells of a grid (segments, squares or cubes, by their lowest corner: shape ``mask.shape`` less one
    on each axis) have every corner ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    cells = np.ones([max(n - 1, 0) for n in mask.shape], dtype=bool)
    for shift in itertools.product((0, 1), repeat=mask.ndim):
        cells &= mask[tuple(slice(d, d + n) for d, n in zip(shift, cells.shape))]
    return cells


def cell_corners(cells: np.ndarray) -> np.ndarray:
    """The grid points (shape ``cells.shape`` plus one on each axis) that are a corner of one of ``cells``."""
    corners = np.zeros([n + 1 for n in cells.shape], dtype=bool)
    for shift in itertools.product((0, 1), repeat=cells.ndim):
        corners[tuple(slice(d, d + n) for d, n in zip(shift, cells.shape))] |= cells
    return corners


#: a line with fewer points than this marks each one (`line_mode`): its straight segments are interpolated
COARSE_LINE = 16


def line_mode(values: np.ndarray) -> str:
    """A 1D trace's Plotly ``mode``: "lines", or "lines+markers" where a point with a value has no neighbour
    with one (`lone_points`; a line stopped early on small tiles: 24 of 301 points, none adjacent, drew an
    empty chart) or the line has fewer than `COARSE_LINE` points (3 points drew two straight segments with
    nothing to say which points were computed, s55)."""
    return "lines+markers" if np.size(values) < COARSE_LINE or lone_points(values).any() else "lines"


def contour_values(z: np.ndarray) -> np.ndarray:
    """``z`` (a plane's displayed values) as a contour trace takes them: its `lone_points` left out (NaN; they are
    drawn as markers, `lone_points_trace`). plotly.js traced stray strokes into the cells around them, whose
    other corners are missing (trial s54: a partial store's rows drawn as "////" between its markers)."""
    z = np.asarray(z, dtype=float)
    lone = lone_points(z)
    return np.where(lone, np.nan, z) if lone.any() else z


def add_not_computed_tint(fig, kind: str, surf: Surface, **cell) -> bool:
    """Add `not_computed_trace` to ``fig`` (``cell``: a subplot's ``row``, ``col``) with its axes pinned to the
    grid's range, not the tint cells' edges; whether there was one."""
    tint = not_computed_trace(kind, surf)
    if tint is None:
        return False
    fig.add_trace(tint, **cell)
    fig.update_xaxes(range=[float(np.min(surf.x)), float(np.max(surf.x))], **cell)
    fig.update_yaxes(range=[float(np.min(surf.y)), float(np.max(surf.y))], **cell)
    return True


def not_computed_trace(kind: str, surf: Surface):
    """A contour plot's tint over the points of a partial surface not computed yet (a heatmap, hover "not computed
    yet"); None for other kinds (a heatmap and a 3D surface draw only what is computed) and complete surfaces.
    Contour lines alone left a computed tile that no level crosses as blank as one not computed (trial s57)."""
    done = np.asarray(surf.done_mask, dtype=bool)
    if kind != "contour" or done.all():
        return None
    return go.Heatmap(x=np.asarray(surf.x, float), y=np.asarray(surf.y, float), z=np.where(done, np.nan, 1.0),
                      name=NOT_COMPUTED, showscale=False, zsmooth=False, hoverongaps=False,
                      colorscale=[[0.0, NOT_COMPUTED_FILL], [1.0, NOT_COMPUTED_FILL]],
                      hovertemplate=f"{NOT_COMPUTED}<br>x: %{{x:.4g}}<br>y: %{{y:.4g}}<extra></extra>")


def lone_points_trace(kind: str, surf: Surface, z: np.ndarray, zmin, zmax):
    """Markers at the `lone_points` of ``z`` (the surface's displayed values), coloured on the loss's
    scale with the grid's hover text, for a 3D surface (``kind="surface"``) or a contour plot; None
    where there are none (a complete surface, or a partial one whose points all lie on drawn cells) or
    for a heatmap, which draws every point on its own."""
    if kind not in ("surface", "contour"):
        return None
    lone = lone_points(z)
    return _points_trace(kind, surf, z, lone, LONE_POINTS, zmin, zmax) if lone.any() else None


def _points_trace(kind: str, surf: Surface, z: np.ndarray, mask: np.ndarray, name: str, zmin, zmax, *,
                  text: bool = False):
    """Markers named ``name`` at the points ``mask`` of ``z`` (the displayed values) on the loss's colour scale,
    with the grid's hover text, and with ``text`` each point's loss written beside it."""
    jj, ii = np.nonzero(mask)
    x, y = np.asarray(surf.x, dtype=float)[ii], np.asarray(surf.y, dtype=float)[jj]
    values = np.asarray(z, dtype=float)[mask]
    common = dict(mode="markers+text" if text else "markers", name=name, showlegend=False,
                  customdata=hover_customdata(surf)[mask], hovertemplate=hover_template(surf))
    if text:
        top = float(np.max(surf.y))  # the top row's values below their points: above, on the panel's title
        prov = surf.provenance.get("directions") or {}  # a plane through three models names each above its
        named = ({(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)}  # point: its value below, not on the name (trial s55)
                 if isinstance(prov, Mapping) and prov.get("scheme") == "plane3" else set())
        common.update(text=[f"{v:.4g}" for v in np.asarray(surf.loss, dtype=float)[mask]],
                      textposition=["bottom center" if b == top or (a, b) in named else "top center"
                                    for a, b in zip(x, y)])
    marker = dict(color=values, colorscale=COLORSCALE, cmin=zmin, cmax=zmax, showscale=False)
    if kind == "surface":
        return go.Scatter3d(x=x, y=y, z=values, marker=dict(size=3, **marker), **common)
    return go.Scatter(x=x, y=y, marker=dict(size=7, line=dict(width=0.5, color="white"), **marker),
                      # a coarse grid's edge points (a good share of them) and any value whole, not cut in half
                      cliponaxis=name != GRID_POINTS and not text, **common)  # at the axis (trial s55)


#: a plane with fewer points than this on an axis is coarse: its contour lines and 3D surface are interpolated
#: across cells too wide to trust, so every point is marked (`grid_points_trace`) and a note says so (trial s54b:
#: a 2×2 grid drew ~24 smooth levels from its 4 corners, read as a loss of ~12 at the centre, 0.036 there)
COARSE_AXIS = 5
#: the name of the trace `grid_points_trace` adds
GRID_POINTS = "grid points (drawn between them: interpolated)"
#: the name of the annotation `note_coarse` adds
COARSE_NOTE = "coarse grid"
#: up to this many points a coarse grid's marked points carry their loss as text
COARSE_TEXT_POINTS = 25


def is_coarse(surf: Surface) -> bool:
    """Whether a plane has fewer than `COARSE_AXIS` points on an axis (2D surfaces only)."""
    return surf.ndim == 2 and min(np.size(surf.x), np.size(surf.y)) < COARSE_AXIS


def grid_points_trace(kind: str, surf: Surface, z: np.ndarray, zmin, zmax):
    """For a coarse plane (`is_coarse`), markers at each of its computed points that `lone_points_trace` does not
    mark, their losses written beside them on a contour plot where there are at most `COARSE_TEXT_POINTS` (hover
    gives them in 3D): what was computed,
    against the lines plotly.js interpolates between them. None for other grids, or a heatmap (one cell a point,
    nothing interpolated)."""
    if kind not in ("surface", "contour") or not is_coarse(surf):
        return None
    mask = np.isfinite(np.asarray(z, dtype=float)) & ~lone_points(z)
    if not mask.any():
        return None
    # values written on the contours only: in 3D the surface hides some and cuts others ("2.305" read "05", s55)
    return _points_trace(kind, surf, z, mask, GRID_POINTS, zmin, zmax,
                         text=kind == "contour" and np.size(surf.loss) <= COARSE_TEXT_POINTS)


def coarse_note(fig, kind: str, surfaces: Sequence[Surface], names: Sequence[str] | None = None) -> dict | None:
    """The note (keyword arguments of ``add_annotation``) above a contour (``kind="contour"``), 3D
    (``"surface"``) or live (``"live"``: both) figure that a coarse plane's (`is_coarse`) lines and surface are
    interpolated between its points, which are marked (`grid_points_trace`); with several surfaces, which ones.
    None for other kinds or no coarse plane."""
    coarse = [k for k, s in enumerate(surfaces) if is_coarse(s)]
    if kind not in ("surface", "contour", "live") or not coarse:
        return None
    drawn = {"contour": "lines", "surface": "surface", "live": "surface and lines"}[kind]
    sizes = [f"{np.size(surfaces[k].x)}×{np.size(surfaces[k].y)}" for k in coarse]
    whose = ("" if names is None or len(surfaces) == 1 else "each panel's " if len(coarse) == len(surfaces) else
             f"{', '.join(as_written(names[k]) for k in coarse)}: ")
    grids = f"{whose}{' and '.join(dict.fromkeys(sizes))} grid{'s' * (len(set(sizes)) > 1)}"
    text = (f"{grids} (x × y): the {drawn} between the marked points {'is' if drawn == 'surface' else 'are'} "
            f"interpolated; use {COARSE_AXIS}+ points an axis")  # whole in a 700 px figure (re-trial s56)
    return _note_above(text, COARSE_NOTE, _above_notes(fig, but=COARSE_NOTE))


def note_coarse(fig, kind: str, surfaces: Sequence[Surface], names: Sequence[str] | None = None) -> None:
    """Add `coarse_note` to ``fig``, if any."""
    note = coarse_note(fig, kind, surfaces, names)
    if note is not None:
        fig.add_annotation(**note)


#: the name of the trace `above_cap_trace` adds
ABOVE_CAP = "above the cap"
#: its shade: grey over the plot's background, lighter than any contour line
ABOVE_CAP_FILL = "rgba(110, 110, 110, 0.55)"


def above_cap_trace(kind: str, surf: Surface, traced: np.ndarray, zmax, log: bool):
    """For a contour plot whose colour scale is capped below the surface's highest loss (``traced``: the values
    its contour trace holds, `contour_values` of the displayed ones, at most ``zmax``), a trace that shades the
    region above the cap: a contour panel draws no line there, and the same background as inside its lowest level
    read as a flat basin (trials s47, s53b: a ResNet-110's plane mostly above the cap, an island of lines in an
    even grey). None for other kinds, or nothing above.

    The shade is a constraint contour over the surface's own values (not the capped ones) at the points the
    contour trace draws, so its edge runs where the interpolated loss crosses the cap: over the capped values,
    at the cap exactly, the region was a sliver at the points themselves, and a diverged edge column or a lone
    corner was said to be shaded while nothing was (trial s59)."""
    if kind != "contour" or zmax is None:
        return None
    raw = _transform(np.asarray(surf.loss, dtype=float), log=log, clip=False)
    traced = np.asarray(traced, dtype=float)
    z = np.where(np.isfinite(traced), raw, np.nan)  # where the contour trace draws: a finite loss there
    if not (z > zmax).any():  # the points above the cap all drawn as markers: nothing to shade (review s54)
        return None
    # a constraint contour shades where it fails: z < cap holds at and below the cap
    return go.Contour(x=np.asarray(surf.x, dtype=float), y=np.asarray(surf.y, dtype=float), z=z,
                      name=ABOVE_CAP,
                      contours={"type": "constraint", "operation": "<", "value": float(zmax), "showlabels": False},
                      fillcolor=ABOVE_CAP_FILL, line={"width": 0}, connectgaps=False, showscale=False,
                      showlegend=False, hoverinfo="skip")


def _grid_trace(
    kind: str, surf: Surface, z: np.ndarray, zmin, zmax, *, levels: int, contours: bool
):
    """One contour, heatmap or 3D-surface trace of ``z`` with the surface's hover text."""
    common = dict(
        z=z,
        customdata=hover_customdata(surf),
        hovertemplate=hover_template(surf),
        colorscale=COLORSCALE,
    )
    x, y = np.asarray(surf.x, dtype=float), np.asarray(surf.y, dtype=float)
    if kind == "contour":
        common["z"] = contour_values(z)
        return go.Contour(
            x=x, y=y, zmin=zmin, zmax=zmax, connectgaps=False,
            contours_coloring="lines", line_width=1.5,
            **_contour_spec(zmin, zmax, levels), **common,
        )
    if kind == "heatmap":
        return go.Heatmap(x=x, y=y, zmin=zmin, zmax=zmax, connectgaps=False, **common)
    if kind == "surface":
        trace = go.Surface(x=x, y=y, cmin=zmin, cmax=zmax, **common)
        if contours:
            spec = _contour_spec(zmin, zmax, levels).get("contours", {})
            trace.contours.z = dict(
                show=surface_contours_drawn(z), project_z=True, usecolormap=True, highlightcolor="white", **spec
            )
        return trace
    raise LandscapeError(
        f"kind={kind!r}; expected one of 'contour', 'heatmap', 'surface'; e.g. kind='contour'."
    )
