"""The CLI's directions from the user's own files: ``--model-file2``/``--model-file3`` (a line or plane
through their checkpoints, as the reference's flags), ``--checkpoints`` (trajectory PCA) and ``--dir-file``
(a reference direction file, a ``Directions.save`` file or a store), each against a naive float64 loop."""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import landscape_nb as lnb
from landscape_nb.cli import build_parser, check_direction_flags, default_store, main

BN_MODULE = '''
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).eval()


def make():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 4, generator=g)
    return build(), (x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long())
'''


@pytest.fixture
def bn_module(tmp_path, monkeypatch):
    (tmp_path / "bn_models.py").write_text(BN_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("bn_models", None)
    yield "bn_models:make"
    sys.modules.pop("bn_models", None)


def _checkpoints(tmp_path, k: int) -> list:
    """``k`` state dicts of the BN model along a made-up run: every float tensor moved, running_var grown."""
    from bn_models import build

    paths = []
    for i in range(k):
        m = build()
        g = torch.Generator().manual_seed(10 + i)
        with torch.no_grad():
            for t in [*m.parameters(), m[1].running_mean]:
                t.add_(0.3 * torch.randn(t.shape, generator=g))
            m[1].running_var.mul_(1.2 + 0.3 * i)
        paths.append(tmp_path / f"ckpt{i}.pt")
        torch.save(m.state_dict(), paths[-1])
    return paths


def _naive_loss(state) -> float:
    """The cross-entropy of the BN model holding ``state``, in float64, by hand."""
    from bn_models import build, make

    _, (x, y) = make()
    m = build().double()
    m.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in state.items()})
    with torch.no_grad():
        return float(F.cross_entropy(m(x.double()), y))


def _state(path) -> dict:
    return {k: v.double() if v.is_floating_point() else v for k, v in torch.load(path, weights_only=True).items()}


def _combine(base: dict, steps) -> dict:
    """``base + Σ c·d`` over the float tensors, ``steps`` being (c, d) pairs of state-dict-like dicts."""
    out = dict(base)
    for c, d in steps:
        for name, t in d.items():
            if out[name].is_floating_point():
                out[name] = out[name] + c * t.double()
    return out


def test_model_file2_gives_the_line_to_the_checkpoint(bn_module, tmp_path, capsys):
    """x = 0 is the model, x = 1 the checkpoint, every float tensor (BN statistics too) on the line; the
    interpolation's own range (-0.5..1.5); running_var clamped at 0 past the ends, as the API's paths."""
    from bn_models import build

    (b_path,) = _checkpoints(tmp_path, 1)
    store = tmp_path / "line.zarr"
    assert main(["compute", bn_module, "--grid", "9", "--model-file2", str(b_path), "--store", str(store)]) == 0
    surf = lnb.load_surface(store)
    assert surf.is_complete and surf.provenance["directions"]["scheme"] == "interpolate"
    np.testing.assert_allclose(surf.x, np.linspace(-0.5, 1.5, 9))
    a, b = _state_of(build()), _state(b_path)
    diff = {k: b[k] - a[k] for k in a if a[k].is_floating_point()}
    for i, t in enumerate(surf.x):
        s = _combine(a, [(t, diff)])
        s["1.running_var"] = s["1.running_var"].clamp_min(0)
        assert surf.loss[i] == pytest.approx(_naive_loss(s), rel=1e-5), t
    assert surf.loss[2] == pytest.approx(_naive_loss(a), rel=1e-5)  # x = 0: the model
    assert surf.loss[6] == pytest.approx(_naive_loss(b), rel=1e-5)  # x = 1: the checkpoint
    assert surf.x_label == f"interpolation {bn_module} → {b_path.name}"  # the model as given and the file
    assert "beyond the models (x or y outside 0..1) BatchNorm's running_var is extrapolated and clamped at 0" in \
        capsys.readouterr().err
    marks = next(t for t in lnb.plot.line(surf).data if t.name == "models")  # the figure marks both, by file
    assert list(marks.text) == [bn_module, b_path.name]
    assert np.asarray(marks.y) == pytest.approx([_naive_loss(a), _naive_loss(b)], rel=1e-5)
    assert main(["compute", bn_module, "--grid", "3", "--model-file2", str(b_path), "--range", "0.2:0.8",
                 "--store", str(tmp_path / "inner.zarr")]) == 0
    err = capsys.readouterr().err.replace("\u00a0", " ")
    said = (f"landscape-nb: note: {bn_module} and {b_path.name} at x = 0 and 1 lie outside --range 0.2:0.8, so the "
            "figure does not show their loss; --range 0:1 puts them on the grid")
    assert said in err and err.count("outside") == 1, err  # said once, before the run (it was said again after)


def test_a_checkpoint_with_nan_weights_is_named_by_its_flag(bn_module, tmp_path, capsys):
    """W: a NaN in --model-file2 was refused as "model b: ...", the API's name, which the CLI never showed."""
    b_path, c_path = _checkpoints(tmp_path, 2)
    state = torch.load(b_path)
    state["0.weight"][0, 0] = float("nan")
    torch.save(state, b_path)
    for extra in (["--grid", "9"], ["--grid", "5x5", "--model-file3", str(c_path)]):
        assert main(["compute", bn_module, *extra, "--model-file2", str(b_path), "--store", "x.zarr"]) == 2
        err = capsys.readouterr().err
        assert f"error: --model-file2 {b_path}: the model's param '0.weight' holds 1 non-finite value" in err, err
        assert "model b" not in err


def _state_of(model) -> dict:
    return {k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()}


def test_a_plane_of_files_that_give_none_names_the_files(bn_module, tmp_path, capsys):
    from bn_models import build

    (b_path,) = _checkpoints(tmp_path, 1)
    torch.save(build().state_dict(), tmp_path / "same.pt")
    assert main(["compute", bn_module, "--grid", "3x3", "--model-file2", str(tmp_path / "same.pt"),
                 "--model-file3", str(b_path), "--store", str(tmp_path / "p.zarr")]) == 2
    assert (f"landscape-nb: error: --model-file2 {tmp_path / 'same.pt'} holds the same weights as the model, so the "
            "plane's axis to it has no length") in capsys.readouterr().err
    assert main(["compute", bn_module, "--grid", "3x3", "--model-file2", str(b_path), "--model-file3", str(b_path),
                 "--store", str(tmp_path / "p.zarr")]) == 2
    assert (f"landscape-nb: error: --model-file2 {b_path} and --model-file3 {b_path} lie on one line through the "
            "model (they are the same model), so the two axes span a line, not a plane; expected three models not "
            "on one line: another checkpoint for --model-file3\n") in capsys.readouterr().err


def test_model_file3_gives_the_plane_through_three_models_from_wrapped_checkpoints(bn_module, tmp_path):
    """The plane a + x(b − a) + y(c − a); ``c`` saved as a trainer's dict with a DataParallel state dict
    (``{"state_dict": {"module.0.weight": ...}, "epoch": 7}``) reads as the same tensors."""
    from bn_models import build

    b_path, c_plain = _checkpoints(tmp_path, 2)
    c_path = tmp_path / "trainer.pt"
    wrapped = torch.nn.DataParallel(build())
    wrapped.module.load_state_dict(torch.load(c_plain, weights_only=True))
    torch.save({"state_dict": wrapped.state_dict(), "epoch": 7, "acc": 91.5}, c_path)
    store = tmp_path / "plane.zarr"
    assert main(["compute", bn_module, "--grid", "5x4", "--model-file2", str(b_path), "--model-file3", str(c_path),
                 "--store", str(store)]) == 0
    surf = lnb.load_surface(store)
    assert surf.provenance["directions"]["scheme"] == "plane3" and surf.loss.shape == (4, 5)
    assert (surf.x_label, surf.y_label) == (f"{bn_module} → {b_path.name}", f"{bn_module} → trainer.pt")
    from landscape_nb.cli import figure_for

    marks = next(t for t in figure_for(surf, "contour").data if t.name == "models")  # named by their files
    assert list(marks.text) == [bn_module, b_path.name, "trainer.pt"] and list(marks.x) == [0, 1, 0]
    runs = [tmp_path / "r1" / "ckpt.pt", tmp_path / "r2" / "ckpt.pt"]  # one file name per run directory: told
    for run, src in zip(runs, (b_path, c_plain)):  # apart by the paths given (two "ckpt.pt" marks, re-trial s49)
        run.parent.mkdir()
        run.write_bytes(src.read_bytes())
    assert main(["compute", bn_module, "--grid", "5x5", "--model-file2", "r1/ckpt.pt", "--model-file3", "r2/ckpt.pt",
                 "--store", str(tmp_path / "runs.zarr")]) == 0
    runs_plane = lnb.load_surface(tmp_path / "runs.zarr")
    marks = next(t for t in figure_for(runs_plane, "contour").data if t.name == "models")
    assert list(marks.text) == [bn_module, "r1/ckpt.pt", "r2/ckpt.pt"]
    assert runs_plane.x_label == f"{bn_module} → r1/ckpt.pt"
    a, b, c = _state_of(build()), _state(b_path), _state(c_plain)
    db = {k: b[k] - a[k] for k in a if a[k].is_floating_point()}
    dc = {k: c[k] - a[k] for k in a if a[k].is_floating_point()}
    for j, yv in enumerate(surf.y):
        for i, xv in enumerate(surf.x):
            s = _combine(a, [(xv, db), (yv, dc)])
            s["1.running_var"] = s["1.running_var"].clamp_min(0)
            assert surf.loss[j, i] == pytest.approx(_naive_loss(s), rel=1e-5), (xv, yv)


def test_checkpoints_give_the_trajectory_pca_plane_with_the_ignore_asked_for(bn_module, tmp_path):
    from bn_models import build

    from landscape_nb.cli import figure_for

    paths = _checkpoints(tmp_path, 4)
    for ignore in ("biasbn", "none"):
        store = tmp_path / f"pca-{ignore}.zarr"
        assert main(["compute", bn_module, "--grid", "4x3", "--ignore", ignore, "--store", str(store),
                     "--checkpoints", *map(str, paths)]) == 0
        surf, d = lnb.load_surface(store), lnb.load_directions(store)
        api = lnb.pca_directions(paths, final=build(), n=2, ignore=None if ignore == "none" else "biasbn")
        assert d.provenance["scheme"] == "pca" and torch.equal(d.vectors, api.vectors)
        moves_bias = bool(d.as_state_dicts()[0]["0.bias"].abs().sum() > 0)
        assert moves_bias == (ignore == "none")
        (lo, hi), step = api.provenance["x_range"], surf.x[1] - surf.x[0]  # the path's own range, moved to hold 0
        assert np.abs(surf.x).min() < 1e-12 and surf.x[0] <= lo + 1e-12 and hi - 1e-12 <= surf.x[-1] < hi + step
        a = _state_of(build())
        d0, d1 = d.as_state_dicts()
        for j, yv in enumerate(surf.y):
            for i, xv in enumerate(surf.x):
                assert surf.loss[j, i] == pytest.approx(_naive_loss(_combine(a, [(xv, d0), (yv, d1)])), rel=1e-5)
    # its figure: the path, each checkpoint named by its file, with its own loss (not only the plane's under it)
    path = next(t for t in figure_for(surf, None).data if t.name == "trajectory")
    assert list(path.text) == list(map(str, paths))
    naive = [_naive_loss(torch.load(p, weights_only=True)) for p in paths]
    np.testing.assert_allclose(d.provenance["path_loss"], naive, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(path.customdata, float)[:, 2], naive, rtol=1e-5)
    assert "true loss: %{customdata[2]" in path.hovertemplate


def test_dir_file_from_the_reference_moves_batchnorm_statistics_as_the_reference_does(bn_module, tmp_path, capsys):
    """A ``states`` direction file written as the reference's ``h5_util.write_list`` writes it (one dataset
    per ``state_dict`` entry, ``num_batches_tracked`` included) is used as saved: no normalization, the
    running statistics moved, NaN (counted, and said on stderr) where the running variance goes negative."""
    h5py = pytest.importorskip("h5py")
    from bn_models import build

    state = build().state_dict()
    g = torch.Generator().manual_seed(3)
    dirs = []
    for _ in range(2):
        d = {k: (0.2 * torch.randn(v.shape, generator=g) if v.is_floating_point() else torch.zeros_like(v))
             for k, v in state.items()}
        dirs.append(d)
    dirs[0]["1.running_var"] = torch.full((8,), 1.5)  # past x = -2/3 the variance is negative
    dirs[1]["1.running_var"] = torch.zeros(8)
    path = tmp_path / "ref_dirs.h5"
    with h5py.File(path, "w") as f:
        for axis, d in zip(("xdirection", "ydirection"), dirs):
            grp = f.create_group(axis)
            for k, name in enumerate(state):
                grp.create_dataset(str(k), data=d[name].numpy())
    store = tmp_path / "ref.zarr"
    assert main(["compute", bn_module, "--grid", "5x3", "--dir-file", str(path), "--store", str(store),
                 "--h5", str(tmp_path / "surf.h5")]) == 0
    err = capsys.readouterr().err
    surf = lnb.load_surface(store)
    assert surf.provenance["directions"]["dir_type"] == "states"
    with h5py.File(tmp_path / "surf.h5") as f:  # as every reference surface file records it (trial s35)
        assert f["dir_file"][()].decode() == str(path)
    a = _state_of(build())
    naive = np.array([[_naive_loss(_combine(a, [(xv, dirs[0]), (yv, dirs[1])])) for xv in surf.x] for yv in surf.y])
    assert np.isnan(naive[:, 0]).all() and not np.isnan(naive[:, 1:]).any()  # x = -1 only
    np.testing.assert_array_equal(np.isnan(surf.loss), np.isnan(naive))
    np.testing.assert_allclose(surf.loss[:, 1:], naive[:, 1:], rtol=1e-5)
    assert surf.n_diverged == 3 and "diverged (NaN or inf) at 3 of 15 points" in err
    # the file read as 'weights' does not fit: refused, naming the mismatch
    assert main(["compute", bn_module, "--grid", "5x3", "--dir-file", str(path), "--dir-type", "weights",
                 "--store", str(tmp_path / "w.zarr")]) == 2
    assert "do not fit Sequential (as 'weights': " in capsys.readouterr().err


def test_dir_file_from_directions_save_and_from_a_store(bn_module, tmp_path):
    """An ``.npz`` of ``Directions.save`` gives the naive loop's values; a store's kept directions (``.zarr``)
    give the first run's values exactly, with its suggested range."""
    from bn_models import build

    d = lnb.random_directions(build(), n=1, seed=5, norm="layer")
    d.save(tmp_path / "d.npz")
    first = tmp_path / "first.zarr"
    assert main(["compute", bn_module, "--grid", "7", "--range", "-0.5:0.5", "--dir-file", str(tmp_path / "d.npz"),
                 "--store", str(first)]) == 0
    surf = lnb.load_surface(first)
    a = _state_of(build())
    (d0,) = d.as_state_dicts()
    for i, xv in enumerate(surf.x):
        assert surf.loss[i] == pytest.approx(_naive_loss(_combine(a, [(xv, d0)])), rel=1e-5)
    (b_path,) = _checkpoints(tmp_path, 1)
    line = tmp_path / "line.zarr"
    assert main(["compute", bn_module, "--grid", "5", "--model-file2", str(b_path), "--store", str(line)]) == 0
    again = tmp_path / "again.zarr"
    assert main(["compute", bn_module, "--grid", "5", "--dir-file", str(line), "--store", str(again)]) == 0
    np.testing.assert_array_equal(lnb.load_surface(again).loss, lnb.load_surface(line).loss)
    np.testing.assert_array_equal(lnb.load_surface(again).x, np.linspace(-0.5, 1.5, 5))


@pytest.mark.parametrize("extra, words", [
    (["--grid", "7", "--dir-type", "weights"], ("--dir-type weights says what a reference direction file lists; it "
                                               "was given without --dir-file")),
    (["--grid", "7", "--dir-file", "d.npz", "--model-file2", "b.pt"], ("--dir-file d.npz and --model-file2 were both "
                                                                      "given")),
    (["--grid", "7", "--dir-file", "d.npz", "--directions", "random"], "so --directions random could not be used"),
    (["--grid", "7", "--dir-file", "d.npz", "--dir-type", "states"], "which is not a reference .h5 file"),
    (["--grid", "7", "--model-file3", "c.pt"], "--model-file3 c.pt was given without --model-file2"),
    (["--grid", "5x5", "--model-file2", "b.pt"], ("--model-file2 gives the line from the model to that checkpoint "
                                                 "('interpolate'), but --grid 5x5 is 2D: use a 1D --grid")),
    (["--grid", "7", "--model-file2", "b.pt", "--model-file3", "c.pt"], ("give the plane through three models "
                                                                        "('plane3'), but --grid 7 is 1D")),
    (["--grid", "7", "--model-file2", "b.pt", "--directions", "random"], ("--directions random was given, but "
                                                                         "--model-file2 gives the line")),
    (["--grid", "7", "--model-file2", "b.pt", "--norm", "layer"], ("--norm layer does not apply to --directions "
                                                                  "interpolate; it is read by --directions random "
                                                                  "and random-orthogonal only: drop --norm")),
    (["--grid", "5x5", "--dir-file", "d.npz", "--seed", "3"], "--seed 3 does not apply to --dir-file d.npz"),
    (["--grid", "5x5", "--directions", "hessian", "--ignore", "none"], ("--ignore none does not apply to --directions "
                                                                       "hessian")),
    (["--grid", "5x5", "--directions", "random", "--checkpoints", "a.pt", "b.pt", "c.pt"],
     "--checkpoints was given with --directions random"),
    # after the model loads: the files themselves
    (["--grid", "5x5", "--dir-file", "nothing.h5"], "--dir-file nothing.h5: no such file or directory"),
    (["--grid", "5x5", "--dir-file", "bn_models.py"], ("--dir-file 'bn_models.py'; expected a reference direction "
                                                      "file (.h5")),
    (["--grid", "5x5", "--dir-file", "d.npz"], ("--dir-file d.npz holds 1 direction(s), but --grid is 2D; they give "
                                               "a line: --grid 51")),
    (["--grid", "5x5", "--dir-file", "d4.npz"], "holds 4 direction(s), but --grid is 2D; a grid has 1 to 3 axes"),
    (["--grid", "7", "--dir-file", "other.npz"], ("--dir-file other.npz: the directions were made for another "
                                                  "architecture (10 values) than the model (83 values)")),
    (["--grid", "7", "--model-file2", "nothing.pt"], "--model-file2 nothing.pt: no such file; expected a path"),
    # the API's 0-based "checkpoint 1" is the file named; its "n=2 principal directions" the --grid
    (["--grid", "5x5", "--checkpoints", "other.pt", "nothing.pt"], "--checkpoints nothing.pt: no such file"),
    (["--grid", "5x5", "--checkpoints", "part.pt"], ("1 checkpoint(s) for 2 principal directions (a 2D --grid); "
                                                    "expected at least 3 (k checkpoints span at most k − 1 "
                                                    "directions): save more checkpoints during training")),
    (["--grid", "5x5", "--checkpoints", "part.pt", "part.pt"], ("save more checkpoints during training, or draw a "
                                                                "line of one direction (a 1D --grid, e.g. --grid 21)")),
    (["--grid", "5x5", "--checkpoints", "part.pt", "part.pt", "part.pt"], ("that the model has; the checkpoints come "
                                                                          "from another architecture than the model: "
                                                                          "pass checkpoints saved from this model")),
    (["--grid", "5", "--checkpoints", "part.pt"], ("1 checkpoint(s) for 1 principal directions (a 1D --grid); "
                                                  "expected at least 2 (k checkpoints span at most k − 1 directions): "
                                                  "save more checkpoints during training")),
    (["--grid", "5x5", "--checkpoints", "other.pt", "part.pt", "other.pt"],
     "--checkpoints other.pt: tensor '0.weight' has shape (3, 4)"),
    (["--grid", "7", "--model-file2", "other.pt"], ("--model-file2 other.pt does not fit Sequential: tensor "
                                                   "'0.weight' has shape (3, 4) there, (8, 4) in the model")),
    (["--grid", "7", "--model-file2", "part.pt"], ("--model-file2 part.pt does not fit Sequential: 6 tensor(s) of "
                                                  "the model missing from it (e.g. ['1.bias',")),
    (["--grid", "7", "--model-file2", "trainer.pt"], ("--model-file2 trainer.pt: 'trainer.pt' holds a dict of ['acc', "
                                                     "'epoch', 'weights'] with no state dict at its top level or "
                                                     "under 'state_dict', 'model_state_dict'")),
    # an unset shell variable: random directions were computed instead
    (["--grid", "7", "--model-file2", ""], "--model-file2 '' is empty; expected a file path"),
    (["--grid", "5x5", "--model-file2", "b.pt", "--model-file3", " "], "--model-file3 ' ' is empty"),
    (["--grid", "5x5", "--dir-file", ""], "--dir-file '' is empty"),
    (["--grid", "5x5", "--checkpoints", "a.pt", "", "c.pt"], "--checkpoints '' is empty"),
    (["--grid", "5x5", "--html", ""], "--html '' is empty"),
    (["--grid", "7", "--model-file2", "whole.pt"], ("(it pickles a torch.nn.modules.linear.Linear, which a "
                                                   "weights-only load does not rebuild)")),
    (["--grid", "7", "--directions", "interpolate"], "for your own, give its checkpoint (CLI: --model-file2 FILE.pt)"),
    (["--grid", "5x5", "--directions", "pca"],
     "the model has 0; for yours, give them (CLI: --checkpoints A.pt B.pt ...,"),
])
def test_bad_direction_flags_exit_2_with_one_line_reason(bn_module, tmp_path, capsys, extra, words):
    from bn_models import build

    lnb.random_directions(build(), n=1, seed=0).save(tmp_path / "d.npz")
    lnb.random_directions(build(), n=4, seed=0).save(tmp_path / "d4.npz")
    lnb.random_directions(torch.nn.Linear(4, 2), n=1, seed=0).save(tmp_path / "other.npz")
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 3)).state_dict(), tmp_path / "other.pt")
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 8)).state_dict(), tmp_path / "part.pt")
    torch.save({"weights": build().state_dict(), "epoch": 3, "acc": 0.5}, tmp_path / "trainer.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole.pt")
    assert main(["compute", bn_module, "--store", str(tmp_path / "s.zarr"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("landscape-nb: error:") and words in err and "\n" not in err


@pytest.mark.parametrize("first, then, words", [
    (["--model-file2", "ckpt0.pt", "--model-file3", "ckpt1.pt"], ["--model-file2", "ckpt0.pt", "--model-file3",
     "ckpt2.pt"], "directions' model_file3 (CLI --model-file3): 'ckpt1.pt' stored, 'ckpt2.pt' now"),
    (["--checkpoints", "ckpt0.pt", "ckpt1.pt", "ckpt2.pt"], ["--checkpoints", "ckpt0.pt", "ckpt1.pt", "ckpt3.pt"],
     ("directions' checkpoints (CLI --checkpoints): ['ckpt0.pt', 'ckpt1.pt', 'ckpt2.pt'] stored, "
      "['ckpt0.pt', 'ckpt1.pt', 'ckpt3.pt'] now")),
    (["--dir-file", "a.npz"], ["--dir-file", "b.npz"],
     "directions' dir_file (CLI --dir-file): 'a.npz' stored, 'b.npz' now"),
])
def test_a_resume_refused_for_another_direction_file_names_the_flag_and_both_files(bn_module, tmp_path, capsys,
                                                                                     first, then, words):
    """The direction vectors differ and the files they were read from are the one readable difference: the
    refusal names the flag and both file names, not two fingerprints."""
    from bn_models import build

    _checkpoints(tmp_path, 4)
    for k, name in enumerate(("a.npz", "b.npz")):
        lnb.random_directions(build(), n=2, seed=k).save(tmp_path / name)
    store = str(tmp_path / "s.zarr")
    assert main(["compute", bn_module, "--grid", "5x5", "--store", store, *first]) == 0
    capsys.readouterr()
    assert main(["compute", bn_module, "--grid", "5x5", "--store", store, *then]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "fingerprint" not in err and "\n" not in err, err
    assert "--seed" not in err  # the seeds differ, but they are the files' (--seed is refused with --dir-file)
    assert main(["compute", bn_module, "--grid", "5x5", "--store", store, *first]) == 0  # the same files resume


def test_checkpoints_before_the_model_say_where_the_model_went(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compute", "--checkpoints", "a.pt", "b.pt", "mlp-digits"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "put the model before --checkpoints" in err


def test_the_default_store_name_of_a_command_without_the_new_flags_is_unchanged():
    """Flags added after the first release are hashed only when given, so a run made before them resumes
    under the same ``runs/...zarr`` name; the name is rebuilt here from the arguments the CLI had then."""
    args = build_parser().parse_args(["compute", "mlp-digits", "--grid", "31x31", "--seed", "2"])
    check_direction_flags(args, 2)
    before = {"model": "mlp-digits", "grid": "31x31", "range": None, "yrange": None, "zrange": None,
              "directions": "random", "quantity": "loss", "tol": None, "norm": "filter", "ignore": "biasbn", "seed": 2,
              "split": None, "max_samples": None, "target_key": None, "mode": "eval", "precision": "fp32",
              "compile": False, "compile_mode": None, "channels_last": False, "tile": None}
    digest = hashlib.sha256(json.dumps(dict(sorted(before.items())), default=str).encode()).hexdigest()[:8]
    assert default_store(args).endswith(f"mlp-digits-31x31-{digest}.zarr")
    with_file = build_parser().parse_args(["compute", "mlp-digits", "--grid", "31", "--model-file2", "b.pt"])
    check_direction_flags(with_file, 1)
    plain = build_parser().parse_args(["compute", "mlp-digits", "--grid", "31", "--directions", "interpolate"])
    check_direction_flags(plain, 1)
    assert default_store(with_file) != default_store(plain)  # another endpoint, another store


def _wrapped_formats(state):
    """The same state dict as trainers save it: (file name, object saved)."""
    from collections import OrderedDict

    def prefixed(prefix):
        out = OrderedDict((prefix + k, v) for k, v in state.items())
        out._metadata = OrderedDict((prefix + k if k else prefix[:-1], v) for k, v in state._metadata.items())
        return out

    old = OrderedDict((k, v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    old._metadata = OrderedDict((k, dict(v)) for k, v in state._metadata.items())
    old._metadata["1"]["version"] = 1  # BatchNorm before num_batches_tracked (the reference's era)
    return [("tutorial.pt", {"model_state_dict": state, "optimizer_state_dict": {"state": {}}, "epoch": 4}),
            ("model_key.pt", {"model": state, "epoch": 4}),
            ("dataparallel.pt", {"state_dict": prefixed("module."), "epoch": 4, "acc": 91.0}),
            ("compiled.pt", prefixed("_orig_mod.")),
            ("lightning.pt", {"state_dict": prefixed("model."), "epoch": 4, "global_step": 80}),
            ("old_batchnorm.pt", {"state_dict": old, "epoch": 300}),
            ("compiled_dataparallel.pt", prefixed("_orig_mod.module."))]


def test_trainers_checkpoint_formats_read_as_the_plain_state_dict(bn_module, tmp_path):
    """``--model-file2`` and ``--checkpoints`` read the formats trainers save (PyTorch's tutorial's
    ``model_state_dict``, ``{"model": ...}``, DataParallel's ``module.``, torch.compile's ``_orig_mod.``, a
    Lightning module's ``model.``, an old BatchNorm without ``num_batches_tracked``) as the plain file: the
    same surface, bit for bit. ``--checkpoints`` refused ``module.`` files as "another architecture"."""
    paths = _checkpoints(tmp_path, 3)
    plain = tmp_path / "plain.zarr"
    assert main(["compute", bn_module, "--grid", "5", "--model-file2", str(paths[0]), "--store", str(plain)]) == 0
    want = lnb.load_surface(plain).loss
    state = torch.load(paths[0], weights_only=True)
    for name, obj in _wrapped_formats(state):
        torch.save(obj, tmp_path / name)
        store = tmp_path / f"{name}.zarr"
        assert main(["compute", bn_module, "--grid", "5", "--model-file2", str(tmp_path / name),
                     "--store", str(store)]) == 0, name
        np.testing.assert_array_equal(lnb.load_surface(store).loss, want, err_msg=name)
    pca = tmp_path / "pca.zarr"
    assert main(["compute", bn_module, "--grid", "3x3", "--store", str(pca), "--checkpoints", *map(str, paths)]) == 0
    for name, _ in _wrapped_formats(state)[:4]:  # the first checkpoint in that format, the others plain
        store = tmp_path / f"pca-{name}.zarr"
        assert main(["compute", bn_module, "--grid", "3x3", "--store", str(store), "--checkpoints",
                     str(tmp_path / name), *map(str, paths[1:])]) == 0, name
        assert torch.equal(lnb.load_directions(store).vectors, lnb.load_directions(pca).vectors), name


def test_a_float64_models_reference_file_keeps_float64_and_its_own_checkpoint_warns(tmp_path, monkeypatch, capsys):
    """A float64 direction file for a float64 model is used in float64 (rounded to float32 it was 3e-5 off
    near a running_var reaching 0); a --model-file2 of the model's own weights says its line is a point."""
    h5py = pytest.importorskip("h5py")
    (tmp_path / "f64_models.py").write_text(BN_MODULE.replace(".eval()", ".double().eval()").replace(
        "x = torch.randn(96, 4, generator=g)", "x = torch.randn(96, 4, generator=g, dtype=torch.float64)"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from f64_models import build

    state = build().state_dict()
    g = torch.Generator().manual_seed(4)
    dx = {k: 0.3 * torch.randn(v.shape, generator=g, dtype=torch.float64) if v.is_floating_point() else v * 0
          for k, v in state.items()}
    dx["1.running_var"] = torch.full((8,), 0.9, dtype=torch.float64)  # 0 at x = -1/0.9 · running_var
    with h5py.File(tmp_path / "d64.h5", "w") as f:
        grp = f.create_group("xdirection")
        for k, name in enumerate(state):
            grp.create_dataset(str(k), data=dx[name].numpy())
    store = tmp_path / "f64.zarr"
    assert main(["compute", "f64_models:make", "--grid", "9", "--range", "-1.1:1", "--dir-file",
                 str(tmp_path / "d64.h5"), "--store", str(store)]) == 0
    surf = lnb.load_surface(store)
    from f64_models import make

    _, (x, y) = make()
    for i, t in enumerate(surf.x):
        m = build()
        m.load_state_dict({k: v + t * dx[k] if v.is_floating_point() else v for k, v in state.items()})
        with torch.no_grad():
            assert surf.loss[i] == pytest.approx(float(F.cross_entropy(m(x), y)), rel=1e-12), t
    torch.save(build().state_dict(), tmp_path / "same.pt")
    capsys.readouterr()
    assert main(["compute", "f64_models:make", "--grid", "3", "--model-file2", str(tmp_path / "same.pt"),
                 "--store", str(tmp_path / "same.zarr")]) == 0
    err = capsys.readouterr().err  # the package's warning, in the CLI's words (not a Python file and line)
    assert ("landscape-nb: warning: the line interpolation f64_models:make → same.pt has no length: f64_models:make "
            "and same.pt hold the same weights") in err  # the file by name, not "direction 0" of the API
    assert "UserWarning" not in err and err.count("has no length") == 1


def test_notes_and_names_a_user_of_checkpoint_files_needs(bn_module, tmp_path, capsys):
    """A bad checkpoint among --checkpoints is named by its file; the models of a path falling between grid
    points is said, with a grid size that has them (naive: np.linspace's points); ./a.pt and a.pt share a
    default store."""
    paths = _checkpoints(tmp_path, 3)
    nan = {k: v * float("nan") if v.is_floating_point() else v for k, v in torch.load(paths[1]).items()}
    torch.save(nan, tmp_path / "diverged.pt")
    assert main(["compute", bn_module, "--grid", "3x3", "--store", str(tmp_path / "p.zarr"), "--checkpoints",
                 str(paths[0]), str(tmp_path / "diverged.pt"), str(paths[2])]) == 2
    assert f"--checkpoints {tmp_path / 'diverged.pt'}: tensor '0.weight' holds" in capsys.readouterr().err
    assert main(["compute", bn_module, "--grid", "51", "--model-file2", str(paths[0]),
                 "--store", str(tmp_path / "l.zarr")]) == 0  # the suggested -0.5:1.5, moved to hold 0 and 1
    assert " sit at x" not in capsys.readouterr().err
    x = lnb.load_surface(tmp_path / "l.zarr").x
    assert np.abs(x).min() < 1e-12 and np.abs(x - 1).min() < 1e-12 and x[0] <= -0.45 and x[-1] >= 1.45, x
    assert main(["compute", bn_module, "--grid", "51", "--model-file2", str(paths[0]), "--range", "-0.5:1.5",
                 "--store", str(tmp_path / "l-typed.zarr")]) == 0  # a typed range is the user's: a note
    err = capsys.readouterr().err
    assert not np.isclose(np.linspace(-0.5, 1.5, 51), 0).any() and np.isclose(np.linspace(-0.5, 1.5, 53), 0).any()
    name = Path(paths[0]).name  # the models by name: the file sits at 1, the model as given at 0
    assert f"{bn_module} and {name} sit at x = 0 and 1, between the points of 51 on -0.5:1.5; --grid 53 puts them" in err
    assert main(["compute", bn_module, "--grid", "10", "--model-file2", str(paths[0]), "--range", "0:1.3",
                 "--store", str(tmp_path / "l-10.zarr")]) == 0
    err = capsys.readouterr().err
    assert f"note: {name} sits at x = 1, between the points of 10 on 0:1.3; --grid 14 puts it" in err
    assert main(["compute", bn_module, "--grid", "41", "--model-file2", str(paths[0]),
                 "--store", str(tmp_path / "l41.zarr")]) == 0
    assert " sit at x" not in capsys.readouterr().err
    a = build_parser().parse_args(["compute", bn_module, "--grid", "9", "--model-file2", "./ck/../ckpt0.pt"])
    b = build_parser().parse_args(["compute", bn_module, "--grid", "9", "--model-file2", "ckpt0.pt"])
    for args in (a, b):
        check_direction_flags(args, 1)
    assert default_store(a) == default_store(b)


def test_the_figures_title_says_how_the_run_was_made(bn_module, tmp_path):
    """The CLI's figures were titled by the model alone: a plane with BatchNorm statistics re-estimated at each
    point, on 40 of 96 samples, with biases moved, read as the eval-mode plane of every sample (the values differ)."""
    from standalone_html import figure_json

    html = tmp_path / "made.html"
    assert main(["compute", bn_module, "--grid", "3x3", "--mode", "bn-recompute", "--max-samples", "40",
                 "--ignore", "none", "--seed", "4", "--store", str(tmp_path / "made.zarr"), "--html", str(html)]) == 0
    title = figure_json(html.read_text())["layout"]["title"]["text"]
    assert title == ("bn_models:make: random (filter-normalized, biases/BN moved too) directions, seed 4, 40 of 96 "
                     "samples, BN statistics re-estimated per point, 3×3 points")
    assert main(["plot", str(tmp_path / "made.zarr"), "--html", str(tmp_path / "again.html")]) == 0
    assert figure_json((tmp_path / "again.html").read_text())["layout"]["title"]["text"] == title
    assert main(["compute", bn_module, "--grid", "3", "--model-file2", str(_checkpoints(tmp_path, 1)[0]),
                 "--store", str(tmp_path / "line.zarr"), "--html", str(html)]) == 0
    line = figure_json(html.read_text())["layout"]["title"]["text"]
    assert line == "bn_models:make: the line between two models, 3 points"


def test_checkpoints_from_a_shells_glob_are_taken_in_the_order_of_their_numbers(bn_module, tmp_path, capsys):
    """``--checkpoints ckpt/ckpt*.pt`` as a shell expands it (ckpt0, ckpt1, ckpt10, ckpt11, ckpt2, ...): the path
    is drawn in the order of the files' numbers, said in a warning in the CLI's words (trial s59: a crossed path,
    no word); the stored path's labels run in that order, and its coordinates are the ordered run's."""
    paths = _checkpoints(tmp_path, 12)
    text_order = sorted(str(p) for p in paths)
    assert main(["compute", bn_module, "--grid", "3x3", "--store", str(tmp_path / "glob.zarr"),
                 "--checkpoints", *text_order]) == 0
    err = capsys.readouterr().err
    assert ("landscape-nb: warning: the checkpoint files were given in the order ckpt0.pt, ckpt1.pt, ckpt10.pt, "
            "ckpt11.pt, ckpt2.pt, ckpt3.pt, ..., the order text sorts them in (a shell's glob, sorted()), not that "
            "of the number in their names") in err, err
    assert err.count("were given in the order") == 1  # said once
    assert "to keep yours, name the files so that their numbers run in training order" in err
    assert main(["compute", bn_module, "--grid", "3x3", "--store", str(tmp_path / "ordered.zarr"),
                 "--checkpoints", *map(str, paths)]) == 0
    assert "were given in the order" not in capsys.readouterr().err
    got, want = (lnb.load_directions(tmp_path / f"{s}.zarr").provenance for s in ("glob", "ordered"))
    assert got["path_labels"] == want["path_labels"] == [f"ckpt{i}" for i in range(12)]
    assert got["path_x"] == want["path_x"] and got["path_y"] == want["path_y"]
    # each point's file and true loss are its own (review s59: they stayed in the glob's order, so epoch2's point
    # was named ckpt10.pt with ckpt10's loss)
    assert got["checkpoints"] == want["checkpoints"] == [str(p) for p in paths]
    naive = [_naive_loss(torch.load(p, weights_only=True)) for p in paths]  # each file's own loss, in order
    np.testing.assert_allclose(got["path_loss"], naive, rtol=1e-5)
    # and a message naming "checkpoint k" names its file (review s59: it named the file at k in the glob's order)
    from bn_models import build

    broken = {k: v for k, v in build().state_dict().items() if k != "3.bias"}
    torch.save(broken, paths[10])
    assert main(["compute", bn_module, "--grid", "3x3", "--store", str(tmp_path / "broken.zarr"),
                 "--checkpoints", *text_order]) == 2
    err = capsys.readouterr().err
    assert f"--checkpoints {paths[10]}" in err and f"--checkpoints {paths[2]}" not in err, err
