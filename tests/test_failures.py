"""Cluster failures never give a silent partial: real `dask scheduler` / `dask worker` processes,
killed with SIGKILL mid-run; the run raises ``ClusterLost`` naming what is stored, and a rerun
resumes to the values of a naive loop.

Every process is killed at the end of its test; should the test process itself die, workers exit
after 30 s without a scheduler (``--death-timeout``) and schedulers after 300 s idle."""
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import torch
from torch import nn

import landscape_nb as lnb
from landscape_nb.errors import LandscapeError
from landscape_nb.runners import ClusterLost
from landscape_nb.store import load_surface

from conftest import naive_loss

ROOT = Path(__file__).resolve().parents[1]
DASK = str(Path(sys.executable).parent / "dask")
GRID = dict(x=(-1, 1, 8), y=(-1, 1, 8), tile=2)  # 16 tiles of 4 points
N_POINTS = 64
WAIT = 60  # seconds any process may take to come up


class SlowMLP(nn.Module):
    """A few ms per forward, so a run is still going when a process is killed."""

    def __init__(self, delay: float = 0.01):
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)
        self.delay = delay

    def forward(self, x):
        time.sleep(self.delay)
        return self.b(torch.tanh(self.a(x)))


def _model():
    torch.manual_seed(0)
    return SlowMLP()


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(30, 6, generator=g), torch.randint(0, 3, (30,), generator=g)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


class Procs:
    """`dask scheduler` / `dask worker` processes of one test; all killed at the end."""

    def __init__(self, tmp_path):
        self.tmp_path, self.procs = tmp_path, []
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"

    def _start(self, args, name):
        log = open(self.tmp_path / f"{name}-{len(self.procs)}.log", "w")
        p = subprocess.Popen([DASK, *args], env=_env(), stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def scheduler(self):
        return self._start(["scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                            "--dashboard-address", "127.0.0.1:0", "--no-show", "--idle-timeout", "300s"], "scheduler")

    def worker(self):
        p = self._start(["worker", self.address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
                         "--no-dashboard", "--death-timeout", "30"], "worker")
        self.wait_for_workers(1)
        return p

    def wait_for_workers(self, n):
        from distributed import Client

        deadline = time.monotonic() + WAIT
        while True:
            try:
                with Client(self.address, timeout="5s") as c:
                    c.wait_for_workers(n, timeout=max(1, deadline - time.monotonic()))
                    return
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=WAIT)


@pytest.fixture
def procs(tmp_path):
    pr = Procs(tmp_path)
    try:
        yield pr
    finally:
        pr.kill_all()


@pytest.fixture
def short_wait():
    with dask.config.set({"landscape-nb.worker-wait": "3s"}):
        yield


def _kill_after(n_tiles: int, proc_or_pid):
    """A callback that SIGKILLs a process once ``n_tiles`` tiles arrived (the rest are in flight)."""
    seen = {"n": 0, "killed": None}

    def cb(ev):
        seen["n"] += 1
        if seen["n"] == n_tiles:
            pid = proc_or_pid() if callable(proc_or_pid) else proc_or_pid.pid
            os.kill(pid, signal.SIGKILL)
            seen["killed"] = pid

    return cb, seen


def _check_naive(model, d, surf):
    dirs = d.as_state_dicts()
    assert surf.complete and surf.n_missing == 0
    for j, b in enumerate(surf.y):
        for i, a in enumerate(surf.x):
            want, _ = naive_loss(model, _data(), dirs, (a, b))
            assert surf.loss[j, i] == pytest.approx(want, rel=1e-5, abs=1e-6), (i, j)


def _stored_from_message(exc, store) -> int:
    m = re.search(rf"(\d+) of {N_POINTS} points are stored in '{re.escape(str(store))}'; rerunning .* resumes",
                  str(exc))
    assert m, str(exc)
    return int(m.group(1))


def test_killing_the_only_worker_raises_then_a_rerun_resumes(procs, tmp_path, short_wait, caplog):
    procs.scheduler()
    worker = procs.worker()
    model, d, store = _model(), lnb.random_directions(_model(), n=2, seed=3), tmp_path / "s"
    cb, seen = _kill_after(3, worker)
    t0 = time.monotonic()
    with pytest.raises(ClusterLost, match="lost all its workers and got none back within 3 s") as info:
        lnb.compute_surface(model, _data(), d, **GRID, client=procs.address, store=store, callbacks=[cb])
    assert seen["killed"] == worker.pid and time.monotonic() - t0 < WAIT
    said = [r.getMessage() for r in caplog.records if "waiting for a Dask worker" in r.getMessage()]
    # the wait for a worker to come back is said once, whether the tiles were lost with the worker or wait on the
    # scheduler for one (that wait was silent: trial s59)
    assert len(said) == 1 and f"`dask worker {procs.address}`" in said[0] and "keeps its finished" in said[0], said
    n_stored = _stored_from_message(info.value, store)
    assert n_stored == load_surface(store).n_done and 3 * 4 <= n_stored < N_POINTS

    procs.worker()  # a new worker: the same call resumes
    surf = lnb.compute_surface(model, _data(), d, **GRID, client=procs.address, store=store)
    assert surf.provenance["points_computed"] == N_POINTS - n_stored
    _check_naive(model, d, surf)


def test_killing_the_scheduler_raises_then_a_rerun_on_a_new_one_resumes(procs, tmp_path, short_wait, caplog):
    scheduler = procs.scheduler()
    procs.worker()
    model, d, store = _model(), lnb.random_directions(_model(), n=2, seed=4), tmp_path / "s"
    cb, seen = _kill_after(3, scheduler)
    with pytest.raises(ClusterLost, match="scheduler at tcp://127.0.0.1") as info:
        lnb.compute_surface(model, _data(), d, **GRID, client=procs.address, store=store, callbacks=[cb])
    said = [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]
    assert said and all("waiting for the Dask scheduler at tcp://127.0.0.1" in m and "to come back" in m
                        for m in said), said  # not "start workers with `dask worker`" (trial s35)
    # the client's own 5 s, not "at most 28 s more"; and the workers exit with the scheduler (trial s39)
    assert all("the Dask client gives up on it 5 s after losing it" in m and "`dask worker` processes too" in m
               for m in said), said
    n_stored = _stored_from_message(info.value, store)
    assert n_stored == load_surface(store).n_done and 3 * 4 <= n_stored < N_POINTS

    procs.kill_all()  # the orphaned worker too
    procs.procs.clear()
    procs.scheduler()
    procs.worker()
    surf = lnb.compute_surface(model, _data(), d, **GRID, client=procs.address, store=store)
    assert surf.provenance["points_computed"] == N_POINTS - n_stored
    _check_naive(model, d, surf)


def test_all_workers_dying_raises(procs, tmp_path, short_wait):
    procs.scheduler()
    workers = [procs.worker(), procs.worker()]
    procs.wait_for_workers(2)
    model, d, store = _model(), lnb.random_directions(_model(), n=2, seed=7), tmp_path / "s"
    seen = {"n": 0}

    def cb(ev):
        seen["n"] += 1
        if seen["n"] == 3:
            for w in workers:
                os.kill(w.pid, signal.SIGKILL)

    with pytest.raises(ClusterLost, match="lost all its workers") as info:
        lnb.compute_surface(model, _data(), d, **GRID, client=procs.address, store=store, callbacks=[cb])
    assert _stored_from_message(info.value, store) == load_surface(store).n_done < N_POINTS


def test_one_of_two_workers_killed_the_other_finishes_the_run(procs, tmp_path, short_wait):
    procs.scheduler()
    first = procs.worker()
    procs.worker()
    procs.wait_for_workers(2)
    model, d, store = _model(), lnb.random_directions(_model(), n=2, seed=8), tmp_path / "s"
    cb, seen = _kill_after(3, first)
    surf = lnb.compute_surface(model, _data(), d, **GRID, client=procs.address, store=store, callbacks=[cb])
    assert seen["killed"] == first.pid and first.wait(timeout=WAIT) == -signal.SIGKILL
    assert surf.provenance["points_computed"] == N_POINTS and not surf.provenance["cancelled"]
    _check_naive(model, d, surf)


def test_a_lost_run_without_store_keeps_its_points_in_the_exception_and_resumes_from_them(procs, short_wait):
    """Without a store the points computed were lost with the cluster ("not kept"); now ClusterLost.surface holds
    them and resume= computes only the rest (here in-process, as after giving up on the cluster)."""
    procs.scheduler()
    worker = procs.worker()
    model, d = _model(), lnb.random_directions(_model(), n=2, seed=5)
    cb, _ = _kill_after(2, worker)
    with pytest.raises(ClusterLost, match=rf"(\d+) of {N_POINTS} points were computed, kept in this exception's "
                                          r"\.surface: rerun the same call with resume=exc\.surface") as info:
        lnb.compute_surface(model, _data(), d, **GRID, client=procs.address, callbacks=[cb])
    partial = info.value.surface
    assert 0 < partial.n_done < N_POINTS and f"{partial.n_done} of {N_POINTS}" in str(info.value)
    surf = lnb.compute_surface(model, _data(), d, **GRID, resume=partial)
    assert surf.provenance["points_resumed"] == partial.n_done
    assert surf.provenance["points_computed"] == N_POINTS - partial.n_done
    np.testing.assert_array_equal(surf.loss[partial.done_mask], partial.loss[partial.done_mask])
    _check_naive(model, d, surf)


def test_a_run_waiting_for_its_first_worker_says_so_then_gives_up_with_one_line(procs, short_wait, caplog):
    """A cluster with no worker yet (batch jobs still queued) is waited for, up to landscape-nb.start-wait; the
    wait was silent, so a CLI run looked hung for as long."""
    procs.scheduler()
    model, d = _model(), lnb.random_directions(_model(), n=2, seed=5)
    message = rf"the Dask cluster at {procs.address} had no worker within 4 s of the start \(landscape-nb.start-wait\)"
    with (dask.config.set({"landscape-nb.start-wait": "4s"}), caplog.at_level("WARNING", "landscape_nb.cluster"),
          pytest.raises(ClusterLost, match=message)):
        lnb.compute_surface(model, _data(), d, **GRID, client=procs.address)
    said = [r.getMessage() for r in caplog.records if "waiting for a Dask worker" in r.getMessage()]
    assert len(said) == 1 and f"start workers with `dask worker {procs.address}`" in said[0]
    # below worker-wait (3 s here) it waited worker-wait and said the cluster "lost all its workers" (trial s39)
    with (dask.config.set({"landscape-nb.start-wait": "1s"}),
          pytest.raises(ClusterLost, match=message.replace("within 4 s", "within 1 s"))):
        lnb.compute_surface(model, _data(), d, **GRID, client=procs.address)


def test_local_cluster_worker_killed_is_restarted_and_the_run_completes(tmp_path, caplog):
    """client='local', n_workers=1: the nanny restarts the killed worker; the tiles lost with it
    (and the job shipped to it) are resubmitted, and the surface is complete and right."""
    from distributed import default_client

    model, d, store = _model(), lnb.random_directions(_model(), n=2, seed=6), tmp_path / "s"
    pids = []

    def worker_pid():
        pids.extend(default_client().run(os.getpid).values())
        return pids[0]

    cb, seen = _kill_after(3, worker_pid)
    caplog.set_level("INFO", logger="landscape_nb.cluster")
    surf = lnb.compute_surface(model, _data(), d, **GRID, client="local", n_workers=1, store=store, callbacks=[cb])
    assert len(pids) == 1 and seen["killed"] == pids[0]
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)  # it really died
    assert any("resubmitting" in r.getMessage() for r in caplog.records)
    assert not surf.provenance["cancelled"]
    _check_naive(model, d, surf)
    assert load_surface(store).complete


class KillsItsWorker(SlowMLP):
    """SIGKILLs the Dask worker running it (as the kernel's OOM killer does) at its first forward there; at every
    one where ``flag`` is None, else only until ``flag`` exists (it makes it before dying)."""

    def __init__(self, flag: str | None):
        super().__init__(delay=0.0)
        self.flag = flag

    def forward(self, x):
        from distributed import get_worker

        try:
            get_worker()
        except ValueError:  # in this process
            return super().forward(x)
        if self.flag is None or not os.path.exists(self.flag):
            if self.flag is not None:
                Path(self.flag).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x)


def test_a_worker_dying_at_the_jobs_first_check_is_retried_then_named(tmp_path):
    """The first check of the job on a worker (the model on its first batch) was not retried as tiles are: a
    worker killed there (out of memory, trial s39) ended the run with "the cluster lost all its workers before
    the run started", though the nanny had restarted it. It is retried; a job that kills every worker it runs on
    is named, with the likely causes."""
    torch.manual_seed(0)
    model, data = KillsItsWorker(str(tmp_path / "died-once")), _data()
    d = lnb.random_directions(model, n=1, seed=0)
    surf = lnb.compute_surface(model, data, d, x=(-1, 1, 5), client="local", n_workers=1)
    assert (tmp_path / "died-once").exists()  # the first check really killed its worker
    np.testing.assert_allclose(surf.loss, lnb.compute_surface(model, data, d, x=(-1, 1, 5)).loss, rtol=1e-6)

    model.flag = None
    with pytest.raises(LandscapeError, match=r"the Dask worker running the job's first check \(the model on its "
                       r"first batch\) died each of the 3 times it was tried .*out of memory") as info:
        lnb.compute_surface(model, data, d, x=(-1, 1, 5), client="local", n_workers=1)
    # no lost cluster (the CLI's exit 3, "the store resumes"): the job kills every worker, a rerun too (trial s59)
    assert not isinstance(info.value, ClusterLost)


CLI_MODULE = textwrap.dedent("""
    import os, signal, time
    import torch
    from torch import nn

    DIE_AFTER = {"calls": int(os.environ.get("LNB_TEST_DIE_AFTER", "0"))}

    class DiesAfter(nn.Module):
        '''Kills its own (worker) process on the N-th forward: a worker lost mid-run.'''

        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)
            self.calls = 0

        def forward(self, x):
            float(self.a.weight.sum())  # a Python float of the weights: vmap refuses, so a call is one point
            self.calls += 1
            limit = DIE_AFTER["calls"]  # read at import (a dict: not compared, as the environment read here is)
            if limit and self.calls >= limit:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.005)
            return self.b(torch.tanh(self.a(x)))

    def make():
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(1)
        return DiesAfter(), (torch.randn(30, 6, generator=g), torch.randint(0, 3, (30,), generator=g))
""")


def test_cli_exits_3_with_one_line_then_resumes(procs, tmp_path):
    (tmp_path / "dies.py").write_text(CLI_MODULE)
    procs.scheduler()
    env = {**_env(), "LNB_TEST_DIE_AFTER": "40", "DASK_LANDSCAPE_NB__WORKER_WAIT": "3s"}
    log = open(tmp_path / "dying-worker.log", "w")
    p = subprocess.Popen([DASK, "worker", procs.address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
                          "--no-dashboard", "--death-timeout", "30"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    procs.procs.append(p)
    procs.wait_for_workers(1)
    store = tmp_path / "s"
    argv = [sys.executable, "-m", "landscape_nb.cli", "compute", "dies:make", "--grid", "8x8", "--tile", "2",
            "--client", procs.address, "--store", str(store)]
    out = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 3, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("landscape-nb: error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    assert re.search(rf"lost all its workers.*\d+ of {N_POINTS} points are stored in .*resumes", errors[0])

    env.pop("LNB_TEST_DIE_AFTER")
    procs.worker()
    out = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    counts = re.search(rf"{N_POINTS} points: (\d+) from the store at .*, (\d+) computed", out.stdout)
    assert counts and int(counts[1]) > 0 and int(counts[1]) + int(counts[2]) == N_POINTS, out.stdout
    surf = load_surface(store)
    sys.path.insert(0, str(tmp_path))
    try:
        import dies
        from landscape_nb.schemes import make_directions

        model, data = dies.make()
        _, d = make_directions("random", model, None, ndim=2, norm="filter", ignore="biasbn", seed=0, data=data,
                               loss_fn=None)
    finally:
        sys.path.remove(str(tmp_path))
    dirs = d.as_state_dicts()
    assert surf.complete
    for j, b in enumerate(surf.y):
        for i, a in enumerate(surf.x):
            want, _ = naive_loss(model, data, dirs, (a, b))
            assert surf.loss[j, i] == pytest.approx(want, rel=1e-5, abs=1e-6)
