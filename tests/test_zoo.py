"""Tests of the bundled zoo, parametrized over the registry: a new entry is tested too.

Each example trains once per session, into the session's zoo cache (conftest: a fresh
temporary one unless LANDSCAPE_NB_CACHE is set), so the models other tests load are the ones
tested here and nothing trains twice.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import pytest
import torch

import landscape_nb as lnb
from landscape_nb import LandscapeError, zoo
from landscape_nb.zoo import Registry, Training, training

MIN_TEST_ACCURACY = {"mlp-moons": 0.95,  # deep nets without skips train badly: see tests/test_zoo_depth.py
                     "resnet56-noskip-digits": 0.15, "resnet110-noskip-digits": 0.05}
DEFAULT_MIN_TEST_ACCURACY = 0.9  # digits; measured accuracies are in zoo/entries.py


@pytest.fixture(scope="session")
def zoo_cache(shared_zoo_cache):
    """The session's zoo cache (conftest), where each example trains at most once."""
    return Path(shared_zoo_cache)


@pytest.fixture(scope="session")
def examples(zoo_cache):
    """``examples(name)``: the first load of ``name`` this session (trains it)."""
    loaded: dict[str, zoo.Example] = {}

    def get(name: str) -> zoo.Example:
        if name not in loaded:
            loaded[name] = zoo.load(name)
        return loaded[name]

    return get


def _naive_accuracy(model: torch.nn.Module, split) -> float:
    inputs, targets = split
    n_correct = 0
    with torch.no_grad():
        for x, y in zip(inputs.split(100), targets.split(100)):
            n_correct += int((model(x).argmax(dim=1) == y).sum())
    return n_correct / len(targets)


def _assert_states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("name", zoo.names())
def test_entry_loads_a_trained_eval_mode_float32_cpu_model(name, examples):
    ex = examples(name)
    assert ex.name == name
    assert ex.description and "\n" not in ex.description
    assert not any(m.training for m in ex.model.modules())
    for param in ex.model.parameters():
        assert param.dtype == torch.float32 and param.device.type == "cpu"
    for inputs, targets in (ex.train, ex.test):
        assert inputs.dtype == torch.float32 and targets.dtype == torch.int64
        assert len(inputs) == len(targets) > 0
    loss = ex.loss_fn(ex.model(ex.test[0]), ex.test[1])
    assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("name", zoo.names())
def test_test_accuracy_is_recomputable_and_above_threshold(name, examples):
    ex = examples(name)
    accuracy = _naive_accuracy(ex.model, ex.test)
    assert accuracy == ex.test_accuracy
    assert accuracy >= MIN_TEST_ACCURACY.get(name, DEFAULT_MIN_TEST_ACCURACY)


@pytest.mark.parametrize("name", zoo.names())
def test_trajectory_runs_from_initial_to_final_weights(name, examples):
    ex = examples(name)
    assert len(ex.trajectory) >= 3
    final = ex.model.state_dict()
    for state in ex.trajectory:
        assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in final.items()}
    _assert_states_equal(ex.trajectory[-1], final)
    _assert_states_equal(ex.trajectory[0], zoo.build_model(name).state_dict())
    first_key = next(iter(final))
    assert not torch.equal(ex.trajectory[0][first_key], ex.trajectory[-1][first_key])
    # the model owns its weights: perturbing it must not rewrite the trajectory
    assert all(ex.trajectory[-1][k].data_ptr() != v.data_ptr() for k, v in final.items())


@pytest.mark.parametrize("name", zoo.names())
def test_second_load_reads_the_cache_without_training_and_is_bit_identical(name, examples, zoo_cache, monkeypatch):
    first = examples(name)

    def no_training(*args, **kwargs):
        raise AssertionError(f"{name} trained again instead of reading its cache file")

    monkeypatch.setattr(zoo, "train", no_training)
    second = zoo.load(name)
    assert (zoo_cache / f"{name}-{zoo.fingerprint(zoo.registry.recipe(name))}.pt").is_file()
    _assert_states_equal(first.model.state_dict(), second.model.state_dict())
    assert len(first.trajectory) == len(second.trajectory)
    for a, b in zip(first.trajectory, second.trajectory):
        _assert_states_equal(a, b)
    assert first.minimizers.keys() == second.minimizers.keys()
    for key in first.minimizers:
        _assert_states_equal(
            first.minimizers[key].state_dict(), second.minimizers[key].state_dict()
        )
    assert second.test_accuracy == first.test_accuracy
    assert torch.equal(first.test[0], second.test[0]) and torch.equal(first.test[1], second.test[1])


@pytest.mark.parametrize("name", zoo.names())
def test_minimizers_only_for_mlp_digits(name, examples):
    ex = examples(name)
    if name != "mlp-digits":
        assert ex.minimizers == {}
        return
    assert set(ex.minimizers) == {"small-batch", "large-batch"}
    small = ex.minimizers["small-batch"].state_dict()
    large = ex.minimizers["large-batch"].state_dict()
    assert any(not torch.equal(small[k], large[k]) for k in small)
    for minimizer in ex.minimizers.values():
        assert not minimizer.training
        assert _naive_accuracy(minimizer, ex.train) >= 0.99


def _top_hessian_eigenvalue(model, split, n_iterations=30) -> float:
    """Power iteration with Hessian-vector products of the mean training loss."""
    params = [p for p in model.parameters()]
    inputs, targets = split
    loss = torch.nn.functional.cross_entropy(model(inputs), targets)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    generator = torch.Generator().manual_seed(0)
    v = [torch.randn(p.shape, generator=generator) for p in params]
    eigenvalue = 0.0
    for _ in range(n_iterations):
        norm = torch.sqrt(sum((x * x).sum() for x in v))
        v = [x / norm for x in v]
        hv = torch.autograd.grad(grads, params, v, retain_graph=True)
        eigenvalue = float(sum((a * b).sum() for a, b in zip(hv, v)))
        v = [h.detach() for h in hv]
    return eigenvalue


def test_mlp_digits_large_batch_minimizer_is_sharper(examples):
    ex = examples("mlp-digits")
    small = _top_hessian_eigenvalue(ex.minimizers["small-batch"], ex.train)
    large = _top_hessian_eigenvalue(ex.minimizers["large-batch"], ex.train)
    assert large > 3 * small


def test_unknown_name_raises_with_suggestion_and_names():
    with pytest.raises(LandscapeError) as info:
        zoo.load("resnet20-digit")
    message = str(info.value)
    assert "did you mean 'resnet20-digits'" in message
    assert all(name in message for name in zoo.names())
    with pytest.raises(LandscapeError, match="did you mean"):
        zoo.build_model("vit")
    with pytest.raises(LandscapeError, match="expected a string"):
        zoo.load(3)


def test_list_names_and_descriptions_agree():
    entries = zoo.list()
    assert [e.name for e in entries] == zoo.names()
    assert {"mlp-digits", "cnn-digits", "resnet20-digits", "resnet20-noskip-digits",
            "vit-digits", "mlp-moons"} <= set(zoo.names())
    assert all(e.description and "\n" not in e.description for e in entries)


def test_name_lookup_forgives_case_and_underscores(examples):
    assert zoo.load("MLP_Moons").name == "mlp-moons"


def test_data_shapes_and_ranges(examples):
    mlp, cnn, moons = examples("mlp-digits"), examples("cnn-digits"), examples("mlp-moons")
    assert mlp.train[0].shape == (1437, 64) and mlp.test[0].shape == (360, 64)
    assert cnn.train[0].shape == (1437, 1, 8, 8)
    assert torch.equal(cnn.train[0].reshape(-1, 64), mlp.train[0])
    assert 0.0 <= float(mlp.train[0].min()) and float(mlp.train[0].max()) <= 1.0
    assert set(mlp.train[1].tolist()) == set(range(10))
    assert moons.train[0].shape == (800, 2) and set(moons.test[1].tolist()) == {0, 1}


def test_corrupt_cache_file_warns_and_retrains(tmp_path, caplog):
    first = zoo.load("mlp-moons", cache_dir=tmp_path)
    (path,) = tmp_path.glob("mlp-moons-*.pt")
    for damage in (b"not a torch file", path.read_bytes()[:100]):
        path.write_bytes(damage)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="landscape_nb.zoo"):
            again = zoo.load("mlp-moons", cache_dir=tmp_path)
        assert caplog.text.count("Ignoring unreadable zoo cache file") == 1  # said once, not again under the lock
        assert "retraining" in caplog.text
        _assert_states_equal(first.model.state_dict(), again.model.state_dict())
        assert zoo.load("mlp-moons", cache_dir=tmp_path).test_accuracy == first.test_accuracy
    # no temp files left; the (empty) training lock stays, as filelock leaves it
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, f"{path.name}.lock"]


LOAD_AND_SAY = """
import logging, sys
import torch
from landscape_nb import zoo
from landscape_nb.zoo import _cache
_cache.LOCK_SAY_EVERY = 0.2  # say "still waiting" while the first process trains
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
ex = zoo.load("mlp-moons", cache_dir=sys.argv[1])
torch.save(ex.model.state_dict(), sys.argv[2])
"""


def test_a_process_that_finds_a_model_being_trained_waits_and_reads_it_instead_of_training_it_again(tmp_path):
    """Two kernels (or Dask workers, or test processes) asking for the same untrained example trained it twice
    at once, for minutes on the deep ResNets. Here another process holds the training lock: the second waits,
    says so (and, every LOCK_SAY_EVERY, that it still does: a holder that hangs is never waited for in
    silence), and reads the weights the first wrote, training nothing."""
    import subprocess
    import sys

    from filelock import FileLock

    from landscape_nb.zoo import _cache
    from landscape_nb.zoo.training import train

    path = zoo.cache_file("mlp-moons", tmp_path)
    recipe = zoo.registry.recipe("mlp-moons")
    with FileLock(f"{path}.lock"):  # "the first process", training
        second = subprocess.Popen([sys.executable, "-c", LOAD_AND_SAY, str(tmp_path), str(tmp_path / "second.pt")],
                                  stderr=subprocess.PIPE, text=True)
        weights = train(recipe, *recipe.data())
        said = ""
        while "Waiting" not in said and second.poll() is None:  # it has found the weights missing and the lock held
            said += second.stderr.readline()
        time.sleep(1.0)  # several LOCK_SAY_EVERY
        _cache.write(path, weights)  # then "the first" writes them and lets go
    said += second.stderr.read()  # not communicate(timeout=): it reads the pipe past what readline buffered
    second.wait(timeout=120)
    assert second.returncode == 0, said
    assert "Waiting for another process that is training zoo example 'mlp-moons'" in said, said
    assert "Still waiting after 0.2 s for the process training zoo example 'mlp-moons'" in said, said
    assert "Training zoo example" not in said, said
    _assert_states_equal(torch.load(tmp_path / "second.pt"), weights.final)


def test_a_cache_that_cannot_hold_the_training_lock_still_trains(tmp_path, monkeypatch, caplog):
    from filelock import FileLock

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", self.lock_file)

    monkeypatch.setattr(FileLock, "acquire", refuse)
    with caplog.at_level(logging.INFO, logger="landscape_nb.zoo"):
        ex = zoo.load("mlp-moons", cache_dir=tmp_path)
    assert "Training zoo example 'mlp-moons'" in caplog.text
    assert ex.test_accuracy >= MIN_TEST_ACCURACY["mlp-moons"]
    assert zoo.cache_file("mlp-moons", tmp_path).exists()


def test_cache_file_from_another_architecture_is_not_loaded(tmp_path, caplog):
    zoo.load("mlp-moons", cache_dir=tmp_path)
    (moons_path,) = tmp_path.glob("mlp-moons-*.pt")
    zoo.load("cnn-digits", cache_dir=tmp_path / "cnn")
    (cnn_path,) = (tmp_path / "cnn").glob("cnn-digits-*.pt")
    moons_path.write_bytes(cnn_path.read_bytes())
    with caplog.at_level(logging.WARNING, logger="landscape_nb.zoo"):
        ex = zoo.load("mlp-moons", cache_dir=tmp_path)
    assert "retraining" in caplog.text
    assert ex.test_accuracy >= MIN_TEST_ACCURACY["mlp-moons"]


def test_training_and_loading_leave_global_rng_untouched(tmp_path):
    before = torch.random.get_rng_state()
    zoo.load("mlp-moons", cache_dir=tmp_path)  # trains
    zoo.load("mlp-moons", cache_dir=tmp_path)  # reads the cache
    zoo.build_model("resnet20-digits")
    assert torch.equal(before, torch.random.get_rng_state())


def test_changed_recipe_changes_cache_key():
    recipe = zoo.registry.recipe("mlp-moons")
    key = training.fingerprint(recipe)
    assert training.fingerprint(zoo.registry.recipe("mlp-moons")) == key
    assert training.fingerprint(dataclasses.replace(recipe, seed=1)) != key
    longer = dataclasses.replace(recipe.training, n_epochs=recipe.training.n_epochs + 1)
    assert training.fingerprint(dataclasses.replace(recipe, training=longer)) != key


def test_registry_registers_by_function_name_and_rejects_duplicates():
    registry = Registry()

    @registry.register
    def tiny_example():
        """A one-line description.

        More detail that is not part of it.
        """
        return zoo.registry.recipe("mlp-moons")

    assert registry.names() == ["tiny-example"]
    assert registry.entry("tiny_example").description == "A one-line description."
    with pytest.raises(LandscapeError, match="unique"):
        registry.register(tiny_example)


def test_warmup_schedule_rises_linearly_then_decays_as_a_cosine():
    """The learning rate of every step against the formula written out by hand."""
    import math

    n_steps, n_warmup, lr = 20, 5, 0.3
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = training._schedule(optimizer, n_steps, n_warmup)
    seen = []
    for _ in range(n_steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    want = [lr * (0.1 + 0.9 * i / n_warmup) if i < n_warmup
            else lr * (1 + math.cos(math.pi * (i - n_warmup) / (n_steps - n_warmup))) / 2
            for i in range(n_steps)]
    assert seen == pytest.approx(want, rel=1e-6)
    no_warmup = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    assert isinstance(training._schedule(no_warmup, n_steps, 0), torch.optim.lr_scheduler.CosineAnnealingLR)


@pytest.mark.parametrize("warmup", [-1, 3, 4])
def test_warmup_must_leave_epochs_to_decay(warmup):
    with pytest.raises(LandscapeError, match=f"warmup_epochs={warmup} with n_epochs=3"):
        Training("sgd", lr=0.1, batch_size=8, n_epochs=3, warmup_epochs=warmup)


def test_a_zoo_models_surfaces_are_labelled_with_its_name():
    """Trial s57: plot.compare of resnet20-digits and resnet20-noskip-digits titled both panels "ResNet" (the
    class), and the small- and large-batch lines were "MLP" and "MLP (2)". A zoo model's surfaces carry its
    name, a minimizer's with its key; a name= given still wins, and a model of one's own keeps its class."""
    ex = lnb.zoo.load("mlp-digits")
    small = ex.minimizers["small-batch"]
    data = (ex.test[0][:64], ex.test[1][:64])
    surfaces = [lnb.compute_surface(m, data, lnb.random_directions(m, n=1, seed=0), x=(-1, 1, 3))
                for m in (ex.model, small)]
    assert [s.provenance["label"] for s in surfaces] == ["mlp-digits", "mlp-digits small-batch"]
    assert [t.name for t in lnb.plot.line(surfaces).data][::2] == ["mlp-digits: loss", "mlp-digits small-batch: loss"]
    named = lnb.compute_surface(small, data, lnb.random_directions(small, n=1, seed=0), x=(-1, 1, 3), name="sb")
    assert named.provenance["label"] == "sb"
    import copy

    moved = copy.deepcopy(ex.model)  # a copy is the user's own now, whatever they do to it (re-trial s57)
    assert lnb.compute_surface(moved, data, lnb.random_directions(moved, n=1), x=(-1, 1, 3)).provenance["label"] == "MLP"
    own = torch.nn.Linear(64, 10)
    assert lnb.compute_surface(own, data, lnb.random_directions(own, n=1), x=(-1, 1, 3)).provenance["label"] == "Linear"
