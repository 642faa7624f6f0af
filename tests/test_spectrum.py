"""SLQ spectral density against the dense Hessian's eigenvalues (numpy.linalg.eigvalsh)."""
import numpy as np
import pytest
import torch
from torch import nn

from landscape_nb.errors import LandscapeError
from landscape_nb.spectrum import hessian_spectrum


def _naive_dense_hessian(model, x, y):
    """Column by column with torch.autograd.functional.hessian on the flat parameters."""
    from torch.func import functional_call

    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()

    def loss(flat):
        parts = torch.split(flat, sizes)
        params = {n: t.reshape(s).float() for n, t, s in zip(names, parts, shapes)}
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y).double()

    h = torch.autograd.functional.hessian(loss, flat0).numpy()
    return (h + h.T) / 2


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(80, 6, generator=g)
    y = torch.randint(0, 3, (80,), generator=g)
    eig = np.linalg.eigvalsh(_naive_dense_hessian(model, x, y))
    return model, (x, y), eig


def test_density_integrates_to_one(problem):
    model, data, _ = problem
    spec = hessian_spectrum(model, data, n_probes=3, n_steps=20, seed=0)
    assert spec.density.shape == spec.grid.shape == (1000,)
    assert np.trapezoid(spec.density, spec.grid) == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(spec.ritz_weights.sum(axis=1), 1.0, atol=1e-10)
    assert spec.n_products == 3 * 20


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])  # float32: its rounding drawn as peaks (review s56)
@pytest.mark.parametrize("seed", [0, 1])
def test_a_hessian_c_times_identity_gives_one_peak_at_c_that_integrates_to_one(seed, dtype):
    """Whitened linear regression under MSE: H = (2/n_out)·XᵀX/n ⊗ I = I exactly, so the Ritz values are 1
    up to rounding. A σ of 1 % of that ~1e-16 spread left a grid float64 could not resolve (2 distinct
    values; the density integrated to 19.9)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(30, 4, generator=g, dtype=torch.float64))
    x, y = q * 30 ** 0.5, torch.randn(30, 2, generator=g, dtype=torch.float64)
    model = nn.Linear(4, 2, bias=False).double()
    # naive: H of mean((W x − y)²) over 2 outputs is (2/2)·(xᵀx/30) per output row = I
    np.testing.assert_allclose((x.T @ x / 30).numpy(), np.eye(4), atol=1e-12)
    model, x, y = model.to(dtype), x.to(dtype), y.to(dtype)
    spec = hessian_spectrum(model, (x, y), nn.functional.mse_loss, n_probes=2, n_steps=10, seed=seed)
    from landscape_nb.spectrum import ROUNDING

    # what the model's floats resolve around 1: one narrow peak, not the rounding drawn as several (review s56)
    assert spec.sigma == pytest.approx(max(ROUNDING, 2 * torch.finfo(dtype).eps) * np.nanmax(spec.ritz_values))
    assert len(np.unique(spec.grid)) == len(spec.grid)
    assert np.trapezoid(spec.density, spec.grid) == pytest.approx(1.0, abs=1e-6)
    assert spec.grid[np.argmax(spec.density)] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_moments_match_the_dense_eigenvalues_within_the_stated_tolerance(problem, probe):
    model, data, eig = problem
    spec = hessian_spectrum(model, data, n_probes=24, n_steps=12, probe=probe, seed=3)
    for power in (1, 2):
        truth = float(np.mean(eig ** power))
        assert abs(spec.moment(power) - truth) <= spec.moment_tolerance(power), (power, spec.moment(power), truth)
        # the broadened curve has the same mean and σ² more second moment
        curve = np.trapezoid(spec.density * spec.grid ** power, spec.grid) - (spec.sigma ** 2 if power == 2 else 0)
        assert curve == pytest.approx(spec.moment(power), rel=1e-6, abs=1e-9)
    assert spec.trace == pytest.approx(len(eig) * spec.moment(1))


def test_ritz_values_bracket_and_reach_the_dense_extremes(problem):
    model, data, eig = problem
    spec = hessian_spectrum(model, data, n_probes=2, n_steps=40, seed=0)
    lo, hi = spec.extremes
    span = eig[-1] - eig[0]
    slack = 1e-6 * span  # the products run in float32: rounding, not a failure of interlacing
    assert eig[0] - slack <= lo and hi <= eig[-1] + slack  # interlacing: never outside
    assert lo == pytest.approx(eig[0], abs=1e-4 * span) and hi == pytest.approx(eig[-1], abs=1e-4 * span)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_model_gets_its_lanczos_steps_and_its_extremes(problem, dtype):
    """Lanczos stopped where β fell below 100 ulp of the model's dtype: 0.78 of ‖T‖ in bf16, so each probe
    ran 2 of 64 steps and λ_max came out 21 % low, λ_min of the wrong sign (trial s34). The reference is the
    dense Hessian at the rounded weights (float32 throughout)."""
    import copy

    model, (x, y), _ = problem
    low = copy.deepcopy(model).to(dtype)
    eig = np.linalg.eigvalsh(_naive_dense_hessian(copy.deepcopy(low).float(), x, y))
    with pytest.warns(UserWarning, match="weights are"):
        spec = hessian_spectrum(low, (x.to(dtype), y), n_probes=2, n_steps=40, seed=0)
    assert spec.n_products >= 2 * 30, spec.n_products
    span = eig[-1] - eig[0]
    lo, hi = spec.extremes
    assert lo == pytest.approx(eig[0], abs=0.02 * span) and hi == pytest.approx(eig[-1], abs=0.02 * span)


def test_full_lanczos_is_the_exact_spectrum():
    """A model with fewer parameters than steps: n steps of Lanczos give every eigenvalue."""
    torch.manual_seed(2)
    model = nn.Linear(4, 3)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 4, generator=g), torch.randint(0, 3, (50,), generator=g)
    eig = np.linalg.eigvalsh(_naive_dense_hessian(model, x, y))
    spec = hessian_spectrum(model, (x, y), n_probes=1, n_steps=100, probe="gaussian", seed=1)
    theta = np.sort(spec.ritz_values[0][np.isfinite(spec.ritz_values[0])])
    # the Hessian of softmax cross-entropy has repeated (zero) eigenvalues: Lanczos sees each once
    distinct = np.unique(np.round(eig / (eig[-1] - eig[0]), 6))
    assert len(theta) <= len(eig) and spec.n_products == len(theta)
    assert np.allclose(np.unique(np.round(theta / (eig[-1] - eig[0]), 6)), distinct, atol=2e-6)


def test_refuses_bad_arguments(problem):
    model, data, _ = problem
    with pytest.raises(LandscapeError, match="n_probes"):
        hessian_spectrum(model, data, n_probes=0)
    with pytest.raises(LandscapeError, match="probe="):
        hessian_spectrum(model, data, probe="sobol")
    with pytest.raises(LandscapeError, match="sigma"):
        hessian_spectrum(model, data, sigma=-1.0)
    with pytest.raises(LandscapeError, match="grid"):
        hessian_spectrum(model, data, n_probes=1, n_steps=2, grid=np.array([1.0, 0.0]))


def test_dask_probes_on_a_local_cluster_equal_in_process(problem):
    from distributed import Client, LocalCluster

    model, data, _ = problem
    here = hessian_spectrum(model, data, n_probes=3, n_steps=15, seed=5)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        there = hessian_spectrum(model, data, n_probes=3, n_steps=15, seed=5, client=client)
        probabilities = nn.Sequential(model, nn.Softmax(dim=-1))  # a worker's warning reaches this process
        with pytest.warns(UserWarning, match="softmax") as said:
            hessian_spectrum(probabilities, data, n_probes=3, n_steps=5, seed=5, client=client)
    assert np.allclose(there.ritz_values, here.ritz_values, rtol=1e-9, atol=1e-12)
    assert np.allclose(there.density, here.density, rtol=1e-9, atol=1e-12)
    assert there.n_products == here.n_products == 45
    assert len([w for w in said if "softmax" in str(w.message)]) == 1  # once, not once per probe (trial s34)


def test_spectrum_figure_draws_the_density_and_every_ritz_value(problem):
    from landscape_nb.plot import spectrum

    model, data, _ = problem
    spec = hessian_spectrum(model, data, n_probes=2, n_steps=10, seed=0)
    fig = spectrum(spec)
    curve, nodes = fig.data
    np.testing.assert_allclose(curve.x, spec.grid)
    floor = 1e-8 * spec.density.max()
    np.testing.assert_allclose(curve.y, np.maximum(spec.density, floor))
    assert sorted(nodes.x) == sorted(spec.ritz_values[np.isfinite(spec.ritz_values)])
    assert fig.layout.yaxis.type == "log"
    assert spectrum(spec, log=False, ritz=False).data[0].y.tolist() == spec.density.tolist()
    with pytest.raises(LandscapeError, match="Spectrum"):
        spectrum({"grid": [0, 1]})


def test_the_default_width_is_pyhessians_and_a_narrow_one_still_integrates_to_one(problem):
    """Trial s40: a σ below the step of the 1000-point grid gave a density integrating to 0.42 (σ = 1e-3), then
    2.93, with no word; the default, 1 % of the spread, spread the bulk's mass into negative eigenvalues where the
    Ritz weights had little. The default is PyHessian's, σ² = 1e-5·spread, for a spread of 1 or more, 0.32 % of
    it below (trial s56); a number of grid points is raised to resolve σ, and refused past MAX_GRID."""
    from landscape_nb.spectrum import MAX_GRID

    model, data, _ = problem
    spec = hessian_spectrum(model, data, n_probes=4, n_steps=12, seed=1)
    theta = spec.ritz_values[np.isfinite(spec.ritz_values)]
    spread = theta.max() - theta.min()
    assert spec.sigma == pytest.approx(np.sqrt(1e-5 * spread) if spread >= 1 else np.sqrt(1e-5) * spread, rel=1e-12)
    for sigma in (None, 1e-3, 3e-4):
        s = hessian_spectrum(model, data, n_probes=4, n_steps=12, seed=1, sigma=sigma)
        assert np.trapezoid(s.density, s.grid) == pytest.approx(1.0, abs=1e-6), sigma
        assert np.diff(s.grid).max() <= s.sigma / 2 * (1 + 1e-9)
    with pytest.raises(LandscapeError, match=rf"sigma=1e-08 is too narrow .* more than {MAX_GRID}; pass a larger"):
        hessian_spectrum(model, data, n_probes=4, n_steps=12, seed=1, sigma=1e-8)
    coarse = hessian_spectrum(model, data, n_probes=4, n_steps=12, seed=1, sigma=1e-3, grid=np.linspace(-1, 1, 5))
    assert len(coarse.grid) == 5  # an array of eigenvalues is evaluated as given


def test_the_default_width_puts_no_mass_where_a_convex_models_hessian_has_no_eigenvalue():
    """Trial s56: PyHessian's σ = √1e-5 for any spread under 1 was 25 % of a trained MLP's spread, and softmax
    regression (a Hessian with no negative eigenvalue) got 22 % of its density below −1e-3. Naive: the dense
    Hessian's eigenvalues (all ≥ −1e-12); the density's mass below −1 % of their spread is now under 0.1 %."""
    torch.manual_seed(0)
    model = nn.Linear(5, 3).double()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(60, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (60,), generator=g)
    with torch.no_grad():  # a few steps of training: a small spread, as a trained model's
        model.weight.mul_(3)
    eig = np.linalg.eigvalsh(_naive_dense_hessian(model.float(), x.float(), y))
    model.double()
    assert eig.min() > -1e-6 and eig.max() - eig.min() < 1, eig
    spec = hessian_spectrum(model, (x, y), n_probes=4, n_steps=18, seed=0)
    assert spec.sigma == pytest.approx(np.sqrt(1e-5) * (np.nanmax(spec.ritz_values) - np.nanmin(spec.ritz_values)))
    below = spec.grid < -0.01 * (eig.max() - eig.min())
    assert np.trapezoid(spec.density * below, spec.grid) < 1e-3
    assert np.trapezoid(spec.density, spec.grid) == pytest.approx(1.0, abs=1e-6)


def test_the_width_floor_is_the_precision_of_the_products_not_of_a_frozen_parameter():
    """Review s57: the floor, 2·eps·max|θ|, took the dtype of the model's first floating parameter, a frozen
    bfloat16 table registered before float32 weights, and drew c·I 65 000 times wider than float32 resolves. Naive:
    H = c·I (its eigenvalue c, exactly), whose float32 products give σ = 2·eps(float32)·c."""
    c = 3.0

    class WithFrozenTable(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.ones(3, dtype=torch.bfloat16), requires_grad=False)
            self.w = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x.expand(1, 4) * self.w * self.table.float().mean()

    def loss(out, y):  # H = c·I at every w
        return 0.5 * c * (out[0] ** 2).sum()
    spec = hessian_spectrum(WithFrozenTable(), (torch.ones(1, 1), torch.zeros(1)), loss, n_probes=1, n_steps=3, seed=0)
    assert np.nanmax(spec.ritz_values) == pytest.approx(c, rel=1e-6)
    assert spec.sigma == pytest.approx(2 * torch.finfo(torch.float32).eps * c, rel=1e-5)

    class Mixed(nn.Module):  # re-trial s57: a trainable float64 scalar registered first, float32 weights after
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones((), dtype=torch.float64))
            self.w = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x.expand(1, 4) * self.w * self.scale.float()

    from landscape_nb.hessian import HessianOperator

    op = HessianOperator(Mixed(), (torch.ones(1, 1), torch.zeros(1)), loss_fn=loss)
    assert op.dtype == torch.float32  # the least precise: its products' precision (it took the first's, float64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("c, spread", [(1e-4, 0.0), (1.0, 1500.0), (1.0, 1e5), (1e6, 50.0)])
def test_the_default_width_fits_tiny_and_wide_spectra(c, spread, dtype):
    """Re-trial s56: with every default, a spread of 1000 or more was refused (PyHessian's σ needs 2√(spread/1e-5)
    points, past MAX_GRID), and c·I with c = 1e-4 got σ = 1e-3, half its mass below 0. A diagonal quadratic
    H = diag(c + spread·t), t in [0, 1] (naive: its eigenvalues, exactly): the density integrates to 1 and puts
    no mass beyond the eigenvalues by more than 1 % of their spread (of c for c·I); a float32 cluster 50 wide at
    1e6 was drawn 1000 wide (re-trial s56)."""
    n = 6
    eig = c + spread * np.linspace(0, 1, n)

    class Quadratic(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(n, dtype=dtype))

        def forward(self, x):
            return x.expand(1, n) * self.w

    h = torch.tensor(eig, dtype=dtype)
    model = Quadratic()
    def loss(out, y):  # H = diag(eig) at every w
        return 0.5 * (h * out[0] ** 2).sum()
    data = (torch.ones(1, 1, dtype=dtype), torch.zeros(1))
    spec = hessian_spectrum(model, data, loss, n_probes=2, n_steps=n, seed=0)
    assert np.nanmax(spec.ritz_values) == pytest.approx(eig.max(), rel=1e-9 if dtype == torch.float64 else 1e-6)
    assert np.trapezoid(spec.density, spec.grid) == pytest.approx(1.0, abs=1e-6)
    margin = 0.01 * (spread or c)
    beyond = (spec.grid < eig.min() - margin) | (spec.grid > eig.max() + margin)
    assert np.trapezoid(spec.density * beyond, spec.grid) < 1e-3
