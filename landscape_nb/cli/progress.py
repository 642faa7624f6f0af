"""A tqdm progress bar as a ``compute_surface`` callback (the CLI's and the demo's)."""
from __future__ import annotations

import sys


class TqdmProgress:
    """A ``compute_surface`` callback drawing a tqdm bar over grid points."""

    def __init__(self, desc: str):
        self.desc = desc
        self.bar = None

    def __call__(self, ev) -> None:
        from tqdm.auto import tqdm

        if self.bar is None:
            self.bar = tqdm(total=ev.n_points, initial=ev.n_done - ev.tile.n_points, desc=self.desc,
                            unit="pt", leave=True, file=sys.stderr)
        self.bar.update(ev.tile.n_points)
        if ev.n_done >= ev.n_points:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
