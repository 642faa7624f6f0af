"""Direction schemes by name (shared by the CLI and the Explorer), and the CLI on zoo models."""
import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import landscape_nb as lnb
from landscape_nb import LandscapeError
from landscape_nb.schemes import make_directions

from conftest import single_thread

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def example():
    """A stand-in for a zoo Example: model, trajectory, minimizer pair, train split, loss."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 5, generator=g)
    y = (x[:, 0] * x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    trajectory = [copy.deepcopy(model.state_dict())]
    with single_thread():
        for _ in range(5):
            for _ in range(5):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
            trajectory.append(copy.deepcopy(model.state_dict()))
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return SimpleNamespace(name="toy", model=model.eval(), trajectory=trajectory, train=(x, y), test=(x, y),
                           loss_fn=nn.CrossEntropyLoss(), minimizers={"small-batch": model, "large-batch": other})


def test_pca_scheme_is_pca_directions_of_the_trajectory(example):
    base, d = make_directions("pca", example.model, example, ndim=2)
    ref = lnb.pca_directions(example.trajectory, final=example.model, n=2)
    assert base is example.model and torch.equal(d.vectors, ref.vectors)
    assert d.provenance["x_range"][0] < min(d.provenance["path_x"])


def test_hessian_scheme_uses_max_and_min_eigenvectors(example):
    base, d = make_directions("hessian", example.model, example, ndim=2)
    evs = lnb.hessian_eigenvalues(example.model, example.train, k=1)
    assert d.provenance["which"] == ["max1", "min1"]
    assert d.provenance["eigenvalues"] == pytest.approx([evs["max"][0], evs["min"][0]], rel=1e-3, abs=1e-6)
    _, line = make_directions("hessian", example.model, None, ndim=1, data=example.train)
    assert line.n == 1 and line.provenance["which"] == ["max1"]
    # the labels say on which data the eigenvalues are: not the surface's (test split) data
    n_train = len(example.train[1])
    assert line.provenance["x_label"].endswith(f"(on {n_train} samples)") and "hessian_data" not in line.provenance
    n_sub = min(n_train, 512)
    assert d.provenance["x_label"].endswith(f"(on {n_sub} training samples)")
    assert d.provenance["hessian_data"] == "training split, fixed-seed subset of 512"
    _, vol = make_directions("hessian", example.model, None, ndim=3, data=example.train)  # a volume: λ_2 on z
    top2 = lnb.hessian_eigenvalues(example.model, example.train, k=2, which="max", tol=1e-6)["max"]
    assert vol.n == 3 and vol.provenance["which"] == ["max1", "min1", "max2"]
    assert vol.provenance["eigenvalues"][2] == pytest.approx(top2[1], rel=1e-3)
    assert vol.provenance["z_label"].startswith("Hessian eigenvector λ_max2 =")


def test_interpolate_and_plane3_schemes_use_the_minimizer_pair(example):
    a, d = make_directions("interpolate", example.model, example, ndim=1)
    small, large = example.minimizers.values()
    assert a is small and d.provenance["x_range"] == [-0.5, 1.5]
    ref = lnb.interpolation_direction(small, large, include_buffers=True)
    assert torch.equal(d.vectors, ref.vectors)
    assert d.provenance["x_label"] == "interpolation small-batch → large-batch"  # the dict's names, not a → b
    with pytest.raises(LandscapeError, match="^model small-batch holds the same weights as model trained \\(the "
                                             "centre\\), so the plane's axis trained → small-batch has no length"):
        make_directions("plane3", example.model, example, ndim=2)  # here the model is its small-batch minimizer
    third = copy.deepcopy(large)
    with torch.no_grad():
        for p in third.parameters():
            p.mul_(0.5)
    mine = SimpleNamespace(model=example.model, test=example.test, minimizers={"b": large, "c": third})
    a, p = make_directions("plane3", example.model, mine, ndim=2)
    assert a is example.model and p.n == 2 and p.provenance["y_range"] == [-0.5, 1.5]
    assert torch.equal(p.vectors, lnb.plane_directions(example.model, large, third).vectors)
    assert (p.provenance["x_label"], p.provenance["y_label"]) == ("trained → b", "trained → c")
    mine.minimizers = [large, third]  # a list: numbered
    _, p = make_directions("plane3", example.model, mine, ndim=2)
    assert (p.provenance["x_label"], p.provenance["y_label"]) == ("trained → minimizer 0", "trained → minimizer 1")


def test_a_user_object_with_only_a_trajectory_of_files_gets_the_line_and_plane_from_it(example, tmp_path):
    """An Example-like object of the user's (what the Explorer takes besides (model, data)) with checkpoint
    files and no minimizers: the line runs from the first checkpoint to the model and the plane goes through
    the model, the first and the middle checkpoint (naive: the files' tensors subtracted by hand); one with
    neither is refused in words (it raised AttributeError: no attribute 'minimizers')."""
    paths = []
    for k, state in enumerate(example.trajectory):
        paths.append(tmp_path / f"epoch{k:02d}.pt")
        torch.save({"state_dict": state, "epoch": k}, paths[-1])
    mine = SimpleNamespace(model=example.model, test=example.test, trajectory=paths)
    start, d = make_directions("interpolate", example.model, mine, ndim=1)
    names = [n for n, _ in example.model.named_parameters()]
    first, mid = example.trajectory[0], example.trajectory[len(paths) // 2]
    final = dict(example.model.named_parameters())
    naive = torch.cat([(final[n].detach() - first[n]).reshape(-1) for n in names])
    assert torch.equal(d.vectors[0], naive)
    assert all(torch.equal(p.detach(), first[n]) for n, p in start.named_parameters())
    base, p = make_directions("plane3", example.model, mine, ndim=2)
    assert base is example.model
    for row, other in zip(p.vectors, (first, mid)):
        assert torch.equal(row, torch.cat([(other[n] - final[n].detach()).reshape(-1) for n in names]))
    bare = SimpleNamespace(model=example.model, test=example.test)
    with pytest.raises(LandscapeError, match=r"has no minimizer pair \(.minimizers\) and no trajectory"):
        make_directions("interpolate", example.model, bare, ndim=1)
    with pytest.raises(LandscapeError, match="has 0 checkpoints and no minimizer pair; expected at least 3"):
        make_directions("plane3", example.model, bare, ndim=2)


def test_minimizers_as_a_list_of_files_and_an_empty_checkpoint_path(example, tmp_path):
    """``.minimizers`` as a list of checkpoint files works as a dict of models does (a list raised
    AttributeError: no attribute 'values'; paths 'expected a torch.nn.Module'); an empty path in the
    trajectory is said to be empty (it read as the directory '.')."""
    small, large = example.minimizers.values()
    paths = [tmp_path / "small.pt", tmp_path / "large.pt"]
    for m, p in zip((small, large), paths):
        torch.save(m.state_dict(), p)
    mine = SimpleNamespace(model=example.model, test=example.test, minimizers=[str(p) for p in paths])
    a, d = make_directions("interpolate", example.model, mine, ndim=1)
    assert torch.equal(d.vectors, lnb.interpolation_direction(small, large).vectors)
    assert all(torch.equal(pa, ps) for pa, ps in zip(a.parameters(), small.parameters()))
    third = tmp_path / "third.pt"  # the model is its small-batch minimizer here: the plane needs another
    torch.save({k: v * 0.5 for k, v in large.state_dict().items()}, third)
    mine.minimizers = [str(paths[1]), str(third)]
    _, p = make_directions("plane3", example.model, mine, ndim=2)
    half = copy.deepcopy(large)
    half.load_state_dict(torch.load(third, weights_only=True))
    assert torch.equal(p.vectors, lnb.plane_directions(example.model, large, half).vectors)
    holed = SimpleNamespace(model=example.model, test=example.test, trajectory=[paths[0], "", paths[1]])
    with pytest.raises(LandscapeError, match="the model's checkpoints: checkpoint 1 is an empty path"):
        make_directions("plane3", example.model, holed, ndim=2)
    with pytest.raises(LandscapeError, match=r"checkpoint 1 is an empty path; expected the path"):
        lnb.pca_directions(holed.trajectory, final=example.model, n=1)


def test_schemes_refuse_what_they_cannot_do(example):
    with pytest.raises(LandscapeError, match="'pca' needs a training trajectory of at least 3 checkpoints"):
        make_directions("pca", example.model, None, ndim=2)
    short = SimpleNamespace(**{**vars(example), "trajectory": example.trajectory[:2]})
    with pytest.raises(LandscapeError, match=r"at least 3 checkpoints for 2 directions, and toy has 2 \(or draw a "
                                             r"1D line: 2 checkpoints give one direction\)"):
        make_directions("pca", example.model, short, ndim=2)
    assert make_directions("pca", example.model, short, ndim=1)[1].n == 1
    with pytest.raises(LandscapeError, match="need data .* pass data="):
        make_directions("hessian", example.model, None, ndim=2)
    with pytest.raises(LandscapeError, match="1D scan .* asked for ndim=2: use a 1D grid"):
        make_directions("interpolate", example.model, example, ndim=2)
    with pytest.raises(LandscapeError, match="plane through three models; asked for ndim=1: use a 2D grid"):
        make_directions("plane3", example.model, example, ndim=1)
    with pytest.raises(LandscapeError, match="did you mean 'hessian'"):
        make_directions("hesian", example.model, example, ndim=2)


def _zoo():
    zoo = pytest.importorskip("landscape_nb.zoo")
    if not hasattr(zoo, "load"):
        pytest.skip("the zoo has not landed in this branch yet")
    return zoo


@pytest.mark.parametrize("scheme, grid", [("pca", "5x4"), ("hessian", "4x3"), ("interpolate", "7"),
                                          ("plane3", "4x4")])
def test_cli_computes_each_scheme_on_a_zoo_model(scheme, grid, tmp_path, capsys):
    _zoo().load("mlp-digits")
    from landscape_nb.cli import main

    store = tmp_path / f"{scheme}.zarr"
    assert main(["compute", "mlp-digits", "--directions", scheme, "--grid", grid, "--max-samples", "60",
                 "--store", str(store)]) == 0
    surf = lnb.load_surface(store)
    assert surf.is_complete and np.isfinite(surf.loss).all()
    assert surf.provenance["scheme"] == scheme
    if scheme == "pca":
        assert "of variance" in surf.x_label and surf.x[0] < 0 < surf.x[-1]
    if scheme == "hessian":
        assert "λ_max" in surf.x_label and "λ_min" in surf.y_label
    if scheme == "interpolate":  # about -0.5..1.5, moved so that both minimizers are points: -2/3..4/3 for 7
        assert surf.x.tolist() == pytest.approx([-2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1, 4 / 3], abs=1e-12)


def test_the_clis_pca_plane_draws_its_training_path_as_li_et_al_fig_9(tmp_path):
    """`--directions pca --html` drew the bare surface: the path the plane was made from was nowhere. Now its
    default figure is the contour with the path (--kind surface still gives the 3D surface), also from
    `landscape-nb plot`, at the checkpoints' projections (naive: least squares of each checkpoint's offset
    from the final model onto the stored directions, numpy)."""
    ex = _zoo().load("mlp-digits")
    from landscape_nb.cli import figure_for, main

    store, html = tmp_path / "pca.zarr", tmp_path / "pca.html"
    assert main(["compute", "mlp-digits", "--directions", "pca", "--grid", "5x5", "--max-samples", "60",
                 "--store", str(store), "--html", str(html)]) == 0
    surf, d = lnb.load_surface(store), lnb.load_directions(store)
    naive = _naive_projection(ex, d)
    path = next(t for t in figure_for(surf, None).data if t.name == "trajectory")
    np.testing.assert_allclose(np.stack([path.x, path.y], 1), naive, rtol=1e-4, atol=1e-6)
    k = len(ex.trajectory)  # the zoo's: by epoch, the last the trained model at the centre (s41)
    assert list(path.text) == ["init"] + [f"epoch {i}" for i in range(1, k - 1)] + [f"final (epoch {k - 1})"]
    # each checkpoint's own loss, on the 60 samples the surface used (the plane's under it is not that loss)
    x, y = ex.test
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:60].sort().values  # --max-samples
    true = []
    for sd in ex.trajectory:
        m = copy.deepcopy(ex.model)
        m.load_state_dict(sd)
        with torch.no_grad():
            true.append(float(torch.nn.functional.cross_entropy(m.eval()(x[idx]), y[idx])))
    assert "true loss" in path.hovertemplate
    np.testing.assert_allclose(np.asarray(path.customdata, float)[:, 2], true, rtol=1e-5)
    assert main(["plot", str(store), "--html", str(tmp_path / "again.html")]) == 0
    for page in (html, tmp_path / "again.html"):
        text = page.read_text()
        assert '"name":"trajectory"' in text.replace(" ", "") and '"type":"contour"' in text.replace(" ", "")
    assert all(t.name != "trajectory" for t in figure_for(surf, "surface").data)


def _naive_projection(ex, d) -> np.ndarray:
    """Each checkpoint's offset from the final model, least-squares projected on ``d`` (numpy): (k, 2)."""
    names = [n for n, _ in ex.model.named_parameters()]
    final = dict(ex.model.named_parameters())
    basis = np.stack([np.concatenate([v[n].detach().double().reshape(-1).numpy() for n in names])
                      for v in d.as_state_dicts()])
    return np.stack([np.linalg.lstsq(basis.T, np.concatenate([(c[n].double() - final[n].detach().double())
                                     .reshape(-1).numpy() for n in names]), rcond=None)[0] for c in ex.trajectory])


def test_checkpoints_outside_a_typed_range_are_counted_by_the_cli_and_the_explorer(tmp_path, capsys):
    """Trial Y: with a typed range the PCA plane's checkpoints fell outside the figure without a word. The CLI
    and the Explorer now say how many lie outside (counted here from a naive least-squares projection)."""
    from landscape_nb.cli import main
    from landscape_nb.widgets.state import ExplorerState

    ex = _zoo().load("mlp-digits")
    store = tmp_path / "narrow.zarr"
    assert main(["compute", "mlp-digits", "--directions", "pca", "--grid", "5x5", "--range=-0.5:0.5",
                 "--max-samples", "60", "--store", str(store)]) == 0
    naive = _naive_projection(ex, lnb.load_directions(store))
    outside = int((np.abs(naive) > 0.5).any(axis=1).sum())
    assert 0 < outside < len(naive)
    assert f"note: {outside} of the {len(naive)} checkpoints lie outside the range computed, so the figure draws " \
           "that part of the training path where no loss is" in capsys.readouterr().err
    state = ExplorerState(model_name="mlp-digits", scheme="pca", auto_range=False, x_min=-0.5, x_max=0.5,
                          y_min=-0.5, y_max=0.5, x_points=5, y_points=5, max_samples=60)
    try:
        assert state.compute(wait=True), state.message
        assert f"{outside} of the {len(naive)} checkpoints lie outside the range drawn" in state.message
    finally:
        state.close()


def test_models_of_a_plane_through_three_outside_a_typed_range_are_named_by_the_cli_and_the_explorer(
        tmp_path, capsys):
    """A typed range that leaves out models of a plane through three: the CLI and the Explorer name them (the
    figure cannot mark them), and mark the one inside, with its own loss (computed here directly)."""
    from landscape_nb.cli import figure_for, main
    from landscape_nb.widgets.state import ExplorerState

    ex = _zoo().load("mlp-digits")
    store = tmp_path / "narrow.zarr"
    assert main(["compute", "mlp-digits", "--directions", "plane3", "--grid", "5x5", "--range=-0.5:0.5",
                 "--store", str(store)]) == 0
    err = capsys.readouterr().err
    assert ("landscape-nb: note: small-batch at x = 1 lies outside --range -0.5:0.5, so the figure does not show "
            "its loss\nlandscape-nb: note: large-batch at y = 1 lies outside --range -0.5:0.5, so the figure does not "
            "show its loss; --grid 7x7 --range -0.5:1 put them on the grid\n") in err, err  # both, before the run
    assert err.count("outside") == 2, err  # not again after it
    # x leaves out 0, so large-batch at (0, 1) too, which the x note did not name (review s56); y leaving out 0,
    # small-batch at (1, 0) (re-trial s56): each named once, before the run
    for flags, said in ((["--range", "0.2:0.8", "--yrange=-0.5:1.5"],
                         "trained and large-batch at x = 0 and small-batch at x = 1 lie outside --range 0.2:0.8"),
                        (["--yrange", "0.5:1.5"], "trained and small-batch at y = 0 lie outside --yrange 0.5:1.5")):
        assert main(["compute", "mlp-digits", "--directions", "plane3", "--grid", "5x5", *flags,
                     "--store", str(tmp_path / f"x{len(flags)}.zarr")]) == 0
        err = capsys.readouterr().err
        assert said in err and err.count("outside") == 1, err
    said = "outside the range drawn, so not marked: small-batch (1, 0), large-batch (0, 1)"  # the Explorer's words
    marks = next(t for t in figure_for(lnb.load_surface(store), "contour").data if t.name == "models")
    with torch.no_grad():
        own = float(torch.nn.functional.cross_entropy(ex.model(ex.test[0]), ex.test[1]))
    assert list(marks.text) == ["trained"] and np.asarray(marks.customdata)[0, 0] == pytest.approx(own, rel=1e-5)
    state = ExplorerState(model_name="mlp-digits", scheme="plane3", auto_range=False, x_min=-0.5, x_max=0.5,
                          y_min=-0.5, y_max=0.5, x_points=5, y_points=5)
    try:
        assert state.compute(wait=True), state.message
        assert said[0].upper() + said[1:] in state.message
    finally:
        state.close()


def test_the_live_figure_draws_a_pca_planes_training_path_on_its_contours():
    """The Explorer's live figure drew no path on a trajectory-PCA plane (the CLI's figure did, Li et al. Fig. 9):
    it is now on the contour panel, at each checkpoint's naive least-squares projection, and hidden again for
    a plane of other directions."""
    ex = _zoo().load("mlp-digits")
    d = lnb.pca_directions(ex.trajectory, final=ex.model, n=2)
    surf = lnb.compute_surface(ex.model, ex.test, d, x=(-1, 1, 5), y=(-1, 1, 5), max_samples=30)
    fig = lnb.plot.live(surf)
    path = next(t for t in fig.data if t.name == "trajectory")
    naive = _naive_projection(ex, d)
    assert path.visible is True and path.xaxis == "x" and path.yaxis == "y"  # the contour panel's axes
    np.testing.assert_allclose(np.stack([path.x, path.y], 1), naive, rtol=1e-4, atol=1e-6)
    k = len(ex.trajectory)  # the zoo's: by epoch, the last the trained model at the centre (s41)
    assert list(path.text) == ["init"] + [f"epoch {i}" for i in range(1, k - 1)] + [f"final (epoch {k - 1})"]
    other = lnb.compute_surface(ex.model, ex.test, lnb.random_directions(ex.model, n=2), x=(-1, 1, 5),
                                y=(-1, 1, 5), max_samples=30)
    assert next(t for t in lnb.plot.update(fig, other).data if t.name == "trajectory").visible is False


def test_minimizers_of_a_generator_and_an_example_without_a_training_split(example):
    """Minimizers given as a generator were read twice (models, then names): the pair came out nameless and
    refused in words about a names= the user never passed. An Example-like object without .train made the
    hessian scheme raise AttributeError; now it says what data it needs."""
    small, large = example.minimizers.values()
    mine = SimpleNamespace(model=example.model, test=example.test, minimizers=(m for m in (small, large)))
    a, d = make_directions("interpolate", example.model, mine, ndim=1)
    assert a is small and torch.equal(d.vectors, lnb.interpolation_direction(small, large).vectors)
    assert d.provenance["x_label"] == "interpolation minimizer 0 → minimizer 1"
    bare = SimpleNamespace(model=example.model, test=example.test)
    with pytest.raises(LandscapeError, match=r"need data to compute the Hessian on; got none and no example with a "
                                             r"training split \(.train\): pass data="):
        make_directions("hessian", example.model, bare, ndim=1)
    _, h = make_directions("hessian", example.model, bare, ndim=1, data=example.test)
    assert h.provenance["which"] == ["max1"]

