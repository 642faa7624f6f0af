"""landscape_nb: interactive neural-network loss landscapes (Li et al., NeurIPS 2018)."""
from .errors import LandscapeError
from .surface import Surface

__version__ = "0.1.0"
from .directions import (Directions, interpolation_direction, orthogonalize, plane_directions,
                         random_directions)
from .compute import compute_surface
from .store import load_surface
