"""Three-direction landscapes (volumes): values against a naive loop, any tile shape, fresh and
resumed from a store, in-process and on a Dask LocalCluster; slices; the volume figures."""
import threading
import warnings

import numpy as np
import pytest
import torch

import landscape_nb as lnb
from landscape_nb import LandscapeError, Surface
from landscape_nb.grid import Grid, coarse_to_fine
from landscape_nb.plot._common import ABOVE_CAP
from landscape_nb.store import SurfaceStore

from conftest import make_mlp, naive_loss, random_dict_dirs


def _check_volume_against_naive(model, data, dirs, surf, rtol=1e-5):
    assert surf.loss.shape == (len(surf.z), len(surf.y), len(surf.x))
    for k, c in enumerate(surf.z):
        for j, b in enumerate(surf.y):
            for i, a in enumerate(surf.x):
                loss, acc = naive_loss(model, data, dirs, [a, b, c], metric=True)
                np.testing.assert_allclose(surf.loss[k, j, i], loss, rtol=rtol, err_msg=f"at x[{i}], y[{j}], z[{k}]")
                np.testing.assert_allclose(surf.metrics["accuracy"][k, j, i], acc, rtol=1e-6)


GRIDS = [  # (x, y, z, tile)
    ((-1, 1, 4), (-0.5, 1.5, 3), (-1, 0.3, 3), None),       # default tiles: one slice deep
    ((-1, 1, 5), (-1, 1, 3), (-1, 1, 4), (2, 2, 3)),         # tiles across slices, ragged on every axis
    ((-1, 1, 3), (-1, 1, 4), (-2, 1, 2), (1, 5, 7)),         # a tile larger than the rows and columns
    ((-1, 1, 3), (-1, 1, 3), (-1, 1, 3), 2),                 # an int: (1, 2, 2)
    ((-1, 1, 3), (-1, 1, 2), (-1, 1, 5), (3, 1)),            # (rows, cols): one slice deep
]


@pytest.mark.parametrize("x, y, z, tile", GRIDS)
def test_volume_equals_naive_loop(mlp, mlp_data, x, y, z, tile):
    dirs = random_dict_dirs(mlp, 3)
    surf = lnb.compute_surface(mlp, mlp_data, dirs, x=x, y=y, z=z, tile=tile)
    assert surf.ndim == 3 and surf.is_complete
    np.testing.assert_allclose(surf.z, np.linspace(*z))
    _check_volume_against_naive(mlp, mlp_data, dirs, surf)


def test_loss_index_is_z_y_x(mlp, mlp_data):
    """Only the third direction acts visibly: the loss varies along axis 0 and nowhere else."""
    dirs = random_dict_dirs(mlp, 3)
    for k in (0, 1):  # next to nothing (a zero direction is refused)
        dirs[k] = {n: 1e-9 * v for n, v in dirs[k].items()}
    surf = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 3), y=(-1, 1, 4), z=(-1, 1, 5))
    assert np.allclose(surf.loss, surf.loss[:, :1, :1])
    assert not np.allclose(surf.loss[0], surf.loss[-1])


@pytest.mark.parametrize("tile", [None, (2, 3, 2)])
def test_volume_resumes_from_a_store(mlp, mlp_data, tmp_path, tile):
    dirs = random_dict_dirs(mlp, 3, seed=4)
    grid = dict(x=(-1, 1, 5), y=(-1, 1, 4), z=(-1, 1, 3))
    cancel, seen = threading.Event(), []

    def stop_after_two(ev):
        seen.append(ev.tile)
        assert ev.values["loss"].shape == ev.tile.shape
        if len(seen) == 2:
            cancel.set()

    part = lnb.compute_surface(mlp, mlp_data, dirs, **grid, tile=tile, store=tmp_path / "v",
                               callbacks=[stop_after_two], cancel=cancel)
    n_first = sum(t.n_points for t in seen)
    assert part.n_done == n_first < part.loss.size
    assert np.isnan(part.loss[~part.done_mask]).all()
    st = SurfaceStore.open(tmp_path / "v")
    assert st.group["loss"].shape == (3 * 4, 5)  # a volume is stored flat, (nz * ny, nx)
    assert st.done_mask().shape == (3, 4, 5) and st.done_mask().sum() == n_first
    loaded = lnb.load_surface(tmp_path / "v")
    assert loaded.ndim == 3 and loaded.n_done == n_first
    full = lnb.compute_surface(mlp, mlp_data, dirs, **grid, store=tmp_path / "v")
    assert full.provenance["points_computed"] == full.loss.size - n_first
    _check_volume_against_naive(mlp, mlp_data, dirs, full)
    np.testing.assert_array_equal(lnb.load_surface(tmp_path / "v").loss, full.loss)


def test_volume_on_a_dask_local_cluster(mlp_data, tmp_path):
    from landscape_nb.cluster import get_client

    model = make_mlp()
    dirs = random_dict_dirs(model, 3, seed=5)
    grid = dict(x=(-1, 1, 4), y=(-1, 1, 3), z=(-1, 1, 3))
    client, owned = get_client("local", n_workers=2)
    try:
        s = lnb.compute_surface(model, mlp_data, dirs, **grid, client=client, tile=(2, 2, 3), store=tmp_path / "d")
        assert s.provenance["runner"].startswith("dask")
        _check_volume_against_naive(model, mlp_data, dirs, s)
        # the same store resumes on the cluster with nothing left to compute
        again = lnb.compute_surface(model, mlp_data, dirs, **grid, client=client, store=tmp_path / "d")
        assert again.provenance["points_computed"] == 0
        np.testing.assert_array_equal(again.loss, s.loss)
    finally:
        owned.close()


def test_hessian_top3_and_pca3_directions_make_volumes(mlp, mlp_data):
    d = lnb.hessian_directions(mlp, mlp_data, which=("max", "max2", "max3"))
    ev = d.provenance["eigenvalues"]
    assert d.n == 3 and ev[0] >= ev[1] >= ev[2]
    surf = lnb.compute_surface(mlp, mlp_data, d, x=(-0.5, 0.5, 3), y=(-0.5, 0.5, 3), z=(-0.5, 0.5, 3))
    assert surf.z_label.startswith("Hessian eigenvector λ_max3")
    _check_volume_against_naive(mlp, mlp_data, d.as_state_dicts(), surf)
    g = torch.Generator().manual_seed(3)
    states = [{k: v + 0.3 * t * torch.randn(v.shape, generator=g) for k, v in mlp.state_dict().items()}
              for t in range(6)]
    p = lnb.pca_directions(states, final=mlp, n=3, ignore=None)
    surf = lnb.compute_surface(mlp, mlp_data, p, x=(-1, 1, 3), y=(-1, 1, 2), z=(-1, 1, 2))
    _check_volume_against_naive(mlp, mlp_data, p.as_state_dicts(), surf)


def test_slices_are_planes_of_the_volume(mlp, mlp_data):
    dirs = random_dict_dirs(mlp, 3)
    vol = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 5), y=(-1, 1, 4), z=(-1, 1, 3))
    with pytest.warns(UserWarning, match=r"slice\(axis='z', value=0\.1\): no grid plane there; the nearest, z = 0 "
                                         r"\(index 1\), is drawn"):
        zs = vol.slice("z", value=0.1)           # nearest grid value: z = 0 (silently 0.667 for 0.5: trial s35)
    assert zs.ndim == 2 and zs.provenance["slice"] == {"axis": "z", "index": 1, "value": 0.0,
                                                         "symbol": vol.z_label.split(" ")[0]}
    np.testing.assert_array_equal(zs.loss, vol.loss[1])
    # the plane itself computed as a plane: w + a d1 + b d2 (+ 0 d3)
    plane = lnb.compute_surface(mlp, mlp_data, dirs[:2], x=(-1, 1, 5), y=(-1, 1, 4))
    np.testing.assert_allclose(zs.loss, plane.loss, rtol=1e-6)
    ys = vol.slice("y", index=-1)
    assert (ys.x is vol.x or np.array_equal(ys.x, vol.x)) and np.array_equal(ys.y, vol.z)
    np.testing.assert_array_equal(ys.loss, vol.loss[:, 3, :])
    np.testing.assert_array_equal(ys.metrics["accuracy"], vol.metrics["accuracy"][:, 3, :])
    assert ys.y_label == vol.z_label
    xs = vol.slice("x", index=2)
    np.testing.assert_array_equal(xs.loss, vol.loss[:, :, 2])
    assert np.array_equal(xs.x, vol.y) and np.array_equal(xs.y, vol.z)
    with pytest.raises(LandscapeError, match="exactly one"):
        vol.slice("z")
    with pytest.raises(LandscapeError, match="index=7"):
        vol.slice("z", index=7)
    with pytest.raises(LandscapeError, match="3D surface"):
        zs.slice("z", index=0)
    with pytest.raises(LandscapeError, match="slice"):
        vol.sharpness()


def test_a_slice_value_outside_the_axis_is_refused_and_one_inside_snaps_to_the_nearest_plane():
    x, y, z = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4), np.linspace(-1, 1, 3)  # z step 1
    vol = Surface(x, y, np.arange(60.0).reshape(3, 4, 5), z=z)
    for value in (100.0, -1.6, 1.5001, float("nan"), "top"):
        with pytest.raises(LandscapeError, match=r"along z, whose grid runs -1..1 \(3 values\); expected a coordinate "
                                                 r"within the grid \(at most half a step, 0.5, beyond its ends\)"):
            vol.slice("z", value=value)
    for value, index in ((1.5, 2), (-1.49, 0), (0.4, 1), (0.6, 2)):  # nearest grid value, up to half a step out
        with pytest.warns(UserWarning, match="no grid plane there"):
            plane = vol.slice("z", value=value)
        assert plane.provenance["slice"]["index"] == index
    for value, index in ((0.0, 1), (1.0, 2), (-1 + 1e-9, 0), (-0.9995, 0)):  # a grid value (as typed): no word
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            plane = vol.slice("z", value=value)
        assert plane.provenance["slice"]["index"] == index
        np.testing.assert_array_equal(plane.loss, vol.loss[index])
    for index in (True, 1.0, "1"):  # read as plane 1: a coordinate meant as value=, or a flag
        with pytest.raises(LandscapeError, match=r"along z; expected an integer grid index \(value= takes a "):
            vol.slice("z", index=index)
    pytest.importorskip("plotly")
    with pytest.raises(LandscapeError, match=r"slices\['z'\]=\[5.0\]; 5.0 is outside the grid's z range -1..1"):
        lnb.plot.volume(vol, slices={"z": [5.0]})  # plotly drew no plane, without a word
    with pytest.raises(LandscapeError, match=r"no slice to draw; expected at least one index or value"):
        lnb.plot.volume_slices(vol, "z", indices=[])


def test_volume_errors(mlp, mlp_data):
    dirs = random_dict_dirs(mlp, 3)
    with pytest.raises(LandscapeError, match="pass z="):
        lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 3), y=(-1, 1, 3))
    with pytest.raises(LandscapeError, match="without y"):
        lnb.compute_surface(mlp, mlp_data, dirs[:1], x=(-1, 1, 3), z=(-1, 1, 3))
    with pytest.raises(LandscapeError, match="2 direction"):
        lnb.compute_surface(mlp, mlp_data, dirs[:2], x=(-1, 1, 3), y=(-1, 1, 3), z=(-1, 1, 3))
    with pytest.raises(LandscapeError, match="depth, rows, cols"):
        lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 3), y=(-1, 1, 3), z=(-1, 1, 3), tile=(1, 2, 3, 4))


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 5), (4, 4, 4), (3, 1, 6)])
def test_coarse_to_fine_in_3d_visits_every_tile_once_spread_out(shape):
    order = coarse_to_fine(shape)
    assert sorted(order) == sorted(np.ndindex(*shape))
    first = np.array(order[: max(1, len(order) // 4)])
    for ax, n in enumerate(shape):
        if n > 1 and len(first) >= 8:
            assert (first[:, ax] < n / 2).any() and (first[:, ax] >= n / 2).any()


def test_grid_tiles_cover_the_volume_once():
    grid = Grid.make((-1, 1, 5), (-1, 1, 4), (-1, 1, 3))
    for tile in [None, (2, 3, 2), (1, 1, 1), (5, 9, 9)]:
        hits = np.zeros(grid.store_shape, int)
        for t in grid.tiles(tile):
            hits[t.region] += 1
            c = grid.coords(t).reshape(*t.shape, 3)
            np.testing.assert_array_equal(c[..., 0], np.broadcast_to(grid.x.values()[t.x0:t.x1], t.shape))
            np.testing.assert_array_equal(c[..., 2].transpose(1, 2, 0),
                                          np.broadcast_to(grid.z.values()[t.z0:t.z1], t.shape[1:] + t.shape[:1]))
        assert (hits == 1).all()
    assert grid.to_json()["z"] == [-1.0, 1.0, 3]
    assert "z" not in Grid.make((-1, 1, 5), (-1, 1, 4)).to_json()


def test_volume_figures(mlp, mlp_data):
    pytest.importorskip("plotly")
    dirs = random_dict_dirs(mlp, 3)
    vol = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 4), y=(-1, 1, 3), z=(-1, 1, 3))
    fig = lnb.plot.volume(vol)
    tr = fig.data[0]
    assert tr.type == "isosurface"
    k, j, i = 2, 1, 3
    flat = k * 12 + j * 4 + i
    assert (tr.x[flat], tr.y[flat], tr.z[flat]) == (vol.x[i], vol.y[j], vol.z[k])
    np.testing.assert_allclose(tr.value[flat], vol.loss[k, j, i])
    assert tr.isomax <= np.nanmax(vol.loss) and tr.slices.z.show
    assert fig.layout.scene.zaxis.title.text == vol.z_label
    assert lnb.plot.volume(vol, kind="volume", slices=None).data[0].type == "volume"
    sl = lnb.plot.volume_slices(vol, "z")
    contours = [t for t in sl.data if t.type == "contour" and t.name != ABOVE_CAP]
    assert len(contours) == 3
    for t, k in zip(contours, (0, 1, 2)):
        np.testing.assert_allclose(np.asarray(t.z, float), vol.loss[k], rtol=1e-12)
    # each panel's fixed coordinate, and the whole label of its axis above them (panels said only "γ = -1")
    names = [a.text for a in sl.layout.annotations][:3]
    assert names == [f"{vol.z_label.split(' ')[0]} = {v:.3g}".replace("-", "\u2212") for v in vol.z]
    assert vol.z_label in sl.layout.title.text.replace("<br>", " ")
    with pytest.raises(LandscapeError, match="3D"):
        lnb.plot.volume(vol.slice("z", index=0))
    with pytest.raises(LandscapeError, match="kind"):
        lnb.plot.volume(vol, kind="cloud")


def test_volume_to_xarray_and_empty(mlp, mlp_data):
    pytest.importorskip("xarray")
    vol = lnb.compute_surface(mlp, mlp_data, random_dict_dirs(mlp, 3), x=(-1, 1, 4), y=(-1, 1, 3), z=(-1, 1, 2))
    ds = vol.to_xarray()
    assert ds["loss"].dims == ("z", "y", "x")
    assert float(ds["loss"].sel(x=vol.x[3], y=vol.y[1], z=vol.z[0])) == vol.loss[0, 1, 3]
    empty = lnb.Surface.empty(Grid.make((-1, 1, 4), (-1, 1, 3), (-1, 1, 2)), ["accuracy"])
    assert empty.ndim == 3 and empty.loss.shape == (2, 3, 4) and not empty.done.any()
    empty.check(ndim=3)
    with pytest.raises(LandscapeError, match="looks transposed"):
        lnb.Surface(x=vol.x, y=vol.y, z=vol.z, loss=vol.loss.T).check()


def test_volume_hover_shows_the_stored_values_not_the_capped_or_stand_in_ones(mlp, mlp_data):
    import dataclasses

    dirs = random_dict_dirs(mlp, 3)
    vol = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 4), y=(-1, 1, 3), z=(-1, 1, 3))
    loss, done = vol.loss.copy(), np.ones(vol.loss.shape, bool)
    loss[0, 0, 0] = 1e6  # far above the cap
    loss[1, 1, 1] = np.nan  # computed, diverged
    loss[2, 2, 2], done[2, 2, 2] = np.nan, False  # not computed
    vol = dataclasses.replace(vol, loss=loss, done=done)
    fig = lnb.plot.volume(vol)
    shown = {}  # (x, y, z) -> (drawn value, hover text), over every trace (boxes of computed cubes, markers)
    for tr in fig.data:
        assert "%{text}" in tr.hovertemplate and "%{value" not in tr.hovertemplate
        values = tr.value if tr.type == "isosurface" else tr.marker.color
        shown.update({(a, b, c): (v, t) for a, b, c, v, t in zip(tr.x, tr.y, tr.z, values, tr.text)})
    assert shown[vol.x[0], vol.y[0], vol.z[0]][0] < 1e6  # the drawn value is capped ...
    acc = vol.metrics["accuracy"].ravel()
    for flat, (k, j, i) in enumerate(np.ndindex(vol.loss.shape)):
        at = (vol.x[i], vol.y[j], vol.z[k])
        if (k, j, i) == (2, 2, 2):  # not computed: in no trace (no shell is built from a stand-in for it)
            assert at not in shown
        elif (k, j, i) == (1, 1, 1):
            assert shown[at][1].startswith("loss: nan")
        else:  # ... the hover shows what is stored
            assert shown[at][1] == f"loss: {loss[k, j, i]:.4g}<br>accuracy: {acc[flat]:.4g}"
    assert shown[vol.x[0], vol.y[0], vol.z[0]][1].startswith("loss: 1e+06")
    two = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 3), y=(-1, 1, 3), z=(-1, 1, 2))
    slices = [t for t in lnb.plot.volume_slices(two, "z").data if t.type == "contour" and t.name != ABOVE_CAP]
    assert len(slices) == 2  # not z=1 twice


def _undrawable_3d(done: np.ndarray, finite: np.ndarray) -> set:
    """Naive: the finite points that are a corner of no cube whose 8 corners are all computed."""
    nz, ny, nx = done.shape
    out = set()
    for k, j, i in zip(*np.nonzero(done & finite)):
        drawn = False
        for k0 in (k - 1, k):
            for j0 in (j - 1, j):
                for i0 in (i - 1, i):
                    if 0 <= k0 < nz - 1 and 0 <= j0 < ny - 1 and 0 <= i0 < nx - 1:
                        drawn |= bool(done[k0:k0 + 2, j0:j0 + 2, i0:i0 + 2].all())
        if not drawn:
            out.add((int(k), int(j), int(i)))
    return out


def _complete_cubes(done: np.ndarray) -> set:
    """Naive: the cubes (by their lowest corner) whose 8 corners are all computed."""
    nz, ny, nx = done.shape
    return {(k, j, i) for k in range(nz - 1) for j in range(ny - 1) for i in range(nx - 1)
            if done[k:k + 2, j:j + 2, i:i + 2].all()}


@pytest.mark.parametrize("pattern", ["stride 2", "a block and strays", "every other plane", "complete"])
def test_a_partial_volume_draws_shells_only_through_computed_cubes_and_marks_the_other_points(pattern):
    """An isosurface is built cube by cube from its 8 corners. A volume interrupted early showed a few specks
    (s32); given a stand-in value for missing points, plotly drew shells between computed and missing ones,
    closed discs on every other computed z-plane (trial s33). The shells are now drawn only through boxes of
    computed points, which together hold each complete cube once (naive enumeration), and each computed point
    no complete cube holds is a marker at its value, on the shells' colour scale, hovered with its stored
    values; a diverged point (computed, no value) is none; the exported figure's note counts them."""
    x, y, z = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4), np.linspace(-1, 1, 5)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    full = 1.0 + xx ** 2 + 2 * yy ** 2 + 0.5 * zz ** 2
    done = np.ones(full.shape, bool)
    if pattern == "stride 2":
        done[:] = False
        done[::2, ::2, ::2] = True
    elif pattern == "a block and strays":
        done[:] = False
        done[0:3, 0:2, 0:3] = True  # four cubes drawn: their 18 points need no marker
        done[4, 3, :] = True  # a row alone
        done[2, 3, 4] = True
        done[3:5, 2:4, 3:5] = True  # one more cube, apart
    elif pattern == "every other plane":
        done[1::2] = False
    loss = np.where(done, full, np.nan)
    loss[0, 0, 0] = np.nan  # computed, diverged: a corner of a drawn cube (drawn as high), no marker
    vol = Surface(x, y, loss, z=z, done=done, metrics={"accuracy": np.where(done, 0.5, np.nan)})
    fig = lnb.plot.volume(vol, clip=False)
    at = {(a, b, c): (int(np.argmin(abs(z - c))), int(np.argmin(abs(y - b))), int(np.argmin(abs(x - a))))
          for a in x for b in y for c in z}
    shells = [t for t in fig.data if t.type == "isosurface"]
    cubes = []
    for t in shells:  # each a full box of computed points
        pts = sorted({at[p] for p in zip(t.x, t.y, t.z)})
        lo_, hi_ = np.min(pts, axis=0), np.max(pts, axis=0)
        assert len(pts) == len(t.x) == int(np.prod(hi_ - lo_ + 1)) and all(done[p] for p in pts)
        cubes += [(k, j, i) for k in range(lo_[0], hi_[0]) for j in range(lo_[1], hi_[1])
                  for i in range(lo_[2], hi_[2])]
        np.testing.assert_allclose(t.value, [full[p] if np.isfinite(loss[p]) else t.value.max() for p in
                                             (at[q] for q in zip(t.x, t.y, t.z))])
        assert (t.cmin, t.cmax, t.isomin, t.isomax) == (shells[0].cmin, shells[0].cmax, shells[0].isomin,
                                                         shells[0].isomax)
    assert sorted(cubes) == sorted(_complete_cubes(done))  # every complete cube, once
    assert [t.showscale for t in shells] == [True, *[False] * (len(shells) - 1)][:len(shells)]
    in_cubes = {(k + a, j + b, i + c) for k, j, i in cubes for a in (0, 1) for b in (0, 1) for c in (0, 1)}
    want = {p for p in zip(*np.nonzero(done & np.isfinite(loss))) if tuple(int(v) for v in p) not in in_cubes}
    want = {tuple(int(v) for v in p) for p in want}
    markers = [t for t in fig.data if t.type == "scatter3d"]
    if pattern == "complete":
        assert not want and not markers and len(fig.data) == 1 and len(fig.data[0].x) == full.size
        return
    assert want and len(markers) == 1
    m = markers[0]
    assert {at[p] for p in zip(m.x, m.y, m.z)} == want and len(m.x) == len(want)
    for a, b, c, colour, hover in zip(m.x, m.y, m.z, m.marker.color, m.text):
        value = 1.0 + a ** 2 + 2 * b ** 2 + 0.5 * c ** 2
        assert colour == pytest.approx(value) and hover == f"loss: {value:.4g}<br>accuracy: 0.5"
    scale = shells[0] if shells else None
    assert m.marker.showscale == (not shells)
    if scale is not None:
        assert (m.marker.cmin, m.marker.cmax) == (scale.cmin, scale.cmax) and m.hovertemplate == scale.hovertemplate
    note = (f"partial: {int(done.sum())} of {done.size} points, 1 of them diverged (loss NaN or inf); {len(want)} "
            "drawn as markers (no cell of finite losses around them)")  # loss[0, 0, 0], counted (trial s34)
    for figure in (fig, lnb.plot.mark_partial(fig, vol)):  # said by the figure itself, once
        assert [a.text for a in figure.layout.annotations if a.name == "partial"] == [note]
    slices = lnb.plot.volume_slices(vol, "z")  # the volume's count, not each plane's
    assert next(a.text for a in slices.layout.annotations if a.name == "partial").startswith(
        f"partial: {int(done.sum())} of {done.size} points")


def test_points_past_the_boxes_drawn_are_markers_and_the_note_tells_them_apart(monkeypatch):
    """A volume 96 % computed with scattered holes split into more boxes than are drawn; the points of the
    rest became markers counted as "no computed cell around them" (301 of 371 were not; trial s33)."""
    import importlib

    monkeypatch.setattr(importlib.import_module("landscape_nb.plot.volume"), "MAX_BOXES", 1)
    x = y = z = np.linspace(-1, 1, 5)
    done = np.zeros((5, 5, 5), bool)
    done[0:2, 0:2, 0:2] = True  # one cube, past the cap (the larger box is drawn first): 8 markers
    done[3:5, 3:5, 2:5] = True  # two cubes, one box, drawn
    done[0, 4, 4] = True  # alone: 1 marker
    loss = np.where(done, 1.0, np.nan)
    fig = lnb.plot.volume(Surface(x, y, loss, z=z, done=done), clip=False)
    assert [t.type for t in fig.data] == ["isosurface", "scatter3d"] and len(fig.data[1].x) == 9
    note = next(a.text for a in fig.layout.annotations if a.name == "partial")
    assert note.endswith("; 9 drawn as markers (no computed cell around 1 of them, 8 past the shells drawn)")


def test_clip_places_the_outermost_isosurface_at_the_cap_as_the_cli_s_clip_says():
    """`landscape-nb plot vol.zarr --clip none|auto|5` drew the same shells (min to the median) whatever the cap:
    `--clip` capped only values no shell reached (trial s36). A cap now places the outermost shell: at the value
    given (in log10 with log=True), at the largest finite value for none; auto keeps the `upper` quantile."""
    from landscape_nb.cli import figure_for, parse_clip

    x = y = z = np.linspace(-1, 1, 5)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    loss = 1.0 + xx ** 2 + 2 * yy ** 2 + 3 * zz ** 2  # 1 .. 7
    loss[0, 0, 0] = np.nan
    vol = Surface(x, y, loss, z=z)
    finite = loss[np.isfinite(loss)]
    for clip, top in ((None, np.quantile(finite, 0.5)), ("auto", np.quantile(finite, 0.5)), ("none", 7.0),
                      ("5", 5.0), ("100", 7.0)):
        shell = figure_for(vol, None, clip=parse_clip(clip)).data[0]
        assert shell.type == "isosurface" and shell.isomax == pytest.approx(top) and shell.cmax == pytest.approx(top)
        assert shell.isomin == pytest.approx(1.0 + 0.02 * (top - 1.0))
        inside = np.asarray(shell.value)[np.isfinite(loss).ravel()]  # the values themselves, none on the shell
        np.testing.assert_allclose(inside, finite)
    logged = lnb.plot.volume(vol, clip=5.0, log=True).data[0]
    assert logged.isomax == pytest.approx(np.log10(5.0)) and max(logged.value) > np.log10(7.0)
    assert lnb.plot.volume(vol, upper=0.9).data[0].isomax == pytest.approx(np.quantile(finite, 0.9))
    with pytest.raises(LandscapeError, match=r"upper=0.9 and clip=5.0 both place the outermost isosurface"):
        lnb.plot.volume(vol, upper=0.9, clip=5.0)
    with pytest.raises(LandscapeError, match=r"clip=0.5 is at or below every value"):
        lnb.plot.volume(vol, clip=0.5)


def test_a_volumes_colour_bar_says_where_its_shells_stop():
    """Trial s57: plot.volume's shells stop at the median (upper=0.5) with the colour bar titled "loss" alone, over
    0..1.04 where the values reached 8.54. It says where they stop and how many points lie above (naive: counted
    from the values), as the planes' capped colour bars do; shells over every value say nothing more."""
    t = np.linspace(-1, 1, 5)
    loss = 3 * (t[None, None, :] ** 2 + t[None, :, None] ** 2 + t[:, None, None] ** 2)
    vol = Surface(t, t, loss, z=t)
    top = float(np.quantile(loss, 0.5))
    title = lnb.plot.volume(vol).data[0].colorbar.title.text
    assert title == (f"loss<br>(shells up to {top:.4g}:<br>{int((loss > top).sum())} of {loss.size} points<br>above, "
                     f"up to {loss.max():.3g})")
    assert lnb.plot.volume(vol, upper=1.0).data[0].colorbar.title.text == "loss"
    # a diverged corner, above the automatic cap: "up to" is the highest loss, not the cap (trial s59: "up to 5.58"
    # where the loss reached 14); on a log scale both in loss units, as the planes say them
    spiked = loss.copy()
    spiked[0, 0, 0] = 140.0
    title = lnb.plot.volume(Surface(t, t, spiked, z=t)).data[0].colorbar.title.text
    assert title.endswith("above, up to 140)"), title
    title = lnb.plot.volume(Surface(t, t, spiked + 0.5, z=t), log=True).data[0].colorbar.title.text
    top = float(np.quantile(np.log10(spiked + 0.5), 0.5))
    assert title == (f"log10(loss)<br>(shells up to loss {10 ** top:.4g} (log10 {top:.3g}):<br>"
                     f"{int((np.log10(spiked + 0.5) > top).sum())} of {loss.size} points<br>above, up to loss 140)")


def test_a_volumes_planes_are_titled_by_the_axiss_symbol_where_its_label_has_none():
    """Trial s58: a volume of Hessian directions drew its planes titled "Hessian = −1", "Hessian = 0" (the first word
    of "Hessian eigenvector λ_max3 = 1.146"); they are "γ = …" now, the title saying what γ is. A label beginning
    with its symbol keeps it (tested above with γ and markup)."""
    x = np.linspace(-1, 1, 3)
    label = "Hessian eigenvector λ_max3 = 1.146 (on 512 samples)"
    vol = Surface(x, x, np.arange(27.0).reshape(3, 3, 3) + 1, z=x, provenance={"z_label": label})
    fig = lnb.plot.volume_slices(vol, "z")
    assert [a.text for a in fig.layout.annotations][:3] == ["γ = \u22121", "γ = 0", "γ = 1"]
    assert f"fixed γ: {label}" in fig.layout.title.text.replace("<br>", " ")
    assert vol.slice("z", index=0).provenance["slice"]["symbol"] == "γ"
    pc = Surface(x, x, np.ones((3, 3, 3)), z=x, provenance={"z_label": "PC3 (2% of variance)"})
    assert lnb.plot.volume_slices(pc, "z").layout.annotations[0].text == "PC3 = \u22121"
