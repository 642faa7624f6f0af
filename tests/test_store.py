"""Stores: resume only the missing tiles, refuse a different spec, plain JSON manifests, clear errors."""
import numpy as np
import pytest

import landscape_nb as lnb
from landscape_nb import LandscapeError
from landscape_nb.store import SurfaceStore

from conftest import make_mlp, random_dict_dirs


class Crash(Exception):
    pass


def test_interrupted_run_resumes_only_missing_tiles(tmp_path, mlp, mlp_data):
    dirs = random_dict_dirs(mlp, 2)
    store = tmp_path / "s.zarr"
    grid = dict(x=(-1, 1, 7), y=(-1, 1, 5), tile=(2, 3))  # 3 x 3 = 9 tiles

    def crash_after(k):
        def cb(ev):
            if ev.n_done and cb.count == k - 1:
                raise Crash()
            cb.count += 1
        cb.count = 0
        return cb

    with pytest.raises(Crash):
        lnb.compute_surface(mlp, mlp_data, dirs, **grid, store=store, callbacks=[crash_after(4)])
    partial = lnb.load_surface(store)
    n_before = partial.n_done
    assert 0 < n_before < 35 and np.isnan(partial.loss[~partial.done_mask]).all()
    seen = []
    s = lnb.compute_surface(mlp, mlp_data, dirs, **grid, store=store, callbacks=[seen.append])
    assert len(seen) == 9 - 4 and sum(e.tile.n_points for e in seen) == 35 - n_before
    clean = lnb.compute_surface(mlp, mlp_data, dirs, **grid)
    # equal up to rounding: points per pass are chosen by timing, so two runs may stack points differently
    np.testing.assert_allclose(s.loss, clean.loss, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(lnb.load_surface(store).loss, s.loss)
    again = []
    lnb.compute_surface(mlp, mlp_data, dirs, **grid, store=store, callbacks=[again.append])
    assert again == []  # complete store: nothing recomputed


@pytest.mark.parametrize("change, word", [
    (dict(x=(-1, 1, 8)), "grid.x"),
    (dict(max_samples=50), "max_samples"),
    (dict(seed=1), "directions.fingerprint"),
    (dict(model_seed=3), "model.weights"),
])
def test_store_with_different_spec_refuses_naming_difference(tmp_path, mlp_data, change, word):
    store = tmp_path / "s.zarr"
    base = dict(x=(-1, 1, 7), y=(-1, 1, 5))
    m = make_mlp()
    lnb.compute_surface(m, mlp_data, lnb.random_directions(m, seed=0), **base, store=store)
    kw = {**base, **{k: v for k, v in change.items() if k not in ("seed", "model_seed")}}
    m2 = make_mlp(change.get("model_seed", 0))
    d2 = lnb.random_directions(m2, seed=change.get("seed", 0))
    with pytest.raises(LandscapeError, match=word):
        lnb.compute_surface(m2, mlp_data, d2, **kw, store=store)


def test_store_manifest_is_json_and_surface_roundtrips(tmp_path, mlp, mlp_data):
    import json
    store = tmp_path / "s.zarr"
    s = lnb.compute_surface(mlp, mlp_data, lnb.random_directions(mlp), x=(-1, 1, 4), y=(0, 1, 3), store=store)
    meta = json.loads((store / "zarr.json").read_text())
    assert meta["attributes"]["landscape_nb"]["spec"]["grid"] == {"x": [-1.0, 1.0, 4], "y": [0.0, 1.0, 3]}
    r = lnb.load_surface(store)
    np.testing.assert_array_equal(r.loss, s.loss)
    np.testing.assert_array_equal(r.metrics["accuracy"], s.metrics["accuracy"])
    np.testing.assert_array_equal(r.y, s.y)
    ds = r.to_xarray()
    assert float(ds["loss"].sel(x=r.x[2], y=r.y[1])) == s.loss[1, 2]


def test_unreadable_store(tmp_path):
    bad = tmp_path / "bad.zarr"
    bad.mkdir()
    (bad / "zarr.json").write_text("{not json")
    with pytest.raises(LandscapeError, match="cannot read the landscape store"):
        lnb.load_surface(bad)
    with pytest.raises(LandscapeError, match="no landscape store"):
        lnb.load_surface(tmp_path / "missing")
    other = tmp_path / "other"
    other.mkdir()
    (other / "file.txt").write_text("x")
    with pytest.raises(LandscapeError, match="not an empty landscape store"):
        SurfaceStore.create(other, {"grid": {"x": [0, 1, 2], "y": None}}, "k", (1, 1), [], {})
