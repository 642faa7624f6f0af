"""Write figures and surfaces to files: standalone HTML, PNG/SVG/PDF images, ParaView VTK.

    lnb.export_html(lnb.plot.surface(surf), "r20.html")      # opens offline, anywhere
    lnb.export_image(fig, "r20.png")                           # kaleido + a Chromium browser
    lnb.export_vtk(surf, "r20.vtk", log=True)                  # File > Open in ParaView

Also reachable as ``landscape_nb.plot.export_html`` and so on. Imports neither torch, Dask
nor ipywidgets; plotly is imported by the functions that need it.
"""
from __future__ import annotations

import html
import importlib.util
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LandscapeError, positive_int, positive_number, warn_user
from ..surface import Surface
from ._common import (
    PARTIAL_NOTE,
    _check_surface,
    _doc,
    _renamed_keyword,
    display_values,
    note_partial,
    refuse_log_of_non_positive,
)

IMAGE_FORMATS = ("png", "svg", "pdf", "jpeg", "jpg", "webp")


def _check_figure(fig: Any, where: str):
    from plotly.basedatatypes import BaseFigure  # Figure and FigureWidget

    if isinstance(fig, BaseFigure):
        return fig
    raise LandscapeError(
        f"{where}: got a {type(fig).__name__}; expected a plotly Figure, e.g. one returned by "
        "landscape_nb.plot.contour(surf)."
    )


def prepare_path(path: str | os.PathLike, example: str = "landscape.html", flag: str | None = None) -> Path:
    """``path`` as a file to write, its folder created; ``LandscapeError`` when it cannot be one (a
    directory, or under a file), suggesting ``example`` in a directory and naming the CLI's ``flag``. The CLI
    calls it before computing, so a bad path costs no run."""
    path = Path(path).expanduser()
    if path.is_dir():
        given = f"{flag} {str(path)!r}" if flag else repr(str(path))
        raise LandscapeError(f"{given} is a directory; expected a file path to write, e.g. "
                             f"{flag + ' ' if flag else ''}{str(path / example)!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise LandscapeError(f"cannot write {str(path)!r}: a part of its folder {str(path.parent)!r} is a file; "
                             "expected a path under a directory") from None
    except OSError as exc:
        raise LandscapeError(f"cannot create the folder of {str(path)!r} ({exc.strerror}); choose a writable "
                             "path") from None
    try:  # a folder that takes no new file (read-only, immutable): found after the run, its points were lost (s37)
        if path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        else:
            tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as exc:
        raise LandscapeError(f"cannot write {str(path)!r} ({exc.strerror}); expected a path this process can "
                             "write: choose another folder or file name") from None
    return path


@_doc
def export_html(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as one self-contained HTML file and return its path.

    plotly.js is embedded (about 4.6 MB), so the file renders offline with no CDN. The package's figures
    carry each surface's provenance in ``layout.meta["provenance"]`` (model and data fingerprints,
    directions, grid, library versions), which the file keeps: in a browser's console,
    ``document.querySelector('.plotly-graph-div').layout.meta``.

    Parameters
    ----------
    %(fig)s
    %(path)s

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    LandscapeError
        If ``fig`` is not a plotly figure.
    """
    fig = _check_figure(fig, "export_html")
    path = prepare_path(path)
    page = fig.to_html(include_plotlyjs=True, include_mathjax=False, full_html=True, config={"displaylogo": False},
                       animation_opts=_autoplay(fig))
    # the page's name in a browser's tab, history and bookmarks: plotly writes none (trial s60: an empty <title>)
    name = html.escape(_plain(fig.layout.title.text) or path.stem)
    path.write_text(page.replace("<head>", f"<head><title>{name}</title>", 1), encoding="utf-8")
    return path


def _plain(markup: str | None) -> str:
    """Plotly markup (``<br>``, ``<b>``, entities) as the plain text it shows, on one line."""
    text = re.sub(r"<br\s*/?>", " ", markup or "", flags=re.IGNORECASE)
    return " ".join(html.unescape(re.sub(r"</?[A-Za-z][^<>]*>", "", text)).split())  # "a < b > c" is no tag


def _autoplay(fig) -> dict | None:
    """How an animated figure's page plays its frames on opening: as its ▶ play button does, each frame
    redrawn (plotly's default for the page, redraw off, left an animation's contour lines undrawn); for
    frames without a play button, plotly.js's defaults with each frame redrawn; None for a figure without
    frames."""
    if not fig.frames:
        return None
    for menu in fig.layout.updatemenus or ():
        for button in menu.buttons or ():
            args = button.args or ()
            if button.method == "animate" and len(args) == 2 and args[0] is None and isinstance(args[1], dict):
                opts = dict(args[1])
                opts["frame"] = {**opts.get("frame", {}), "redraw": True}
                return opts
    return {"frame": {"redraw": True}}


def mark_partial(fig, surface: Surface | None):
    """``fig``, or for a ``surface`` not complete (cancelled, interrupted, streaming), or with diverged points,
    a copy saying above the plot how many of its points it holds (`note_partial`), unless ``fig`` says so
    already (the static figures do): for the files a partial run is exported to from a live figure, which is
    left as it is."""
    if (surface is None or surface.is_complete and not surface.n_diverged
            or any(a.name == PARTIAL_NOTE for a in fig.layout.annotations)):
        return fig
    import plotly.graph_objects as go

    out = go.Figure(fig)
    note_partial(out, surface)
    return out


@_doc
def export_image(
    fig,
    path: str | os.PathLike,
    format: str | None = None,
    *,
    width: int | None = None,
    height: int | None = None,
    scale: float | None = None,
) -> Path:
    """Write ``fig`` as a static image (PNG, SVG, PDF, JPEG or WebP) and return its path.

    Rendering uses kaleido >= 1, which drives a Chrome/Chromium installed on the machine
    (set the environment variable ``BROWSER_PATH`` to choose one).

    Parameters
    ----------
    %(fig)s
    %(path)s
    format : {"png", "svg", "pdf", "jpeg", "jpg", "webp"}, optional
        Image format; default: the file suffix, or "png" when there is none.
    width, height : int, optional
        Image size in CSS pixels; default: the figure's layout size, else plotly's default.
    scale : float, optional
        Multiplies the resolution of raster formats (e.g. 2 for a sharper PNG).

    Returns
    -------
    pathlib.Path
        The file written (nothing is written when rendering fails).

    Raises
    ------
    LandscapeError
        If ``fig`` is not a plotly figure, the format is not one of `IMAGE_FORMATS` (or
        ``format`` and the path's image suffix differ), ``width``/``height`` are not positive
        integers or ``scale`` a positive number, kaleido >= 1 is missing, ``BROWSER_PATH``
        is not an executable, or the browser fails to render.
    """
    fig = _check_figure(fig, "export_image")
    path = Path(path).expanduser()
    fmt = (format or path.suffix.lstrip(".") or "png").lower()
    if fmt not in IMAGE_FORMATS:
        raise LandscapeError(
            f"export_image: format {fmt!r} (from {'format=' if format else 'the suffix of '}"
            f"{format or str(path)!r}); expected one of {IMAGE_FORMATS}; e.g. use a '.png' or "
            "'.svg' path, or pass format='png'."
        )
    given = path.suffix.lstrip(".").lower()
    if format and given in IMAGE_FORMATS and {given, fmt} != {"jpg", "jpeg"} and given != fmt:
        raise LandscapeError(  # SVG bytes in a .png file, with no word (trial s38)
            f"export_image: format={format!r} but the path {str(path)!r} ends in '.{given}'; expected them to agree: "
            f"drop format= (the suffix decides) or name the file '{path.with_suffix('.' + fmt).name}'")
    for name, value in (("width", width), ("height", height)):
        positive_int(f"export_image {name}", value, none="the figure's own size", fix="pixels, e.g. 1000")
    if scale is not None:  # width=-5 or scale=0 gave a 700x500 image (trial s38)
        positive_number("export_image scale", scale, fix="a factor of the resolution, e.g. 2")
    _check_kaleido()
    import plotly.io as pio

    try:
        data = pio.to_image(fig, format=fmt, width=width, height=height, scale=scale)
    except LandscapeError:
        raise
    except Exception as exc:  # kaleido/choreographer raise RuntimeError subclasses
        if not _is_browser_error(exc):
            raise
        browser = os.environ.get("BROWSER_PATH", "a Chrome/Chromium found on PATH")
        raise LandscapeError(
            f"export_image: kaleido could not render with {browser} "
            f"({type(exc).__name__}: {exc}); expected a working Chrome or Chromium. Fix: install "
            "one (e.g. `apt-get install chromium`, or `plotly_get_chrome` with internet) and, if "
            "it is not on PATH, set BROWSER_PATH=/path/to/chromium. export_html needs no browser."
        ) from exc
    path = prepare_path(path, f"landscape{Path(path).suffix or '.png'}")
    path.write_bytes(data)
    return path


def _check_kaleido() -> None:
    if importlib.util.find_spec("kaleido") is None:
        raise LandscapeError(
            "export_image: the 'kaleido' package is not installed; expected kaleido >= 1 to "
            "render images. Fix: `pip install 'kaleido>=1'` (and have Chrome/Chromium "
            "installed), or use export_html."
        )
    from importlib.metadata import version

    major = version("kaleido").split(".")[0]
    if not major.isdigit() or int(major) < 1:
        raise LandscapeError(
            f"export_image: kaleido {version('kaleido')} is installed; expected kaleido >= 1 "
            "(the version plotly >= 6 uses). Fix: `pip install -U 'kaleido>=1'`."
        )
    browser = os.environ.get("BROWSER_PATH")
    if browser and not (Path(browser).is_file() and os.access(browser, os.X_OK)):
        raise LandscapeError(
            f"export_image: BROWSER_PATH={browser!r} is not an executable file; expected the "
            "path of a Chrome/Chromium binary. Fix: set BROWSER_PATH=/usr/bin/chromium (or "
            "wherever it is installed), or unset it to search PATH."
        )


def _is_browser_error(exc: Exception) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"ChromeNotFoundError", "BrowserFailedError", "BrowserClosedError", "KaleidoError"}:
        return True
    return isinstance(exc, RuntimeError) and "chrome" in str(exc).lower()


# ---------------------------------------------------------------------------------------
# VTK
# ---------------------------------------------------------------------------------------


def _vtk_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name) or "values"


def _fill(values: np.ndarray, fill: float | None) -> np.ndarray:
    """Non-finite entries replaced by ``fill``, or by the finite maximum (0 if none)."""
    values = np.array(values, dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        if fill is None:
            finite = values[~bad]
            fill = float(finite.max()) if finite.size else 0.0
        values[bad] = fill
    return values


@_doc
def export_vtk(
    surface: Surface,
    path: str | os.PathLike,
    name: str = "loss",
    log: bool = False,
    *,
    fill: float | None = None,
    quantity: str | None = None,
) -> Path:
    """Write a surface as a legacy ASCII VTK file for ParaView and return its path.

    A ``STRUCTURED_GRID`` of ``len(x) × len(y) × 1`` points ``(x[i], y[j], height)``, x
    varying fastest; a 1D surface is a grid of height 1 with points ``(x[i], 0, height)``.
    ``height`` is the ``name`` array, log10 of it when ``log=True`` (never clipped).
    ``POINT_DATA`` holds scalars ``loss``, every metric, ``height`` and ``valid``. A 3D
    surface (a volume) is a ``len(x) × len(y) × len(z)`` grid of points ``(x[i], y[j], z[k])``
    whose ``height`` scalar holds the ``name`` values (volume rendering, contour filters).

    Missing values: VTK's legacy ASCII reader parses numbers with C++ streams, which reject
    ``nan``/``inf``, so non-finite values (points not computed yet, diverged losses, log of
    non-positive losses) are written as ``fill``, and ``valid`` is 0 there and 1
    elsewhere: apply ParaView's Threshold filter on ``valid`` to drop them. An array missing
    values where the height is finite (a metric a run did not finish, a Hessian eigenvalue
    whose Lanczos run did not converge) gets its own mask, ``<array>_valid``. A
    ``UserWarning`` says how many points were filled, and in which arrays.

    Parameters
    ----------
    %(surface_any)s
    %(path)s
    %(name)s
    log : bool, default False
        Height is log10 of the values; non-positive values become missing.
    fill : float, optional
        Value written for missing entries; default: the finite maximum of each array (0
        when none is finite), so the geometry and colour range stay sensible; with ``log=True``
        a finite non-positive value's height is the lowest height instead (it lies below them all).
    %(quantity)s

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    LandscapeError
        If ``surface`` is not a ``Surface`` whose arrays match its grid, ``name`` is not
        ``"loss"`` or one of its metrics, ``fill`` is not finite, or ``name`` and
        ``quantity`` are both given and differ.
    """
    name = _renamed_keyword(name, quantity, where="export_vtk")
    _check_surface(surface, ndim=None, where="export_vtk")
    if fill is not None and not np.isfinite(fill):
        raise LandscapeError(
            f"export_vtk: fill={fill!r}; expected a finite number or None, because the VTK "
            "legacy ASCII reader cannot parse nan/inf."
        )
    height = display_values(surface, name=name, log=log, clip=False)  # raises for unknown name
    if name == "loss":  # every point invalid, the file written all the same (as the CLI refuses it)
        refuse_log_of_non_positive(log, [surface.loss], "export_vtk")
    done = np.asarray(surface.done_mask, dtype=bool)
    valid = np.isfinite(height) & done
    raw = np.asarray(surface.loss if name == "loss" else surface.metrics[name], dtype=float)
    below = done & np.isfinite(raw) & ~np.isfinite(height)  # log10 of a loss ≤ 0: drawn at the top, it hid
    if fill is None and below.any() and valid.any():  # a minimum of exactly 0 as the highest point (trial s38)
        height = np.where(below, height[valid].min(), height)

    x = np.asarray(surface.x, dtype=float)
    if surface.ndim == 3:  # a volume: the points are the grid itself, the values only scalars
        zz, yy, xx = np.meshgrid(np.asarray(surface.z, float), np.asarray(surface.y, float), x, indexing="ij")
        points = np.column_stack([xx.ravel(), yy.ravel(), zz.ravel()])
        dims = tuple(reversed(zz.shape))
        height = _fill(height, fill).ravel()
    elif surface.ndim == 1:
        y = np.zeros(1)
        dims = (x.size, 1, 1)
    else:
        y = np.asarray(surface.y, dtype=float)
        dims = (x.size, y.size, 1)
    if surface.ndim != 3:
        xx, yy = np.meshgrid(x, y)  # shape (ny, nx): C order ravel puts x fastest, as VTK wants
        points = np.column_stack([xx.ravel(), yy.ravel(), _fill(height, fill).ravel()])
        height = points[:, 2]
    n = points.shape[0]

    scalars = {"height": height, "valid": valid.ravel().astype(float)}
    masked = []  # arrays missing values where the height is valid: their own mask (trial s38: a metric's gaps
    for array_name, values in {"loss": surface.loss, **dict(surface.metrics)}.items():  # were its best value,
        vtk_name = _vtk_name(array_name)  # with valid 1)
        while vtk_name in scalars:  # "valid", "height" or two names sanitised alike
            vtk_name += "_"
        values = np.asarray(values, dtype=float)
        scalars[vtk_name] = _fill(values, fill).ravel()
        present = np.isfinite(values) & done
        if (valid & ~present).any():
            mask_name = vtk_name + "_valid"
            while mask_name in scalars:
                mask_name += "_"
            scalars[mask_name] = present.ravel().astype(float)
            masked.append(f"{vtk_name} ({int((valid & ~present).sum())} more points, mask {mask_name})")

    title = str(surface.provenance.get("title", "landscape_nb surface"))
    title = re.sub(r"\s+", " ", f"landscape_nb {name}{' log10' if log else ''}: {title}")[:250]
    if Path(path).suffix.lower() != ".vtk":  # ParaView picks its reader by suffix; .vtp/.vti/.vts mean XML
        raise LandscapeError(
            f"export_vtk path {str(path)!r} ends in {Path(path).suffix or 'no suffix'!r}; expected '.vtk' (this "
            "writes the legacy ASCII format, which ParaView reads only under that suffix): e.g. 'surface.vtk'")
    path = prepare_path(path, "surface.vtk")
    n_missing, said = int((~valid).sum()), []
    if n_missing:  # a partial or diverged surface made a plateau at the top, with no word (trial s38)
        what = f"log10 of the {name} (diverged, ≤ 0" if log else f"{name} (diverged"
        lowest = (f", {int(below.sum())} of them ≤ 0 and drawn at the lowest height"
                  if below.any() and fill is None and valid.any() else "")
        stand_in = f"({fill:g})" if fill is not None else "(its largest finite value)"
        said.append(f"{n_missing} of {valid.size} points have no finite {what} or not computed){lowest}; VTK files "
                    f"hold no NaN, so each array has a stand-in value there {stand_in} and the array `valid` is 0: "
                    "in ParaView apply Threshold on `valid` (1 to 1) before colouring")
    if masked:
        said.append(f"these arrays also miss values where the height is finite: {', '.join(masked)}, each 0 in its "
                    "mask there")
    if said:
        warn_user(f"landscape_nb.export_vtk: {path}: " + "; ".join(said))
    with open(path, "w", encoding="ascii", errors="replace", newline="\n") as f:
        f.write("# vtk DataFile Version 3.0\n")
        f.write(title + "\n")
        f.write("ASCII\n")
        f.write("DATASET STRUCTURED_GRID\n")
        f.write("DIMENSIONS {} {} {}\n".format(*dims))
        f.write(f"POINTS {n} double\n")
        np.savetxt(f, points, fmt="%.17g")
        f.write(f"POINT_DATA {n}\n")
        for vtk_name, values in scalars.items():
            f.write(f"SCALARS {vtk_name} double 1\nLOOKUP_TABLE default\n")
            np.savetxt(f, values.reshape(-1, 1), fmt="%.17g")
    return path
