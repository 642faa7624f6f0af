"""TrajectoryRecorder against copies of the weights taken by hand during training; the animation."""
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import docstring_example, single_thread
from torch import nn

from landscape_nb.errors import LandscapeError
from landscape_nb.recorder import TrajectoryRecorder
from landscape_nb.trajectory import pca_directions, project_trajectory


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.BatchNorm1d(10), nn.Tanh(), nn.Linear(10, 3))


def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)


def train(model, n_steps, recorder=None):
    """SGD on minibatches; returns {step: deep copy of the state dict after that many steps}."""
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    copies = {0: {k: v.clone() for k, v in model.state_dict().items()}}
    for s in range(1, n_steps + 1):
        idx = torch.arange(s * 16, s * 16 + 16) % 64
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        if recorder is not None:
            recorder.step()
        copies[s] = {k: v.clone() for k, v in model.state_dict().items()}
    return copies


@pytest.mark.parametrize("store", [False, True])
def test_checkpoints_equal_the_weights_at_those_steps(tmp_path, store):
    model = make_model()
    rec = TrajectoryRecorder(model, every=3, path=tmp_path / "run.zarr" if store else None)
    with rec:
        copies = train(model, 10, rec)
    assert rec.steps.tolist() == [0, 3, 6, 9, 10]  # initial, every 3rd, and the final weights
    for i, s in enumerate(rec.steps):
        got = rec.checkpoint(i)
        assert list(got) == list(copies[s])
        for k in got:
            assert got[k].dtype == copies[s][k].dtype and torch.equal(got[k], copies[s][k]), (s, k)
    if store:
        again = TrajectoryRecorder.load(tmp_path / "run.zarr", model)
        assert again.steps.tolist() == rec.steps.tolist()
        assert all(torch.equal(a[k], b[k]) for a, b in zip(again.checkpoints, rec.checkpoints) for k in a)
        assert not any(p.suffix == ".pkl" for p in (tmp_path / "run.zarr").rglob("*"))


@pytest.mark.parametrize("store", [False, True])
def test_recording_a_step_again_replaces_its_checkpoint_with_the_state_now(tmp_path, store):
    """record() twice at one step gave two checkpoints labelled 6 (a zero-length path segment, a duplicate PCA
    row); now the later state replaces the earlier, in memory and in the store."""
    model = make_model()
    rec = TrajectoryRecorder(model, every=3, path=tmp_path / "run.zarr" if store else None)
    copies = train(model, 6, rec)
    assert rec.steps.tolist() == [0, 3, 6]
    rec.record()  # nothing changed: still one checkpoint at step 6
    with torch.no_grad():
        model[0].weight.mul_(2.0)  # e.g. weights averaged or re-loaded after the last step
    rec.record()
    assert rec.steps.tolist() == [0, 3, 6]
    got = (TrajectoryRecorder.load(tmp_path / "run.zarr", model) if store else rec).checkpoint(2)
    assert torch.equal(got["0.weight"], 2 * copies[6]["0.weight"]) and torch.equal(got["3.bias"], copies[6]["3.bias"])


def test_pca_and_projection_are_those_of_the_recorded_checkpoints():
    model = make_model()
    with TrajectoryRecorder(model, every=2) as rec:
        copies = train(model, 12, rec)
    naive = [copies[s] for s in rec.steps]
    d = rec.pca_directions(n=2)
    want = pca_directions(naive, final=model, n=2)
    assert torch.allclose(d.vectors, want.vectors)
    path = rec.project(d)
    ref = project_trajectory(naive, want, final=model)
    np.testing.assert_allclose(path.coords, ref.coords, rtol=1e-6, atol=1e-7)
    assert path.labels == [f"step {s}" for s in rec.steps[:-1]] + [f"final (step {rec.steps[-1]})"]  # the model


def test_refuses_bad_arguments(tmp_path):
    model = make_model()
    with pytest.raises(LandscapeError, match="every"):
        TrajectoryRecorder(model, every=0)
    TrajectoryRecorder(model, path=tmp_path / "a.zarr")
    with pytest.raises(LandscapeError, match="already exists"):
        TrajectoryRecorder(model, path=tmp_path / "a.zarr")
    with pytest.raises(LandscapeError, match="trajectory store"):
        TrajectoryRecorder.load(tmp_path / "nothing", model)
    with pytest.raises(LandscapeError, match="expected a torch.nn.Module, got OrderedDict"):
        TrajectoryRecorder.load(tmp_path / "a.zarr", model.state_dict())
    try:
        import lightning  # noqa: F401
    except ImportError:
        with pytest.raises(LandscapeError, match="Lightning"):
            TrajectoryRecorder(model).lightning_callback()


def test_overwrite_replaces_only_a_trajectory_store_and_deletes_nothing_else(tmp_path, monkeypatch):
    """overwrite=True on a directory of the user's files (or ".", or a plain file) is refused and every file is
    still there; it emptied them before (zarr's mode "w"). A trajectory store and an empty directory are replaced."""
    model = make_model()
    (tmp_path / "work" / "sub").mkdir(parents=True)
    (tmp_path / "work" / "thesis.tex").write_text("chapter 1")
    (tmp_path / "work" / "sub" / "data.csv").write_text("1,2")
    (tmp_path / "notes.txt").write_text("keep")
    monkeypatch.chdir(tmp_path)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    for path, kind in [("work", "a directory holding 'sub', 'thesis.tex'"), (".", "a directory holding 'notes.txt', "
                       "'work'"), ("notes.txt", "a file")]:
        with pytest.raises(LandscapeError, match=rf"^path='{re.escape(path)}' is {kind}, not a trajectory store; "
                                                 r".*nothing was deleted: choose a new path"):
            TrajectoryRecorder(model, path=path, overwrite=True)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "work" / "thesis.tex").read_text() == "chapter 1"
    old = TrajectoryRecorder(model, every=1, path="traj.zarr")
    for _ in range(3):
        old.step()
    assert list(TrajectoryRecorder.load("traj.zarr", model).steps) == [0, 1, 2, 3]
    TrajectoryRecorder(model, path="traj.zarr", overwrite=True)
    assert list(TrajectoryRecorder.load("traj.zarr", model).steps) == [0]
    (tmp_path / "empty").mkdir()
    TrajectoryRecorder(model, path="empty", overwrite=True)
    assert list(TrajectoryRecorder.load("empty", model).steps) == [0]
    # a store someone put notes and figures into: those would go with it (trial P); a link to a store; ""
    (tmp_path / "traj.zarr" / "notes.txt").write_text("keep")
    (tmp_path / "traj.zarr" / "figs").mkdir()
    with pytest.raises(LandscapeError, match=r"^path='traj.zarr' is a directory holding 'figs', 'notes.txt', a "
                                             r"trajectory store with other files in it; .*nothing was deleted"):
        TrajectoryRecorder(model, path="traj.zarr", overwrite=True)
    assert (tmp_path / "traj.zarr" / "notes.txt").read_text() == "keep"
    assert list(TrajectoryRecorder.load("traj.zarr", model).steps) == [0]
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    with pytest.raises(LandscapeError, match=r"^path='link' is a symbolic link; .*nothing was deleted"):
        TrajectoryRecorder(model, path="link", overwrite=True)
    assert (tmp_path / "empty" / "zarr.json").exists()
    with pytest.raises(LandscapeError, match=r"^path='' is empty; expected a directory for the store"):
        TrajectoryRecorder(model, path="", overwrite=True)


def test_loading_a_store_with_a_model_of_another_architecture_is_refused(tmp_path):
    TrajectoryRecorder(make_model(), path=tmp_path / "a.zarr")
    wider = nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.Tanh(), nn.Linear(12, 3))  # same tensor names
    # 0.weight, 0.bias, 1.weight, 1.bias, 1.running_mean, 1.running_var, 3.weight differ; 1.num_batches_tracked, 3.bias not
    with pytest.raises(LandscapeError, match=r"^the store at '.*a.zarr' was recorded from another architecture than "
                                             r"Sequential: tensor '0.weight' has shape \(10, 6\) in the store, "
                                             r"\(12, 6\) in the model \(7 of 9 tensors differ\); expected the model"):
        TrajectoryRecorder.load(tmp_path / "a.zarr", wider)
    assert TrajectoryRecorder.load(tmp_path / "a.zarr", make_model()).n_checkpoints == 1


def test_a_store_loaded_with_a_freshly_built_model_is_centred_at_its_last_checkpoint(tmp_path):
    """Trial s35: load(path, MLP()) made the fresh random model `final`, so the plane was centred far from every
    checkpoint (the reference's plot_trajectory centres at the final checkpoint file)."""
    model = make_model()
    with TrajectoryRecorder(model, every=4, path=tmp_path / "run.zarr") as rec:
        copies = train(model, 12, rec)
    fresh = nn.Sequential(nn.Linear(6, 10), nn.BatchNorm1d(10), nn.Tanh(), nn.Linear(10, 3))
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.warns(UserWarning, match=r"holds other weights than the last checkpoint recorded in '.*run.zarr' "
                                         r"\(step 12\); rec.model is a copy holding that checkpoint"):
        again = TrajectoryRecorder.load(tmp_path / "run.zarr", fresh)
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())  # the model passed is left alone
    d = again.pca_directions(n=2)
    path = again.project(d)
    last = copies[12]
    for i, s in enumerate(again.steps):  # naive: distances from the last checkpoint, over every parameter
        names = [n for n, _ in model.named_parameters()]
        delta = torch.cat([(copies[s][n].double() - last[n].double()).reshape(-1) for n in names])
        assert path.norm[i] == pytest.approx(float(delta.norm()), rel=1e-9, abs=1e-12)
    assert path.labels[-1] == "final (step 12)" and path.norm[-1] == 0
    with warnings.catch_warnings():  # the trained model itself: nothing to say
        warnings.simplefilter("error")
        assert TrajectoryRecorder.load(tmp_path / "run.zarr", model).model is model


def test_animation_has_one_frame_per_checkpoint(tmp_path):
    from landscape_nb.compute import compute_surface
    from landscape_nb.plot.export import export_html
    from landscape_nb.plot import animate

    model = make_model()
    with TrajectoryRecorder(model, every=2) as rec:
        train(model, 9, rec)
    d = rec.pca_directions(n=2)
    path = rec.project(d)
    surf = compute_surface(model, data(), d, x=(*d.provenance["x_range"], 7), y=(*d.provenance["y_range"], 6))
    fig = animate(surf, path)
    assert len(fig.frames) == rec.n_checkpoints == len(path.x)
    for k, frame in enumerate(fig.frames):  # frame k: the path up to checkpoint k, k marked
        np.testing.assert_allclose(frame.data[0].x, path.x[:k + 1])
        np.testing.assert_allclose(frame.data[0].y, path.y[:k + 1])
        assert (frame.data[1].x[0], frame.data[1].y[0]) == pytest.approx((path.x[k], path.y[k]))
    assert len(fig.layout.sliders[0].steps) == rec.n_checkpoints
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["▶ play", "❚❚ pause"]
    out = export_html(fig, tmp_path / "anim.html")
    text = out.read_text()
    assert "addFrames" in text and text.count('"name":"') >= rec.n_checkpoints


def test_the_trajectory_functions_take_a_recorder_as_they_take_its_checkpoints():
    import landscape_nb as lnb
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    with lnb.TrajectoryRecorder(model, every=2) as rec:
        for _ in range(8):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            rec.step()
    by_recorder = lnb.pca_directions(rec, final=model, n=2)
    by_list = lnb.pca_directions(list(rec.checkpoints), final=model, n=2)
    assert torch.equal(by_recorder.vectors, by_list.vectors)


def test_the_module_docstring_example_runs_as_written(tmp_path, monkeypatch):
    import landscape_nb as lnb
    import landscape_nb.recorder

    code = docstring_example(landscape_nb.recorder)
    monkeypatch.chdir(tmp_path)  # it writes runs/path.zarr
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))  # small: 441 points to evaluate
    x, y = (t[:16] for t in data())
    scope = {"lnb": lnb, "model": model, "x": x, "y": y, "loss_fn": nn.functional.cross_entropy,
             "opt": torch.optim.SGD(model.parameters(), lr=0.1),
             "loader": [(x[i:i + 4], y[i:i + 4]) for i in range(0, 16, 4)] * 6}  # 24 steps: checkpoints 0, 10, 20, 24
    with single_thread():
        exec(code, scope)  # noqa: S102 - the docstring's example, as written
    assert list(scope["rec"].steps) == [0, 10, 20, 24] and (tmp_path / "runs" / "path.zarr").is_dir()
    assert len(scope["path"].x) == 4 and "**d.suggested_grid(21)" in code  # a surface on the range


def test_the_readme_projection_of_recorded_checkpoints_runs_as_written():
    import landscape_nb as lnb

    readme = (Path(lnb.__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    line = next(line for line in readme.splitlines() if "path = rec.project(d, data=test)" in line)
    call = line.split("# or ", 1)[1].strip()  # the alternative the README gives in its comment
    assert call.startswith("lnb.project_trajectory(rec, d")  # the recorder itself: its steps label the points
    model = make_model()
    with TrajectoryRecorder(model, every=2) as rec:
        train(model, 6, rec)
    d, test = rec.pca_directions(n=2), data()
    path = eval(call, {"lnb": lnb, "rec": rec, "d": d, "model": model, "test": test})
    want = rec.project(d, data=test)
    np.testing.assert_allclose(path.coords, want.coords)
    np.testing.assert_allclose(path.loss, want.loss)
    assert path.labels == want.labels == [f"step {s}" for s in rec.steps[:-1]] + [f"final (step {rec.steps[-1]})"]


@pytest.mark.parametrize("store", [False, True])
def test_step_zero_without_a_with_block_and_refreshed_on_entering_one(tmp_path, store):
    """A recorder driven by step() alone still has the initial weights; one entered after the weights
    changed (a checkpoint loaded, say) holds the weights at entering as step 0, once."""
    model = make_model()
    rec = TrajectoryRecorder(model, every=3, path=tmp_path / "a.zarr" if store else None)
    copies = train(model, 7, rec)
    assert rec.steps.tolist() == [0, 3, 6]
    for i, s in enumerate(rec.steps):
        assert all(torch.equal(rec.checkpoint(i)[k], copies[s][k]) for k in copies[s]), s

    model = make_model()
    rec = TrajectoryRecorder(model, every=3, path=tmp_path / "b.zarr" if store else None)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)  # changed after the recorder was made, before training
    with rec:
        copies = train(model, 4, rec)
    assert rec.steps.tolist() == [0, 3, 4]
    assert all(torch.equal(rec.checkpoint(0)[k], copies[0][k]) for k in copies[0])
    if store:
        again = TrajectoryRecorder.load(tmp_path / "b.zarr", model)
        assert again.steps.tolist() == [0, 3, 4]
        assert all(torch.equal(again.checkpoint(0)[k], copies[0][k]) for k in copies[0])


def test_a_store_whose_model_changes_dtype_while_recording_says_its_checkpoints_keep_the_first(tmp_path):
    """A store made before model.double() kept float32 arrays and read float64 checkpoints back float32, with no
    note (trial s37). The first checkpoint after the change warns, once, naming the dtypes; the values read back
    are the float64 weights rounded to float32 (naive), as said."""
    model = make_model()
    rec = TrajectoryRecorder(model, path=tmp_path / "run.zarr")
    model.double()
    with pytest.warns(UserWarning, match=r"TrajectoryRecorder: the model's tensors changed dtype since recording "
                                         r"began \(\S+: float32, now float64; \d+ tensors in all\).*start a new "
                                         r"recorder"):
        rec.step()  # every=1: records
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec.step()
        rec.record()
    last = rec.checkpoints[-1]
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        assert last[name].dtype == torch.float32
        torch.testing.assert_close(last[name], t.float(), rtol=0, atol=0)


def test_a_run_interrupted_goes_on_recording_the_model_being_trained_after_load(tmp_path):
    """Trial s59: after a Ctrl-C at step 23 (last checkpoint: step 20), load(path, model) then rec.step() appended the
    states of a copy of step 20's checkpoint, which never moved. The model trained on is recorded (naive: copies
    of its state dict taken by hand at every step), labelled by its own steps with n_steps=23, and becomes the
    centre."""
    model = make_model()
    rec = TrajectoryRecorder(model, every=4, path=tmp_path / "run.zarr")
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    copies = {0: {k: v.clone() for k, v in model.state_dict().items()}}

    def one_step(s, recorder):
        idx = torch.arange(s * 16, s * 16 + 16) % 64
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        recorder.step()
        copies[s] = {k: v.clone() for k, v in model.state_dict().items()}

    for s in range(1, 24):  # interrupted at step 23: no __exit__, so no final record
        one_step(s, rec)
    assert rec.steps.tolist() == [0, 4, 8, 12, 16, 20]
    with pytest.warns(UserWarning, match=r"rec.step\(\) and rec.record\(\) record the Sequential itself"):
        again = TrajectoryRecorder.load(tmp_path / "run.zarr", model, n_steps=23)
    assert torch.equal(again.model.state_dict()["0.weight"], copies[20]["0.weight"])  # the centre until it records
    with again:
        for s in range(24, 31):
            one_step(s, again)
    assert again.model is model
    reread = TrajectoryRecorder.load(tmp_path / "run.zarr", model)
    assert reread.steps.tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 30]
    for i, s in enumerate(reread.steps):
        got = reread.checkpoint(i)
        assert all(torch.equal(got[k], copies[s][k]) for k in got), s
    with pytest.raises(LandscapeError, match=r"n_steps=12; expected the optimizer steps the model has taken, at "
                                             r"least 30, the last step recorded in"):
        TrajectoryRecorder.load(tmp_path / "run.zarr", model, n_steps=12)


def test_a_recorder_with_too_few_checkpoints_for_its_pca_names_its_own_knob():
    """Trial s59: "save more checkpoints during training" is the fix for a list of files; a recorder's is every=."""
    model = make_model()
    with TrajectoryRecorder(model, every=50) as rec:
        train(model, 30, rec)
    assert rec.steps.tolist() == [0, 30]
    with pytest.raises(LandscapeError, match=r"2 checkpoint\(s\) for n=2 principal directions; expected at least 3 .*: "
                                             r"record more often, TrajectoryRecorder\(model, every=...\) below "
                                             r"every=50, or train longer, or ask for fewer directions \(n=1\)"):
        rec.pca_directions(n=2)


def test_a_loaded_recorder_keeps_the_runs_own_checkpoints_on_entering_and_on_a_bare_record(tmp_path):
    """Review s59: after load, recording the model being trained, `with rec:` on a store holding only step 0 wrote
    the trained model over it, and a bare record() replaced the last checkpoint, labelled by its step, with the
    weights now. Step 0 stays the initial weights (naive: a copy taken by hand); record() at the loaded step with
    other weights is refused, naming n_steps=."""
    model = make_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    rec = TrajectoryRecorder(model, every=10, path=tmp_path / "run.zarr")
    train(model, 5, rec)  # interrupted at step 5, before the first checkpoint after step 0
    with pytest.warns(UserWarning, match=r"pass n_steps=, the optimizer steps it has taken"):
        again = TrajectoryRecorder.load(tmp_path / "run.zarr", model)
    with again:
        pass
    assert all(torch.equal(again.checkpoint(0)[k], initial[k]) for k in initial)
    with pytest.raises(LandscapeError, match=r"record\(\) at step 0 would replace the checkpoint the store at .* "
                                             r"holds for that step by the model's weights now, which differ; pass "
                                             r"TrajectoryRecorder.load\(path, model, n_steps=...\)"):
        again.record()
    assert all(torch.equal(again.checkpoint(0)[k], initial[k]) for k in initial)
    resumed = TrajectoryRecorder.load(tmp_path / "run.zarr", model, n_steps=5)
    resumed.record()  # step 5, appended
    assert resumed.steps.tolist() == [0, 5]


def test_a_recorder_loaded_without_n_steps_refuses_to_count_steps_from_the_wrong_one(tmp_path):
    """Re-trial s59: a run stopped at step 10 (last checkpoint step 8), loaded without n_steps, then trained on:
    "step 12" held step 14's weights. step() is refused, naming n_steps=; given it, no advice to pass it."""
    model = make_model()
    rec = TrajectoryRecorder(model, every=4, path=tmp_path / "run.zarr")
    train(model, 10, rec)
    with pytest.warns(UserWarning, match=r"\(pass n_steps=, the optimizer steps it has taken\)"):
        again = TrajectoryRecorder.load(tmp_path / "run.zarr", model)
    with pytest.raises(LandscapeError, match=r"step\(\) on a recorder loaded with a model that holds other weights "
                                             r"than the last checkpoint \(step 8\).*n_steps=\.\.\."):
        again.step()
    with pytest.warns(UserWarning) as said:
        resumed = TrajectoryRecorder.load(tmp_path / "run.zarr", model, n_steps=10)
    assert not any("pass n_steps=" in str(w.message) for w in said)
    resumed.step(), resumed.step()  # step 12
    assert resumed.steps.tolist()[-1] == 12
