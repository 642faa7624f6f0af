"""Stores: resume only the missing tiles, refuse a different spec, plain JSON manifests, clear errors."""
import logging

import numpy as np
import pytest
import torch

import landscape_nb as lnb
from landscape_nb import LandscapeError
from landscape_nb.compute import points_summary
from landscape_nb.store import SurfaceStore

from conftest import make_mlp, naive_loss, random_dict_dirs


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


class Renamed(torch.nn.Sequential):
    """``make_mlp``'s model under another class name."""


def _scaled_ce(outputs, targets):
    return torch.nn.functional.cross_entropy(outputs, targets)


# (what the second run changes, words the refusal must hold: the field named and both values)
MISMATCHES = [
    ({"seed": 1}, "direction seed (CLI --seed): 0 stored, 1 now"),
    ({"norm": "layer"}, "direction norm (CLI --norm): 'filter' stored, 'layer' now"),
    ({"ignore": None}, "direction ignore (CLI --ignore): 'biasbn' stored, None (--ignore none) now"),
    ({"x": (-1, 1, 8)}, "grid x (CLI --grid and --range/--yrange/--zrange): (-1, 1, 7) stored, (-1, 1, 8) now"),
    ({"y": (-0.5, 1, 5)}, "grid y (CLI --grid and --range/--yrange/--zrange): (-1, 1, 5) stored, (-0.5, 1, 5) now"),
    ({"max_samples": 50}, "max_samples (CLI --max-samples): None (all samples) stored, 50 now"),
    ({"max_samples": 50}, "number of evaluation samples: 97 stored, 50 now"),
    ({"n_data": 60}, "number of evaluation samples: 97 stored, 60 now"),
    ({"precision": "bf16"}, "precision (CLI --precision): 'fp32' stored, 'bf16' now"),
    ({"mode": "bn-recompute"}, "mode (CLI --mode): 'eval' stored, 'bn-recompute' now"),
    ({"metrics": None}, "metrics: ['accuracy'] stored, [] now"),
    ({"loss_fn": _scaled_ce}, "loss function: 'cross_entropy' stored, 'test_store._scaled_ce' now"),
    ({"model_class": Renamed}, "model class: 'Sequential' stored, 'Renamed' now"),
    # nothing readable holds what changed: the fingerprints, named as such
    ({"model_seed": 3}, ("the model's weights (state_dict; another checkpoint, or weights changed after loading): "
                         "fingerprint {old[model][weights]} stored, {new[model][weights]} now")),
    ({"data_shift": 1.0}, ("the evaluation data (97 samples both times, other values): "
                           "fingerprint {old[data][fingerprint]} stored, {new[data][fingerprint]} now")),
]


@pytest.mark.parametrize("change, words", MISMATCHES, ids=[f"{next(iter(c))}-{i}" for i, (c, _) in
                                                           enumerate(MISMATCHES)])
def test_store_with_different_spec_refuses_naming_the_field_and_both_values(tmp_path, mlp_data, change, words):
    """The refusal says what differs in words, the stored value and the new one, and how to go on;
    a fingerprint only where no readable value exists (then the two specs' own fingerprints)."""
    store = tmp_path / "s.zarr"
    base = {"x": (-1, 1, 7), "y": (-1, 1, 5)}
    m = make_mlp()
    first = lnb.compute_surface(m, mlp_data, lnb.random_directions(m, n=2, seed=0), **base, store=store)
    m2 = make_mlp(change.get("model_seed", 0))
    if "model_class" in change:
        m2 = change["model_class"](*m2)
    x, y = mlp_data
    data = (x[:change.get("n_data", len(x))] + change.get("data_shift", 0.0), y[:change.get("n_data", len(x))])
    d2 = lnb.random_directions(m2, n=2, seed=change.get("seed", 0), norm=change.get("norm", "filter"),
                               ignore=change.get("ignore", "biasbn"))
    kw = {**base, **{k: v for k, v in change.items() if k in ("x", "y", "max_samples", "precision", "mode",
                                                              "metrics", "loss_fn")}}
    with pytest.raises(LandscapeError) as info:
        lnb.compute_surface(m2, data, d2, **kw, store=store)
    msg = str(info.value)
    digests = "{" in words
    if digests:  # the second run's spec, for its fingerprints
        new = lnb.compute_surface(m2, data, d2, **kw)
        words = words.format(old=first.spec, new=new.spec)
    assert msg.startswith(f"the store {str(store)!r} holds a different surface, so it cannot be resumed; what differs: ")
    assert words in msg, msg
    assert "To resume it, rerun with the stored values; otherwise use another store path, or delete this one" in msg
    if not digests:
        assert "fingerprint" not in msg  # readable values only: no digests
    np.testing.assert_array_equal(lnb.load_surface(store).loss, first.loss)  # the store is untouched


def test_the_form_data_were_read_from_is_context_not_a_difference(tmp_path, mlp_data):
    """The same values as a TensorDataset resume a store made from a tuple; where something else changed the
    data (max_samples, other values), "data source: 'tuple' stored, 'TensorDataset' now" was listed as if it
    were a reason; now the reason is named and the source is only context beside the fingerprint."""
    from torch.utils.data import TensorDataset

    store = tmp_path / "s.zarr"
    m = make_mlp()
    d = lnb.random_directions(m, n=2, seed=0)
    grid = {"x": (-1, 1, 5), "y": (-1, 1, 3)}
    first = lnb.compute_surface(m, mlp_data, d, **grid, store=store)
    again = lnb.compute_surface(m, TensorDataset(*mlp_data), d, **grid, store=store)
    assert again.provenance["points_from_store"] == 15
    np.testing.assert_array_equal(again.loss, first.loss)
    with pytest.raises(LandscapeError) as info:
        lnb.compute_surface(m, TensorDataset(*mlp_data), d, **grid, max_samples=50, store=store)
    assert "max_samples (CLI --max-samples): None (all samples) stored, 50 now" in str(info.value)
    assert "source" not in str(info.value) and "fingerprint" not in str(info.value)
    x, y = mlp_data
    with pytest.raises(LandscapeError, match=r"what differs: the evaluation data \(97 samples both times, other "
                                             r"values; read from 'tuple' then, 'TensorDataset' now\): fingerprint"):
        lnb.compute_surface(m, TensorDataset(x + 1.0, y), d, **grid, store=store)


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
    with pytest.raises(LandscapeError, match="not an empty landscape store"):  # refused before the writer lock:
        SurfaceStore.open_or_create(other, {"grid": {"x": [0, 1, 2], "y": None}}, "k", None, (1, 1), [], {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zarr", "other"]  # no other.lock (trial s56)
    assert [p.name for p in other.iterdir()] == ["file.txt"]


def test_a_store_another_writer_renames_into_place_meanwhile_is_resumed_not_called_foreign(tmp_path, mlp, mlp_data,
                                                                                          monkeypatch):
    """Review s57: a store made by another writer between open_or_create's look for zarr.json and its check for a
    foreign folder was refused as "not an empty landscape store; ... delete it" (advice that deletes a store in
    use). The other writer's rename is put there by hand; the run resumes its points, computing none."""
    import landscape_nb.store as store_module

    d = random_dict_dirs(mlp, 1)
    first = lnb.compute_surface(mlp, mlp_data, d, x=(-1, 1, 3), store=tmp_path / "other.zarr")
    target, check = tmp_path / "racy.zarr", store_module._refuse_foreign_folder

    def renamed_meanwhile(path):
        if path == target and not path.exists():
            (tmp_path / "other.zarr").rename(target)
        check(path)

    monkeypatch.setattr(store_module, "_refuse_foreign_folder", renamed_meanwhile)
    again = lnb.compute_surface(mlp, mlp_data, d, x=(-1, 1, 3), store=target)
    assert again.provenance["points_from_store"] == 3 and again.provenance["points_computed"] == 0
    np.testing.assert_array_equal(again.loss, first.loss)


def _filled_in_store(path) -> int:
    """Points filled, read from the store's own zarr arrays, not through landscape_nb: ``done`` is 1
    and ``loss`` finite exactly at the filled points (NaN is the fill value)."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    done, loss = group["done"][:].astype(bool), group["loss"][:]
    assert np.array_equal(done, np.isfinite(loss))  # this loss never diverges: filled ⇔ finite
    return int(done.sum())


def test_a_resumed_run_says_how_many_points_came_from_the_store(tmp_path, mlp, mlp_data, caplog):
    """Interrupted after 4 of 9 tiles, then resumed: the provenance, ``points_summary`` and the log
    count the points the store held (read from its arrays here) and the ones computed; every value is
    the naive loop's."""
    dirs = random_dict_dirs(mlp, 2)
    store = tmp_path / "s.zarr"
    grid = {"x": (-1, 1, 7), "y": (-1, 1, 5), "tile": (2, 3)}  # 9 tiles, 35 points
    seen = []

    def crash_after_4(ev):
        seen.append(ev)
        if len(seen) == 4:
            raise Crash()

    with pytest.raises(Crash):
        lnb.compute_surface(mlp, mlp_data, dirs, **grid, store=store, callbacks=[crash_after_4])
    n_stored = _filled_in_store(store)
    assert 0 < n_stored < 35
    with caplog.at_level(logging.INFO, logger="landscape_nb.compute"):
        s = lnb.compute_surface(mlp, mlp_data, dirs, **grid, store=store)
    assert s.provenance["points_from_store"] == n_stored
    assert s.provenance["points_computed"] == 35 - n_stored
    said = f"35 points: {n_stored} from the store at {str(store)!r}, {35 - n_stored} computed"
    assert points_summary(s) == said
    assert f"compute_surface: {said}" in [r.getMessage() for r in caplog.records]
    assert points_summary(lnb.load_surface(store)) == said  # the store's provenance keeps the last run's counts
    assert _filled_in_store(store) == 35
    for j, b in enumerate(s.y):
        for i, a in enumerate(s.x):
            loss, acc = naive_loss(mlp, mlp_data, dirs, [a, b], metric=True)
            np.testing.assert_allclose(s.loss[j, i], loss, rtol=1e-5, err_msg=f"at x[{i}], y[{j}]")
            np.testing.assert_allclose(s.metrics["accuracy"][j, i], acc, rtol=1e-6)
    again = lnb.compute_surface(mlp, mlp_data, dirs, **grid, store=store)  # complete: all from the store
    assert points_summary(again) == f"35 points: 35 from the store at {str(store)!r}, 0 computed"
    fresh = lnb.compute_surface(mlp, mlp_data, dirs, **grid)
    assert points_summary(fresh) == "35 points computed" and fresh.provenance["points_from_store"] == 0


def test_a_store_keeps_its_directions_and_gives_them_back(tmp_path, mlp, mlp_data, monkeypatch):
    """Only a fingerprint of the directions was stored: a plane of your own tensors (or PCA's) could not be
    had back from the store to draw a path on it or compute more. The run keeps them, exactly; a store that
    lacks them (older, or stopped before) gets them on its next resumed run, and their fingerprint is
    checked against the spec."""
    import shutil

    from landscape_nb import store as store_mod

    g = torch.Generator().manual_seed(3)
    own = lnb.as_directions(mlp, [torch.randn(sum(p.numel() for p in mlp.parameters()), generator=g)
                                  for _ in range(2)])
    store = tmp_path / "s.zarr"
    grid = {"x": (-1, 1, 7), "y": (-1, 1, 5), "tile": (2, 3)}

    def stop_after_one_tile(ev):
        raise Crash()

    with pytest.raises(Crash):
        lnb.compute_surface(mlp, mlp_data, own, **grid, store=store, callbacks=[stop_after_one_tile])
    kept = lnb.load_directions(store)
    assert torch.equal(kept.vectors, own.vectors) and kept.layout == own.layout
    assert kept.fingerprint() == lnb.load_surface(store).spec["directions"]["fingerprint"]
    # an older store (no directions kept) refuses, saying how to rebuild them; its resumed run keeps them
    shutil.rmtree(store / "directions")
    with pytest.raises(LandscapeError, match=r"holds no directions \(it was written before landscape_nb kept them"):
        lnb.load_directions(store)
    seen = []
    surf = lnb.compute_surface(mlp, mlp_data, own, **grid, store=store, callbacks=[seen.append])
    assert surf.is_complete and torch.equal(lnb.load_directions(store).vectors, own.vectors)
    # the kept directions resume their own store: nothing computed
    again = []
    lnb.compute_surface(mlp, mlp_data, lnb.load_directions(store), **grid, store=store, callbacks=[again.append])
    assert again == [] and len(seen) == 8
    for j, b in enumerate(surf.y):  # and they are the plane the values lie on
        for i, a in enumerate(surf.x):
            dirs = kept.as_state_dicts()
            assert surf.loss[j, i] == pytest.approx(naive_loss(mlp, mlp_data, dirs, [a, b])[0], rel=1e-5)
    # damaged or edited: refused
    import zarr

    arr = zarr.open_array(str(store / "directions"), mode="r+")
    arr[0, 0] = arr[0, 0] + 1.0
    with pytest.raises(LandscapeError, match="are not the ones its surface was computed along"):
        lnb.load_directions(store)
    # over the size a store keeps: left out, and said
    monkeypatch.setattr(store_mod, "MAX_DIRECTION_BYTES", 100)
    lnb.compute_surface(mlp, mlp_data, own, x=(-1, 1, 3), y=(-1, 1, 3), store=tmp_path / "big.zarr")
    with pytest.raises(LandscapeError, match=r"holds no directions \(no: [\d,]+ bytes, over the 100 a store keeps; "
                                             r"keep them yourself with Directions.save\)"):
        lnb.load_directions(tmp_path / "big.zarr")
