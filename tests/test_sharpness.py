"""Sharpness numbers and barriers read off surfaces, on surfaces with known answers."""
import warnings

import numpy as np
import pytest

from landscape_nb import LandscapeError, Surface
from landscape_nb.sharpness import curvature_text, loss_barrier, sharpness_text


def _quadratic(cx=3.0, cy=0.5, n=(21, 11)):
    x, y = np.linspace(-1, 1, n[0]), np.linspace(-2, 2, n[1])
    loss = 1.0 + cx * x[None, :] ** 2 + cy * y[:, None] ** 2 + 0.1 * x[None, :] * y[:, None]
    return Surface(x, y, loss, provenance={"x_label": "α", "y_label": "β"})


def test_sharpness_of_a_quadratic_bowl_is_its_curvature_and_rise():
    s = _quadratic().sharpness(radius=0.5)
    assert s["x"].curvature == pytest.approx(6.0, rel=1e-9)
    assert s["y"].curvature == pytest.approx(1.0, rel=1e-9)
    assert s["x"].centre_loss == pytest.approx(1.0)
    assert s["x"].increase == pytest.approx(3.0 * 0.25, rel=1e-9)  # 0.5 is a grid point of x
    y = np.linspace(-2, 2, 11)  # ±0.5 lies between grid points: linear interpolation of the slice
    assert s["y"].increase == pytest.approx(np.interp(0.5, y, 0.5 * y ** 2), rel=1e-12)
    default = _quadratic().sharpness()  # radius: half the shorter side of each axis
    assert default["x"].radius == pytest.approx(0.5) and default["y"].radius == pytest.approx(1.0)
    # a second difference over the grid's spacing, named with it (one number read 0.360 or 0.409 at 21 or 41
    # points, labelled as exact: trial s46)
    assert s["x"].spacing == pytest.approx(0.1) and s["y"].spacing == pytest.approx(0.4)
    assert "x: max ΔL(|t|≤0.5) = 0.75, L''(0) ≈ 6 (h=0.1)<br>y: " in sharpness_text(_quadratic(), radius=0.5)


def test_sharpness_of_a_line_and_of_an_asymmetric_slice():
    x = np.linspace(-1, 1, 41)
    loss = np.where(x > 0, 4 * x ** 2, x ** 2)
    s = Surface(x, None, loss).sharpness(radius=0.5)["x"]
    assert s.increase == pytest.approx(1.0)  # the steeper side decides
    assert 2.0 < s.curvature < 8.0


def test_the_rise_is_the_largest_within_r_a_peak_inside_it_included():
    """Keskar et al.'s sharpness is the maximum over the ball: a slice that rises to a peak inside r and falls back
    by ±r (a periodic unit, a barrier between two basins) read as flat from L(±r) alone."""
    x = np.linspace(-2 * np.pi, 2 * np.pi, 81)
    loss = 0.1 + 2 * (1 - np.cos(x))  # 0.1 at 0 and at ±2π, 4.1 at ±π
    s = Surface(x, None, loss).sharpness(radius=2 * np.pi)["x"]
    naive = max(v - loss[40] for t, v in zip(x, loss) if abs(t) <= 2 * np.pi + 1e-9)
    assert s.increase == pytest.approx(naive, rel=1e-12) and naive == pytest.approx(4.0, rel=1e-3)
    # L''(0) = 2 at the centre, whatever r (a quadratic fit over ±2π had the sign of a maximum)
    h = x[1] - x[0]
    assert s.curvature == pytest.approx(2 * 2 * (1 - np.cos(h)) / h ** 2, rel=1e-9)  # the second difference
    assert s.curvature == pytest.approx(2.0, rel=3e-3)
    assert Surface(x, None, loss).sharpness(radius=0.5)["x"].curvature == s.curvature
    # r between grid points: the interpolated L(±r) counts when it is the highest
    t = np.linspace(-1, 1, 5)
    line = Surface(t, None, np.array([9.0, 1.0, 0.0, 1.0, 5.0])).sharpness(radius=0.75)["x"]
    assert line.increase == pytest.approx(np.interp(-0.75, t, [9.0, 1.0, 0.0, 1.0, 5.0]))


@pytest.mark.parametrize("bad, rise", [(np.nan, "nan"), (np.inf, "inf")])
def test_a_diverged_point_within_r_gives_no_finite_sharpness_and_says_so(bad, rise):
    """Read off the finite points only, a NaN at −r gave the +r side's rise and an ordinary curvature."""
    x = np.linspace(-3, 3, 13)
    loss = x ** 2
    loss[0] = bad  # at −3 = −r
    with pytest.warns(UserWarning, match=rf"the loss is {rise.replace('nan', 'NaN')} at 1 of the points within r=3 "
                                         r"of the centre \(x = -3; the model diverged there\)"):
        s = Surface(x, None, loss).sharpness(radius=3)["x"]
    assert str(s.increase) == rise and s.curvature == pytest.approx(2.0)  # the centre's points are finite
    loss[1] = bad  # at −2.5: just beyond r = 2.25, interpolated from
    with pytest.warns(UserWarning, match="the loss is"):
        assert not np.isfinite(Surface(x, None, loss).sharpness(radius=2.25)["x"].increase)
    ok = Surface(x, None, loss).sharpness(radius=2)["x"]  # within the finite part: as before, no warning
    assert ok.increase == pytest.approx(4.0) and ok.curvature == pytest.approx(2.0)


def test_the_curvature_is_the_centres_not_a_fit_over_r():
    """A quartic-dominated slice (cross-entropy along a sharp eigenvector rises faster than its parabola):
    L''(0) from the centre's neighbours, as a naive second difference; a fit over |t| ≤ r read 2.8× it."""
    x = np.linspace(-0.5, 0.5, 41)
    loss = 0.2 + 4.0 * x ** 2 + 300 * x ** 4  # L''(0) = 8
    s = Surface(x, None, loss).sharpness()["x"]
    h = x[1] - x[0]
    naive = (loss[21] - 2 * loss[20] + loss[19]) / h ** 2  # 8 + 600 h² = 8.375
    assert s.curvature == pytest.approx(naive, rel=1e-9) and s.curvature == pytest.approx(8.0, rel=0.05)
    with pytest.warns(UserWarning, match="is one-sided"):  # the centre at the grid's end
        one_sided = Surface(x[20:], None, loss[20:]).sharpness(radius=0.2)["x"]
    assert one_sided.curvature == pytest.approx((loss[22] - 2 * loss[21] + loss[20]) / h ** 2, rel=1e-9)
    bf16 = Surface(x, None, loss, provenance={"precision": "bf16"})
    with pytest.warns(UserWarning, match="computed in bf16.*may be far off"):
        bf16.sharpness()


def test_sharpness_needs_the_origin_on_the_grid():
    x = np.linspace(-1, 1, 20)  # even number of points: no point at 0
    with pytest.raises(LandscapeError, match="no point at 0"):
        Surface(x, None, x ** 2).sharpness()
    with pytest.raises(LandscapeError, match="radius"):
        Surface(np.linspace(-1, 1, 5), None, np.zeros(5)).sharpness(radius=-1)


def test_a_radius_beyond_the_grid_is_refused_and_one_reaching_one_side_uses_that_side():
    line = Surface(np.linspace(-1, 1, 5), None, np.linspace(-1, 1, 5) ** 2)
    for radius in (5, 1.5, float("inf"), float("nan"), "wide", True):  # True: read as 1.0 before
        with pytest.raises(LandscapeError, match=r"expected a positive distance from the centre within the grid"):
            line.sharpness(radius=radius)
    with pytest.raises(LandscapeError, match=r"^radius=5; .*the x axis runs -1..1, so at most 1 \(pass a smaller"):
        line.sharpness(radius=5)
    assert line.sharpness(radius=1)["x"].increase == pytest.approx(1.0)  # the grid's end is within it
    x = np.linspace(-0.4, 1, 15)  # asymmetric: +0.8 is on the grid, −0.8 is not
    s = Surface(x, None, 3 * x ** 2).sharpness(radius=0.8)["x"]
    assert s.increase == pytest.approx(np.interp(0.8, x, 3 * x ** 2), rel=1e-12)
    wide_x = Surface(np.linspace(-2, 2, 9), np.linspace(-1, 1, 5), np.zeros((5, 9)))
    with pytest.raises(LandscapeError, match=r"the y axis runs -1..1, so at most 1"):
        wide_x.sharpness(radius=1.5)  # within x, beyond both ends of y


def test_barrier_of_a_bump_above_the_chord():
    t = np.linspace(0, 1, 11)
    loss = 1.0 + t + 0.3 * np.sin(np.pi * t)  # chord from 1 to 2; the bump peaks at t = 0.5
    assert loss_barrier(Surface(t, None, loss)) == pytest.approx(0.3)
    assert loss_barrier(Surface(t, None, 1.0 + t)) == pytest.approx(0.0, abs=1e-12)  # the chord itself
    assert loss_barrier(Surface(t, None, 1.0 + t - 0.2 * np.sin(np.pi * t))) == 0.0  # below the chord
    wide = np.linspace(-0.5, 1.5, 21)  # points outside [0, 1] do not count
    assert loss_barrier(Surface(wide, None, 5.0 * (wide - 0.5) ** 2)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(LandscapeError, match=r"NaN or infinite at t = 0.5 \(computed"):
        loss_barrier(Surface(t, None, np.where(t == 0.5, np.nan, loss)))
    with pytest.raises(LandscapeError, match="a 1D surface along 'random' directions: its t = 1 is the model moved"):
        loss_barrier(Surface(t, None, loss, provenance={"scheme": "random"}))  # was a "barrier" to a random point
    assert loss_barrier(Surface(t, None, loss, provenance={"scheme": "interpolate"})) == pytest.approx(0.3)
    for ends_only in (np.array([0.0, 1.0]), np.array([-1.0, 0.0, 1.0])):  # was a barrier of 0, whatever the path
        with pytest.raises(LandscapeError, match="has no point strictly between t = 0 and t = 1"):
            loss_barrier(Surface(ends_only, None, np.ones(len(ends_only))))


def test_barrier_and_sharpness_take_any_surface_like_object():
    from types import SimpleNamespace

    t = np.linspace(0, 1, 11)
    loss = 1.0 + t + 0.3 * np.sin(np.pi * t)
    duck = SimpleNamespace(ndim=1, x=t, loss=loss)
    assert loss_barrier(duck) == pytest.approx(0.3)
    assert loss_barrier(SimpleNamespace(profile=duck)) == pytest.approx(0.3)  # a BezierCurve's shape
    assert loss_barrier(SimpleNamespace(profile=Surface(t, None, loss))) == pytest.approx(0.3)
    with pytest.raises(LandscapeError, match="a 2D surface; expected a 1D path profile"):
        loss_barrier(_quadratic())
    with pytest.raises(LandscapeError, match="a 2D surface"):
        loss_barrier(SimpleNamespace(profile=_quadratic()))
    with pytest.raises(LandscapeError, match="a ndarray; expected a 1D Surface"):
        loss_barrier(loss)  # has ndim == 1 but no x
    with pytest.raises(LandscapeError, match="a SimpleNamespace; expected"):
        loss_barrier(SimpleNamespace(profile=loss))


def test_sharpness_module_does_not_import_surface():
    import ast
    import inspect

    import landscape_nb.sharpness as mod

    tree = ast.parse(inspect.getsource(mod))
    imported = {f"{n.module or ''}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                for a in n.names}  # `from .surface import X` and `from . import surface` alike
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("surface" in name for name in imported), imported


def test_a_float32_second_difference_below_its_rounding_is_warned_about_and_float64_is_not():
    """A float32 surface at spacing 5e-5 along unit Hessian eigenvectors read L''(0) = -0.37 for λ_max = +0.46
    and +0.37 for λ_min = -0.0018, with no word (trial s34). Such a spacing is warned about; at 5e-3 the
    curvature is the eigenvalue (within 2 %, no warning); a float64 copy at 5e-5 gives the eigenvalues with
    no warning. Naive: the dense Hessian's eigenvalues, torch.linalg.eigvalsh."""
    import copy
    import warnings

    import torch
    from torch import nn
    from torch.func import functional_call

    import landscape_nb as lnb

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    shapes = {n: p.shape for n, p in model.named_parameters()}
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()

    def f(flat):
        params, k = {}, 0
        for n, shape in shapes.items():
            params[n] = flat[k:k + shape.numel()].reshape(shape)
            k += shape.numel()
        return nn.functional.cross_entropy(functional_call(copy.deepcopy(model).double(), params, (x.double(),)), y)

    evals = torch.linalg.eigvalsh(torch.autograd.functional.hessian(f, flat0)).numpy()
    d = lnb.hessian_directions(model, (x, y), which=("max", "min"))
    for net, r, warned in ((model, 5e-4, True), (model, 5e-1, False), (copy.deepcopy(model).double(), 5e-4, False)):
        surf = lnb.compute_surface(net, (x if net is model else x.double(), y), d, x=(-r, r, 21), y=(-r, r, 21))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s = surf.sharpness()
        said = [str(w.message) for w in caught if "rounding each" in str(w.message)]
        if warned:  # both axes, the spacing and the precision named
            assert len(said) == 2 and all("spacing of 5e-05" in m and "fp32" in m for m in said), said
        else:
            assert not said, (r, said)
            assert s["x"].curvature == pytest.approx(evals[-1], rel=0.02)
            assert s["y"].curvature == pytest.approx(evals[0], rel=0.05)


def test_a_centre_at_the_end_of_an_axis_names_the_axis_not_a_radius_never_given():
    """x=(0, 1, 5): the default radius (half the shorter side) is 0; the message said "radius=None; expected a
    positive distance" (trial s34). It names the axis and the radius to pass, which then works one-sided."""
    line = Surface(np.linspace(0, 1, 5), None, 1 + 2 * np.linspace(0, 1, 5) ** 2)
    with pytest.raises(LandscapeError, match=r"the x axis runs 0\.\.1: the centre is at its end.*pass radius= up to 1"):
        line.sharpness()
    with pytest.warns(UserWarning, match=r"the centre is the grid's end \(x runs 0\.\.1\), so L''\(0\) = 4 is one-sided"):
        s = line.sharpness(radius=1)["x"]
    assert s.increase == pytest.approx(2.0) and s.curvature == pytest.approx(4.0)


def test_a_one_sided_curvature_is_the_naive_one_and_said_so():
    """At a sharp minimum at the end of the grid, x=(0, 1, 3), the one-sided second difference read -11 as L''(0),
    unwarned (trial s47): said now, the value the parabola through L(0), L(h), L(2h) gives; a range on both sides
    of 0 gives the centred one, unwarned."""
    x = np.linspace(0, 1, 3)
    loss = np.array([0.001, 1.376, 0.001])
    with pytest.warns(UserWarning, match=r"is one-sided.*spacing 0\.5; within O\(h\) of L''\(0\), not O\(h²\)"):
        s = Surface(x, None, loss).sharpness(radius=0.5)["x"]
    assert s.curvature == pytest.approx((loss[0] - 2 * loss[1] + loss[2]) / 0.5 ** 2)
    assert s.one_sided and curvature_text(s) == "L''(0) ≈ -11 (h=0.5, one-sided)"
    centred = np.linspace(-0.5, 0.5, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = Surface(centred, None, np.array([1.251, 0.001, 1.376])).sharpness(radius=0.5)["x"]
    assert c.curvature == pytest.approx((1.251 - 2 * 0.001 + 1.376) / 0.5 ** 2)


def test_a_volumes_plane_off_the_model_refuses_sharpness_and_its_figure_says_which_plane():
    """Trial s57: vol.slice("z", value=0.5).sharpness() read the increase and curvature around (0, 0, 0.5), not the
    model, with no word, and the slice's contour had no title. The plane through the model reads its own (naive:
    L(x, y, 0) = x² + y² + 1 has increase r² and curvature 2), another plane is refused, and each is titled."""
    from landscape_nb import LandscapeError, plot

    t, z = np.linspace(-1, 1, 5), np.linspace(0, 1, 3)
    vol = Surface(t, t, t[None, None, :] ** 2 + t[None, :, None] ** 2 + z[:, None, None] + 1, z=z,
                  provenance={"z_label": "γ (random direction 3)"})
    at_model = vol.slice("z", value=0.0)
    s = at_model.sharpness(radius=0.5)["x"]
    assert (s.centre_loss, s.increase) == (pytest.approx(1.0), pytest.approx(0.25))
    assert s.curvature == pytest.approx(2.0)
    assert plot.contour(at_model).layout.title.text == "the plane γ = 0 of a volume"
    off = vol.slice("z", value=0.5)
    with pytest.raises(LandscapeError, match=r"sharpness\(\) of the plane z = 0.5 of a volume: its centre \(0, 0\) is "
                                             r"not the model.*volume.slice\(axis='z', value=0\).sharpness\(\)"):
        off.sharpness()
    assert plot.contour(off).layout.title.text == "the plane γ = 0.5 of a volume (the model, at γ = 0, is not on it)"


def test_a_rise_read_between_coarse_grid_points_is_warned_of_with_radii_on_the_grid():
    """Trial s59: on an 11-point grid r = 0.5 lies between 0.4 and 0.6, and the rise read at the chord's L(0.5) was
    39 % above the slice's true rise, with no word. Here a quartic slice: the true rise at 0.5 is 1.0 (naive: the
    function itself), the chord reads 1.09; warned with radii on the grid; a 51-point grid (0.36 % off) and a
    radius on the grid are not."""
    f = lambda t: 0.2 + 3 * t ** 2 + 4 * t ** 4  # noqa: E731
    x = np.linspace(-1, 1, 11)
    with pytest.warns(UserWarning, match=r"sharpness along x: the rise is read at x = -0.5, between the grid points "
                                         r"-0.6 and -0.4, where the loss is interpolated linearly \(the chord misses "
                                         r"a curved slice by about 0.118, against a rise of 1.09\); pass a radius on "
                                         r"the grid, e.g. 0.4 or 0.6"):
        s = Surface(x, None, f(x)).sharpness(radius=0.5)["x"]
    assert s.increase == pytest.approx(np.interp(0.5, x, f(x)) - f(0.0)) and f(0.5) - f(0.0) == pytest.approx(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "landscape_nb: sharpness along x: L''", UserWarning)  # the curvature's own
        assert Surface(x, None, f(x)).sharpness(radius=0.4)["x"].increase == pytest.approx(f(0.4) - f(0.0))
        fine = np.linspace(-1, 1, 51)
        assert Surface(fine, None, f(fine)).sharpness()["x"].increase == pytest.approx(1.0, rel=5e-3)


def test_the_interpolation_warning_never_suggests_a_radius_of_zero():
    """Review s59: r below the first grid spacing lies between 0 and a point, and "e.g. 0 or 0.2" named a radius
    that is refused."""
    x = np.linspace(-1, 1, 11)
    with pytest.warns(UserWarning, match=r"between the grid points -0.2 and 0, .*pass a radius on the grid, e.g. 0.2, "
                                         r"or compute a finer grid"):
        Surface(x, None, np.abs(x) ** 0.5).sharpness(radius=0.05)


def test_a_curvature_the_grids_spacing_moves_is_warned_of_with_its_extrapolation():
    """Trial s60: an 11-point grid over -1..1 read L''(0) = 9.74 where autograd gave 13.04, with no word. Here a
    slice of known L''(0) = 2 with a strong fourth derivative (naive: its formula): the second difference at
    h = 0.2 reads 2 + 40h² = 3.6, warned with the spacing's error and the extrapolated value, 2. A quadratic (no
    error) and a fine grid (0.05 % off) are not warned of."""
    f = lambda t: 1.0 + t ** 2 + 20 * t ** 4  # noqa: E731
    x = np.linspace(-1, 1, 11)
    h = 0.2
    naive = (f(h) - 2 * f(0.0) + f(-h)) / h ** 2
    assert naive == pytest.approx(3.6)
    with pytest.warns(UserWarning, match=r"sharpness along x: L''\(0\) = 3.6 is the second difference at the "
                                         r"grid's spacing 0.2, and the one at twice it reads 8.4: the spacing may "
                                         r"move it by about 1.6 \(44%; 2 extrapolated\); compute a finer grid near "
                                         r"the centre, e.g. x=\(-0.1, 0.1, 5\)"):
        s = Surface(x, None, f(x)).sharpness(radius=0.4)["x"]
    assert s.curvature == pytest.approx(naive)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Surface(x, None, 1 + 3 * x ** 2).sharpness(radius=0.4)["x"].curvature == pytest.approx(6.0)
        fine = np.linspace(-0.1, 0.1, 41)
        assert Surface(fine, None, f(fine)).sharpness()["x"].curvature == pytest.approx(2.0, rel=1e-3)



def test_the_spacing_warning_leaves_rounding_to_its_own_and_a_flat_centre_gets_no_percentage():
    """Review s60: on a float32 slice whose rounding dominates, the rounding warning said "a coarser grid" and the
    spacing one "a finer grid" (four times the rounding); only the rounding one is said. A flat centre (L''(0) = 0
    by the second difference) was warned of as "inf%", with numpy's division warning."""
    t = np.linspace(-2e-3, 2e-3, 11)
    loss = (0.5 + 0.5 * t ** 2 + 6e-8 * (np.arange(11) % 4 == 3)).astype(np.float32).astype(float)
    with pytest.warns(UserWarning) as said:
        Surface(t, None, loss, provenance={"precision": "fp32"}).sharpness(radius=1.2e-3)
    texts = [str(w.message) for w in said]
    assert any("use a coarser grid" in m for m in texts) and not any("finer grid" in m for m in texts), texts
    x = np.linspace(-1, 1, 11)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = Surface(x, None, np.maximum(0, np.abs(x) - 0.25) ** 2).sharpness(radius=0.6)["x"]
    texts = [str(w.message) for w in caught]
    assert s.curvature == 0 and not [w for w in caught if issubclass(w.category, RuntimeWarning)], texts
    spacing = [m for m in texts if "L''(0) = 0 is the second difference" in m]
    assert spacing and "%" not in spacing[0], texts
