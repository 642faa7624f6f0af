"""A persistent, resumable surface store: a zarr group chunked per tile plus a JSON manifest.

Layout of ``path/`` (zarr v3, plain JSON metadata and binary chunks, no pickle):
``loss`` and ``metric.<name>`` float64 arrays (rows, cols), ``done`` uint8 array with
the same chunks, and the manifest in the group attributes (``zarr.json``): the spec,
its hash key, the tile shape and provenance. A tile's values are written before its
``done`` chunk, so a run killed at any moment resumes with every finished tile.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import LandscapeError
from .grid import Grid, Tile
from .surface import Surface

logger = logging.getLogger(__name__)
FORMAT = "landscape_nb.surface/1"


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def spec_differences(stored: Mapping, wanted: Mapping) -> list[str]:
    a, b = _flatten(stored), _flatten(wanted)
    return [f"{k}: stored {a.get(k)!r}, now {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


@dataclass
class SurfaceStore:
    """Open store at ``path``; create with ``SurfaceStore.create``, open with ``SurfaceStore.open``."""

    path: Path
    group: Any
    manifest: dict

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> "SurfaceStore":
        import zarr

        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise LandscapeError(
                f"no landscape store at {str(path)!r} (no zarr.json there); expected a directory written by "
                "compute_surface(..., store=PATH)"
            )
        try:
            group = zarr.open_group(str(path), mode=mode)
            manifest = dict(group.attrs["landscape_nb"])
        except Exception as exc:  # zarr raises many kinds for damaged metadata
            raise LandscapeError(
                f"cannot read the landscape store at {str(path)!r} ({type(exc).__name__}: {exc}); "
                "it is damaged or not a landscape_nb store: delete it or choose another path"
            ) from None
        if manifest.get("format") != FORMAT:
            raise LandscapeError(
                f"{str(path)!r} holds format {manifest.get('format')!r}; expected {FORMAT!r}: choose another path"
            )
        return cls(path, group, manifest)

    @classmethod
    def create(cls, path: str | Path, spec: dict, key: str, tile: tuple[int, int],
               metric_names: list[str], provenance: dict) -> "SurfaceStore":
        import zarr

        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise LandscapeError(
                f"{str(path)!r} exists and is not an empty landscape store; choose a new path or delete it"
            )
        grid = grid_from_spec(spec)
        shape = grid.store_shape  # (rows, cols), or (nz, ny, nx) for a volume
        chunks = tuple(min(t, n) for t, n in zip(tile, shape))
        group = zarr.open_group(str(path), mode="w")
        for name in ["loss"] + [f"metric.{m}" for m in metric_names]:
            group.create_array(name, shape=shape, chunks=chunks, dtype="float64", fill_value=np.nan)
        group.create_array("done", shape=shape, chunks=chunks, dtype="uint8", fill_value=0)
        manifest = {"format": FORMAT, "key": key, "spec": spec, "tile": list(tile),
                    "metrics": list(metric_names), "provenance": provenance}
        group.attrs["landscape_nb"] = json.loads(json.dumps(manifest))
        return cls(path, group, manifest)

    @classmethod
    def open_or_create(cls, path, spec: dict, key: str, tile, default_tile, metric_names,
                       provenance) -> "SurfaceStore":
        """Resume a store whose spec key matches; refuse one that holds a different surface.

        ``tile=None`` resumes with the stored tiling, or creates with ``default_tile``."""
        path = Path(path)
        if not (path / "zarr.json").exists():
            return cls.create(path, spec, key, tile or default_tile, metric_names, provenance)
        store = cls.open(path, mode="a")
        if store.manifest["key"] != key:
            diffs = spec_differences(store.manifest["spec"], spec)
            raise LandscapeError(
                f"the store {str(path)!r} holds a different surface, so it cannot be resumed; differences: "
                + "; ".join(diffs[:6])
                + ". Use another store path, or delete this one to recompute."
            )
        if tile is not None and tuple(store.manifest["tile"]) != tuple(tile):
            raise LandscapeError(
                f"the store {str(path)!r} was tiled {tuple(store.manifest['tile'])}, now {tuple(tile)} was asked; "
                "pass tile=None (or the stored tile) to resume it"
            )
        return store

    @property
    def tile(self) -> tuple[int, int]:
        return tuple(self.manifest["tile"])  # type: ignore[return-value]

    @property
    def metric_names(self) -> list[str]:
        return list(self.manifest["metrics"])

    def done_mask(self) -> np.ndarray:
        return self.group["done"][:].astype(bool)

    def write(self, tile: Tile, values: np.ndarray) -> None:
        """``values``: (*tile.shape, 1 + n_metrics), loss first."""
        sl = tile.region
        self.group["loss"][sl] = values[..., 0]
        for k, m in enumerate(self.metric_names, start=1):
            self.group[f"metric.{m}"][sl] = values[..., k]
        self.group["done"][sl] = np.ones(tile.shape, dtype="uint8")

    def read(self) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        loss = self.group["loss"][:]
        metrics = {m: self.group[f"metric.{m}"][:] for m in self.metric_names}
        return loss, metrics, self.done_mask()

    def update_provenance(self, extra: Mapping[str, Any]) -> None:
        self.manifest["provenance"] = {**self.manifest["provenance"], **extra}
        self.group.attrs["landscape_nb"] = json.loads(json.dumps(self.manifest))

    def surface(self) -> Surface:
        loss, metrics, done = self.read()
        return make_surface(self.manifest["spec"], loss, metrics, done, self.manifest["provenance"])


def grid_from_spec(spec: Mapping) -> Grid:
    g = spec["grid"]
    return Grid.make(tuple(g["x"]), None if g["y"] is None else tuple(g["y"]),
                     None if g.get("z") is None else tuple(g["z"]))


def make_surface(spec: Mapping, loss: np.ndarray, metrics: Mapping[str, np.ndarray], done: np.ndarray,
                 provenance: Mapping) -> Surface:
    """Build a Surface from stored (rows, cols) or (nz, ny, nx) arrays; 1D grids are squeezed to (cols,)."""
    grid = grid_from_spec(spec)
    shape = grid.shape
    return Surface(
        x=grid.x.values(),
        y=None if grid.y is None else grid.y.values(),
        loss=loss.reshape(shape),
        metrics={k: v.reshape(shape) for k, v in metrics.items()},
        done=done.reshape(shape).astype(bool),
        spec=dict(spec),
        provenance=dict(provenance),
        z=None if grid.z is None else grid.z.values(),
    )


def load_surface(path: str | Path) -> Surface:
    """The (possibly partial) surface saved at ``path`` by ``compute_surface(..., store=path)``.

    >>> surf = lnb.load_surface("runs/resnet20.zarr")
    >>> surf.is_complete, surf.n_done

    Reading runs no code (zarr arrays and JSON metadata, no pickle), so a store
    from elsewhere is safe to open. A store of a run that was stopped holds every
    finished tile; the missing points are NaN with ``done`` False, and running the
    same ``compute_surface(..., store=path)`` again resumes it.

    Parameters
    ----------
    path : str or pathlib.Path
        The store's directory (it holds ``zarr.json``).

    Returns
    -------
    Surface
        ``x`` (n_x,), ``y`` (n_y,) or None, ``loss`` and metrics of shape
        (n_y, n_x) or (n_x,) in the units of the loss and metrics, ``done`` of the
        same shape, and the stored ``spec`` and ``provenance``.

    Raises
    ------
    LandscapeError
        No store at ``path``, a damaged store, or a store of another format.

    References
    ----------
    H. Li, Z. Xu, G. Taylor, C. Studer and T. Goldstein, "Visualizing the Loss
    Landscape of Neural Nets", NeurIPS 2018.
    """
    return SurfaceStore.open(path).surface()
