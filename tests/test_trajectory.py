"""Trajectory PCA and projection, checked against dense numpy computations."""
import copy
import pickle
import tracemalloc
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import landscape_nb as lnb
from landscape_nb import LandscapeError
from landscape_nb.trajectory import project_trajectory

pytestmark = pytest.mark.usefixtures("one_thread")

from conftest import PackageWith, TinyCNN, docstring_example, make_mlp, single_thread


def _train_trajectory(model, data, n_ckpt=6, steps=4, lr=0.3, seed=0):
    """SGD in train mode (BN statistics move too); a state dict before and after each chunk of steps."""
    torch.manual_seed(seed)
    x, y = data
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    states = [copy.deepcopy(model.state_dict())]
    model.train()
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_ckpt - 1):
        for _ in range(steps):
            idx = torch.randint(0, len(x), (32,), generator=g)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        states.append(copy.deepcopy(model.state_dict()))
    return model.eval(), states


@pytest.fixture(scope="module")
def mlp_data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(97, 6, generator=g), torch.randint(0, 3, (97,), generator=g)


@pytest.fixture(scope="module")
def cnn_data():
    g = torch.Generator().manual_seed(2)
    return torch.randn(40, 1, 8, 8, generator=g), torch.randint(0, 3, (40,), generator=g)


@pytest.fixture(scope="module")
def mlp_traj(mlp_data):
    with single_thread():
        return _train_trajectory(make_mlp(0), mlp_data)


@pytest.fixture(scope="module")
def cnn_traj(cnn_data):
    torch.manual_seed(0)
    with single_thread():
        return _train_trajectory(TinyCNN(), cnn_data, lr=0.1)


def _naive_losses(model, states, data) -> list[float]:
    """Each checkpoint's loss on ``data``, loaded into a copy of ``model`` (eval mode) the plain way."""
    out = []
    for sd in states:
        m = copy.deepcopy(model).eval()
        m.load_state_dict(sd)
        with torch.no_grad():
            out.append(float(nn.functional.cross_entropy(m(data[0]), data[1])))
    return out


def _matrix(model, states, ignore):
    """Dense float64 checkpoint matrix over trainable params (1-D columns zeroed for biasbn)."""
    rows = []
    for sd in states:
        parts = []
        for name, p in model.named_parameters():
            t = sd[name].double().reshape(-1)
            parts.append(torch.zeros_like(t) if (ignore == "biasbn" and p.ndim <= 1) else t)
        rows.append(torch.cat(parts))
    return torch.stack(rows).numpy()


def _flat_all(model, sd):
    return torch.cat([sd[n].double().reshape(-1) for n, _ in model.named_parameters()]).numpy()


@pytest.mark.parametrize("ignore", ["biasbn", None])
@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_pca_directions_match_numpy_svd_of_centred_checkpoints(which, ignore, mlp_traj, cnn_traj):
    model, states = mlp_traj if which == "mlp" else cnn_traj
    d = lnb.pca_directions(states, final=model, n=2, ignore=ignore)
    m = _matrix(model, states, ignore)
    centred = m - m.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    for i in range(2):
        v = d.vectors[i].double().numpy()
        sign = np.sign(v @ vt[i])
        np.testing.assert_allclose(v, sign * vt[i], atol=2e-6)
    ratios = np.asarray(d.provenance["explained_variance_ratio"])
    np.testing.assert_allclose(ratios, (s ** 2 / (s ** 2).sum())[:2], rtol=1e-6)
    assert ratios.sum() <= 1.0 + 1e-12 and ratios[0] >= ratios[1] > 0
    assert f"{100 * ratios[0]:.1f}% of variance" in d.provenance["x_label"]
    if ignore == "biasbn":  # 1-D tensors get an exactly zero direction
        for e, t in zip(d.layout.entries, d.layout.split(d.vectors)):
            if len(e.shape) <= 1:
                assert torch.count_nonzero(t) == 0


def test_explained_variance_of_all_components_sums_to_one_and_each_prefix_below(mlp_traj):
    model, states = mlp_traj
    full = lnb.pca_directions(states, final=model, n=len(states) - 1)
    ratios = np.asarray(full.provenance["explained_variance_ratio"])
    assert ratios.sum() == pytest.approx(1.0, abs=1e-9)  # k points span k-1 dims: all variance
    assert np.all(np.cumsum(ratios)[:-1] < 1.0) and np.all(np.diff(ratios) <= 1e-15)


@pytest.mark.parametrize("kind", ["pca", "random"])
def test_projected_coordinates_and_off_plane_distances_match_lstsq(kind, mlp_traj):
    model, states = mlp_traj
    if kind == "pca":
        d = lnb.pca_directions(states, final=model, n=2)
        path_x, path_y = d.provenance["path_x"], d.provenance["path_y"]
    else:
        d = lnb.random_directions(model, n=2, seed=3)
    path = project_trajectory(states, d, final=model)
    dmat = d.vectors.double().numpy()
    w = _flat_all(model, model.state_dict())
    for i, sd in enumerate(states):
        delta = _flat_all(model, sd) - w
        c, *_ = np.linalg.lstsq(dmat.T, delta, rcond=None)
        np.testing.assert_allclose(path.coords[i], c, rtol=1e-7, atol=1e-9)
        dist = np.linalg.norm(delta - dmat.T @ c)
        assert path.distance[i] == pytest.approx(dist, rel=1e-7, abs=1e-9)
        assert path.norm[i] == pytest.approx(np.linalg.norm(delta), rel=1e-9, abs=1e-12)
        if kind == "pca":
            assert (path_x[i], path_y[i]) == pytest.approx(tuple(c), rel=1e-7, abs=1e-9)
    assert path.distance[-1] == 0 and path.coords[-1].tolist() == [0.0, 0.0]  # the final model is the origin
    if kind == "pca":  # signs: the path starts at negative coordinates
        assert path.x[0] < 0 and path.y[0] < 0
    else:  # random planes miss the path: points are far off the plane
        assert np.all(path.relative_distance[:-1] > 0.9)


def test_the_last_checkpoint_is_labelled_final_only_when_it_is_the_centre_model(mlp_traj):
    model, states = mlp_traj
    d = lnb.random_directions(model, n=2, seed=3)
    ends_at_centre = project_trajectory(states, d, final=model).labels
    # a list's first checkpoint is not called "init": it may have been saved after training began (s40)
    assert ends_at_centre == [f"checkpoint {i}" for i in range(len(states) - 1)] + ["final"]
    # centred on a checkpoint in the middle: the last checkpoint is later in training, not the model at the centre
    centre = copy.deepcopy(model)
    centre.load_state_dict(states[2])
    mid = project_trajectory(states, lnb.random_directions(centre, n=2, seed=3), final=centre)
    assert mid.labels == [f"checkpoint {i}" for i in range(len(states))]
    far = np.linalg.norm(_flat_all(model, states[-1]) - _flat_all(model, states[2]))
    assert far > 0 and mid.norm[-1] == pytest.approx(far, rel=1e-9)
    # a checkpoint list that stops before the centre: none of them is the final model either
    early = project_trajectory(states[:3], d, final=model)
    assert early.labels == ["checkpoint 0", "checkpoint 1", "checkpoint 2"] and early.norm[-1] > 0


def test_checkpoints_are_labelled_by_what_the_trajectory_tells_of_them(mlp_traj, tmp_path):
    """Final check s40: the first checkpoint of a list was labelled "init" though it was saved after 20 steps.
    Files are labelled by their names, a zoo example's by epoch, a recorder's by step; the last is "final" where
    it is the centre model."""
    model, states = mlp_traj
    d = lnb.random_directions(model, n=2, seed=3)
    files = []
    for i, sd in enumerate(states):
        files.append(tmp_path / f"step{20 * (i + 1)}.pt")
        torch.save(sd, files[-1])
    named = [f"step{20 * (i + 1)}" for i in range(len(states) - 1)] + [f"final (step{20 * len(states)})"]
    assert project_trajectory(files, d, final=model).labels == named
    same = [tmp_path / f"run{i}" / "model.pt" for i in range(len(states))]  # one name for all: numbered
    for f, sd in zip(same, states):
        f.parent.mkdir()
        torch.save(sd, f)
    assert project_trajectory(same, d, final=model).labels[:2] == ["checkpoint 0", "checkpoint 1"]
    assert lnb.pca_directions(files, final=model).provenance["path_labels"][0] == "step20"
    ex = lnb.zoo.load("mlp-digits")
    d = lnb.random_directions(ex.model, n=2, seed=0)
    k = len(ex.trajectory)
    by_epoch = ["init"] + [f"epoch {i}" for i in range(1, k - 1)] + [f"final (epoch {k - 1})"]
    assert project_trajectory(ex, d, final=ex.model).labels == by_epoch
    assert project_trajectory(ex.trajectory, d, final=ex.model).labels == by_epoch
    assert project_trajectory(ex.trajectory[1:3], d, final=ex.model).labels == ["checkpoint 0", "checkpoint 1"]
    rec = lnb.TrajectoryRecorder(model, every=2)
    for _ in range(4):
        rec.step()
    assert rec.project(lnb.random_directions(model, n=2, seed=3)).labels == ["step 0", "step 2", "final (step 4)"]


def test_three_checkpoints_lie_exactly_in_their_pca_plane(mlp_traj):
    model, states = mlp_traj
    picked = [states[0], states[2], states[-1]]
    d = lnb.pca_directions(picked, final=model, n=2, ignore=None)
    assert sum(d.provenance["explained_variance_ratio"]) == pytest.approx(1.0, abs=1e-9)
    assert max(d.provenance["path_distance"]) < 1e-5 * max(d.provenance["path_norm"])


def test_checkpoint_losses_are_the_true_losses_with_their_bn_buffers(cnn_traj, cnn_data):
    model, states = cnn_traj
    assert not torch.equal(states[0]["bn.running_mean"], states[-1]["bn.running_mean"])
    d = lnb.pca_directions(states, final=model, n=2, data=cnn_data)
    before = copy.deepcopy(model.state_dict())
    for i, sd in enumerate(states):
        m = copy.deepcopy(model)
        m.load_state_dict(sd)
        m.eval()
        with torch.no_grad():
            naive = float(nn.functional.cross_entropy(m(cnn_data[0]), cnn_data[1]))
        assert d.provenance["path_loss"][i] == pytest.approx(naive, rel=1e-5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_checkpoints_from_files_and_models_give_the_same_directions(tmp_path, mlp_traj):
    model, states = mlp_traj
    paths = []
    for i, sd in enumerate(states):
        paths.append(tmp_path / f"ckpt{i}.pt")
        torch.save(sd, paths[-1])
    from_files = lnb.pca_directions([str(p) for p in paths], final=model)
    from_dicts = lnb.pca_directions(states, final=model)
    assert torch.equal(from_files.vectors, from_dicts.vectors)
    models = []
    for sd in states:
        m = make_mlp(0)
        m.load_state_dict(sd)
        models.append(m)
    from_models = lnb.pca_directions(models)  # final defaults to the last model
    assert torch.allclose(from_models.vectors, from_dicts.vectors)


class Payload:  # unpickling this would import and build an arbitrary object: weights_only refuses it
    pass


def test_a_file_that_is_not_a_weights_only_state_dict_is_refused(tmp_path, mlp_traj):
    model, states = mlp_traj
    bad = tmp_path / "bad.pt"
    torch.save({"obj": Payload()}, bad)
    with pytest.raises(LandscapeError, match="weights-only state dict"):
        lnb.pca_directions([states[0], states[1], str(bad)], final=model)
    with pytest.raises(LandscapeError, match="no file"):
        lnb.pca_directions([states[0], states[1], str(tmp_path / "missing.pt")], final=model)
    text = tmp_path / "text.pt"
    text.write_text("\nnot a checkpoint at all\n")  # a script given by mistake: torch said "Unsupported operand 110"
    with pytest.raises(LandscapeError, match=r"\(it is a text file, first line 'not a checkpoint at all', not one "
                                             r"torch.save wrote\)"):
        lnb.pca_directions([states[0], states[1], str(text)], final=model)
    binary = tmp_path / "binary.pt"
    binary.write_bytes(b"\x00\x01\x02junk" * 8)  # torch's reason sits after a paragraph on weights_only's default
    with pytest.raises(LandscapeError) as info:
        lnb.pca_directions([states[0], states[1], str(binary)], final=model)
    assert "not a file torch.save wrote, it seems; torch" in str(info.value), str(info.value)
    assert "fr)" not in str(info.value)  # it was cut at 120 characters, mid-word
    plain = tmp_path / "plain.pkl"  # pickle.dump's: torch warned of its protocol before our error (trial s53b)
    plain.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with pytest.raises(LandscapeError, match="not a file torch.save wrote, it seems; torch's unpickler said"):
            lnb.pca_directions([states[0], states[1], str(plain)], final=model)
    assert not [w for w in said if "pickle protocol" in str(w.message)]


def test_checkpoints_of_another_architecture_are_refused(mlp_traj):
    model, states = mlp_traj
    other = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 3)).state_dict()
    with pytest.raises(LandscapeError, match=r"checkpoint 2: tensor '0.weight' has shape \(32, 6\).*another architecture"):
        lnb.pca_directions([states[0], states[1], other, states[-1]], final=model)
    renamed = {f"net.{k}": v for k, v in states[1].items()}
    with pytest.raises(LandscapeError, match="checkpoint 1 has no tensor '0.weight'"):
        lnb.pca_directions([states[0], renamed, states[-1]], final=model)
    extra = {**states[1], "aux.weight": torch.zeros(3, 16), "aux.bias": torch.zeros(3)}  # a PCA over the shared
    with pytest.raises(LandscapeError, match=r"checkpoint 1 has 2 tensor\(s\) the model has not \('aux\.weight', "
                                             r"'aux\.bias'\).*another architecture"):  # tensors came back (s40)
        lnb.pca_directions([states[0], extra, states[-1]], final=model)


def test_a_checkpoint_or_final_model_with_nan_is_refused_naming_it(mlp_traj):
    """A NaN checkpoint (saved after training diverged) raised numpy's LinAlgError from the PCA and gave NaN
    coordinates from a projection without a word."""
    model, states = mlp_traj
    nan = {k: v * float("nan") for k, v in states[1].items()}
    with pytest.raises(LandscapeError, match=r"^checkpoint 2: tensor '0.weight' holds \d+ non-finite value"):
        lnb.pca_directions([states[0], states[1], nan, states[-1]], final=model)
    d = lnb.random_directions(model, n=2, seed=0)
    with pytest.raises(LandscapeError, match=r"^checkpoint 1: tensor '0.weight' holds"):
        lnb.project_trajectory([states[0], nan], d, final=model)
    broken = make_mlp(0)
    broken.load_state_dict(states[-1])
    with torch.no_grad():
        broken[0].bias[1] = float("inf")
    with pytest.raises(LandscapeError, match=r"'0.bias' holds 1 non-finite value.*\(final, the centre of the plane\)"):
        lnb.pca_directions(states, final=broken)


def test_a_plane_needs_three_checkpoints(mlp_traj):
    model, states = mlp_traj
    with pytest.raises(LandscapeError, match=r"2 checkpoint\(s\) for n=2.*at least 3"):
        lnb.pca_directions(states[:2], final=model, n=2)
    assert lnb.pca_directions(states[-2:], final=model, n=1).n == 1  # a line needs two
    with pytest.raises(LandscapeError, match="expected checkpoints that differ"):
        lnb.pca_directions([states[0]] * 4, final=model, n=2)
    with pytest.raises(LandscapeError, match="final=model"):
        lnb.pca_directions(states, n=2)
    with pytest.raises(LandscapeError, match="expected a list of checkpoints"):
        lnb.pca_directions(states[0], final=model)
    # n=2.0 was told "expected a positive number" (trial s59): a whole number, and the one meant where it is one
    with pytest.raises(LandscapeError, match=r"^n=2.0; expected a whole number of principal directions, at least 1: "
                                             r"1 \(a line\), 2 \(a plane\) or 3 \(a volume\): n=2$"):
        lnb.pca_directions(states, final=model, n=2.0)
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(LandscapeError, match=r"expected a whole number of principal directions, at least 1: "
                                                 r"1 \(a line\), 2 \(a plane\) or 3 \(a volume\)$"):
            lnb.pca_directions(states, final=model, n=bad)


def test_pca_surface_on_its_suggested_range_contains_the_path(mlp_traj, mlp_data):
    model, states = mlp_traj
    d = lnb.pca_directions(states, final=model, n=2, data=mlp_data)
    (x0, x1), (y0, y1) = d.provenance["x_range"], d.provenance["y_range"]
    assert x0 < min(d.provenance["path_x"]) and x1 > max(d.provenance["path_x"]) and x0 < 0 < x1
    assert y0 < min(d.provenance["path_y"]) and y1 > max(d.provenance["path_y"])
    surf = lnb.compute_surface(model, mlp_data, d, x=(x0, x1, 5), y=(y0, y1, 4))
    assert surf.x_label == d.provenance["x_label"] and "PC2" in surf.y_label


def test_a_three_component_pca_suggests_a_z_range_covering_the_path(mlp_traj):
    """A 3-D PCA stored x and y ranges only, so suggested_grid gave z = -1..1 for a path whose PC3 spans
    -2.84..1.35: part of the run fell outside the volume (trial s37). Its z range now covers the path's PC3
    coordinates (naive: least squares onto the three directions), and the axis is labelled."""
    model, states = mlp_traj
    d = lnb.pca_directions(states, final=model, n=3)
    path = project_trajectory(states, d, final=model)
    start, stop, num = d.suggested_grid(7)["z"]
    pc3 = path.coords[:, 2]
    offsets = np.stack([_flat_all(model, sd) - _flat_all(model, model.state_dict()) for sd in states])
    naive = np.linalg.lstsq(d.vectors.double().numpy().T, offsets.T, rcond=None)[0][2]
    np.testing.assert_allclose(pc3, naive, atol=1e-6 * np.abs(naive).max())
    assert start < pc3.min() and stop > pc3.max() and num == 7
    assert stop - start < 3 * np.ptp(pc3)  # the path's span with a margin, not a fixed -1..1 (2 here: 17 times it)
    assert d.provenance["z_label"].startswith("PC3 (")


def test_the_pca_docstring_example_runs_as_written(mlp_traj, mlp_data):
    model, states = mlp_traj
    code = docstring_example(lnb.pca_directions)
    example = SimpleNamespace(trajectory=states, model=model, test=mlp_data)
    scope = {"lnb": PackageWith(zoo=SimpleNamespace(load=lambda name: example))}
    with single_thread():
        exec(code, scope)  # noqa: S102 - the docstring's example, as written
    d, surf = scope["d"], scope["surf"]
    assert "**d.suggested_grid(21)" in code  # the example computes a surface on the suggested range, through 0
    for axis in ("x", "y"):
        points, (lo, hi) = getattr(surf, axis), d.provenance[f"{axis}_range"]
        assert points[0] <= lo + 1e-9 and points[-1] >= hi - 1e-9 and np.abs(points).min() < 1e-9
    assert surf.loss.shape == (21, 21) and np.isfinite(surf.loss).all()


def test_pca_peak_memory_stays_below_the_dense_float64_matrix():
    """16 checkpoints of a 262k-parameter model: tracemalloc sees numpy's working arrays."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 512))
    g = torch.Generator().manual_seed(0)
    states, sd = [], {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(16):
        sd = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in sd.items()}
        states.append(sd)
    n_params = sum(p.numel() for p in model.parameters())
    tracemalloc.start()
    try:
        d = lnb.pca_directions(states, final=model, n=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    dense = 16 * n_params * 8
    output = 2 * n_params * 4
    assert d.vectors.shape == (2, n_params)
    assert output <= peak < 0.5 * dense, (peak, dense)


def test_a_float64_models_pca_directions_and_checkpoint_losses_are_float64(mlp_traj, mlp_data):
    """A float64 model's principal directions and checkpoint losses to float64 rounding (naive SVD, naive loop),
    not float32's ~1e-7."""
    model, states = mlp_traj
    model = copy.deepcopy(model).double()
    states = [{k: v.double() for k, v in sd.items()} for sd in states]
    data = (mlp_data[0].double(), mlp_data[1])
    d = lnb.pca_directions(states, final=model, n=2, ignore=None, data=data)
    assert d.vectors.dtype == torch.float64
    m = _matrix(model, states, None)
    _, _, vt = np.linalg.svd(m - m.mean(axis=0), full_matrices=False)
    for i in range(2):
        v = d.vectors[i].numpy()
        np.testing.assert_allclose(v, np.sign(v @ vt[i]) * vt[i], atol=1e-12)
    np.testing.assert_allclose(d.provenance["path_loss"], _naive_losses(model, states, data), rtol=1e-12, atol=0)


def test_distances_count_final_frozen_parameters_that_the_checkpoints_moved_and_warn(mlp_traj, mlp_data):
    """Trial s35: the trajectory trained every layer, then the first was frozen in `final`. Its movement was left
    out of both distances (1.10 reported off the plane where every weight gave 4.80), against the promise that
    distances from the plane count every weight."""
    model, states = mlp_traj
    final = copy.deepcopy(model)
    final[0].requires_grad_(False)
    with pytest.warns(UserWarning, match=r"frozen \(requires_grad=False\) parameters \['0.weight', '0.bias'\] differ "
                                         r"between the checkpoints and final.*\d+% of the squared distance off"):
        d = lnb.pca_directions(states, final=final, n=2)
    with pytest.warns(UserWarning, match="unfreeze them in final"):
        path = project_trajectory(states, d, final=final)
    names = [name for name, _ in model.named_parameters()]
    trainable = [name for name, p in final.named_parameters() if p.requires_grad]
    sizes = {name: p.numel() for name, p in model.named_parameters()}
    # the directions over every parameter, zero on the frozen ones (the plane does not move them)
    parts, start = [], 0
    for name in names:
        if name in trainable:
            parts.append(d.vectors[:, start:start + sizes[name]].double().numpy())
            start += sizes[name]
        else:
            parts.append(np.zeros((2, sizes[name])))
    dmat = np.concatenate(parts, axis=1)
    w = _flat_all(model, final.state_dict())
    for i, sd in enumerate(states):
        delta = _flat_all(model, sd) - w
        c, *_ = np.linalg.lstsq(dmat.T, delta, rcond=None)
        np.testing.assert_allclose(path.coords[i], c, rtol=1e-6, atol=1e-9)
        assert path.norm[i] == pytest.approx(np.linalg.norm(delta), rel=1e-9, abs=1e-12)
        assert path.distance[i] == pytest.approx(np.linalg.norm(delta - dmat.T @ c), rel=1e-7, abs=1e-9)
        assert d.provenance["path_distance"][i] == pytest.approx(path.distance[i], rel=1e-9, abs=1e-12)
    # the explained variance is the PCA's over the trainable tensors only (biasbn: 1-D ones left out)
    m = np.stack([np.concatenate([sd[name].double().reshape(-1).numpy() for name in trainable
                                  if sd[name].ndim > 1]) for sd in states])
    s = np.linalg.svd(m - m.mean(axis=0), compute_uv=False)
    np.testing.assert_allclose(d.provenance["explained_variance_ratio"], (s ** 2 / (s ** 2).sum())[:2], rtol=1e-6)
    # each checkpoint's true loss is its own, with its own frozen layer (it was evaluated with final's, trial s35)
    with pytest.warns(UserWarning, match="unfreeze them in final"):
        losses = project_trajectory(states, d, final=final, data=mlp_data).loss
    np.testing.assert_allclose(losses, _naive_losses(model, states, mlp_data), rtol=1e-5)
    with warnings.catch_warnings():  # frozen parameters equal in every checkpoint: nothing to say
        warnings.simplefilter("error")
        frozen_same = copy.deepcopy(model)
        frozen_same[0].requires_grad_(False)
        project_trajectory([{**sd, "0.weight": model[0].weight.detach(), "0.bias": model[0].bias.detach()}
                            for sd in states], d, final=frozen_same)


def test_bfloat16_checkpoints_and_model_give_the_pca_of_their_values(mlp_traj):
    """Trial s35: bfloat16 checkpoints raised numpy's "TypeError: Got unsupported ScalarType BFloat16"; they are
    read as float32, which holds every bfloat16 value exactly (naive: SVD of the float64 matrix of those values)."""
    model, states = mlp_traj
    model = copy.deepcopy(model).bfloat16()
    states = [{k: v.bfloat16() for k, v in sd.items()} for sd in states]
    d = lnb.pca_directions(states, final=model, n=2, ignore=None)
    m = _matrix(model, states, None)
    _, s, vt = np.linalg.svd(m - m.mean(axis=0), full_matrices=False)
    for i in range(2):
        v = d.vectors[i].double().numpy()
        np.testing.assert_allclose(v, np.sign(v @ vt[i]) * vt[i], atol=2e-6)
    np.testing.assert_allclose(d.provenance["explained_variance_ratio"], (s ** 2 / (s ** 2).sum())[:2], rtol=1e-6)
    w = _flat_all(model, model.state_dict())
    norms = [np.linalg.norm(_flat_all(model, sd) - w) for sd in states]
    np.testing.assert_allclose(d.provenance["path_norm"], norms, rtol=1e-9)


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict"])
def test_trainer_dicts_in_memory_are_read_as_their_files_are(key, mlp_traj, mlp_data):
    """Trial s35: [{"epoch": i, "model_state_dict": sd}, ...] held in memory was refused as "another architecture",
    while the same dicts saved to .pt files were read."""
    model, states = mlp_traj
    wrapped = [{"epoch": i, key: sd, "optimizer": {"lr": 0.3}} for i, sd in enumerate(states)]
    d = lnb.pca_directions(wrapped, final=model, n=2, ignore=None, data=mlp_data)
    m = _matrix(model, states, None)
    _, _, vt = np.linalg.svd(m - m.mean(axis=0), full_matrices=False)
    for i in range(2):
        v = d.vectors[i].double().numpy()
        np.testing.assert_allclose(v, np.sign(v @ vt[i]) * vt[i], atol=2e-6)
    np.testing.assert_allclose(d.provenance["path_loss"], _naive_losses(model, states, mlp_data), rtol=1e-5)


def test_checkpoints_that_differ_only_in_biases_are_refused_suggesting_ignore_none(mlp_traj):
    """Trial s35: checkpoints differing in biases only were told "expected checkpoints that differ from each
    other", though they do: in what ignore="biasbn" leaves out."""
    model, states = mlp_traj
    base = states[-1]
    g = torch.Generator().manual_seed(0)
    biased = [base] + [{k: v + 0.1 * torch.randn(v.shape, generator=g) if k.endswith("bias") else v
                        for k, v in base.items()} for _ in range(3)]
    with pytest.raises(LandscapeError, match=r"they differ only in 1-D tensors \['0.bias', '2.bias'\] \(biases, "
                                             r"norm-layer weights\), which ignore='biasbn' leaves out of the PCA: "
                                             r"pass ignore=None to include them$"):
        lnb.pca_directions(biased, final=model, n=2)
    d = lnb.pca_directions(biased, final=model, n=2, ignore=None)  # the fix, checked against numpy's SVD
    m = _matrix(model, biased, None)
    _, _, vt = np.linalg.svd(m - m.mean(axis=0), full_matrices=False)
    for i in range(2):
        v = d.vectors[i].double().numpy()
        np.testing.assert_allclose(v, np.sign(v @ vt[i]) * vt[i], atol=2e-6)
    on_a_line = [{k: v + 0.1 * i if k.endswith("bias") else v for k, v in base.items()} for i in range(4)]
    with pytest.raises(LandscapeError, match=r"pass ignore=None to include them \(with them they span 1 "
                                             r"direction\(s\): ask for n=1 too\)"):
        lnb.pca_directions(on_a_line, final=model, n=2)
    with pytest.raises(LandscapeError, match="differ from each other: pass checkpoints from different training"), \
            pytest.warns(UserWarning, match=r"2 is checkpoint 1"):  # biases too: no plane with them
        lnb.pca_directions([states[0], states[-1], states[-1]], final=model, n=2)


def test_a_repeated_checkpoint_is_named_in_a_warning_as_it_weighs_in_the_pca_again(mlp_traj):
    """Trial s35: the final model passed twice changed the directions and explained variance without a word."""
    model, states = mlp_traj
    twice = [*states, copy.deepcopy(states[-1]), states[1]]
    with pytest.warns(UserWarning, match=r"^landscape_nb: checkpoints repeat earlier ones \(6 is checkpoint 5, 7 is checkpoint 1: "
                                         r"the same weights\): each copy weighs in the PCA once more"):
        d = lnb.pca_directions(twice, final=model, n=2, ignore=None)
    m = _matrix(model, twice, None)  # naive: the copies are rows of the matrix like any other
    s = np.linalg.svd(m - m.mean(axis=0), compute_uv=False)
    np.testing.assert_allclose(d.provenance["explained_variance_ratio"], (s ** 2 / (s ** 2).sum())[:2], rtol=1e-6)
    once = lnb.pca_directions(states, final=model, n=2, ignore=None)
    assert not np.allclose(d.provenance["explained_variance_ratio"], once.provenance["explained_variance_ratio"])
    nudged = {k: v.clone() for k, v in states[-1].items()}
    nudged["0.weight"][0, 0] = torch.nextafter(nudged["0.weight"][0, 0], torch.tensor(1.0))  # one ulp: not a copy
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lnb.pca_directions([*states, nudged], final=model, n=2)


def test_models_project_onto_the_plane_through_them_where_it_moves_frozen_parameters():
    """plane_directions puts differing frozen parameters in their place in the layout; the projection read the
    direction vectors with the trainable-only offsets, so b was drawn at (0.31, 0.36), 1.10 off its own plane."""
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
        models[-1][0].requires_grad_(False)
    a, b, c = models
    d = lnb.plane_directions(a, b, c)
    assert d.layout.frozen_names == ("0.weight", "0.bias")
    path = project_trajectory([b.state_dict(), c.state_dict()], d, final=a)
    np.testing.assert_allclose(path.coords, np.eye(2), atol=1e-6)  # b is at (1, 0), c at (0, 1) by construction
    assert np.all(path.distance < 1e-6)


def _naive_bn_recompute_losses(model, states, stat_inputs, data) -> list[float]:
    """Each checkpoint's loss on ``data`` with its BatchNorm statistics re-estimated, by hand, in one train-mode
    pass over ``stat_inputs`` (momentum None: the plain mean and variance)."""
    out = []
    for sd in states:
        m = copy.deepcopy(model)
        m.load_state_dict(sd)
        m.bn.reset_running_stats()
        m.bn.momentum = None
        m.eval()
        m.bn.train()
        with torch.no_grad():
            m(stat_inputs)
            m.eval()
            out.append(float(nn.functional.cross_entropy(m(data[0]), data[1])))
    return out


def test_a_path_of_other_directions_is_refused_on_a_plane_and_one_of_another_mode_is_warned_about(cnn_traj,
                                                                                                   cnn_data):
    """A path projected onto random directions was drawn on the PCA plane without a word, and a path's true
    losses (eval mode) beside a bn-recompute plane differed by BatchNorm's statistics, read as the projection's
    error (0.56 against 0.35 at the same model, trial s35). Now: refused; and ``mode=`` evaluates the true
    losses as the surface's points are (checked by hand: statistics of the data, one train-mode pass)."""
    model, states = cnn_traj
    d = lnb.pca_directions(states, final=model)
    surf = lnb.compute_surface(model, cnn_data, d, **d.suggested_grid(5), mode="bn-recompute")
    other = project_trajectory(states, lnb.random_directions(model, n=2, seed=0), final=model)
    with pytest.raises(LandscapeError, match=r"^trajectory: the path was projected onto other directions "
                                             r"\(fingerprint \w+\) than the surface was computed along"):
        lnb.plot.pca_contour(surf, other)
    with pytest.warns(UserWarning, match=r"the path's true losses were evaluated with mode='eval', the surface with "
                                         r"mode='bn-recompute'.*project_trajectory\(\.\.\., mode='bn-recompute'\)"):
        lnb.plot.pca_contour(surf, project_trajectory(states, d, final=model, data=cnn_data))
    path = project_trajectory(states, d, final=model, data=cnn_data, mode="bn-recompute")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lnb.plot.pca_contour(surf, path)
    np.testing.assert_allclose(path.loss, _naive_bn_recompute_losses(model, states, cnn_data[0], cnn_data), rtol=1e-5)
    i, j = int(np.argmin(np.abs(surf.x))), int(np.argmin(np.abs(surf.y)))
    assert path.labels[-1] == "final" and path.loss[-1] == pytest.approx(surf.loss[j, i], rel=1e-5)


def test_a_path_evaluated_on_other_data_or_outside_the_grid_is_said_in_the_figure(mlp_traj, mlp_data):
    """Trial s40: a plane of the test split with the path's true losses on the train split hovered "true loss
    0.0747 ... plane's loss 0.1825" at the final model, read as the projection's error; and checkpoints outside
    the grid were left out of the figure with no word. Both are said now; a path on the surface's own data and
    range is quiet."""
    model, states = mlp_traj
    train, test = (mlp_data[0][:60], mlp_data[1][:60]), (mlp_data[0][60:], mlp_data[1][60:])
    d = lnb.pca_directions(states, final=model)
    path = project_trajectory(states, d, final=model, data=train)
    narrow = lnb.compute_surface(model, test, d, x=(-0.2, 0.2, 3), y=(-0.2, 0.2, 3))
    with pytest.warns(UserWarning, match=r"the path's true losses were evaluated on other data \(fingerprint \w+\) "
                                         r"than the surface \(fingerprint \w+, 37 samples\)"):
        fig = lnb.plot.pca_contour(narrow, path)
    outside = int(np.sum((np.abs(path.x) > 0.2) | (np.abs(path.y) > 0.2)))  # naive: beyond the grid's ±0.2
    assert 0 < outside < len(states)
    notes = " ".join(str(a.text) for a in fig.layout.annotations).replace("<br>", " ")
    # drawn, where no loss is: the axes widen to the markers (re-trial s58: "not shown" of markers in view)
    assert f"{outside} of {len(states)} checkpoints lie outside the range computed (drawn where no loss is)" in notes
    fits = lnb.compute_surface(model, train, d, **d.suggested_grid(5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = lnb.plot.pca_contour(fits, path)
    assert "outside the range computed" not in " ".join(str(a.text) for a in fig.layout.annotations)
    smoothed = lambda o, t: nn.functional.cross_entropy(o, t, label_smoothing=0.3)  # beside the default's (s40)
    with pytest.warns(UserWarning, match=r"the path's true losses are of another loss function than the surface's "
                                         r"\(the default cross-entropy against fingerprint \w+\)"):
        lnb.plot.pca_contour(lnb.compute_surface(model, train, d, **d.suggested_grid(5), loss_fn=smoothed), path)


def test_animate_checks_the_path_as_pca_contour_does_and_a_bn_data_path_meets_its_plane(cnn_traj, cnn_data):
    """``plot.animate`` drew a path projected onto random directions on a PCA plane, at its origin, as a run that
    never moved, with no word; and a path's true losses could not use the surface's ``bn_data``, so the final
    checkpoint, at (0, 0), showed 0.12324 where the plane has 0.12111 (trial s37). Now animate refuses and warns
    as ``pca_contour`` does (its 1-D case names plot.line), and ``bn_data=`` gives the plane's value at the centre
    and the naive re-estimation at every checkpoint; a path without it is warned about."""
    model, states = cnn_traj
    bn_x = (cnn_data[0].flip(0)[:24] * 1.5,)  # inputs with other statistics than the evaluation data
    d = lnb.pca_directions(states, final=model)
    surf = lnb.compute_surface(model, cnn_data, d, **d.suggested_grid(5), mode="bn-recompute", bn_data=bn_x)
    other = project_trajectory(states, lnb.random_directions(model, n=2, seed=0), final=model)
    with pytest.raises(LandscapeError, match=r"^trajectory: the path was projected onto other directions"):
        lnb.plot.animate(surf, other)
    with pytest.warns(UserWarning, match=r"the path's true losses were evaluated with mode='eval'"):
        lnb.plot.animate(surf, project_trajectory(states, d, final=model, data=cnn_data))
    on_data = project_trajectory(states, d, final=model, data=cnn_data, mode="bn-recompute")
    for draw in (lnb.plot.animate, lnb.plot.pca_contour):
        with pytest.warns(UserWarning, match=r"the path's BatchNorm statistics were re-estimated on the evaluation "
                                             r"data, the surface's on bn_data.*project_trajectory\(\.\.\., bn_data=\)"):
            draw(surf, on_data)
    path = project_trajectory(states, d, final=model, data=cnn_data, mode="bn-recompute", bn_data=bn_x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = lnb.plot.animate(surf, path)
        lnb.plot.pca_contour(surf, path)
    assert any("farthest from the plane" in a.text for a in fig.layout.annotations)
    np.testing.assert_allclose(path.loss, _naive_bn_recompute_losses(model, states, bn_x[0], cnn_data), rtol=1e-5)
    i, j = int(np.argmin(np.abs(surf.x))), int(np.argmin(np.abs(surf.y)))
    assert path.labels[-1] == "final" and path.loss[-1] == pytest.approx(surf.loss[j, i], rel=1e-5)
    assert abs(on_data.loss[-1] / surf.loss[j, i] - 1) > 1e-3  # what the warning is about
    with pytest.raises(LandscapeError, match=r"bn_data given with mode='eval'; expected mode='bn-recompute'"):
        project_trajectory(states, d, final=model, data=cnn_data, bn_data=bn_x)
    d1 = lnb.pca_directions(states, final=model, n=1)
    line = lnb.compute_surface(model, cnn_data, d1, **d1.suggested_grid(5))
    with pytest.raises(LandscapeError, match=r"plot.animate: got a 1D surface .* use plot.line\(\) for 1D surfaces"):
        lnb.plot.animate(line, project_trajectory(states, d1, final=model))


def test_a_path_around_another_final_model_is_warned_and_the_off_plane_note_says_where_the_distance_lies(
        mlp_traj, mlp_data):
    """Another run's model passed as ``final`` shifted every coordinate with no word, and the note blamed the
    biases the plane leaves out (ignore biasbn) for another run's checkpoints being off it (trial s37). Now
    project_trajectory warns, and the note asks whether it is the run unless most of the distance lies in the
    tensors no direction moves (``left_out``: naive, the biases' own offsets here)."""
    model, states = mlp_traj
    d = lnb.pca_directions(states, final=model)  # ignore="biasbn": biases left out
    other_model, other_states = _train_trajectory(make_mlp(5), mlp_data)
    with pytest.warns(UserWarning, match=r"project_trajectory: these pca directions were made around another "
                                         r"model's weights than final's \(Sequential\).*pass final= the model"):
        project_trajectory(states, d, final=other_model)
    surf = lnb.compute_surface(model, mlp_data, d, **d.suggested_grid(5))
    theirs = project_trajectory(other_states, d, final=model)
    notes = " ".join(a.text for a in lnb.plot.pca_contour(surf, theirs).layout.annotations).replace("<br>", " ")
    assert "off this plane: is this the run that ends at the centre model?" in notes
    biases = [name for name, p in model.named_parameters() if p.ndim == 1]
    naive = [float(sum(((sd[n] - dict(model.named_parameters())[n].detach()) ** 2).sum() for n in biases)) ** 0.5
             for sd in other_states]
    np.testing.assert_allclose(theirs.left_out, naive, rtol=1e-5)
    shifted = []  # this run with its biases moved far: the distance lies in what the plane leaves out
    for sd in states:
        sd = dict(sd)
        for n in biases:
            sd[n] = sd[n] + 5.0
        shifted.append(sd)
    ours = project_trajectory(shifted[:-1], d, final=model)
    notes = " ".join(a.text for a in lnb.plot.pca_contour(surf, ours).layout.annotations).replace("<br>", " ")
    assert "off this plane: the plane leaves out biases and norm-layer weights" in notes
    # a plane with every tensor in (ignore=None) whose run left its first layer as it was: a distance in that
    # weight matrix was blamed on biases and ignore=None (re-trial s37)
    first = next(n for n, p in model.named_parameters() if p.ndim == 2)
    still = [{**sd, first: dict(model.named_parameters())[first].detach().clone()} for sd in states]
    d_all = lnb.pca_directions(still, final=model, ignore=None)
    plane = lnb.compute_surface(model, mlp_data, d_all, **d_all.suggested_grid(5))
    moved = [{**sd, first: sd[first] + 1.0} for sd in still[:-1]]
    notes = " ".join(a.text for a in lnb.plot.pca_contour(plane, project_trajectory(moved, d_all, final=model))
                     .layout.annotations).replace("<br>", " ")
    assert "most of that offset lies in tensors none of the plane's directions moves" in notes
    assert "biases" not in notes


def test_the_mistakes_of_a_first_trajectory_get_the_fix_that_works(mlp_traj, tmp_path):
    """Trial s37: a glob pattern given as the trajectory, state dicts appended without copies (the same tensors k
    times), a recorder pointed at an existing file (told to pass overwrite=True, which was then refused) and an
    Explorer interpolation with one minimizer ("no minimizer pair") each get the fix that works."""
    from types import SimpleNamespace

    from landscape_nb import schemes

    model, _ = mlp_traj
    with pytest.raises(LandscapeError, match=r"trajectory of type str; .*: for the files matching it, "
                                             r"sorted\(glob\.glob\('ckpt/\*\.pt'\)\) in training order"):
        lnb.pca_directions("ckpt/*.pt", final=model)
    aliased = [model.state_dict()] * 4
    with pytest.raises(LandscapeError, match=r"span fewer than 2 independent directions .* keep copies, "
                                             r"\{k: v\.clone\(\) for k, v in model\.state_dict\(\)\.items\(\)\}"):
        lnb.pca_directions(aliased, final=model)
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    with pytest.raises(LandscapeError, match=r"already exists; expected a new path for the store: it is no trajectory "
                                             r"store, so choose another path"):
        lnb.TrajectoryRecorder(model, path=existing)
    assert existing.read_text() == "mine"
    one = SimpleNamespace(model=model, test=None, minimizers=[model])
    with pytest.raises(LandscapeError, match=r"has 1 minimizer \(\.minimizers; a line needs two\)"):
        schemes.make_directions("interpolate", model, one, ndim=1)


def test_a_pca_planes_figure_names_the_parameters_it_held_fixed(mlp_traj, mlp_data):
    """Final check s40: the random plane's hover named the biases its directions held fixed (ignore="biasbn");
    a PCA plane's, which holds them fixed too, said nothing. Frozen parameters are named as well."""
    model, states = mlp_traj
    model = copy.deepcopy(model)
    model[0].weight.requires_grad_(False)
    d = lnb.pca_directions(states, final=model)
    assert d.provenance["zeroed"] == [n for n, p in model.named_parameters() if p.ndim == 1]
    assert d.provenance["excluded"] == ["0.weight (frozen)"]
    surf = lnb.compute_surface(model, mlp_data, d, x=(-1, 1, 3), y=(-1, 1, 3))
    figure = lnb.plot.pca_contour(surf, project_trajectory(states, d, final=model))
    hover = " ".join(str(t.hovertemplate) for t in figure.data)
    assert "held fixed: 1 frozen (0.weight); 2 biases/norm weights (0.bias, 2.bias)" in hover, hover
    assert "biases/norm weights" not in str(lnb.pca_directions(states, final=model, ignore=None).provenance)


def test_a_final_model_away_from_every_checkpoint_is_warned_of(mlp_traj):
    """Trial O (s40): an untrained model given as final centred the PCA plane away from the whole path, said by the
    figure's note alone. The warning compares the distances with a naive computation: final is farther from every
    checkpoint than the checkpoints are from each other; the trained model gives none."""
    model, states = mlp_traj
    torch.manual_seed(123)
    fresh = make_mlp(1)
    flat = [_flat_all(fresh, sd) for sd in states]
    to_fresh = [np.linalg.norm(f - _flat_all(fresh, fresh.state_dict())) for f in flat]
    spread = max(np.linalg.norm(a - b) for a in flat for b in flat)
    assert min(to_fresh) > spread  # the case the warning is for
    with pytest.warns(UserWarning, match=r"final, the centre of the plane, is farther from every checkpoint \(the "
                                         r"nearest, checkpoint \d+, at .*\) than the checkpoints are from each other"):
        lnb.pca_directions(states, final=fresh, ignore=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lnb.pca_directions(states, final=model, ignore=None)
    rebuilt = make_mlp(1)  # the untrained model rebuilt with the training seed: the first checkpoint (re-trial s41)
    rebuilt.load_state_dict(states[0])
    with pytest.warns(UserWarning, match=r"final, the centre of the plane, holds the weights of the first checkpoint "
                                         r"\(checkpoint 0\), where the path starts"):
        lnb.pca_directions(states, final=rebuilt, ignore=None)


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.o = nn.Linear(4, 5), nn.Linear(3, 5), nn.Linear(5, 3)

    def forward(self, num, aux):
        return self.o(torch.tanh(self.a(num) + self.b(aux)))


class _DictSet(torch.utils.data.Dataset):
    def __init__(self, x, y, key):
        self.x, self.y, self.key = x, y, key

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"num": self.x[i, :4], "aux": self.x[i, 4:], self.key: self.y[i]}


def test_dict_batches_with_their_targets_under_another_key_take_target_key_in_every_analysis_of_data():
    """Trial s56: auto_range, pca_directions(data=) and project_trajectory(data=) refused dict batches whose
    targets were not under "labels" with "name the targets with target_key=", and took no target_key. Naive:
    each checkpoint's loss by hand; auto_range's crossings as on the same batches with "labels"."""
    torch.manual_seed(0)
    model = _TwoInputs()
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(48, 7, generator=g), torch.randint(0, 3, (48,), generator=g)
    batches = torch.utils.data.DataLoader(_DictSet(x, y, "y"), batch_size=16)
    as_labels = torch.utils.data.DataLoader(_DictSet(x, y, "labels"), batch_size=16)
    states = []
    for k in range(4):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.2 * k * torch.randn(p.shape, generator=g))
        states.append(copy.deepcopy(m.state_dict()))
    states.append(copy.deepcopy(model.state_dict()))

    def naive(state) -> float:
        m = copy.deepcopy(model)
        m.load_state_dict(state)
        with torch.no_grad():
            return float(nn.functional.cross_entropy(m(x[:, :4], x[:, 4:]), y))

    with pytest.raises(LandscapeError, match="target_key="):
        lnb.pca_directions(states, final=model, data=batches)
    d = lnb.pca_directions(states, final=model, data=batches, target_key="y")
    np.testing.assert_allclose(d.provenance["path_loss"], [naive(s) for s in states], rtol=1e-5)
    path = project_trajectory(states, d, final=model, data=batches, target_key="y")
    np.testing.assert_allclose(path.loss, [naive(s) for s in states], rtol=1e-5)
    r = lnb.random_directions(model, seed=0)
    got, want = lnb.auto_range(model, batches, r, target_key="y"), lnb.auto_range(model, as_labels, r)
    assert got.ranges == want.ranges
    model.load_state_dict(states[0])
    rec = lnb.TrajectoryRecorder(model)  # records step 0
    for s in states[1:]:
        model.load_state_dict(s)
        rec.step()
    d5 = rec.pca_directions(data=batches, target_key="y")
    np.testing.assert_allclose(rec.project(d5, data=batches, target_key="y").loss,
                               [naive(s) for s in states], rtol=1e-5)


def test_checkpoint_files_in_a_globs_text_order_are_taken_in_the_order_of_their_numbers(mlp_data, tmp_path):
    """``sorted(glob("epoch*.pt"))`` (and a shell's glob) gives epoch0, epoch1, epoch10, epoch11, epoch2, ...: taken
    as training order, the PCA path crossed itself and ended away from the centre, with no word (trial s59). They
    are taken in the order of their numbers, with a warning; the path's coordinates are each checkpoint's own
    (naive: least squares of its offset onto the directions), its labels in that order; a project_trajectory's
    own labels follow their files. State dicts keep the order given."""
    import glob

    with single_thread():
        model, states = _train_trajectory(make_mlp(0), mlp_data, n_ckpt=12)
    for i, sd in enumerate(states):
        torch.save(sd, tmp_path / f"epoch{i}.pt")
    text_order = sorted(glob.glob(str(tmp_path / "epoch*.pt")))
    assert [p.rsplit("/", 1)[1] for p in text_order[:4]] == ["epoch0.pt", "epoch1.pt", "epoch10.pt", "epoch11.pt"]
    with pytest.warns(UserWarning, match=r"pca_directions: the checkpoint files were given in the order epoch0.pt, "
                                         r"epoch1.pt, epoch10.pt, epoch11.pt, epoch2.pt, epoch3.pt, \.\.\., the order "
                                         r"text sorts them in \(a shell's glob, sorted\(\)\), not that of the number "
                                         r"in their names; they are taken as epoch0.pt, epoch1.pt, epoch2.pt, "
                                         r"epoch3.pt, epoch4.pt, epoch5.pt, \.\.\., the training order"):
        d = lnb.pca_directions(text_order, final=model)
    assert d.provenance["path_labels"] == [f"epoch{i}" for i in range(11)] + ["final (epoch11)"]
    dmat, w = d.vectors.double().numpy(), _flat_all(model, model.state_dict())
    for i, sd in enumerate(states):  # in training order
        c, *_ = np.linalg.lstsq(dmat.T, _flat_all(model, sd) - w, rcond=None)
        assert (d.provenance["path_x"][i], d.provenance["path_y"][i]) == pytest.approx(tuple(c), rel=1e-6, abs=1e-9)
    with pytest.warns(UserWarning, match=r"project_trajectory: the checkpoint files were given in the order"):
        path = project_trajectory(text_order, d, final=model, labels=[p.rsplit("/", 1)[1] for p in text_order])
    assert path.labels == [f"epoch{i}.pt" for i in range(12)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in order already, or state dicts: as given, with no word
        in_order = lnb.pca_directions([str(tmp_path / f"epoch{i}.pt") for i in range(12)], final=model)
        assert torch.equal(in_order.vectors, d.vectors)
        lnb.pca_directions(states, final=model)
    # an order of one's own that is not the numbers' (reversed here): said, and taken as given (review s59: it was
    # reordered too, blamed on a glob)
    mine = [str(tmp_path / f"epoch{i}.pt") for i in (0, 1, 2, 3, 5, 4, 6, 7, 8, 9, 10, 11)]
    with pytest.warns(UserWarning, match=r"are given in the order epoch0.pt, epoch1.pt, epoch2.pt, epoch3.pt, "
                                         r"epoch5.pt, epoch4.pt, \.\.\., not in the order of the number in their "
                                         r"names; they are taken as given"):
        kept = lnb.pca_directions(mine, final=model)
    assert kept.provenance["path_labels"][4:6] == ["epoch5", "epoch4"]
    # beside a file without the number (init.pt), where it goes is not known: said, not changed (re-trial s59: no
    # word); numbers in the folders' names are shown with them (it said "model.pt, model.pt, ...")
    torch.save(states[0], tmp_path / "init.pt")
    beside = sorted([f for f in text_order if not f.endswith("epoch0.pt")] + [str(tmp_path / "init.pt")])
    with pytest.warns(UserWarning, match=r"the checkpoint files epoch1.pt, epoch10.pt, epoch11.pt, epoch2.pt, .* are "
                                         r"given in the order text sorts them .*, beside init.pt, which has none; "
                                         r"they are taken as given"):
        lnb.pca_directions(beside, final=model)
    for i in (0, 1, 2, 10):
        (tmp_path / f"step{i}").mkdir()
        torch.save(states[i], tmp_path / f"step{i}" / "model.pt")
    with pytest.warns(UserWarning, match=r"given in the order step0/model.pt, step1/model.pt, step10/model.pt, "):
        lnb.pca_directions(sorted(glob.glob(str(tmp_path / "step*" / "model.pt"))), final=model)
    from landscape_nb.trajectory import in_training_order

    mixed = ["init.pt", *text_order[:5]]  # a relative path beside absolute ones: os.path.commonpath raises on them
    with pytest.warns(UserWarning, match=r"beside init.pt, which has none"):
        assert in_training_order(mixed, "x") == (mixed, None)
