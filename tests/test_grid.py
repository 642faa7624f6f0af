"""Grid planning: tile order."""
import numpy as np
import pytest

from landscape_nb.grid import coarse_to_fine


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
