"""Store overhead per tile and ``load_surface`` time for a 10,000-tile store.

    python benchmarks/bench_store.py                  # 100 x 100 grid, tile (1, 1): 10,000 tiles
    python benchmarks/bench_store.py --timed 500 --fill-direct   # the old per-tile store: time 500 writes

1. Store overhead per tile: ``SurfaceStore.write`` for each (1, 1) tile in the order
   ``compute_surface`` writes them (coarse to fine), plus the closing provenance update
   (which flushes a buffering store), divided by the number of tiles timed.
2. ``load_surface`` of the finished 10,000-tile store (median of ``--repeats`` loads).
3. End to end: ``compute_surface`` of a tiny model, tile (1, 1), with and without a store;
   the difference per tile is the overhead a user sees (medians of runs taken in turn; this
   shared VM drifts), and the time spent inside the store's methods during such a run.

``--fill-direct`` writes the untimed remaining tiles straight into the zarr arrays (the
original per-tile store needs ~14 ms a tile, 140 s for 10,000); it needs the arrays to exist
under ``store.group``.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import landscape_nb as lnb
from landscape_nb.grid import Grid, coarse_to_fine
from landscape_nb.store import SurfaceStore


def write_store(path: Path, n: int, timed: int, fill_direct: bool) -> float:
    grid = Grid.make((-1, 1, n), (-1, 1, n))
    spec = {"version": 1, "grid": grid.to_json(), "bench": "store"}
    st = SurfaceStore.open_or_create(path, spec, "bench-key", (1, 1), (1, 1), ["accuracy"], {"label": "bench"})
    tiles = {t.index: t for t in grid.tiles((1, 1))}
    order = [tiles[ij] for ij in coarse_to_fine((n, n))]
    rng = np.random.default_rng(0)
    values = rng.random((len(order), 1, 1, 2))
    t0 = time.perf_counter()
    for k, t in enumerate(order[:timed]):
        st.write(t, values[k])
    elapsed_writes = time.perf_counter() - t0
    if fill_direct and timed < len(order):
        full = np.empty((n, n, 2))
        for k, t in enumerate(order):
            full[t.y0, t.x0] = values[k, 0, 0]
        st.group["loss"][:] = full[..., 0]
        st.group["metric.accuracy"][:] = full[..., 1]
        st.group["done"][:] = np.ones((n, n), dtype="uint8")
    else:
        for k, t in enumerate(order[timed:], start=timed):
            st.write(t, values[k])
    t1 = time.perf_counter()
    st.update_provenance({"seconds": 0.0})
    if hasattr(st, "close"):
        st.close()
    per_tile = (elapsed_writes + time.perf_counter() - t1) / timed
    return per_tile


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x)


def end_to_end(tmp: Path, n: int, repeats: int = 3) -> tuple[float, float]:
    """Seconds per tile without and with a store (a new one each time): medians of runs taken in turn."""
    torch.manual_seed(0)
    model = Tiny()
    data = (torch.randn(16, 4), torch.randint(0, 3, (16,)))
    d = lnb.random_directions(model, n=2, seed=0)
    kw = dict(x=(-1, 1, n), y=(-1, 1, n), tile=(1, 1))
    plain = lnb.compute_surface(model, data, d, **kw)  # warm-up, both ways (imports, first zarr calls)
    lnb.compute_surface(model, data, d, **kw, store=tmp / "warm.zarr")
    t_plain, t_store = [], []
    for k in range(repeats):
        t0 = time.perf_counter()
        lnb.compute_surface(model, data, d, **kw)
        t_plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        stored = lnb.compute_surface(model, data, d, **kw, store=tmp / f"e2e{k}.zarr")
        t_store.append(time.perf_counter() - t0)
        # batch size and points per pass are tuned by timing in each run: float32 rounding paths may differ
        np.testing.assert_allclose(plain.loss, stored.loss, rtol=1e-5)
    return float(np.median(t_plain)) / n**2, float(np.median(t_store)) / n**2


def store_seconds_in_run(tmp: Path, n: int) -> float:
    """Seconds per tile spent inside the store's methods during one ``compute_surface`` run with a
    store (tile (1, 1)): robust to this VM's drift, unlike the wall-time difference above.
    Background flushes (another thread) are counted too."""
    import threading

    spent = [0.0]
    depth = threading.local()
    names = ["open_or_create", "read", "write", "update_provenance", "close", "_flush_locked"]
    saved = {}
    for name in names:
        raw = SurfaceStore.__dict__.get(name)
        if raw is None:
            continue
        saved[name] = raw
        func = raw.__func__ if isinstance(raw, classmethod) else raw

        def timed(*a, _f=func, **k):
            outer = getattr(depth, "n", 0) == 0
            depth.n = getattr(depth, "n", 0) + 1
            t0 = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                depth.n -= 1
                if outer:
                    spent[0] += time.perf_counter() - t0
        setattr(SurfaceStore, name, classmethod(timed) if isinstance(raw, classmethod) else timed)
    try:
        torch.manual_seed(0)
        model = Tiny()
        data = (torch.randn(16, 4), torch.randint(0, 3, (16,)))
        d = lnb.random_directions(model, n=2, seed=0)
        lnb.compute_surface(model, data, d, x=(-1, 1, n), y=(-1, 1, n), tile=(1, 1), store=tmp / "timed.zarr")
    finally:
        for name, raw in saved.items():
            setattr(SurfaceStore, name, raw)
    return spent[0] / n**2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100, help="grid side: n*n tiles of (1, 1)")
    p.add_argument("--timed", type=int, default=None, help="tiles whose writes are timed (default: all)")
    p.add_argument("--fill-direct", action="store_true", help="write untimed tiles straight into zarr")
    p.add_argument("--repeats", type=int, default=3, help="load_surface repeats (median)")
    p.add_argument("--e2e", type=int, default=30, help="grid side of the end-to-end run (0: skip)")
    p.add_argument("--e2e-repeats", type=int, default=3, help="end-to-end runs of each kind (median)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        n_tiles = args.n ** 2
        timed = min(args.timed or n_tiles, n_tiles)
        path = tmp / "s.zarr"
        per_tile = write_store(path, args.n, timed, args.fill_direct)
        print(f"store overhead per tile (tile=(1,1), {timed} tiles timed of {n_tiles}): {per_tile * 1e3:.3f} ms")
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            surf = lnb.load_surface(path)
            times.append(time.perf_counter() - t0)
        assert surf.n_done == n_tiles, (surf.n_done, n_tiles)
        print(f"load_surface of {n_tiles} tiles: {np.median(times):.3f} s (median of {args.repeats})")
        if args.e2e:
            plain, stored = end_to_end(tmp, args.e2e, args.e2e_repeats)
            print(f"compute_surface tile=(1,1) {args.e2e}x{args.e2e}: {plain * 1e3:.3f} ms/tile without a store, "
                  f"{stored * 1e3:.3f} ms/tile with one (overhead {(stored - plain) * 1e3:.3f} ms/tile)")
            inside = store_seconds_in_run(tmp, args.e2e)
            print(f"time inside the store's methods during that run: {inside * 1e3:.3f} ms/tile "
                  "(creation, writes, flushes, provenance, close)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
