"""landscape_nb: interactive neural-network loss landscapes (Li et al., NeurIPS 2018)."""
from .errors import LandscapeError
from .surface import Surface

__version__ = "0.1.0"

from .directions import (Directions, as_directions, interpolation_direction, orthogonalize,  # noqa: E402
                         plane_directions, random_directions)
from .compute import compute_surface  # noqa: E402
from .store import load_surface  # noqa: E402

_LAZY = {
    "plot": ("landscape_nb.plot", None),
    "zoo": ("landscape_nb.zoo", None),
    "cluster": ("landscape_nb.cluster", None),
    "export_html": ("landscape_nb.export", "export_html"),
    "export_image": ("landscape_nb.export", "export_image"),
    "export_vtk": ("landscape_nb.export", "export_vtk"),
}


def __getattr__(name):
    # Plotting, the zoo and Dask load on first use, so `import landscape_nb` stays light.
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        return module if attr is None else getattr(module, attr)
    raise AttributeError(f"module 'landscape_nb' has no attribute {name!r}")
