"""Dinh et al. rescaling: same function, different raw sharpness, equal filter-normalized surface."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

import landscape_nb as lnb
from landscape_nb import LandscapeError
from landscape_nb.reparam import rescalable_layers

from conftest import state_copy, assert_bit_identical

pytestmark = pytest.mark.usefixtures("one_thread")


class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))

    def forward(self, x):
        return self.layers(x)


class ConvChain(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.act(self.conv(x)))))


class Skip(nn.Module):
    """fc1's output also bypasses fc2: rescaling fc1 then changes the function."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(6, 6)

    def forward(self, x):
        h = self.act(self.fc1(x))
        return self.fc2(h) + h


@pytest.fixture
def chain():
    torch.manual_seed(0)
    return Chain().eval()


def test_rescaling_keeps_outputs_and_leaves_the_original_alone(chain, mlp_data):
    saved = state_copy(chain)
    new = lnb.reparametrize(chain, {"layers.0": 8.0, "layers.2": 0.25}, check=mlp_data[0])
    assert_bit_identical(chain, saved)
    with torch.no_grad():
        ref, out = chain(mlp_data[0]), new(mlp_data[0])
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-5
    assert torch.allclose(new.layers[0].weight, 8 * chain.layers[0].weight)
    assert torch.allclose(new.layers[0].bias, 8 * chain.layers[0].bias)
    assert torch.allclose(new.layers[2].weight, chain.layers[2].weight * 0.25 / 8)
    assert torch.allclose(new.layers[4].weight, chain.layers[4].weight / 0.25)
    assert torch.equal(new.layers[4].bias, chain.layers[4].bias)
    seq = lnb.reparametrize(chain, [8.0, 0.25])
    for p, q in zip(seq.parameters(), new.parameters()):
        assert torch.equal(p, q)


def test_a_prelu_between_layers_is_rescalable(mlp_data):
    """PReLU (a learnt negative slope) is positively homogeneous, PReLU(a·z) = a·PReLU(z) for a > 0, as LeakyReLU
    is; it was refused as "cannot be rescaled" (trial s47). Rescaled, the outputs stay, the raw weights move."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.PReLU(16), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        net[1].weight.uniform_(0.1, 0.4)
    assert rescalable_layers(net, check=mlp_data[0]) == {"0": "2"}
    new = lnb.reparametrize(net, {"0": 5.0}, check=mlp_data[0])
    with torch.no_grad():
        ref, out = net(mlp_data[0]), new(mlp_data[0])
        assert float((out - ref).abs().max() / ref.abs().max()) < 1e-5
        assert torch.allclose(new[0].weight, 5 * net[0].weight) and torch.allclose(new[2].weight, net[2].weight / 5)
        assert torch.equal(new[1].weight, net[1].weight)


def test_conv_then_pool_then_linear_is_rescalable():
    torch.manual_seed(0)
    m = ConvChain().eval()
    assert rescalable_layers(m) == {"conv": "fc"}
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    new = lnb.reparametrize(m, {"conv": 5.0}, check=x)
    assert torch.allclose(new(x), m(x), rtol=1e-5, atol=1e-6)


def _line(model, data, norm, seed=0):
    d = lnb.random_directions(model, n=1, norm=norm, seed=seed)
    return lnb.compute_surface(model, data, d, x=(-0.1, 0.1, 21))


def test_raw_sharpness_changes_but_filter_normalized_surfaces_coincide(chain, mlp_data):
    scaled = lnb.reparametrize(chain, {"layers.0": 10.0}, check=mlp_data[0])
    raw_a, raw_b = _line(chain, mlp_data, "none"), _line(scaled, mlp_data, "none")
    assert raw_a.loss[10] == pytest.approx(raw_b.loss[10], rel=1e-5)  # the same minimum...
    sharp_a, sharp_b = raw_a.sharpness()["x"], raw_b.sharpness()["x"]
    for surf, sharp in ((raw_a, sharp_a), (raw_b, sharp_b)):  # L''(0): the naive second difference at the centre
        h = surf.x[11] - surf.x[10]
        assert sharp.curvature == pytest.approx((surf.loss[11] - 2 * surf.loss[10] + surf.loss[9]) / h ** 2, rel=1e-6)
    assert sharp_b.curvature > 5 * sharp_a.curvature  # ...looks far sharper along raw directions (7.9×)
    assert sharp_b.increase > 3 * sharp_a.increase
    filt_a = lnb.compute_surface(chain, mlp_data, lnb.random_directions(chain, n=2, seed=1),
                                 x=(-1, 1, 7), y=(-1, 1, 5))
    filt_b = lnb.compute_surface(scaled, mlp_data, lnb.random_directions(scaled, n=2, seed=1),
                                 x=(-1, 1, 7), y=(-1, 1, 5))
    np.testing.assert_allclose(filt_b.loss, filt_a.loss, rtol=1e-4)
    assert np.ptp(filt_a.loss) > 0.05  # a surface with structure, not a flat constant


def test_layers_that_cannot_be_rescaled_are_refused(chain, mlp_data):
    tanh = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    assert rescalable_layers(tanh) == {}
    # "expected one of []" (trial s59): the model has none
    with pytest.raises(LandscapeError, match=r"layer '0' cannot be rescaled; Sequential has no layer that can "
                                             r"\(Linear/Conv "):
        lnb.reparametrize(tanh, {"0": 2.0})
    with pytest.raises(LandscapeError, match="cannot be rescaled"):
        lnb.reparametrize(chain, {"layers.4": 2.0})  # the output layer has no next layer
    for bad in (0.0, -2.0, float("inf"), True):
        with pytest.raises(LandscapeError, match="positive finite"):
            lnb.reparametrize(chain, {"layers.0": bad})
    with pytest.raises(LandscapeError, match="3 scales for 2 rescalable layers"):
        lnb.reparametrize(chain, [1.0, 2.0, 3.0])
    with pytest.raises(LandscapeError, match="layer 'fc1' cannot be rescaled; .* a skip connection"):
        lnb.reparametrize(Skip(), {"fc1": 3.0}, check=mlp_data[0])


class FunctionalTanh(nn.Module):
    """tanh written in forward(): rescalable_layers sees fc1 -> fc2, but tanh(a·z) != a·tanh(z)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def test_a_nonlinearity_written_in_forward_is_refused_with_or_without_check():
    torch.manual_seed(0)
    m = FunctionalTanh().eval()
    x = torch.randn(64, 8)
    # the module order alone cannot see the tanh: each candidate is tried, on random inputs of the first Linear's
    # size or on check (trial s38: a residual MLP listed every pair across a skip)
    state = copy.deepcopy(m.state_dict())
    assert rescalable_layers(m) == rescalable_layers(m, check=x) == {}
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in state.items())  # restored bit for bit
    assert rescalable_layers(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))) == {"0": "2"}
    tiny = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():  # subnormal weights, which halving and doubling back rounds (re-trial s38)
        tiny[2].weight.copy_(torch.tensor(5e-324, dtype=torch.float64) * torch.arange(1, 9).view(2, 4))
    saved = copy.deepcopy(tiny.state_dict())
    rescalable_layers(tiny)
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in saved.items())
    assert rescalable_layers(Skip(), check=x[:, :6]) == {}
    with torch.no_grad():  # the copy would compute another function: up to ~80 % of max|f| off
        naive = copy.deepcopy(m)
        naive.fc1.weight.mul_(10.0), naive.fc1.bias.mul_(10.0), naive.fc2.weight.div_(10.0)
        assert (naive(x) - m(x)).abs().max() > 0.1 * m(x).abs().max()
    for check in (None, x):  # no check given: random inputs of the first Linear's size are compared
        with pytest.raises(LandscapeError, match=r"layer 'fc1' cannot be rescaled; .* nonlinearities \(also one "
                                                 r"written in forward\(\)"):
            lnb.reparametrize(m, {"fc1": 10.0}, check=check)


def test_without_check_a_model_whose_input_size_is_unknown_is_refused_and_a_relu_chain_is_checked():
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    with pytest.raises(LandscapeError, match="pass check=x"):
        lnb.reparametrize(conv, {"0": 2.0})
    x = torch.randn(5, 1, 8, 8)
    new = lnb.reparametrize(conv, {"0": 2.0}, check=x)
    with torch.no_grad():
        torch.testing.assert_close(new(x), conv(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(LandscapeError, match=r"could not run the model on the check inputs \(a tensor of shape "
                                             r"\(5, 3\)\)"):
        lnb.reparametrize(conv, {"0": 2.0}, check=torch.randn(5, 3))


class TwoInputs(nn.Module):
    """model(x, z) with dict outputs: a ReLU chain on x (a, b rescalable), c's output added back after d (a skip:
    not rescalable), z entering after the chain."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = nn.Linear(5, 8), nn.Linear(8, 6), nn.Linear(6, 6), nn.Linear(6, 6)
        self.z = nn.Linear(3, 6)
        self.act = nn.ReLU()

    def forward(self, x, z):
        h = self.act(self.c(self.act(self.b(self.act(self.a(x))))))
        return {"y": self.d(h) + h + self.z(z), "aux": h.sum(1)}


def test_a_model_of_two_inputs_is_checked_on_a_tuple_or_a_dict_of_inputs_as_compute_surface_calls_it():
    """check=(x, z) runs model(x, z) and check={"x": x, "z": z} model(**check), as compute_surface does (trial s54:
    a tuple was passed as one argument, "could not run the model on the check inputs of shape ()", and the fix
    offered was impossible); every floating-point output is compared. Without check, the 16 random inputs the
    message names are said to be made for it, with the tuple form offered."""
    torch.manual_seed(0)
    model = TwoInputs().eval()
    x, z = torch.randn(12, 5), torch.randn(12, 3)
    for check in ((x, z), {"x": x, "z": z}):
        assert rescalable_layers(model, check=check) == {"a": "b", "b": "c"}  # c's skip found by running it
        new = lnb.reparametrize(model, {"a": 4.0, "b": 0.5}, check=check)
        with torch.no_grad():
            ref, out = model(x, z), new(x, z)
        for key in ref:
            torch.testing.assert_close(out[key], ref[key], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(new.a.weight, 4 * model.a.weight)
        torch.testing.assert_close(new.b.weight, model.b.weight * 0.5 / 4)
        torch.testing.assert_close(new.c.weight, model.c.weight / 0.5)
        with pytest.raises(LandscapeError, match="'c' cannot be rescaled"):
            lnb.reparametrize(model, {"c": 2.0}, check=check)
    with pytest.raises(LandscapeError, match=r"on 16 standard-normal inputs \(a tensor of shape \(16, 5\)\), made "
                                             r"for it as no check= was given \(TypeError: .*pass check=x.*a tuple "
                                             r"for model\(\*x\)"):
        lnb.reparametrize(model, {"a": 2.0})


def test_a_float64_networks_filter_normalized_surface_is_rescaling_invariant_to_float64_rounding(chain, mlp_data):
    """Float64 directions for a float64 model: the Li et al. invariance holds to ~1e-15, not to the 7e-7 that
    float32 filter norms gave; the directions' filter norms equal the weights' (naive, per dim-0 slice)."""
    a = copy.deepcopy(chain).double()
    b = lnb.reparametrize(a, {"layers.0": 10.0, "layers.2": 0.1})
    data = (mlp_data[0].double(), mlp_data[1])
    d = lnb.random_directions(a, n=2, seed=1)
    assert d.vectors.dtype == torch.float64
    for (name, w), t in zip(a.named_parameters(), d.layout.split(d.vectors[0])):
        if w.ndim > 1:
            np.testing.assert_allclose(t.reshape(w.shape).norm(dim=1).numpy(), w.detach().norm(dim=1).numpy(),
                                       rtol=1e-14, err_msg=name)
    surfs = [lnb.compute_surface(m, data, lnb.random_directions(m, n=2, seed=1), x=(-1, 1, 5), y=(-1, 1, 5),
                                 progress=False) for m in (a, b)]
    np.testing.assert_allclose(surfs[1].loss, surfs[0].loss, rtol=1e-12)
    assert np.ptp(surfs[0].loss) > 0.05
    d32 = lnb.random_directions(chain, n=2, seed=1)  # the same seed: the same Gaussian draws, float32 there
    np.testing.assert_allclose(d.vectors.numpy(), d32.vectors.numpy(), rtol=1e-5, atol=1e-7)
