"""Interpolation between models, loss barriers, planes through three models, Bézier curves."""
import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import landscape_nb as lnb
from landscape_nb import LandscapeError, Surface

from conftest import TinyCNN, assert_bit_identical, single_thread, state_copy

pytestmark = pytest.mark.usefixtures("one_thread")


def _blobs(n=240, seed=0):
    """Four Gaussian blobs in 2D, classes in XOR layout: nonlinear, learnable by a small MLP."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    k = torch.randint(0, 4, (n,), generator=g)
    x = centres[k] + 0.35 * torch.randn(n, 2, generator=g)
    return x, (k >= 2).long()


def _trained_mlp(seed, data, steps=300, batchnorm=False):
    """A small MLP on ``data``, trained with Adam; with ``batchnorm``, Linear → BatchNorm1d → ReLU → Linear."""
    torch.manual_seed(seed)
    m = (nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2)) if batchnorm else
         nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2)))
    opt = torch.optim.Adam(m.parameters(), lr=0.03)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(m(data[0]), data[1]).backward()
        opt.step()
    return m.eval()


@pytest.fixture(scope="module")
def pair():
    data = _blobs()
    with single_thread():
        return _trained_mlp(1, data), _trained_mlp(2, data), data


def _loss(model, data):
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model.eval()(data[0]), data[1]))


def _mix(a, b, t, buffers=True):
    m = copy.deepcopy(a)
    sa, sb = a.state_dict(), b.state_dict()
    names = {n for n, _ in a.named_parameters()}
    m.load_state_dict({k: (1 - t) * v + t * sb[k] if (k in names or (buffers and v.is_floating_point())) else v
                       for k, v in sa.items()})
    return m


def test_barrier_between_two_copies_of_one_model_is_zero(pair):
    a, _, data = pair
    with pytest.warns(UserWarning, match="the line interpolation a → b has no length: a and b hold the same weights"):
        surf = lnb.interpolation_surface(a, copy.deepcopy(a), data, x=(0, 1, 11))
    np.testing.assert_allclose(surf.loss, _loss(a, data), rtol=1e-6)
    # float32 rounding only (single points and stacked passes sum in different orders: 3.3e-10 seen on a
    # loss of 8.8e-4): no more than two points within the rtol above can make
    assert lnb.loss_barrier(surf) == pytest.approx(0.0, abs=2e-6 * _loss(a, data))


def test_barrier_matches_a_naive_loop_over_t(pair):
    a, b, data = pair
    saved = state_copy(a)
    surf = lnb.interpolation_surface(a, b, data, x=(-0.25, 1.25, 13))
    assert_bit_identical(a, saved)
    ts = np.linspace(-0.25, 1.25, 13)
    naive = np.array([_loss(_mix(a, b, t), data) for t in ts])
    np.testing.assert_allclose(surf.loss, naive, rtol=1e-5)
    inside = (ts >= 0) & (ts <= 1)
    l0, l1 = _loss(a, data), _loss(b, data)
    expected = max(0.0, float(np.max(naive[inside] - ((1 - ts[inside]) * l0 + ts[inside] * l1))))
    barrier = lnb.loss_barrier(surf)
    assert barrier == pytest.approx(expected, rel=1e-4)
    assert barrier > 0.05  # two independently trained ReLU nets: a real bump between them
    assert surf.y is None and surf.x_label == "t (a → b)" and surf.provenance["label"] == "straight line"
    assert surf.provenance["scheme"] == "interpolate" and len(surf.provenance["key"]) > 8  # compute_surface's kept
    assert surf.spec["grid"]["x"] == [-0.25, 1.25, 13]
    named = lnb.interpolation_surface(a, b, data, x=(0, 1, 3), label="a to b")
    assert named.provenance["label"] == "a to b" and named.x_label == "t (a → b)"


def test_barrier_needs_both_ends_on_the_grid(pair):
    a, b, data = pair
    surf = lnb.interpolation_surface(a, b, data, x=(0.1, 1, 4))
    with pytest.raises(LandscapeError, match="does not contain both t = 0 and t = 1"):
        lnb.loss_barrier(surf)
    with pytest.raises(LandscapeError, match="expected a 1D path profile"):
        lnb.loss_barrier(Surface(np.arange(3.0), np.arange(2.0), np.zeros((2, 3))))


def test_bn_buffers_decide_whether_the_path_ends_at_the_second_model():
    torch.manual_seed(0)
    a, b = TinyCNN().eval(), TinyCNN().eval()
    with torch.no_grad():
        a.bn.running_mean.uniform_(-1, 1)
        b.bn.running_var.uniform_(0.2, 3)
    g = torch.Generator().manual_seed(2)
    data = torch.randn(30, 1, 8, 8, generator=g), torch.randint(0, 3, (30,), generator=g)
    with_buf = lnb.interpolation_surface(a, b, data, x=(0, 1, 3), include_buffers=True)
    without = lnb.interpolation_surface(a, b, data, x=(0, 1, 3), include_buffers=False)
    assert with_buf.loss[-1] == pytest.approx(_loss(b, data), rel=1e-5)  # weights and statistics of b
    assert without.loss[-1] == pytest.approx(_loss(_mix(a, b, 1.0, buffers=False), data), rel=1e-5)
    assert abs(without.loss[-1] - _loss(b, data)) > 1e-3  # b's weights with a's statistics is not b
    assert without.provenance["label"] == "straight line (a's BN statistics throughout: t = 1 is b's weights, not b)"
    assert with_buf.loss[1] == pytest.approx(_loss(_mix(a, b, 0.5), data), rel=1e-5)
    assert "BN buffers interpolated" in with_buf.provenance["label"]
    # re-estimated at every point, the statistics are neither a's, b's nor a mix: the label said "interpolated"
    # (and plot.paths then showed two "straight line (BN buffers interpolated)" with other barriers; trial s33)
    fresh = lnb.interpolation_surface(a, b, data, x=(0, 1, 3), mode="bn-recompute")
    assert fresh.provenance["label"] == "straight line (BN statistics re-estimated)"
    # the directions alone default the same way (they kept a's statistics: a fresh user's BN CNN ended at
    # 0.337 for b's 0.061, a plausible line to the wrong model)
    line = lnb.compute_surface(a, data, lnb.interpolation_direction(a, b), x=(0, 1, 3))
    c = TinyCNN().eval()
    plane = lnb.compute_surface(a, data, lnb.plane_directions(a, b, c), x=(0, 1, 2), y=(0, 1, 2))
    assert line.loss[-1] == pytest.approx(_loss(b, data), rel=1e-5)
    assert plane.loss[0, -1] == pytest.approx(_loss(b, data), rel=1e-5)
    assert plane.loss[-1, 0] == pytest.approx(_loss(c, data), rel=1e-5)


class _Rotary(nn.Module):
    """A non-persistent cos cache grown to the longest input seen, as rotary embeddings keep one."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("cos_cached", torch.zeros(0, 4), persistent=False)

    def forward(self, x):
        if self.cos_cached.shape[0] < x.shape[0]:
            self.cos_cached = torch.cos(torch.arange(x.shape[0])[:, None] * torch.ones(4))
        return self.lin(x * self.cos_cached[: x.shape[0]])


def test_paths_move_state_dict_buffers_only_not_a_non_persistent_cache():
    """With buffers on by default, two models whose caches had grown to other lengths were refused as
    another architecture; a cache is not model state (not in the state_dict) and moves with no path."""
    torch.manual_seed(0)
    a, b = _Rotary(), _Rotary()
    a(torch.randn(16, 4))
    b(torch.randn(8, 4))
    d = lnb.interpolation_direction(a, b)
    assert [e.name for e in d.layout.entries] == ["lin.weight", "lin.bias"]
    bn_a, bn_b = TinyCNN(), TinyCNN()
    assert {e.name for e in lnb.interpolation_direction(bn_a, bn_b).layout.entries} >= {"bn.running_mean",
                                                                                        "bn.running_var"}
    with pytest.raises(LandscapeError, match=r"the directions move \['cos_cached'\], non-persistent buffers"):
        lnb.as_directions(a, [{"lin.weight": torch.ones(4, 4), "cos_cached": torch.ones(16, 4)}])


class _Masked(nn.Module):
    """A pruning mask kept as a buffer: boolean, or floating-point and non-persistent."""

    def __init__(self, dtype=torch.bool, persistent=True):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.register_buffer("mask", torch.ones(2, 2, dtype=dtype), persistent=persistent)

    def forward(self, x):
        return nn.functional.linear(x, self.lin.weight * self.mask.to(x.dtype), self.lin.bias)


@pytest.mark.parametrize("dtype, persistent", [(torch.bool, True), (torch.float32, False)])
def test_a_buffer_the_path_cannot_move_that_differs_between_the_models_is_named_in_a_warning(dtype, persistent):
    """Trial s35: a's pruning mask stayed on the whole line, so t = 1 gave 1.1226 for b's loss of 1.0923 and
    nothing said so. A BatchNorm's num_batches_tracked may differ: it does nothing in eval mode."""
    torch.manual_seed(0)
    a, b = _Masked(dtype, persistent), _Masked(dtype, persistent)
    b.mask[0, 1] = 0
    data = _blobs(40)
    with pytest.warns(UserWarning, match=r"buffers \['mask'\] differ between the models.* keep model a's values at "
                                         r"every point, so the point of model b is its weights with model a's "
                                         r"buffers.*torch.nn.utils.prune.remove"):
        line = lnb.interpolation_surface(a, b, data, x=(0, 1, 2))
    with torch.no_grad():  # naive: b's weights, a's mask (all ones), as the warning says
        naive = float(nn.functional.cross_entropy(data[0] @ b.lin.weight.T + b.lin.bias, data[1]))
    assert line.loss[-1] == pytest.approx(naive, rel=1e-6) and abs(line.loss[-1] - _loss(b, data)) > 1e-4
    with pytest.warns(UserWarning, match=r"buffers \['mask'\] differ"):
        lnb.plane_directions(a, _Masked(dtype, persistent), b)
    c, d = TinyCNN(), TinyCNN()
    d.bn.num_batches_tracked += 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lnb.interpolation_direction(c, d)
        lnb.interpolation_direction(c, d, include_buffers=False)


def test_models_of_different_architectures_cannot_be_interpolated(pair):
    a, _, data = pair
    other = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))
    # 2·16 + 16 + 16·16 + 16 + 16·2 + 2 = 354 values in a; 2·32 + 32 + 32·16 + 16 + 16·2 + 2 = 658 in other
    wider = (r"^model b has another architecture than model a: 354 values in model a, 658 in model b \(first "
             r"differing tensor '0.weight': shape \(16, 2\) in model a, \(32, 2\) in model b\); expected two models "
             r"of one architecture \(the same class and parameter shapes\)")
    with pytest.raises(LandscapeError, match=wider):
        lnb.interpolation_surface(a, other, data)
    with pytest.raises(LandscapeError, match=wider):
        lnb.bezier_curve(a, other, data, n_steps=1)
    with pytest.raises(LandscapeError, match="^model c has another architecture than model a"):
        lnb.plane_directions(a, copy.deepcopy(a), TinyCNN())
    no_bias = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2, bias=False))
    with pytest.raises(LandscapeError, match=r"352 in model b \(first differing tensor '4.bias': in model a, not in "
                                             r"model b\)"):
        lnb.interpolation_surface(a, no_bias, data)


def test_three_models_that_give_no_plane_are_refused_naming_which():
    """b holding a's weights, or b and c on one line through a (the same model), gave the generic "direction 0
    of 2 is all zeros ... e.g. from lnb.random_directions" once evaluated; now the plane's maker says which."""
    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    far = copy.deepcopy(a)
    with torch.no_grad():
        for pa, pb, pf in zip(a.parameters(), b.parameters(), far.parameters()):
            pf.copy_(pa + 3 * (pb - pa))  # on the line from a through b
    with pytest.raises(LandscapeError, match=r"^model b holds the same weights as model a \(the centre\), so the "
                                             r"plane's axis a → b has no length"):
        lnb.plane_directions(a, copy.deepcopy(a), b)
    with pytest.raises(LandscapeError, match=r"^model c holds the same weights as model a"):
        lnb.plane_directions(a, b, copy.deepcopy(a))
    with pytest.raises(LandscapeError, match=r"^models b and c lie on one line through a \(they are the same "
                                             r"model\), so a → b and a → c span a line, not a plane"):
        lnb.plane_directions(a, b, copy.deepcopy(b))
    with pytest.raises(LandscapeError, match=r"^models b and c lie on one line through a \(\|cosine\| 1\.0000000\)"):
        lnb.plane_directions(a, b, far)
    with pytest.raises(LandscapeError, match=r"^models run 2 and far lie on one line through final \(\|cosine\| "
                                             r"1\.0000000\), so final → run 2 and final → far span a line, not a "
                                             r"plane; expected three models not on one line: another checkpoint for "
                                             r"far"):
        lnb.plane_directions(a, b, far, names=("final", "run 2", "far"))
    d = lnb.plane_directions(a, b, nn.Linear(3, 2), names=("final", "run 2", "run 3"))
    assert (d.provenance["x_label"], d.provenance["y_label"]) == ("final → run 2", "final → run 3")
    line = lnb.interpolation_direction(a, b, names=(n for n in ("sgd", "adam")))  # any iterable of two
    assert line.provenance["x_label"] == "interpolation sgd → adam"
    for bad in ("abc", ("a", "b"), ("a", "", "c"), ("a", "b", 3), 3):
        with pytest.raises(LandscapeError, match=r"^names=.*; expected 3 non-empty strings, one per model"):
            lnb.plane_directions(a, b, nn.Linear(3, 2), names=bad)


def test_models_with_the_same_tensors_but_another_network_cannot_be_interpolated(pair):
    """Same tensors, other activation (or slope): t = 1 would be b's weights in a's network, not b (shown first)."""
    a, b, data = pair
    tanh = copy.deepcopy(b)
    tanh[1] = nn.Tanh()
    hybrid = copy.deepcopy(a)
    hybrid.load_state_dict(tanh.state_dict())
    assert abs(_loss(hybrid, data) - _loss(tanh, data)) > 1e-3
    with pytest.raises(LandscapeError, match=r"^model a and model b have the same tensors but not the same network: "
                                             r"submodule '1' is a ReLU in model a, a Tanh in model b; a path between "
                                             r"them would end at model b's weights inside model a's network"):
        lnb.interpolation_surface(a, tanh, data)
    with pytest.raises(LandscapeError, match="submodule '1' is a ReLU in model a, a Tanh in model b"):
        lnb.bezier_curve(a, tanh, data, n_steps=1)
    leaky = copy.deepcopy(b)
    leaky[3] = nn.LeakyReLU(0.2)
    with pytest.raises(LandscapeError, match=r"model c .*submodule '3' is a ReLU in model a, a LeakyReLU in model c"):
        lnb.plane_directions(a, b, leaky)
    slope_a, slope_b = copy.deepcopy(leaky), copy.deepcopy(leaky)
    slope_b[3] = nn.LeakyReLU(0.01)
    with pytest.raises(LandscapeError, match=r"submodule '3' \(LeakyReLU\) is \(negative_slope=0.2\) in model a, "
                                             r"\(negative_slope=0.01\) in model b"):
        lnb.interpolation_direction(slope_a, slope_b)
    # what eval mode does not use may differ: BatchNorm's momentum, a plain flag, Dropout's rate
    bn_a = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    bn_b = copy.deepcopy(bn_a)
    bn_b[1].momentum, bn_b.gradient_checkpointing = 0.01, True
    assert lnb.interpolation_direction(bn_a, bn_b).n == 1
    bn_b[1].eps = 1e-3
    with pytest.raises(LandscapeError, match=r"submodule '1' \(BatchNorm1d\) is \(4, eps=1e-05, momentum=0.1"):
        lnb.interpolation_direction(bn_a, bn_b)
    drop_a = nn.Sequential(*a[:2], nn.Dropout(0.1), *a[2:])
    drop_b = nn.Sequential(*b[:2], nn.Dropout(0.5), *b[2:])
    line = lnb.interpolation_surface(drop_a, drop_b, data, x=(0, 1, 3))
    assert line.loss[-1] == pytest.approx(_loss(b, data), rel=1e-5)


def test_plane_through_three_models_passes_through_each(pair):
    a, b, data = pair
    c = _mix(a, b, 0.5)
    with torch.no_grad():
        c[0].weight.mul_(1.3)
    d = lnb.plane_directions(a, b, c)
    surf = lnb.compute_surface(a, data, d, x=(0, 1, 2), y=(0, 1, 2))
    assert surf.loss[0, 0] == pytest.approx(_loss(a, data), rel=1e-5)
    assert surf.loss[0, 1] == pytest.approx(_loss(b, data), rel=1e-5)
    assert surf.loss[1, 0] == pytest.approx(_loss(c, data), rel=1e-5)


def test_bezier_curve_lowers_the_path_between_two_trained_nets(pair):
    a, b, data = pair
    saved = state_copy(a)
    curve = lnb.bezier_curve(a, b, data, n_steps=250, lr=0.02, batch_size=64, seed=0, n_points=11)
    assert_bit_identical(a, saved)
    assert torch.equal(curve.point(0.0), curve.start) and torch.allclose(curve.point(1.0), curve.end)
    for t in (float("nan"), float("inf"), "0.5", True):  # NaN weights, silently; a string or bool was taken as 0.5, 1
        with pytest.raises(LandscapeError, match=rf"t={t!r}; expected a finite real number"):
            curve.model_at(a, t)
    for t in (1.5, -0.25):  # the polynomial beyond the ends, with no word (s38)
        with pytest.raises(LandscapeError, match=rf"^t={t!r}; expected t in \[0, 1\].*interpolation_surface"):
            curve.point(t)
    assert torch.equal(curve.point(3 * 0.1 / 0.3), curve.point(1.0))  # 1.0000000000000002: rounding, not beyond
    for same in (torch.tensor(0.25), np.array(0.25), np.float32(0.25)):  # a 0-d array was refused (re-trial s38)
        assert torch.equal(curve.point(same), curve.point(0.25))
    ts = curve.profile.x
    for k in (0, 3, 5, 10):  # the profile is the loss of the model at φ(t), evaluated naively
        assert curve.profile.loss[k] == pytest.approx(_loss(curve.model_at(a, ts[k]), data), rel=1e-5)
    line = np.array([_loss(_mix(a, b, t), data) for t in ts])
    np.testing.assert_allclose(curve.line_profile.loss, line, rtol=1e-5)
    assert curve.line_profile.provenance["label"] == "straight line" and curve.line_profile.x_label == "t (a → b)"
    assert curve.line_profile.provenance["scheme"] == "interpolate" and curve.line_profile.spec["grid"]["x"][2] == 11
    assert curve.profile.loss.max() <= curve.line_profile.loss.max()
    assert curve.barrier < 0.5 * curve.line_barrier
    assert "accuracy" in curve.profile.metrics and len(curve.history) == 250


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_bezier_curve_keeps_frozen_parameters_on_the_straight_line(pair, optimizer):
    """A frozen (requires_grad=False) layer that differs between a and b was trained with the rest (its
    control point moved 0.43 from the midpoint); now it stays at the midpoint, and the settings name it."""
    a, b, data = (copy.deepcopy(m) if isinstance(m, nn.Module) else m for m in pair)
    for m in (a, b):
        m[0].weight.requires_grad_(False)
    curve = lnb.bezier_curve(a, b, data, n_steps=60, lr=0.02, seed=0, n_points=5, optimizer=optimizer)
    for e, s0, c, s2 in zip(curve.layout.entries, *(curve.layout.split(v) for v in (curve.start, curve.control,
                                                                                   curve.end))):
        if e.name == "0.weight":
            assert torch.equal(c, (s0 + s2) / 2) and not torch.equal(s0, s2)
        elif e.name == "2.weight":
            assert (c - (s0 + s2) / 2).abs().max() > 1e-3  # the trainable ones were trained
    assert curve.settings["frozen_on_the_line"] == ["0.weight"]
    ts = curve.profile.x
    for k in (1, 3):  # the profile is still the loss at φ(t), naively
        assert curve.profile.loss[k] == pytest.approx(_loss(curve.model_at(a, ts[k]), data), rel=1e-5)


def test_bezier_with_no_training_is_the_straight_line(pair):
    a, b, data = pair
    curve = lnb.bezier_curve(a, b, data, n_steps=0, n_points=5)
    np.testing.assert_allclose(curve.profile.loss, curve.line_profile.loss, rtol=1e-5)
    with pytest.raises(LandscapeError, match="odd integer"):
        lnb.bezier_curve(a, b, data, n_steps=0, n_points=4)


def _with_flat(model, layout, flat):
    """A copy of ``model`` whose parameters named in ``layout`` are set from the flat vector ``flat``."""
    m = copy.deepcopy(model)
    named = dict(m.named_parameters())
    with torch.no_grad():
        for e, t in zip(layout.entries, layout.split(flat)):
            named[e.name].copy_(t)
    return m


def test_a_polygonal_chain_is_two_segments_through_its_trained_bend_and_lowers_the_path(pair):
    """The polygonal chain of Garipov et al. 2018 (dnn-mode-connectivity's PolyChain): θ_a → θ_c → θ_b, two
    straight segments, θ_c trained as a Bézier curve's control point is. Its points, and the loss profile
    along it, equal a naive interpolation between the end models and the bend; untrained (n_steps=0) it is
    the straight line; trained, its barrier is far below the line's."""
    a, b, data = pair
    saved = state_copy(a)
    chain = lnb.polychain_curve(a, b, data, n_steps=250, lr=0.02, batch_size=64, seed=0, n_points=11)
    assert_bit_identical(a, saved)
    assert type(chain).__name__ == "PolyChain" and chain.kind == "polychain"
    bend = _with_flat(a, chain.layout, chain.control)
    ts = chain.profile.x
    for k, t in enumerate(ts):
        naive = _mix(a, bend, 2 * t) if t <= 0.5 else _mix(bend, b, 2 * t - 1)
        got = chain.model_at(a, t)
        for (name, p), q in zip(got.named_parameters(), naive.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6, msg=f"{name} at t={t}")
        assert chain.profile.loss[k] == pytest.approx(_loss(naive, data), rel=1e-5), t
    np.testing.assert_allclose(chain.line_profile.loss, [_loss(_mix(a, b, t), data) for t in ts], rtol=1e-5)
    assert chain.profile.provenance["label"] == "polygonal chain (trained)"
    assert chain.profile.provenance["scheme"] == "polychain" and len(chain.history) == 250
    assert chain.barrier < 0.5 * chain.line_barrier and lnb.loss_barrier(chain) == chain.barrier
    plane = chain.directions()  # (θ_c − θ_a, θ_b − θ_a): the chain is at (2t, 0), then (2 − 2t, 2t − 1)
    corner = lnb.compute_surface(a, data, plane, x=(0.0, 1.0, 3), y=(0.0, 1.0, 3))
    assert corner.loss[0, 2] == pytest.approx(_loss(bend, data), rel=1e-5)  # (1, 0): the bend
    assert corner.loss[2, 0] == pytest.approx(_loss(b, data), rel=1e-5)  # (0, 1): b
    fig = lnb.plot.paths(chain)
    assert [t.name.split(",")[0] for t in fig.data if t.name != "models"] == ["straight line", "polygonal chain (trained)"]
    bezier = lnb.bezier_curve(a, b, data, n_steps=20, lr=0.02, seed=0, n_points=11)  # both curves on one axis:
    both = lnb.plot.paths([chain, bezier])  # was refused, "got a PolyChain; expected a Surface"
    losses = [t for t in both.data if t.yaxis in (None, "y") and t.name != "models"]  # the loss axis (accuracy on the right)
    assert [t.name.split(":")[0].split(",")[0] for t in losses] == [
        "straight line", "polygonal chain (trained)", "Bézier curve (trained)"]
    np.testing.assert_allclose(losses[2].y, bezier.profile.loss)
    untrained = lnb.polychain_curve(a, b, data, n_steps=0, n_points=5)
    np.testing.assert_allclose(untrained.profile.loss, untrained.line_profile.loss, rtol=1e-5)
    with pytest.raises(LandscapeError, match=r"n_points=4; expected an odd integer"):
        lnb.polychain_curve(a, b, data, n_steps=0, n_points=4)


@pytest.mark.parametrize("make", [lnb.bezier_curve, lnb.polychain_curve])
def test_a_curves_model_of_a_batchnorm_net_has_the_profiles_statistics_given_bn_data_and_warns_without(make):
    """``model_at`` of a BatchNorm net kept the start model's running statistics, so the model it returned
    gave 0.674 where the profile (statistics re-estimated at every t) said 0.585, with no word (trial s33).
    Given ``bn_data`` (what the profile re-estimated them on) its loss is the profile's; without, a warning
    says whose statistics it holds."""
    data = _blobs()
    a, b = _trained_mlp(1, data, 150, batchnorm=True), _trained_mlp(2, data, 150, batchnorm=True)
    curve = make(a, b, data, n_steps=60, lr=0.02, seed=0, n_points=5)
    ts = curve.profile.x
    for k in (1, 2, 3):
        m = curve.model_at(a, ts[k], bn_data=data)
        assert not m.training
        bn = m[1]  # naive: the mean and biased-then-unbiased variance of the layer's inputs over the data
        with torch.no_grad():
            h = m[0](data[0])
        torch.testing.assert_close(bn.running_mean, h.mean(0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var, h.var(0, unbiased=True), rtol=1e-5, atol=1e-6)
        assert _loss(m, data) == pytest.approx(curve.profile.loss[k], rel=1e-5)
    with pytest.warns(UserWarning, match=r"keeps the BatchNorm running statistics of the model passed \(Sequential\)"
                                         r".*pass bn_data="):
        kept = curve.model_at(a, ts[2])
    torch.testing.assert_close(kept[1].running_mean, a[1].running_mean)
    with warnings.catch_warnings():  # at t=0, a given: its statistics are its own weights' (trial s49 was warned)
        warnings.simplefilter("error")
        start = curve.model_at(a, 0.0)
    assert _loss(start, data) == pytest.approx(_loss(a, data), rel=1e-6)
    # its straight line's statistics are re-estimated too, and its label says so: beside interpolation_surface's
    # "(BN buffers interpolated)" line a bare "straight line" with another barrier read as a contradiction (s49)
    assert curve.line_profile.provenance["label"] == "straight line (BN statistics re-estimated)"
    # a test split's profile has the training data's statistics (as Garipov et al.), said in settings (trial s59:
    # undocumented, 1.6 % apart from the test split's own): naive, model_at's on the training data, lost on the test
    test = (data[0][::2] + 0.1, data[1][::2])
    on_test = make(a, b, data, n_steps=60, lr=0.02, seed=0, n_points=5, eval_data=test)
    assert on_test.settings["bn_data"].startswith("data (the training data)") and "bn_data" in curve.settings
    assert _loss(on_test.model_at(a, ts[2], bn_data=data), test) == pytest.approx(on_test.profile.loss[2], rel=1e-5)
    with pytest.raises(LandscapeError, match=r"model_at: the model failed on bn_data .*RuntimeError.*parameters are "
                                             r"torch.float32 on cpu: e.g. x.to\(torch.float32\)"):
        curve.model_at(a, ts[2], bn_data=(data[0].double(), data[1]))  # was torch's bare dtype error

def test_a_curve_of_a_net_with_batchnorm_and_dropout_is_the_same_for_one_seed_and_leaves_the_callers_rng():
    """With BatchNorm the curve trains in train mode, where Dropout draws from torch's global generator, which
    ``seed`` did not cover: two calls with seed=0 gave profiles 3.1e-3 apart (trial s37). Now one seed gives one
    curve, another seed another, and the caller's random state is as it was."""
    data = _blobs()

    def net(seed):
        torch.manual_seed(seed)
        m = nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
        opt = torch.optim.Adam(m.parameters(), lr=0.03)
        for _ in range(60):
            opt.zero_grad()
            nn.functional.cross_entropy(m(data[0]), data[1]).backward()
            opt.step()
        return m.eval()

    a, b = net(1), net(2)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    reseeded = []  # torch.manual_seed reseeds every GPU's generator, of which fork_rng restores only the model's
    with pytest.MonkeyPatch.context() as mp:  # (review s38): a CPU curve reseeds none
        mp.setattr(torch.cuda, "manual_seed_all", lambda s: reseeded.append(s))
        first = lnb.bezier_curve(a, b, data, n_steps=40, lr=0.02, seed=0, n_points=5)
    assert reseeded == []
    assert torch.equal(torch.rand(3), expected_next)  # the caller's generator untouched
    torch.manual_seed(7)  # another global state: the same curve
    again = lnb.bezier_curve(a, b, data, n_steps=40, lr=0.02, seed=0, n_points=5)
    np.testing.assert_array_equal(again.profile.loss, first.profile.loss)
    other = lnb.bezier_curve(a, b, data, n_steps=40, lr=0.02, seed=1, n_points=5)
    assert not np.allclose(other.profile.loss, first.profile.loss, rtol=1e-6)


@pytest.mark.parametrize("make", [lnb.bezier_curve, lnb.polychain_curve])
def test_a_batchnorm_curves_plane_in_eval_mode_warns_that_bn_recompute_gives_the_curves_own_loss(make):
    """Trial s35: the plane of a curve moves parameters only, so in the default eval mode every point kept a's
    BatchNorm statistics and b's point showed ten times b's loss, without a word."""
    data = _blobs(80)
    with single_thread():
        a, b = _trained_mlp(1, data, steps=60, batchnorm=True), _trained_mlp(2, data, steps=60, batchnorm=True)
        curve = make(a, b, data, n_steps=5, n_points=3)
    plane = curve.directions()
    with pytest.warns(UserWarning, match=r"moves parameters only, not BatchNorm's running statistics.*model b's "
                                         r"point is b's weights with them, not b. Pass mode='bn-recompute'"):
        stale = lnb.compute_surface(a, data, plane, x=(0.0, 1.0, 2), y=(0.0, 1.0, 2))
    b_weights_a_stats = copy.deepcopy(b)  # naive: what eval mode evaluates at (0, 1)
    for name in ("running_mean", "running_var"):
        getattr(b_weights_a_stats[1], name).copy_(getattr(a[1], name))
    assert stale.loss[1, 0] == pytest.approx(_loss(b_weights_a_stats, data), rel=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh = lnb.compute_surface(a, data, plane, x=(0.0, 1.0, 2), y=(0.0, 1.0, 2), mode="bn-recompute",
                                    bn_data=data)
    assert fresh.loss[1, 0] == pytest.approx(curve.profile.loss[-1], rel=1e-5)  # the curve's own loss at b
    pa, pb = _trained_mlp(1, data, steps=5), _trained_mlp(2, data, steps=5)
    plain = make(pa, pb, data, n_steps=2, n_points=3)
    with warnings.catch_warnings():  # no BatchNorm: nothing to say
        warnings.simplefilter("error")
        lnb.compute_surface(pa, data, plain.directions(), x=(0.0, 1.0, 2), y=(0.0, 1.0, 2))


def test_a_bezier_curve_that_training_raised_above_the_straight_line_warns(pair):
    """SGD at lr=5 overshoots between two nearby nets without reaching NaN: the curve's profile peaks far above
    the line it started as, and that is said; at lr=0.02 it stays within noise of the line, without a word."""
    a, _, data = pair
    b = copy.deepcopy(a)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    with pytest.warns(UserWarning, match=r"the trained curve peaks at loss .*above the straight line's .* "
                                         r"20 sgd steps at lr=5 made it worse .*Pass a smaller lr") as record:
        curve = lnb.bezier_curve(a, b, data, n_steps=20, lr=5.0, optimizer="sgd", n_points=5)
    assert len(record) == 1 and curve.profile.loss.max() > 100 * curve.line_profile.loss.max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calm = lnb.bezier_curve(a, b, data, n_steps=20, lr=0.02, optimizer="sgd", n_points=5)
    assert calm.profile.loss.max() < 1.25 * calm.line_profile.loss.max()


def _zoo():
    zoo = pytest.importorskip("landscape_nb.zoo")
    if not hasattr(zoo, "load"):
        pytest.skip("the zoo has not landed in this branch yet")
    return zoo


def test_bezier_max_loss_is_not_above_the_straight_line_on_the_zoo_pair():
    ex = _zoo().load("mlp-digits")
    a, b = ex.minimizers["small-batch"], ex.minimizers["large-batch"]
    curve = lnb.bezier_curve(a, b, ex.train, loss_fn=ex.loss_fn, seed=0, n_points=11)
    assert curve.profile.loss.max() <= curve.line_profile.loss.max()
    assert curve.barrier < curve.line_barrier
    assert curve.profile.loss[0] == pytest.approx(curve.line_profile.loss[0], rel=1e-5)
    assert curve.profile.loss[-1] == pytest.approx(curve.line_profile.loss[-1], rel=1e-5)


def test_a_line_between_the_zoos_minimizers_names_its_ends_as_the_zoo_does():
    """Left open in s57: a straight line between the zoo's small- and large-batch minimizers was drawn "t (a → b)"
    with its ends marked "a" and "b"; a model of the user's own (no zoo name) keeps "a", as do names given."""
    ex = _zoo().load("mlp-digits")
    a, b = ex.minimizers["small-batch"], ex.minimizers["large-batch"]
    line = lnb.interpolation_surface(a, b, ex.test, x=(0, 1, 3))
    assert line.x_label == "t (mlp-digits small-batch → mlp-digits large-batch)"
    marks = next(t for t in lnb.plot.line(line).data if t.name == "models")
    assert list(marks.text) == ["mlp-digits small-batch", "mlp-digits large-batch"]
    assert lnb.plane_directions(ex.model, a, b).provenance["models"] == [
        "mlp-digits", "mlp-digits small-batch", "mlp-digits large-batch"]
    own = copy.deepcopy(a)  # not the zoo's object: no name of its own
    assert lnb.interpolation_direction(own, b).provenance["models"] == ["a", "b"]
    assert lnb.interpolation_direction(a, b, names=("s", "l")).provenance["models"] == ["s", "l"]
    # weights changed in place since zoo.load (trained on): the zoo's name would mislead (re-trial s58), so a run's
    # label says it, and a path's ends are a, b
    with torch.no_grad():
        next(a.parameters()).mul_(1.01)
    assert lnb.interpolation_direction(a, b).provenance["models"] == ["a", "b"]
    d = lnb.random_directions(a, n=1, seed=0)
    assert lnb.compute_surface(a, ex.test, d, x=(-1, 1, 3)).provenance["label"] == (
        "mlp-digits small-batch (weights changed since zoo.load)")
    assert lnb.compute_surface(b, ex.test, lnb.random_directions(b, n=1), x=(-1, 1, 3)).provenance["label"] == (
        "mlp-digits large-batch")


def _float64_pair(seed_a=0, seed_b=1):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, generator=g, dtype=torch.float64)
    data = x, torch.sin(x.sum(1, keepdim=True))
    torch.manual_seed(seed_a)
    a = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    torch.manual_seed(seed_b)
    b = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    return a, b, data


def _mse_at(model, weights, data):
    """The MSE of ``model``'s architecture with ``weights`` ({name: tensor}), in the weights' dtype."""
    m = copy.deepcopy(model)
    m.load_state_dict(weights)
    with torch.no_grad():
        return float(nn.functional.mse_loss(m(data[0]), data[1]))


def test_bezier_curve_of_float64_models_is_trained_and_evaluated_in_float64():
    a, b, data = _float64_pair()
    curve = lnb.bezier_curve(a, b, data, loss_fn=nn.MSELoss(), n_steps=20, lr=0.01, batch_size=16, n_points=5)
    assert curve.start.dtype == curve.control.dtype == curve.end.dtype == torch.float64
    assert np.isfinite(curve.history).all() and len(curve.history) == 20
    assert not torch.equal(curve.control, (curve.start + curve.end) / 2)  # trained away from the midpoint
    sa, sb = a.state_dict(), b.state_dict()
    at = 0
    sc = {}
    for name, p in sa.items():  # the control point, tensor by tensor, in named_parameters() order
        sc[name] = curve.control[at:at + p.numel()].view_as(p)
        at += p.numel()
    for k, t in enumerate(curve.profile.x):  # naive quadratic Bézier, tensor by tensor, in float64
        w = {n: (1 - t) ** 2 * sa[n] + 2 * t * (1 - t) * sc[n] + t ** 2 * sb[n] for n in sa}
        assert curve.profile.loss[k] == pytest.approx(_mse_at(a, w, data), rel=1e-12)
        line = {n: (1 - t) * sa[n] + t * sb[n] for n in sa}
        assert curve.line_profile.loss[k] == pytest.approx(_mse_at(a, line, data), rel=1e-12)
    assert curve.profile.loss[-1] == pytest.approx(_mse_at(a, sb, data), rel=1e-13)


def test_interpolation_between_float64_models_ends_at_b_to_float64_rounding(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 10, generator=g, dtype=torch.float64)
    w_star = 1000 * torch.randn(1, 10, generator=g, dtype=torch.float64)
    data = x, x @ w_star.T  # b fits exactly: its loss is 0, and float32 rounding of θb − θa shows as ~1e-9
    a, b = nn.Linear(10, 1, bias=False).double(), nn.Linear(10, 1, bias=False).double()
    with torch.no_grad():
        a.weight.zero_()
        b.weight.copy_(w_star)
    line = lnb.interpolation_surface(a, b, data, x=(0, 1, 5), loss_fn=nn.MSELoss())
    for t, got in zip(line.x, line.loss):
        assert got == pytest.approx(_mse_at(a, {"weight": (1 - t) * a.weight + t * b.weight}, data), rel=1e-12)
    assert line.loss[-1] < 1e-20
    d = lnb.interpolation_direction(a, b)
    assert d.vectors.dtype == torch.float64 and torch.equal(d.vectors[0], (b.weight - a.weight).detach().reshape(-1))
    c = copy.deepcopy(b)
    with torch.no_grad():
        c.weight[0, 0] += 1000.0
    plane = lnb.plane_directions(a, b, c)
    assert plane.vectors.dtype == lnb.orthogonalize(plane).vectors.dtype == torch.float64
    d.save(tmp_path / "d.npz")
    assert torch.equal(lnb.Directions.load(tmp_path / "d.npz").vectors, d.vectors)  # float64 kept on disk too
    assert lnb.interpolation_direction(a.float(), b.float()).vectors.dtype == torch.float32  # float32 stays so


@pytest.mark.parametrize("make", [lnb.bezier_curve, lnb.polychain_curve])
def test_float32_inputs_to_float64_models_of_a_curve_name_the_dtypes_as_compute_surface_does(make):
    """bezier_curve said only "the model raised RuntimeError: mat1 and mat2 must have the same dtype" of float32
    inputs to float64 models, blaming the model (trial s47); interpolation_surface named the dtypes and the fix."""
    a, b, (x, y) = _float64_pair()
    with pytest.raises(LandscapeError, match=r"on the first 8 samples; the inputs are float32 and the model's weights "
                                             r"float64: give inputs of the model's dtype \(e.g. x.to\(torch.float64\)\)"):
        make(a, b, (x.float(), y.float()), loss_fn=nn.MSELoss(), n_steps=2)


@pytest.mark.parametrize("kwargs,match", [
    ({"lr": -1.0}, r"^lr=-1.0; expected a positive finite number: the adam step size"),
    ({"lr": 0.0}, r"^lr=0.0; expected a positive finite number"),
    ({"lr": float("nan")}, r"^lr=nan; expected a positive finite number"),
    ({"lr": "0.1"}, r"^lr='0.1'; expected a positive finite number"),
    ({"batch_size": 0}, (r"^batch_size=0; expected a positive integer: the samples drawn per training step, "
                         r"e.g. batch_size=64")),
    ({"batch_size": -5}, r"^batch_size=-5; expected a positive integer"),
    ({"batch_size": 2.5}, r"^batch_size=2.5; expected a positive integer"),
    ({"batch_size": True}, r"^batch_size=True; expected a positive integer"),
    ({"seed": 1.5}, r"^seed=1.5; expected an integer from 0 to 2\*\*64 - 1 \(the seed of the batches"),  # was seed 1
    # the loss is checked before the control point trains on it (a raw "grad can be implicitly created only
    # for scalar outputs" came from loss.backward())
    ({"loss_fn": nn.MSELoss(reduction="none")}, r"^loss_fn returned a tensor of shape \(N, 1\) for N samples "
                                                r"\(one value per sample\?\); expected a scalar"),
    ({"loss_fn": nn.MSELoss(reduction="sum")}, r"sums over the batch"),
    # were numpy's and numpy's own TypeErrors
    ({"n_points": 5.0}, r"^n_points=5.0; expected an odd integer ≥ 3"),
    ({"n_points": "5"}, r"^n_points='5'; expected an odd integer ≥ 3"),
    ({"n_steps": True}, r"^n_steps=True; expected a non-negative number of training steps"),  # ran 1 step (s37)
])
def test_bezier_curve_refuses_a_bad_learning_rate_or_batch_size(kwargs, match):
    a, b, (x, y) = _float64_pair()
    a, b, data = a.float(), b.float(), (x.float(), y.float())
    with pytest.raises(LandscapeError, match=match):
        lnb.bezier_curve(a, b, data, **{"loss_fn": nn.MSELoss(), "n_steps": 2, "n_points": 3, **kwargs})


def test_a_curve_on_inputs_alone_says_the_data_carry_no_targets():
    """Inputs without targets blamed loss_fn ("targets of shape None ... expected a callable"), where
    project_trajectory says what is missing (trial s37)."""
    a, b, (x, y) = _float64_pair()
    with pytest.raises(LandscapeError, match=r"the data carry no targets .* pass \(inputs, targets\)"):
        lnb.bezier_curve(a, b, x, n_steps=2, n_points=3)


def _nan_loss(out, y):
    return nn.functional.cross_entropy(out, y) * float("nan")


def _root_of_zero(out, y):
    """The cross-entropy plus sqrt(0): finite, with a NaN gradient (inf · 0)."""
    return nn.functional.cross_entropy(out, y) + (out - out).pow(2).mean().sqrt()


def test_a_nan_training_loss_of_a_bezier_curve_is_refused_and_a_nan_barrier_said_as_such(pair):
    """A NaN loss trained a NaN control point and returned it, history all NaN, whose barrier then asked to
    'finish (or recompute) the surface'; now training stops at the step, and a barrier tells a computed NaN from a
    point never computed."""
    a, b, data = pair
    with pytest.raises(LandscapeError, match=r"^bezier_curve: the training loss is nan at step 1 of 5 \(t = 0\.\d+\), "
                                             r"so its gradient .* nothing was returned"):
        lnb.bezier_curve(a, b, data, loss_fn=_nan_loss, n_steps=5, n_points=3)
    with pytest.raises(LandscapeError, match=r"^bezier_curve: step 1 of 5 made the control point NaN or infinite "
                                             r"\(its loss was \d+\.\d+, its gradient was not finite"):
        lnb.bezier_curve(a, b, data, loss_fn=_root_of_zero, n_steps=5, n_points=3)
    line = lnb.interpolation_surface(a, b, data, x=(0, 1, 5), loss_fn=_nan_loss)
    assert line.complete and np.isnan(line.loss).all()
    with pytest.raises(LandscapeError, match=r"NaN or infinite at t = 0, 0.25, 0.5, 0.75, 1 \(computed: the model "
                                             r"diverges there, or the loss is undefined\)"):
        lnb.loss_barrier(line)
    good = lnb.interpolation_surface(a, b, data, x=(0, 1, 5))
    done = np.array([True, True, False, True, True])
    partial = Surface(good.x, None, np.where(done, good.loss, np.nan), {}, done, good.spec, good.provenance)
    with pytest.raises(LandscapeError, match=r"missing 1 of its points between t = 0 and 1 .* finish \(or "):
        lnb.loss_barrier(partial)


def test_a_model_with_a_nan_or_inf_weight_is_refused_as_a_path_end_naming_it(pair):
    """An inf in b was blamed on "direction 0" (interpolation) or on the learning rate (a Bézier control point
    made NaN at step 1); a NaN in the plane's third model on the plane's direction."""
    a, b, data = pair
    bad = copy.deepcopy(b)
    with torch.no_grad():
        next(bad.parameters())[0, 0] = float("inf")
    for call in (lambda: lnb.interpolation_surface(a, bad, data, x=(0, 1, 3)),
                 lambda: lnb.bezier_curve(a, bad, data, n_steps=1, n_points=3)):
        with pytest.raises(LandscapeError, match=r"^model b: the model's param '\S+' holds 1 non-finite value"):
            call()
    with torch.no_grad():
        next(bad.parameters())[0, 0] = float("nan")
    with pytest.raises(LandscapeError, match=r"^model c: the model's param"):
        lnb.plane_directions(a, b, bad)


def test_an_error_of_the_model_while_a_bezier_curve_trains_is_named_in_one_line(pair):
    """Inputs of the wrong width raised torch's raw RuntimeError from inside nn.Linear."""
    a, b, (x, y) = pair
    with pytest.raises(LandscapeError, match=r"^the model \(\w+; in \w+\.forward\) raised RuntimeError: mat1 and "
                                             r"mat2 shapes cannot be multiplied .*\(on the first 8 samples\)") as exc:
        lnb.bezier_curve(a, b, (torch.cat([x, x[:, :1]], dim=1), y), n_steps=1, n_points=3)
    assert isinstance(exc.value.__cause__, RuntimeError)


def test_a_state_dict_or_path_given_for_a_model_is_refused_with_the_way_to_a_model(tmp_path):
    """pca_directions and the CLI take state dicts and .pt files; the paths between models refused them with
    "pass the model object itself" (trial s35): the message now gives the call that makes one, which works."""
    from landscape_nb.model_paths import model_from_state_dict
    from landscape_nb.trajectory import load_state_dict_file

    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    torch.save(b.state_dict(), tmp_path / "b.pt")
    with pytest.raises(LandscapeError, match=r"model b is a OrderedDict; .* it holds the tensors, not the "
                                             r"architecture: pass landscape_nb\.model_paths\.model_from_state_dict"):
        lnb.interpolation_direction(a, b.state_dict())
    with pytest.raises(LandscapeError, match=r"model b is a str; .* load it: landscape_nb\.model_paths\."
                                             r"model_from_state_dict\(a, landscape_nb\.trajectory\.load_state_dict_"):
        lnb.interpolation_direction(a, str(tmp_path / "b.pt"))
    d = lnb.interpolation_direction(a, model_from_state_dict(a, load_state_dict_file(tmp_path / "b.pt")))
    want = torch.cat([(q - p).reshape(-1) for p, q in zip(a.parameters(), b.parameters())])
    torch.testing.assert_close(d.vectors[0], want.detach())


def test_a_path_between_models_holding_a_float64_buffer_ends_at_each_model():
    """A float64 buffer made the flat vectors float64, and the stacked first layer's terms met float32 inputs:
    "mat1 and mat2 must have the same dtype", blamed on the user's model (trial s35)."""
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 3)
            self.register_buffer("scale", torch.ones(16, dtype=torch.float64))

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)) * self.scale.to(x.dtype))

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(0)
    a = Scaled()
    torch.manual_seed(1)
    b = Scaled()
    b.scale.fill_(2.0)
    line = lnb.interpolation_surface(a, b, (x, y), x=(0, 1, 5))
    with torch.no_grad():
        ends = [float(nn.functional.cross_entropy(m(x), y)) for m in (a, b)]
    np.testing.assert_allclose(line.loss[[0, -1]], ends, rtol=1e-5)
    mid = copy.deepcopy(a)  # t = 0.5 by hand, the buffer moved with the weights
    with torch.no_grad():
        for (name, t), tb in zip(mid.state_dict().items(), b.state_dict().values()):
            t.copy_(0.5 * (t + tb))
        assert line.loss[2] == pytest.approx(float(nn.functional.cross_entropy(mid(x), y)), rel=1e-5)


def test_a_plane_through_three_models_marks_them_by_name_with_their_own_losses(pair):
    """Trial s47: a plane through three models did not show where they are. Each figure of the plane marks the
    three at (0, 0), (1, 0) and (0, 1), named as given, hovering the loss there, which is each model's own loss
    computed here directly; a model between grid points says the loss shown is the nearest point's, and one
    outside the range is named above the plot, not drawn at the edge."""
    a, b, data = pair
    with single_thread():
        c = _trained_mlp(3, data, steps=100)
    d = lnb.plane_directions(a, b, c, names=("final", "run 2", "run <3>"))
    own = [_loss(m, data) for m in (a, b, c)]
    plane = lnb.compute_surface(a, data, d, x=(-0.5, 1.5, 9), y=(-0.5, 1.5, 5))  # all three on grid points
    for fig in (lnb.plot.contour(plane), lnb.plot.heatmap(plane)):
        marks = next(t for t in fig.data if t.name == "models")
        assert list(marks.x) == [0, 1, 0] and list(marks.y) == [0, 0, 1]
        assert list(marks.text) == ["final", "run 2", "run &lt;3&gt;"]  # drawn as text, not as a tag
        assert marks.hovertemplate[1] == "%{text} at (1, 0)<br>loss: %{customdata[0]:.4g}%{hovertext}<extra></extra>"
        assert np.asarray(marks.customdata)[:, 0] == pytest.approx(own, rel=1e-5)
    fig3d = lnb.plot.surface(plane)
    drawn = next(t for t in fig3d.data if t.name == "models")  # 3D: at the heights drawn
    assert drawn.type == "scatter3d" and np.asarray(drawn.z[0::3], float) == pytest.approx(own, rel=1e-5)
    # each model's pin from its mark up above the drawn surface, named at its top (trial s54: marks on the surface
    # alone were hidden behind it in the default camera), inside the scene's z range
    values = np.asarray(next(t for t in fig3d.data if t.type == "surface").z, float)
    top = np.nanmax(values) + 0.08 * (np.nanmax(values) - np.nanmin(values))
    assert list(drawn.z[1::3]) == pytest.approx([top] * 3) and list(drawn.z[2::3]) == [None] * 3
    assert list(drawn.x) == [0, 0, None, 1, 1, None, 0, 0, None] and drawn.mode == "lines+markers+text"
    assert list(drawn.text) == ["", "final", "", "", "run 2", "", "", "run &lt;3&gt;", ""]
    assert drawn.hovertemplate[3] == drawn.hovertemplate[4] == marks.hovertemplate[1]
    assert fig3d.layout.scene.zaxis.range[1] >= top > np.nanmax(values)

    off = lnb.compute_surface(a, data, d, x=(-0.5, 0.7, 4), y=(-0.3, 1.5, 5))  # x: -0.5, -0.1, 0.3, 0.7
    fig = lnb.plot.contour(off)
    marks = next(t for t in fig.data if t.name == "models")
    assert list(marks.text) == ["final", "run &lt;3&gt;"] and list(marks.y) == [0, 1]  # run 2 at x = 1 left out
    assert marks.hovertemplate[0] == ("%{text} at (0, 0)<br>no grid point there; at the nearest, (%{customdata[1]:"
                                      ".6g}, %{customdata[2]:.6g}): loss: %{customdata[0]:.4g}%{hovertext}<extra></extra>")
    nearest = np.asarray(marks.customdata)[0]
    assert nearest[1:] == pytest.approx([-0.1, 0.15]) and nearest[0] == off.loss[1, 1]
    said = fig.layout.annotations[-1].text.replace("<br>", " ").replace("\u00a0", " ")
    assert "outside the range drawn (not marked): run 2 (1, 0)" in said
    # 3D: off the grid, each mark sits on the surface as drawn, bilinear in its cell (at the nearest point's height
    # it floated above or sank below it, trial s50); by hand from the cell's four corners (x -0.1, 0.3)
    fig3d = lnb.plot.surface(off)
    drawn = next(t for t in fig3d.data if t.name == "models")
    loss = np.asarray(next(t for t in fig3d.data if t.type == "surface").z, float)  # as drawn: the cap's values
    marked = np.asarray(drawn.z[0::3], float)  # on the surface; drawn.z[1::3]: the pins' tops

    def by_hand(row, ty, tx=0.25):  # (0 - -0.1) / 0.4 along x
        return ((1 - ty) * ((1 - tx) * loss[row, 1] + tx * loss[row, 2])
                + ty * ((1 - tx) * loss[row + 1, 1] + tx * loss[row + 1, 2]))

    expected = [by_hand(0, (0 + 0.3) / 0.45), by_hand(2, (1 - 0.6) / 0.45)]  # y -0.3, 0.15 | 0.6, 1.05
    assert marked == pytest.approx(expected, rel=1e-9)
    assert not np.isclose(marked[0], loss[1, 1])  # not the nearest point's height
    assert loss[0, 2] < off.loss[0, 2]  # a corner above the cap: drawn at the cap, and the mark with it

    live = lnb.plot.live(plane)  # the Explorer's figure: marked on the contours, hidden for the next directions
    lnb.plot.update(live, plane)
    marks = next(t for t in live.data if t.name == "models")
    assert marks.visible and list(marks.text) == ["final", "run 2", "run &lt;3&gt;"]
    assert np.asarray(marks.customdata)[:, 0] == pytest.approx(own, rel=1e-5)
    # and on its 3D pane, at the heights drawn, as plot.surface marks them (the live 3D pane marked none, s51)
    marks3d = next(t for t in live.data if t.name == "models 3d")
    assert marks3d.type == "scatter3d" and marks3d.scene == "scene" and marks3d.visible
    assert np.asarray(marks3d.z[0::3], float) == pytest.approx(own, rel=1e-5) and list(marks3d.x[0::3]) == [0, 1, 0]
    assert marks3d.mode == "lines+markers+text" and marks3d.line.width == 3  # pins, as plot.surface's
    lnb.plot.update(live, off)  # off the grid: bilinear in the cell, as plot.surface's
    assert np.asarray(marks3d.z[0::3], float) == pytest.approx(marked, rel=1e-9)
    other = lnb.compute_surface(a, data, lnb.random_directions(a, n=2, seed=0), x=(-0.5, 1.5, 9), y=(-0.5, 1.5, 5))
    lnb.plot.update(live, other)
    assert marks.visible is False and not len(marks.x)
    assert marks3d.visible is False and not len(marks3d.z)
    assert all(t.name != "models" for t in lnb.plot.contour(other).data)


def test_a_straight_line_marks_its_two_models_with_their_own_losses_and_says_what_it_cannot_mark(pair):
    """A straight line between two models (interpolation_surface, --model-file2) drew its loss with nothing saying
    where the models lie on it. plot.line marks both at t = 0 and t = 1, named as given, hovering each model's own
    loss (computed here directly); a model between grid points says the loss shown is the nearest point's; t = 1
    of a line that kept a's BatchNorm statistics is labelled b's weights, hovering the loss of b's weights with a's
    statistics; models outside the range, or a line centred at another model, are said above the plot."""
    a, b, data = pair
    names = ("final", "run <2>")
    line = lnb.interpolation_surface(a, b, data, x=(-0.5, 1.5, 9), names=names)  # t = 0 and 1 on grid points
    marks = next(t for t in lnb.plot.line(line).data if t.name == "models")
    assert list(marks.x) == [0, 1] and list(marks.text) == ["final", "run &lt;2&gt;"]  # text, not a tag
    assert np.asarray(marks.y) == pytest.approx([_loss(a, data), _loss(b, data)], rel=1e-5)
    assert marks.hovertemplate[1] == "%{hovertext}: loss: %{customdata[0]:.4g}<extra></extra>"

    off = lnb.interpolation_surface(a, b, data, x=(-0.5, 1.4, 6), names=names)  # t: -0.5, -0.12, 0.26, ..., 1.4
    marks = next(t for t in lnb.plot.line(off).data if t.name == "models")
    assert "no grid point there; at the nearest, t = %{customdata[1]:.6g}" in marks.hovertemplate[0]
    assert np.asarray(marks.customdata)[:, 1] == pytest.approx([-0.12, 1.02])
    assert np.asarray(marks.customdata)[:, 0] == pytest.approx([off.loss[1], off.loss[4]])  # hovered: the nearest
    assert np.asarray(marks.y) == pytest.approx(np.interp([0, 1], off.x, off.loss))  # drawn on the curve's line

    live = lnb.plot.live(lnb.Surface(off.x, None, np.full(6, np.nan), done=np.zeros(6, bool)))  # the Explorer's
    lnb.plot.update(live, line)  # line, made before the run's directions were known
    marks = next(t for t in live.data if t.name == "models")
    assert marks.visible and list(marks.text) == ["final", "run &lt;2&gt;"]
    assert np.asarray(marks.y) == pytest.approx([_loss(a, data), _loss(b, data)], rel=1e-5)
    with single_thread():
        c = _trained_mlp(3, data, steps=100)
    lnb.plot.update(live, lnb.interpolation_surface(a, c, data, x=(-0.5, 1.5, 9), names=("final", "run 3")))
    assert list(marks.text) == ["final", "run 3"]  # the next run's models, not the last one's
    assert np.asarray(marks.y) == pytest.approx([_loss(a, data), _loss(c, data)], rel=1e-5)
    lnb.plot.update(live, lnb.interpolation_surface(a, c, data, x=(0.2, 0.8, 9), names=("final", "run 3")))
    assert marks.visible is False
    assert "outside the range drawn (not marked): final" in live.layout.annotations[-1].text.replace("\u00a0", " ")

    inner = lnb.plot.line(lnb.interpolation_surface(a, b, data, x=(0.2, 0.8, 4), names=names))
    assert all(t.name != "models" for t in inner.data)
    said = inner.layout.annotations[-1].text.replace("<br>", " ").replace("\u00a0", " ")
    assert "outside the range drawn (not marked): final (t = 0), run &lt;2&gt; (t = 1)" in said

    with pytest.warns(UserWarning, match="made around other weights|around another model|centred"):
        around_b = lnb.compute_surface(b, data, lnb.interpolation_direction(a, b, names=names), x=(-0.5, 1.5, 5))
    fig = lnb.plot.line(around_b)
    assert all(t.name != "models" for t in fig.data)
    assert "the two models are not marked" in fig.layout.annotations[-1].text.replace("<br>", " ")

    with single_thread():
        bn = [_trained_mlp(seed, data, steps=60, batchnorm=True) for seed in (4, 5)]
    kept = lnb.interpolation_surface(*bn, data, x=(-0.5, 1.5, 5), names=("A", "B"), include_buffers=False)
    marks = next(t for t in lnb.plot.line(kept).data if t.name == "models")
    assert list(marks.text) == ["A", "B's weights"] and "with A's buffers" in marks.hovertext[1]
    twin = copy.deepcopy(bn[1])  # B's weights with A's statistics: what lies at t = 1
    twin.load_state_dict({**bn[1].state_dict(), **{k: v for k, v in bn[0].state_dict().items() if "running" in k}})
    assert np.asarray(marks.y) == pytest.approx([_loss(bn[0], data), _loss(twin, data)], rel=1e-5)
    assert abs(_loss(twin, data) - _loss(bn[1], data)) > 1e-3  # not B's own loss
    both = lnb.interpolation_surface(*bn, data, x=(-0.5, 1.5, 5), names=("A", "B"))  # statistics interpolated too
    marks = next(t for t in lnb.plot.line(both).data if t.name == "models")
    assert list(marks.text) == ["A", "B"] and np.asarray(marks.y)[1] == pytest.approx(_loss(bn[1], data), rel=1e-5)
    with pytest.warns(UserWarning, match=r"kept A's BatchNorm statistics .* not B, and the barrier is between A"):
        assert lnb.loss_barrier(lnb.interpolation_surface(*bn, data, x=(0, 1, 5), names=("A", "B"),
                                                          include_buffers=False)) >= 0
    recomputed = lnb.interpolation_surface(*bn, data, x=(-0.5, 1.5, 5), names=("A", "B"), include_buffers=False,
                                           mode="bn-recompute")  # statistics re-estimated at every point: the
    marks = next(t for t in lnb.plot.line(recomputed).data if t.name == "models")  # models' weights, not A, B
    assert list(marks.text) == ["A's weights", "B's weights"]  # (trial s50: "a" hovered 0.164 for a's own 0.428)
    assert all("re-estimated" in h and "A's buffers" not in h for h in marks.hovertext)


def test_names_holding_markup_or_template_fields_are_hovered_as_written(pair):
    """Trial s50: a name holding "%{x}" went into the curves' hover templates as it was, and plotly.js filled it with
    the x value; "<b>B</b>" was drawn bold. Names and labels reach every template escaped (plotly.js draws the
    entities as the characters: checked in Chromium), so the only fields left are the figure's own."""
    import re

    a, b, data = pair
    c = copy.deepcopy(b)
    with torch.no_grad():
        next(c.parameters()).add_(0.1)
    names = ("%{x} & co", "<b>B</b>")
    own = re.compile(r"%\{(x|y|z|text|hovertext|customdata\[\d\])(:[^}]*)?\}")  # the fields the figures fill

    def templates(fig):
        return [t for tr in fig.data for t in ([tr.hovertemplate] if isinstance(tr.hovertemplate, str) else
                                               list(tr.hovertemplate or ()))]

    line = lnb.interpolation_surface(a, b, data, x=(0, 1, 3), names=names, label="run %{y}")
    plane = lnb.compute_surface(a, data, lnb.plane_directions(a, b, c, names=(*names, "C")), x=(0, 1, 3), y=(0, 1, 3))
    figs = [lnb.plot.line(line), lnb.plot.contour(plane), lnb.plot.heatmap(plane), lnb.plot.surface(plane),
            lnb.plot.update(lnb.plot.live(plane), plane), lnb.plot.update(lnb.plot.live(line), line)]
    for fig in figs:
        for t in templates(fig):
            left = own.sub("", t)
            assert "%{" not in left and "<b>" not in left, t
    assert "%&#123;x} &amp; co" in lnb.plot.line(line).data[0].hovertemplate  # drawn as "%{x} & co"


def test_the_marks_of_a_plane_through_three_models_never_name_a_point_that_is_not_the_model(pair, tmp_path):
    """Trial s49: a plane that kept model a's BatchNorm statistics marked "B" at (1, 0), hovering 1.347 for B's own
    0.124; a plane computed around another model than a marked all three where none of them was; points not
    computed yet hovered "loss: NaN"; a name holding "%{x}" showed a number. Each mark now says what lies there."""
    a, b, data = pair
    with single_thread():
        bn = [_trained_mlp(seed, data, steps=60, batchnorm=True) for seed in (4, 5, 6)]
    d = lnb.plane_directions(*bn, names=("A", "B %{x}", "C"), include_buffers=False)
    plane = lnb.compute_surface(bn[0], data, d, x=(-0.5, 1.5, 5), y=(-0.5, 1.5, 5))
    marks = next(t for t in lnb.plot.contour(plane).data if t.name == "models")
    assert list(marks.text) == ["A", "B %{x}'s weights", "C's weights"]  # text, read by the hover as %{text}
    assert all(t.startswith("%{text} at (") for t in marks.hovertemplate)
    assert all("%{x}" not in t for t in marks.hovertemplate)  # read from text and hovertext, not the template
    assert marks.hovertext[1] == ("<br>with A's buffers (which differ from B %{x}'s, e.g. 1.running_mean): not B "
                                  "%{x} itself; include_buffers=True puts B %{x} there")
    twin = copy.deepcopy(bn[1])  # B's weights with exactly A's statistics: the point at (1, 0) is this model itself
    twin.load_state_dict({**bn[1].state_dict(), **{k: v for k, v in bn[0].state_dict().items() if "running" in k}})
    marks = next(t for t in lnb.plot.contour(lnb.compute_surface(
        bn[0], data, lnb.plane_directions(bn[0], twin, bn[2], names=("A", "B2", "C"), include_buffers=False),
        x=(-0.5, 1.5, 5), y=(-0.5, 1.5, 5))).data if t.name == "models")
    assert list(marks.text) == ["A", "B2", "C's weights"] and marks.hovertext[1] == ""  # per model (re-trial s49)
    assert np.asarray(marks.customdata)[1, 0] == pytest.approx(_loss(twin, data), rel=1e-5)
    b_weights = copy.deepcopy(bn[0])  # B's weights with A's statistics, loaded here: the loss the mark shows
    b_weights.load_state_dict({k: v for k, v in bn[1].state_dict().items() if k in dict(bn[1].named_parameters())},
                              strict=False)
    assert np.asarray(marks.customdata)[1, 0] == pytest.approx(_loss(b_weights, data), rel=1e-5)
    assert abs(np.asarray(marks.customdata)[1, 0] - _loss(bn[1], data)) > 1e-3  # which is not B's own
    full = lnb.plane_directions(*bn, names=("A", "B", "C"))  # the default: B itself at (1, 0), named so
    marks = next(t for t in lnb.plot.contour(lnb.compute_surface(bn[0], data, full, x=(-0.5, 1.5, 5),
                                                                 y=(-0.5, 1.5, 5))).data if t.name == "models")
    assert list(marks.text) == ["A", "B", "C"]
    assert np.asarray(marks.customdata)[:, 0] == pytest.approx([_loss(m, data) for m in bn], rel=1e-5)

    with pytest.warns(UserWarning, match="made around another model"):  # centred at B: nothing is where it says
        wrong = lnb.compute_surface(bn[1], data, full, x=(-0.5, 1.5, 5), y=(-0.5, 1.5, 5), store=tmp_path / "w.zarr")
    for fig in (lnb.plot.contour(wrong), lnb.plot.surface(lnb.load_surface(tmp_path / "w.zarr"))):  # stored too
        assert all(t.name != "models" for t in fig.data)
        assert any("the three models are not marked" in a.text.replace("<br>", " ") for a in fig.layout.annotations)

    drifted = copy.deepcopy(bn[0])  # A's weights, B's statistics (as a forward pass in train mode leaves them)
    drifted.load_state_dict({**bn[0].state_dict(), **{k: v for k, v in bn[1].state_dict().items() if "running" in k}})
    with pytest.warns(UserWarning, match="same weights but other BatchNorm statistics"):
        moved = lnb.compute_surface(drifted, data, full, x=(-0.5, 1.5, 5), y=(-0.5, 1.5, 5))
    fig = lnb.plot.heatmap(moved)
    assert all(t.name != "models" for t in fig.data)  # A hovered 3.306 for its own 0.123 (re-trial s49)
    with warnings.catch_warnings():  # statistics re-estimated at every point: the centre's own do not matter
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=lnb.ModelOffGrid)  # 3 points on -0.5..1.5: not this test's
        lnb.compute_surface(drifted, data, full, x=(-0.5, 1.5, 3), y=(-0.5, 1.5, 3), mode="bn-recompute")
    assert any("the three models are not marked" in a.text.replace("<br>", " ") for a in fig.layout.annotations)
    with warnings.catch_warnings():  # a float64 copy of A is A: marked, without a word
        warnings.simplefilter("error")
        again = lnb.compute_surface(copy.deepcopy(bn[0]).double(), (data[0].double(), data[1]), full,
                                    x=(-0.5, 1.5, 5), y=(-0.5, 1.5, 5))
    assert [t.text for t in lnb.plot.contour(again).data if t.name == "models"] == [("A", "B", "C")]

    done = np.zeros((5, 5), bool)
    done[0, :] = True  # the first row only (y = -0.5): none of the three computed yet
    loss = np.where(done, plane.loss, np.nan)
    part = Surface(plane.x, plane.y, loss, done=done, provenance=dict(plane.provenance))
    marks = next(t for t in lnb.plot.contour(part).data if t.name == "models")
    assert all(t.endswith("not computed yet%{hovertext}<extra></extra>") for t in marks.hovertemplate)
    loss[1, 1] = np.nan  # (0, 0) computed, diverged
    done[1, 1] = True
    marks = next(t for t in lnb.plot.contour(Surface(plane.x, plane.y, loss, done=done,
                                                     provenance=dict(plane.provenance))).data if t.name == "models")
    assert "the loss diverged (NaN or inf)" in marks.hovertemplate[0]

    for names in (("A", "A", "B"), ("A ", "A", "B")):
        with pytest.raises(LandscapeError, match=r"repeats a name; expected 3 different names"):
            lnb.plane_directions(*bn, names=names)
    with pytest.raises(LandscapeError, match=r"expected 3 non-empty strings"):
        lnb.plane_directions(*bn, names=(" ", "B", "C"))
    line = lnb.interpolation_surface(a, b, data, x=(0, 1, 3), names=("small", "large"))
    assert line.x_label == "t (small → large)"
