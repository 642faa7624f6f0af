"""Named data splits evaluated per point in one computation (Li et al. 2018, Figure 1): values
and the figure equal separate computations per split, and a naive loop."""
import numpy as np
import pytest
import torch

import landscape_nb as lnb
from landscape_nb import LandscapeError
from landscape_nb.params import Perturber

from conftest import TinyCNN, make_mlp, naive_loss, random_dict_dirs


def _splits(n_train=300, n_test=70, seed=3):
    g = torch.Generator().manual_seed(seed)
    train = torch.randn(n_train, 6, generator=g), torch.randint(0, 3, (n_train,), generator=g)
    test = torch.randn(n_test, 6, generator=g), torch.randint(0, 3, (n_test,), generator=g)
    return {"train": train, "test": test}


@pytest.mark.parametrize("tile", [None, 3, 50])
def test_train_and_test_in_one_computation_equal_two_computations_and_a_naive_loop(tile):
    model, data = make_mlp(), _splits()  # 300 samples: the batch size is tuned on the first points
    dirs = random_dict_dirs(model, 1)
    x = (-1, 1, 31)
    surf = lnb.compute_surface(model, data, dirs, x=x, tile=tile)
    assert list(surf.metrics) == ["train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    np.testing.assert_array_equal(surf.loss, surf.metrics["train_loss"])  # the first split is the primary
    for split, d in data.items():
        alone = lnb.compute_surface(model, d, dirs, x=x)
        np.testing.assert_allclose(surf.metrics[f"{split}_loss"], alone.loss, rtol=1e-6)
        np.testing.assert_allclose(surf.metrics[f"{split}_accuracy"], alone.metrics["accuracy"], rtol=1e-6)  # batch sizes may differ: float32 batch means
        for i in (0, 7, 30):
            loss, acc = naive_loss(model, d, dirs, [surf.x[i]], metric=True)
            np.testing.assert_allclose(surf.metrics[f"{split}_loss"][i], loss, rtol=1e-5)
            np.testing.assert_allclose(surf.metrics[f"{split}_accuracy"][i], acc, rtol=1e-6)


def test_the_figure_equals_two_separate_line_computations():
    model, data = make_mlp(), _splits()
    d = lnb.random_directions(model, n=1, seed=1)
    both = lnb.compute_surface(model, data, d, x=(-1, 1, 21))
    apart = {s: lnb.compute_surface(model, v, d, x=(-1, 1, 21)) for s, v in data.items()}
    fig, ref = lnb.plot.line_splits(both), lnb.plot.line_splits(apart)
    names = [t.name for t in fig.data]
    assert names == ["train loss", "train accuracy", "test loss", "test accuracy"] == [t.name for t in ref.data]
    for t, r in zip(fig.data, ref.data):
        np.testing.assert_allclose(np.asarray(t.y, float), np.asarray(r.y, float), rtol=1e-6)
        np.testing.assert_array_equal(t.x, r.x)
        assert (t.yaxis == "y2") == ("accuracy" in t.name)
    by = {t.name: t for t in fig.data}
    np.testing.assert_allclose(by["test accuracy"].y, apart["test"].metrics["accuracy"], rtol=1e-6)
    assert by["train loss"].line.dash == "solid" and by["test loss"].line.dash == "dash"
    assert by["train loss"].line.color == by["test loss"].line.color != by["test accuracy"].line.color
    only_test = lnb.plot.line_splits(both, splits=["test"], metric=None)
    assert [t.name for t in only_test.data] == ["test loss"]


def test_weights_are_set_once_per_point_for_all_splits(monkeypatch):
    calls = []
    original = Perturber.set

    def spy(self, coeffs):
        calls.append(id(self))
        return original(self, coeffs)

    monkeypatch.setattr(Perturber, "set", spy)
    model, data = make_mlp(), _splits(n_train=40, n_test=30)  # no batch-size tuning: shared from the start
    # one point per pass (stacked passes set no weights): the primary split's perturber writes each point
    # once for every split, from the first point on
    surf = lnb.compute_surface(model, data, random_dict_dirs(model, 2), x=(-1, 1, 5), y=(-1, 1, 4),
                               points_per_pass=1)
    primary = max(set(calls), key=calls.count)
    assert surf.is_complete and calls.count(primary) == surf.loss.size == len(calls)


def test_splits_with_bn_in_a_plane_resume_from_a_store(tmp_path):
    torch.manual_seed(0)
    cnn = TinyCNN().eval()
    g = torch.Generator().manual_seed(2)
    data = {"train": (torch.randn(30, 1, 8, 8, generator=g), torch.randint(0, 3, (30,), generator=g)),
            "val-1": (torch.randn(20, 1, 8, 8, generator=g), torch.randint(0, 3, (20,), generator=g))}
    d = lnb.random_directions(cnn, n=2, seed=0)
    grid = dict(x=(-1, 1, 4), y=(-1, 1, 3), tile=(1, 2))
    import threading

    cancel = threading.Event()
    part = lnb.compute_surface(cnn, data, d, **grid, store=tmp_path / "s", cancel=cancel,
                               callbacks=[lambda ev: cancel.set()])
    assert 0 < part.n_done < part.loss.size
    full = lnb.compute_surface(cnn, data, d, **grid, store=tmp_path / "s")
    for split, v in data.items():
        alone = lnb.compute_surface(cnn, v, d, x=grid["x"], y=grid["y"])
        np.testing.assert_allclose(full.metrics[f"{split}_loss"], alone.loss, rtol=1e-6)
    # another split order is another surface: the store refuses it
    with pytest.raises(LandscapeError, match="different surface"):
        lnb.compute_surface(cnn, {"val-1": data["val-1"], "train": data["train"]}, d, **grid, store=tmp_path / "s")


def _loss_with_statistics_of(model, d, a, stats_x, x, y) -> float:
    """Naive float64: the model at w0 + a·d, BatchNorm statistics the plain average over ``stats_x`` (one pass,
    momentum None), then the mean cross-entropy on (x, y) in eval mode."""
    import copy

    m = copy.deepcopy(model).double()
    with torch.no_grad():
        params = dict(m.named_parameters())
        for name, t in d.as_state_dicts()[0].items():
            params[name].add_(a * t.double())
        m.bn.reset_running_stats()
        m.bn.momentum = None
        m.train()
        m(stats_x.double())
        m.eval()
        return float(torch.nn.functional.cross_entropy(m(x.double()), y))


def test_bn_recompute_over_splits_takes_every_splits_statistics_from_the_first_split():
    """A test split shifted away from the training data: its own batch statistics fitted BatchNorm to it (up to
    2 nats off the model's loss); now every split uses the training split's statistics, as the model keeps them.
    bn_data= given still wins; the spec says the statistics are another data's."""
    torch.manual_seed(0)
    cnn = TinyCNN().eval()
    g = torch.Generator().manual_seed(2)
    train = torch.randn(30, 1, 8, 8, generator=g), torch.randint(0, 3, (30,), generator=g)
    test = 3 * torch.randn(20, 1, 8, 8, generator=g) + 1, torch.randint(0, 3, (20,), generator=g)
    d = lnb.random_directions(cnn, n=1, seed=0)
    surf = lnb.compute_surface(cnn, {"train": train, "test": test}, d, x=(-1, 1, 5), mode="bn-recompute")
    for i, a in enumerate(surf.x):
        for split, (x, y) in (("train", train), ("test", test)):
            naive = _loss_with_statistics_of(cnn, d, a, train[0], x, y)
            assert surf.metrics[f"{split}_loss"][i] == pytest.approx(naive, rel=1e-5), (split, a)
    own = _loss_with_statistics_of(cnn, d, 1.0, test[0], *test)
    assert abs(surf.metrics["test_loss"][-1] - own) > 0.05  # the statistics matter on this shifted split
    assert "the samples of split 'train', for every split" in surf.provenance["data"]["test: bn_recompute"]
    assert surf.spec["eval"]["bn_data"]["fingerprint"]
    # with max_samples the statistics are those of the train subset the train split evaluates (not all of it:
    # a 50k-sample train split would re-estimate over 50k samples at every point)
    from landscape_nb.data import subset_indices

    sub = lnb.compute_surface(cnn, {"train": train, "test": test}, d, x=(-1, 1, 3), mode="bn-recompute",
                              max_samples=12)
    kept = subset_indices(30, 12, 0)
    test_kept = subset_indices(20, 12, 0)
    for i, a in enumerate(sub.x):
        naive = _loss_with_statistics_of(cnn, d, a, train[0][kept], test[0][test_kept], test[1][test_kept])
        assert sub.metrics["test_loss"][i] == pytest.approx(naive, rel=1e-5)
    given = lnb.compute_surface(cnn, {"train": train, "test": test}, d, x=(-1, 1, 5), mode="bn-recompute",
                                bn_data=test)
    for i, a in enumerate(given.x):
        assert given.metrics["train_loss"][i] == pytest.approx(
            _loss_with_statistics_of(cnn, d, a, test[0], *train), rel=1e-5)


def test_bad_split_data_is_a_clear_error(mlp):
    d = random_dict_dirs(mlp, 1)
    with pytest.raises(LandscapeError, match="empty mapping"):
        lnb.compute_surface(mlp, {}, d, x=(-1, 1, 3))
    with pytest.raises(LandscapeError, match="split name 'train_set'"):
        lnb.compute_surface(mlp, {"train_set": _splits()["train"]}, d, x=(-1, 1, 3))
    with pytest.raises(LandscapeError, match="data split 'test'"):
        lnb.compute_surface(mlp, {"train": _splits()["train"], "test": (torch.randn(5, 6), torch.zeros(4))}, d,
                            x=(-1, 1, 3))
    with pytest.raises(LandscapeError, match="quantity"):
        lnb.compute_surface(mlp, _splits(), d, x=(-1, 1, 3), quantity="hessian")
    one = lnb.compute_surface(mlp, _splits()["test"], d, x=(-1, 1, 3))
    with pytest.raises(LandscapeError, match="<split>_loss"):
        lnb.plot.line_splits(one)
    both = lnb.compute_surface(mlp, _splits(), d, x=(-1, 1, 3))  # a misspelt metric drew the losses alone (s40)
    for given in (both, {"train": one, "test": one}):
        with pytest.raises(LandscapeError, match=r"metric='acc', which no split has \(their metrics: .*'accuracy'"):
            lnb.plot.line_splits(given, metric="acc")


def _train_factory():
    return _splits(n_train=60, n_test=30)["train"]


def _test_factory():
    return _splits(n_train=60, n_test=30)["test"]


def test_splits_on_a_dask_local_cluster():
    """Split data as zero-argument factories defined here, where the workers cannot import them from:
    they travel by value like a single data factory."""
    import os
    import sys
    from pathlib import Path

    from landscape_nb.cluster import get_client

    model = make_mlp()
    data = {"train": _train_factory, "test": _test_factory}
    d = lnb.random_directions(model, n=1, seed=2)
    ref = lnb.compute_surface(model, data, d, x=(-1, 1, 9))
    here = str(Path(__file__).parent)
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        client, owned = get_client("local", n_workers=2)
    finally:
        sys.path[:] = saved
    try:
        assert not any(client.run(lambda: __import__("importlib.util").util.find_spec("test_splits") is not None)
                       .values())
        got = lnb.compute_surface(model, data, d, x=(-1, 1, 9), client=client, tile=2)
    finally:
        owned.close()
    assert got.provenance["runner"].startswith("dask") and got.spec == ref.spec
    for name in ref.metrics:
        np.testing.assert_allclose(got.metrics[name], ref.metrics[name], rtol=1e-6)


def test_shared_pass_with_a_shared_first_layer_in_every_split():
    """One point per pass, the weights written once for all splits, and each split's shared first
    layer (terms × coefficients) in use: every split equals the naive loop (the later splits' layers
    read stale coefficients before)."""
    from torch import nn

    from landscape_nb.evaluate import EvalSettings
    from landscape_nb.splits import SplitEvaluator

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    g = torch.Generator().manual_seed(1)
    data = {"train": (torch.randn(60, 32, generator=g), torch.randint(0, 3, (60,), generator=g)),
            "test": (torch.randn(40, 32, generator=g), torch.randint(0, 3, (40,), generator=g))}
    dirs = random_dict_dirs(model, 2, seed=2)
    d = lnb.as_directions(model, dirs)
    ev = SplitEvaluator(model, data, d.vectors, d.layout, settings=EvalSettings(points_per_pass=1))
    for sub in ev.splits.values():
        assert sub.shared_layer is not None
        sub._shared_plan = []  # keep the shared layer on every point
    assert ev._shared_pass()
    coords = np.random.default_rng(4).uniform(-1, 1, (7, 2))
    got = ev.evaluate(coords)
    for row, c in zip(got, coords):
        want = [naive_loss(model, data[s], dirs, c)[0] for s in ("train", "test")]
        np.testing.assert_allclose(row[[1, 3]], want, rtol=1e-5)


def test_split_runs_record_each_splits_notes():
    model, data = make_mlp(), _splits(n_train=40, n_test=30)
    surf = lnb.compute_surface(model, data, random_dict_dirs(model, 1), x=(-1, 1, 3))
    notes = surf.provenance["data"]
    assert {"train: loss", "test: loss", "train: targets", "test: targets"} <= set(notes), notes


def test_a_regressions_split_metrics_are_drawn_or_named():
    """A regression's one metric per split is drawn on the right axis by default; with two, neither is
    drawn and a note names them (the default "accuracy" drew the losses alone with no word, s41)."""
    from landscape_nb.surface import Surface

    x = np.linspace(-1, 1, 5)
    loss = {"train": x ** 2, "test": x ** 2 + 0.5}
    one = {k: Surface(x=x, y=None, loss=v, metrics={"mae": np.sqrt(v)}) for k, v in loss.items()}
    fig = lnb.plot.line_splits(one)
    assert [t.name for t in fig.data] == ["train loss", "train mae", "test loss", "test mae"]
    np.testing.assert_allclose(fig.data[3].y, np.sqrt(x ** 2 + 0.5))
    assert fig.layout.yaxis2.title.text == "mae"
    assert not [a for a in fig.layout.annotations if a.name == "metrics not drawn"]
    two = {k: Surface(x=x, y=None, loss=v, metrics={"mae": np.sqrt(v), "mse": v}) for k, v in loss.items()}
    fig = lnb.plot.line_splits(two)
    assert [t.name for t in fig.data] == ["train loss", "test loss"]
    notes = [a.text for a in fig.layout.annotations if a.name == "metrics not drawn"]
    assert len(notes) == 1 and "mae, mse" in notes[0]
    assert [t.name for t in lnb.plot.line_splits(two, metric="mse").data][1] == "train mse"
    assert not [a for a in lnb.plot.line_splits(two, metric=None).layout.annotations if a.name == "metrics not drawn"]


def test_split_lines_of_other_directions_are_refused_and_undrawn_splits_and_metrics_are_named(mlp):
    """Trial s42: separate train and test lines along other directions were drawn as one Figure-1 line; a test
    split without the train split's metric drew the train one's alone with no word; plot.line of a split surface
    listed its splits' losses as metrics not drawn, with a metric= hint, in one line wider than the figure
    (review s42); two lines of one model class were both named "Sequential"."""
    from landscape_nb.plot._common import (
        CAPTION_FONT,
        DEFAULT_MARGIN,
        DEFAULT_WIDTH,
        text_width,
    )

    data = _splits()
    train = lnb.compute_surface(mlp, data["train"], lnb.random_directions(mlp, n=1, seed=0), x=(-1, 1, 3))
    other = lnb.compute_surface(mlp, data["test"], lnb.random_directions(mlp, n=1, seed=5), x=(-1, 1, 3))
    with pytest.raises(LandscapeError, match=r"split 'test' was computed along other directions than split 'train'"):
        lnb.plot.line_splits({"train": train, "test": other})
    same = lnb.compute_surface(mlp, data["test"], lnb.random_directions(mlp, n=1, seed=0), x=(-1, 1, 3))
    nll = lnb.compute_surface(mlp, data["test"], lnb.random_directions(mlp, n=1, seed=0), x=(-1, 1, 3),
                              loss_fn=lambda o, t: torch.nn.functional.nll_loss(o.log_softmax(1), t))
    with pytest.raises(LandscapeError, match=r"split 'test' was computed with another loss than split 'train'"):
        lnb.plot.line_splits({"train": train, "test": nll})  # drawn as one "loss" (re-trial s42)
    fig = lnb.plot.line_splits({"train": train, "test": same})  # one line: drawn
    assert [t.name for t in fig.data] == ["train loss", "train accuracy", "test loss", "test accuracy"]

    from landscape_nb.surface import Surface

    x = np.linspace(-1, 1, 5)
    mixed = {"train": Surface(x=x, y=None, loss=x ** 2, metrics={"mae": np.abs(x)}),
             "test": Surface(x=x, y=None, loss=x ** 2, metrics={"r2": 1 - x ** 2})}
    fig = lnb.plot.line_splits(mixed, metric="mae")
    (note,) = [a.text for a in fig.layout.annotations if a.name == "metrics not drawn"]
    assert note == "mae: not on test"

    both = lnb.compute_surface(mlp, data, lnb.random_directions(mlp, n=1, seed=0), x=(-1, 1, 3))
    renamed = Surface(x=both.x, y=None, loss=both.loss, metrics={
        **{f"{k}_{q}": v for k in ("train", "validation", "test", "holdout") for q, v in
           (("loss", both.loss), ("accuracy", both.loss), ("top5_accuracy", both.loss))}})
    fig = lnb.plot.line(renamed)
    (note,) = [a.text for a in fig.layout.annotations if a.name == "metrics not drawn"]
    # the train split's loss is drawn, named so (trial s57: "loss" beside "the splits ... are not drawn")
    assert ("drawn: the train split's loss; not drawn: the splits holdout, test, validation and each split's "
            "metrics: plot.line_splits draws them") in note.replace("<br>", " ")
    assert fig.data[0].name == "train loss"
    np.testing.assert_array_equal(fig.data[0].y, renamed.metrics["train_loss"])
    two = lnb.plot.line([renamed, renamed])  # several: each curve's split named too (re-trial s57)
    assert [t.name for t in two.data if t.name.endswith("loss")] == ["surface 0: train loss", "surface 1: train loss"]
    (note,) = [a.text for a in two.layout.annotations if a.name == "metrics not drawn"]
    assert note.replace("<br>", " ").startswith("drawn: the train split's loss; not drawn: the splits holdout, test")
    assert "metric=" not in note
    room = DEFAULT_WIDTH - DEFAULT_MARGIN["l"]
    assert all(text_width(line, CAPTION_FONT) <= room for line in note.split("<br>"))

    fig = lnb.plot.line([train, same])
    assert [t.name for t in fig.data][::2] == ["Sequential: loss", "Sequential (2): loss"]


def test_line_splits_marks_a_lines_two_models_and_gives_its_metric_axis_round_ticks():
    """Trial s57: line_splits of the small- to large-batch line drew no stars at the two models (plot.line does)
    and its accuracy axis, synced to the loss's grid, read 0.7496, 0.7828, ... The models are marked at 0 and 1
    on the first split's loss (naive: its values there), and the metric axis picks its own ticks."""
    a, b = make_mlp(0), make_mlp(1)
    surf = lnb.interpolation_surface(a, b, _splits(), x=(-0.5, 1.5, 9))
    fig = lnb.plot.line_splits(surf)
    (models,) = [t for t in fig.data if t.name == "models"]
    np.testing.assert_array_equal(models.x, [0.0, 1.0])
    np.testing.assert_allclose(models.y, surf.metrics["train_loss"][[2, 6]])
    assert fig.layout.yaxis2.tickmode == "auto"
