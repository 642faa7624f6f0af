"""The main job, end to end on the embedded cluster (small resolution)."""
import copy
import re

import pytest
import torch
from torch import nn

import landscape_nb as lnb
from landscape_nb.cli import main


@pytest.mark.timeout(1500)  # the whole main job, training every model it shows on first use (~3 min on 2 cores)
def test_demo_writes_standalone_html_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--resolution", "5", "--workers", "2"]) == 0
    pages = sorted(p.name for p in out.glob("*.html"))
    assert pages == sorted([
        "resnet20-digits-surface.html", "resnet20-noskip-digits-surface.html", "resnet20-skip-vs-noskip.html", "depth-skip-vs-noskip.html",
        "mlp-digits-small-vs-large-batch.html", "mlp-digits-flat-vs-sharp.html", "mlp-moons-contour.html"])
    for page in out.glob("*.html"):
        text = page.read_text()
        assert "Plotly.newPlot" in text and len(text) > 3_000_000  # plotly.js embedded
        assert not re.search(r"<script[^>]+src=[\"']https?://", text)
    said = capsys.readouterr()
    stdout = said.out
    assert "Dask dashboard: http://127.0.0.1:" in stdout and "7 figures" in stdout
    # the depth phase says what it computes, with a bar a plane (minutes with no output, trial s53b)
    assert "depth comparison: ResNet-20/56/110 with and without skips, 6 planes of 5×5 points" in stdout
    assert said.err.count("depth comparison plane") >= 6
    # the 1D figures hold their minimizers (4n and 2n points missed them): each one's loss at its own
    # coordinate is a naive float64 evaluation of it
    ex = lnb.zoo.load("mlp-digits")
    x, y = ex.test
    naive = {}
    for key, m in ex.minimizers.items():
        with torch.no_grad():
            naive[key] = float(nn.functional.cross_entropy(copy.deepcopy(m).double()(x.double()), y))
    line = lnb.load_surface(out / "stores" / "small-to-large_batch.zarr")
    assert line.x_label == "interpolation small-batch → large-batch" and len(line.x) == 21
    for t, key in ((0.0, "small-batch"), (1.0, "large-batch")):
        assert t in line.x and line.loss[list(line.x).index(t)] == pytest.approx(naive[key], rel=2e-6)
    for key, loss in naive.items():
        s = lnb.load_surface(out / "stores" / f"{key}_slice.zarr")
        assert len(s.x) == 11 and s.loss[list(s.x).index(0.0)] == pytest.approx(loss, rel=2e-6)
    # the stores are complete and a rerun resumes them without recomputation
    assert main(["demo", "--out", str(out), "--resolution", "5", "--workers", "2"]) == 0


def test_the_demo_says_which_models_it_trains_and_leaves_logging_as_it_was(tmp_path, capsys):
    """A first run trains six ResNets for minutes; it did so in silence (trial s43). While the demo runs the
    zoo's training lines are printed, once (also where the root logger is at INFO), and the zoo's logger is put
    back after."""
    import logging

    from landscape_nb.cli.demo import training_said

    zoo_log = logging.getLogger("landscape_nb.zoo")
    before = (zoo_log.level, zoo_log.propagate, list(zoo_log.handlers))
    with training_said():
        lnb.zoo.load("mlp-moons", cache_dir=tmp_path)
        lnb.zoo.load("mlp-moons", cache_dir=tmp_path)  # cached: nothing to say
    out = capsys.readouterr().out
    assert out.count("Training zoo example 'mlp-moons' (first use; cached at") == 1
    assert out.count("Trained 'mlp-moons' in") == 1
    assert (zoo_log.level, zoo_log.propagate, list(zoo_log.handlers)) == before


def test_the_demo_trains_its_missing_models_at_once_on_the_clusters_workers(tmp_path, caplog):
    """A first demo trained its eight models one after another in the main process (~2.5 min of a CI run);
    on the local cluster it starts, each missing one is trained by a worker into the zoo cache: two models
    on two worker processes, said as they start and end, then read here without training again, holding
    trained weights (their test accuracy recomputed here is the one the worker stored, far from chance).
    Weights a worker could not leave where this process reads them are said, not counted."""
    import logging
    import os

    from landscape_nb.cluster import get_client
    from landscape_nb.zoo.training import accuracy_of

    cache = tmp_path / "zoo"
    client, owned = get_client("local", n_workers=2)
    try:
        with caplog.at_level(logging.INFO, logger="landscape_nb.zoo"):
            pids = lnb.zoo.train_on_workers(["cnn-digits", "mlp-digits", "cnn-digits"], client, cache_dir=cache)
        assert set(pids) == {"cnn-digits", "mlp-digits"}
        assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
        said = [r.getMessage() for r in caplog.records]
        for name in pids:
            assert sum(f"Training zoo example {name!r} on a worker" in m for m in said) == 1
            assert sum(m.startswith(f"Trained {name!r} in") and "on a worker" in m for m in said) == 1
            assert lnb.zoo.cache_file(name, cache).exists()
        assert lnb.zoo.train_on_workers(["cnn-digits"], client, cache_dir=cache) == {}  # cached: nothing to do
        blocked = tmp_path / "a-file"  # a cache the worker cannot write (as one on another machine: not here)
        blocked.write_text("")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="landscape_nb.zoo"):
            assert lnb.zoo.train_on_workers(["mlp-moons"], client, cache_dir=blocked) == {}
        assert any(r.levelname == "WARNING" and "'mlp-moons' was trained on a worker, but its weights are not at"
                   in r.getMessage() for r in caplog.records)
    finally:
        owned.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="landscape_nb.zoo"):
        for name in pids:
            ex = lnb.zoo.load(name, cache_dir=cache)
            assert accuracy_of(ex.model, ex.test) == ex.test_accuracy > 0.8
            initial = lnb.zoo.build_model(name)
            assert any(not torch.equal(p, q) for p, q in zip(ex.model.state_dict().values(),
                                                             initial.state_dict().values()))
    assert not [r for r in caplog.records if "Training" in r.getMessage()]
