"""Plotly figures of loss landscapes (Li et al., "Visualizing the Loss Landscape of Neural
Nets", NeurIPS 2018): 1D curves, contours, heatmaps, rotatable 3D surfaces, trajectory
overlays, side-by-side comparisons with one colour scale, live figures, and file export.

Every builder takes the data first and styling as keyword-only arguments, returns a new
``plotly.graph_objects.Figure`` and never shows it::

    import landscape_nb as lnb
    fig = lnb.plot.contour(surf, levels=40, log=True)
    fig = lnb.plot.compare([with_skip, without_skip], kind="surface", titles=["skip", "no skip"])
    fig = lnb.widgets.figure_widget(lnb.plot.live(partial))  # then lnb.plot.update(fig, newer) per tile
    lnb.plot.export_html(fig, "landscape.html")

Display rules shared by all builders:

* Points not computed yet (NaN) and diverged points (inf) are gaps, never zeros.
* ``log=True`` shows log10(loss); non-positive losses have no logarithm and are gaps.
* Clipping caps huge losses so one diverged corner does not flatten the picture; the hover
  text always shows the true values.
* The hover text names the parameters the directions held fixed (frozen tensors; biases and
  norm weights under ``ignore="biasbn"``), at most six, then "+N more"; the full lists are in
  ``fig.layout.meta["held_fixed"]``. Nothing is shown when the provenance records none.

The modules: ``_common`` (checks, the display transform, hover, colour and contour
helpers), ``figures`` (line, contour, heatmap, surface, compare), ``analysis`` (PCA planes,
eigen-maps, paths, sharpness), ``spectrum`` (Hessian spectral density), ``persistence``
(persistence diagrams), ``animation`` (a path over the contours), ``live`` (live, update) and ``export`` (HTML, images, VTK).
This package imports neither torch, Dask nor ipywidgets.
"""
from ._common import (
    CLIP_FACTOR,
    COLORSCALE,
    SURFACE_LEVELS,
    TRAJECTORY_COLORSCALE,
    clip_limit,
    display_values,
    hover_customdata,
    hover_template,
    to_plotly_z,
)
from ._common import _check_surface, _transform  # reached from outside before the split
from .analysis import eigen_map, line_panels, paths, pca_contour, with_sharpness
from .animation import animate
from .export import IMAGE_FORMATS, export_html, export_image, export_vtk, mark_partial
from .figures import compare, contour, heatmap, line, surface
from .depth import depth_figure
from .live import LIVE_LEVELS, live, update
from .persistence import persistence
from .spectrum import spectrum
from .splits import line_splits
from .volume import volume, volume_slices

__all__ = [
    # figures
    "line",
    "contour",
    "heatmap",
    "surface",
    "compare",
    # analysis
    "with_sharpness",
    "pca_contour",
    "eigen_map",
    "paths",
    "line_panels",
    "spectrum",
    "persistence",
    "animate",
    "depth_figure",
    "volume",
    "volume_slices",
    "line_splits",
    # live
    "live",
    "update",
    # display helpers
    "display_values",
    "clip_limit",
    "to_plotly_z",
    "hover_template",
    "hover_customdata",
    # export
    "export_html",
    "export_image",
    "export_vtk",
    "mark_partial",
]
