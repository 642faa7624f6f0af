import copy
import hashlib
import json
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import landscape_nb as lnb
from landscape_nb import LandscapeError
from landscape_nb.evaluate import EvalSettings
from landscape_nb.store import SurfaceStore

from conftest import TinyCNN, assert_bit_identical, make_mlp, naive_loss, random_dict_dirs, state_copy


def _check_against_naive(model, data, dirs, surf, loss_fn=None, metric=True, rtol=1e-5):
    if surf.y is None:
        for i, a in enumerate(surf.x):
            loss, acc = naive_loss(model, data, dirs, [a], loss_fn, metric)
            np.testing.assert_allclose(surf.loss[i], loss, rtol=rtol)
            if metric:
                np.testing.assert_allclose(surf.metrics["accuracy"][i], acc, rtol=1e-6)
        return
    for j, b in enumerate(surf.y):
        for i, a in enumerate(surf.x):
            loss, acc = naive_loss(model, data, dirs, [a, b], loss_fn, metric)
            np.testing.assert_allclose(surf.loss[j, i], loss, rtol=rtol, err_msg=f"at x[{i}], y[{j}]")
            if metric:
                np.testing.assert_allclose(surf.metrics["accuracy"][j, i], acc, rtol=1e-6)


@pytest.mark.parametrize("x, y, tile", [
    ((-1, 1, 9), None, 2),             # 1D, odd tiles
    ((-1, 1, 5), (-1, 1, 5), None),    # square
    ((-0.5, 1.5, 7), (-2, 0.3, 4), (3, 2)),  # non-square, ranges not centred, odd tiles
    ((-1, 1, 3), (-1, 1, 6), (4, 5)),  # tile larger than an axis
])
def test_surface_equals_naive_loop(mlp, mlp_data, x, y, tile):
    dirs = random_dict_dirs(mlp, 1 if y is None else 2)
    surf = lnb.compute_surface(mlp, mlp_data, dirs, x=x, y=y, tile=tile)
    assert surf.loss.shape == ((x[2],) if y is None else (y[2], x[2]))
    np.testing.assert_allclose(surf.x, np.linspace(*x))
    _check_against_naive(mlp, mlp_data, dirs, surf)


def test_loss_index_is_y_row_x_column(mlp, mlp_data):
    """Directions with very different effects: loss[j, i] must be at (x[i], y[j])."""
    dirs = random_dict_dirs(mlp, 2)
    dirs[1] = {k: 1e-9 * v for k, v in dirs[1].items()}  # y does next to nothing (a zero direction is refused)
    surf = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 5), y=(-1, 1, 3))
    assert np.allclose(surf.loss[0], surf.loss[2])            # rows equal: y has no visible effect
    assert not np.allclose(surf.loss[:, 0], surf.loss[:, 4])  # columns differ along x


def test_cnn_with_bn_in_eval_mode_and_random_filter_directions(cnn, cnn_data):
    d = lnb.random_directions(cnn, n=2, seed=1)
    surf = lnb.compute_surface(cnn, cnn_data, d, x=(-1, 1, 4), y=(-1, 1, 3), tile=(2, 3))
    _check_against_naive(cnn, cnn_data, d.as_state_dicts(), surf)
    assert not cnn.training


def test_custom_loss_and_data_forms(mlp, mlp_data):
    from torch.utils.data import DataLoader, TensorDataset

    dirs = random_dict_dirs(mlp, 1)
    mse = lambda out, t: ((out.softmax(1) - nn.functional.one_hot(t, 3).float()) ** 2).sum(1).mean()  # noqa: E731
    ref = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 4), loss_fn=mse)
    _check_against_naive(mlp, mlp_data, dirs, ref, loss_fn=mse)
    ds = TensorDataset(*mlp_data)
    for data in (ds, DataLoader(ds, batch_size=10), lambda: mlp_data, list(zip(*mlp_data)) and ds):
        s = lnb.compute_surface(mlp, data, dirs, x=(-1, 1, 4), loss_fn=mse)
        np.testing.assert_allclose(s.loss, ref.loss, rtol=1e-6)


def test_max_samples_is_a_fixed_seed_subset(mlp, mlp_data):
    dirs = random_dict_dirs(mlp, 1)
    s = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 3), max_samples=30, subset_seed=4)
    idx = torch.randperm(97, generator=torch.Generator().manual_seed(4))[:30].sort().values
    _check_against_naive(mlp, (mlp_data[0][idx], mlp_data[1][idx]), dirs, s)


def test_bn_recompute_matches_naive_train_mode_statistics(cnn, cnn_data):
    dirs = random_dict_dirs(cnn, 1, scale=0.2)
    s = lnb.compute_surface(cnn, cnn_data, dirs, x=(-1, 1, 3), mode="bn-recompute", batch_size=40)
    import copy
    for i, a in enumerate(s.x):
        m = copy.deepcopy(cnn)
        with torch.no_grad():
            for name, p in m.named_parameters():
                p.add_(a * dirs[0][name])
            # BN stats over the whole set = batch statistics of one full batch (biased var aside)
            m.bn.reset_running_stats(); m.bn.momentum = None; m.train(); m(cnn_data[0]); m.eval()
            ref = float(nn.functional.cross_entropy(m(cnn_data[0]), cnn_data[1]))
        np.testing.assert_allclose(s.loss[i], ref, rtol=1e-5)
    assert cnn.bn.momentum == 0.1


class _Log(nn.Module):
    def forward(self, x):
        return torch.log(x)


def test_nan_and_inf_losses_are_stored_not_raised(mlp, mlp_data):
    """A loss that diverges is a value, stored as such (NaN data are refused up front instead:
    tests/test_bad_input.py)."""
    dirs = random_dict_dirs(mlp, 1)
    nan_loss = lambda out, t: torch.nn.functional.cross_entropy(out, t) * float("nan")  # noqa: E731
    # NaN at the model itself: the loss or the data, which no range mends; said by the CLI and the Explorer, and
    # in Python only as "3 of 3 points diverged" on the figure (trial s39: a sample all padding gave NaN)
    with pytest.warns(UserWarning, match=r"compute_surface: the loss is NaN or inf at the model itself \(0 on "
                      r"every axis\), so the model's weights, the loss function or the data give it.*diverged \(NaN or inf\) at 3 of 3"):
        s = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 3), loss_fn=nan_loss)
    assert np.isnan(s.loss).all() and s.is_complete
    note = next(a.text for a in lnb.plot.line(s).layout.annotations if a.name == "partial")
    assert note == "3 of 3 points diverged (loss NaN or inf), the model itself among them: its weights, the loss or the data give it"
    inf_loss = lambda out, t: torch.nn.functional.cross_entropy(out, t) / 0.0  # noqa: E731
    with pytest.warns(UserWarning, match="at the model itself"):
        assert np.isinf(lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 3), loss_fn=inf_loss).loss).all()
    with pytest.warns(UserWarning, match=r"NaN or inf at every one of the 4 points computed \(the grid holds no "
                      r"point at the model itself"):  # re-trial s39: a grid without 0 said nothing
        lnb.compute_surface(mlp, mlp_data, dirs, x=(0.5, 1, 4), loss_fn=nan_loss)
    x, t = mlp_data
    log_model = nn.Sequential(_Log(), nn.Linear(6, 3))  # NaN logits for a sample with a negative feature
    split = {"train": (x.abs(), t), "test": (x.abs(), t)}
    split["test"][0][0, 0] = -1.0
    with pytest.warns(UserWarning, match=r"split 'test': the loss is NaN or inf at the model itself"):
        s = lnb.compute_surface(log_model, split, lnb.random_directions(log_model, n=1), x=(-1, 1, 3))
    assert np.isnan(s.metrics["test_loss"]).all() and np.isfinite(s.metrics["train_loss"]).all()
    far = lambda out, t: torch.nn.functional.cross_entropy(out, t) / (out.abs().max() < 1e3)
    with warnings.catch_warnings():  # diverged away from the model only: the figure's gaps say it, no warning
        warnings.simplefilter("error", UserWarning)
        s = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1e6, 1e6, 3), loss_fn=far)
    assert np.isinf(s.loss[[0, 2]]).all() and np.isfinite(s.loss[1])


class _Overflowing(nn.Module):
    """Outputs times exp(200·s): inf at s = 0.5 (the model itself), finite where a step lowers s."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 3)
        self.s = nn.Parameter(torch.full((1,), 0.5))

    def forward(self, x):
        return self.lin(x) * torch.exp(200 * self.s)


def test_a_model_whose_outputs_are_inf_at_itself_is_computed_with_a_warning_not_refused(mlp_data):
    """Trial s55: a model whose outputs are inf at its own weights was refused as one whose "outputs do not depend
    on its weights" (inf stays inf 1 % away), where a NaN one ran with a warning. It runs: inf where the model
    overflows, each finite point as the naive loop gives it, and the warning names the model's weights too."""
    torch.manual_seed(0)
    model = _Overflowing()
    x = mlp_data[0]
    y = torch.randn(len(x), 3)
    step = {name: 0.1 * torch.randn_like(p) for name, p in model.named_parameters()}
    step["s"] = torch.tensor([-0.5])  # s from 1 down to 0 along x: finite for x > 0.12
    d = lnb.as_directions(model, [step])
    with pytest.warns(UserWarning, match=r"NaN or inf at the model itself \(0 on every axis\), so the model's "
                                         r"weights, the loss function or the data give it"):
        surf = lnb.compute_surface(model, (x, y), d, x=(-1, 1, 11), loss_fn=nn.MSELoss())
    naive = []
    for a in np.linspace(-1, 1, 11):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in m.named_parameters():
                p.add_(float(a) * d.as_state_dicts()[0][name])
            naive.append(float(nn.functional.mse_loss(m(x), y)))
    naive = np.array(naive)
    assert np.isinf(surf.loss[5]) and np.isinf(naive[5])
    finite = np.isfinite(naive)
    assert finite.sum() >= 2  # some steps lower s enough
    np.testing.assert_array_equal(np.isfinite(surf.loss), finite)
    np.testing.assert_allclose(surf.loss[finite], naive[finite], rtol=1e-5)

    class Masked(nn.Module):  # ignores its weights; one class masked with -inf beside the finite others
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 3)

        def forward(self, x):
            out = x[:, :3].clone()
            out[:, 2] = float("-inf")
            return out + 0 * self.lin.weight.detach().sum()

    masked = Masked()
    with pytest.raises(LandscapeError, match=r"\(Masked\) gave the very same outputs"):  # still judged on the rest
        lnb.compute_surface(masked, mlp_data, lnb.random_directions(masked, n=1, seed=0), x=(-1, 1, 3))



def test_weights_bit_identical_after_compute(cnn, cnn_data):
    saved = state_copy(cnn)
    lnb.compute_surface(cnn, cnn_data, lnb.random_directions(cnn), x=(-1, 1, 3), y=(-1, 1, 3),
                        mode="bn-recompute")
    assert_bit_identical(cnn, saved)


def test_two_threads_computing_on_one_model_take_turns_and_each_gets_its_own_surface(mlp, mlp_data):
    """A notebook cell's run beside the Explorer's, on one model: each moved the weights under the other,
    which gave wrong values at every point and left the weights moved (trial s35). The second now waits for
    the first, saying so; both equal the naive loop and the weights come back bit-identical."""
    import threading
    import time

    saved = state_copy(mlp)
    planes = [random_dict_dirs(mlp, 2, seed=s, scale=0.3) for s in (0, 1)]
    first_tile, results = threading.Event(), {}

    def run(k, callbacks=()):
        results[k] = lnb.compute_surface(mlp, mlp_data, lnb.as_directions(mlp, planes[k]), x=(-1, 1, 7),
                                         y=(-1, 1, 7), tile=1, callbacks=list(callbacks))

    def slowly(ev):  # the first run lasts at least 49 × 20 ms, so the second starts while it runs
        first_tile.set()
        time.sleep(0.02)

    first = threading.Thread(target=run, args=(0, [slowly]))
    first.start()
    assert first_tile.wait(60)
    with pytest.warns(UserWarning, match="another computation on this Sequential is running in another thread; "
                                         "this one waits"):
        run(1)  # while the first is under way (49 tiles of one point)
    first.join(60)
    for k in (0, 1):
        _check_against_naive(mlp, mlp_data, planes[k], results[k])
    assert_bit_identical(mlp, saved)


def test_weights_bit_identical_when_loss_raises_mid_run(cnn, cnn_data):
    saved = state_copy(cnn)
    calls = {"n": 0}

    def flaky(out, t):
        calls["n"] += 1
        if calls["n"] > 6:  # past validation, in the middle of the grid
            raise RuntimeError("boom")
        return nn.functional.cross_entropy(out, t)

    with pytest.raises(LandscapeError, match="loss_fn .*flaky.* raised RuntimeError: boom") as info:
        lnb.compute_surface(cnn, cnn_data, lnb.random_directions(cnn), x=(-1, 1, 3), y=(-1, 1, 3),
                            loss_fn=flaky)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert_bit_identical(cnn, saved)


class Crash(Exception):
    pass


def test_weights_and_modes_restored_when_a_listener_raises_between_tiles(cnn, cnn_data):
    """In-process, one session spans the tiles; a run abandoned between them still restores."""
    cnn.train()
    cnn.bn.eval()  # a mixed state the user chose
    saved = state_copy(cnn)
    modes = [m.training for m in cnn.modules()]

    def listener(event):
        assert not cnn.training  # evaluated in eval mode, left perturbed between tiles
        assert torch.is_grad_enabled()  # but listeners run with the caller's grad mode
        if event.n_done >= 2:
            raise Crash("listener failed")

    with pytest.raises(Crash):
        lnb.compute_surface(cnn, cnn_data, lnb.random_directions(cnn, n=2), x=(-1, 1, 4), y=(-1, 1, 4), tile=1,
                            callbacks=[listener])
    assert_bit_identical(cnn, saved)
    assert [m.training for m in cnn.modules()] == modes


def test_cancel_returns_partial_surface(mlp, mlp_data):
    import threading
    ev = threading.Event()

    def cb(e):
        if e.n_done >= 6:
            ev.set()
    # 256 points: more than the evaluator asks for in its first calls (small tiles go to it together)
    s = lnb.compute_surface(mlp, mlp_data, random_dict_dirs(mlp, 2), x=(-1, 1, 16), y=(-1, 1, 16), tile=(2, 2),
                            callbacks=[cb], cancel=ev)
    assert 0 < s.n_done < 256 and s.provenance["cancelled"]


def test_a_cancelled_surface_resumes_computing_only_its_missing_points(mlp, mlp_data, tmp_path):
    """resume= keeps a cancelled run's points and computes the rest, with the partial's tiling; the whole equals the
    naive loop. Refused: another spec's surface, the same weights under other module code (an activation swapped),
    a surface edited after it was returned, one loaded from a store, another tiling, a non-surface, with store."""
    import threading

    ev = threading.Event()
    dirs = random_dict_dirs(mlp, 2)
    grid = {"x": (-1, 1, 12), "y": (-1, 1, 10)}
    partial = lnb.compute_surface(mlp, mlp_data, dirs, **grid, tile=(2, 3),
                                  callbacks=[lambda e: e.n_done >= 8 and ev.set()], cancel=ev)
    n_kept = partial.n_done
    assert 0 < n_kept < 120
    full = lnb.compute_surface(mlp, mlp_data, dirs, **grid, resume=partial)  # tiled (2, 3) again: none recomputed
    assert full.is_complete and not full.provenance["cancelled"]
    assert (full.provenance["points_resumed"], full.provenance["points_computed"]) == (n_kept, 120 - n_kept)
    assert f"{n_kept} kept from the surface resumed, {120 - n_kept} computed" in lnb.compute.points_summary(full)
    _check_against_naive(mlp, mlp_data, dirs, full)
    np.testing.assert_array_equal(full.loss[partial.done_mask], partial.loss[partial.done_mask])
    other = r"^the surface given as resume= is of another computation, so its points cannot be kept; what differs: "
    with pytest.raises(LandscapeError,
                       match=other + r"grid y: \(-1, 1, 10\) in the surface given, \(-1, 1.5, 10\) now"):
        lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 12), y=(-1, 1.5, 10), resume=partial)
    swapped = copy.deepcopy(mlp)
    swapped[1] = nn.ReLU()  # same weights, another function: the spec key alone did not tell
    said = r"module 1: its class was torch\.nn\.modules\.activation\.\w+, now torch\.nn\.modules\.activation\.ReLU"
    with pytest.raises(LandscapeError, match=other + r"the model's module settings: " + said):
        lnb.compute_surface(swapped, mlp_data, dirs, **grid, resume=partial)
    with pytest.raises(LandscapeError, match=r"^resume= a surface tiled \(2, 3\), but tile=\(4, 4\) was given"):
        lnb.compute_surface(mlp, mlp_data, dirs, **grid, tile=(4, 4), resume=partial)
    edited = copy.deepcopy(partial)
    j, i = np.argwhere(partial.done_mask)[0]
    edited.loss[j, i] = 123.0
    with pytest.raises(LandscapeError, match=r"^resume= a surface whose values or done mask were changed"):
        lnb.compute_surface(mlp, mlp_data, dirs, **grid, resume=edited)
    kept = []

    def interrupted(event):  # e.g. Ctrl-C in a notebook: the run raises, a callback's last snapshot remains
        kept.append(event.surface())
        if event.n_done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lnb.compute_surface(mlp, mlp_data, dirs, **grid, callbacks=[interrupted])
    went_on = lnb.compute_surface(mlp, mlp_data, dirs, **grid, resume=kept[-1])
    assert went_on.provenance["points_resumed"] == kept[-1].n_done >= 8
    np.testing.assert_allclose(went_on.loss, full.loss, rtol=1e-6)
    # a callback's event whose surface() is called after the run: the returned partial, edited in place, reached
    # it (they shared arrays), and resume= kept 123 as a computed value, "complete" (trial s37)
    events, stop = [], threading.Event()

    def kept_event(event):
        events.append(event)
        if event.n_done >= 8:
            stop.set()

    returned = lnb.compute_surface(mlp, mlp_data, dirs, **grid, callbacks=[kept_event], cancel=stop)
    j, i = np.argwhere(returned.done_mask)[0]
    returned.loss[j, i] = 123.0
    later = events[-1].surface()
    assert later.loss[j, i] == full.loss[j, i]
    went_on = lnb.compute_surface(mlp, mlp_data, dirs, **grid, resume=later)
    assert went_on.is_complete and went_on.provenance["points_resumed"] == later.n_done
    np.testing.assert_allclose(went_on.loss, full.loss, rtol=1e-6)
    lnb.compute_surface(mlp, mlp_data, dirs, **grid, store=tmp_path / "s.zarr")
    with pytest.raises(LandscapeError, match=r"^resume= a surface without a spec key .*pass store= its path"):
        lnb.compute_surface(mlp, mlp_data, dirs, **grid, resume=lnb.load_surface(tmp_path / "s.zarr"))
    with pytest.raises(LandscapeError, match=r"^resume=array\(.*expected a partial Surface of this same call"):
        lnb.compute_surface(mlp, mlp_data, dirs, **grid, resume=partial.loss)
    with pytest.raises(LandscapeError, match=r"^resume= and store='s.zarr' together; a store resumes by itself"):
        lnb.compute_surface(mlp, mlp_data, dirs, **grid, resume=partial, store="s.zarr")


def test_resume_of_another_model_directions_or_grid_is_refused_before_a_runner_starts(mlp, mlp_data, monkeypatch):
    """What a partial surface's spec tells without the data (model, directions, grid) is compared before
    make_runner: a Dask cluster would ship the model and data, and tune, only to be refused."""
    import threading

    ev = threading.Event()
    dirs = random_dict_dirs(mlp, 2)
    grid = {"x": (-1, 1, 12), "y": (-1, 1, 10)}
    partial = lnb.compute_surface(mlp, mlp_data, dirs, **grid, callbacks=[lambda e: ev.set()], cancel=ev)
    assert 0 < partial.n_done < 120

    def no_runner(*args, **kwargs):
        raise AssertionError("a runner was started for a resume= that does not fit")

    monkeypatch.setattr(lnb.compute, "make_runner", no_runner)
    heavier = copy.deepcopy(mlp)
    with torch.no_grad():
        heavier[0].weight.mul_(1.5)
    other = r"^the surface given as resume= is of another computation, so its points cannot be kept; what differs: "
    for kwargs, words in [
        ({"y": (-1, 1.5, 10)}, r"grid y: \(-1, 1, 10\) in the surface given, \(-1, 1.5, 10\) now"),
        ({"directions": random_dict_dirs(mlp, 2, seed=1)}, r"the direction vectors"),
        ({"model": heavier}, r"the model's weights"),
    ]:
        call = {"model": mlp, "data": mlp_data, "directions": dirs, **grid, **kwargs}
        with pytest.raises(LandscapeError, match=other + words):
            lnb.compute_surface(**call, resume=partial)


# --------------------------------------------------------------- bad input ----

@pytest.mark.parametrize("kw, match", [
    (dict(x=(1, -1, 5)), "empty or reversed"),
    (dict(x=(0, 0, 5)), "empty or reversed"),
    (dict(x=(-1, 1, 1)), "integer ≥ 2"),
    (dict(x=(-1, 1, 100000)), "larger than 4096"),
    (dict(x=(-1, 1, 4000), y=(-1, 1, 4000)), "larger than the limit"),
    (dict(x=(-1, 1)), "expected \\(start, stop, num\\)"),
    (dict(x=(-1, 1, 5), y=(-1, 1, 5), n_dirs=1), "1 direction\\(s\\) for a 2D grid"),
    (dict(x=(-1, 1, 5), n_dirs=2), "use directions.select"),
    (dict(x=(-1, 1, 3), tile=(0, 2)), "tile=\\(0, 2\\); expected a positive int"),
])
def test_bad_grid_and_direction_count(mlp, mlp_data, kw, match):
    n_dirs = kw.pop("n_dirs", 2 if "y" in kw else 1)
    with pytest.raises(LandscapeError, match=match):
        lnb.compute_surface(mlp, mlp_data, random_dict_dirs(mlp, n_dirs), **kw)


def test_directions_from_other_architecture_refused(mlp_data):
    other = lnb.random_directions(TinyCNN(), n=1)
    with pytest.raises(LandscapeError, match="another architecture"):
        lnb.compute_surface(make_mlp(), mlp_data, other, x=(-1, 1, 3))


def test_data_the_model_rejects(mlp):
    with pytest.raises(LandscapeError, match=r"on inputs of shape \(5,\)"):
        lnb.compute_surface(mlp, (torch.randn(10, 5), torch.zeros(10, dtype=torch.long)),
                            random_dict_dirs(mlp, 1), x=(-1, 1, 3))


def test_non_scalar_loss(mlp, mlp_data):
    with pytest.raises(LandscapeError, match="expected a scalar"):
        lnb.compute_surface(mlp, mlp_data, random_dict_dirs(mlp, 1), x=(-1, 1, 3),
                            loss_fn=nn.CrossEntropyLoss(reduction="none"))


@pytest.mark.parametrize("data, match", [
    ("digits", "expected \\(inputs, targets\\)"),
    ((torch.randn(4, 6), torch.zeros(5)), "same non-zero number"),
    (lambda n: None, "required argument"),
])
def test_bad_data(mlp, data, match):
    with pytest.raises(LandscapeError, match=match):
        lnb.compute_surface(mlp, data, random_dict_dirs(mlp, 1), x=(-1, 1, 3))


# ------------------------------------------------------ settings, spec, errors ----

def test_settings_object_and_keywords_give_the_same_surface_and_keywords_override(mlp, mlp_data):
    dirs = random_dict_dirs(mlp, 1)
    by_kw = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 5), max_samples=50, batch_size=16)
    by_settings = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 5),
                                      settings=EvalSettings(max_samples=50, batch_size=16))
    assert by_kw.provenance["key"] == by_settings.provenance["key"]
    np.testing.assert_array_equal(by_kw.loss, by_settings.loss)
    # a keyword given explicitly wins over the settings object, even when it is the default value
    full = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 5), settings=EvalSettings(max_samples=50),
                               max_samples=None)
    assert full.spec["data"]["n_samples"] == 97 and full.spec["eval"]["max_samples"] is None
    _check_against_naive(mlp, mlp_data, dirs, full)


def test_unknown_setting_names_the_closest_fields():
    with pytest.raises(LandscapeError, match="did you mean 'max_samples'"):
        EvalSettings().with_overrides(max_sample=10)
    with pytest.raises(LandscapeError, match="expected an EvalSettings"):
        lnb.compute_surface(make_mlp(), (torch.randn(4, 6), torch.zeros(4, dtype=torch.long)),
                            random_dict_dirs(make_mlp(), 1), x=(-1, 1, 3), settings={"max_samples": 2})


def test_mode_bn_is_an_alias_of_bn_recompute(cnn, cnn_data):
    d = lnb.random_directions(cnn, n=1, seed=0)
    short = lnb.compute_surface(cnn, cnn_data, d, x=(-1, 1, 3), mode="bn")
    long = lnb.compute_surface(cnn, cnn_data, d, x=(-1, 1, 3), mode="bn-recompute")
    assert short.spec["eval"]["mode"] == "bn-recompute"
    assert short.provenance["key"] == long.provenance["key"]
    np.testing.assert_array_equal(short.loss, long.loss)


def test_key_is_the_hash_of_the_stored_spec(tmp_path, mlp, mlp_data):
    s = lnb.compute_surface(mlp, mlp_data, random_dict_dirs(mlp, 2), x=(-1, 1, 3), y=(-1, 1, 3),
                            store=tmp_path / "s.zarr")
    manifest = SurfaceStore.open(tmp_path / "s.zarr").manifest
    want = hashlib.sha256(json.dumps(manifest["spec"], sort_keys=True).encode()).hexdigest()[:24]
    assert s.provenance["key"] == manifest["key"] == want
    assert s.spec == manifest["spec"]


def test_provenance_records_the_batch_size_and_points_per_pass_used(mlp, mlp_data):
    dirs = random_dict_dirs(mlp, 1)
    auto = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 3))
    assert auto.provenance["batch_size"] == 97 and auto.provenance["points_per_pass"] == 1  # all samples, CPU
    fixed = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 3), batch_size=16, points_per_pass=2)
    assert fixed.provenance["batch_size"] == 16 and fixed.provenance["points_per_pass"] == 2
    _check_against_naive(mlp, mlp_data, dirs, fixed)


def test_provenance_given_is_kept_with_the_surface_and_its_store_and_never_names_what_the_run_records(
        mlp, mlp_data, tmp_path):
    """``provenance=`` (e.g. the split, which the data cannot tell) is in the surface and its store; `RUN_KEYS`, the
    entries a caller may not give, holds every entry a run records (a stored, resumed, cancelled, 3D, Hessian run)."""
    from landscape_nb.compute import RUN_KEYS

    dirs, given = random_dict_dirs(mlp, 2), {"split": "train", "run": 3}
    surf = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 3), y=(-1, 1, 3), store=tmp_path / "s.zarr",
                               provenance=given)
    assert {k: surf.provenance[k] for k in given} == given
    stored = lnb.load_surface(tmp_path / "s.zarr")
    assert {k: stored.provenance[k] for k in given} == given
    _check_against_naive(mlp, mlp_data, dirs, stored)
    cancel = __import__("threading").Event()
    partial = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 3), y=(-1, 1, 3), tile=3,
                                  callbacks=[lambda t: cancel.set()], cancel=cancel)
    resumed = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 3), y=(-1, 1, 3), tile=3, resume=partial)
    volume = lnb.compute_surface(mlp, mlp_data, random_dict_dirs(mlp, 3), x=(-1, 1, 2), y=(-1, 1, 2), z=(-1, 1, 2))
    eigen = lnb.eigen_map(mlp, mlp_data, dirs, x=(-0.5, 0.5, 2), y=(-0.5, 0.5, 2))
    for s in (surf, stored, partial, resumed, volume, eigen, volume.slice("z", index=0)):
        assert set(s.provenance) - set(given) <= RUN_KEYS, set(s.provenance) - set(given) - RUN_KEYS


def test_an_error_mid_run_names_the_tile_and_the_surface(tmp_path, cnn, cnn_data):
    armed = {"on": False}

    def flaky(out, t):
        if armed["on"]:  # from the third finished tile on: past validation, mid-grid
            raise RuntimeError("boom")
        return nn.functional.cross_entropy(out, t)

    store = tmp_path / "s.zarr"
    with pytest.raises(LandscapeError, match="boom") as info:
        lnb.compute_surface(cnn, cnn_data, lnb.random_directions(cnn), x=(-1, 1, 3), y=(-1, 1, 3),
                            loss_fn=flaky, tile=1, store=store,
                            callbacks=[lambda event: armed.update(on=event.n_done >= 3)])
    key = SurfaceStore.open(store).manifest["key"]
    found = re.search(rf"while evaluating tile \((\d), (\d)\) \(1 point: x (\S+), y (\S+)\) of surface {key}\).*store",
                      str(info.value))
    assert found, str(info.value)  # the tile's coordinates too (its index alone named none: trial s46)
    row, col, x, y = found.groups()
    assert (float(x), float(y)) == ((-1.0, 0.0, 1.0)[int(col)], (-1.0, 0.0, 1.0)[int(row)])
    assert isinstance(info.value.__cause__, RuntimeError) and str(info.value.__cause__) == "boom"
    assert 0 < lnb.load_surface(store).n_done < 9  # the tiles finished before it are kept



def test_bn_recompute_over_more_than_one_pass_weighs_every_sample_equally():
    """1500 bn_data samples (two passes): the statistics are the data's, not a short last pass's.

    The data are one block of 750 samples twice, its first feature rising along the block, so passes
    of 1024 + 476 would have averaged a mean of the first 1024 with one of the last 476 (off by ~0.2
    here); the naive model carries the block's own mean and unbiased variance."""
    import copy

    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    g = torch.Generator().manual_seed(3)
    block = torch.randn(750, 3, generator=g)
    block[:, 0] += torch.linspace(-2, 2, 750)
    bn_x = torch.cat([block, block])
    bn_data = (bn_x, torch.zeros(1500, dtype=torch.long))
    x, y = torch.randn(50, 3, generator=g), torch.randint(0, 2, (50,), generator=g)
    dirs = random_dict_dirs(model, 1, scale=0.3)
    s = lnb.compute_surface(model, (x, y), dirs, x=(-1, 1, 3), mode="bn-recompute", bn_data=bn_data)
    assert "2 pass(es) of 750" in s.provenance["data"]["bn_recompute"]
    assert s.spec["eval"]["bn_pass_size"] == 750  # the split is part of the values, so of the surface
    for i, a in enumerate(s.x):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in m.named_parameters():
                p.add_(a * dirs[0][name])
            m[0].running_mean.copy_(block.mean(0))
            m[0].running_var.copy_(block.var(0, unbiased=True))
            ref = float(nn.functional.cross_entropy(m(x), y))
        np.testing.assert_allclose(s.loss[i], ref, rtol=1e-5)
    short_last = torch.cat([bn_x[:1024].mean(0, keepdim=True), bn_x[1024:].mean(0, keepdim=True)]).mean(0)
    assert float((short_last - block.mean(0)).abs().max()) > 0.1  # what the old split would have been off by


def test_a_store_never_resumes_with_other_batchnorm_data(cnn, cnn_data, tmp_path):
    """Separate bn_data are part of the surface: other data are refused, not resumed as the same surface."""
    dirs = random_dict_dirs(cnn, 1, scale=0.2)
    x, y = cnn_data
    store = tmp_path / "bn.zarr"
    kw = dict(x=(-1, 1, 3), mode="bn-recompute", store=store)
    first = lnb.compute_surface(cnn, cnn_data, dirs, bn_data=(x[:20], y[:20]), **kw)
    again = lnb.compute_surface(cnn, cnn_data, dirs, bn_data=(x[:20].clone(), y[:20]), **kw)  # same values
    np.testing.assert_array_equal(again.loss, first.loss)
    with pytest.raises(LandscapeError, match=r"holds a different surface.*bn_data \(the data BatchNorm statistics are re-estimated on\): fingerprint [0-9a-f]+ stored, [0-9a-f]+ now"):
        lnb.compute_surface(cnn, cnn_data, dirs, bn_data=(x[20:], y[20:]), **kw)


def test_a_store_never_resumes_with_another_metric_under_the_same_name(mlp, mlp_data, tmp_path):
    dirs = random_dict_dirs(mlp, 1)
    store = tmp_path / "m.zarr"

    def top_logit(out, t):
        return out.max(dim=1).values.mean()

    def low_logit(out, t):
        return out.min(dim=1).values.mean()

    first = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 3), metrics={"logit": top_logit}, store=store)
    want = [float(top_logit(naive_outputs, None)) for naive_outputs in
            (perturbed_outputs(mlp, mlp_data[0], dirs, a) for a in first.x)]
    np.testing.assert_allclose(first.metrics["logit"], want, rtol=1e-5)
    with pytest.raises(LandscapeError, match=r"holds a different surface.*metric 'logit' \(another function under the same name\): fingerprint [0-9a-f]+ stored, [0-9a-f]+ now"):
        lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 3), metrics={"logit": low_logit}, store=store)
    builtin = lnb.compute_surface(mlp, mlp_data, dirs, x=(-1, 1, 3), metrics=["accuracy"], store=tmp_path / "b.zarr")
    assert "metric_fingerprints" not in builtin.spec["eval"]  # built-ins keep the keys stored before


def _grids_named(message: str) -> dict[str, np.ndarray]:
    """The points of each ``x=(start, stop, num)`` a ModelOffGrid warning names, by np.linspace."""
    return {name: np.linspace(float(a), float(b), int(n))
            for name, a, b, n in re.findall(r"\b([xyz])=\(([-\d.e]+), ([-\d.e]+), (\d+)\)", message)}


def test_a_grid_that_misses_the_model_says_so_and_names_one_that_holds_it(mlp, mlp_data):
    """Trial s54b: a 2×2 grid on -1..1 (no point at the model) gave no word from the API, where the CLI and the
    Explorer note it. compute_surface warns (`ModelOffGrid`) for each axis whose points miss the model at 0 (for
    a line between two models, 0 and 1) or whose range leaves it out, and names grids that hold them, checked
    here with np.linspace; grids through the models give no such warning."""
    a, b = make_mlp(0), make_mlp(1)
    plane = lnb.random_directions(mlp, n=2, seed=0)
    line = lnb.interpolation_direction(a, b)
    cases = [  # (model, directions, grid, what the warning says, the models the named grid must hold)
        (mlp, plane, {"x": (-1, 1, 4), "y": (-1, 1, 5)}, ["the model at x = 0 lies between the 4 points of -1 to 1"],
         {"x": [0.0]}),
        (mlp, plane, {"x": (-1, 1, 2), "y": (-1, 1, 2)}, ["the model at x = 0 lies between the 2 points of -1 to 1",
                                                       "the model at y = 0 lies between the 2 points of -1 to 1"],
         {"x": [0.0], "y": [0.0]}),
        (mlp, plane, {"x": (0.5, 1.5, 3), "y": (-1, 1, 3)}, ["the model at x = 0 lies outside the range 0.5 to 1.5"],
         {"x": [0.0]}),
        (a, line, {"x": (-0.35, 1.2, 21)}, ["a and b at x = 0 and 1 lie between the 21 points of -0.35 to 1.2"],
         {"x": [0.0, 1.0]}),
        (a, line, {"x": (0, 0.8, 5)}, ["b at x = 1 lies outside the range 0 to 0.8"], {"x": [1.0]}),
        # a plane through three: two models at 0 of each axis, each named (it said "the model at x = 0", s56)
        (a, lnb.plane_directions(a, b, make_mlp(2), names=("p", "q", "r")), {"x": (0.2, 1.5, 5), "y": (-0.5, 1.5, 6)},
         ["p and r at x = 0 lie outside the range 0.2 to 1.5", "q at x = 1 lies between the 5 points of 0.2 to 1.5",
          "p and q at y = 0 and r at y = 1 lie between the 6 points of -0.5 to 1.5"], {"x": [0.0, 1.0], "y": [0.0, 1.0]}),
    ]
    for model, d, grid, said, held in cases:
        with pytest.warns(lnb.ModelOffGrid) as caught:
            surf = lnb.compute_surface(model, mlp_data, d, **grid)
        message = " ".join(str(w.message) for w in caught if issubclass(w.category, lnb.ModelOffGrid))
        for words in said:
            assert words in message, (grid, message)
        assert "no point holds" in message
        for name, (start, stop, n) in grid.items():  # naive: which models the grid itself misses
            points = np.linspace(start, stop, n)
            np.testing.assert_allclose(getattr(surf, name), points)
            assert (f"at {name} = " in message) == any(not np.isclose(points, m, atol=1e-9).any() for m in held.get(
                name, [])), (name, message)
        named = _grids_named(message)
        assert named.keys() == held.keys(), message
        for name, models in held.items():
            for m in models:
                assert np.isclose(named[name], m, rtol=0, atol=1e-9).any(), (name, named[name], m)
    with warnings.catch_warnings():
        warnings.simplefilter("error", lnb.ModelOffGrid)
        lnb.compute_surface(mlp, mlp_data, plane, x=(-1, 1, 5), y=(-0.5, 1, 7))
        lnb.compute_surface(a, mlp_data, line, x=(-0.5, 1.5, 9))


def perturbed_outputs(model, inputs, dirs, a):
    import copy

    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.add_(a * dirs[0][name])
        return m(inputs)


def test_directions_made_around_another_models_weights_are_said_so(mlp_data):
    """Trial s35: directions filter-normalized to one model and used on another flipped a sharpness ranking
    (their filter norms are the first model's, Li et al. §4), and an interpolation a → b computed around b put
    2b − a at x = 1 under the label "a → b", with no word. Both warn; the model they were made for, or raw
    (unnormalized) directions reused on purpose, do not."""
    import warnings

    a, b = make_mlp(0), make_mlp(1)
    filt = lnb.random_directions(a, n=1, seed=0)
    grid = {"x": (-1, 1, 3)}
    with pytest.warns(UserWarning, match=r"these random directions were made around another model's weights than "
                                         r"this Sequential's; they are filter-normalized to that model's weights"):
        lnb.compute_surface(b, mlp_data, filt, **grid)
    line = lnb.interpolation_direction(a, b)
    with pytest.warns(UserWarning, match=r"these interpolate directions were made around another model's .* the "
                                         r"surface is centred at this model, so the points the directions name"):
        lnb.compute_surface(b, mlp_data, line, x=(0, 1, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", "`torch.jit.script", DeprecationWarning)
        lnb.compute_surface(a, mlp_data, filt, **grid)
        lnb.compute_surface(a, mlp_data, line, x=(0, 1, 3))
        lnb.compute_surface(b, mlp_data, lnb.random_directions(a, n=1, seed=0, norm="none"), **grid)
        lnb.compute_surface(torch.jit.script(a), mlp_data, filt, **grid)  # the same weights, wrapped or cast
        lnb.compute_surface(torch.jit.script(a), mlp_data, line, x=(0, 1, 3))
        lnb.compute_surface(copy.deepcopy(a).double(), (mlp_data[0].double(), mlp_data[1]), filt, **grid)
    # orthogonalized sets (only their first vector holds the filter norms), weight-normalized ones and Hessian
    # eigenvectors (labelled with the other model's eigenvalues) were taken on another model with no word (trial s38)
    plane = {"x": (-1, 1, 3), "y": (-1, 1, 3)}
    for made, words in ((lnb.random_directions(a, n=2, seed=0, orthogonalize=True), "random-orthogonal"),
                        (lnb.orthogonalize(lnb.random_directions(a, n=2, seed=0)), "random"),
                        (lnb.random_directions(a, n=2, seed=0, norm="weight"), "random"),
                        (lnb.hessian_directions(a, mlp_data), "hessian")):
        with pytest.warns(UserWarning, match=rf"these {words} directions were made around another model's weights"):
            lnb.compute_surface(b, mlp_data, made, **plane)
        # a selection leaving out the vector drawn first, or putting it second (re-trial s38: taken silently)
        for picked in ([1], [1, 0]):
            with pytest.warns(UserWarning, match=rf"these {words} directions were made around another model's"):
                lnb.compute_surface(b, mlp_data, made.select(picked), x=(-1, 1, 3), **({} if len(picked) == 1 else
                                                                                       {"y": (-1, 1, 3)}))
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            lnb.compute_surface(a, mlp_data, made, **plane)
            lnb.compute_surface(a, mlp_data, made.select([1]), x=(-1, 1, 3))
            wide = copy.deepcopy(a).double()  # the same weights in float64: warned (re-trial s38)
            lnb.compute_surface(wide, (mlp_data[0].double(), mlp_data[1]), made, **plane)


def test_bn_recompute_on_a_model_without_batchnorm_says_it_is_eval(mlp, mlp_data, cnn, cnn_data):
    """mode='bn-recompute' on a model with no BatchNorm layer ran with no word (trial s50): its values are eval's
    (checked here against mode='eval'), computed one point a pass. It says so; a model with BatchNorm gets no
    such word."""
    d = lnb.random_directions(mlp, n=1, seed=0)
    with pytest.warns(UserWarning, match=r"mode='bn-recompute' re-estimates BatchNorm running statistics at every "
                                         r"point, but this \w+ has no BatchNorm layer, so the values are those of "
                                         r"mode='eval'"):
        recomputed = lnb.compute_surface(mlp, mlp_data, d, x=(-1, 1, 3), mode="bn-recompute")
    np.testing.assert_allclose(recomputed.loss, lnb.compute_surface(mlp, mlp_data, d, x=(-1, 1, 3)).loss, rtol=1e-6)
    # BatchNorm that keeps no running statistics (batch statistics in eval mode too): the same, said so (trial s52)
    torch.manual_seed(0)
    batchwise = nn.Sequential(nn.Linear(mlp_data[0].shape[1], 6), nn.BatchNorm1d(6, track_running_stats=False),
                              nn.Tanh(), nn.Linear(6, int(mlp_data[1].max()) + 1)).eval()
    d = lnb.random_directions(batchwise, n=1, seed=0)
    with pytest.warns(UserWarning, match=r"has BatchNorm layers that keep no running statistics, so the values are "
                                         r"those of mode='eval'"):
        recomputed = lnb.compute_surface(batchwise, mlp_data, d, x=(-1, 1, 3), mode="bn-recompute")
    np.testing.assert_allclose(recomputed.loss, lnb.compute_surface(batchwise, mlp_data, d, x=(-1, 1, 3)).loss,
                               rtol=1e-6)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        lnb.compute_surface(cnn, cnn_data, lnb.random_directions(cnn, n=1, seed=0), x=(-1, 1, 3), mode="bn-recompute")
    assert not [w for w in said if "has no BatchNorm layer" in str(w.message)]
