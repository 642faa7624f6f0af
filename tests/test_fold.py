"""BatchNorm folding: the folded view equals the eval-mode model, follows in-place changes,
and the evaluator falls back to the model whenever folding does not apply."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

import landscape_nb as lnb
from conftest import naive_loss, random_dict_dirs
from landscape_nb.evaluate import EvalSettings, Evaluator
from landscape_nb.fold import FoldedConvBN, fold_batchnorm


class Mixed(nn.Module):
    """Conv1d/2d/3d with and without bias, affine and non-affine BN, a conv used twice (once
    without BN after it), a conv whose output also feeds a skip, BN without running stats."""

    def __init__(self):
        super().__init__()
        self.c2 = nn.Conv2d(2, 5, 3, padding=1, bias=True)
        self.b2 = nn.BatchNorm2d(5)
        self.c2b = nn.Conv2d(5, 5, 3, padding=1, padding_mode="reflect", bias=False)
        self.b2b = nn.BatchNorm2d(5, affine=False)
        self.shared = nn.Conv2d(5, 5, 1)
        self.b_shared = nn.BatchNorm2d(5)
        self.skip_conv = nn.Conv2d(5, 5, 1)
        self.b_skip = nn.BatchNorm2d(5)
        self.no_stats = nn.BatchNorm2d(5, track_running_stats=False)
        self.c1 = nn.Conv1d(5, 4, 3, stride=2)
        self.b1 = nn.BatchNorm1d(4)
        self.c3 = nn.Conv3d(1, 3, 2)
        self.b3 = nn.BatchNorm3d(3)
        self.head = nn.Linear(4 * 3 + 3 * 4 * 7 * 15, 3)

    def forward(self, x):
        h = torch.relu(self.b2(self.c2(x)))
        h = torch.relu(self.b2b(self.c2b(h)))
        h = self.b_shared(self.shared(h)) + self.shared(h)  # second call site has no BN
        s = self.skip_conv(h)
        h = self.b_skip(s) + s  # s feeds two users: not foldable
        h = self.no_stats(h)
        a = self.b1(self.c1(h.mean(-1)))
        b = self.b3(self.c3(h[:, :1, None].expand(-1, -1, 5, -1, -1)))
        return self.head(torch.cat([a.flatten(1), b.flatten(1)], 1))


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                if m.affine:
                    m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return model.eval()


@pytest.fixture
def mixed():
    torch.manual_seed(0)
    return _randomize_bn(Mixed())


@pytest.fixture
def mixed_x():
    return torch.randn(11, 2, 8, 16, generator=torch.Generator().manual_seed(3))


def test_folded_view_equals_eval_model_and_folds_only_safe_pairs(mixed, mixed_x):
    folded, note = fold_batchnorm(mixed)
    kinds = sorted((type(m.conv).__name__, type(m.bn).__name__) for m in folded.modules() if isinstance(m, FoldedConvBN))
    # c2/b2, c2b/b2b (non-affine), shared/b_shared (that call site), c1/b1, c3/b3; not skip_conv, not no_stats
    assert kinds == sorted([("Conv2d", "BatchNorm2d")] * 3 + [("Conv1d", "BatchNorm1d"), ("Conv3d", "BatchNorm3d")])
    assert note == "folded 5 conv→BatchNorm pairs"
    with torch.no_grad():
        np.testing.assert_allclose(folded(mixed_x).numpy(), mixed(mixed_x).numpy(), rtol=1e-5, atol=1e-6)


def test_folded_view_shares_weights_and_follows_in_place_changes(mixed, mixed_x):
    folded, _ = fold_batchnorm(mixed)
    reference = copy.deepcopy(mixed)
    with torch.no_grad():
        folded(mixed_x)  # fills the fold caches
        for p, q in zip(mixed.parameters(), reference.parameters()):
            delta = 0.3 * torch.randn_like(p)
            p.add_(delta)
            q.add_(delta)
        mixed.b2.running_var.mul_(2.0)
        reference.b2.running_var.mul_(2.0)
        want = reference(mixed_x).numpy()
        np.testing.assert_allclose(folded(mixed_x).numpy(), want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    assert set(map(id, folded.parameters())) <= set(map(id, mixed.parameters()))


def test_folded_view_is_differentiable_like_the_model(mixed, mixed_x):
    folded, _ = fold_batchnorm(mixed)
    g_folded = torch.autograd.grad(folded(mixed_x).square().sum(), mixed.c2.weight)[0]
    g_model = torch.autograd.grad(mixed(mixed_x).square().sum(), mixed.c2.weight)[0]
    np.testing.assert_allclose(g_folded.numpy(), g_model.numpy(), rtol=1e-4, atol=1e-5)


def test_untraceable_and_bn_free_models_are_returned_as_they_are(mixed_x):
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return self.bn(self.conv(x))
            return self.conv(x)

    m = Branchy().eval()
    folded, note = fold_batchnorm(m)
    assert folded is m and note.startswith("not folded: torch.fx could not trace")
    plain = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU())
    assert fold_batchnorm(plain) == (plain, "no BatchNorm")


def test_folding_leaves_no_attribute_on_the_model_for_a_tensor_constant_of_the_trace(cnn, cnn_data):
    """torch.fx stored a tensor computed from a plain attribute while tracing on the model, as
    _tensor_constant0 (one more at each computation; a reused set-up then never matched the model)."""
    class Biased(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.shift = inner, torch.tensor([0.5, -0.5, 0.0, 9.0])  # a plain attribute, no buffer

        def forward(self, x):
            return self.inner(x) + self.shift[:3]  # sliced while tracing: a tensor constant of the trace

    m = Biased(cnn).eval()
    before = set(vars(m))
    folded, note = fold_batchnorm(m)
    assert note == "folded 1 conv→BatchNorm pairs" and set(vars(m)) == before
    x = cnn_data[0]
    torch.testing.assert_close(folded(x), m(x), rtol=1e-5, atol=1e-6)
    m.shift.mul_(3.0)  # the folded view reads the same tensor
    torch.testing.assert_close(folded(x), m(x), rtol=1e-5, atol=1e-6)


def test_models_with_forward_hooks_are_not_folded(cnn, cnn_data):
    """torch.nn.utils.prune rebuilds conv.weight from weight_orig in a pre-hook: a folded view
    would read a stale weight once weight_orig is perturbed."""
    from torch.nn.utils import prune

    prune.l1_unstructured(cnn.conv, "weight", amount=0.5)
    with torch.no_grad():  # conv.weight as after any no-grad forward (prune's own is a non-leaf, not deep-copyable)
        cnn(cnn_data[0])
    assert fold_batchnorm(cnn)[1] == "not folded: the model has forward hooks"
    dirs = random_dict_dirs(cnn, 1, seed=2)
    surf = lnb.compute_surface(cnn, cnn_data, lnb.as_directions(cnn, dirs), x=(-1, 1, 3))
    assert surf.provenance["bn_fold"] == "not folded: the model has forward hooks"
    for i, a in enumerate(surf.x):
        np.testing.assert_allclose(surf.loss[i], naive_loss(cnn, cnn_data, dirs, [a])[0], rtol=1e-5)


def test_model_branching_on_training_is_traced_in_eval_mode(cnn_data):
    class TrainBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.fc = nn.Linear(4 * 8 * 8, 3)

        def forward(self, x):
            h = self.bn(self.conv(x))
            if self.training:  # baked in at trace time
                h = h * 0.0
            return self.fc(h.flatten(1))

    torch.manual_seed(0)
    m = _randomize_bn(TrainBranch()).train()  # left in train mode by the user
    d = random_dict_dirs(m, 1, seed=0)
    directions = lnb.as_directions(m, [d[0]])
    ev = Evaluator(m, cnn_data, directions.vectors, directions.layout)
    assert ev.bn_fold == "folded 1 conv→BatchNorm pairs"
    got = ev.evaluate(np.array([[0.0], [0.5]]))[:, 0]
    want = [naive_loss(m, cnn_data, d, [c])[0] for c in (0.0, 0.5)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert m.training  # the user's mode is restored


def test_evaluator_falls_back_when_the_fold_disagrees(cnn, cnn_data, monkeypatch):
    import landscape_nb.fold as fold

    def wrong(model):
        broken = copy.deepcopy(model)
        with torch.no_grad():
            broken.fc.bias.add_(1.0)
        return broken, "folded 1 conv→BatchNorm pairs"

    monkeypatch.setattr(fold, "fold_batchnorm", wrong)
    d = lnb.random_directions(cnn, n=1, seed=0)
    ev = Evaluator(cnn, cnn_data, d.vectors, d.layout)
    assert ev.bn_fold == "not folded: the folded model disagreed with the model"
    assert ev.forward is cnn


def test_surface_with_folding_equals_naive_loop_and_records_it(cnn, cnn_data):
    dirs = random_dict_dirs(cnn, 2, seed=4)
    d = lnb.as_directions(cnn, dirs)
    surf = lnb.compute_surface(cnn, cnn_data, d, x=(-1, 1, 4), y=(-0.5, 1, 3), tile=(2, 3))
    assert surf.provenance["bn_fold"] == "folded 1 conv→BatchNorm pairs"
    for j, b in enumerate(surf.y):
        for i, a in enumerate(surf.x):
            np.testing.assert_allclose(surf.loss[j, i], naive_loss(cnn, cnn_data, dirs, [a, b])[0], rtol=1e-5)
    off = lnb.compute_surface(cnn, cnn_data, d, x=(-1, 1, 4), y=(-0.5, 1, 3), fold_bn=False)
    assert off.provenance["bn_fold"] == "off"
    assert off.spec == surf.spec  # a rounding-level choice: the same store resumes either way


def test_bn_recompute_mode_never_folds(cnn, cnn_data):
    d = lnb.random_directions(cnn, n=1, seed=0)
    ev = Evaluator(cnn, cnn_data, d.vectors, d.layout, settings=EvalSettings(mode="bn-recompute"))
    assert ev.bn_fold == "off" and ev.forward is cnn


def test_fold_follows_weight_only_then_bn_only_changes(mixed, mixed_x):
    """The BN part of a fold is cached apart from the weight: a change of the conv weights alone, then
    of one BN tensor alone, is each seen at once (against a copy of the model in eval mode)."""
    folded, _ = fold_batchnorm(mixed)
    reference = copy.deepcopy(mixed)
    convs = [(n, m) for n, m in mixed.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        folded(mixed_x)
        for step in ("weights", "bn"):
            if step == "weights":
                for name, conv in convs:
                    delta = 0.3 * torch.randn_like(conv.weight)
                    conv.weight.add_(delta)
                    reference.get_submodule(name).weight.add_(delta)
            else:
                mixed.b2.weight.mul_(1.7)
                reference.b2.weight.mul_(1.7)
            want = reference(mixed_x).numpy()
            np.testing.assert_allclose(folded(mixed_x).numpy(), want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_tensors_no_direction_moves_are_never_written():
    """Biases and BN parameters that ``ignore="biasbn"`` zeroes keep their version counters (so folds
    stay cached) and their values, while the surface still equals the naive loop."""
    from landscape_nb.params import Perturber

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 5 * 5, 3)).eval()
    d = lnb.random_directions(model, n=2, seed=1)  # ignore="biasbn": 1-D tensors zeroed
    copy_ = copy.deepcopy(model)
    p = Perturber(copy_, d.layout, d.vectors)
    versions = {n: t._version for n, t in copy_.named_parameters()}
    p.set(torch.tensor([0.5, -0.25]))
    moved = {n for n, t in copy_.named_parameters() if t._version != versions[n]}
    assert moved == {n for n, t in copy_.named_parameters() if t.ndim > 1}
    x, y = torch.randn(20, 1, 5, 5), torch.randint(0, 3, (20,))
    surf = lnb.compute_surface(model, (x, y), d, x=(-1, 1, 3), y=(-1, 1, 3))
    dirs = d.as_state_dicts()
    for j, b in enumerate(surf.y):
        for i, a in enumerate(surf.x):
            np.testing.assert_allclose(surf.loss[j, i], naive_loss(model, (x, y), dirs, [a, b])[0], rtol=1e-5)
