"""Dask execution on a real LocalCluster with worker processes."""
import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import landscape_nb as lnb
from landscape_nb import LandscapeError
from landscape_nb.cluster import ClientChoice, get_client, parse_client
from landscape_nb.store import SurfaceStore

from conftest import fresh_module, make_mlp, model_at, naive_loss, random_dict_dirs

TESTS_DIR = str(Path(__file__).parent)


class OnlyHere(nn.Module):
    """Defined in this test module only: workers cannot import it."""

    def __init__(self, delay: float = 0.0):
        super().__init__()
        self.a = nn.Linear(6, 16)
        self.b = nn.Linear(16, 3)
        self._delay = delay  # private: not a module setting a store compares (spec.module_settings)

    def forward(self, x):
        if self._delay:
            time.sleep(self._delay)
        return self.b(torch.relu(self.a(x)))


def _without_tests_on_path(fn):
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != TESTS_DIR]
    try:
        return fn()
    finally:
        sys.path[:] = saved


@pytest.fixture(scope="module")
def client():
    c, owned = _without_tests_on_path(lambda: get_client("local", n_workers=2))
    yield c
    owned.close()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(97, 6, generator=g), torch.randint(0, 3, (97,), generator=g)


class FarOutFails(OnlyHere):
    """Raises once its weights move more than ``limit`` from where they started."""

    def __init__(self, limit: float):
        super().__init__()
        self.limit = limit
        self.register_buffer("start", self.a.weight.detach().clone(), persistent=False)

    def forward(self, x):
        if float((self.a.weight - self.start).abs().max()) > self.limit:
            raise FloatingPointError("weights too far out")
        return super().forward(x)


def _model(delay=0.0):
    torch.manual_seed(0)
    return OnlyHere(delay)


def test_workers_keep_glibc_adaptive_malloc(client):
    """Dask's default MALLOC_TRIM_THRESHOLD_ made torch CPU evaluation 3x slower on workers."""
    assert set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values()) == {None}

    def freed_heap_kept():
        import ctypes

        class Info(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in
                        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype, libc.malloc.restype, libc.free.argtypes = Info, ctypes.c_void_p, [ctypes.c_void_p]
        blocks = [libc.malloc(64 << 10) for _ in range(800)]
        peak = libc.mallinfo2().arena
        for b in reversed(blocks):
            libc.free(b)
        return libc.mallinfo2().arena >= peak

    assert set(client.run(freed_heap_kept).values()) == {True}  # process.keep_heap_top ran on each worker
    assert "MALLOC_TOP_PAD_" not in os.environ  # nothing leaks into this process's environment


def test_workers_keep_adaptive_malloc_after_another_dask_cluster_in_this_process(monkeypatch):
    """A plain Dask cluster made earlier in this process leaves MALLOC_TRIM_THRESHOLD_ in os.environ, which
    spawned workers inherit: the workers made here still start without it, and the variable is put back."""
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    c, owned = _without_tests_on_path(lambda: get_client("local", n_workers=1))
    try:
        assert set(c.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values()) == {None}
    finally:
        owned.close()
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"


def test_workers_really_cannot_import_the_test_module(client):
    assert not any(client.run(lambda: importlib.util.find_spec("test_dask") is not None).values())


@pytest.mark.parametrize("x, y, tile", [
    ((-1, 1, 9), None, 2), ((-1, 1, 9), None, 4),
    ((-1, 1, 7), (-1, 1, 5), (2, 3)), ((-1, 1, 5), (-0.5, 2, 6), (5, 1)),
])
def test_dask_equals_in_process(client, data, x, y, tile):
    m = _model()  # class from this module, shipped by value
    d = lnb.random_directions(m, n=1 if y is None else 2, seed=2)
    ref = lnb.compute_surface(m, data, d, x=x, y=y)
    s = lnb.compute_surface(m, data, d, x=x, y=y, client=client, tile=tile)
    np.testing.assert_allclose(s.loss, ref.loss, rtol=1e-6)
    np.testing.assert_allclose(s.metrics["accuracy"], ref.metrics["accuracy"], rtol=1e-6)
    assert s.provenance["runner"].startswith("dask")
    # each worker built the job's evaluator once and dropped it when the surface was done
    cached = client.run(lambda dask_worker: len(getattr(dask_worker, "_landscape_nb_evaluators", {})))
    assert set(cached.values()) == {0}


def test_provenance_records_what_each_worker_settled_on(client, data):
    m = _model()
    d = lnb.random_directions(m, n=2, seed=2)
    addresses = set(client.scheduler_info()["workers"])
    fixed = lnb.compute_surface(m, data, d, x=(-1, 1, 6), y=(-1, 1, 6), client=client, tile=3,
                                batch_size=16, points_per_pass=2)
    workers = fixed.provenance["workers"]
    assert workers and set(workers) <= addresses
    here = {"landscape_nb": fixed.provenance["landscape_nb"], "torch": torch.__version__, "numpy": np.__version__,
            "python": "{}.{}".format(*sys.version_info[:2])}
    assert all({k: v for k, v in w.items() if k != "tiles"} == {"batch_size": 16, "points_per_pass": 2,
                                                                "versions": here, "left": False}
               for w in workers.values())
    assert all(isinstance(w["tiles"], int) and w["tiles"] >= 0 for w in workers.values())  # the probe's: maybe 0
    assert sum(w["tiles"] for w in workers.values()) == 4  # 6×6 points in tiles of 3×3, each counted once
    assert (fixed.provenance["batch_size"], fixed.provenance["points_per_pass"]) == (16, 2)
    tuned = lnb.compute_surface(m, data, d, x=(-1, 1, 6), y=(-1, 1, 6), client=client, tile=3)
    workers = tuned.provenance["workers"]
    assert workers and set(workers) <= addresses
    for name in ("batch_size", "points_per_pass"):  # the common value, or None where workers differ
        chosen = {w[name] for w in workers.values()}
        assert tuned.provenance[name] == (chosen.pop() if len(chosen) == 1 else None)
    assert tuned.provenance["batch_size"] == 97  # a small set runs as one batch on every worker


def test_a_worker_running_another_torch_is_warned_of_and_recorded(client, data):
    """The workers' torch version was neither checked nor recorded (trial s39): one installed apart from this
    process's may run other kernels and defaults. Its points are kept, the difference warned of and recorded."""
    def set_version(value: str) -> str:
        from landscape_nb.runners import library_versions

        before, torch.__version__ = torch.__version__, value
        library_versions.cache_clear()  # read once a process
        return before

    m = _model()
    d = lnb.random_directions(m, n=1, seed=0)
    first = min(client.scheduler_info()["workers"])
    real = client.run(set_version, "1.13.1", workers=[first])[first]
    try:
        with pytest.warns(UserWarning, match=rf"the Dask worker at {re.escape(first)} runs torch 1\.13\.1 where this "
                          rf"process runs torch {re.escape(torch.__version__)}"):
            s = lnb.compute_surface(m, data, d, x=(-1, 1, 21), tile=1, client=client)
    finally:
        client.run(set_version, real, workers=[first])
    assert s.provenance["workers"][first]["versions"]["torch"] == "1.13.1"
    np.testing.assert_allclose(s.loss, lnb.compute_surface(m, data, d, x=(-1, 1, 21)).loss, rtol=1e-6)  # kept
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        lnb.compute_surface(m, data, d, x=(-1, 1, 21), tile=1, client=client)  # all alike again: no word


def test_a_loader_read_on_a_worker_still_warns_in_this_process(client, data):
    """A DataLoader is read on the worker, where its warning stays: compute_surface warns again here that a
    loop over the loader sees other samples (drop_last=True leaves out 7 of 97), and the values are the mean
    over all 97, as in-process."""
    from torch.utils.data import DataLoader, TensorDataset

    m = _model()
    d = lnb.random_directions(m, n=1, seed=2)
    loader = DataLoader(TensorDataset(*data), batch_size=10, drop_last=True)
    with pytest.warns(UserWarning, match="drop_last=True a pass over the loader leaves out its last 7 of 97") as said:
        s = lnb.compute_surface(m, loader, d, x=(-1, 1, 3), client=client)
    assert _said(said, "drop_last=True a pass over the loader") == 1  # not again for each worker
    want = [naive_loss(m, data, d.as_state_dicts(), [a])[0] for a in (-1.0, 0.0, 1.0)]
    np.testing.assert_allclose(s.loss, want, rtol=1e-5)


class _DetachedTanh(torch.autograd.Function):
    """tanh whose backward reads its input through ``.detach()``: a constant to the second backward pass."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.tanh(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (1 - torch.tanh(x.detach()) ** 2)


class _DetachedTanhNet(OnlyHere):
    def forward(self, x):
        return self.b(_DetachedTanh.apply(self.a(x)))


def _warning_loss(out, y):
    warnings.warn("my loss says so", UserWarning, stacklevel=2)
    return nn.functional.cross_entropy(out, y)


def _failing_loss(out, y):
    loss = nn.functional.cross_entropy(out, y)
    if float(loss) > 3.0:
        warnings.warn("loss above 3, about to fail", UserWarning, stacklevel=2)
        raise ValueError("loss too large")
    return loss


def _deprecated_loss(out, y):
    warnings.warn("a library's function is deprecated", DeprecationWarning, stacklevel=2)
    return nn.functional.cross_entropy(out, y)


def _said(record, text: str) -> int:
    return sum(text in str(w.message) for w in record)


def test_warnings_given_on_a_worker_reach_the_caller_once_as_in_process(client):
    """landscape_nb's warnings on a Dask worker went to its log only, where the user of a remote cluster never
    looks (trial s36): a surface's "values are weighted means over batches of 20" (said when a worker builds
    its evaluator) and an eigen-map's "the backward of the custom autograd Functions ... " (said at a tile's
    first Hessian-vector product) reached the caller on no runner but the in-process one. Each now comes once
    on the caller, as in-process, with the same values."""
    from conftest import masked_in_batches_not_in_halves

    torch.manual_seed(0)
    x, y = masked_in_batches_not_in_halves()
    model = nn.Linear(4, 3)
    d = lnb.random_directions(model, n=2, seed=0)
    def ign(out, t):  # class 0 weighted down, by a weight no count of classes gives: Σ w[y]² (a plain
        w = torch.tensor([0.25, 1.0, 1.0])  # ignore_index or class weight is now weighted exactly, s42)
        return (w[t] * nn.functional.cross_entropy(out, t, reduction="none")).sum() / (w[t] ** 2).sum()

    batches = "landscape_nb: loss_fn on a batch is not the sample-weighted mean"
    surfaces = []
    for runner in (None, client):
        with pytest.warns(UserWarning, match="weighted means over batches of 20") as record:
            surfaces.append(lnb.compute_surface(model, (x, y), d, x=(-1, 1, 3), y=(-1, 1, 3), batch_size=20,
                                                loss_fn=ign, client=runner))
        assert _said(record, batches) == 1
    np.testing.assert_allclose(surfaces[1].loss, surfaces[0].loss, rtol=1e-6)

    torch.manual_seed(0)
    net = _DetachedTanhNet()
    net.a, net.b = nn.Linear(4, 6), nn.Linear(6, 3)
    d = lnb.random_directions(net, n=2, seed=0)
    maps = []
    for runner in (None, client):
        with pytest.warns(UserWarning, match="the backward of the custom autograd Functions _DetachedTanh") as record:
            maps.append(lnb.eigen_map(net, (x, y.clamp(min=1)), d, x=(-1, 1, 2), y=(-1, 1, 2), client=runner,
                                      tile=(1, 1)))
        assert _said(record, "landscape_nb: the backward of the custom autograd Functions") == 1
    np.testing.assert_allclose(maps[1].metrics["lambda_max"], maps[0].metrics["lambda_max"], rtol=1e-4)
    # the user's own loss's warning too (re-trial s37: it stayed in the worker's log)
    with pytest.warns(UserWarning, match="my loss says so") as record:
        lnb.compute_surface(model, (x, y.clamp(min=1)), lnb.random_directions(model, n=1, seed=0), x=(-1, 1, 3),
                            loss_fn=_warning_loss, client=client)
    assert _said(record, "my loss says so") == 1
    # given before the loss raised on a worker: lost with the run, as the run failed (review s38); a library's
    # DeprecationWarning, hidden in-process, was given at the caller's line and shown
    d1 = lnb.random_directions(model, n=1, seed=0)
    for runner in (None, client):
        with pytest.warns(UserWarning, match="about to fail") as record, \
                pytest.raises(LandscapeError, match="loss too large"):
            lnb.compute_surface(model, (x, y.clamp(min=1)), d1, x=(-60, 60, 5), loss_fn=_failing_loss, client=runner)
        assert _said(record, "about to fail") == 1
        with warnings.catch_warnings(record=True) as record:
            warnings.resetwarnings()  # Python's defaults: DeprecationWarning shown where given in __main__ only
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
            lnb.compute_surface(model, (x, y.clamp(min=1)), d1, x=(-1, 1, 3), loss_fn=_deprecated_loss, client=runner)
        assert _said(record, "deprecated") == 0


def test_a_store_resumed_on_another_runner_records_the_last_runs_runner(client, data, tmp_path):
    m = _model()
    d = lnb.random_directions(m, n=1, seed=2)
    store = tmp_path / "r.zarr"
    stop = threading.Event()
    first = lnb.compute_surface(m, data, d, x=(-1, 1, 6), store=store, tile=1, cancel=stop,
                                callbacks=[lambda event: stop.set()])  # in-process, cancelled after a tile
    assert first.provenance["runner"] == "in-process" and not first.is_complete
    resumed = lnb.compute_surface(m, data, d, x=(-1, 1, 6), store=store, client=client)
    assert lnb.load_surface(store).provenance["runner"] == resumed.provenance["runner"]
    assert resumed.provenance["runner"].startswith("dask")


def test_a_worker_error_names_the_tile_and_the_surface(client, data, tmp_path):
    torch.manual_seed(0)
    m = FarOutFails(limit=0.3)
    d = lnb.random_directions(m, n=1, seed=2)
    store = tmp_path / "s.zarr"
    with pytest.raises(LandscapeError, match=r"raised FloatingPointError: .*too far out") as info:
        lnb.compute_surface(m, data, d, x=(-2, 2, 5), client=client, tile=1, store=store)
    key = SurfaceStore.open(store).manifest["key"]
    found = re.search(rf"while evaluating tile \(0, (\d)\) \(1 point: x (\S+)\) of surface {key}\)", str(info.value))
    assert found, str(info.value)
    assert float(found.group(2)) == (-2.0, -1.0, 0.0, 1.0, 2.0)[int(found.group(1))]  # where it failed (trial s46)
    assert isinstance(info.value.__cause__, FloatingPointError)


FAR_MODULE = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)

    def forward(self, x):
        return torch.relu(self.lin(x))


class FarOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.block, self.head = Block(), nn.Linear(6, 3)
        self.register_buffer("start", self.head.weight.detach().clone(), persistent=False)

    def forward(self, x):
        if float((self.head.weight - self.start).abs().max()) > 0.3:
            if getattr(self, "log", None):
                with open(self.log, "a") as f:
                    f.write("raised\\n")
            raise FloatingPointError("weights too far out")
        return self.head(self.block(x))
'''


def test_a_worker_error_names_the_users_function_as_in_process(client, data, tmp_path, monkeypatch):
    """The worker's traceback comes back with code objects that start at the raising line, so the key
    (file, first line, name) missed and the message said "the model, loss_fn or a metric"; now it names
    the forward that raised, as in-process (two forwards in one file: the one above the line)."""
    (tmp_path / "far_models.py").write_text(FAR_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("far_models", None)
    from far_models import FarOut

    torch.manual_seed(0)
    m = FarOut()
    d = lnb.random_directions(m, n=1, seed=2, ignore=None)
    for where in (None, client):
        # in-process the line is named too ("at far_models.py:26 in forward()"); from these workers not always
        with pytest.raises(LandscapeError, match=r"^the model \(FarOut; in FarOut.forward\) raised "
                                                 r"FloatingPointError: weights too far out (\(at far_models\.py:\d+ "
                                                 r"in forward\(\)\) )?\(while evaluating tile"):
            lnb.compute_surface(m, data, d, x=(-2, 2, 5), client=where, tile=1)
    sys.modules.pop("far_models", None)


def test_a_users_error_on_a_worker_is_not_retried_and_keeps_its_traceback(client, data, tmp_path, monkeypatch):
    """A deterministic error of the model ran the tile three times (Dask's retries), logging a worker traceback
    each time; now the task returns it: one raise, its traceback (the user's frame) chained as __cause__."""
    (tmp_path / "far_models.py").write_text(FAR_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("far_models", None)
    from far_models import FarOut

    torch.manual_seed(0)
    m = FarOut()
    m.log = str(tmp_path / "raised.log")
    d = lnb.random_directions(m, n=1, seed=2, ignore=None)
    with pytest.raises(LandscapeError, match=r"^the model \(FarOut; in FarOut.forward\) raised") as info:
        lnb.compute_surface(m, data, d, x=(2, 2.5, 3), client=client, tile=3)  # one tile, every point far out
    assert (tmp_path / "raised.log").read_text().splitlines() == ["raised"]
    cause = info.value.__cause__
    assert isinstance(cause, FloatingPointError)
    frames = __import__("traceback").extract_tb(cause.__traceback__)  # cut to the user's own frame (sent by
    assert frames[0].name == "forward" and frames[0].lineno == FAR_MODULE.splitlines().index(  # value: no file)
        '            raise FloatingPointError("weights too far out")') + 1
    with torch.no_grad():
        m.start.add_(1.0)  # now it raises at the centre: the worker's first-batch check refuses, the cause kept
    with pytest.raises(LandscapeError, match=r"^the model \(FarOut\) raised FloatingPointError") as info:
        lnb.compute_surface(m, data, d, x=(-1, 1, 3), client=client)
    assert isinstance(info.value.__cause__, FloatingPointError)  # the refusal travelled without it
    assert __import__("traceback").extract_tb(info.value.__cause__.__traceback__)[-1].name == "forward"
    sys.modules.pop("far_models", None)


def test_data_factory_runs_on_worker_once_per_worker_not_per_tile(client, data, tmp_path):
    m = make_mlp()
    d = random_dict_dirs(m, 1)
    log = tmp_path / "calls.txt"

    def factory():
        with open(log, "a") as fh:  # runs in a worker process, once per worker that takes tiles
            fh.write(f"{os.getpid()}\n")
        return data

    s = lnb.compute_surface(m, factory, d, x=(-1, 1, 24), client=client, tile=2)  # 12 tiles
    ref = lnb.compute_surface(m, data, d, x=(-1, 1, 24))
    np.testing.assert_allclose(s.loss, ref.loss, rtol=1e-6)
    pids = log.read_text().split()
    assert str(os.getpid()) not in pids
    assert 1 <= len(pids) <= 2 and len(set(pids)) == len(pids)
    assert s.spec["data"]["fingerprint"] == ref.spec["data"]["fingerprint"]


class _StreamWaitingToBeTold(torch.utils.data.IterableDataset):
    """The 97 samples of ``data``; past the first 20 it waits for the file ``told``, which the caller writes when
    it is given the worker's "still reading the stream" warning, and fails after 30 s without it. Reading it is
    said at once (``STREAM_SAY_SECONDS`` 0 on the worker while it runs)."""

    def __init__(self, data, told):
        self.data, self.told = data, str(told)

    def __iter__(self):
        import landscape_nb.data as data_module

        saved, data_module.STREAM_SAY_SECONDS = data_module.STREAM_SAY_SECONDS, 0.0
        try:
            for i, sample in enumerate(zip(*self.data)):
                deadline = time.monotonic() + 30
                while i == 20 and not os.path.exists(self.told):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the caller was not told the stream is still being read")
                    time.sleep(0.05)
                yield sample
        finally:
            data_module.STREAM_SAY_SECONDS = saved


def test_a_stream_built_on_a_worker_says_it_is_still_being_read_while_it_is(client, data, tmp_path):
    """A data factory's stream read on the worker (an endless one runs up to the sample cap, minutes): its "still
    reading the stream" warning stayed in the worker until the probe returned, the caller waiting in silence
    (re-trial s46). It is given here while the worker still reads (the stream waits for the caller to have it),
    once, and the values are the naive ones."""
    from torch.utils.data import DataLoader

    m = _model()
    d = lnb.random_directions(m, n=1, seed=2)
    told, seen = tmp_path / "told", []

    def factory():
        return DataLoader(_StreamWaitingToBeTold(data, told), batch_size=10)

    def show(message, category, *args, **kwargs):
        seen.append(str(message))
        if "still reading the stream" in str(message):
            told.write_text("told")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        s = lnb.compute_surface(m, factory, d, x=(-1, 1, 3), client=client)
    assert sum("still reading the stream" in w for w in seen) == 1, seen
    want = [naive_loss(m, data, d.as_state_dicts(), [a])[0] for a in (-1.0, 0.0, 1.0)]
    np.testing.assert_allclose(s.loss, want, rtol=1e-5)


def _per_process_data(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(97, 6, generator=g), torch.randint(0, 3, (97,), generator=g)


def test_workers_reading_other_data_never_mix_them_into_one_surface(client, tmp_path):
    """A data function that draws without a seed gives each worker other data (a fresh user's run had 25
    points from one worker's data and 56 from the other's, no warning). A worker whose data hash otherwise
    than the probe's refuses its tiles: the run fails saying why, or (a retried tile run where the data
    agree) every point is of one data set, checked against the naive loop on each worker's data."""
    model = _model(delay=0.002)  # tiles spread over both workers
    d = random_dict_dirs(model, 1)

    def factory():  # the worker's own data, as torch.randn without a seed would give
        return _per_process_data(os.getpid())

    try:
        surf = lnb.compute_surface(model, factory, d, x=(-1, 1, 24), client=client, tile=2)
    except LandscapeError as exc:
        addresses = set(client.scheduler_info()["workers"])
        assert re.search(r"the data the Dask worker at (\S+) read hash to", str(exc)), str(exc)
        assert re.search(r"the data the Dask worker at (\S+) read", str(exc)).group(1) in addresses
        assert "seed the data function" in str(exc)
        return
    pids = client.run(os.getpid).values()
    naive = [np.array([naive_loss(model, _per_process_data(pid), d, [a])[0] for a in np.linspace(-1, 1, 24)])
             for pid in pids]
    assert any(np.allclose(surf.loss, want, rtol=1e-5) for want in naive)


def _refuse_once_far_out(marker: str, threshold: float):
    """A metric that refuses (LandscapeError) the first time it sees logits larger than ``threshold``
    (a far grid point), and is the mean top logit after: a deterministic refusal of the package is
    what this stands for (the batch-size trial's), which a retry on an evaluator past it does not repeat."""
    def top_logit(out, y):
        if float(out.abs().max()) > threshold and not os.path.exists(marker):
            open(marker, "w").close()
            raise LandscapeError("refused at a far point")
        return out.max(1).values.mean()
    return top_logit


def test_a_refusal_on_a_worker_is_not_retried_into_a_complete_surface(client, data, tmp_path):
    """Dask retries a task that raises (twice, on any worker): a tile refused by a worker's evaluator ran
    again and succeeded, and the run returned a complete surface without the refusal (a fresh user's
    token-mean loss: 55 of 121 points off). A task returns the refusal instead; the run raises it."""
    model = _model()
    d = random_dict_dirs(model, 1)
    xs = np.linspace(-4, 4, 9)
    tops = []
    with torch.no_grad():
        for a in xs:
            m = __import__("copy").deepcopy(model)
            for name, p in m.named_parameters():
                p.add_(float(a) * d[0][name])
            tops.append(float(m(data[0]).abs().max()))
    threshold = (tops[4] + max(tops)) / 2  # above the centre's (the probe's point), below the farthest
    metric = _refuse_once_far_out(str(tmp_path / "refused"), threshold)
    with pytest.raises(LandscapeError, match="refused at a far point"):
        lnb.compute_surface(model, data, d, x=(-4, 4, 9), client=client, tile=3, metrics={"top": metric})
    assert (tmp_path / "refused").exists()


def test_sigkill_worker_mid_run_still_completes(data):
    c, owned = _without_tests_on_path(lambda: get_client("local", n_workers=2))
    try:
        m = _model(delay=0.01)
        d = lnb.random_directions(m, n=2, seed=0)
        grid = dict(x=(-1, 1, 8), y=(-1, 1, 8), tile=(2, 2))
        pids = c.run(os.getpid)  # address -> pid
        killed = []

        def kill_one(ev):  # the worker holding a finished tile: one that sent this run values
            if not killed:
                holders = sorted({w for key, ws in c.who_has().items() if key.startswith("landscape_nb-tile")
                                  for w in ws})
                os.kill(pids[holders[0]], signal.SIGKILL)
                killed.append(holders[0])

        s = lnb.compute_surface(m, data, d, **grid, client=c, callbacks=[kill_one])
        assert killed and s.is_complete
        ref = lnb.compute_surface(_model(), data, d, **grid)
        np.testing.assert_allclose(s.loss, ref.loss, rtol=1e-6)
        # the killed worker is recorded with the tiles it sent (trial s54b: it was missing), as having left
        workers = s.provenance["workers"]
        assert workers[killed[0]]["left"] is True and workers[killed[0]]["tiles"] >= 1
        alive = set(c.scheduler_info()["workers"])
        assert all(w["left"] is False for addr, w in workers.items() if addr in alive)
        assert sum(w["tiles"] for w in workers.values()) == 16  # 8×8 in tiles of 2×2, each counted once
    finally:
        owned.close()


class HoldsALock(OnlyHere):
    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()  # not picklable


def test_a_model_that_cannot_be_pickled_to_the_workers_is_refused_in_words_before_any_store(client, data, tmp_path):
    """weight_norm (torch.nn.utils.parametrize) raised torch's bare RuntimeError from pickling; now a LandscapeError
    naming the module and the way out (in-process, where the same model computes), and no store is left."""
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), parametrizations.weight_norm(nn.Linear(8, 3)))
    d = lnb.random_directions(m, n=1, seed=0)
    with pytest.raises(LandscapeError, match=r"^the model cannot be sent to the Dask workers: its module '2' "
                                             r"\(ParametrizedLinear\) is parametrized .*\(RuntimeError: Serialization "
                                             r"of parametrized modules .*compute in this process \(client=None"):
        lnb.compute_surface(m, data, d, x=(-1, 1, 5), client=client, store=tmp_path / "w.zarr")
    assert not (tmp_path / "w.zarr").exists()
    here = lnb.compute_surface(m, data, d, x=(-1, 1, 5))
    for a, value in zip(here.x, here.loss):
        with torch.no_grad():
            naive = float(nn.functional.cross_entropy(model_at(m, d, a)(data[0]), data[1]))
        assert value == pytest.approx(naive, rel=1e-5)
    with pytest.raises(LandscapeError, match=r"^the model, data, loss_fn or metrics cannot be pickled .*\(TypeError: "
                                             r"cannot pickle '_thread.lock' object\).*client=None"):
        locked = HoldsALock()
        lnb.compute_surface(locked, data, lnb.random_directions(locked, n=1), x=(-1, 1, 5), client=client)


def test_a_worker_with_several_threads_runs_its_tiles_one_at_a_time_on_its_model_copy(data):
    """A worker process with 4 threads (a user's LocalCluster, ``dask worker --nthreads 4``) ran 4 tiles at once on
    its one model copy, each moving the weights under the others: a complete surface, many points wrong, no
    word. Every point against the naive loop."""
    from distributed import Client, LocalCluster

    cluster = _without_tests_on_path(lambda: LocalCluster(n_workers=1, threads_per_worker=4, processes=True,
                                                          dashboard_address=None, host="127.0.0.1"))
    try:
        with Client(cluster) as c:
            assert list(c.nthreads().values()) == [4]
            m = _model(delay=0.002)  # each pass sleeps: the threads interleave on every tile
            dirs = random_dict_dirs(m, 2)
            s = lnb.compute_surface(m, data, dirs, x=(-1, 1, 7), y=(-1, 1, 6), tile=(1, 1), client=c)
    finally:
        cluster.close()
    assert s.is_complete
    for j, b in enumerate(s.y):
        for i, a in enumerate(s.x):
            assert s.loss[j, i] == pytest.approx(naive_loss(m, data, dirs, (a, b))[0], rel=1e-5), (a, b)


CLIENT_SCRIPT = textwrap.dedent("""
    import sys, time, torch
    from torch import nn
    import landscape_nb as lnb

    class Slow(nn.Module):
        def __init__(self):
            super().__init__(); self.a = nn.Linear(6, 16); self.b = nn.Linear(16, 3)
        def forward(self, x):
            time.sleep(0.02)
            return self.b(torch.relu(self.a(x)))

    if __name__ == "__main__":
        mode, store = sys.argv[1], sys.argv[2]
        torch.manual_seed(0)
        m = Slow()
        g = torch.Generator().manual_seed(1)
        data = torch.randn(50, 6, generator=g), torch.randint(0, 3, (50,), generator=g)
        d = lnb.random_directions(m, n=2, seed=0)
        kw = dict(x=(-1, 1, 6), y=(-1, 1, 6), tile=(2, 2))
        if mode == "clean":
            import numpy as np
            np.save(store, lnb.compute_surface(m, data, d, **kw).loss)
        else:
            cb = lambda ev: print("TILE", ev.tile.index, flush=True)
            lnb.compute_surface(m, data, d, **kw, store=store, client="local" if mode == "dask" else None,
                                n_workers=1, callbacks=[cb])
            print("DONE", flush=True)
""")


def test_kill_client_process_mid_run_then_resume(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(CLIENT_SCRIPT)
    store = tmp_path / "s.zarr"
    proc = subprocess.Popen([sys.executable, str(script), "dask", str(store)], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    n_seen = 0
    for line in proc.stdout:
        n_seen += line.startswith("TILE")
        if n_seen == 3:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert n_seen == 3
    partial = lnb.load_surface(store)
    assert 4 <= partial.n_done < 36  # the first tile is flushed at once; later ones may be buffered (<= 0.5 s)
    rerun = subprocess.run([sys.executable, str(script), "dask", str(store)], capture_output=True, text=True,
                           timeout=300, check=True)
    n_rerun = rerun.stdout.count("TILE")
    assert n_rerun == 9 - partial.n_done // 4
    subprocess.run([sys.executable, str(script), "clean", str(tmp_path / "clean.npy")], check=True, timeout=300)
    np.testing.assert_allclose(lnb.load_surface(store).loss, np.load(tmp_path / "clean.npy"), rtol=1e-6)


def test_cancel_mid_run_is_prompt_and_keeps_finished_tiles(client, data, tmp_path):
    m = _model(delay=0.05)  # ~0.05 s per point, 16 points per tile
    d = lnb.random_directions(m, n=2, seed=0)
    store = tmp_path / "s.zarr"
    grid = dict(x=(-1, 1, 16), y=(-1, 1, 16), tile=(4, 4))
    cancel = threading.Event()
    stamp = {}

    def cb(ev):
        if ev.n_done >= 16 and not cancel.is_set():
            stamp["t"] = time.perf_counter()
            cancel.set()

    s = lnb.compute_surface(m, data, d, **grid, client=client, store=store, callbacks=[cb], cancel=cancel)
    latency = time.perf_counter() - stamp["t"]
    assert latency < 5.0, latency  # measured ~0.1 s; a full tile here takes ~0.8 s per worker
    assert s.provenance["cancelled"] and 0 < s.n_done < 256
    assert lnb.load_surface(store).n_done == s.n_done
    # the workers are free again quickly: the cancelled tasks stopped between points
    t0 = time.perf_counter()
    client.submit(lambda: 1, pure=False).result(timeout=30)
    assert time.perf_counter() - t0 < 5.0
    full = lnb.compute_surface(_model(), data, d, **grid, client=client, store=store)
    ref = lnb.compute_surface(_model(), data, d, x=grid["x"], y=grid["y"])
    assert full.is_complete
    np.testing.assert_allclose(full.loss, ref.loss, rtol=1e-6)


def test_unreachable_address_fails_fast():
    t0 = time.perf_counter()
    with pytest.raises(LandscapeError, match="cannot reach a Dask scheduler"):
        lnb.compute_surface(make_mlp(), (torch.randn(4, 6), torch.zeros(4, dtype=torch.long)),
                            random_dict_dirs(make_mlp(), 1), x=(-1, 1, 3), client="tcp://127.0.0.1:9")
    assert time.perf_counter() - t0 < 30
    with pytest.raises(LandscapeError, match=r"^cannot connect to the Dask scheduler at 'tls://127\.0\.0\.1:9' "
                                             r"\(TLS expects .*a tls:// scheduler needs its certificates"):
        lnb.compute_surface(make_mlp(), (torch.randn(4, 6), torch.zeros(4, dtype=torch.long)),  # distributed's
                            random_dict_dirs(make_mlp(), 1), x=(-1, 1, 3), client="tls://127.0.0.1:9")  # TypeError


def test_cuda_without_gpu_or_dask_cuda_is_clear():
    if torch.cuda.is_available() and importlib.util.find_spec("dask_cuda"):
        pytest.skip("this machine has a GPU and dask-cuda")
    with pytest.raises(LandscapeError, match=r"landscape_nb\[cuda\]|no CUDA GPU"):
        get_client("cuda")


def test_bad_client_value():
    with pytest.raises(LandscapeError, match="expected None"):
        get_client(42)
    for bad in ("given", "localhost", "", 8786):
        with pytest.raises(LandscapeError, match=r"'local'.*'cuda'.*tcp://.*distributed\.Client"):
            parse_client(bad)
    with pytest.raises(LandscapeError, match="needs no Dask client"):
        get_client(None)


@pytest.mark.parametrize("value, kind, address", [
    (None, "in-process", ""), ("in-process", "in-process", ""), ("inprocess", "in-process", ""),
    ("none", "in-process", ""), ("local", "local", ""), ("cuda", "cuda", ""),
    ("tcp://10.0.0.1:8786", "address", "tcp://10.0.0.1:8786"), ("host:8786", "address", "host:8786"),
])
def test_parse_client_reads_every_spelling(value, kind, address):
    assert parse_client(value) == ClientChoice(kind, address)


def test_parse_client_keeps_a_given_client(client):
    choice = parse_client(client)
    assert choice.kind == "given" and choice.client is client
    assert get_client(client) == (client, None)  # never closed here


def test_a_model_module_its_helper_module_and_dataset_class_the_workers_cannot_import_travel_with_the_job(
        client, data, tmp_path, monkeypatch):
    """The model's module travelled with the job where no worker could import it, but a helper module it
    imports (``import lnb_helper_act``) and a Dataset class of the user's did not: 'cannot import module'."""
    (tmp_path / "lnb_helper_act.py").write_text("import torch\n\n\ndef act(x):\n    return torch.tanh(x) * 1.5\n")
    (tmp_path / "lnb_helper_scale.py").write_text("def scale(x):\n    return x * 0.5\n")
    (tmp_path / "lnb_helper_model.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        import lnb_helper_act
        from lnb_helper_scale import scale


        class HelperNet(nn.Module):
            def __init__(self):
                super().__init__()
                torch.manual_seed(0)
                self.a, self.b = nn.Linear(6, 5), nn.Linear(5, 3)

            def forward(self, x):
                return self.b(lnb_helper_act.act(scale(self.a(x))))


        class Pairs(torch.utils.data.Dataset):
            def __init__(self, x, y):
                self.x, self.y = x, y

            def __len__(self):
                return len(self.x)

            def __getitem__(self, i):
                return self.x[i] * 2.0, self.y[i]
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import lnb_helper_model as mod

    m, d = mod.HelperNet(), lnb.random_directions(mod.HelperNet(), n=1, seed=0)
    loader = torch.utils.data.DataLoader(mod.Pairs(*data), batch_size=10)
    got = lnb.compute_surface(m, loader, d, x=(-1, 1, 5), client=client).loss
    with torch.no_grad():
        naive = [float(nn.functional.cross_entropy(model_at(m, d, a)(2.0 * data[0]), data[1]))
                 for a in np.linspace(-1, 1, 5)]
    np.testing.assert_allclose(got, naive, rtol=1e-5)

    # one worker of two can import them: they still travel, or the other's tiles would fail
    def on_path(add: bool, where: str) -> list:
        import sys

        sys.path.insert(0, where) if add else sys.path.remove(where)
        return sorted(k for k in sys.modules if k.startswith("lnb_helper"))

    first = sorted(client.scheduler_info()["workers"])[:1]
    client.run(on_path, True, str(tmp_path), workers=first)
    try:
        surf = lnb.compute_surface(m, loader, d, x=(-1, 1, 21), tile=1, client=client)
    finally:
        assert client.run(on_path, False, str(tmp_path), workers=first) == {first[0]: []}  # none imported
    assert len(surf.provenance["workers"]) == 2  # both ran tiles
    np.testing.assert_allclose(surf.loss[::5], naive, rtol=1e-5)


def test_worker_missing_module_names_it(client, data, tmp_path, monkeypatch):
    mod_dir = tmp_path / "clientonly"
    mod_dir.mkdir()
    (mod_dir / "lnb_clientonly_act.py").write_text("import torch\ndef act(x):\n    return torch.tanh(x)\n")
    monkeypatch.syspath_prepend(str(mod_dir))
    import lnb_clientonly_act

    class UsesClientModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 3)

        def forward(self, x):
            return lnb_clientonly_act.act(self.a(x))

    m = UsesClientModule()
    with pytest.raises(LandscapeError, match="cannot import module 'lnb_clientonly_act'"):
        lnb.compute_surface(m, data, random_dict_dirs(m, 1), x=(-1, 1, 3), client=client)


def _users_module(client, tmp_path, monkeypatch, name: str, source: str):
    """A module of the user's, ``name``, written to ``tmp_path``, imported here and uploaded to the workers."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module(name)
    client.upload_file(str(path))
    return path, mod


def test_a_global_set_in_this_process_that_the_workers_do_not_read_is_refused(client, data, tmp_path, monkeypatch):
    """Workers import the user's modules from their files: ``TEMP = 3`` set here after importing never reached
    them, and the surface was silently of TEMP = 1 (its store even recorded TEMP = 3). Refused before any tile,
    naming the global; equal values on both sides run, equal to the in-process run."""
    path, mod = _users_module(client, tmp_path, monkeypatch, "lnb_worker_globals",
                              "import torch.nn.functional as F\n\nTEMP = 1.0\n\n\ndef temp_ce(o, t):\n"
                              "    return F.cross_entropy(o / TEMP, t)\n")
    m = _model()
    d = random_dict_dirs(m, 1)
    kw = {"x": (-1, 1, 3), "loss_fn": mod.temp_ce}
    np.testing.assert_allclose(lnb.compute_surface(m, data, d, client=client, **kw).loss,
                               lnb.compute_surface(m, data, d, **kw).loss, rtol=1e-6)
    monkeypatch.setattr(mod, "TEMP", 3.0)
    with pytest.raises(LandscapeError, match=r"the Dask worker at \S+ reads other values than this process of "
                                             r"lnb_worker_globals\.TEMP \(module-level globals"):
        lnb.compute_surface(m, data, d, client=client, **kw)
    monkeypatch.setattr(mod, "TEMP", 1.0)

    # one worker of two reads another value (started with another environment): its tiles were of another loss
    workers = sorted(client.scheduler_info()["workers"])
    assert len(workers) == 2

    def set_temp(value):
        import lnb_worker_globals

        lnb_worker_globals.TEMP = value

    client.run(set_temp, 3.0, workers=workers[1:])
    with pytest.raises(LandscapeError, match=rf"the Dask worker at {re.escape(workers[1])} reads other values than "
                                             r"this process of lnb_worker_globals\.TEMP"):
        lnb.compute_surface(m, data, d, client=client, **{**kw, "x": (-1, 1, 41)}, tile=1)
    client.run(set_temp, 1.0, workers=workers[1:])

    # the file edited after the workers imported it: this process reloads it, they run the old code
    path.write_text(path.read_text().replace("o / TEMP", "o * TEMP / 2"))
    importlib.reload(mod)
    kw["loss_fn"] = mod.temp_ce
    with pytest.raises(LandscapeError, match=r"the Dask worker at \S+ runs other code than this process for "
                                             r"lnb_worker_globals\.temp_ce\(\) \(it imported the module before its "
                                             r"file was edited"):
        lnb.compute_surface(m, data, d, client=client, **kw)
    client.upload_file(str(path))  # the workers import the file as it is now: the run goes on, as in-process
    with torch.no_grad():
        naive = [float(mod.temp_ce(model_at(m, lnb.as_directions(m, d), a)(data[0]), data[1])) for a in (-1, 0, 1)]
    np.testing.assert_allclose(lnb.compute_surface(m, data, d, client=client, **kw).loss, naive, rtol=1e-5)


def test_a_worker_started_with_another_environment_variable_the_loss_reads_at_call_time_is_refused(
        client, data, tmp_path, monkeypatch):
    """``os.environ.get("NAME")`` read by the loss at call time, on a worker started with NAME=3: 119 of 225
    points were of another loss, complete and stored (trial s35). Refused naming the variable and the worker."""
    _, mod = _users_module(client, tmp_path, monkeypatch, "lnb_worker_env",
                           "import os\n\nimport torch.nn.functional as F\n\n\ndef env_ce(o, t):\n"
                           "    return F.cross_entropy(o / float(os.environ.get('LNB_WORKER_TEMP', '1')), t)\n")
    m = _model()
    d = random_dict_dirs(m, 1)
    workers = sorted(client.scheduler_info()["workers"])

    def set_env(value):
        import os

        if value is None:
            os.environ.pop("LNB_WORKER_TEMP", None)
        else:
            os.environ["LNB_WORKER_TEMP"] = value

    client.run(set_env, "3", workers=workers[1:])
    try:
        with pytest.raises(LandscapeError, match=rf"the Dask worker at {re.escape(workers[1])} reads other values "
                                                 r"than this process of os\.environ\['LNB_WORKER_TEMP'\]"):
            lnb.compute_surface(m, data, d, x=(-1, 1, 41), tile=1, client=client, loss_fn=mod.env_ce)
    finally:
        client.run(set_env, None, workers=workers[1:])


def test_a_worker_importing_a_folder_of_the_models_modules_name_says_so_not_that_the_model_failed(
        client, data, tmp_path, monkeypatch):
    """A data folder named like the model's module on the workers' path imports as an empty namespace package,
    so the class went by reference and could not be found: the error blamed the model (trial s35)."""
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "lnb_shadowed_defs.py").write_text(
        "from torch import nn\n\n\nclass ShadowNet(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.a = nn.Linear(6, 3)\n\n    def forward(self, x):\n"
        "        return self.a(x)\n")
    (tmp_path / "there" / "lnb_shadowed_defs").mkdir(parents=True)  # a folder, no __init__.py
    monkeypatch.syspath_prepend(str(tmp_path / "here"))
    import lnb_shadowed_defs as mod

    def on_path(add: bool, where: str) -> None:
        import sys

        sys.path.insert(0, where) if add else sys.path.remove(where)
        sys.modules.pop("lnb_shadowed_defs", None)

    client.run(on_path, True, str(tmp_path / "there"))
    try:
        m = mod.ShadowNet()
        with pytest.raises(LandscapeError, match=r"the Dask worker at \S+ could not read the job: its module "
                                                 r"'lnb_shadowed_defs' is the folder\(s\) \[.*there/lnb_shadowed_"
                                                 r"defs'\] \(a namespace package: no __init__.py\), which has no "
                                                 r"'ShadowNet'"):
            lnb.compute_surface(m, data, random_dict_dirs(m, 1), x=(-1, 1, 3), client=client)
    finally:
        client.run(on_path, False, str(tmp_path / "there"))


def test_a_module_edited_after_the_workers_imported_it_says_to_restart_them(client, data, tmp_path, monkeypatch):
    """Trial s59: a class added to the user's module after the (warm) workers imported it was refused telling to
    put its folder first on their PYTHONPATH, while the file named was this process's own: the fix is a restart."""
    src = tmp_path / "lnb_edited_defs.py"
    src.write_text("from torch import nn\n\n\nclass OldNet(nn.Linear):\n    pass\n")

    def on_workers(add: bool, where: str) -> None:
        import importlib
        import sys

        if add:
            sys.path.insert(0, where)
            importlib.import_module("lnb_edited_defs")  # imported by the workers before the edit
        else:
            sys.path.remove(where)
            sys.modules.pop("lnb_edited_defs", None)

    client.run(on_workers, True, str(tmp_path))
    try:
        src.write_text(src.read_text() + "\n\nclass NewNet(nn.Module):\n    def __init__(self):\n"
                       "        super().__init__()\n        self.a = nn.Linear(6, 3)\n\n    def forward(self, x):\n"
                       "        return self.a(x)\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        sys.modules.pop("lnb_edited_defs", None)
        import lnb_edited_defs as mod

        m = mod.NewNet()
        with pytest.raises(LandscapeError, match=r"could not read the job: its module 'lnb_edited_defs' \(.*"
                                                 r"lnb_edited_defs.py\) was imported before 'NewNet' was added to that "
                                                 r"file .* restart the workers \(client.restart\(\)"):
            lnb.compute_surface(m, data, random_dict_dirs(m, 1), x=(-1, 1, 3), client=client)
    finally:
        client.run(on_workers, False, str(tmp_path))
        sys.modules.pop("lnb_edited_defs", None)


def _data_from_a_relative_path():
    return torch.load("lnb_no_such_data_here.pt")


def test_a_data_function_reading_a_relative_path_on_a_worker_says_where_it_ran(client, data):
    """Trial s59: a data function reading "data.pt" on workers started in another folder was told only that no such
    file exists, which the user could see beside them: it says which worker and which working directory."""
    m = _model()
    with pytest.raises(LandscapeError, match=r"reading the data raised FileNotFoundError: .*lnb_no_such_data_here.pt"
                                             r".*; it ran on the Dask worker at \S+, whose working directory is "
                                             r"\S+: give the function an absolute path"):
        lnb.compute_surface(m, _data_from_a_relative_path, random_dict_dirs(m, 1), x=(-1, 1, 3), client=client)


def test_a_closed_client_is_refused_saying_so(client, data):
    """Trial s59: compute_surface(client=c) after c.close() raised Dask's "RuntimeError: IOLoop is closed"."""
    from distributed import Client

    closed = Client(client.scheduler.address, set_as_default=False)
    closed.close()
    m = _model()
    with pytest.raises(LandscapeError, match=r"client=<Client: .*> is closed; expected an open distributed.Client: "
                                             r"make a new one"):
        lnb.compute_surface(m, data, random_dict_dirs(m, 1), x=(-1, 1, 3), client=closed)


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        first, step = (0, 1) if info is None else (info.id, info.num_workers)
        for i in range(first, len(self.x), step):
            yield self.x[i], self.y[i]


def test_a_stream_loaded_by_worker_processes_on_dask_says_why_it_cannot_be_read_there(client, data):
    """A DataLoader with num_workers=2 over a stream works in-process; on Dask its processes cannot start (the
    workers are daemons), which was blamed on the data ("the error is in the data", trial s35)."""
    m = _model()
    loader = torch.utils.data.DataLoader(_Stream(*data), batch_size=32, num_workers=2)
    with pytest.raises(LandscapeError, match=r"^reading the data needs processes for its DataLoader's num_workers=2, "
                                             r"which a Dask worker \(a daemon process\) cannot start; the data "
                                             r"themselves are fine: pass a DataLoader with num_workers=0"):
        lnb.compute_surface(m, loader, random_dict_dirs(m, 1), x=(-1, 1, 3), client=client)
    plain = torch.utils.data.DataLoader(_Stream(*data), batch_size=32)
    np.testing.assert_allclose(lnb.compute_surface(m, plain, random_dict_dirs(m, 1), x=(-1, 1, 3), client=client).loss,
                               lnb.compute_surface(m, loader, random_dict_dirs(m, 1), x=(-1, 1, 3)).loss, rtol=1e-6)


def test_a_worker_drops_only_its_clients_teardown_error_from_the_unraisable_hook(monkeypatch):
    """A local cluster closed mid-task (Ctrl-C) printed "Exception ignored in: Client.__del__ ... RuntimeError:
    IOLoop is closed" from a worker under the CLI's one line (trial s36). Our workers drop that one; any other
    unraisable exception, and that error from anything but a distributed Client's __del__, still reaches the
    hook installed before."""
    import sys
    from types import SimpleNamespace

    import distributed

    from landscape_nb.cluster import quiet_client_teardown

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    quiet_client_teardown()
    quiet_client_teardown()  # a second plugin setup wraps nothing twice

    def unraisable(exc, obj):
        return SimpleNamespace(exc_type=type(exc), exc_value=exc, exc_traceback=None, err_msg=None, object=obj)

    class Mine:
        def __del__(self):
            pass

    teardown = unraisable(RuntimeError("IOLoop is closed"), distributed.Client.__del__)
    others = [unraisable(RuntimeError("IOLoop is closed"), Mine.__del__),
              unraisable(ValueError("IOLoop is closed"), distributed.Client.__del__),
              unraisable(RuntimeError("something else"), distributed.Client.__del__)]
    for u in (teardown, *others):
        sys.unraisablehook(u)
    assert seen == others


COUNTING_MODULE = '''
import torch
from torch import nn


def counting(f):
    calls = 0

    def wrapper(x):
        nonlocal calls
        calls += 1
        return f(x)
    return wrapper


def scale(k):
    def deco(f):
        def wrapper(x):
            return k * f(x)
        return wrapper
    return deco


@counting
def act(x):
    return torch.tanh(x)


first = scale(K1)(torch.relu)
second = scale(2.0)(torch.sigmoid)


class CountingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.a(x)
        return self.b(act(h) + first(h) + second(h))
'''


def test_a_decorators_call_counter_is_state_and_two_wrappers_of_one_decorator_are_told_apart(client, data, tmp_path,
                                                                                            monkeypatch):
    """A decorator counting calls in a ``nonlocal`` was compared as a setting: a rerun refused its own store, and
    every Dask run was refused (the worker's forward had counted more calls). Two functions wrapped by one
    decorator factory, ``scale(K1)(relu)`` and ``scale(2.0)(sigmoid)``, shared one key, so a change of K1 resumed
    stale points, 25.4 off in the review's case (review s38)."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def load(k1):
        return fresh_module(tmp_path, "counting_net", COUNTING_MODULE.replace("K1", k1)).CountingNet()

    model = load("1.0")
    d = lnb.random_directions(model, n=1, seed=0)
    first = lnb.compute_surface(model, data, d, x=(-1, 1, 5), store=tmp_path / "s.zarr")
    assert lnb.compute_surface(model, data, d, x=(-1, 1, 5), store=tmp_path / "s.zarr").provenance[
        "points_from_store"] == 5
    on_dask = lnb.compute_surface(model, data, d, x=(-1, 1, 5), client=client)
    naive = [naive_loss(model, data, d.as_state_dicts(), [a])[0] for a in first.x]
    np.testing.assert_allclose(on_dask.loss, naive, rtol=1e-5)
    np.testing.assert_array_equal(on_dask.loss, first.loss)
    changed = load("3.0")
    with pytest.raises(LandscapeError, match=r"counting_net\.scale\.<locals>\.deco\.<locals>\.wrapper\(\) closure k "
                                             r"differs"):
        lnb.compute_surface(changed, data, d, x=(-1, 1, 5), store=tmp_path / "s.zarr")
