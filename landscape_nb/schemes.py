"""Direction schemes by name: one function that the CLI and the Explorer share.

``make_directions(scheme, model, example, ndim=..., ...)`` returns ``Directions``
for the schemes in ``SCHEMES``; ``example`` is a zoo ``Example`` (or None for a
user's model), needed by schemes that use a trajectory or a pair of minimizers.
"""
from __future__ import annotations

from .errors import LandscapeError

SCHEMES = ("random", "random-orthogonal", "interpolate", "plane3", "pca", "hessian")


def make_directions(scheme: str, model, ex, *, ndim: int, norm: str = "filter", ignore="biasbn", seed: int = 0):
    """``(base model, Directions)``: the surface is centred on the base model (``model``
    itself for random schemes; the first model of a pair or plane otherwise)."""
    from . import directions as dirs

    if scheme == "random":
        return model, dirs.random_directions(model, n=ndim, norm=norm, ignore=ignore, seed=seed)
    if scheme == "random-orthogonal":
        return model, dirs.random_directions(model, n=ndim, norm=norm, ignore=ignore, seed=seed, orthogonalize=True)
    if scheme == "interpolate":
        if ndim != 1:
            raise LandscapeError("--directions interpolate is a 1D scan; use --grid N (e.g. --grid 51)")
        if ex is None:
            raise LandscapeError("--directions interpolate needs a zoo model (it interpolates between the "
                                 "zoo's minimizer pair); use the Python API for your own pair of models")
        a, b = _pair(ex)
        return a, dirs.interpolation_direction(a, b, include_buffers=True)
    if scheme == "plane3":
        if ndim != 2 or ex is None or len(ex.trajectory) < 3:
            raise LandscapeError("--directions plane3 needs a 2D grid and a zoo model with a trajectory")
        from .zoo import model_from_state

        t = ex.trajectory
        a, b, c = model, model_from_state(ex.name, t[0]), model_from_state(ex.name, t[len(t) // 2])
        return a, dirs.plane_directions(a, b, c)
    if scheme in ("pca", "hessian"):
        raise LandscapeError(f"--directions {scheme} is not available in this version; use random or interpolate")
    raise LandscapeError(f"--directions {scheme!r}; expected one of {SCHEMES}")


def _pair(ex):
    """The two models an interpolation runs between: the minimizer pair, else init → final."""
    if ex.minimizers and len(ex.minimizers) >= 2:
        a, b = list(ex.minimizers.values())[:2]
        return a, b
    from .zoo import model_from_state

    return model_from_state(ex.name, ex.trajectory[0]), ex.model
