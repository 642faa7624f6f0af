"""Grid planning: tile order."""
import numpy as np
import pytest

from landscape_nb.grid import Grid, coarse_to_fine


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 5), (8, 8), (3, 11), (16, 16)])
def test_coarse_to_fine_order_covers_grid_evenly(shape):
    order = coarse_to_fine(shape)
    assert sorted(order) == [(i, j) for i in range(shape[0]) for j in range(shape[1])]
    n = shape[0] * shape[1]
    for frac in (0.1, 0.25, 0.5):
        k = max(1, int(frac * n))
        first = np.array(order[:k])
        # every tile of the grid is within a distance ~ sqrt(n / k) of one of the first k tiles
        cells = np.array([(i, j) for i in range(shape[0]) for j in range(shape[1])])
        dist = np.abs(cells[:, None, :] - first[None, :, :]).max(axis=2).min(axis=1)
        assert dist.max() <= 2 * np.sqrt(n / k) + 1, (frac, dist.max())
        # and the covered set is spread over both halves of each axis
        if k >= 4 and min(shape) > 1:
            for ax in (0, 1):
                assert (first[:, ax] < shape[ax] / 2).any() and (first[:, ax] >= shape[ax] / 2).any()


def test_range_through_puts_the_models_on_the_grid_and_covers_the_range():
    """Naive check with np.linspace: 0 (and with unit=True 1) is a point; the ends reach the range's (within
    a step where the points must be shared out); a range without 0 inside, or of 2 points, is left alone."""
    from landscape_nb.grid import range_through

    rng = np.random.default_rng(0)
    for _ in range(500):
        unit = bool(rng.integers(2))
        lo, n = -rng.uniform(0.01, 3), int(rng.integers(3, 80))
        hi = (1 if unit else 0) + rng.uniform(0.0 if unit else 0.01, 3)
        a, b = range_through(lo, hi, n, unit=unit)
        v = np.linspace(a, b, n)
        assert np.abs(v).min() < 1e-12 * (b - a), (lo, hi, n, unit, a, b)
        values = Grid.make((a, b, n)).x.values()  # the grid's own points: 0 (and 1) exactly
        assert 0.0 in values and (1.0 in values or not unit), (lo, hi, n, unit, a, b)
        if unit:
            assert np.abs(v - 1).min() < 1e-12 * (b - a), (lo, hi, n, a, b)
            # steps of 1/m: a coarse grid cannot always come close (3 points: -1, 0, 1 or 0, 1, 2)
            off = max(abs(a - lo), abs(b - hi))
            assert off <= (0.2 if n >= 11 else 1.01) * (hi - lo), (lo, hi, n, a, b)
        else:
            assert a <= lo + 1e-12 and b >= hi - 1e-12, (lo, hi, n, a, b)
    assert range_through(0.2, 1.0, 11) == (0.2, 1.0) and range_through(-1.0, 1.0, 2) == (-1.0, 1.0)
    assert range_through(-1.0, 1.0, 21) == (-1.0, 1.0)
    # a coarse interpolation keeps its points between the models where that misses the range by no more
    # (--grid 3 --model-file2 scanned t = 0, 1, 2: no midpoint, so no barrier)
    assert range_through(-0.5, 1.5, 3, unit=True) == (0.0, 1.0)
    assert range_through(-0.5, 1.5, 5, unit=True) == (-0.5, 1.5)


def test_a_range_widened_to_a_model_keeps_round_ends_with_more_points_before_it_is_moved():
    """A range leaving the model at 0 out is widened to it; where 1 then falls between points, up to twice the
    points keep the widened range's own ends (0.5:1.5 at 11 points was suggested as 0:1.428571429), checked by
    listing the points (naive: numpy's linspace holds 0 and 1 exactly, to rounding)."""
    from landscape_nb.grid import grid_through_models

    for (a, b, n), want in {(0.5, 1.5, 11): (13, 0.0, 1.5), (0.2, 1.2, 8): (13, 0.0, 1.2),
                            (0.1, 1.3, 21): (27, 0.0, 1.3)}.items():
        got = grid_through_models(a, b, n, unit=True)
        assert got == want
        points = np.linspace(got[1], got[2], got[0])
        assert np.isclose(points, 0.0).any() and np.isclose(points, 1.0).any()
    far = grid_through_models(0.1, 1.37, 5, unit=True)  # 0 and 1 on 0:1.37 need 138 points: moved instead
    assert far[0] == 5 and far[1] == 0.0 and far[2] != 1.37
    points = np.linspace(far[1], far[2], far[0])
    assert np.isclose(points, 0.0).any() and np.isclose(points, 1.0).any()


def test_a_range_too_wide_to_tell_0_from_1_keeps_linspaces_points():
    """Points within rounding of 0 or 1 are made exact, but at ±2e15 rounding (4 ulp ≈ 1.8) spans both:
    the centre was made 0 and then 1, so the surface's middle point was evaluated at x = 1."""
    for start, stop, num in ((-2e15, 2e15, 5), (-1e17, 3e17, 9), (-1.0, 1.0, 5)):
        values = Grid.make((start, stop, num)).x.values()
        np.testing.assert_array_equal(values, np.linspace(start, stop, num))
        assert values[round((num - 1) * -start / (stop - start))] == 0.0



def test_a_list_of_points_is_not_read_as_a_range_in_silence():
    """Trial s56: x=[0, 1, 2], meant as the points 0, 1, 2, drew 2 points on 0..1 with no word, and x=[-1, 0, 1]
    was refused as "x resolution 1" alone. Evenly spaced lists of three that give 3 points or fewer warn (a tuple
    says (start, stop, num) is meant), the errors name what x takes; arrays and longer lists say it too."""
    import warnings

    from landscape_nb.errors import LandscapeError
    from landscape_nb.grid import Axis

    with pytest.warns(UserWarning, match=r"x=\[0, 1, 2\] is read as \(start, stop, num\): 2 points from 0 to 1 .*give "
                                         r"x=\(0, 2, 3\)\); pass a tuple, x=\(0, 1, 2\)"):
        axis = Axis.parse([0, 1, 2], "x")
    np.testing.assert_array_equal(axis.values(), np.linspace(0, 1, 2))  # read as it says
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for meant in ((0, 1, 2), [-1, 1, 51], [0, 1, 5], [-1, 1, 3]):  # a tuple; lists read as ranges
            Axis.parse(meant, "x")
    with pytest.raises(LandscapeError, match=r"x resolution 1; expected an integer ≥ 2 points \(x takes the range and "
                                             r"the count, not the points: for -1, 0, 1 give x=\(-1, 1, 3\)\)"):
        Axis.parse([-1, 0, 1], "x")
    with pytest.raises(LandscapeError, match=r"resolution 0.5; .* \(y=\[-1, 0, 0.5\] is read as \(start, stop, num\)\)"):
        Axis.parse([-1, 0, 0.5], "y")
    with pytest.warns(UserWarning, match=r"x=\[-2, 0, 2\] is read .*give x=\(-2, 2, 3\)\); pass a tuple, x=\(-2, 0, 2\)"):
        Axis.parse([-2, 0, 2], "x")
    for points in ([-1, -0.5, 0, 0.5, 1], np.linspace(-1, 1, 5)):
        with pytest.raises(LandscapeError, match=r"expected \(start, stop, num\), .*not the points"):
            Axis.parse(points, "x")
    # review s57: an array of three is points too (np.linspace(-1, 1, 3)), refused not guessed; a 0-d array and a
    # count of inf or NaN were TypeError, OverflowError and ValueError
    with pytest.raises(LandscapeError, match=r"not the points; a tuple, not an array\)"):
        Axis.parse(np.array([-1, 1, 51]), "x")
    with pytest.raises(LandscapeError, match=r"x=array\(5\.\); expected \(start, stop, num\)"):
        Axis.parse(np.array(5.0), "x")
    for count in (float("inf"), float("nan")):
        with pytest.raises(LandscapeError, match=rf"x resolution {count}; expected an integer ≥ 2 points"):
            Axis.parse((-1, 1, count), "x")
    with pytest.raises(LandscapeError, match=r"empty or reversed; .*e\.g\. \(-1\.0, 1\.0, 2\)"):
        Axis.parse((1, -1, float("inf")), "x")
