"""GPU checks: run on a CUDA machine (`pytest -m gpu`); skipped elsewhere."""
import numpy as np
import pytest
import torch

import landscape_nb as lnb

from conftest import TinyCNN, make_mlp, naive_loss

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("points_per_pass", [1, 16, None])
def test_gpu_surface_equals_cpu_naive(cnn_data, points_per_pass):
    torch.manual_seed(0)
    m = TinyCNN().eval()
    d = lnb.random_directions(m, n=2, seed=0)
    s = lnb.compute_surface(m, cnn_data, d, x=(-1, 1, 5), y=(-1, 1, 4), device="cuda",
                            points_per_pass=points_per_pass)
    dirs = d.as_state_dicts()
    for j, b in enumerate(s.y):
        for i, a in enumerate(s.x):
            ref, _ = naive_loss(m, cnn_data, dirs, [a, b])
            np.testing.assert_allclose(s.loss[j, i], ref, rtol=1e-5)
    assert next(m.parameters()).device.type == "cpu"  # the user's model stays where it was


def test_cuda_model_weights_restored_on_gpu(mlp_data):
    m = make_mlp().cuda()
    saved = {k: v.clone() for k, v in m.state_dict().items()}
    lnb.compute_surface(m, tuple(t.cuda() for t in mlp_data), lnb.random_directions(m, n=2), x=(-1, 1, 4),
                        y=(-1, 1, 4))
    for k, v in m.state_dict().items():
        assert torch.equal(v, saved[k])


def test_client_cuda_equals_in_process(mlp_data):
    pytest.importorskip("dask_cuda")
    m = make_mlp()
    d = lnb.random_directions(m, n=2, seed=1)
    ref = lnb.compute_surface(m, mlp_data, d, x=(-1, 1, 6), y=(-1, 1, 6))
    s = lnb.compute_surface(m, mlp_data, d, x=(-1, 1, 6), y=(-1, 1, 6), client="cuda", device="cuda")
    np.testing.assert_allclose(s.loss, ref.loss, rtol=1e-5)
