"""landscape_nb: interactive neural-network loss landscapes (Li et al., NeurIPS 2018).

>>> import landscape_nb as lnb
>>> ex = lnb.zoo.load("resnet20-digits")
>>> d = lnb.random_directions(ex.model, n=2, norm="filter", ignore="biasbn", seed=0)
>>> surf = lnb.compute_surface(ex.model, ex.test, d, x=(-1, 1, 51), y=(-1, 1, 51))
>>> lnb.export_html(lnb.plot.surface(surf), "r20.html")
>>> lnb.Explorer()          # the widget panel (in a notebook)

Names load on first use, so plotting a saved surface never imports torch or Dask.
"""
from .errors import LandscapeError
from .surface import Surface
from .sharpness import sharpness  # numpy only; bound after surface's import of the module, which set the name

__version__ = "0.1.0"

_LAZY = {
    "plot": ("landscape_nb.plot", None),
    "zoo": ("landscape_nb.zoo", None),
    "cluster": ("landscape_nb.cluster", None),
    "widgets": ("landscape_nb.widgets", None),  # ExplorerState: the panel's state, without widgets
    "grid": ("landscape_nb.grid", None),
    "export_html": ("landscape_nb.plot.export", "export_html"),
    "export_image": ("landscape_nb.plot.export", "export_image"),
    "export_vtk": ("landscape_nb.plot.export", "export_vtk"),
    "load_surface": ("landscape_nb.store", "load_surface"),
    "load_directions": ("landscape_nb.store", "load_directions"),
    "compute_surface": ("landscape_nb.compute", "compute_surface"),
    "points_summary": ("landscape_nb.compute", "points_summary"),
    "ClusterLost": ("landscape_nb.runners", "ClusterLost"),
    "ModelOffGrid": ("landscape_nb.grid", "ModelOffGrid"),
    "Directions": ("landscape_nb.directions", "Directions"),
    "as_directions": ("landscape_nb.directions", "as_directions"),
    "random_directions": ("landscape_nb.directions", "random_directions"),
    "interpolation_direction": ("landscape_nb.model_paths", "interpolation_direction"),
    "plane_directions": ("landscape_nb.model_paths", "plane_directions"),
    "orthogonalize": ("landscape_nb.directions", "orthogonalize"),
    "Explorer": ("landscape_nb.widgets", "Explorer"),
    "pca_directions": ("landscape_nb.trajectory", "pca_directions"),
    "project_trajectory": ("landscape_nb.trajectory", "project_trajectory"),
    "HessianOperator": ("landscape_nb.hessian", "HessianOperator"),
    "hessian_eigenvalues": ("landscape_nb.hessian", "hessian_eigenvalues"),
    "hessian_directions": ("landscape_nb.hessian", "hessian_directions"),
    "hessian_trace": ("landscape_nb.hessian", "hessian_trace"),
    "eigen_map": ("landscape_nb.eigen_maps", "eigen_map"),
    "interpolation_surface": ("landscape_nb.paths", "interpolation_surface"),
    "loss_barrier": ("landscape_nb.sharpness", "loss_barrier"),
    "bezier_curve": ("landscape_nb.paths", "bezier_curve"),
    "polychain_curve": ("landscape_nb.paths", "polychain_curve"),
    "ModeCurve": ("landscape_nb.paths", "ModeCurve"),  # docs/api/analysis.md: "all of these are lnb.<name>"
    "reparametrize": ("landscape_nb.reparam", "reparametrize"),
    "rescalable_layers": ("landscape_nb.reparam", "rescalable_layers"),
    "hessian_spectrum": ("landscape_nb.spectrum", "hessian_spectrum"),
    "auto_range": ("landscape_nb.autorange", "auto_range"),
    "TrajectoryRecorder": ("landscape_nb.recorder", "TrajectoryRecorder"),
    "topology": ("landscape_nb.persistence", "topology"),
    "load_reference_directions": ("landscape_nb.reference", "load_reference_directions"),
    "save_reference_directions": ("landscape_nb.reference", "save_reference_directions"),
    "load_reference_surface": ("landscape_nb.reference", "load_reference_surface"),
    "save_reference_surface": ("landscape_nb.reference", "save_reference_surface"),
}

__all__ = ["LandscapeError", "Surface", "sharpness", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        return module if attr is None else getattr(module, attr)
    raise AttributeError(f"module 'landscape_nb' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
