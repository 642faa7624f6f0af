"""The CLI end to end, on a user's own model (module:function) and on saved stores."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import landscape_nb as lnb
from landscape_nb.cli import main

USER_MODULE = '''
import torch
from torch import nn

def make():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    return model, (x, (x[:, 0] > 0).long())

def make_split(split="test"):
    model, (x, y) = make()
    return model, (x[:40], y[:40]) if split == "train" else (x[40:], y[40:])

def state():
    model, data = make()
    return model.state_dict(), data

def one():
    return (make()[0],)

def three():
    model, (x, y) = make()
    return model, x, y

def nan_loss():
    model, data = make()
    return model, data, lambda out, y: nn.functional.cross_entropy(out, y) * float("nan")

def make_negative():
    model, data = make()
    return model, data, lambda out, y: nn.functional.cross_entropy(out, y) - 10.0

class OwnLoss(nn.Module):  # computes its own loss from the labels: a Gaussian NLL, below 0
    def __init__(self):
        super().__init__()
        self.mu, self.log_sigma = nn.Linear(4, 2), nn.Parameter(torch.full((2,), -3.0))

    def forward(self, inputs, labels=None):
        mean = self.mu(inputs)
        return {"loss": (self.log_sigma + 0.5 * ((labels - mean) / self.log_sigma.exp()) ** 2).mean(), "logits": mean}

def own_negative_loss():
    torch.manual_seed(0)
    model, x = OwnLoss(), torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model, {"inputs": x, "labels": model.mu(x) + 0.01}

def train_mode(eval=False):  # as a module is built: in train mode, its Dropout on, its BatchNorm on batch statistics
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 2))
    model[1].running_mean.fill_(0.3), model[1].running_var.fill_(2.0)
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    return model.eval() if eval else model, (x, (x[:, 0] > 0).long())

def in_eval_mode():
    return train_mode(eval=True)

def plus_minus_one():
    model, (x, y) = make()
    return model, (x, 2 * y - 1), lambda out, t: nn.functional.cross_entropy(out, (t + 1) // 2)
'''


@pytest.fixture
def user_model(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_models:make"


def test_compute_store_and_html_then_plot(user_model, tmp_path, capsys):
    store, html = tmp_path / "s.zarr", tmp_path / "s.html"
    assert main(["compute", user_model, "--grid", "5x4", "--range", "-1:1", "--yrange", "-0.5:0.5",
                 "--store", str(store), "--html", str(html), "--tile", "2x3"]) == 0
    surf = lnb.load_surface(store)
    assert surf.loss.shape == (4, 5) and surf.is_complete
    np.testing.assert_allclose(surf.y, np.linspace(-0.5, 0.5, 4))
    # 4 points on -0.5:0.5 miss the trained model (naive: np.linspace), 5 hold it; x's 5 on -1:1 hold it
    assert not np.isclose(np.linspace(-0.5, 0.5, 4), 0).any() and np.isclose(np.linspace(-0.5, 0.5, 5), 0).any()
    err = capsys.readouterr().err
    assert "note: the model sits at y = 0, between the points of 4 on -0.5:0.5; --grid 5x5 puts it on the grid" in err
    assert "sits at x" not in err
    assert "lies between" not in err  # the API's ModelOffGrid warning: the CLI said it above, with its flags
    text = html.read_text()
    assert "plotly" in text and '"type":"surface"' in text.replace(" ", "")
    out = tmp_path / "c.html"
    assert main(["plot", str(store), "--kind", "contour", "--html", str(out)]) == 0
    assert '"type":"contour"' in out.read_text().replace(" ", "")
    # another tiling is refused in the CLI's words
    assert main(["compute", user_model, "--grid", "5x4", "--range", "-1:1", "--yrange", "-0.5:0.5",
                 "--store", str(store), "--tile", "2x2"]) == 2
    assert "was tiled (2, 3), now (2, 2) was asked; pass tile=None or the stored tile to resume it (CLI: leave " \
        "out --tile)" in capsys.readouterr().err
    # rerun resumes: nothing left to compute, same values
    assert main(["compute", user_model, "--grid", "5x4", "--range", "-1:1", "--yrange", "-0.5:0.5",
                 "--store", str(store), "--tile", "2x3"]) == 0
    np.testing.assert_array_equal(lnb.load_surface(store).loss, surf.loss)


def test_the_default_range_of_an_even_grid_stays_minus_one_to_one_with_a_note(user_model, tmp_path, capsys):
    """`--help` says the default is -1:1; an even count was given a moved range instead (4 points:
    -2..1, twice as long) without a word. Now the grid is np.linspace(-1, 1, n), and a note says the model
    falls between its points, with a --grid that holds it."""
    store = tmp_path / "even.zarr"
    assert main(["compute", user_model, "--grid", "6x4", "--store", str(store)]) == 0
    surf = lnb.load_surface(store)
    np.testing.assert_array_equal(surf.x, np.linspace(-1, 1, 6))
    np.testing.assert_array_equal(surf.y, np.linspace(-1, 1, 4))
    err = capsys.readouterr().err
    assert "note: the model sits at x = 0, between the points of 6 on -1:1\n" in err  # one --grid for both axes:
    assert "note: the model sits at y = 0, between the points of 4 on -1:1; --grid 7x5 puts it on the grid" in err
    assert "0, between" in err and not np.isclose(np.linspace(-1, 1, 6), 0).any()  # naive: 7 and 5 points hold 0
    assert np.isclose(np.linspace(-1, 1, 7), 0).any() and np.isclose(np.linspace(-1, 1, 5), 0).any()
    assert main(["compute", user_model, "--grid", "4x4x4", "--store", str(tmp_path / "even3.zarr")]) == 0
    err = capsys.readouterr().err  # axes missed alike: one note, which gives the fix (the x note lacked it, s36)
    assert err.count("note: the model sits at") == 1
    assert ("note: the model sits at x = 0 and y = 0 and z = 0, between the points of 4 on -1:1 on each; --grid 5x5x5 "
            "puts it on the grid\n") in err
    assert main(["compute", user_model, "--grid", "4096", "--range", "-1:1", "--store", str(tmp_path / "big.zarr"),
                 "--max-samples", "8", "--tile", "4096"]) == 0  # no --grid beyond the per-axis limit is suggested
    err = capsys.readouterr().err
    # no --grid beyond the per-axis limit: the range of 4096 points nearest -1:1 that holds it (naive linspace)
    assert "note: the model sits at x = 0, between the points of 4096 on -1:1; --range " in err and "--grid" not in err
    a, b = map(float, err.split("--range ")[1].split()[0].split(":"))
    assert abs(a + 1) < 0.01 and abs(b - 1) < 0.01 and np.abs(np.linspace(a, b, 4096)).min() < 1e-6 * (b - a)
    # within 1e-6 of the range the point is the model's (5e-8 here): no note; the range is said as typed
    assert main(["compute", user_model, "--grid", "5", "--range", "-0.1:0.1000001", "--store", "near.zarr"]) == 0
    assert "note:" not in capsys.readouterr().err
    assert main(["compute", user_model, "--grid", "6", "--range", "-0.1:0.1000001", "--store", "near6.zarr"]) == 0
    assert "between the points of 6 on -0.1:0.1000001; --grid 7 puts it on the grid" in capsys.readouterr().err


def test_a_typed_range_without_the_model_says_so_and_the_range_it_suggests_holds_it(user_model, tmp_path, capsys):
    """W: a typed --range that leaves the model out altogether gave no note at all, and where no count up to
    4n+1 holds the model none was suggested. Now both say so, with a range that holds it; rerun with that
    range, the surface's value at the model is the model's own loss (a naive cross-entropy)."""
    import torch
    from my_models import make

    assert main(["compute", user_model, "--grid", "9x9", "--range", "0.5:1", "--store", "out.zarr"]) == 0
    err = capsys.readouterr().err
    assert "note: the model at x = 0 lies outside --range 0.5:1, so the figure does not show its loss\n" in err
    assert "note: the model at y = 0 lies outside --range 0.5:1, so the figure does not show its loss; " \
        "--range 0:1 puts it on the grid" in err
    assert main(["compute", user_model, "--grid", "9x9", "--range", "0.5:1", "--yrange", "-0.5:0.5",
                 "--store", "out2.zarr"]) == 0  # y holds it: only x is moved, and y keeps its own range
    assert "--range 0:1 puts it on the grid" in capsys.readouterr().err
    # 21 points on -0.31415:1 miss 0, and so do 22..85 (naive linspace): a range near it is suggested
    assert all(np.abs(np.linspace(-0.31415, 1, k)).min() > 1e-6 for k in range(21, 86))
    assert main(["compute", user_model, "--grid", "21", "--range=-0.31415:1", "--store", "miss.zarr"]) == 0
    err = capsys.readouterr().err
    assert "note: the model sits at x = 0, between the points of 21 on -0.31415:1; --range " in err
    suggested = err.split("; --range ")[1].split()[0]
    a, b = map(float, suggested.split(":"))
    assert abs(a + 0.31415) < 0.05 and abs(b - 1) < 0.05
    assert main(["compute", user_model, "--grid", "21", f"--range={suggested}", "--store", "hit.zarr"]) == 0
    assert "note:" not in capsys.readouterr().err
    surf = lnb.load_surface("hit.zarr")
    model, (x, y) = make()
    with torch.no_grad():
        own = float(torch.nn.functional.cross_entropy(model(x), y))
    centre = int(np.argmin(np.abs(surf.x)))
    assert abs(surf.x[centre]) < 1e-6 * (b - a) and surf.loss[centre] == pytest.approx(own, rel=1e-5)


def test_every_grid_the_off_grid_notes_suggest_holds_the_models(capsys):
    """Over random typed ranges (some leaving the models out, some with a model at an end, lines and planes,
    paths between models or not): where a note is printed it ends in a suggestion, and the suggested --grid
    and ranges, read back from the text, put 0 (and 1) on np.linspace's points (within 1e-6 of the range);
    where no note is printed the typed grid already does. The review found a range at 0 with no suggestion."""
    from landscape_nb.cli import note_models_off_grid

    def holds(a, b, n, unit):
        pts = np.linspace(a, b, n)
        return all(a <= m <= b and np.abs(pts - m).min() <= 1e-6 * (b - a) for m in ((0, 1) if unit else (0,)))

    rng = np.random.default_rng(0)
    suggested = 0
    for trial in range(300):
        unit, ndim = bool(trial % 2), 1 + trial % 3 // 2
        grid = tuple(int(v) for v in rng.integers(3, 60, ndim))
        ranges = [tuple(sorted(np.round(rng.uniform(-1.5, 2.5, 2), int(rng.integers(1, 4))))) for _ in grid]
        ranges = [(a, b) if a < b else (a, a + 0.5) for a, b in ranges]
        note_models_off_grid(grid, *ranges, unit=unit, flags=("--range", "--yrange", "--zrange"))
        err = capsys.readouterr().err
        if not err:
            assert all(holds(a, b, n, unit) for (a, b), n in zip(ranges, grid)), (grid, ranges, unit)
            continue
        assert " on the grid\n" in err, err
        words = err.strip().split("; ")[-1].split()
        new_grid, new_ranges = list(grid), list(ranges)
        for flag, value in zip(words[::2], words[1::2]):
            if flag == "--grid":
                new_grid = [int(v) for v in value.split("x")]
            elif flag in ("--range", "--yrange"):
                new_ranges[("--range", "--yrange").index(flag)] = tuple(map(float, value.split(":")))
        assert all(holds(a, b, n, unit) for (a, b), n in zip(new_ranges, new_grid)), (err, grid, ranges, unit)
        suggested += 1
    assert suggested > 150  # most random ranges miss a model


def test_compute_1d_line(user_model, tmp_path):
    store = tmp_path / "line.zarr"
    assert main(["compute", user_model, "--grid", "7", "--store", str(store), "--norm", "layer"]) == 0
    s = lnb.load_surface(store)
    assert s.ndim == 1 and s.loss.shape == (7,)
    assert s.provenance["directions"]["norm"] == "layer"


def test_compile_and_channels_last_reach_the_provenance_and_change_values_only_by_rounding(user_model, tmp_path,
                                                                                           capsys):
    """Rounding only, so provenance and not the spec: the plain run's store resumes with them (trial s34)."""
    plain, fast = tmp_path / "plain.zarr", tmp_path / "fast.zarr"
    assert main(["compute", user_model, "--grid", "3x3", "--store", str(plain)]) == 0
    assert main(["compute", user_model, "--grid", "3x3", "--store", str(fast), "--compile", "--channels-last"]) == 0
    a, b = lnb.load_surface(plain), lnb.load_surface(fast)
    assert (b.provenance["compile"], b.provenance["channels_last"]) == (True, True)
    assert (a.provenance["compile"], a.provenance["channels_last"]) == (False, False)
    assert a.spec == b.spec
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-5)
    capsys.readouterr()
    assert main(["compute", user_model, "--grid", "3x3", "--store", str(plain), "--compile", "--channels-last"]) == 0
    assert "9 from the store" in capsys.readouterr().out
    from landscape_nb.cli import build_parser

    args = build_parser().parse_args(["compute", "--compile-mode", "max-autotune-no-cudagraphs", user_model])
    assert args.compile_mode == "max-autotune-no-cudagraphs" and args.model == user_model
    assert build_parser().parse_args(["compute", "--compile", user_model]).model == user_model  # a plain flag
    with pytest.raises(SystemExit) as info:  # argparse's own refusal, with the modes it takes
        main(["compute", user_model, "--compile-mode", "max_autotune"])
    assert info.value.code == 2
    assert "invalid choice: 'max_autotune'" in capsys.readouterr().err


def test_user_module_is_imported_from_the_current_directory_added_to_sys_path_once(tmp_path, monkeypatch):
    (tmp_path / "cwd_models.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    for _ in range(2):
        assert main(["compute", "cwd_models:make", "--grid", "3", "--store", str(tmp_path / "s.zarr")]) == 0
    assert sys.path.count(str(tmp_path)) == 1
    assert lnb.load_surface(tmp_path / "s.zarr").is_complete


@pytest.mark.parametrize("argv, words", [
    (["compute", "my_models:make", "--grid", "5x"], "--grid '5x'"),
    (["compute", "my_models:make", "--range", "1:-1"], "empty or reversed"),
    (["compute", "my_models:make", "--grid", "1"], "--grid '1' has an axis of 1 point(s); expected at least 2"),
    (["compute", "my_models:make", "--grid", "5x1"], "--grid '5x1' has an axis of 1 point(s)"),
    (["compute", "my_models:make", "--range", "nan:1"], "--range 'nan:1' is not finite"),
    # the reference's --x -1:1:51 (trial s59): told where the count goes
    (["compute", "my_models:make", "--range=-1:1:51"], ("--range '-1:1:51'; expected START:STOP, e.g. -1:1 (the number "
                                                         "of points goes in --grid, e.g. -1:1 with --grid 51")),
    (["compute", "my_models:make", "--grid", "3x3x3", "--zrange", "-1e39:1e39"],
     "--zrange -1e+39:1e+39 takes the weights to"),  # the axis at fault, in the flag that set it
    # both axes from --range: it was "the y range -1e+300..1e+300 ...; expected a smaller y range, e.g. -1..1"
    (["compute", "my_models:make", "--range=-1e300:1e300"], "--range -1e+300:1e+300 takes the weights to"),
    (["compute", "my_models:make", "--range=-1e300:1e300"], "expected a smaller --range, e.g. --range -1:1"),
    (["compute", "my_models:make", "--range=-1e308:1.7e308"], "--range -1e+308:1.7e+308: the coordinates overflow"),
    # trial Y: plane3 with one model file was told to "drop --directions or the model files"
    (["compute", "nosuch_module:make", "--grid", "9x9", "--directions", "plane3", "--model-file2", "b.pt"],
     "--directions plane3 is the plane through three models, and only --model-file2 b.pt was given: add "
     "--model-file3 C.pt"),
    # code in a message stays code (trial Y: "def make(--split test)")
    (["compute", "my_models:make", "--split", "train"], "define it as def make(split='test') returning that split's"),
    (["compute", "my_models", "--grid", "3"], ("'my_models' is an importable module, not a zoo name; expected "
                                               "module:function")),
    (["compute", "my_models:make", "--client", "local", "--workers", "0"], "--workers 0; expected a positive"),
    # in the flags' words, not store='my_models.py' and client='cuda' ... client='local' (trial s53)
    (["compute", "my_models:make", "--grid", "3", "--store", "my_models.py"],
     "--store my_models.py is a regular file, not a directory"),
    (["compute", ":make"], "model ':make'; expected module:function with both parts"),  # was a traceback
    (["compute", "my_models:make", "--client", "local", "--workers", "100000"], "--workers 100000 on a machine"),
    (["compute", "my_models:make", "--tile", "0"], "--tile '0'; expected positive sizes"),
    (["compute", "my_models:make", "--max-samples", "0"], "--max-samples 0; expected a positive number"),
    (["compute", "my_models:make", "--client", "bogus"], "--client 'bogus'; expected none (this process), local"),
    (["compute", "my_models:make", "--client", "tcp://127.0.0.1:9", "--workers", "2"],
     "a running scheduler whose cluster already has its workers"),
    (["compute", "nosuch_module:make"], "cannot load 'nosuch_module:make'"),
    # a relative path gave a raw TypeError ("the 'package' argument is required to perform a relative import")
    (["compute", "./my_models:make"], "cannot load './my_models:make'"),
    (["compute", "./my_models:make"], "not by its path: e.g. mymodels:build for ./mymodels.py"),
    # a file path read as a zoo name, lowercased and dashed: "unknown zoo example '/w/s28/w/my-models.py'"
    (["compute", "/work/My_Models.py"], ("model '/work/My_Models.py' is a file path, not a zoo name or "
                                          "module:function; name the module as Python imports it and the function "
                                          "in it, e.g. My_Models:make for def make() in My_Models.py")),
    (["plot", "/nonexistent/store", "--html", "x.html"], "no landscape store"),
    (["compute", "my_models:state"], "my_models:state returned OrderedDict as the model (first item); expected (model, data"),
    (["compute", "my_models:one"], "my_models:one returned a tuple of 1 item(s); expected (model, data[, loss_fn])"),
    (["compute", "my_models:three"], ("my_models:three returned (model, Tensor, Tensor), three items, the third "
                                      "read as loss_fn; expected (model, data[, loss_fn]) with the data one item: "
                                      "return (model, (x, y))")),  # was data=tensor([[...]]) of type Tensor (s53b)
    # refused before the model loads (the module does not exist): in the flags' words
    (["compute", "nosuch_module:make", "--grid", "9x9", "--tile", "3x3x3"], "--tile 3x3x3 does not fit the 2D --grid 9x9"),
    (["compute", "nosuch_module:make", "--grid", "9", "--tile", "3x3"],
     "--tile 3x3 does not fit the 1D --grid 9; expected N (points per tile) or 1xN"),
    (["compute", "nosuch_module:make", "--grid", "100000x100000"],
     "--grid '100000x100000' has 10000000000 points; expected at most 4096 per axis"),
    (["compute", "nosuch_module:make", "--grid", "3x3x3", "--directions", "pca"],
     "directions 'pca' give a line or a plane; a volume (ndim=3, CLI --grid 21x21x21) needs three directions"),
    (["compute", "nosuch_module:make", "--grid", "9x9", "--directions", "interpolate"],
     "directions 'interpolate' is a 1D scan between two models; asked for ndim=2: use a 1D grid (CLI --grid 51"),
    # export files that could not be written, and a --target-key that could not be used: before the model loads
    (["compute", "nosuch_module:make", "--h5", "out.txt"], "--h5 'out.txt'; expected a file name ending in .h5"),
    (["compute", "nosuch_module:make", "--vtk", "out.vtp"], "--vtk 'out.vtp'; expected a file name ending in .vtk"),
    (["compute", "nosuch_module:make", "--vtk", "."],
     "--vtk '.' is a directory; expected a file path to write, e.g. --vtk 'surface.vtk'"),  # named .vtk (s56)
    (["compute", "nosuch_module:make", "--grid", "3x3x3", "--h5", "v.h5"],
     "the reference's surface files hold a line or a plane: use --vtk FILE.vtk for a volume"),
    (["compute", "nosuch_module:make", "--log"], "--log was given without --html or --vtk"),
    (["compute", "nosuch_module:make", "--target-key", " "], "--target-key ' ' is empty; expected the key of the targets"),
    (["compute", "mlp-digits", "--target-key", "y"],
     "--target-key y was given with the zoo model mlp-digits, whose data are (inputs, targets) pairs"),
])
def test_bad_input_exits_2_with_one_line_reason(user_model, capsys, argv, words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("landscape-nb: error:") and words in err and "\n" not in err


def test_client_cuda_without_dask_cuda_says_so_in_flags(user_model, capsys):
    import importlib.util

    if importlib.util.find_spec("dask_cuda") is not None:
        pytest.skip("dask-cuda is installed here")
    assert main(["compute", user_model, "--grid", "3", "--client", "cuda"]) == 2
    err = capsys.readouterr().err  # it said client='cuda' ... client='local' (trial s53)
    assert "--client cuda needs dask-cuda" in err and "use --client local for CPU workers" in err


def test_the_version_is_printed(capsys):
    with pytest.raises(SystemExit) as exc:  # it said a command is required (trial s53)
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"landscape-nb {lnb.__version__}"


@pytest.mark.parametrize("argv, words", [
    (["compute", "mlp-digits", "--grid"], "argument --grid: expected one argument (`landscape-nb compute --help`"),
    (["compute", "mlp-digits", "--norm", "foo"], "argument --norm: invalid choice: 'foo'"),
    (["bogus"], "invalid choice: 'bogus'"),
    ([], "the following arguments are required: command (`landscape-nb --help`"),
    (["compute", "mlp-digits", "--gird", "5x5"], "unrecognized arguments: --gird 5x5 (`landscape-nb compute --help`"),
    (["compute", "mlp-digits", "--ran", "-1:1"], "unrecognized arguments: --ran -1:1"),  # no abbreviations
    (["compute", "mlp-digits", "--mode", "train"], "argument --mode: invalid choice: 'train' (choose from "),
])
def test_argparse_errors_are_one_line_too(capsys, argv, words):
    """A flag argparse itself refuses ends like every other refusal: exit 2, one line (no usage block)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("landscape-nb: error:") and words in err and "\n" not in err


def test_spec_mismatch_on_store_refused(user_model, tmp_path, capsys):
    store = tmp_path / "s.zarr"
    assert main(["compute", user_model, "--grid", "3x3", "--store", str(store)]) == 0
    assert main(["compute", user_model, "--grid", "3x3", "--store", str(store), "--seed", "1"]) == 2
    assert "what differs: direction seed (CLI --seed): 0 stored, 1 now." in capsys.readouterr().err


@pytest.mark.parametrize("module", ["landscape_nb.cli", "landscape_nb"])  # the package's was missing (trial s39)
def test_console_script_installed(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "models" in out.stdout and "demo" in out.stdout


def test_help_lists_the_choices_without_importing_torch():
    """--help answers in a fraction of a second: the option vocabularies are torch-free."""
    code = ("import sys; from landscape_nb.cli import build_parser; "
            "h = build_parser()._subparsers._group_actions[0].choices['compute'].format_help(); "
            "print('torch' in sys.modules); print(h)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "False"
    from landscape_nb.directions import NORMS
    from landscape_nb.evaluate import PRECISIONS

    assert "{" + ",".join(NORMS) + "}" in out and "{" + ",".join(PRECISIONS) + "}" in out


SLOW_MODULE = '''
import os
import time
import torch
from torch import nn

# read once, into a dict (not compared): read at call time, a changed SLOW_SECONDS refused the resume as the
# environment of another loss would be
PACE = {"seconds": float(os.environ.get("SLOW_SECONDS", "0.15"))}


class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x):
        time.sleep(PACE["seconds"])  # slow enough to be signalled mid-run
        return self.net(x)

def make():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    return Slow(), (x, (x[:, 0] > 0).long())
'''


def _stored_points(store) -> int:
    try:
        return lnb.load_surface(store).n_done
    except Exception:  # not created yet, or mid-write: look again
        return 0


def _signal_once_stored(proc, store, sig: str, poll: float = 0.05) -> tuple[str, list]:
    """Wait until ``store`` holds a point, then signal the CLI process ``proc`` (started in a session of its
    own) as ``sig`` says: "SIGINT" to its whole process group, as a terminal's Ctrl-C, "SIGINT SIGINT" twice
    0.2 s apart (during the clean-up), "SIGTERM" to the command alone, as `kill` does. Returns its stderr and
    its child processes (a local cluster's) as they were when signalled."""
    import os
    import signal
    import time

    import psutil

    try:
        deadline = time.monotonic() + 120
        while _stored_points(store) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(poll)
        assert proc.poll() is None, "finished before it could be signalled: slow the model down"
        children = psutil.Process(proc.pid).children(recursive=True)
        if sig.startswith("SIGINT"):
            os.killpg(proc.pid, signal.SIGINT)
            if sig == "SIGINT SIGINT":
                time.sleep(0.2)  # closing the local cluster takes a second or two: still under way
                os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return err, children


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_early_signal_to_a_local_cluster_run_of_one_point_tiles_prints_our_line_and_no_dask_log(
        tmp_path, monkeypatch, sig):
    """Signalled while its first one-point tiles finish, a local cluster's scheduler logged each result it could
    not send to the closed client at CRITICAL, with a traceback: a trial's early Ctrl-C printed 40 to 151 of
    them around the one line that is ours (the README promises one line)."""
    import os

    (tmp_path / "slow_models.py").write_text(SLOW_MODULE)
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "s.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "landscape_nb.cli", "compute", "slow_models:make", "--grid", "21x21",
                             "--tile", "1", "--store", str(store), "--client", "local", "--workers", "2"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "SLOW_SECONDS": "0.005"})
    err, _ = _signal_once_stored(proc, store, sig, poll=0.02)
    assert proc.returncode == (130 if sig == "SIGINT" else 143), err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "/441 [" not in line]  # no bar
    assert len(lines) == 1 and "finished tiles are kept in the store" in lines[0], err


@pytest.mark.parametrize("sig, code, words, client", [
    ("SIGINT", 130, "interrupted;", "none"),
    ("SIGINT", 130, "interrupted;", "local"),  # to the whole process group, workers too, as Ctrl-C does
    ("SIGTERM", 143, "terminated (SIGTERM);", "none"),
    ("SIGTERM", 143, "terminated (SIGTERM);", "local"),  # to the command only, as `kill` does
    # Ctrl-C twice: the second, during the clean-up, neither breaks it nor kills the process by signal
    ("SIGINT SIGINT", 130, "interrupted;", "local"),
])
def test_a_signalled_compute_says_so_keeps_its_tiles_and_resumes_to_the_uninterrupted_values(
        tmp_path, monkeypatch, sig, code, words, client):
    import psutil
    from standalone_html import figure_json, values

    (tmp_path / "slow_models.py").write_text(SLOW_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    store = tmp_path / "s.zarr"
    argv = ["compute", "slow_models:make", "--grid", "8x8", "--tile", "2x2", "--store", str(store)]
    workers = ["--workers", "1"] if client == "local" else []
    proc = subprocess.Popen([sys.executable, "-m", "landscape_nb.cli", *argv, "--client", client, *workers,
                             "--html", str(tmp_path / "s.html")],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    err, children = _signal_once_stored(proc, store, sig)  # children: the local cluster's processes
    assert (client == "local") == bool(children)
    assert proc.returncode == code, err
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running: {alive}"
    assert f"landscape-nb: {words} finished tiles are kept in the store (" in err, err
    # --html draws the points so far, the missing ones marked (s59: it wrote nothing, naming the plot command)
    assert f"points) (rerun to resume; {tmp_path / 's.html'} draws them, marked as partial)" in err, err
    assert "Traceback" not in err  # the workers ignore SIGINT: no KeyboardInterrupt tracebacks of theirs
    assert ("landscape-nb: stopping (finished tiles are safe; closing any workers)" in err) == (sig == "SIGINT SIGINT")
    kept = lnb.load_surface(store)
    assert 0 < kept.n_done < 64 and not kept.is_complete
    drawn = figure_json((tmp_path / "s.html").read_text())
    z = values(drawn["data"][0]["z"]).reshape(kept.loss.shape)
    np.testing.assert_array_equal(np.isnan(z), np.isnan(kept.loss))  # the store's points, and no other
    assert f"partial: {kept.n_done} of 64 points" in json.dumps(drawn["layout"]["annotations"])
    assert main(["plot", str(store), "--kind", "heatmap", "--html", "partial.html"]) == 0  # the points so far
    z = values(figure_json(Path("partial.html").read_text())["data"][0]["z"]).reshape(kept.loss.shape)
    np.testing.assert_array_equal(np.isnan(z), np.isnan(kept.loss))
    np.testing.assert_allclose(z[~np.isnan(z)], kept.loss[~np.isnan(kept.loss)], rtol=1e-6)
    assert f"kept in the store ({kept.n_done} of 64 points)" in err, err  # the count the store holds
    done = np.isfinite(kept.loss)
    assert done.sum() == kept.n_done
    # the rerun resumes (in-process, at full speed: same code) and ends where an uninterrupted run does
    monkeypatch.setenv("SLOW_SECONDS", "0")
    assert main([*argv, "--client", "none"]) == 0
    assert main(["compute", "slow_models:make", "--grid", "8x8", "--store", str(tmp_path / "ref.zarr")]) == 0
    resumed, ref = lnb.load_surface(store), lnb.load_surface(tmp_path / "ref.zarr")
    assert resumed.is_complete
    np.testing.assert_allclose(resumed.loss, ref.loss, rtol=1e-6)
    np.testing.assert_array_equal(resumed.loss[done], kept.loss[done])  # kept points untouched


def test_compute_a_volume_matches_naive_losses_and_plots_as_volume_or_slices(user_model, tmp_path, capsys):
    """``--grid NXxNYxNZ`` on random directions, each point against the model perturbed by hand."""
    import torch
    import torch.nn.functional as F
    from my_models import make

    from landscape_nb.directions import random_directions

    store, html = tmp_path / "v.zarr", tmp_path / "v.html"
    assert main(["compute", user_model, "--grid", "4x3x5", "--range", "-1:1", "--yrange", "-0.5:0.5",
                 "--zrange", "-2:0", "--store", str(store), "--html", str(html)]) == 0
    vol = lnb.load_surface(store)
    assert vol.ndim == 3 and vol.loss.shape == (5, 3, 4) and vol.is_complete
    np.testing.assert_allclose(vol.z, np.linspace(-2, 0, 5))
    model, (x, y) = make()
    d = random_directions(model, n=3, seed=0)  # the CLI's defaults: filter norm, biases and BN held
    vectors = d.vectors
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    for k, j, i in [(0, 0, 0), (4, 2, 3), (2, 1, 1), (1, 2, 0)]:
        w = flat + vol.x[i] * vectors[0] + vol.y[j] * vectors[1] + vol.z[k] * vectors[2]
        params, start = {}, 0
        for name, p in model.named_parameters():
            params[name] = w[start:start + p.numel()].reshape(p.shape).float()
            start += p.numel()
        naive = F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)
        assert vol.loss[k, j, i] == pytest.approx(float(naive), rel=1e-5)
    assert '"type":"isosurface"' in html.read_text().replace(" ", "")
    out = tmp_path / "s.html"
    assert main(["plot", str(store), "--kind", "slices", "--html", str(out)]) == 0
    from landscape_nb.cli import figure_for

    fig = figure_for(vol, "slices")
    assert [t.type for t in fig.data if t.type == "contour"] == ["contour"] * 3
    # slices of 4 by 3 points: each panel marks its points (plot._common.grid_points_trace), lines interpolated
    assert {t.name for t in fig.data if t.type != "contour"} == {"grid points (drawn between them: interpolated)"}
    titles = [a.text for a in fig.layout.annotations if " = " in (a.text or "")]
    assert [t.split(" = ")[1] for t in titles] == ["\u22122", "\u22121", "0"]  # minus signs as the ticks
    assert all(json.dumps(t)[1:-1] in out.read_text() for t in titles)  # as the HTML escapes them
    capsys.readouterr()
    assert main(["plot", str(store), "--kind", "contour", "--html", str(out)]) == 2
    assert "--kind contour does not draw a 3D volume; expected one of volume, slices" in capsys.readouterr().err
    assert main(["compute", user_model, "--grid", "3x3x3", "--directions", "pca"]) == 2
    assert ("a volume (ndim=3, CLI --grid 21x21x21) needs three directions: use random or random-orthogonal or "
            "hessian") in capsys.readouterr().err
    line = tmp_path / "l.zarr"
    assert main(["compute", user_model, "--grid", "5", "--store", str(line)]) == 0
    assert main(["plot", str(line), "--kind", "volume", "--html", str(out)]) == 2
    assert "--kind volume does not draw a 1D line; expected one of line" in capsys.readouterr().err


def test_a_run_with_no_output_keeps_its_surface_in_a_store_the_same_command_resumes(user_model, tmp_path, capsys):
    """``compute`` with no --store, --html, --h5 or --vtk computed every point, printed a summary and kept
    nothing (a fresh user's 225-point run); it now keeps a store under runs/ and says where."""
    args = ["compute", user_model, "--grid", "5x3", "--range", "-1:1"]
    assert main(args) == 0
    err = capsys.readouterr().err
    stores = sorted((tmp_path / "runs").glob("my_models_make-5x3-*.zarr"))
    assert len(stores) == 1 and f"the surface is kept in {Path('runs') / stores[0].name}" in err, err
    first = lnb.load_surface(stores[0])
    assert first.is_complete and first.loss.shape == (3, 5)
    assert main(args) == 0  # the same command: resumed, nothing computed
    again = lnb.load_surface(stores[0])
    np.testing.assert_array_equal(again.loss, first.loss)
    assert "15 points: 15 from the store at" in capsys.readouterr().out
    assert main([*args[:-2], "--range", "-2:2"]) == 0  # another command: another store
    assert len(list((tmp_path / "runs").glob("*.zarr"))) == 2
    assert main([*args, "--html", str(tmp_path / "f.html")]) == 0  # an output given: the same store, resumed
    assert len(list((tmp_path / "runs").glob("*.zarr"))) == 2
    assert "15 points: 15 from the store at" in capsys.readouterr().out
    assert main([*args, "--html", "n.html", "--no-store"]) == 0  # opted out: the figure only, no other store
    assert len(list((tmp_path / "runs").glob("*.zarr"))) == 2 and "15 points computed" in capsys.readouterr().out
    assert main([*args, "--no-store"]) == 2
    assert "--no-store was given without --html, --h5 or --vtk, so the run would keep nothing" in \
        capsys.readouterr().err
    assert main([*args, "--no-store", "--store", "s.zarr", "--html", "n.html"]) == 2
    assert "--no-store was given with --store" in capsys.readouterr().err
    real_access = os.access  # a folder that cannot be written: the outputs only, said once
    os.access = lambda path, mode: False if mode == os.W_OK else real_access(path, mode)
    try:
        assert main([*args, "--range", "-3:3", "--html", "ro.html"]) == 0
    finally:
        os.access = real_access
    assert "cannot be written here, so the points are kept only in the outputs" in capsys.readouterr().err
    assert len(list((tmp_path / "runs").glob("*.zarr"))) == 2 and Path("ro.html").exists()
    assert main(["-v", *args]) == 0  # saying more is the same command
    assert len(list((tmp_path / "runs").glob("*.zarr"))) == 2
    capsys.readouterr()
    retrained = USER_MODULE.replace("    torch.manual_seed(0)", "    torch.manual_seed(5)")
    (tmp_path / "my_models.py").write_text(retrained)
    sys.modules.pop("my_models", None)
    assert main(args) == 0  # its old store holds another surface: the next name, not a refusal
    moved = stores[0].with_name(stores[0].name.replace(".zarr", "-2.zarr"))
    err = capsys.readouterr().err
    assert f"kept in {Path('runs') / moved.name}" in err and lnb.load_surface(moved).is_complete
    assert f"{Path('runs') / stores[0].name} holds another surface of this command's" in err
    assert not np.allclose(lnb.load_surface(moved).loss, first.loss)
    assert main(args) == 0 and "15 points: 15 from the store at" in capsys.readouterr().out  # and resumes there


def test_an_interrupt_before_any_tile_says_what_was_kept(user_model, monkeypatch, capsys):
    import landscape_nb.compute

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    real = landscape_nb.compute.compute_surface
    monkeypatch.setattr(landscape_nb.compute, "compute_surface", interrupted)
    assert main(["compute", user_model, "--grid", "3x3", "--html", "f.html", "--no-store"]) == 130
    assert "interrupted; nothing was kept (--no-store: drop it, or pass --store DIR, to keep finished tiles" in \
        capsys.readouterr().err
    assert main(["compute", user_model, "--grid", "3x3", "--html", "f.html"]) == 130  # the default store, not yet
    assert "landscape-nb: interrupted; no tile had finished, so no store was written" in capsys.readouterr().err
    assert main(["compute", user_model, "--grid", "3x3", "--store", "not-yet.zarr"]) == 130
    assert "landscape-nb: interrupted; no tile had finished, so no store was written" in capsys.readouterr().err
    assert main(["compute", user_model, "--grid", "3x3"]) == 130  # no output: the default store, not yet made
    assert "landscape-nb: interrupted; no tile had finished, so no store was written" in capsys.readouterr().err
    monkeypatch.setattr(landscape_nb.compute, "compute_surface", real)  # the store made, stopped before its first
    monkeypatch.setattr(landscape_nb.compute, "_run_tiles", interrupted)  # tile: "kept (0 of 9 points)" (s36)
    assert main(["compute", user_model, "--grid", "3x3", "--store", "made.zarr"]) == 130
    assert lnb.load_surface("made.zarr").n_done == 0
    assert ("landscape-nb: interrupted; no tile had finished, so the store holds no point yet (rerun to compute "
            "them)") in capsys.readouterr().err


def test_an_h5_of_a_non_square_grid_says_how_its_array_is_read(user_model, tmp_path, capsys):
    """Trial s31: the reference's (nx, ny) array filled x fastest reads scrambled as [i, j] on a non-square
    grid, and the CLI said nothing; the formula the note gives reads each point right (naive loss at the
    model and the store's values)."""
    import h5py
    import torch
    from my_models import make

    h5 = tmp_path / "ns.h5"
    assert main(["compute", user_model, "--grid", "5x3", "--store", str(tmp_path / "ns.zarr"), "--h5", str(h5)]) == 0
    err = capsys.readouterr().err
    assert "of shape (5, 3) = (x points, y points) but filled x fastest" in err
    assert "test_loss[()].ravel().reshape(3, 5)[j, i] is" in err
    surf = lnb.load_surface(tmp_path / "ns.zarr")
    with h5py.File(h5) as f:
        assert f["test_loss"].shape == (5, 3)
        read = f["test_loss"][()].ravel().reshape(3, 5)
    np.testing.assert_array_equal(read, surf.loss)
    model, (x, y) = make()
    with torch.no_grad():
        naive = torch.nn.functional.cross_entropy(model.double()(x.double()), y)
    np.testing.assert_allclose(read[1, 2], float(naive), rtol=1e-5)  # (x[2], y[1]) = (0, 0): the model
    assert main(["compute", user_model, "--grid", "3x3", "--store", str(tmp_path / "sq.zarr"),
                 "--h5", str(tmp_path / "sq.h5")]) == 0
    assert "filled x fastest" not in capsys.readouterr().err


def test_a_stored_runs_split_is_kept_and_said_by_plot(user_model, tmp_path, capsys):
    """`plot STORE` titled a train and a test surface alike (the store did not keep the split); a module whose
    function takes no split says none (its data's split is not known)."""
    import torch
    from my_models import make_split
    from standalone_html import figure_json

    for split in ("train", "test"):
        store, html = tmp_path / f"{split}.zarr", tmp_path / f"{split}.html"
        assert main(["compute", "my_models:make_split", "--split", split, "--grid", "3x3", "--store", str(store)]) == 0
        surf = lnb.load_surface(store)
        assert surf.provenance["split"] == split
        model, (x, y) = make_split(split)
        with torch.no_grad():  # the centre is the model on that split's samples (naive float64)
            naive = torch.nn.functional.cross_entropy(model.double()(x.double()), y)
        np.testing.assert_allclose(surf.loss[1, 1], float(naive), rtol=1e-5)
        assert main(["plot", str(store), "--html", str(html)]) == 0
        assert f", {split} split, 3×3 points" in figure_json(html.read_text())["layout"]["title"]["text"]
    assert main(["compute", user_model, "--grid", "3x3", "--store", str(tmp_path / "own.zarr"),
                 "--html", str(tmp_path / "own.html")]) == 0
    assert "split" not in lnb.load_surface(tmp_path / "own.zarr").provenance
    assert "split" not in figure_json((tmp_path / "own.html").read_text())["layout"]["title"]["text"]
    # another --split on a store names the split, not only the data's fingerprints (trial s37)
    capsys.readouterr()
    assert main(["compute", "my_models:make_split", "--split", "train", "--grid", "3x3", "--store",
                 str(tmp_path / "test.zarr")]) == 2
    assert "what differs: split (CLI --split): 'test' stored, 'train' now;" in capsys.readouterr().err


def test_clip_sets_the_figures_cap_from_the_command_line(user_model, tmp_path, capsys):
    """The automatic cap flattens everything above min + 5·(median − min) into a plateau; --clip none draws every
    value (the store's own), --clip LOSS caps there; a bad value or --clip without --html is refused first."""
    from standalone_html import figure_json, values

    store = tmp_path / "c.zarr"
    assert main(["compute", user_model, "--grid", "9x9", "--store", str(store)]) == 0
    surf = lnb.load_surface(store)
    cap = f"{float(np.median(surf.loss)):.4f}"
    shown = {}
    for clip in ("auto", "none", cap):
        html = tmp_path / f"{clip}.html"
        assert main(["plot", str(store), "--html", str(html), "--clip", clip]) == 0
        shown[clip] = values(figure_json(html.read_text())["data"][0]["z"])
    np.testing.assert_allclose(shown["none"], surf.loss, rtol=1e-6)  # every value as stored
    np.testing.assert_allclose(shown[cap], np.minimum(surf.loss, float(cap)), rtol=1e-6)
    np.testing.assert_allclose(shown["auto"], values(lnb.plot.surface(surf).data[0].z), rtol=1e-6)  # the API's
    capsys.readouterr()
    assert main(["compute", user_model, "--grid", "3x3", "--html", "x.html", "--clip", "nan"]) == 2
    assert "--clip 'nan'; expected auto" in capsys.readouterr().err
    assert main(["compute", user_model, "--grid", "3x3", "--store", "y.zarr", "--clip", "none"]) == 2
    assert "--clip none was given without --html" in capsys.readouterr().err
    # a cap at or below every value would draw a flat figure (trial T)
    low = f"{float(np.nanmin(surf.loss)) * 0.9:.4f}"
    assert main(["plot", str(store), "--html", str(tmp_path / "low.html"), "--clip", low]) == 2
    assert f"--clip {float(low)!r} is at or below every value shown" in capsys.readouterr().err  # the CLI's words
    # refused after the run: its points are kept (the default store), and a rerun with another --clip draws them
    assert main(["compute", user_model, "--grid", "9x9", "--html", "low.html", "--clip", low]) == 2
    err = capsys.readouterr().err
    assert "e.g. --clip " in err and "(or --clip auto, or --clip none for no cap)" in err and "clip=" not in err
    assert "every point is kept in runs" in err and not Path("low.html").exists()
    # with --no-store: nothing is said to be kept where nothing is (it said "kept in None"), and --h5 is written
    assert main(["compute", user_model, "--grid", "9x9", "--html", "low.html", "--h5", "low.h5", "--clip", low,
                 "--no-store"]) == 2
    err = capsys.readouterr().err
    assert "(--h5 low.h5 was written) (with --no-store the points are only in the files written)" in err
    assert "None" not in err
    np.testing.assert_allclose(lnb.load_reference_surface("low.h5").loss, surf.loss, rtol=1e-6)
    # the other way round: an --h5 refused (losses below 0 have no place in the reference's layout) keeps the
    # figure asked for with it
    assert main(["compute", "my_models:make_negative", "--grid", "5x5", "--html", "neg.html", "--h5", "neg.h5",
                 "--no-store"]) == 2
    err = capsys.readouterr().err
    assert "the surface has computed losses below 0" in err and "(--html neg.html was written)" in err
    assert Path("neg.html").exists() and not Path("neg.h5").exists()
    # a loss below 0 is capped below 0 where asked (a positive --clip only was taken)
    assert main(["compute", "my_models:make_negative", "--grid", "5x5", "--store", "neg.zarr"]) == 0
    neg = lnb.load_surface("neg.zarr").loss
    cap = f"{float(np.median(neg)):.4f}"
    assert float(cap) < 0 and main(["plot", "neg.zarr", "--html", "neg-capped.html", "--clip", cap]) == 0
    capsys.readouterr()  # a cap below 0 with cross-entropy is refused before the run (it computed, then lost
    assert main(["compute", user_model, "--grid", "5x5", "--html", "z.html", "--clip", "-5", "--no-store"]) == 2
    out, err = capsys.readouterr()  # every point with --no-store), and taken with a loss of the user's own
    assert "--clip -5 is at or below 0, where the cross-entropy loss never is" in err and "points" not in out
    assert main(["compute", "my_models:make_negative", "--grid", "5x5", "--html", "z.html", "--clip", cap,
                 "--no-store"]) == 0
    assert main(["compute", "my_models:own_negative_loss", "--grid", "3x3", "--html", "z.html", "--clip", "-1",
                 "--no-store"]) == 0, capsys.readouterr().err  # no loss_fn: the model's own outputs.loss (review s57)
    np.testing.assert_allclose(values(figure_json(Path("neg-capped.html").read_text())["data"][0]["z"]),
                               np.minimum(neg, float(cap)), rtol=1e-6)
    assert main(["plot", "neg.zarr", "--html", "neg-log.html", "--clip", cap, "--log"]) == 2
    assert f"--clip {float(cap)!r}; expected auto, none (no cap) or a loss value (positive with --log)" in \
        capsys.readouterr().err
    # --log on a loss below 0 everywhere drew a blank figure (and an all-invalid VTK) with exit code 0
    assert main(["compute", "my_models:make_negative", "--grid", "5x5", "--store", "neg.zarr", "--log",
                 "--html", "blank.html", "--vtk", "blank.vtk"]) == 2
    err = capsys.readouterr().err
    assert f"--log: every loss is ≤ 0 (from {neg.min():.4g} to {neg.max():.4g})" in err and "drop --log" in err
    assert not Path("blank.html").exists() and not Path("blank.vtk").exists()
    assert main(["compute", user_model, "--grid", "9x9", "--html", "low.html", "--clip", "none"]) == 0
    assert "81 points: 81 from the store at" in capsys.readouterr().out
    np.testing.assert_allclose(values(figure_json(Path("low.html").read_text())["data"][0]["z"]), surf.loss,
                               rtol=1e-6)  # the stored surface's values, drawn uncapped
    # a line's cap is the top of its loss axis (its values stay): --clip 2 was refused, auto did nothing
    assert main(["compute", user_model, "--grid", "5", "--range", "-8:8", "--store", "line.zarr"]) == 0
    line = lnb.load_surface("line.zarr").loss
    mid = f"{(line.min() + line.max()) / 2:.4f}"
    assert main(["plot", "line.zarr", "--html", "line.html", "--clip", mid]) == 0
    fig = figure_json((tmp_path / "line.html").read_text())
    top = float(mid) + 0.04 * (float(mid) - line.min())
    assert fig["layout"]["yaxis"]["range"][1] == pytest.approx(top)
    np.testing.assert_allclose(values(fig["data"][0]["y"]), line, rtol=1e-6)
    assert f"loss axis capped at {float(mid):.4g}: the curve reaches {line.max():.4g}" in str(fig["layout"])
    assert "(--clip none shows every value)" in str(fig["layout"]) and "clip=" not in str(fig["layout"])
    assert main(["plot", "line.zarr", "--html", "all.html", "--clip", "none"]) == 0
    assert "range" not in figure_json((tmp_path / "all.html").read_text())["layout"].get("yaxis", {})


def test_an_interrupt_when_every_point_is_stored_says_only_the_outputs_are_missing(user_model, monkeypatch, capsys):
    """A rerun over a finished store, stopped before it wrote its outputs, said "(9 of 9 points) (rerun to
    resume)" as if points were missing."""
    import landscape_nb.compute

    assert main(["compute", user_model, "--grid", "3x3", "--store", "done.zarr"]) == 0
    capsys.readouterr()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(landscape_nb.compute, "compute_surface", interrupted)
    assert main(["compute", user_model, "--grid", "3x3", "--store", "done.zarr", "--html", "f.html"]) == 130
    err = capsys.readouterr().err
    assert ("landscape-nb: interrupted; every point is in the store (9 of 9 points): rerun to write the outputs "
            "from it (nothing is computed again)") in err, err


def test_an_interrupt_after_the_outputs_were_written_is_no_failure(user_model, monkeypatch, capsys):
    """Between "wrote f.html" and the command's end (a note, closing workers) a Ctrl-C gave 130 and "rerun to
    write the outputs", though they were written (trial T)."""
    from landscape_nb import cli

    real = cli.write_exports

    def then_interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "write_exports", then_interrupted)
    assert main(["compute", user_model, "--grid", "3x3", "--html", "f.html"]) == 0
    assert "landscape-nb: interrupted after the outputs were written; they are complete" in capsys.readouterr().err


def test_a_signal_after_the_command_finished_keeps_its_exit_code(user_model, tmp_path):
    """The console script's work done (its figure written), a Ctrl-C while the process exits ended it with 130
    and no word: a script would throw the outputs away. Now it exits at once with the command's code."""
    script = ("import os, signal, sys, time\n"
              "from landscape_nb.cli import main\n"
              f"sys.argv = ['landscape-nb', 'compute', {user_model!r}, '--grid', '3x3', '--html', 'f.html']\n"
              "code = main()\n"
              "os.kill(os.getpid(), signal.SIGINT)\n"
              "time.sleep(30)\n"
              "sys.exit(99)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert "signalled after the command had finished; exiting with its code 0" in done.stderr
    assert (tmp_path / "f.html").stat().st_size > 0
    # late in Python's shutdown (its modules torn down, ~0.5 s with torch) a signal's default action was back
    late = script.replace("os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(30)\nsys.exit(99)\n", (
        "class Late:\n"
        "    def __del__(self):\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(0.5)\n"
        "late = Late()\n"
        "sys.exit(code)\n"))
    assert late != script
    done = subprocess.run([sys.executable, "-c", late], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr


def test_ctrl_c_while_the_local_cluster_starts_stops_the_run(tmp_path):
    """A Ctrl-C as the first worker is spawned ends the command (it must not be swallowed while the
    cluster starts, leaving the run to finish), and leaves no process behind."""
    import os
    import signal
    import time

    import psutil

    (tmp_path / "slow_models.py").write_text(SLOW_MODULE)
    proc = subprocess.Popen([sys.executable, "-m", "landscape_nb.cli", "compute", "slow_models:make", "--grid", "8x8",
                             "--store", str(tmp_path / "s.zarr"), "--client", "local", "--workers", "1"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        children = []  # read once per look: a short-lived child seen by one call may be gone by the next
        while not children and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
            children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "no worker was spawned"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "landscape-nb: interrupted;" in err
    # the half-started cluster is closed by us, not left to trip distributed's exit hook
    assert "Exception ignored in atexit callback" not in err, err[-2000:]
    assert not psutil.wait_procs(children, timeout=30)[1]


def test_bad_figure_options_are_refused_before_the_run(user_model, tmp_path, capsys):
    store = tmp_path / "never.zarr"
    base = ["compute", user_model, "--store", str(store)]
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("")
    for argv, words in [
        (["--grid", "3x3", "--kind", "slices", "--html", str(tmp_path / "x.html")],
         "--kind slices does not draw a 2D plane; expected one of surface, contour, heatmap"),
        (["--grid", "3x3x3", "--kind", "contour"], "--kind contour does not draw a 3D volume"),
        (["--grid", "3x3", "--kind", "contour"], "--kind contour was given without --html, so no figure would be"),
        (["--grid", "3x3", "--log"], "--log was given without --html"),
        (["--grid", "3x3", "--html", str(tmp_path / "x.png")], "x.png'; expected a file name ending in .html"),
        (["--grid", "3x3", "--workers", "2"], "--workers 2 was given with --client none, where tiles run in this"),
        (["--grid", "3x3", "--zrange", "0:1"], "--zrange 0:1 was given for a 2D --grid 3x3; it needs a grid of 3"),
        (["--grid", "3", "--yrange", "0:1"], "--yrange 0:1 was given for a 1D --grid 3; it needs a grid of 2"),
        (["--grid", "3x3", "--html", str(tmp_path / "adir")],
         (f"--html '{tmp_path / 'adir'}' is a directory; expected a file path to write, e.g. --html "
          f"'{tmp_path / 'adir' / 'landscape.html'}'")),
        # an .html name was suggested for --h5 and --vtk, and the flag not named (trial s56)
        (["--grid", "3x3", "--h5", str(tmp_path / "adir")], f"e.g. --h5 '{tmp_path / 'adir' / 'surface.h5'}'"),
        (["--grid", "3x3", "--vtk", str(tmp_path / "adir")], f"e.g. --vtk '{tmp_path / 'adir' / 'surface.vtk'}'"),
        (["--grid", "3x3", "--html", str(tmp_path / "afile" / "x.html")], "is a file; expected a path under a"),
        # a folder that takes no new file (/proc, for root too): found after the run, with a traceback (trial s37)
        (["--grid", "3x3", "--html", "/proc/landscape.html"], "cannot write '/proc/landscape.html' (No such file"),
        (["--grid", "3x3", "--vtk", "/proc/landscape.vtk"], "cannot write '/proc/landscape.vtk' (No such file"),
        (["--grid", "3x3", "--h5", "/proc/landscape.h5"], "cannot write '/proc/landscape.h5' (No such file"),
    ]:
        assert main([*base, *argv]) == 2, argv
        assert words in capsys.readouterr().err, argv
        assert not store.exists(), f"{argv} computed before refusing"
    assert main(["demo", "--out", str(tmp_path / "afile"), "--client", "none"]) == 2
    assert "--out" in capsys.readouterr().err


def test_a_run_whose_loss_diverges_says_how_many_points(user_model, tmp_path, capsys):
    assert main(["compute", user_model, "--grid", "5x5", "--range", "-1e25:1e25", "--store", str(tmp_path / "d.zarr")]) == 0
    surf = lnb.load_surface(tmp_path / "d.zarr")
    n_bad = int((~np.isfinite(surf.loss)).sum())
    assert 0 < n_bad < 25 and surf.is_complete
    err = capsys.readouterr().err
    assert f"the loss diverged (NaN or inf) at {n_bad} of 25 points" in err and "a narrower --range shows" in err
    # a VTK file holds no NaN: they are written as the largest loss, and the CLI says so (trial s36)
    assert main(["plot", str(tmp_path / "d.zarr"), "--vtk", str(tmp_path / "d.vtk")]) == 0
    assert (f"warning: {tmp_path / 'd.vtk'}: {n_bad} of 25 points have no finite loss (diverged or not computed); "
            "VTK files hold no NaN") in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "d.zarr"), "--vtk", str(tmp_path / "l.vtk"), "--log"]) == 0
    assert f"{n_bad} of 25 points have no finite log10 of the loss (diverged, ≤ 0 or" in capsys.readouterr().err
    # NaN at the model itself: the loss or the data, and no range helps (it said "a narrower --range")
    assert main(["compute", "my_models:nan_loss", "--grid", "3x3", "--store", str(tmp_path / "n.zarr")]) == 0
    err = capsys.readouterr().err
    assert "at 9 of 9 points" in err and "the loss is NaN or inf at the model itself" in err
    assert "narrower" not in err


def test_a_resumed_compute_says_how_many_points_came_from_the_store(user_model, tmp_path, monkeypatch, capsys):
    """Interrupted (Ctrl-C after 3 tiles), then rerun: the output line counts the points the store held,
    read here from its own zarr arrays, and those computed; the values are the naive loop's."""
    import zarr
    from my_models import make

    from landscape_nb import cli
    from landscape_nb.directions import random_directions

    class CtrlC(cli.TqdmProgress):
        def __call__(self, ev):
            super().__call__(ev)
            self.n = getattr(self, "n", 0) + 1
            if self.n == 3:
                raise KeyboardInterrupt

    store = tmp_path / "s.zarr"
    argv = ["compute", user_model, "--grid", "5x4", "--tile", "2x2", "--store", str(store)]
    with monkeypatch.context() as patched:
        patched.setattr(cli, "TqdmProgress", CtrlC)
        assert main(argv) == 130
    done = zarr.open_group(str(store), mode="r")["done"][:].astype(bool)
    n_stored = int(done.sum())
    assert n_stored == int(np.isfinite(zarr.open_group(str(store), mode="r")["loss"][:]).sum())
    assert 0 < n_stored < 20
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{user_model}: 20 points: {n_stored} from the store at {str(store)!r}, "
                          f"{20 - n_stored} computed, min loss "), out
    surf = lnb.load_surface(store)
    model, (x, y) = make()
    d = random_directions(model, n=2, seed=0)  # the CLI's defaults: filter norm, biases held
    for j in range(4):
        for i in range(5):
            naive_loss, _ = _naive_point(model, _flat(model) + surf.x[i] * d.vectors[0] + surf.y[j] * d.vectors[1],
                                         (x,), y)
            assert surf.loss[j, i] == pytest.approx(naive_loss, rel=1e-5), (i, j)


def _naive_point(model, w_flat, inputs, targets, kwargs=False):
    """Cross-entropy and accuracy of ``model`` at the flat weights ``w_flat`` (parameters in order), by hand."""
    import torch
    import torch.nn.functional as F

    params, start = {}, 0
    for name, p in model.named_parameters():
        params[name] = w_flat[start:start + p.numel()].reshape(p.shape)
        start += p.numel()
    out = torch.func.functional_call(model, params, args=() if kwargs else inputs,
                                     kwargs=inputs if kwargs else None)
    return float(F.cross_entropy(out, targets)), float((out.argmax(1) == targets).float().mean())


def _flat(model):
    import torch

    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_plot_exports_a_stores_files_with_its_own_splits_and_words(user_model, tmp_path, capsys):
    """`plot STORE --h5` of a store over named splits writes them under their names (train/val: it asked for a
    test split before), refuses one with neither train nor test naming its splits, words its notes for `plot`
    (not `compute`'s --split and --grid), and with --html on a partial store writes the figure before refusing
    the files (a review of the change)."""
    import threading

    import h5py
    from my_models import make

    model, (x, y) = make()
    d2 = lnb.random_directions(model, n=2, seed=0)
    grid = {"x": (-1, 1, 3), "y": (-1, 1, 3)}
    lnb.compute_surface(model, {"train": (x, y), "val": (x[:20], y[:20])}, d2, store=tmp_path / "tv.zarr", **grid)
    assert main(["plot", str(tmp_path / "tv.zarr"), "--h5", "tv.h5"]) == 0
    with h5py.File("tv.h5", "r") as f:
        assert {"train_loss", "train_acc", "val_loss", "val_acc"} <= set(f)
    lnb.compute_surface(model, {"val": (x, y), "hold": (x[:20], y[:20])}, d2, store=tmp_path / "vh.zarr", **grid)
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "vh.zarr"), "--h5", "vh.h5", "--vtk", "vh.vtk"]) == 2
    assert "is a surface over the named splits ['val', 'hold']; the reference's .h5 layout" in capsys.readouterr().err
    assert not Path("vh.h5").exists() and not Path("vh.vtk").exists()
    lnb.compute_surface(model, (x, y), lnb.random_directions(model, n=1, seed=0), x=(-1, 1, 5), store="line.zarr")
    assert main(["plot", "line.zarr", "--h5", "line.h5"]) == 0
    err = capsys.readouterr().err
    assert "this store holds the line on the test split; compute it on the train split for that (landscape-nb " \
           "compute ... --split train; your module:function" in err and "rerun with --split train" not in err
    lnb.compute_surface(model, (x, y), lnb.random_directions(model, n=3, seed=0), z=(-1, 1, 3), store="vol.zarr",
                        **grid)
    assert main(["plot", "vol.zarr", "--h5", "vol.h5"]) == 2
    assert "--h5 vol.h5 was given for the 3D store vol.zarr; the reference's surface files hold a line or a plane: " \
           "use --vtk FILE.vtk for a volume\n" in capsys.readouterr().err
    stop = threading.Event()
    lnb.compute_surface(model, (x, y), d2, x=(-1, 1, 6), y=(-1, 1, 6), tile=(2, 2), store="part.zarr", cancel=stop,
                        callbacks=[lambda event: stop.set()])
    assert main(["plot", "part.zarr", "--html", "part.html", "--h5", "part.h5"]) == 2
    assert "rerun the compute command that wrote it to finish it (--html part.html was written, its points " \
           "marked)" in capsys.readouterr().err
    assert Path("part.html").exists() and not Path("part.h5").exists()


@pytest.mark.parametrize("grid, log", [("5x4", False), ("6", True)])
def test_h5_and_vtk_exports_equal_the_apis_and_hold_the_naive_values(user_model, tmp_path, capsys, grid, log):
    """``--h5`` and ``--vtk`` write what ``save_reference_surface`` and ``export_vtk`` write for the same
    surface (byte for byte for VTK, every dataset for HDF5); the HDF5 values sit where the reference's
    layout puts them (flat index j * nx + i is (x[i], y[j]), accuracy in percent) and equal a naive loop."""
    import h5py
    from my_models import make

    from landscape_nb.directions import random_directions

    store, h5, vtk = tmp_path / "s.zarr", tmp_path / "out" / "s.h5", tmp_path / "s.vtk"
    argv = ["compute", user_model, "--grid", grid, "--range", "-1:1", "--store", str(store), "--h5", str(h5),
            "--vtk", str(vtk)] + (["--log"] if log else [])
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert f"wrote {h5} (the loss as test_loss)\n" in out and f"wrote {vtk}\n" in out
    # the reference's plot_1D.py asserts train_loss: a line written as test_loss says how to get it
    assert ("plot_1D.py reads train_loss and train_acc" in err and "--split train" in err) == (grid == "6"), err
    surf = lnb.load_surface(store)
    api_h5, api_vtk = tmp_path / "api.h5", tmp_path / "api.vtk"
    lnb.save_reference_surface(surf, api_h5, split="test")  # the CLI's split: test by default
    lnb.export_vtk(surf, api_vtk, log=log)
    assert vtk.read_text() == api_vtk.read_text()
    # a finished store exports the same files through `plot`, with no rerun of compute (its only way before)
    h5_again, vtk_again = tmp_path / "again.h5", tmp_path / "again.vtk"
    assert main(["plot", str(store), "--h5", str(h5_again), "--vtk", str(vtk_again)] + (["--log"] if log else [])) == 0
    assert vtk_again.read_text() == vtk.read_text()
    with h5py.File(h5, "r") as cli_f, h5py.File(api_h5, "r") as api_f, h5py.File(h5_again, "r") as plot_f:
        assert sorted(cli_f) == sorted(api_f) == sorted(plot_f) == sorted(
            ["xcoordinates", "test_loss", "test_acc"] + (["ycoordinates"] if surf.ndim == 2 else []))
        for key in api_f:
            np.testing.assert_array_equal(cli_f[key][()], api_f[key][()], err_msg=key)
            np.testing.assert_array_equal(plot_f[key][()], api_f[key][()], err_msg=key)
        loss, acc = cli_f["test_loss"][()].reshape(-1), cli_f["test_acc"][()].reshape(-1)
        xs = cli_f["xcoordinates"][()]
        ys = cli_f["ycoordinates"][()] if surf.ndim == 2 else [0.0]
    model, (x, y) = make()
    d = random_directions(model, n=surf.ndim, seed=0)
    for j, b in enumerate(ys):
        for i, a in enumerate(xs):
            w = _flat(model) + a * d.vectors[0] + (b * d.vectors[1] if surf.ndim == 2 else 0)
            naive_loss, naive_acc = _naive_point(model, w, (x,), y)
            assert loss[j * len(xs) + i] == pytest.approx(naive_loss, rel=1e-5), (i, j)
            assert acc[j * len(xs) + i] == pytest.approx(100 * naive_acc, rel=1e-6), (i, j)


TARGETS_MODULE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, features):
        return self.lin(features)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 2), nn.Linear(3, 2)

    def forward(self, x, z):
        return self.a(x) + self.b(z)


def tensors():
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(48, 4, generator=g), torch.randn(48, 3, generator=g)
    return x, z, (x[:, 0] + z[:, 0] > 0).long()


def make_dict():
    torch.manual_seed(0)
    x, z, y = tensors()
    return Net(), {"features": x, "y": y}


def make_tuple():
    torch.manual_seed(0)
    x, z, y = tensors()
    return TwoInputs(), (x, y, z)


def make_bn():
    torch.manual_seed(0)
    x, z, y = tensors()
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():  # running statistics of other data than the evaluation set
        model.train()
        for _ in range(3):
            model(torch.randn(32, 4) * 2 + 1)
    return model.eval(), (x, y)
'''


@pytest.fixture
def targets_module(tmp_path, monkeypatch):
    (tmp_path / "tk_models.py").write_text(TARGETS_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    return importlib.import_module("tk_models")


@pytest.mark.parametrize("fn, key", [("make_dict", "y"), ("make_tuple", "1")])
def test_target_key_reads_the_targets_where_the_api_does(targets_module, tmp_path, capsys, fn, key):
    """``--target-key y`` (a dict key) and ``--target-key 1`` (a tuple position) give the surface
    ``compute_surface(..., target_key=...)`` gives, and the naive loop's values; left out, the dict
    batches have no targets and the run is refused in one line."""
    from landscape_nb.directions import random_directions

    store = tmp_path / "s.zarr"
    argv = ["compute", f"tk_models:{fn}", "--grid", "3x3", "--store", str(store)]
    assert main([*argv, "--target-key", key]) == 0
    assert "warning" not in capsys.readouterr().err
    surf = lnb.load_surface(store)
    model, data = getattr(targets_module, fn)()
    target_key = int(key) if key.isdigit() else key
    d = random_directions(model, n=2, seed=0)
    api = lnb.compute_surface(model, data, d, x=(-1, 1, 3), y=(-1, 1, 3), target_key=target_key)
    np.testing.assert_allclose(surf.loss, api.loss, rtol=1e-6)
    assert surf.spec == api.spec
    x, z, y = targets_module.tensors()
    for j, b in enumerate(surf.y):
        for i, a in enumerate(surf.x):
            w = _flat(model) + a * d.vectors[0] + b * d.vectors[1]
            inputs, kwargs = ({"features": x}, True) if fn == "make_dict" else ((x, z), False)
            naive_loss, naive_acc = _naive_point(model, w, inputs, y, kwargs=kwargs)
            assert surf.loss[j, i] == pytest.approx(naive_loss, rel=1e-5), (i, j)
            assert surf.metrics["accuracy"][j, i] == pytest.approx(naive_acc, rel=1e-6), (i, j)
    if fn == "make_dict":
        assert main(["compute", "tk_models:make_dict", "--grid", "3x3"]) == 2  # no "labels" entry: no targets
        err = capsys.readouterr().err.strip()
        assert err.startswith("landscape-nb: error:") and "\n" not in err
        assert "name the targets with --target-key y;" in err  # the CLI's flag, with the key (trial s58: "KEY'y'")
        assert main(["compute", "tk_models:make_dict", "--grid", "3x3", "--target-key", "label"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("landscape-nb: error:") and "target_key='label'" in err and "\n" not in err


def test_target_key_on_pairs_says_it_was_not_used(user_model, tmp_path, capsys):
    assert main(["compute", user_model, "--grid", "3", "--target-key", "y"]) == 0
    assert ("landscape-nb: warning: --target-key y was not used: the data are (inputs, targets) pairs, whose "
            "targets are the second element") in capsys.readouterr().err


def test_mode_bn_recompute_reestimates_batchnorm_statistics_at_every_point(targets_module, tmp_path):
    """``--mode bn-recompute`` is ``compute_surface(mode="bn-recompute")``: at each point the BatchNorm
    statistics are those of the evaluation set (by hand: reset, one full-batch train-mode pass, eval),
    not the model's running statistics, which ``--mode eval`` (the default) keeps."""
    import copy

    import torch

    from landscape_nb.directions import random_directions

    stores = {mode: tmp_path / f"{mode}.zarr" for mode in ("eval", "bn-recompute")}
    for mode, store in stores.items():
        assert main(["compute", "tk_models:make_bn", "--grid", "3", "--store", str(store), "--mode", mode]) == 0
    recomputed, plain = lnb.load_surface(stores["bn-recompute"]), lnb.load_surface(stores["eval"])
    assert (recomputed.spec["eval"]["mode"], plain.spec["eval"]["mode"]) == ("bn-recompute", "eval")
    model, (x, y) = targets_module.make_bn()
    d = random_directions(model, n=1, seed=0)
    for i, a in enumerate(recomputed.x):
        for mode, surf in (("bn-recompute", recomputed), ("eval", plain)):
            m = copy.deepcopy(model)
            with torch.no_grad():
                torch.nn.utils.vector_to_parameters(_flat(model) + a * d.vectors[0], m.parameters())
                if mode == "bn-recompute":
                    m[1].reset_running_stats()
                    m[1].momentum = None
                    m.train()
                    m(x)
                m.eval()
                naive = float(torch.nn.functional.cross_entropy(m(x), y))
            assert surf.loss[i] == pytest.approx(naive, rel=1e-5), (mode, i)
    assert not np.allclose(recomputed.loss, plain.loss, rtol=1e-3)  # the statistics differ: so do the values


def test_quantity_hessian_computes_an_eigen_map_as_the_api_does(user_model, tmp_path, capsys):
    """``--quantity hessian``: the eigen-map of ``lnb.eigen_map`` (stored, drawn as the ratio map); λ_max at the
    centre against a dense Hessian; what does not fit it refused before the run."""
    import torch
    from my_models import make
    from torch.func import functional_call

    store, html = tmp_path / "e.zarr", tmp_path / "e.html"
    assert main(["compute", user_model, "--quantity", "hessian", "--grid", "3x3", "--tol", "1e-6",
                 "--store", str(store), "--html", str(html)]) == 0
    assert "|λmin/λmax| (0 where λmin ≥ 0) up to" in capsys.readouterr().out
    got = lnb.load_surface(store)
    model, data = make()
    d = lnb.random_directions(model, n=2, norm="filter", ignore="biasbn", seed=0)
    api = lnb.eigen_map(model, data, d, x=(-1, 1, 3), y=(-1, 1, 3), tol=1e-6)
    for name in ("lambda_max", "lambda_min", "eig_ratio"):
        np.testing.assert_allclose(got.metrics[name], api.metrics[name], rtol=1e-5, atol=1e-9)
    names, flat = zip(*[(n, p.detach().double()) for n, p in model.named_parameters()])
    sizes = [p.numel() for p in flat]

    def loss(w):
        params = {n: t.reshape(p.shape) for n, t, p in zip(names, torch.split(w, sizes), flat)}
        return torch.nn.functional.cross_entropy(functional_call(model.double(), params, (data[0].double(),)), data[1])

    evals = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, torch.cat([p.reshape(-1) for p in flat])))
    lmax, lmin = float(evals[-1]), float(evals[0])
    assert got.metrics["lambda_max"][1, 1] == pytest.approx(lmax, rel=1e-4)
    assert got.metrics["lambda_min"][1, 1] == pytest.approx(lmin, abs=1e-4 * (lmax - lmin))
    assert got.metrics["eig_ratio"][1, 1] == pytest.approx(max(-lmin, 0) / lmax, abs=2e-4)
    assert '"type":"heatmap"' in html.read_text().replace(" ", "")  # the ratio map
    from standalone_html import figure_json

    title = figure_json(html.read_text())["layout"]["title"]["text"]  # not a loss surface's (trial s57)
    assert title.startswith("my_models:make: non-convexity map |λmin/λmax| over random (filter-normalized) "), title
    loss_of = tmp_path / "loss.html"  # its loss drawn: titled as a loss surface, not as the ratio map (re-trial s57)
    assert main(["plot", str(store), "--html", str(loss_of), "--kind", "contour"]) == 0
    title = figure_json(loss_of.read_text())["layout"]["title"]["text"]
    assert title.startswith("my_models:make: random (filter-normalized) directions"), title
    out = tmp_path / "p.html"
    assert main(["plot", str(store), "--html", str(out)]) == 0  # an eigen-map store draws as one by default
    assert '"type":"heatmap"' in out.read_text().replace(" ", "")
    line_html = tmp_path / "line.html"  # a line's eigen-map: λmax and λmin along it (refused before, trial s53)
    assert main(["compute", user_model, "--quantity", "hessian", "--grid", "3", "--tol", "1e-6", "--no-store",
                 "--html", str(line_html)]) == 0
    page = line_html.read_text()
    assert '"text":"Hessian eigenvalue"' in page and '"name":"\\u03bbmin"' in page
    assert figure_json(page)["layout"]["title"]["text"].startswith("my_models:make: λmax, λmin along random")
    capsys.readouterr()
    for argv, message in [
        (["--quantity", "hessian", "--grid", "3x3x3"],
         "--quantity hessian (an eigen-map) takes a 1D or 2D --grid; got --grid 3x3x3"),
        (["--grid", "3x3", "--tol", "1e-4"], "--tol 0.0001 is the eigen-map's Lanczos tolerance; add --quantity"),
        (["--quantity", "hessian", "--grid", "3x3", "--html", str(out), "--log"],  # was refused after the run
         "--log does not apply to --kind eigen_map"),
        (["--grid", "3x3", "--kind", "eigen_map", "--html", str(out)],
         ("--kind eigen_map draws the eigenvalues of a --quantity hessian run, and this surface holds the loss "
          "only; expected one of surface, contour, heatmap")),  # not "does not draw a 2D plane" (trial s53)
        (["--quantity", "hessian", "--grid", "3x3", "--mode", "bn-recompute", "--no-store", "--html", str(out)],
         "--quantity hessian with --mode bn-recompute: the loss at each point re-estimates"),  # flags (trial s53)
        (["--quantity", "hessian", "--grid", "3x3", "--tol", "5"],  # was tol=5.0
         "--tol 5; expected a relative tolerance from 0 up to, not including, 1, e.g. --tol 1e-3"),
        (["--quantity", "hessian", "--grid", "3x3", "--tol=-1e-3"], "--tol -0.001; expected a relative tolerance"),
    ]:
        assert main(["compute", user_model, *argv]) == 2
        assert message in capsys.readouterr().err


def test_plot_of_an_unfinished_store_marks_the_figure_partial(user_model, tmp_path, capsys):
    """A store a run left unfinished draws what it holds, and the file says so (only the terminal did)."""
    import threading

    from my_models import make

    model, data = make()
    store, stop = tmp_path / "p.zarr", threading.Event()
    lnb.compute_surface(model, data, lnb.random_directions(model, n=2, seed=0), x=(-1, 1, 6), y=(-1, 1, 6),
                        tile=(2, 2), store=store, cancel=stop, callbacks=[lambda event: stop.set()])
    kept = lnb.load_surface(store)
    assert 0 < kept.n_done < 36
    out = tmp_path / "p.html"
    assert main(["plot", str(store), "--html", str(out)]) == 0
    assert f"partial: {kept.n_done} of 36 points" in out.read_text()
    assert main(["plot", str(tmp_path / "p.zarr"), "--kind", "contour", "--html", str(out)]) == 0
    assert "partial:" in out.read_text()
    # one point a tile, stopped early: points spread over the grid, no cell complete (an empty 3D box before)
    sparse, stop = tmp_path / "s.zarr", threading.Event()
    lnb.compute_surface(model, data, lnb.random_directions(model, n=2, seed=0), x=(-1, 1, 6), y=(-1, 1, 6),
                        tile=(1, 1), store=sparse, cancel=stop, callbacks=[lambda event: stop.set()])
    n = lnb.load_surface(sparse).n_done
    for kind in ("surface", "contour"):
        assert main(["plot", str(sparse), "--kind", kind, "--html", str(out)]) == 0
        assert f"partial: {n} of 36 points; {n} drawn as markers (no computed cell around them)" in out.read_text()
    capsys.readouterr()
    # the value files hold no word of missing points: refused for a partial store, nothing written
    for flag in ("--h5", "--vtk"):
        assert main(["plot", str(sparse), flag, str(tmp_path / f"p{flag[2:]}.{flag[2:]}")]) == 2
        assert (f"holds {n} of 36 points; --h5 and --vtk write finished surfaces only" in capsys.readouterr().err)
        assert not (tmp_path / f"p{flag[2:]}.{flag[2:]}").exists()
    assert main(["plot", str(sparse)]) == 2
    assert "plot writes nothing without an output; expected --html FILE" in capsys.readouterr().err
    done = tmp_path / "d.zarr"
    lnb.compute_surface(model, data, lnb.random_directions(model, n=2, seed=0), x=(-1, 1, 3), y=(-1, 1, 3),
                        store=done)
    assert main(["plot", str(done), "--html", str(out)]) == 0
    assert "partial:" not in out.read_text()


def test_the_first_ctrl_c_quiets_dask_s_own_failure_logs_until_main_returns(capsys, monkeypatch):
    """A cluster stopped while it starts logged each nanny's and task's failure (19-73 lines of tracebacks
    under the one-line reason); the first Ctrl-C quiets those loggers, and a caller of main gets them back.
    The second says it is stopping and lets the clean-up run; the third exits at once."""
    import logging
    import os

    import distributed.scheduler  # noqa: F401 - its logger logs a closed client's comm at CRITICAL

    from landscape_nb.cli import _Interrupts

    names = ("distributed", "asyncio", "tornado", "distributed.scheduler", "tornado.application")
    before = {n: logging.getLogger(n).level for n in names}
    handler = _Interrupts(quiet=True)
    with pytest.raises(KeyboardInterrupt):
        handler(2, None)
    assert all(not logging.getLogger(n).isEnabledFor(logging.CRITICAL) for n in before)
    assert handler(2, None) is None  # the second: no exception into the clean-up
    assert "landscape-nb: stopping (finished tiles are safe; closing any workers)" in capsys.readouterr().err
    monkeypatch.setattr(os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
    with pytest.raises(SystemExit, match="130"):
        handler(2, None)
    assert "interrupted again; exiting now" in capsys.readouterr().err
    handler.restore()
    assert {n: logging.getLogger(n).level for n in before} == before
    loud = _Interrupts(quiet=False)  # -v: everything is said
    with pytest.raises(KeyboardInterrupt):
        loud(2, None)
    assert {n: logging.getLogger(n).level for n in before} == before


def test_errors_in_the_users_module_are_one_line_with_the_place_and_v_shows_the_traceback(tmp_path, monkeypatch,
                                                                                           capsys):
    """Trial s34: a SyntaxError in the user's module printed importlib's 20-line traceback (exit 1); an
    AttributeError in a helper of forward named no file, line or function, and -v did not show where; a long
    load_state_dict message was cut mid-word at 300 characters."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "broken_syntax.py").write_text("import torch\n\ndef make():\n    m = torch.nn.Linear(4, 2\n")
    (tmp_path / "typo_model.py").write_text(textwrap.dedent("""
        import torch


        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin, self.scale = torch.nn.Linear(4, 2), 2.0

            def forward(self, x):
                return self.helper(self.lin(x))

            def helper(self, h):
                return h * self.scael


        def make():
            return Net(), (torch.randn(20, 4), torch.randint(0, 2, (20,)))


        def mismatch():
            net = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(12)])
            wide = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(12)])
            net.load_state_dict(wide.state_dict())


        def missing():
            return torch.load("no_such_weights.pt")
    """))
    out = ["--grid", "3", "--no-store", "--html", str(tmp_path / "f.html")]
    assert main(["compute", "broken_syntax:make", *out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.endswith(
        "SyntaxError in " + str(tmp_path / "broken_syntax.py") + ", line 4: '(' was never closed; fix the module and "
        "rerun"), err
    assert main(["compute", "typo_model:make", *out]) == 2
    err = capsys.readouterr().err
    assert "'Net' object has no attribute 'scael' (at typo_model.py:14 in helper())" in err and "Traceback" not in err
    assert main(["-v", "compute", "typo_model:make", *out]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "in helper" in err and "return h * self.scael" in err
    assert main(["compute", "typo_model:mismatch", *out]) == 2
    err = capsys.readouterr().err
    words = re.search(r"raised RuntimeError: (.*) … \((\d+) more characters: rerun as landscape-nb -v", err)
    assert words and len(words[1]) <= 600 and not words[1].endswith(("torc", "Siz")), err
    # a module that imports one not installed: said as that, where (re-trial s58: "cannot load ... importable from
    # the current directory", of a module that was found)
    (tmp_path / "needs_lib.py").write_text("import torch\nimport fancy_lib_not_installed_here\n\ndef make():\n    pass\n")
    assert main(["compute", "needs_lib:make", *out]) == 2
    err = capsys.readouterr().err
    assert ("importing needs_lib (for needs_lib:make) raised ModuleNotFoundError: No module named "
            "'fancy_lib_not_installed_here' (at needs_lib.py:2 in <module>(); rerun as landscape-nb -v") in err, err
    assert "install fancy_lib_not_installed_here in this environment" in err and "cannot load" not in err
    assert main(["compute", "no_such_module_here:make", *out]) == 2  # the module itself missing: as before
    assert "cannot load 'no_such_module_here:make' (No module named" in capsys.readouterr().err
    # the module's own function failing says where too, as the model's errors do (trial s58: what, not where)
    assert main(["compute", "typo_model:missing", *out]) == 2
    err = capsys.readouterr().err
    assert "typo_model:missing() raised FileNotFoundError: " in err and "Traceback" not in err
    line = (tmp_path / "typo_model.py").read_text().splitlines().index('    return torch.load("no_such_weights.pt")') + 1
    assert f"(at typo_model.py:{line} in missing(); rerun as landscape-nb -v COMMAND ... for its traceback)" in err


def test_an_accuracy_the_loss_does_not_define_is_said_skipped(user_model, tmp_path, capsys):
    """Trial s40: a module's loss mapping ±1 labels lost its accuracy from the CLI's figure with nothing printed;
    the reason is printed now. A regression's skipped accuracy (floating-point targets) says nothing."""
    assert main(["compute", "my_models:plus_minus_one", "--grid", "3x3", "--no-store",
                 "--html", str(tmp_path / "p.html")]) == 0
    err = capsys.readouterr().err
    assert "landscape-nb: warning: accuracy skipped: the targets hold -1, outside the logits' classes 0 to 1" in err, err
    assert "(the CLI computes the automatic accuracy only: such a metric is passed from Python" in err  # (s40)
    assert main(["compute", user_model, "--grid", "3x3", "--no-store", "--html", str(tmp_path / "q.html")]) == 0
    assert "accuracy skipped" not in capsys.readouterr().err


def test_a_line_over_named_splits_is_drawn_split_by_split(user_model, tmp_path):
    """Trial s42: `--kind line` of a line over train and test drew one curve named "loss" (the first split's) and
    a note with a metric= hint the CLI has no flag for. It draws every split's loss and metric now
    (plot.line_splits), each curve the split's values."""
    from my_models import make

    from landscape_nb.cli import figure_for

    model, (x, y) = make()
    line = lnb.compute_surface(model, {"train": (x, y), "val": (x[:20], y[:20])},
                               lnb.random_directions(model, n=1, seed=0), x=(-1, 1, 5), store=tmp_path / "l.zarr")
    fig = figure_for(lnb.load_surface(tmp_path / "l.zarr"), "line")
    assert [t.name for t in fig.data][::2] == ["train loss", "val loss"]
    np.testing.assert_allclose(fig.data[2].y, line.metrics["val_loss"])
    assert not [a for a in fig.layout.annotations if "metric=" in str(a.text)]


def _first_words(arg) -> str | None:
    """The literal text a message expression begins with (an f-string's first part, a concatenation's left end),
    None where it begins with a variable."""
    import ast

    while isinstance(arg, ast.BinOp):
        arg = arg.left
    if isinstance(arg, ast.Constant):
        return str(arg.value)
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        return str(arg.values[0].value)
    return None


def test_every_warning_the_package_writes_is_shown_by_the_cli_as_its_own():
    """The CLI shows the package's warnings as "landscape-nb: warning: ..." by their "landscape_nb" prefix; 14
    messages lacked it and showed as "<frozen runpy>:88: UserWarning: final, the centre of the plane, is farther
    ..." (trial s47). Every literal warn_user message begins with it, and the prefix of a subpackage's function
    (landscape_nb.plot.trajectory:) is shown as the CLI's too."""
    import ast
    import io

    from landscape_nb.cli import _show_warning

    root = Path(lnb.__file__).parent
    bare = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "warn_user" and node.args:
                words = _first_words(node.args[0])
                if words is not None and not words.startswith("landscape_nb"):
                    bare.append(f"{path.relative_to(root)}:{node.lineno}: {words[:40]!r}")
    assert not bare, bare
    out = io.StringIO()
    _show_warning("landscape_nb.plot.trajectory: the path's true losses differ", UserWarning, "x.py", 1, file=out)
    assert out.getvalue() == "landscape-nb: warning: the path's true losses differ\n"


def test_a_lines_note_on_metrics_not_drawn_is_in_the_clis_words(user_model, tmp_path):
    """Left open in s57: `--kind line` of a line eigen-map said "pass metric="eig_ratio" to draw one on the right
    axis", a Python argument the CLI has no flag for; a line with a regression metric said the same, and one over
    splits drawn with --clip said "plot.line_splits draws them"."""
    import torch
    from my_models import make
    from torch import nn

    from landscape_nb.cli import figure_for

    model, (x, y) = make()
    d = lnb.random_directions(model, n=1, seed=0)
    notes = lambda fig: " ".join(str(a.text) for a in fig.layout.annotations)
    eig = lnb.eigen_map(model, (x, y), d, x=(-1, 1, 3), y=None, tol=1e-2)
    said = notes(figure_for(eig, "line"))
    assert "not drawn: eig_ratio" in said and "metric=" not in said
    assert "(--kind eigen_map draws λmax and λmin, the ratio in its hover)" in said  # a line's (re-trial s58)
    torch.manual_seed(0)
    regressor, xs = nn.Linear(4, 1), torch.randn(32, 4)
    mae, mse = (lambda out, t: (out - t).abs().mean()), (lambda out, t: ((out - t) ** 2).mean())
    reg = lnb.compute_surface(regressor, (xs, xs.sum(1, keepdim=True)), lnb.random_directions(regressor, n=1),
                              x=(-1, 1, 3), loss_fn=nn.functional.mse_loss, metrics={"mae": mae, "mse": mse})
    said = notes(figure_for(reg, "line"))
    assert 'from Python, lnb.plot.line(lnb.load_surface(STORE), metric="mae") draws one on the right axis' in said
    splits = lnb.compute_surface(model, {"train": (x, y), "val": (x[:20], y[:20])}, d, x=(-1, 1, 3))
    said = notes(figure_for(splits, "line", clip=5.0))
    assert "drop --clip to draw every split" in said and "plot.line_splits" not in said


def test_the_clis_words_keep_the_key_a_message_names_and_give_the_python_call_for_a_batch_size():
    """Trial s58: a dict batch with no "labels" said "name the targets with --target-key KEY'y'" (the API's words
    replaced around the key the message named), and a loss weighted by its batch told a shell user "batch_size=20000
    for that", an argument the CLI has no flag for."""
    from landscape_nb.cli import _cli_words

    said = _cli_words("the dict has no targets entry (target_key='labels'), so all of ['x', 'y'] went to the model as "
                      "keywords: name the targets with target_key='y'")
    assert said.endswith("name the targets with --target-key y") and "(--target-key labels)" in said
    assert "target_key" not in said
    assert _cli_words("...: name the targets with target_key=").endswith("name the targets with --target-key KEY")
    said = _cli_words("not the value over the whole set (batch_size=20000 for that, or a loss whose ...)")
    assert "(from Python, batch_size=20000 for that, or a loss whose ...)" in said
    said = _cli_words("batches of 64 (batch_size=None (one pass) for that, or a loss ...)")
    assert "(from Python, batch_size=None (one pass) for that, or" in said
    # the API's flag hint beside the flag itself said it twice (trial s59); a hint that adds something stays
    said = _cli_words("check the address, or use client='local' (CLI: --client local)")
    assert said == "check the address, or use --client local"
    said = _cli_words("give them (CLI: --checkpoints A.pt B.pt ..., Explorer: an object with .trajectory)")
    assert "(CLI: --checkpoints A.pt B.pt ..." in said


def test_a_model_returned_in_train_mode_is_said_to_be_evaluated_in_eval_mode(user_model, tmp_path, capsys):
    """make() returns a module as built, in train mode: its points are evaluated in eval mode (naive: the loss at
    the centre recomputed with model.eval()), and the CLI says so, naming what that changes (trial s58: no word);
    a model returned in eval mode gets no note, and --mode bn-recompute leaves BatchNorm out of it."""
    import runpy

    import torch
    from torch import nn

    sys.modules.pop("my_models", None)  # another test's retrained my_models may be the one imported
    model, (x, y) = runpy.run_path(str(tmp_path / "my_models.py"))["train_mode"]()
    with torch.no_grad():
        want = float(nn.functional.cross_entropy(model.eval()(x), y))
    assert main(["compute", "my_models:train_mode", "--grid", "3", "--store", str(tmp_path / "t.zarr")]) == 0
    err = capsys.readouterr().err
    assert ("note: my_models:train_mode returned the model in train mode; every point is evaluated in eval mode "
            "(model.eval(), as the reference implementation does), so its Dropout is off and its BatchNorm uses the "
            "running statistics (--mode bn-recompute re-estimates them") in err, err
    assert lnb.load_surface(tmp_path / "t.zarr").loss[1] == pytest.approx(want, rel=1e-6)
    assert main(["compute", "my_models:train_mode", "--grid", "3", "--mode", "bn-recompute",
                 "--store", str(tmp_path / "b.zarr")]) == 0
    err = capsys.readouterr().err
    assert "so its Dropout is off\n" in err and "BatchNorm uses" not in err, err
    assert main(["compute", "my_models:in_eval_mode", "--grid", "3", "--store", str(tmp_path / "e.zarr")]) == 0
    assert "train mode" not in capsys.readouterr().err


def test_a_dir_file_of_another_models_weights_is_warned_of_with_the_clis_fix(user_model, tmp_path, capsys):
    """Trial s59: the warning that --dir-file's directions are normalized to another model's filters gave the
    Python fix, random_directions(model, ...); on the command line it is to drop --dir-file."""
    import torch
    from torch import nn

    sys.modules.pop("my_models", None)  # this test's own, not another's retrained one
    torch.manual_seed(7)  # the architecture of my_models.make, other weights
    other = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    lnb.random_directions(other, n=1, seed=0).save(tmp_path / "other.npz")
    assert main(["compute", user_model, "--grid", "3", "--dir-file", str(tmp_path / "other.npz"),
                 "--store", str(tmp_path / "o.zarr")]) == 0
    err = capsys.readouterr().err
    assert ("landscape-nb: warning: these random directions were made around another model's weights than this "
            "Sequential's") in err, err
    assert "make them for this model: drop --dir-file (--directions random, with the same --seed)" in err
    assert "random_directions(model" not in err
