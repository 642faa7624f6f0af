"""The result of a landscape computation: coordinates, loss and metric values.

A `Surface` is a plain, frozen container of numpy arrays. It knows nothing of
torch, Dask or Plotly, so plots and stores can use it anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np


@dataclass(frozen=True, eq=False)
class Surface:
    """Loss (and metrics) over a 1D line or a 2D plane.

    ``loss[j, i]`` is the value at ``(x[i], y[j])`` (2D) and ``loss[i]`` at ``x[i]`` (1D).
    Points not computed yet (a partial surface, while tiles stream in) are NaN and
    ``done`` is False there; a computed point may still be NaN/inf when the loss diverged.

    ``spec`` is the JSON description of everything that defines the values (model,
    data, directions, grid, evaluation settings); ``provenance`` holds descriptive
    extras (direction scheme and labels, versions, timings).
    """

    x: np.ndarray
    y: np.ndarray | None
    loss: np.ndarray
    metrics: Mapping[str, np.ndarray] = field(default_factory=dict)
    done: np.ndarray | None = None
    spec: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2

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
    def x_label(self) -> str:
        return str(self.provenance.get("x_label", "α (direction 1)"))

    @property
    def y_label(self) -> str:
        return str(self.provenance.get("y_label", "β (direction 2)"))

    def values(self, name: str = "loss") -> np.ndarray:
        """The array for ``"loss"`` or a metric name."""
        if name == "loss":
            return self.loss
        if name not in self.metrics:
            from .errors import LandscapeError

            raise LandscapeError(
                f"surface has no quantity {name!r}; expected 'loss' or one of {sorted(self.metrics)}"
            )
        return self.metrics[name]

    def sharpness(self, radius: float | None = None) -> dict:
        """Loss increase at ``radius`` and curvature at the centre along each axis
        (``{"x": AxisSharpness, "y": ...}``; see ``landscape_nb.sharpness``)."""
        from .sharpness import sharpness

        return sharpness(self, radius)

    def to_xarray(self):
        """An ``xarray.Dataset`` with ``loss`` and every metric on (y, x) or (x,) coords."""
        import xarray as xr

        dims = ("x",) if self.y is None else ("y", "x")
        coords = {"x": self.x} if self.y is None else {"x": self.x, "y": self.y}
        data = {"loss": (dims, self.loss)}
        data.update({name: (dims, arr) for name, arr in self.metrics.items()})
        data["done"] = (dims, self.done_mask)
        attrs = {k: v for k, v in self.provenance.items() if isinstance(v, (str, int, float))}
        return xr.Dataset(data, coords=coords, attrs=attrs)
