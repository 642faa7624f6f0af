"""Interop with the reference implementation's .h5 files (tomgoldstein/loss-landscape).

The reference's files are written here by hand with plain h5py, following its layout
(groups of datasets "0", "1", ... per direction; surface arrays of shape (nx, ny) filled in
meshgrid order, -1 where not computed, accuracy in percent), and its way of moving a model
(``set_weights``: w + a·dx + b·dy per tensor of ``parameters()``; ``set_states``: the same
over ``state_dict()`` then ``load_state_dict``) is the naive reference for the values.
"""
import copy
import dataclasses
import warnings

import numpy as np
import pytest
import torch
from torch import nn

h5py = pytest.importorskip("h5py")

import landscape_nb as lnb
from landscape_nb.errors import LandscapeError
from landscape_nb.surface import Surface
from tests.conftest import make_mlp


def write_reference_directions(path, tensors_per_axis):
    """What the reference's h5_util.write_list does: one group per axis, one dataset per tensor."""
    with h5py.File(path, "w") as f:
        for axis, tensors in zip(("xdirection", "ydirection"), tensors_per_axis):
            grp = f.create_group(axis)
            for i, t in enumerate(tensors):
                grp.create_dataset(str(i), data=np.asarray(t))


def seeded_like(shapes, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) * 0.3 for s in shapes]


def evaluate(model, data):
    x, y = data
    with torch.no_grad():
        out = model.eval()(x)
        return float(nn.functional.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())


def check_against(surf, naive):
    xs = np.asarray(surf.x)
    ys = np.asarray(surf.y)
    for j, b in enumerate(ys):
        for i, a in enumerate(xs):
            loss, acc = naive(float(a), float(b))
            np.testing.assert_allclose(surf.loss[j, i], loss, rtol=1e-5)
            np.testing.assert_allclose(surf.metrics["accuracy"][j, i], acc, atol=1e-6)


# ------------------------------------------------------------------ directions ----

def test_weights_file_moves_the_model_like_the_reference_set_weights(tmp_path, cnn, cnn_data, one_thread):
    shapes = [tuple(p.shape) for p in cnn.parameters()]
    dx, dy = seeded_like(shapes, 1), seeded_like(shapes, 2)
    write_reference_directions(tmp_path / "dir.h5", [dx, dy])

    d = lnb.load_reference_directions(cnn, tmp_path / "dir.h5")
    assert d.provenance["dir_type"] == "weights" and d.n == 2

    def naive(a, b):  # set_weights: p = w + a*dx + b*dy, tensor by tensor of net.parameters()
        m = copy.deepcopy(cnn)
        with torch.no_grad():
            for p, ex, ey in zip(m.parameters(), dx, dy):
                p.copy_(p + a * torch.from_numpy(ex) + b * torch.from_numpy(ey))
        return evaluate(m, cnn_data)

    surf = lnb.compute_surface(cnn, cnn_data, d, x=(-1, 1, 3), y=(-0.5, 0.5, 2))
    check_against(surf, naive)


def test_states_file_moves_batchnorm_statistics_like_the_reference_set_states(tmp_path, cnn, cnn_data, one_thread):
    states = cnn.state_dict()
    shapes = [tuple(v.shape) for v in states.values()]
    dx, dy = seeded_like(shapes, 3), seeded_like(shapes, 4)
    keys = list(states)
    for d in (dx, dy):  # running_var must stay positive over the grid
        d[keys.index("bn.running_var")] = np.abs(d[keys.index("bn.running_var")]) * 0.5
        d[keys.index("bn.num_batches_tracked")] = np.float32(7.0)  # int buffer: no effect in eval mode
    write_reference_directions(tmp_path / "dir.h5", [dx, dy])

    d = lnb.load_reference_directions(cnn, tmp_path / "dir.h5")
    assert d.provenance["dir_type"] == "states"
    assert d.provenance["dropped"] == ["bn.num_batches_tracked"]
    assert d.layout.include_buffers

    def naive(a, b):  # set_states: state + a*dx + b*dy per state_dict entry, then load_state_dict
        m = copy.deepcopy(cnn)
        new = {k: v.clone() for k, v in states.items()}
        for (k, v), ex, ey in zip(new.items(), dx, dy):
            if v.is_floating_point():
                v.add_(a * torch.from_numpy(np.asarray(ex)) + b * torch.from_numpy(np.asarray(ey)))
        m.load_state_dict(new)
        return evaluate(m, cnn_data)

    surf = lnb.compute_surface(cnn, cnn_data, d, x=(0, 1, 2), y=(0, 1, 3))
    check_against(surf, naive)


def test_a_states_file_of_pytorch_0_4_0_without_num_batches_tracked_is_read(tmp_path, cnn, cnn_data, one_thread):
    """The reference's README names PyTorch 0.4, whose state_dict had no BatchNorm num_batches_tracked (0.4.1 added
    it): such a states file was refused as another model's (trial s59). Read without them, it moves the model as
    set_states did then (naive: each float state_dict entry plus a·dx + b·dy)."""
    states = {k: v for k, v in cnn.state_dict().items() if not k.endswith("num_batches_tracked")}
    shapes = [tuple(v.shape) for v in states.values()]
    dx, dy = seeded_like(shapes, 5), seeded_like(shapes, 6)
    keys = list(states)
    for d in (dx, dy):
        d[keys.index("bn.running_var")] = np.abs(d[keys.index("bn.running_var")]) * 0.5
    write_reference_directions(tmp_path / "old.h5", [dx, dy])
    d = lnb.load_reference_directions(cnn, tmp_path / "old.h5")
    assert d.provenance["dir_type"] == "states" and d.provenance["without_num_batches_tracked"]
    assert d.provenance["dropped"] == ["bn.num_batches_tracked"]

    def naive(a, b):
        m = copy.deepcopy(cnn)
        new = {k: v.clone() for k, v in cnn.state_dict().items()}
        for k, ex, ey in zip(keys, dx, dy):
            new[k].add_(a * torch.from_numpy(np.asarray(ex)) + b * torch.from_numpy(np.asarray(ey)))
        m.load_state_dict(new)
        return evaluate(m, cnn_data)

    check_against(lnb.compute_surface(cnn, cnn_data, d, x=(0, 1, 2), y=(0, 1, 3)), naive)
    with pytest.raises(LandscapeError, match=r"as 'weights'"):  # one entry too few beyond them: still refused
        write_reference_directions(tmp_path / "short.h5", [dx[:-1], dy[:-1]])
        lnb.load_reference_directions(cnn, tmp_path / "short.h5")


def test_states_file_with_the_weights_as_direction_gives_nan_where_the_reference_does(tmp_path, cnn, cnn_data,
                                                                                       one_thread):
    """The reference with an empty --xignore uses a 1-D tensor itself as its direction, running_var too: beyond
    x = -1 the variance is negative and the reference's loss NaN. Clamped at 0 (as before) the points came out
    finite (1e7), a made-up value with n_diverged = 0; now NaN there as in a naive set_states, and explained."""
    states = cnn.state_dict()
    keys = list(states)
    dx = [v.numpy().astype(np.float32) if v.ndim == 1 and v.is_floating_point() else 0.3 * r
          for v, r in zip(states.values(), seeded_like([tuple(v.shape) for v in states.values()], 8))]
    dx[keys.index("bn.num_batches_tracked")] = np.float32(0.0)
    write_reference_directions(tmp_path / "dir.h5", [dx])
    d = lnb.load_reference_directions(cnn, tmp_path / "dir.h5")

    def naive(a, b):
        m = copy.deepcopy(cnn)
        m.load_state_dict({k: v + a * torch.from_numpy(np.asarray(e)) if v.is_floating_point() else v
                           for (k, v), e in zip(states.items(), dx)})
        return evaluate(m, cnn_data)

    surf = lnb.compute_surface(cnn, cnn_data, d, x=(-2, 0, 5))
    for i, a in enumerate(surf.x):
        np.testing.assert_allclose(surf.loss[i], naive(float(a), 0.0)[0], rtol=1e-5)
    assert np.isnan(surf.loss[:2]).all() and np.isfinite(surf.loss[2:]).all()  # x = -2, -1.5 | -1, -0.5, 0
    # no accuracy where the outputs are NaN (argmax picked class 0: a plausible 0.1 over the loss's gap)
    assert np.isnan(surf.metrics["accuracy"][:2]).all() and np.isfinite(surf.metrics["accuracy"][2:]).all()
    assert surf.n_diverged == 2 and "as in the reference" in surf.divergence_note


@pytest.mark.parametrize("n", [1, 2])
def test_random_directions_round_trip_through_a_weights_file(tmp_path, cnn, n):
    d = lnb.random_directions(cnn, n=n, seed=5)
    path = lnb.save_reference_directions(cnn, d, tmp_path / "d.h5")
    with h5py.File(path) as f:  # the reference's own layout
        assert sorted(f) == ["xdirection", "ydirection"][:n]
        assert [f["xdirection"][str(i)].shape for i in range(len(f["xdirection"]))] == [
            tuple(p.shape) for p in cnn.parameters()]
    back = lnb.load_reference_directions(cnn, path)
    assert back.layout == d.layout
    assert torch.equal(back.vectors, d.vectors)
    assert (back.scheme, back.provenance["seed"], back.provenance["norm"]) == ("random", 5, "filter")
    with h5py.File(path, "r+") as f:  # values edited by hand: the stored description no longer holds
        f["xdirection"]["0"][...] = np.ones(f["xdirection"]["0"].shape, np.float32)
    edited = lnb.load_reference_directions(cnn, path)
    assert edited.scheme == "reference" and "seed" not in edited.provenance and "norm" not in edited.provenance


def test_interpolation_with_buffers_round_trips_through_a_states_file(tmp_path, cnn):
    other = copy.deepcopy(cnn)
    with torch.no_grad():
        for t in (*other.parameters(), other.bn.running_mean, other.bn.running_var):
            t.mul_(1.5)
    d = lnb.interpolation_direction(cnn, other, include_buffers=True)
    path = lnb.save_reference_directions(cnn, d, tmp_path / "d.h5")
    with h5py.File(path) as f:
        grp = f["xdirection"]
        assert len(grp) == len(cnn.state_dict())
        rm = list(cnn.state_dict()).index("bn.running_mean")
        np.testing.assert_array_equal(grp[str(rm)][()], (other.bn.running_mean - cnn.bn.running_mean).numpy())
    back = lnb.load_reference_directions(cnn, path)
    assert back.layout == d.layout
    assert torch.equal(back.vectors, d.vectors)
    assert back.provenance["clamp_running_var"] is True  # still a path: clamped beyond its ends, not NaN


def test_weights_file_refuses_directions_that_move_buffers(tmp_path, cnn):
    other = copy.deepcopy(cnn)
    with torch.no_grad():
        other.bn.running_mean.add_(1.0)
    d = lnb.interpolation_direction(cnn, other, include_buffers=True)
    with pytest.raises(LandscapeError, match="dir_type='states'"):
        lnb.save_reference_directions(cnn, d, tmp_path / "d.h5", dir_type="weights")


def test_frozen_parameters_are_zeros_in_the_file_and_refused_when_moved(tmp_path):
    model = make_mlp(seed=3)
    model[0].weight.requires_grad_(False)
    d = lnb.random_directions(model, n=2, seed=1)
    path = lnb.save_reference_directions(model, d, tmp_path / "d.h5")
    with h5py.File(path) as f:
        assert len(f["xdirection"]) == len(list(model.parameters()))
        assert not np.any(f["xdirection"]["0"][()])
    back = lnb.load_reference_directions(model, path)
    assert torch.equal(back.vectors, d.vectors) and back.provenance["dropped"] == ["0.weight"]

    shapes = [tuple(p.shape) for p in model.parameters()]
    write_reference_directions(tmp_path / "moved.h5", [seeded_like(shapes, 0)])
    with pytest.raises(LandscapeError, match=r"frozen.*'0\.weight'|'0\.weight'.*frozen"):
        lnb.load_reference_directions(model, tmp_path / "moved.h5")


def test_directions_of_another_architecture_are_refused_naming_both_shapes(tmp_path):
    small = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    write_reference_directions(tmp_path / "d.h5", [seeded_like([tuple(p.shape) for p in small.parameters()], 0)])
    with pytest.raises(LandscapeError) as err:
        lnb.load_reference_directions(make_mlp(), tmp_path / "d.h5", dir_type="weights")
    msg = str(err.value)
    assert "(8, 6)" in msg and "(16, 6)" in msg and "made for" in msg


def test_misfitting_files_are_refused_saying_what_would_fit(tmp_path, cnn):
    """Trial s38: a stray dataset among '0'..'n' was refused listing '0'..'4'; a states file read with
    dir_type='weights' said only the tensor counts; a file with train_acc and no loss "holds neither"."""
    d = lnb.interpolation_direction(cnn, copy.deepcopy(cnn).train(), include_buffers=True)
    with torch.no_grad():
        d.vectors.add_(0.01)
    path = lnb.save_reference_directions(cnn, d, tmp_path / "d.h5")  # states: buffers move
    with pytest.raises(LandscapeError, match=r"do not fit .*The file fits as 'states': drop dir_type \(--dir-type\), "
                                             r"which the file decides, or pass 'states'"):
        lnb.load_reference_directions(cnn, path, dir_type="weights")
    assert torch.equal(lnb.load_reference_directions(cnn, path).vectors, d.vectors)
    with h5py.File(path, "r+") as f:
        f["xdirection"]["meta"] = np.zeros(1)
    with pytest.raises(LandscapeError, match=r"'xdirection' holds \d+ datasets, of which \['meta'\] are not named "
                                             r"'0'\.\.'\d+'; .* remove the others from the group"):
        lnb.load_reference_directions(cnn, path)
    same = seeded_like([tuple(p.shape) for p in cnn.parameters()], 0)
    write_reference_directions(tmp_path / "same.h5", [same, same])  # plot_surface.py --same_dir
    with pytest.warns(UserWarning, match=r"holds the same ydirection as xdirection \(plot_surface.py --same_dir\), "
                                         r"so they span a line, not a plane"):
        line = lnb.load_reference_directions(cnn, tmp_path / "same.h5")
    assert line.select([0]).n == 1
    with h5py.File(tmp_path / "acc.h5", "w") as f:
        f["xcoordinates"], f["train_acc"] = np.linspace(-1, 1, 3), np.full(3, 50.0)
    with pytest.raises(LandscapeError, match=r"it holds \['train_acc'\] but no loss, which the surface is of"):
        lnb.load_reference_surface(tmp_path / "acc.h5")


def test_a_surface_file_is_refused_as_directions(tmp_path, cnn):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["xcoordinates"] = np.linspace(-1, 1, 3)
    with pytest.raises(LandscapeError, match="no 'xdirection'"):
        lnb.load_reference_directions(cnn, tmp_path / "s.h5")


# -------------------------------------------------------------------- surfaces ----

def write_reference_surface(path, x, y, loss_at, acc_at, missing=()):
    """What plot_surface.py's crunch leaves: arrays of shape (nx, ny) filled at
    ``vals.ravel()[ind]`` with ``ind`` enumerating ``np.meshgrid(x, y)``; -1 where not done."""
    losses = -np.ones((len(x), len(y)))
    accs = -np.ones((len(x), len(y)))
    xm, ym = np.meshgrid(x, y)
    for ind, (a, b) in enumerate(zip(xm.ravel(), ym.ravel())):
        if ind in missing:
            continue
        losses.ravel()[ind] = loss_at(a, b)
        accs.ravel()[ind] = acc_at(a, b)
    with h5py.File(path, "w") as f:
        f["dir_file"] = "model_300.t7_weights_xignore=biasbn_xnorm=filter.h5"
        f["xcoordinates"] = x
        f["ycoordinates"] = y
        f["train_loss"] = losses
        f["train_acc"] = accs


@pytest.mark.parametrize("nx,ny", [(4, 4), (5, 3), (3, 6)])
def test_reference_surface_file_reads_in_meshgrid_order(tmp_path, nx, ny):
    x, y = np.linspace(-1, 1, nx), np.linspace(-0.5, 2.0, ny)

    def loss_at(a, b):
        return 4.0 + 3 * a + 0.5 * b * b

    def acc_at(a, b):
        return 50.0 + 10 * a - 7 * b  # percent

    write_reference_surface(tmp_path / "s.h5", x, y, loss_at, acc_at, missing={1})
    surf = lnb.load_reference_surface(tmp_path / "s.h5")
    assert surf.shape == (ny, nx)
    np.testing.assert_array_equal(surf.x, x)
    np.testing.assert_array_equal(surf.y, y)
    for j in range(ny):
        for i in range(nx):
            if j * nx + i == 1:
                assert not surf.done[j, i] and np.isnan(surf.loss[j, i])
                continue
            assert surf.done[j, i]
            assert surf.loss[j, i] == pytest.approx(loss_at(x[i], y[j]), rel=1e-15)
            assert surf.metrics["accuracy"][j, i] == pytest.approx(acc_at(x[i], y[j]) / 100, rel=1e-12)
    assert surf.provenance["dir_file"].startswith("model_300.t7")


def make_surface(nx, ny, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, nx)
    y = None if ny is None else np.linspace(-0.5, 1.5, ny)
    shape = (nx,) if ny is None else (ny, nx)
    done = rng.random(shape) > 0.2
    loss = rng.random(shape) * 3
    loss.flat[np.flatnonzero(done)[0]] = np.nan  # a diverged point is computed, yet NaN
    acc = rng.integers(0, 40, shape) / 40
    lmax, lmin = 1 + np.abs(rng.standard_normal(shape)), -np.abs(rng.standard_normal(shape))
    metrics = {"accuracy": acc, "test_loss": rng.random(shape), "test_accuracy": rng.integers(0, 8, shape) / 8,
               "lambda_max": lmax, "lambda_min": lmin, "eig_ratio": np.abs(lmin / lmax),
               "sharpness": rng.standard_normal(shape)}
    metrics = {k: np.where(done & ~np.isnan(loss), v, np.nan) for k, v in metrics.items()}  # as compute_surface
    return Surface(x=x, y=y, loss=np.where(done, loss, np.nan), metrics=metrics, done=done,
                   spec={"grid": {"x": [-1, 1, nx]}, "seed": seed}, provenance={"label": "synthetic"})


@pytest.mark.parametrize("nx,ny", [(6, 6), (7, 4), (3, 8), (9, None)])
def test_surfaces_round_trip_through_the_reference_layout(tmp_path, nx, ny):
    surf = make_surface(nx, ny, seed=nx)
    back = lnb.load_reference_surface(lnb.save_reference_surface(surf, tmp_path / "s.h5"))
    np.testing.assert_array_equal(back.x, surf.x)
    assert (back.y is None) == (surf.y is None)
    if surf.y is not None:
        np.testing.assert_array_equal(back.y, surf.y)
    np.testing.assert_array_equal(back.done, surf.done)
    np.testing.assert_array_equal(back.loss, surf.loss)
    assert set(back.metrics) == set(surf.metrics)
    for name in ("test_loss", "lambda_max", "lambda_min", "eig_ratio", "sharpness"):
        np.testing.assert_array_equal(back.metrics[name], surf.metrics[name])
    for name in ("accuracy", "test_accuracy"):  # stored in percent: *100 then /100
        np.testing.assert_allclose(back.metrics[name], surf.metrics[name], rtol=1e-15, atol=0)
    assert back.spec == surf.spec
    assert back.provenance["label"] == "synthetic"


@pytest.mark.parametrize("nx,ny", [(5, 5), (6, 3)])
def test_written_surface_reads_with_plain_h5py_in_the_reference_orientation(tmp_path, nx, ny):
    surf = make_surface(nx, ny, seed=11)
    path = lnb.save_reference_surface(surf, tmp_path / "s.h5", dir_file="dirs.h5")
    with h5py.File(path) as f:
        x, y = f["xcoordinates"][:], f["ycoordinates"][:]
        z, acc = f["train_loss"][:], f["train_acc"][:]
        assert f["dir_file"][()].decode() == "dirs.h5"
        assert z.shape == (nx, ny) and acc.shape == (nx, ny) and f["test_acc"].shape == (nx, ny)
        xm, ym = np.meshgrid(x, y)  # how plot_2D.py / h52vtp.py pair the values with points
    for ind, (a, b) in enumerate(zip(xm.ravel(), ym.ravel())):
        i, j = int(np.argmin(np.abs(surf.x - a))), int(np.argmin(np.abs(surf.y - b)))
        if surf.done[j, i]:
            np.testing.assert_array_equal(z.ravel()[ind], surf.loss[j, i])
            np.testing.assert_allclose(acc.ravel()[ind], 100 * surf.metrics["accuracy"][j, i], rtol=1e-15)
        else:  # the reference's "not computed yet": plot_surface.py would fill it in on resume
            assert z.ravel()[ind] == -1 and acc.ravel()[ind] == -1
    if nx == ny:  # plot_2D.py's contour(X, Y, Z) pairs Z[j, i] with (X[j, i], Y[j, i])
        np.testing.assert_array_equal(np.where(surf.done, z, -1), np.where(surf.done, surf.loss, -1))


def test_computed_surface_round_trips_with_its_spec(tmp_path, mlp, mlp_data, one_thread):
    d = lnb.random_directions(mlp, n=2, seed=0)
    surf = lnb.compute_surface(mlp, mlp_data, d, x=(-1, 1, 4), y=(-1, 1, 3))
    back = lnb.load_reference_surface(lnb.save_reference_surface(surf, tmp_path / "s.h5", split="test"),
                                      split="test")
    np.testing.assert_array_equal(back.loss, surf.loss)
    np.testing.assert_allclose(back.metrics["accuracy"], surf.metrics["accuracy"], rtol=1e-15)
    assert back.spec == surf.spec


@pytest.mark.parametrize("order", [("train", "test"), ("test", "train")])
def test_a_surface_over_named_splits_writes_each_split_under_its_own_name(tmp_path, mlp, mlp_data, order, one_thread):
    """data={"train": ..., "test": ...} gives train_loss/test_loss metrics beside the loss: writing them was
    refused ("rename the metric", names the package made), whatever ``split``. Each split now goes under its
    own name, checked against a naive loop on that split."""
    from tests.conftest import naive_loss

    x, y = mlp_data
    parts = {"train": (x[:60], y[:60]), "test": (x[60:], y[60:])}
    d = lnb.random_directions(mlp, n=2, seed=0)
    surf = lnb.compute_surface(mlp, {k: parts[k] for k in order}, d, x=(-1, 1, 3), y=(-1, 0.5, 2))
    dirs = d.as_state_dicts()
    for split in ("train", "test"):
        path = lnb.save_reference_surface(surf, tmp_path / f"{split}.h5", split=split)
        with h5py.File(path) as f:
            assert sorted(f) == ["test_acc", "test_loss", "train_acc", "train_loss", "xcoordinates", "ycoordinates"]
            xm, ym = np.meshgrid(f["xcoordinates"][:], f["ycoordinates"][:])  # how the reference pairs them
            for name, (xs, ys) in parts.items():
                for ind, (a, b) in enumerate(zip(xm.ravel(), ym.ravel())):
                    loss, acc = naive_loss(mlp, (xs, ys), dirs, (a, b), metric=True)
                    assert f[f"{name}_loss"][:].ravel()[ind] == pytest.approx(loss, rel=1e-5)
                    assert f[f"{name}_acc"][:].ravel()[ind] == pytest.approx(100 * acc, rel=1e-5)
        back = lnb.load_reference_surface(path, split="test")
        np.testing.assert_array_equal(back.loss, surf.metrics["test_loss"])
    # splits of other names: each under its own, and a split the surface lacks is refused (the validation
    # loss was written as train_loss)
    other = lnb.compute_surface(mlp, {"val": parts["train"], "test": parts["test"]}, d, x=(-1, 1, 3), y=(-1, 0.5, 2))
    with pytest.raises(LandscapeError, match=r"split='train', but the surface is over the named splits \['val', "
                                             r"'test'\], so the file would hold no train_loss"):
        lnb.save_reference_surface(other, tmp_path / "o.h5")
    with h5py.File(lnb.save_reference_surface(other, tmp_path / "o.h5", split="test")) as f:
        assert sorted(f) == ["test_acc", "test_loss", "val_acc", "val_loss", "xcoordinates", "ycoordinates"]
        np.testing.assert_array_equal(f["val_loss"][:].ravel(), surf.metrics["train_loss"].ravel())
    back = lnb.load_reference_surface(tmp_path / "o.h5", split="test")  # val_acc came back in percent (trial s38)
    np.testing.assert_allclose(back.metrics["val_accuracy"], surf.metrics["train_accuracy"], rtol=1e-12)
    np.testing.assert_array_equal(back.metrics["val_loss"], surf.metrics["train_loss"])
    assert "val_acc" not in back.metrics


def test_surface_with_mismatched_shape_is_refused_naming_both_shapes(tmp_path):
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["xcoordinates"] = np.linspace(-1, 1, 5)
        f["ycoordinates"] = np.linspace(-1, 1, 4)
        f["train_loss"] = np.ones((5, 3))
    with pytest.raises(LandscapeError) as err:
        lnb.load_reference_surface(tmp_path / "bad.h5")
    msg = str(err.value)
    assert "(5, 3)" in msg and "(5, 4)" in msg and "fix" in msg


def test_surface_writer_refuses_negative_losses_and_colliding_names(tmp_path):
    surf = make_surface(4, 3)
    neg = Surface(x=surf.x, y=surf.y, loss=surf.loss - 10, metrics={}, done=surf.done)
    with pytest.raises(LandscapeError, match="below 0"):
        lnb.save_reference_surface(neg, tmp_path / "s.h5")
    clash = Surface(x=surf.x, y=surf.y, loss=surf.loss, metrics={"train_acc": surf.loss}, done=surf.done)
    with pytest.raises(LandscapeError, match="'train_acc'"):
        lnb.save_reference_surface(clash, tmp_path / "s.h5")
    with pytest.raises(LandscapeError, match="'test_loss'"):  # the test split's loss is taken
        lnb.save_reference_surface(surf, tmp_path / "s.h5", split="test")
    volume = Surface(x=surf.x, y=surf.y, z=np.arange(2.0), loss=np.ones((2, 3, 4)), metrics={},
                     done=np.ones((2, 3, 4), bool))
    with pytest.raises(LandscapeError, match=r"a 3D volume of shape \(2, 3, 4\) was given; the reference's surface "
                                             r"files hold a line or a plane: save a plane of it \(surface\.slice"):
        lnb.save_reference_surface(volume, tmp_path / "v.h5")
    plain = Surface(x=surf.x, y=surf.y, loss=surf.loss, metrics={}, done=surf.done)
    with pytest.raises(LandscapeError, match="split='test', the one it has"):
        lnb.load_reference_surface(lnb.save_reference_surface(plain, tmp_path / "t.h5", split="test"),
                                   split="train")
    # a folder that takes no new file: said as a write, not as a file of another format (trial s37)
    with pytest.raises(LandscapeError, match=r"^cannot write '/proc/t.h5' \(.*\); expected a path where a new file "
                                             r"can be written"):
        lnb.save_reference_surface(plain, "/proc/t.h5")


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Linear(4, 4)
        self.dec = nn.Linear(4, 4)
        self.dec.weight = self.enc.weight  # one tensor under two state_dict names


def test_tied_weights_in_a_states_file_add_up_as_in_the_reference_set_states(tmp_path):
    """The reference's set_states adds each state_dict entry in place to copy.deepcopy(net.state_dict()), which
    keeps a tied tensor's names one tensor: both entries move it (the last one alone was used, 14 % off the
    reference's surface in one trial). Our files give the alias zeros, so both readers see the direction."""
    model = Tied()
    keys = list(model.state_dict())
    assert keys == ["enc.weight", "enc.bias", "dec.weight", "dec.bias"]
    d = lnb.random_directions(model, n=1, seed=2)
    path = lnb.save_reference_directions(model, d, tmp_path / "d.h5", dir_type="states")
    with h5py.File(path) as f:  # the alias carries zeros: the shared tensor moves once
        assert not np.any(f["xdirection"]["2"][()]) and np.any(f["xdirection"]["0"][()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one entry moves the tensor: nothing to say
        ours = lnb.load_reference_directions(model, path, dir_type="states")
    assert torch.equal(ours.vectors, d.vectors) and ours.provenance["tied_summed"] == []

    arrays = seeded_like([tuple(v.shape) for v in model.state_dict().values()], 6)
    write_reference_directions(tmp_path / "ref.h5", [arrays])
    with pytest.warns(UserWarning, match=r"'enc.weight' and 'dec.weight'\. It moves by the sum") as said:
        back = lnb.load_reference_directions(model, tmp_path / "ref.h5", dir_type="states")
    assert "twice" not in str(said[0].message)  # different entries (the reference's random states directions)
    assert back.provenance["tied_summed"] == [["enc.weight", "dec.weight"]]
    m = copy.deepcopy(model)  # the reference, as written: add in place to a deep copy of the state, load it
    state = copy.deepcopy(model.state_dict())
    for (k, v), a in zip(state.items(), arrays):
        v.add_(torch.from_numpy(a))
    m.load_state_dict(state)
    moved = torch.cat([(pm - p0).detach().reshape(-1) for pm, p0 in zip(m.parameters(), model.parameters())])
    assert not torch.allclose(moved[:arrays[0].size], torch.from_numpy(arrays[0]).reshape(-1))  # both entries
    torch.testing.assert_close(back.vectors[0], moved, rtol=0, atol=1e-6)

    # trial s54: a file written by hand with the direction's values under both names moved the tensor twice,
    # silently; it still does (as the reference would), and says so
    arrays[2] = arrays[0].copy()
    write_reference_directions(tmp_path / "twice.h5", [arrays])
    with pytest.warns(UserWarning, match=r"'enc.weight' and 'dec.weight' \(the same values: twice their step\)"):
        twice = lnb.load_reference_directions(model, tmp_path / "twice.h5")
    torch.testing.assert_close(twice.vectors[0][:arrays[0].size], 2 * torch.from_numpy(arrays[0]).reshape(-1))


def test_the_cli_plots_a_reference_surface_file_with_its_values_where_they_belong(tmp_path, capsys):
    """``landscape-nb plot FILE.h5 --html``: the reference's (nx, ny) meshgrid-order arrays drawn as z[j][i] at
    (x[i], y[j]) (naive: the formula the file was written from), the chosen ``--split``, the points it
    lacks marked partial; ``--split`` for a store and a file that is neither are refused."""
    from landscape_nb.cli import main
    from tests.standalone_html import figure_json, values

    x, y = np.linspace(-1, 1, 5), np.linspace(-0.5, 2.0, 3)

    def loss_at(a, b):
        return 4.0 + 3 * a + 0.5 * b * b

    path = tmp_path / "old.h5"
    write_reference_surface(path, x, y, loss_at, lambda a, b: 50.0, missing={4})
    with h5py.File(path, "a") as f:
        f["test_loss"] = np.full((len(x), len(y)), 7.5)
    out = tmp_path / "old.html"
    assert main(["plot", str(path), "--kind", "heatmap", "--html", str(out)]) == 0
    assert "(partial: 14/15 points)" in capsys.readouterr().out
    text = out.read_text()
    (trace,) = figure_json(text)["data"]
    z = values(trace["z"]).reshape(len(y), len(x))
    naive = np.array([[loss_at(a, b) for a in x] for b in y])
    naive[0, 4] = np.nan  # flat index 4 = (x[4], y[0]): not computed in the file
    np.testing.assert_allclose(z, naive, rtol=1e-12)
    np.testing.assert_allclose(values(trace["x"]), x)
    assert "partial: 14 of 15 points" in text and "old.h5 (train_loss)" in text
    assert main(["plot", str(path), "--split", "test", "--kind", "heatmap", "--html", str(out)]) == 0
    (trace,) = figure_json(out.read_text())["data"]
    assert np.all(values(trace["z"]) == 7.5)
    capsys.readouterr()
    with h5py.File(path, "a") as f:  # a file with a test loss only: --split train is refused in the CLI's words
        del f["train_loss"]
    assert main(["plot", str(path), "--split", "train", "--html", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pass --split test, the one it has" in err and "split=" not in err
    assert main(["plot", str(tmp_path / "s.zarr"), "--split", "test", "--html", str(out)]) == 2
    assert "--split test chooses the loss of a reference .h5 surface file" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("x")
    assert main(["plot", str(tmp_path / "notes.txt"), "--html", str(out)]) == 2
    assert "is a file but not a surface file of the reference implementation (.h5)" in capsys.readouterr().err


def test_a_direction_file_with_a_third_axis_is_refused_not_cut_to_a_plane(tmp_path, cnn):
    """A 'zdirection' group was dropped without a word for a plane, and a volume was told the file held two."""
    shapes = [tuple(p.shape) for p in cnn.parameters()]
    write_reference_directions(tmp_path / "xyz.h5", [seeded_like(shapes, 1), seeded_like(shapes, 2)])
    with h5py.File(tmp_path / "xyz.h5", "a") as f:
        grp = f.create_group("zdirection")
        for i, a in enumerate(seeded_like(shapes, 3)):
            grp.create_dataset(str(i), data=a)
    with pytest.raises(LandscapeError, match=r"holds \['zdirection'\] besides \['xdirection', 'ydirection'\]"):
        lnb.load_reference_directions(cnn, tmp_path / "xyz.h5")


@pytest.mark.parametrize("batch_size", [400, 37])
def test_accuracy_is_the_exact_fraction_of_right_predictions_in_the_h5_percentages(tmp_path, batch_size):
    """Accuracy is a count over the set divided by its size: 130 of 400 was written 32.499998807907104 (its
    batches' float32 means; trial s31) and differed in its 8th digit between runners and batchings. Each value
    is now the fraction itself, so test_acc == 100·K/N exactly, K counted by a naive loop."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 5))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(400, 6, generator=g), torch.randint(0, 5, (400,), generator=g)
    d = lnb.random_directions(model, n=2, seed=0)
    surf = lnb.compute_surface(model, (x, y), d, x=(-1, 1, 5), y=(-1, 1, 3), batch_size=batch_size)
    d1, d2 = d.as_state_dicts()
    counts = np.zeros(surf.loss.shape, dtype=int)
    with torch.no_grad():
        for j, b in enumerate(surf.y):
            for i, a in enumerate(surf.x):
                m = copy.deepcopy(model)
                for name, p in m.named_parameters():
                    p.add_(float(a) * d1[name] + float(b) * d2[name])
                counts[j, i] = int((m(x).argmax(1) == y).sum())
    assert surf.metrics["accuracy"].tolist() == (counts / 400).tolist()  # float64 nearest to K/N, no other
    with h5py.File(lnb.save_reference_surface(surf, tmp_path / "s.h5", split="test"), "r") as f:
        assert np.ravel(f["test_acc"][:]).tolist() == (100 * counts / 400).ravel().tolist()


def test_accuracy_of_named_splits_is_exact_and_float_one_hot_targets_keep_their_own_count(tmp_path):
    """The exact fraction holds on a run over named splits too (its own evaluation path), and for float one-hot
    targets over what accuracy counts: a segmentation map's pixels, not its samples (it was rounded to a
    multiple of 1/4 for 4 samples: a review of the change; then left at 0.25999999: trial s32)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 5))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(300, 6, generator=g), torch.randint(0, 5, (300,), generator=g)
    d = lnb.random_directions(model, n=1, seed=0)
    surf = lnb.compute_surface(model, {"train": (x[:170], y[:170]), "test": (x[170:], y[170:])}, d, x=(-1, 1, 5),
                               batch_size=47)
    d1, = d.as_state_dicts()
    for name, (lo, hi) in (("train", (0, 170)), ("test", (170, 300))):
        counts = []
        with torch.no_grad():
            for a in surf.x:
                m = copy.deepcopy(model)
                for n, p in m.named_parameters():
                    p.add_(float(a) * d1[n])
                counts.append(int((m(x[lo:hi]).argmax(1) == y[lo:hi]).sum()))
        assert surf.metrics[f"{name}_accuracy"].tolist() == [k / (hi - lo) for k in counts], name

    seg = nn.Conv2d(2, 3, 3, padding=1)
    images = torch.randn(4, 2, 16, 16, generator=g)
    labels = torch.randint(0, 3, (4, 16, 16), generator=g)
    one_hot = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    ds = lnb.random_directions(seg, n=1, seed=0)
    pix = lnb.compute_surface(seg, (images, one_hot), ds, x=(-1, 1, 3), metrics="accuracy")
    s1, = ds.as_state_dicts()
    with torch.no_grad():
        for a, got in zip(pix.x, pix.metrics["accuracy"]):
            m = copy.deepcopy(seg)
            for n, p in m.named_parameters():
                p.add_(float(a) * s1[n])
            want = float((m(images).argmax(1) == labels).double().mean())  # K of the 1024 pixels
            assert got == want


def _reference_file(path, x, y, **arrays):
    """A surface file as the reference's scripts leave it: arrays of shape (nx, ny) in meshgrid order."""
    with h5py.File(path, "w") as f:
        f["xcoordinates"], f["ycoordinates"] = x, y
        for key, ours in arrays.items():  # ours: (ny, nx), rows = y
            f[key] = np.asarray(ours, float).reshape(-1).reshape(len(x), len(y))
    return path


def test_each_split_of_a_reference_file_keeps_its_own_not_computed_points_and_diverged_metrics(tmp_path):
    """plot_surface.py computes train and test in separate runs: one stopped during the test pass leaves
    test_loss partly -1, which read as a loss of -1 and an accuracy of -0.01 (trial s35). And where a loss is
    NaN, that split's accuracy is NaN too (it read as 0.45, the share of class 0)."""
    rng = np.random.default_rng(0)
    x, y = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
    train, train_acc = rng.random((4, 5)) + 0.1, rng.integers(0, 100, (4, 5)).astype(float)
    test, test_acc = rng.random((4, 5)) + 0.1, rng.integers(0, 100, (4, 5)).astype(float)
    train[0, 0] = np.nan  # diverged: its accuracy is of NaN logits
    missing = np.zeros((4, 5), bool)
    missing[2:] = True  # the test run stopped halfway
    path = _reference_file(tmp_path / "r.h5", x, y, train_loss=train, train_acc=train_acc,
                           test_loss=np.where(missing, -1, test), test_acc=np.where(missing, -1, test_acc))
    surf = lnb.load_reference_surface(path)
    assert surf.is_complete  # the train split is
    np.testing.assert_array_equal(surf.metrics["test_loss"], np.where(missing, np.nan, test))
    test[1, 1] = np.nan  # the test split diverged there, the train split did not (and at [0, 0] the reverse)
    path = _reference_file(tmp_path / "r.h5", x, y, train_loss=train, train_acc=train_acc,
                           test_loss=np.where(missing, -1, test), test_acc=np.where(missing, -1, test_acc))
    surf = lnb.load_reference_surface(path)
    shown = ~missing & ~np.isnan(test)  # its own loss decides: [0, 0] keeps its test accuracy
    np.testing.assert_array_equal(surf.metrics["test_accuracy"], np.where(shown, test_acc / 100, np.nan))
    np.testing.assert_array_equal(surf.metrics["accuracy"], np.where(np.isnan(train), np.nan, train_acc / 100))
    tested = lnb.load_reference_surface(path, split="test")
    np.testing.assert_array_equal(tested.done, ~missing)
    only_test = _reference_file(tmp_path / "t.h5", x, y, train_loss=np.full((4, 5), -1.0), test_loss=test)
    assert lnb.load_reference_surface(only_test).provenance["split"] == "test"  # not an empty train figure
    assert lnb.load_reference_surface(only_test, split="train").n_done == 0
    with pytest.raises(LandscapeError, match=r"10 of 20 points computed; expected a complete surface: load the file "
                                             r"again once the reference's run has filled it in"):
        lnb.topology(tested)  # not "resume it from its store", which a file has not
    assert np.nanmin(tested.metrics["accuracy"]) >= 0 and np.nanmin(surf.metrics["test_loss"]) > 0
    held = train_acc.copy()
    held[3, 2] = -1  # the loss in, its accuracy still the placeholder (trial s54: read as -0.01)
    path = _reference_file(tmp_path / "h.h5", x, y, train_loss=train, train_acc=held)
    surf = lnb.load_reference_surface(path)
    assert surf.done[3, 2] and np.isnan(surf.metrics["accuracy"][3, 2])
    np.testing.assert_array_equal(surf.metrics["accuracy"], np.where(np.isnan(train) | (held < 0), np.nan, held / 100))
    fig = lnb.plot.surface(surf)
    hover = np.asarray(fig.data[0].customdata, float)
    assert not (hover < 0).any()  # no -1 or -0.01 in the figure


def test_an_accuracy_in_fractions_in_a_reference_file_is_warned_about(tmp_path):
    """The reference writes percent: a file of fractions read as 0.0093 for 93 %, with no word (trial s35)."""
    x, y = np.linspace(-1, 1, 3), np.linspace(-1, 1, 3)
    loss = np.full((3, 3), 0.5)
    fractions = _reference_file(tmp_path / "f.h5", x, y, train_loss=loss, train_acc=np.full((3, 3), 0.93))
    with pytest.warns(UserWarning, match=r"'train_acc' in .* is at most 0\.93 at every computed point; the "
                                         r"reference writes accuracy in percent"):
        surf = lnb.load_reference_surface(fractions)
    np.testing.assert_allclose(surf.metrics["accuracy"], 0.0093)  # read as the layout says, and said
    percent = _reference_file(tmp_path / "p.h5", x, y, train_loss=loss, train_acc=np.full((3, 3), 93.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lnb.load_reference_surface(percent)
        ours = make_surface(3, 3)
        ours.metrics["accuracy"] = np.where(ours.done, 0.005, np.nan)  # 0.5 %, written by us: no word
        lnb.load_reference_surface(lnb.save_reference_surface(ours, tmp_path / "o.h5"))


def test_the_references_hessian_keys_read_as_an_eigen_map_and_its_placeholders_as_not_computed(tmp_path):
    """plot_hessian_eigen.py writes max_eig/min_eig into the surface file, -1/+1 where not reached: a
    negative λ_max was read there, and plot_2d_eig_ratio could not read ours (lambda_max; trial s35)."""
    rng = np.random.default_rng(1)
    x, y = np.linspace(-1, 1, 5), np.linspace(-1, 1, 3)
    loss = rng.random((3, 5)) + 0.1
    lmax, lmin = 1 + rng.random((3, 5)), -rng.random((3, 5))
    lmax[1, 1:3], lmin[1, 1:3] = -1.0, 1.0  # not reached yet
    lmax[2, 4], lmin[2, 4] = -0.5, -2.0  # a maximum: a real negative λ_max
    path = _reference_file(tmp_path / "e.h5", x, y, train_loss=loss, max_eig=lmax, min_eig=lmin)
    surf = lnb.load_reference_surface(path)
    reached = np.ones((3, 5), bool)
    reached[1, 1:3] = False
    np.testing.assert_array_equal(surf.metrics["lambda_max"], np.where(reached, lmax, np.nan))
    np.testing.assert_array_equal(surf.metrics["lambda_min"], np.where(reached, lmin, np.nan))
    np.testing.assert_allclose(surf.metrics["eig_ratio"], np.where(reached, np.abs(lmin / lmax), np.nan))
    fig = lnb.plot.eigen_map(surf)
    assert len(fig.data) >= 1
    only = _reference_file(tmp_path / "only.h5", x, y, max_eig=lmax, min_eig=lmin)  # before its loss was added
    with pytest.raises(LandscapeError, match=r"it holds Hessian eigenvalues only, as plot_hessian_eigen\.py writes "
                                             r"them .* run that on the same --surf_file first"):
        lnb.load_reference_surface(only)
    back = lnb.save_reference_surface(surf, tmp_path / "back.h5")
    with h5py.File(back) as f:  # as plot_2d_eig_ratio(surf_file, "min_eig", "max_eig") reads them
        assert {"max_eig", "min_eig"} <= set(f) and "lambda_max" not in f
        np.testing.assert_array_equal(f["max_eig"][()].reshape(-1), np.where(reached, lmax, np.nan).reshape(-1))


def test_a_reference_file_still_held_open_for_writing_is_read_as_it_stands(tmp_path):
    """The reference's crunch holds the file open (r+) while it runs: reading it failed on HDF5's file lock,
    and the message blamed the file (trial s35)."""
    import subprocess
    import sys

    x, y = np.linspace(-1, 1, 3), np.linspace(-1, 1, 3)
    loss = np.full((3, 3), -1.0)
    loss[0] = [0.5, 0.6, 0.7]
    path = _reference_file(tmp_path / "live.h5", x, y, train_loss=loss)
    hold = f"import h5py, time; f = h5py.File({str(path)!r}, 'r+'); print('open', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        surf = lnb.load_reference_surface(path)
        assert surf.n_done == 3 and not surf.is_complete
        np.testing.assert_array_equal(surf.loss[0], [0.5, 0.6, 0.7])
    finally:
        holder.kill()
        holder.wait()


def test_a_reference_file_the_user_holds_open_in_this_process_is_read_and_a_write_to_it_says_whose(tmp_path):
    """Looking at a file with h5py, then loading it, failed with "cannot write ...: another process holds it open"
    (HDF5 shares a handle in one process only under the same locking flag; trial s36)."""
    x, y = np.linspace(-1, 1, 3), np.linspace(-1, 1, 4)
    loss = np.arange(12.0).reshape(4, 3)
    path = _reference_file(tmp_path / "mine.h5", x, y, train_loss=loss)
    with h5py.File(path, "r") as held:
        surf = lnb.load_reference_surface(path)
        np.testing.assert_array_equal(surf.loss, loss)
        assert list(held) and surf.is_complete
        with pytest.raises(LandscapeError, match=r"cannot write .*mine\.h5.*: this Python process holds it open .*"
                                                 r"close your h5py\.File"):
            lnb.save_reference_surface(surf, path)
    np.testing.assert_array_equal(lnb.load_reference_surface(path).loss, loss)  # the refused write left it as it was


def test_a_1d_reference_file_with_both_splits_draws_both_as_plot_1d_does(tmp_path):
    """Li et al.'s Figure 1 from a reference file: line_splits drew the test curves only (the loaded split is
    the surface's own loss, not a train_loss metric; trial s35)."""
    x = np.linspace(-1, 1, 7)
    curves = {"train_loss": 1 + x ** 2, "train_acc": 90 - 10 * x ** 2, "test_loss": 1.2 + x ** 2,
              "test_acc": 85 - 10 * x ** 2}
    with h5py.File(tmp_path / "l.h5", "w") as f:
        f["xcoordinates"] = x
        for key, values in curves.items():
            f[key] = values
    fig = lnb.plot.line_splits(lnb.load_reference_surface(tmp_path / "l.h5"))
    drawn = {t.name: np.asarray(t.y, float) for t in fig.data}
    assert list(drawn) == ["train loss", "train accuracy", "test loss", "test accuracy"]
    for split in ("train", "test"):
        np.testing.assert_allclose(drawn[f"{split} loss"], curves[f"{split}_loss"])
        np.testing.assert_allclose(drawn[f"{split} accuracy"], curves[f"{split}_acc"] / 100)


def test_load_surface_given_a_reference_file_says_which_function_reads_it(tmp_path):
    """`lnb.load_surface("cli.h5")` said only that a store is a directory (trial s36); the file reads with
    load_reference_surface."""
    x = np.linspace(-1, 1, 3)
    path = _reference_file(tmp_path / "cli.h5", x, x, test_loss=np.ones((3, 3)))
    with pytest.raises(LandscapeError, match=r"is a file; .*read with lnb\.load_reference_surface\(path\)"):
        lnb.load_surface(path)
    np.testing.assert_array_equal(lnb.load_reference_surface(path).loss, np.ones((3, 3)))


def test_a_reference_file_whose_other_split_is_not_computed_yet_is_written_back_with_its_minus_ones(tmp_path):
    """Trial s56: a file with train_loss done and test_loss 10 of 25 points, the rest -1, was written back (`plot
    --h5`, save_reference_surface) with NaN there, which the reference's scheduler (`<= 0`) reads as computed: it
    would never fill them in. They are written as -1 again; every other value as in the file (naive: h5py)."""
    import h5py

    x, y = np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 4)
    xx, yy = np.meshgrid(x, y, indexing="ij")  # the reference's (nx, ny) arrays
    test_loss, test_acc = -np.ones((5, 4)), -np.ones((5, 4))
    test_loss.ravel()[:10], test_acc.ravel()[:10] = 0.5 + np.arange(10) / 10, 80.0
    test_loss.ravel()[3] = np.nan  # a diverged point of its own: NaN, computed
    src = tmp_path / "in.h5"
    with h5py.File(src, "w") as f:
        f["xcoordinates"], f["ycoordinates"] = x, y
        f["train_loss"], f["train_acc"] = xx ** 2 + yy ** 2 + 0.1, np.full((5, 4), 90.0)
        f["test_loss"], f["test_acc"] = test_loss, test_acc
    surf = lnb.load_reference_surface(src, split="train")
    assert np.isnan(surf.metrics["test_loss"]).sum() == 11  # 10 not computed and 1 diverged, read as gaps
    out = lnb.save_reference_surface(surf, tmp_path / "out.h5", split="train")
    from landscape_nb.cli import main

    assert main(["plot", str(src), "--h5", str(tmp_path / "cli.h5")]) == 0
    for path in (out, tmp_path / "cli.h5"):
        with h5py.File(path) as f:
            np.testing.assert_array_equal(f["test_loss"][()], test_loss)  # -1 where not computed, NaN where diverged
            np.testing.assert_array_equal(f["test_acc"][()], np.where(np.isnan(test_loss), np.nan, test_acc))
            np.testing.assert_allclose(f["train_loss"][()], xx ** 2 + yy ** 2 + 0.1)
            np.testing.assert_allclose(f["train_acc"][()], 90.0)
    # values filled in where the file had -1 (computed elsewhere) are written, not -1 again (review s57)
    gaps = surf.metrics["test_loss"]
    filled = dataclasses.replace(surf, metrics={**surf.metrics, "test_loss": np.where(np.isnan(gaps), 7.0, gaps)})
    lnb.save_reference_surface(filled, tmp_path / "filled.h5", split="train")
    with h5py.File(tmp_path / "filled.h5") as f:
        np.testing.assert_array_equal(f["test_loss"][()], np.where(np.isnan(test_loss) | (test_loss == -1), 7.0,
                                                                    test_loss))
    # the other way round (re-trial s56): the test split as the surface, 10 of its 20 points -1, the train split's
    # values kept where test's are not, its inf too (read 10 of them as NaN, written back as -1)
    train = xx ** 2 + yy ** 2 + 0.1
    train[4, 3] = np.inf
    with h5py.File(src, "w") as f:
        f["xcoordinates"], f["ycoordinates"] = x, y
        f["train_loss"], f["test_loss"] = train, test_loss
    surf = lnb.load_reference_surface(src, split="test")
    np.testing.assert_array_equal(surf.metrics["train_loss"], train.reshape(4, 5))  # meshgrid order: every train
    # value, inf too
    lnb.save_reference_surface(surf, tmp_path / "back.h5", split="test")
    with h5py.File(tmp_path / "back.h5") as f:
        np.testing.assert_array_equal(f["train_loss"][()], train)
        np.testing.assert_array_equal(f["test_loss"][()], test_loss)


def test_plot_of_a_reference_file_says_what_it_lacks_in_the_references_words(tmp_path, capsys):
    """Trial s56: `plot ref.h5 --split test --html` of a file whose test_loss is all -1 wrote an empty figure,
    exit 0, with no word; and an unfinished reference file was to be finished by "the compute command that wrote
    it", which the reference's plot_surface.py had written."""
    from landscape_nb.cli import main

    x, y = np.linspace(-1, 1, 4), np.linspace(-1, 1, 3)
    train = np.full((4, 3), 0.5)
    train[0, 0] = -1  # one point not computed yet
    src = tmp_path / "ref.h5"
    with h5py.File(src, "w") as f:
        f["xcoordinates"], f["ycoordinates"] = x, y
        f["train_loss"], f["test_loss"] = train, -np.ones((4, 3))
    assert main(["plot", str(src), "--split", "test", "--html", str(tmp_path / "t.html")]) == 0
    err = capsys.readouterr().err
    assert (f"landscape-nb: warning: {src} holds no computed point of its test split (its test_loss is -1 everywhere, "
            "not computed yet): pick the other with --split; the figure is empty") in err, err
    assert main(["plot", str(src), "--h5", str(tmp_path / "out.h5")]) == 2
    err = capsys.readouterr().err
    assert "holds 11 of 12 points" in err and "run the reference's plot_surface.py on it (--surf_file)" in err, err
    assert main(["plot", str(src), "--html", str(tmp_path / "p.html")]) == 0
    assert "warning" not in capsys.readouterr().err  # 11 points: drawn, partial


def test_a_file_read_as_its_test_split_is_written_back_as_test_by_default(tmp_path):
    """Review s57: a file whose test split alone is computed reads as test; save_reference_surface's default
    split='train' then refused it, telling to rename the metric 'train_loss'. The default is now the split read;
    split='train' says to pass 'test'. Naive: the arrays as written with h5py."""
    import h5py

    x, y = np.linspace(-1, 1, 3), np.linspace(-1, 1, 4)
    test_loss = np.arange(12, dtype=float).reshape(3, 4) / 10 + 0.5
    src = tmp_path / "test_only.h5"
    with h5py.File(src, "w") as f:
        f["xcoordinates"], f["ycoordinates"] = x, y
        f["train_loss"], f["train_acc"] = -np.ones((3, 4)), -np.ones((3, 4))
        f["test_loss"], f["test_acc"] = test_loss, np.full((3, 4), 80.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it says that it read the test split
        surf = lnb.load_reference_surface(src)
    assert surf.provenance["split"] == "test"
    lnb.save_reference_surface(surf, tmp_path / "back.h5")
    with h5py.File(tmp_path / "back.h5") as f:
        np.testing.assert_array_equal(f["test_loss"][()], test_loss)
        np.testing.assert_array_equal(f["train_loss"][()], -np.ones((3, 4)))
        np.testing.assert_allclose(f["test_acc"][()], 80.0)
    with pytest.raises(LandscapeError, match=r"the surface's loss is the test split's, its train split this metric: "
                                             r"pass split='test'"):
        lnb.save_reference_surface(surf, tmp_path / "train.h5", split="train")


def test_a_loss_of_exactly_0_is_written_with_a_word_on_how_the_reference_reads_it(tmp_path):
    """Trial s57: the reference's scheduler takes values <= 0 as not computed, so a computed loss of exactly 0 would
    be computed again by its plot_surface.py; written as it is, with a warning, and read back as computed."""
    import h5py

    x = np.linspace(-1, 1, 3)
    loss = np.array([0.0, 0.5, 0.0])
    with pytest.warns(UserWarning, match=r"2 computed point\(s\) have a loss of exactly 0, which the reference's "
                                         r"plot_surface.py \(its scheduler: values <= 0\) reads as not computed"):
        lnb.save_reference_surface(lnb.Surface(x, None, loss), tmp_path / "zero.h5")
    with h5py.File(tmp_path / "zero.h5") as f:
        np.testing.assert_array_equal(f["train_loss"][()], loss)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = lnb.load_reference_surface(tmp_path / "zero.h5")
    assert back.done_mask.all() and np.array_equal(back.loss, loss)


def test_a_surface_file_stopped_before_its_first_values_says_so(tmp_path):
    """The reference's plot_surface.py writes the coordinates (and dir_file) first and its loss with the first
    values: a run stopped before them left a file called "no surface file of the reference" (trial s59)."""
    with h5py.File(tmp_path / "stopped.h5", "w") as f:
        f["xcoordinates"], f["ycoordinates"] = np.linspace(-1, 1, 5), np.linspace(-1, 1, 5)
        f["dir_file"] = "dirs.h5"
    with pytest.raises(LandscapeError, match=r"it holds the coordinates alone, as the reference's plot_surface.py "
                                             r"leaves a surface file it was stopped in before writing any loss"):
        lnb.load_reference_surface(tmp_path / "stopped.h5")
