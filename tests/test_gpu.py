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


def _float64_losses(model, data, d, grid):
    """Mean cross-entropy at each (a, b) of ``grid`` in float64 on the CPU, one whole-set pass a point."""
    import copy

    x, y = data
    sd = d.as_state_dicts()
    out = []
    for a, b in grid:
        m = copy.deepcopy(model).double().eval()
        with torch.no_grad():
            for name, p in m.named_parameters():
                p.add_(a * sd[0][name].double() + b * sd[1][name].double())
            out.append(float(torch.nn.functional.cross_entropy(m(x.double()), y)))
    return np.array(out)


def test_fp32_is_fp32_on_gpu_and_the_global_flags_come_back():
    """PyTorch runs fp32 convolutions in TF32 by default (~1e-4 relative error on a loss here);
    precision="fp32" means fp32 (float64 agrees to 1e-5), TF32 only with precision="tf32"; the
    user's global TF32 and cudnn.benchmark flags are as they were after each run."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(),
                            torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.Flatten(),
                            torch.nn.Linear(64 * 8 * 8, 10)).eval()
    g = torch.Generator().manual_seed(0)
    data = torch.randn(512, 32, 8, 8, generator=g) * 3, torch.randint(0, 10, (512,), generator=g)
    d = lnb.random_directions(m, n=2, seed=0)

    def flags():
        from landscape_nb.evaluate import _tf32_switches

        return [getattr(obj, name) for obj, name, _, _ in _tf32_switches()] + [torch.backends.cudnn.benchmark]

    before = flags()
    s32 = lnb.compute_surface(m, data, d, x=(-1, 1, 3), y=(-1, 1, 2), device="cuda", metrics=None)
    assert flags() == before
    s_tf = lnb.compute_surface(m, data, d, x=(-1, 1, 3), y=(-1, 1, 2), device="cuda", metrics=None, precision="tf32")
    assert flags() == before
    ref = _float64_losses(m, data, d, [(a, b) for b in s32.y for a in s32.x]).reshape(s32.loss.shape)
    err32 = np.max(np.abs(s32.loss - ref) / ref)
    err_tf = np.max(np.abs(s_tf.loss - ref) / ref)
    assert err32 < 1e-5, err32
    assert err_tf > err32, (err_tf, err32)  # TF32 ran where asked for, and only there


def test_gpu_runs_a_set_that_fits_as_one_batch():
    """5,000 samples (more than the CPU's largest batch, 4096) in one batch: no ragged split, no
    batch-size trial points; values as the naive loop's."""
    torch.manual_seed(0)
    m = TinyCNN().eval()
    g = torch.Generator().manual_seed(3)
    data = torch.randn(5000, 1, 8, 8, generator=g), torch.randint(0, 3, (5000,), generator=g)
    d = lnb.random_directions(m, n=2, seed=0)
    s = lnb.compute_surface(m, data, d, x=(-1, 1, 3), y=(-1, 1, 2), device="cuda")
    assert s.provenance["batch_size"] == 5000
    dirs = d.as_state_dicts()
    ref = [naive_loss(m, data, dirs, [a, b])[0] for b in s.y for a in s.x]
    np.testing.assert_allclose(s.loss.reshape(-1), ref, rtol=1e-5)


def test_gpu_decides_stacking_before_timing_the_shared_layer(monkeypatch):
    """On a GPU the points-per-pass trial runs first; once several points a pass are kept, the
    shared-first-layer trial (six single points) is skipped: stacked passes combine its terms anyway."""
    from landscape_nb import tuning
    from landscape_nb.evaluate import Evaluator

    monkeypatch.setattr(tuning, "STACK_GPU_SIZES", (64,))  # a short trial: 134 points

    m = make_mlp(n_in=64, n_classes=10)
    g = torch.Generator().manual_seed(4)
    data = torch.randn(1000, 64, generator=g), torch.randint(0, 10, (1000,), generator=g)
    d = lnb.random_directions(m, n=2, seed=0)
    ev = Evaluator(m, data, d.vectors, d.layout, device="cuda")
    assert ev.shared_layer is not None
    ev.grouped_calls = True
    coords = np.random.default_rng(0).uniform(-1, 1, (1200, 2))
    got = np.concatenate([ev.evaluate(coords[:100]), ev.evaluate(coords[100:])])  # the trial spans two calls
    assert ev.points_per_pass > 1 and ev._shared_times == {}
    dirs = d.as_state_dicts()
    for i in (0, 1, 5, 300, 1199):
        np.testing.assert_allclose(got[i, 0], naive_loss(m, data, dirs, coords[i])[0], rtol=1e-5)


def test_hessian_points_on_gpu_are_fp32_and_flags_come_back():
    """quantity="hessian" evaluates its loss column under the same fp32 flags as a loss surface."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                            torch.nn.Linear(64 * 8 * 8, 10)).eval()
    g = torch.Generator().manual_seed(1)
    data = torch.randn(256, 32, 8, 8, generator=g) * 3, torch.randint(0, 10, (256,), generator=g)
    d = lnb.random_directions(m, n=2, seed=0)
    from landscape_nb.evaluate import _tf32_switches

    before = [getattr(obj, name) for obj, name, _, _ in _tf32_switches()]
    s = lnb.compute_surface(m, data, d, x=(-1, 1, 2), y=(-1, 1, 2), device="cuda", quantity="hessian",
                            metrics=None)
    assert [getattr(obj, name) for obj, name, _, _ in _tf32_switches()] == before
    ref = _float64_losses(m, data, d, [(a, b) for b in s.y for a in s.x]).reshape(s.loss.shape)
    np.testing.assert_allclose(s.loss, ref, rtol=1e-5)
