"""Sublevel-set persistence of grids against a brute-force union-find written here."""
import numpy as np
import pytest

from landscape_nb.errors import LandscapeError
from landscape_nb.persistence import topology
from landscape_nb.surface import Surface

pytest.importorskip("gudhi")


def brute_force_h0(arr):
    """Vertices added in increasing value; a vertex joining components keeps the one with the
    lowest minimum (elder rule) and kills the others there. NaN/inf vertices are never added.
    Returns [(birth, death, min index, saddle index, index of the min it merges into)], then one
    essential class per component left at the end."""
    order = sorted((i for i in np.ndindex(arr.shape) if np.isfinite(arr[i])), key=lambda i: (arr[i], i))
    parent, root_min, pairs = {}, {}, []

    def find(v):
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    for v in order:
        parent[v] = v
        root_min[v] = v
        roots = set()
        for axis in range(arr.ndim):
            for step in (-1, 1):
                nb = list(v)
                nb[axis] += step
                nb = tuple(nb)
                if 0 <= nb[axis] < arr.shape[axis] and nb in parent:
                    roots.add(find(nb))
        if not roots:
            continue
        roots = sorted(roots, key=lambda r: (arr[root_min[r]], root_min[r]))
        elder = roots[0]
        for r in roots[1:]:
            if arr[v] > arr[root_min[r]]:
                pairs.append((arr[root_min[r]], arr[v], root_min[r], v, root_min[elder]))
            parent[r] = elder
        parent[v] = elder
    left = sorted({root_min[find(v)] for v in order}, key=lambda m: (arr[m], m))
    return pairs + [(arr[m], np.inf, m, None, None) for m in left]


@pytest.mark.parametrize("shape,seed", [((7, 9), 0), ((12, 12), 1), ((5, 6, 4), 2), ((8, 3), 3)])
def test_zero_dimensional_persistence_equals_a_brute_force_union_find(shape, seed):
    arr = np.random.default_rng(seed).random(shape)
    topo = topology(arr, threshold=0.0)
    want = brute_force_h0(arr)
    got = sorted(map(tuple, topo.diagrams[0].tolist()))
    np.testing.assert_allclose(got, sorted((b, d) for b, d, *_ in want), rtol=0, atol=1e-12)
    # the same basins, saddles and merges, and the SMAD from them
    by_min = {w[2]: w for w in want}
    assert len(topo.basins) == len(want)
    for b in topo.basins:
        birth, death, minimum, saddle, into = by_min[b.index]
        assert (b.birth, b.death, b.saddle_index) == (birth, death, saddle)
        assert (topo.basins[b.parent].index if b.parent is not None else None) == into
    dist = [np.linalg.norm(np.subtract(m, s)) for _, _, m, s, _ in want if s is not None]
    assert topo.smad == pytest.approx(np.mean(dist))


def test_threshold_keeps_only_persistent_basins():
    arr = np.random.default_rng(4).random((10, 10))
    want = brute_force_h0(arr)
    for t in (0.0, 0.1, 0.3):
        assert topology(arr, threshold=t).n_basins == sum(d - b > t for b, d, *_ in want)


def wells(k, n=61, seed=0):
    """Sum of k Gaussian wells of depth 1–2, centres at least 0.5 apart in [-2, 2]², width 0.15."""
    rng = np.random.default_rng(seed)
    centres = []
    while len(centres) < k:
        c = rng.uniform(-1.7, 1.7, 2)
        if all(np.linalg.norm(c - o) > 0.5 for o in centres):
            centres.append(c)
    xs = np.linspace(-2, 2, n)
    X, Y = np.meshgrid(xs, xs)
    z = sum(-rng.uniform(1, 2) * np.exp(-((X - c[0]) ** 2 + (Y - c[1]) ** 2) / (2 * 0.15 ** 2)) for c in centres)
    return xs, z, centres


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_basin_count_of_k_separated_gaussian_wells_is_k(k):
    xs, z, centres = wells(k, seed=k)
    surf = Surface(x=xs, y=xs, loss=z)
    topo = topology(surf)
    assert topo.n_basins == k
    found = sorted(b.location for b in topo.basins)
    for c in centres:  # each minimum within a grid step of a well centre, in (x, y) order
        assert min(np.hypot(f[0] - c[0], f[1] - c[1]) for f in found) <= xs[1] - xs[0]
    assert len(topo.merge_tree) == k - 1
    if k > 1:
        deepest = topo.basins[0]
        assert all(b.birth >= deepest.birth for b in topo.basins)
        assert np.isinf(deepest.death) and deepest.parent is None


def test_three_dimensional_wells():
    xs = np.linspace(-1, 1, 21)
    X, Y, Z = np.meshgrid(xs, xs, xs, indexing="ij")
    f = -np.exp(-((X - 0.5) ** 2 + Y ** 2 + Z ** 2) / 0.05) - 0.5 * np.exp(-((X + 0.5) ** 2 + Y ** 2 + Z ** 2) / 0.05)
    topo = topology(f)
    assert topo.n_basins == 2 and len(topo.diagrams) == 3
    child, parent, level = topo.merge_tree[0]
    assert topo.basins[parent].birth < topo.basins[child].birth < level


@pytest.mark.parametrize("flip", [False, True])
def test_at_a_tie_of_the_deepest_minima_basin_0_is_the_one_that_never_dies(flip):
    """Two minima of loss 0: gudhi keeps one alive (elder rule at a tie); basins[0] was the first in grid order,
    so it read "basin 0 merges into basin 1" with basin 1 never dying. Also on an egg-crate of equal wells."""
    loss = np.ones((5, 9))
    loss[2, 2] = loss[2, 6] = 0.0
    loss = loss[:, ::-1] if flip else loss
    topo = topology(loss, threshold=0.01)
    assert [b.death for b in topo.basins] == [np.inf, 1.0] and topo.basins[0].parent is None
    assert topo.merge_tree == ((1, 0, 1.0),)
    t = np.linspace(0, 4 * np.pi, 21)
    crate = -np.cos(t)[None, :] * np.cos(t)[:, None]  # 2 × 2 + ... wells of equal depth
    topo = topology(crate, threshold=0.01)
    assert topo.basins[0].death == np.inf and topo.basins[0].parent is None
    for k, b in enumerate(topo.basins[1:], start=1):  # deepest first; each merges into an older basin
        assert topo.basins[k - 1].birth <= b.birth and b.parent is not None and b.parent < k
        assert topo.basins[b.parent].death == np.inf or topo.basins[b.parent].death >= b.death


def test_refuses_partial_surfaces_and_bad_input():
    z = np.random.default_rng(0).random((5, 5))
    done = np.ones((5, 5), bool)
    done[0, 0] = False
    with pytest.raises(LandscapeError, match="computed"):
        topology(Surface(x=np.arange(5.0), y=np.arange(5.0), loss=z, done=done))
    with pytest.raises(LandscapeError, match="2D or 3D"):
        topology(np.arange(5.0))
    with pytest.raises(LandscapeError, match="threshold"):
        topology(z, threshold=-1)


def test_diverged_points_join_last():
    z = np.random.default_rng(5).random((6, 6))
    z2 = z.copy()
    z2[2, 3] = np.inf
    capped = z.copy()
    capped[2, 3] = 10.0
    a, b = topology(z2, threshold=0.0), topology(capped, threshold=0.0)
    assert [x.birth for x in a.basins] == [x.birth for x in b.basins]
    assert [x.death for x in a.basins] == [x.death for x in b.basins]


def test_a_basin_walled_off_by_non_finite_points_never_dies():
    z = np.array([[0.0, 0.2, np.nan, 0.5],
                  [0.1, 0.3, np.inf, 0.6],
                  [0.2, 0.4, np.nan, 0.7]])
    topo = topology(z, threshold=0.0)
    assert sorted(topo.diagrams[0].tolist()) == [[0.0, np.inf], [0.5, np.inf]]  # not [0.5, 2.4]: no such loss
    walled = next(b for b in topo.basins if b.index == (0, 3))
    assert (walled.birth, walled.death, walled.saddle_index, walled.parent) == (0.5, np.inf, None, None)
    assert topo.n_basins == 2 and topo.merge_tree == () and np.isnan(topo.smad)
    assert topology(z).threshold == pytest.approx(0.01 * 0.7)  # 1 % of the finite losses' range
    ring = np.zeros((3, 3))
    ring[1, 1] = np.nan  # a loop around a diverged point: never filled at a finite level
    assert topology(ring).diagrams[1].tolist() == [[0.0, np.inf]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_persistence_with_non_finite_walls_equals_a_brute_force_union_find(seed):
    rng = np.random.default_rng(seed)
    arr = rng.random((7, 9))
    arr[:, 4] = np.nan  # a wall: the two halves never merge at a finite level
    arr[rng.integers(0, 7, 3), rng.integers(0, 9, 3)] = np.inf
    topo = topology(arr, threshold=0.0)
    want = brute_force_h0(arr)
    got = sorted(map(tuple, topo.diagrams[0].tolist()))
    np.testing.assert_allclose(got, sorted((b, d) for b, d, *_ in want), rtol=0, atol=1e-12)
    by_min = {w[2]: w for w in want}
    assert len(topo.basins) == len(want) and sum(np.isinf(b.death) for b in topo.basins) >= 2
    for b in topo.basins:
        birth, death, _, saddle, into = by_min[b.index]
        assert (b.birth, b.death, b.saddle_index) == (birth, death, saddle)
        assert np.isfinite(arr[b.saddle_index]) if b.saddle_index is not None else np.isinf(b.death)
        assert (topo.basins[b.parent].index if b.parent is not None else None) == into


def test_persistence_figures_show_every_pair():
    from landscape_nb.plot import persistence

    arr = np.random.default_rng(6).random((8, 8))
    topo = topology(arr, threshold=0.05)
    fig = persistence(topo)
    h0, h1 = fig.data[0], fig.data[1]
    assert len(h0.x) == len(topo.diagrams[0]) and len(h1.x) == len(topo.diagrams[1])
    np.testing.assert_allclose(sorted(h0.x), sorted(topo.diagrams[0][:, 0]))
    finite = np.isfinite(topo.diagrams[0][:, 1])
    np.testing.assert_allclose(sorted(np.asarray(h0.y)[finite]), sorted(topo.diagrams[0][finite, 1]))
    assert np.asarray(h0.y)[~finite].min() > topo.diagrams[0][finite, 1].max()  # ∞ drawn above all
    bars = persistence(topo, kind="barcode", dims=[0])
    lines = [t for t in bars.data if t.mode == "lines"]
    assert sum(v is None for t in lines for v in t.x) == len(topo.diagrams[0])
    # trial s54: the longest-lived bar was at the bottom, under a y axis titled "class" with no labels, and the
    # bar of the class that never dies ran off the plot with no mark
    birth, death = topo.diagrams[0][:, 0], topo.diagrams[0][:, 1]
    rows = {}  # row -> (birth, end) as drawn
    for t in lines:
        for k in range(0, len(t.x), 3):
            rows[t.y[k]] = (t.x[k], t.x[k + 1])
            assert t.y[k] == t.y[k + 1] and t.x[k + 2] is None
    drawn = [rows[r] for r in sorted(rows)]  # top to bottom (the axis is reversed)
    assert bars.layout.yaxis.autorange == "reversed"
    life = np.where(np.isfinite(death), death - birth, np.inf)
    np.testing.assert_allclose([e - b for b, e in drawn][1:], sorted(life[np.isfinite(life)], reverse=True))
    top = drawn[0][1]
    assert top > np.nanmax(death[np.isfinite(death)]) and drawn[0][0] == birth[np.isinf(death)][0]
    (arrow,) = [t for t in bars.data if t.mode == "markers"]
    assert list(arrow.x) == [top] and arrow.marker.symbol == "triangle-right"
    assert any(sh.x0 == top for sh in bars.layout.shapes) and "∞" in [a.text for a in bars.layout.annotations]
    noise = [t for t in lines if t.name.endswith("(noise)")]
    assert sum(v is None for t in noise for v in t.x) == int(np.sum(life < 0.05)) > 0
    assert list(bars.layout.yaxis.ticktext) == ["basins (H0)"] and bars.layout.xaxis.range[1] > top
    loops = persistence(topo, kind="barcode", dims=[1])  # every loop dies: no ∞ line, no arrow
    assert np.all(np.isfinite(topo.diagrams[1][:, 1])) and len(topo.diagrams[1])
    assert not loops.layout.shapes and all(t.mode == "lines" for t in loops.data)
    assert list(loops.layout.yaxis.ticktext) == ["loops (H1)"]
    with pytest.raises(LandscapeError, match="kind"):
        persistence(topo, kind="landscape")
    with pytest.raises(LandscapeError, match="dims"):
        persistence(topo, dims=[2])


@pytest.mark.parametrize("seed", range(6))
def test_with_many_ties_every_basin_that_dies_has_an_earlier_parent_and_the_pairs_are_gudhis(seed):
    """Small integer losses tie everywhere: a basin died with no parent, or merged into a later one (91 of 300
    such arrays broke one of the two). Every finite death has a parent before it, every infinite one none,
    the merge tree has one edge per finite death, and the (birth, death) pairs are gudhi's 0-dimensional ones."""
    rng = np.random.default_rng(seed)
    for _ in range(25):
        shape = tuple(rng.integers(2, 6, size=rng.integers(2, 4)))
        loss = rng.integers(0, 3, size=shape).astype(float)
        loss[rng.random(shape) < 0.1] = np.nan
        if not np.isfinite(loss).any():
            continue
        topo = topology(loss, threshold=0.0)
        assert topo.basins[0].death == np.inf and topo.basins[0].parent is None
        for k, b in enumerate(topo.basins):
            assert (b.parent is None) == (b.death == np.inf), (loss, k, b)
            assert b.parent is None or b.parent < k, (loss, k, b)
            assert loss[b.index] == b.birth and (b.saddle_index is None or loss[b.saddle_index] == b.death)
        assert len(topo.merge_tree) == sum(b.death < np.inf for b in topo.basins)
        ours = sorted((b.birth, b.death) for b in topo.basins)
        gudhis = sorted(map(tuple, topo.diagrams[0][topo.diagrams[0][:, 1] > topo.diagrams[0][:, 0]].tolist()))
        assert ours == gudhis, loss
