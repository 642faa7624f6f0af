"""The shared first layer (multipoint.SharedFirstLayer) against a naive loop written here:
copy w + Σ c_k d_k into a copy of the model, loop over the data in small batches."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

import landscape_nb as lnb
from landscape_nb.directions import as_directions
from landscape_nb.evaluate import EvalSettings, Evaluator


def naive(model, data, dirs, coeffs):
    """Mean cross-entropy and accuracy at w + Σ c_k d_k, batches of 5."""
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name in dirs[0]:  # not a frozen weight
                p.copy_(p + sum(float(c) * d[name] for c, d in zip(coeffs, dirs)))
        x, y = data
        loss, correct = 0.0, 0.0
        for i in range(0, len(x), 5):
            out = m(x[i:i + 5])
            loss += float(nn.functional.cross_entropy(out, y[i:i + 5], reduction="sum"))
            correct += float((out.argmax(1) == y[i:i + 5]).sum())
    return loss / len(x), correct / len(x)


def dirs_for(model, n, seed):
    g = torch.Generator().manual_seed(seed)
    return [{k: 0.3 * torch.randn(p.shape, generator=g) for k, p in model.named_parameters()} for _ in range(n)]


class FlatMLP(nn.Module):
    """Flattens inside forward: the first layer sees a view of the inputs."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(48, 32), nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class ScaledInput(nn.Module):
    """The first layer's input is computed (x * a weight): not shareable."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(48))
        self.fc1, self.fc2 = nn.Linear(48, 32), nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1) * self.scale)))


class WideConv(nn.Module):
    """A first conv with fan-in 8·3·3 = 72: worth sharing; BatchNorm-free so nothing is folded."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture
def stacking_tried(monkeypatch):
    """The points-per-pass trial runs whatever one point takes (a loaded CI machine may pass
    ``tuning.STACK_CPU_MAX_SECONDS`` on these tiny models)."""
    from landscape_nb import tuning

    monkeypatch.setattr(tuning, "STACK_CPU_MAX_SECONDS", float("inf"))


def _data(shape, n=83, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, 4, (n,), generator=g)


CASES = [
    ("mlp", lambda: nn.Sequential(nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4)), (48,)),
    ("flat", FlatMLP, (3, 16)),
    ("conv", WideConv, (8, 4, 4)),
]


@pytest.mark.parametrize("name,make,shape", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("n_dirs", [1, 2, 3])
def test_shared_first_layer_matches_the_naive_loop(name, make, shape, n_dirs):
    torch.manual_seed(n_dirs)
    model = make().eval()
    data = _data(shape, seed=n_dirs)
    dirs = dirs_for(model, n_dirs, seed=n_dirs)
    d = as_directions(model, dirs)
    ev = Evaluator(model, data, d.vectors, d.layout)
    assert ev.shared_layer is not None
    ev._shared_plan = []  # keep the layer shared on every point (not only where it measured faster)
    coords = np.random.default_rng(n_dirs).uniform(-1.5, 1.5, (17, n_dirs))
    got = ev.evaluate(coords)
    want = np.array([naive(model, data, dirs, c) for c in coords])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert "forward" not in ev.shared_layer.module.__dict__  # the layer's own forward is back


@pytest.mark.parametrize("batch_size", [None, 16, 83, 200])
def test_several_batches_and_tuned_batch_sizes(batch_size):
    """Terms are per batch: a given batch size, and a tuned one (the first points run several sizes)."""
    model = CASES[0][1]().eval()
    data = _data((48,), n=700 if batch_size is None else 83)
    dirs = dirs_for(model, 2, seed=4)
    d = as_directions(model, dirs)
    ev = Evaluator(model, data, d.vectors, d.layout, settings=EvalSettings(batch_size=batch_size))
    assert ev.shared_layer is not None
    ev._shared_plan = []  # shared on every point
    coords = np.random.default_rng(1).uniform(-1, 1, (30, 2))
    got = np.concatenate([ev.evaluate(coords[:7]), ev.evaluate(coords[7:])])  # two tiles
    want = np.array([naive(model, data, dirs, c) for c in coords])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # only the batching in use keeps its terms: every size the trial ran kept its own, 245 MB of a 1.8M-parameter
    # MLP's on 5,000 samples (trial s38)
    held = {key[1][0] for key in ev.shared_layer._terms}
    assert held <= {len(b[0]) for b in ev.batches}  # the kept batch size's batches (and its last, shorter one)
    assert len(ev.shared_layer._terms) <= len(ev.batches)


@pytest.mark.parametrize("nx,ny,tile", [(5, 4, (2, 3)), (7, 7, (7, 7)), (6, 1, (1, 4))])
def test_compute_surface_grid_and_tile_shapes(nx, ny, tile):
    model = FlatMLP().eval()
    data = _data((3, 16), n=50)
    n_dirs = 1 if ny == 1 else 2
    dirs = dirs_for(model, n_dirs, seed=2)
    y = None if ny == 1 else (-0.7, 0.9, ny)
    surf = lnb.compute_surface(model, data, dirs, x=(-1, 1.2, nx), y=y, tile=tile)
    xs = np.linspace(-1, 1.2, nx)
    if ny == 1:
        want = np.array([naive(model, data, dirs, [a])[0] for a in xs])
    else:
        ys = np.linspace(-0.7, 0.9, ny)
        want = np.array([[naive(model, data, dirs, [a, b])[0] for a in xs] for b in ys])
    np.testing.assert_allclose(surf.loss.reshape(want.shape), want, rtol=1e-5, atol=1e-6)


def test_not_shared_when_the_input_holds_weights_and_values_still_match():
    model = ScaledInput().eval()
    data = _data((3, 16), n=40)
    dirs = dirs_for(model, 2, seed=3)
    d = as_directions(model, dirs)
    ev = Evaluator(model, data, d.vectors, d.layout)
    assert ev.shared_layer is None
    coords = np.random.default_rng(3).uniform(-1, 1, (6, 2))
    np.testing.assert_allclose(ev.evaluate(coords), [naive(model, data, dirs, c) for c in coords], rtol=1e-5, atol=1e-6)


def test_not_shared_for_a_small_fan_in_or_a_frozen_first_layer():
    thin = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 4)).eval()  # fan-in 3 < 4 · 3 terms
    frozen = CASES[0][1]().eval()
    frozen[0].requires_grad_(False)  # not among the perturbed weights
    for model, shape in ((thin, (3,)), (frozen, (48,))):
        dirs = [{k: v if model.get_parameter(k).requires_grad else torch.zeros_like(v) for k, v in dd.items()}
                for dd in dirs_for(model, 2, seed=0)]  # a direction may not move a frozen tensor
        d = as_directions(model, dirs)
        assert Evaluator(model, _data(shape, n=20), d.vectors, d.layout).shared_layer is None


class _MaxNormLinear(nn.Linear):
    """A max-norm constraint in its own forward: not affine in its weight, so never shared."""

    def forward(self, x):
        return nn.functional.linear(x, torch.renorm(self.weight, 2, 0, 1.3), self.bias)


def test_not_shared_when_the_first_layer_is_a_subclass_with_its_own_forward():
    """The terms stand for ``F.linear``/``_conv_forward`` of the weights; a subclass's forward (here a
    max-norm constraint that one check near the centre does not see) keeps its own layer; values match
    the naive loop out to ±2."""
    torch.manual_seed(0)
    model = nn.Sequential(_MaxNormLinear(48, 64), nn.ReLU(), nn.Linear(64, 5)).eval()
    data = _data((48,), n=60, seed=5)
    dirs = dirs_for(model, 2, seed=5)
    d = as_directions(model, dirs)
    assert Evaluator(model, data, d.vectors, d.layout).shared_layer is None
    surf = lnb.compute_surface(model, data, dirs, x=(-2, 2, 5), y=(-2, 2, 5))
    xs = np.linspace(-2, 2, 5)
    want = np.array([[naive(model, data, dirs, [a, b])[0] for a in xs] for b in xs])
    np.testing.assert_allclose(surf.loss, want, rtol=1e-5, atol=1e-6)


def test_shared_or_not_is_measured_on_real_points(monkeypatch):
    """With one point a pass (given here; else where the points-per-pass trial keeps one), three points
    each way; the values stay the naive loop's."""
    model = FlatMLP().eval()
    data = _data((3, 16), n=60)
    dirs = dirs_for(model, 2, seed=6)
    d = as_directions(model, dirs)
    ev = Evaluator(model, data, d.vectors, d.layout, settings=EvalSettings(points_per_pass=1))
    layer = ev.shared_layer
    coords = np.random.default_rng(6).uniform(-1, 1, (12, 2))
    got = np.concatenate([ev.evaluate(coords[:4]), ev.evaluate(coords[4:])])  # the plan spans two tiles
    assert not ev._shared_plan and set(ev._shared_times) == {True, False}
    assert ev.shared_layer in (layer, None)
    np.testing.assert_allclose(got, [naive(model, data, dirs, c) for c in coords], rtol=1e-5, atol=1e-6)


def test_model_restored_bit_identically():
    model = FlatMLP().eval()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    d = as_directions(model, dirs_for(model, 2, seed=5))
    ev = Evaluator(model, _data((3, 16), n=30), d.vectors, d.layout)
    ev.evaluate(np.random.default_rng(0).uniform(-1, 1, (5, 2)))
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert "forward" not in model.fc1.__dict__


@pytest.mark.parametrize("loss_fn,metrics", [
    (None, "auto"), (nn.CrossEntropyLoss(), None), (nn.CrossEntropyLoss(label_smoothing=0.1), "auto"),
    (nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5, 1.0])), "auto"),
])
def test_fused_loss_and_accuracy_match_the_loss_function(loss_fn, metrics):
    """The default cross-entropy + accuracy run fused (log_softmax over the transposed logits);
    any other loss runs as given. Both against the loss function called on the naive model."""
    from landscape_nb.multipoint import fused_values

    model = FlatMLP().eval()
    data = _data((3, 16), n=45)
    dirs = dirs_for(model, 2, seed=7)
    d = as_directions(model, dirs)
    ev = Evaluator(model, data, d.vectors, d.layout, loss_fn=loss_fn, metrics=metrics)
    fused = fused_values(ev.loss_fn, ev.metric_fns, data[1], ev._stacked_values) != ev._stacked_values
    assert fused == (loss_fn is None or (loss_fn.weight is None and loss_fn.label_smoothing == 0))
    coords = np.random.default_rng(7).uniform(-2, 2, (5, 2))
    got = ev.evaluate(coords)
    fn = loss_fn or nn.CrossEntropyLoss()
    for c, row in zip(coords, got):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in m.named_parameters():
                p.add_(sum(float(ck) * dd[name] for ck, dd in zip(c, dirs)))
            out = m(data[0])
            want = [float(fn(out, data[1]))] + ([float((out.argmax(1) == data[1]).float().mean())] if metrics else [])
        np.testing.assert_allclose(row, want, rtol=1e-5, atol=1e-6)


def test_memory_format_is_measured_on_real_points_and_values_match():
    """Image models run their first points alternately on channels_last and contiguous inputs and
    keep the faster; every point equals the naive loop's (contiguous, batches of 5)."""
    class ConvBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn = nn.Conv2d(2, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
            self.conv2, self.fc = nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, 4)

        def forward(self, x):
            h = torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x)))))
            return self.fc(h.mean((2, 3)))

    torch.manual_seed(0)
    model = ConvBN().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    data = _data((2, 6, 6), n=40, seed=8)
    dirs = dirs_for(model, 2, seed=8)
    d = as_directions(model, dirs)
    ev = Evaluator(model, data, d.vectors, d.layout)
    assert ev._format_plan and not ev.channels_last
    coords = np.random.default_rng(8).uniform(-1, 1, (10, 2))
    got = np.concatenate([ev.evaluate(coords[:3]), ev.evaluate(coords[3:])])
    assert not ev._format_plan and ev.channels_last in (True, False)
    assert ev.batches[0][0].is_contiguous(memory_format=torch.channels_last) == ev.channels_last
    np.testing.assert_allclose(got, [naive(model, data, dirs, c) for c in coords], rtol=1e-5, atol=1e-6)


class TiedConvBN(nn.Module):
    """Conv→BN (folded in eval mode) and a head tied to an embedding-like weight used twice."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 6)
        self.fc2.weight = self.fc1.weight  # tied: one tensor, two names
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        return self.head(torch.tanh(self.fc2(torch.relu(self.fc1(h)))))


STACK_CASES = CASES + [("conv-bn-tied", TiedConvBN, (2, 5, 5))]


@pytest.fixture
def no_batch_axis(monkeypatch):
    """Stacked passes under ``vmap`` only (``BatchAxisStack`` takes the linear models otherwise)."""
    from landscape_nb import multipoint

    monkeypatch.setattr(multipoint.BatchAxisStack, "find", classmethod(lambda cls, *a: None))


# the cases whose perturbed tensors all sit in nn.Linear layers or the shared first layer
BATCH_AXIS_CASES = ("mlp", "flat", "conv")


@pytest.mark.parametrize("name,make,shape", STACK_CASES, ids=[c[0] for c in STACK_CASES])
@pytest.mark.parametrize("k", [3, 8])
@pytest.mark.parametrize("path", ["batch-axis", "vmap"])
def test_stacked_passes_match_the_naive_loop(name, make, shape, k, path, request):
    """``points_per_pass=k``: k points share one pass (and the shared first layer, where the model has
    one), on the batch axis for linear models and under vmap otherwise or when told so; every point
    equals the naive loop, including a last pass of fewer points."""
    if path == "vmap":
        request.getfixturevalue("no_batch_axis")
    elif name not in BATCH_AXIS_CASES:
        pytest.skip("only linear models (and a shared first layer) stack on the batch axis")
    torch.manual_seed(k)
    model = make().eval()
    if name == "conv-bn-tied":
        with torch.no_grad():
            model.bn.running_mean.uniform_(-0.5, 0.5)
            model.bn.running_var.uniform_(0.5, 2.0)
    data = _data(shape, n=50, seed=k)
    dirs = dirs_for(model, 2, seed=k)
    d = as_directions(model, dirs)
    ev = Evaluator(model, data, d.vectors, d.layout, settings=EvalSettings(points_per_pass=k))
    ev._shared_plan = []  # keep a shared first layer on every point
    coords = np.random.default_rng(k).uniform(-1.5, 1.5, (19, 2))
    got = ev.evaluate(coords)
    assert ev.points_per_pass == k
    assert ev._stacked_on_batch_axis == (path == "batch-axis") and "stacked_passes" not in ev.notes
    want = np.array([naive(model, data, dirs, c) for c in coords])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_points_per_pass_is_measured_on_real_points_across_tiles(stacking_tried):
    """No ``points_per_pass``: two single points, one checked stacked pass, then each candidate timed on
    real points (a size's first timing that loses runs again; the plan runs on in the next call); the
    shared-layer trial only where one point a pass is kept; the values stay the naive loop's."""
    model = CASES[0][1]().eval()
    data = _data((48,), n=40, seed=3)
    dirs = dirs_for(model, 2, seed=3)
    d = as_directions(model, dirs)
    ev = Evaluator(model, data, d.vectors, d.layout)
    # the plan takes 2 + 4 + 16 + 32 + 64 points, more when a losing size is timed again
    coords = np.random.default_rng(3).uniform(-1, 1, (690, 2))
    parts, n = [ev.evaluate(coords[:30])], 30
    while ev._stack_plan and n < len(coords):
        parts.append(ev.evaluate(coords[n:n + 110]))
        n += 110
    got, coords = np.concatenate(parts), coords[:n]
    times = ev._stack_times
    fastest = min(times.values())
    assert not ev._stack_plan and 1 in times and 16 in times
    assert ev.points_per_pass == max(k for k, t in times.items() if t <= 1.05 * fastest)
    if ev.points_per_pass > 1:  # stacked passes always combine the shared layer's terms: no A/B trial
        assert not ev._shared_times and not ev._shared_plan
    np.testing.assert_allclose(got, [naive(model, data, dirs, c) for c in coords], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("width,n,want", [(8, 40, [16, 32, 64]), (128, 360, [16, 32]), (512, 600, [16])])
def test_cpu_stacking_candidates_past_the_smallest_keep_a_pass_in_cache(width, n, want):
    """CPU points-per-pass candidates: 16, then 32 and 64 only while a pass's activations (three times
    the largest module output, float32, times the batch) stay within ``STACK_CPU_CACHE_BYTES``; the
    smallest stays however large its pass (mlp-digits' shape is the middle case)."""
    from landscape_nb import tuning

    model = nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, 4)).eval()
    data = _data((16,), n=n, seed=1)
    d = as_directions(model, dirs_for(model, 2, seed=1))
    ev = Evaluator(model, data, d.vectors, d.layout)
    per_point = 3 * width * 4 * n
    assert ev._stack_candidates() == want
    assert want == [16] + [k for k in (32, 64) if k * per_point <= tuning.STACK_CPU_CACHE_BYTES]


def test_a_slow_point_runs_no_stacked_pass_and_then_times_the_shared_layer(monkeypatch):
    """A point slower than ``STACK_CPU_MAX_SECONDS`` (0 here): two single points decide one point a pass,
    no stacked pass runs, and the shared-or-not trial follows on real points, also in calls too short for
    a stacked pass (tiles of 3 points, as a 41-point line has); values the naive loop's."""
    from landscape_nb import tuning

    monkeypatch.setattr(tuning, "STACK_CPU_MAX_SECONDS", 0.0)
    stacked = []
    real = tuning.SpeedChoices._points_stacked
    monkeypatch.setattr(tuning.SpeedChoices, "_points_stacked", lambda self, c: stacked.append(len(c)) or real(self, c))
    model = FlatMLP().eval()
    data = _data((3, 16), n=60, seed=8)
    dirs = dirs_for(model, 2, seed=8)
    d = as_directions(model, dirs)
    ev = Evaluator(model, data, d.vectors, d.layout)
    assert ev.shared_layer is not None
    coords = np.random.default_rng(8).uniform(-1, 1, (40, 2))
    got = np.concatenate([ev.evaluate(coords[i:i + 3]) for i in range(0, len(coords), 3)])
    assert stacked == [] and ev.points_per_pass == 1 and set(ev._stack_times) == {1}
    assert not ev._shared_plan and set(ev._shared_times) == {True, False}
    np.testing.assert_allclose(got, [naive(model, data, dirs, c) for c in coords], rtol=1e-5, atol=1e-6)


def test_a_loss_vmap_cannot_run_keeps_one_point_per_pass_and_says_why(stacking_tried, no_batch_axis):
    """A loss calling ``.item()`` cannot run under vmap: one point per pass, the reason in the notes
    (and so in the provenance), every value the naive loop's."""
    def item_loss(out, y):
        scale = 1.0 + 0.0 * out.abs().max().item()  # data-dependent Python float: vmap refuses it
        return nn.functional.cross_entropy(out, y) * scale

    model = FlatMLP().eval()
    data = _data((3, 16), n=30, seed=4)
    dirs = dirs_for(model, 2, seed=4)
    d = as_directions(model, dirs)
    surf = lnb.compute_surface(model, data, d, x=(-1, 1, 9), y=(-1, 1, 9), loss_fn=item_loss, metrics=None)
    assert surf.provenance["points_per_pass"] == 1
    note = surf.provenance["data"]["points_per_pass"]
    assert note.startswith("one point per pass: stacking 4 points failed") and "item" in note, note
    xs = np.linspace(-1, 1, 9)
    want = np.array([[naive(model, data, dirs, (a, b))[0] for a in xs] for b in xs])
    np.testing.assert_allclose(surf.loss, want, rtol=1e-5, atol=1e-6)


def test_a_stacked_pass_failing_after_the_check_loses_no_point(monkeypatch, stacking_tried):
    """A later stacked pass that raises (e.g. out of memory at a larger size) falls back to one point
    per pass from that point on; every value still sits at its own coordinates (naive loop)."""
    from landscape_nb import tuning

    real = tuning.SpeedChoices._points_stacked
    calls = []

    def flaky(self, coords):
        calls.append(len(coords))
        if len(calls) == 4:  # after the checked pass and two timed passes
            raise RuntimeError("out of memory (simulated)")
        return real(self, coords)

    monkeypatch.setattr(tuning.SpeedChoices, "_points_stacked", flaky)
    # every timed pass "takes" 1 s, so larger stacks always win: the trial goes on to the failing pass
    # also on a loaded machine, where a real timing may keep one point a pass before it
    monkeypatch.setattr(tuning.SpeedChoices, "_seconds", lambda self, fn, reps=2: (fn(), 1.0)[1])
    model = CASES[0][1]().eval()
    data = _data((48,), n=40, seed=9)
    dirs = dirs_for(model, 2, seed=9)
    d = as_directions(model, dirs)
    ev = Evaluator(model, data, d.vectors, d.layout)
    coords = np.random.default_rng(9).uniform(-1, 1, (120, 2))
    got = np.concatenate([ev.evaluate(coords[:50]), ev.evaluate(coords[50:])])
    assert len(calls) >= 4 and ev.points_per_pass == 1 and "simulated" in ev.notes["points_per_pass"]
    np.testing.assert_allclose(got, [naive(model, data, dirs, c) for c in coords], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- points on the batch axis ----
class Tokens(nn.Module):
    """Linear layers over a (batch, tokens, features) input, a bias-free layer, a frozen layer (not in
    the directions: the same weight for every point) and a mean over the tokens."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 24)
        self.mix = nn.Linear(24, 24, bias=False)
        self.frozen = nn.Linear(24, 24)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(24, 4)

    def forward(self, x):
        h = torch.tanh(self.mix(torch.relu(self.embed(x))))
        return self.head(torch.relu(self.frozen(h)).mean(1))


def trainable_dirs(model, n, seed):
    g = torch.Generator().manual_seed(seed)
    return [{k: 0.3 * torch.randn(p.shape, generator=g) for k, p in model.named_parameters() if p.requires_grad}
            for _ in range(n)]


@pytest.mark.parametrize("n_dirs,batch_size,dtype", [(1, None, torch.float32), (2, 16, torch.float32),
                                                     (3, None, torch.float64)])
def test_points_on_the_batch_axis_match_the_naive_loop(n_dirs, batch_size, dtype):
    """Token inputs, a bias-free and a frozen layer, several batches (their values weighted by their
    share) and float64: each point of a stacked pass equals the naive loop (one point at a time,
    batches of 5), and the model's modules and weights are its own again afterwards."""
    torch.manual_seed(n_dirs)
    model = Tokens().to(dtype).eval()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _data((7, 6), n=45, seed=n_dirs)
    data = (x.to(dtype), y)
    dirs = [{k: v.to(dtype) for k, v in dd.items()} for dd in trainable_dirs(model, n_dirs, seed=n_dirs)]
    d = as_directions(model, dirs)
    ev = Evaluator(model, data, d.vectors, d.layout, settings=EvalSettings(points_per_pass=6, batch_size=batch_size))
    coords = np.random.default_rng(n_dirs).uniform(-1.5, 1.5, (20, n_dirs))
    got = np.concatenate([ev.evaluate(coords[:13]), ev.evaluate(coords[13:])])
    assert ev._stacked_on_batch_axis and "stacked_passes" not in ev.notes
    assert len(ev.batches) == (1 if batch_size is None else 3)
    want = np.array([naive(model, data, dirs, c) for c in coords])
    np.testing.assert_allclose(got, want, rtol=1e-9 if dtype == torch.float64 else 1e-5, atol=1e-6)
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_a_loss_vmap_cannot_run_stacks_on_the_batch_axis(stacking_tried):
    """A loss calling ``.item()`` (which vmap refuses) runs per point on the batch axis's outputs: no
    fall-back to one point a pass, every value the naive loop's."""
    def item_loss(out, y):
        return nn.functional.cross_entropy(out, y) * (1.0 + 0.0 * out.abs().max().item())

    model = FlatMLP().eval()
    data = _data((3, 16), n=30, seed=4)
    dirs = dirs_for(model, 2, seed=4)
    d = as_directions(model, dirs)
    ev = Evaluator(model, data, d.vectors, d.layout, loss_fn=item_loss, metrics=None,
                   settings=EvalSettings(points_per_pass=5))
    coords = np.random.default_rng(4).uniform(-1, 1, (12, 2))
    got = ev.evaluate(coords)
    assert ev._stacked_on_batch_axis and ev.points_per_pass == 5 and not ev.notes.get("points_per_pass")
    np.testing.assert_allclose(got[:, 0], [naive(model, data, dirs, c)[0] for c in coords], rtol=1e-5, atol=1e-6)


class BatchStatistics(nn.Module):
    """Centres the hidden features over the batch: each sample's output depends on the others, so the
    points' samples must not share a batch."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(48, 32), nn.Linear(32, 4)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc2(h - h.mean(0, keepdim=True))


class WeightReadTwice(nn.Module):
    """Applies ``proj`` as a layer and then its weight directly, outside the layer."""

    def __init__(self):
        super().__init__()
        self.fc1, self.proj, self.fc2 = nn.Linear(48, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        h = torch.relu(self.proj(torch.relu(self.fc1(x))))
        return self.fc2(nn.functional.linear(h, self.proj.weight))


class CausalMean(nn.Module):
    """The batch as a time axis: each sample minus the running mean of those before it."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(48, 32), nn.Linear(32, 4)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        steps = torch.arange(1, len(h) + 1, dtype=h.dtype)[:, None]
        return self.fc2(h - h.cumsum(0) / steps)


class PositionTable(nn.Module):
    """Adds a learned-free table row by the sample's position in the batch."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(48, 32), nn.Linear(32, 4)
        self.register_buffer("pos", torch.linspace(-1, 1, 4096)[:, None].expand(4096, 32).clone())

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)) + self.pos[:len(x)])


class WeightScale(nn.Module):
    """Divides by the largest weight of its head, read outside the layer: a reduction that runs on a
    stacked weight of any shape (the largest over every point of a pass)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.head = nn.Linear(48, 32), nn.Linear(32, 4)

    def forward(self, x):
        return self.head(torch.relu(self.fc1(x))) / self.head.weight.abs().max()


class Chunked(nn.Module):
    """Runs its layers on chunks of 32 samples (memory-saving inference): per sample, yet a layer never
    sees the whole stacked batch."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x):
        return torch.cat([self.net(c) for c in (x * 2.0).split(32)])


class ClampedWeightScale(nn.Module):
    """Divides by the head's largest weight clamped from below: at most points the clamp hides which
    point's weights were read, so comparing points cannot tell (a trial found 19 % errors)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.head = nn.Linear(48, 32), nn.Linear(32, 4)

    def forward(self, x):
        return self.head(torch.relu(self.fc1(x))) / self.head.weight.abs().max().clamp(min=0.25)


class ActivationGuard(nn.Module):
    """Rescales the hidden layer when its largest activation passes 3: per sample at the centre (no
    sample gets there), a function of the whole batch farther out."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(48, 32), nn.Linear(32, 4)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        if h.abs().max() > 3:
            h = h * (3 / h.abs().max())
        return self.fc2(h)


@pytest.mark.parametrize("make,why", [
    (ClampedWeightScale, "vmap: points on the batch axis failed (ValueError: abs() read a stacked weight"),
    (ActivationGuard, "vmap: points on the batch axis failed (ValueError: max() over the batch axis or over"),
    (BatchStatistics, "vmap: a sample's outputs depend on the rest of its batch"),
    (CausalMean, "vmap: a sample's outputs depend on the rest of its batch"),
    (PositionTable, "vmap: a sample's outputs depend on the rest of its batch"),
    (WeightReadTwice, "vmap: points on the batch axis failed (ValueError: linear() read a stacked weight outside"),
    (WeightScale, "vmap: points on the batch axis failed (ValueError: abs() read a stacked weight outside its layer"),
    (Chunked, "vmap: points on the batch axis failed (ValueError: split() on a batch tensor (not known to act"),
], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_a_model_the_batch_axis_gets_wrong_falls_back_to_vmap_and_says_why(make, why):
    """A model whose samples' outputs depend on the rest of the batch (found before any pass: a batch's
    outputs are not its halves', or not each copy's when repeated), one that reads a layer's weight
    outside the layer (it fails on the stacked weight's shape, or every point of the first pass is
    compared with one point alone), or one that splits the batch (a layer sees other rows than the
    pass's) stacks under vmap instead, the reason in the notes; every value is the model's own at that
    point, the whole set in one batch (the naive loop written here)."""
    torch.manual_seed(5)
    model = make().eval()
    data = _data((48,), n=40, seed=5)
    dirs = dirs_for(model, 2, seed=5)
    d = as_directions(model, dirs)
    ev = Evaluator(model, data, d.vectors, d.layout, settings=EvalSettings(points_per_pass=4))
    coords = np.random.default_rng(5).uniform(-1.5, 1.5, (10, 2))
    got = ev.evaluate(coords)
    assert not ev._stacked_on_batch_axis and ev.points_per_pass in ((1, 4) if make is ActivationGuard else (4,))
    assert ev.notes["stacked_passes"].startswith(why), ev.notes["stacked_passes"]
    want = []
    for c in coords:
        with torch.no_grad():
            out = moved(model, dirs, c)(data[0])
        want.append([float(nn.functional.cross_entropy(out, data[1])), float((out.argmax(1) == data[1]).float().mean())])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def moved(model, dirs, c):
    """A copy of ``model`` at w + Σ c_k d_k (the naive way: its parameters moved by hand)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.add_(sum(float(ck) * dd[name] for ck, dd in zip(c, dirs)))
    return m


def test_a_pass_whose_repeated_inputs_would_not_be_kept_runs_under_vmap(monkeypatch):
    """Repeated inputs are kept for the next pass up to ``REPEATS_KEPT_BYTES`` in all (a smaller budget
    here): a pass that would copy them anew each time (a wide input) runs under vmap, a smaller one on
    the batch axis, and the values are the naive loop's either way."""
    from landscape_nb import multipoint

    monkeypatch.setattr(multipoint, "REPEATS_KEPT_BYTES", 5 * 40 * 48 * 4)  # 5 copies of the 40 x 48 inputs
    model = CASES[0][1]().eval()
    data = _data((48,), n=40, seed=6)
    dirs = dirs_for(model, 2, seed=6)
    d = as_directions(model, dirs)
    ev = Evaluator(model, data, d.vectors, d.layout, settings=EvalSettings(points_per_pass=8))
    coords = np.random.default_rng(6).uniform(-1, 1, (16, 2))
    got = [ev.evaluate(coords[:8])]
    assert not ev._stacked_on_batch_axis and ev._batch_axis  # 8 copies: vmap, the batch axis still on
    ev.points_per_pass = 4
    got.append(ev.evaluate(coords[8:]))
    assert ev._stacked_on_batch_axis and ev._batch_axis._kept_bytes <= multipoint.REPEATS_KEPT_BYTES
    np.testing.assert_allclose(np.concatenate(got), [naive(model, data, dirs, c) for c in coords], rtol=1e-5, atol=1e-6)


def test_a_loss_reading_the_weights_is_not_given_every_points_weights():
    """A loss with a penalty on the model's weights (read from ``model.parameters()``) is refused on the
    batch axis, where the module tensors hold every point's weights, and runs under vmap: each value is
    the loss at its own point (the naive loop here)."""
    torch.manual_seed(7)
    model = CASES[0][1]().eval()
    data = _data((48,), n=40, seed=7)

    def penalised(out, y):
        return nn.functional.cross_entropy(out, y) + 0.1 * max(p.abs().max() for p in model.parameters())

    dirs = dirs_for(model, 2, seed=7)
    d = as_directions(model, dirs)
    ev = Evaluator(model, data, d.vectors, d.layout, loss_fn=penalised, metrics=None,
                   settings=EvalSettings(points_per_pass=4))
    coords = np.random.default_rng(7).uniform(-1.5, 1.5, (10, 2))
    got = ev.evaluate(coords)[:, 0]
    assert "read a stacked weight outside its layer" in ev.notes["stacked_passes"]
    want = []
    for c in coords:
        m = moved(model, dirs, c)
        with torch.no_grad():
            want.append(float(nn.functional.cross_entropy(m(data[0]), data[1])
                              + 0.1 * max(p.abs().max() for p in m.parameters())))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


class MaybeWeightScale(nn.Module):
    """An MLP that, with ``scale`` set (an attribute its ``repr`` does not show), divides by its head's largest
    weight, read outside the layer: the same structure to a remembered points-per-pass choice."""

    def __init__(self, scale: bool = False):
        super().__init__()
        self.fc1, self.head = nn.Linear(48, 32), nn.Linear(32, 4)
        self.scale = scale

    def forward(self, x):
        out = self.head(torch.relu(self.fc1(x)))
        return out / self.head.weight.abs().max() if self.scale else out


def test_a_later_evaluator_of_the_same_model_and_data_starts_from_the_trials_choice_and_still_checks_it(monkeypatch):
    """A finished points-per-pass trial is remembered for the same model structure, data shapes and settings
    (``tuning.CHOSEN``): a later evaluator runs no trial, says so in its notes and the surface's provenance,
    and still compares its first stacked pass with single points, so a model of the same structure that
    reads a stacked weight outside its layer falls back to vmap with the naive loop's values. Other data
    shapes run their own trial."""
    from landscape_nb import tuning

    def seconds(self, fn, reps=2):  # every pass "takes" 1 ms: the largest candidate wins, deterministically
        fn()
        return 1e-3

    monkeypatch.setattr(tuning.SpeedChoices, "_seconds", seconds)
    monkeypatch.setattr(tuning, "STACK_CPU_MAX_SECONDS", float("inf"))
    data = _data((48,), n=40, seed=7)
    rng = np.random.default_rng(7)

    def run(model, coords, data=data):
        dirs = dirs_for(model, 2, seed=7)
        d = as_directions(model, dirs)
        ev = Evaluator(model, data, d.vectors, d.layout)
        got = np.concatenate([ev.evaluate(coords[i:i + 40]) for i in range(0, len(coords), 40)])
        want = []
        for c in coords:
            with torch.no_grad():
                out = moved(model, dirs, c)(data[0])
            want.append([float(nn.functional.cross_entropy(out, data[1])),
                         float((out.argmax(1) == data[1]).float().mean())])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        return ev

    torch.manual_seed(7)
    first = run(MaybeWeightScale().eval(), rng.uniform(-1, 1, (160, 2)))
    assert first._stack_times and first.points_per_pass == max(first._stack_times) > 1
    assert "earlier surface" not in first.notes.get("points_per_pass", "")
    assert list(tuning.CHOSEN.values()) == [first.points_per_pass]

    later = run(MaybeWeightScale().eval(), rng.uniform(-1, 1, (80, 2)))  # other weights, same structure
    assert later.points_per_pass == first.points_per_pass and not later._stack_times
    assert later._stacked_on_batch_axis and "earlier surface" in later.notes["points_per_pass"]

    reading = run(MaybeWeightScale(scale=True).eval(), rng.uniform(-1.5, 1.5, (80, 2)))
    assert reading.points_per_pass == first.points_per_pass and not reading._stack_times
    assert reading.notes["stacked_passes"].startswith("vmap: points on the batch axis failed (ValueError: abs() read")

    other = run(MaybeWeightScale().eval(), rng.uniform(-1, 1, (160, 2)), data=_data((48,), n=41, seed=8))
    assert other._stack_times and "earlier surface" not in other.notes.get("points_per_pass", "")

    model = MaybeWeightScale().eval()
    surf = lnb.compute_surface(model, data, as_directions(model, dirs_for(model, 2, seed=9)), x=(-1, 1, 5), y=(-1, 1, 5))
    assert surf.provenance["points_per_pass"] == first.points_per_pass
    assert "earlier surface" in surf.provenance["data"]["points_per_pass"]


class WeightByReference(nn.Module):
    """Scales its logits by the norm of its head's weight, read through a dict built in ``__init__``: neither a
    batch-axis pass nor ``vmap`` swaps that reference, so a stacked pass computes every point at the weights the
    model holds, a small error (here up to 2e-4 relative) that grows with the distance from them."""

    def __init__(self, c: float):
        super().__init__()
        self.fc1, self.head = nn.Linear(48, 32), nn.Linear(32, 4)
        self.c = c
        self.refs = {"w": self.head.weight}

    def forward(self, x):
        return self.head(torch.relu(self.fc1(x))) * (1 + self.c * self.refs["w"].norm())


def test_a_term_that_vanishes_near_the_weights_held_is_caught_by_the_first_pass():
    """Re-trial s43: ``(1 + c ‖w - w0‖⁴)`` with ``w`` read through a dict, on the 1797 digits sorted by label,
    ``points_per_pass=8``: the first vmap pass ran near the weights then held, where the term is ~0, passed its
    check, and the later passes of 8 (never checked again) left 175 of 441 points up to 1.7e-4 off, with no
    word. The first pass of each path now runs with the weights held far from its points, so its check sees the
    term, and every point is the naive loop's."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.argsort(y, kind="stable")
    x, y = torch.tensor(x[order] / 16.0, dtype=torch.float32), torch.tensor(y[order])

    class Drift(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)
            self.refs = {"w": self.fc2.weight}
            self.register_buffer("w0", self.fc2.weight.detach().clone())

        def forward(self, inputs):
            return self.fc2(torch.relu(self.fc1(inputs))) * (1 + 1e-4 * (self.refs["w"] - self.w0).norm() ** 4)

    torch.manual_seed(0)
    model = Drift().eval()
    d = lnb.random_directions(model, n=2, seed=1)
    surf = lnb.compute_surface(model, (x, y), d, x=(-1, 1, 21), y=(-1, 1, 21), metrics=[], points_per_pass=8)
    dirs = d.as_state_dicts()
    want = []
    for b in surf.y:
        for a in surf.x:
            with torch.no_grad():
                out = moved(model, dirs, (a, b))(x)
            want.append(float(nn.functional.cross_entropy(out, y)))
    np.testing.assert_allclose(surf.loss.reshape(-1), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("points_per_pass", [None, 8])
def test_a_weight_read_through_a_reference_keeps_one_point_a_pass_with_the_naive_loops_values(points_per_pass):
    """The batch axis's check refuses such a model on some pass, and the ``vmap`` passes it falls back to are
    checked as closely (the first, middle, last and farthest points of its first pass, the farthest of each
    larger one, 1e-5): one vmap pass checked at one point to 1e-4 let a 21x21 plane through 1.3e-3 off (trial
    s43). Every value is the naive loop's, and the provenance says why one point a pass runs."""
    torch.manual_seed(11)
    model = WeightByReference(c=1e-4).eval()
    data = _data((48,), n=60, seed=11)
    dirs = dirs_for(model, 2, seed=11)
    d = as_directions(model, dirs)
    surf = lnb.compute_surface(model, data, d, x=(-1, 1, 15), y=(-1, 1, 15), points_per_pass=points_per_pass)
    want = []
    for b in surf.y:
        for a in surf.x:
            with torch.no_grad():
                out = moved(model, dirs, (a, b))(data[0])
            want.append(float(nn.functional.cross_entropy(out, data[1])))
    np.testing.assert_allclose(surf.loss.reshape(-1), want, rtol=1e-5, atol=1e-7)
    assert surf.provenance["points_per_pass"] == 1
    assert "differ from one point's" in surf.provenance["data"]["points_per_pass"]


def test_a_weight_normed_model_stacked_under_vmap_matches_the_naive_loop_without_torchs_warning(no_batch_axis):
    """A model with ``parametrizations.weight_norm`` printed torch's "There is a performance drop because we have
    not yet implemented the batching rule for aten::_weight_norm. Please file us an issue on GitHub..." six times
    a surface (trial s60): vmap loops over the points for that op, which the tuning's timing measures. Not shown;
    every point still equals the naive loop."""
    import warnings

    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    model = nn.Sequential(weight_norm(nn.Linear(6, 8)), nn.Tanh(), weight_norm(nn.Linear(8, 4))).eval()
    data = _data((6,), n=40, seed=1)
    dirs = dirs_for(model, 2, seed=2)
    d = as_directions(model, dirs)
    ev = Evaluator(model, data, d.vectors, d.layout, settings=EvalSettings(points_per_pass=4))
    coords = np.random.default_rng(3).uniform(-1, 1, (9, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = ev.evaluate(coords)
    assert ev.points_per_pass == 4 and not ev._stacked_on_batch_axis
    assert not [w for w in caught if "performance drop" in str(w.message)], [str(w.message) for w in caught]
    want = np.array([naive(model, data, dirs, c) for c in coords])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
