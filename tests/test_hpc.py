"""HPC paths: a dask-jobqueue cluster object passed as ``client=``, and a scheduler started
with the ``dask`` CLI. Real processes on 127.0.0.1; no batch system needed.

A SLURM job of dask-jobqueue is a bash script whose ``#SBATCH`` lines are comments to bash,
so running that script here is what the job would do on a compute node: start a worker
that joins the cluster's scheduler.
"""
import copy
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import landscape_nb as lnb

jobqueue = pytest.importorskip("dask_jobqueue")
from distributed import Client  # noqa: E402

from landscape_nb.cluster import TorchThreads  # noqa: E402

REPO = Path(lnb.__file__).resolve().parent.parent
WAIT_S = 90


def make_model():
    torch.manual_seed(4)
    return nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 3))


def make_data():
    g = torch.Generator().manual_seed(8)
    return torch.randn(64, 5, generator=g), torch.randint(0, 3, (64,), generator=g)


def naive_surface(model, data, directions, xs, ys):
    """Loop over the grid: copy the model, add a·d1 + b·d2 to each parameter, one full pass."""
    inputs, targets = data
    d1, d2 = directions.as_state_dicts()
    loss = np.empty((len(ys), len(xs)))
    acc = np.empty_like(loss)
    for j, b in enumerate(ys):
        for i, a in enumerate(xs):
            m = copy.deepcopy(model).eval()
            with torch.no_grad():
                for name, p in m.named_parameters():
                    p.add_(float(a) * d1[name] + float(b) * d2[name])
                out = m(inputs)
            loss[j, i] = float(nn.functional.cross_entropy(out, targets))
            acc[j, i] = float((out.argmax(1) == targets).float().mean())
    return loss, acc


def check_surface(surf, model, data, directions):
    assert surf.is_complete
    loss, acc = naive_surface(model, data, directions, surf.x, surf.y)
    np.testing.assert_allclose(surf.loss, loss, rtol=1e-5)
    np.testing.assert_allclose(surf.metrics["accuracy"], acc, atol=1e-6)


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def start(cmd, log_path):
    """A process in its own session, so stop() ends it and every child it spawned (nannies)."""
    log = open(log_path, "wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=str(REPO),
                            start_new_session=True)


def stop(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass


def wait_for_workers(address_or_cluster, n, procs, logs):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for p, log in zip(procs, logs):
            if p.poll() is not None:
                pytest.fail(f"{p.args} exited with {p.returncode}:\n{Path(log).read_text()[-3000:]}")
        try:
            with Client(address_or_cluster, timeout="5s") as c:
                c.wait_for_workers(n, timeout=5)
                return
        except (OSError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"no {n} worker(s) within {WAIT_S} s:\n" + "\n".join(Path(l).read_text()[-2000:] for l in logs))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_cluster(**kw):
    return jobqueue.SLURMCluster(
        cores=1, processes=1, memory="4GB", walltime="00:20:00", queue="cpu", account="proj-123",
        job_script_prologue=["export OMP_NUM_THREADS=3"],  # TorchThreads(1) must win over it
        scheduler_options={"host": "127.0.0.1", "dashboard_address": None}, **kw)


def test_slurm_job_script_builds_without_a_batch_system():
    with slurm_cluster(job_extra_directives=["--gres=gpu:1"]) as cluster:
        script = cluster.job_script()
        address = cluster.scheduler_address
    lines = script.splitlines()
    assert lines[0].startswith("#!") and "bash" in lines[0]
    for directive in ("#SBATCH -p cpu", "#SBATCH -A proj-123", "#SBATCH -t 00:20:00", "#SBATCH --cpus-per-task=1",
                      "#SBATCH --gres=gpu:1"):
        assert directive in lines, directive
    assert any(line.startswith("#SBATCH --mem=") for line in lines)
    assert "export OMP_NUM_THREADS=3" in lines
    worker = [line for line in lines if "dask_worker" in line or "dask worker" in line]
    assert len(worker) == 1
    assert worker[0].split()[0] == sys.executable  # the workers run this environment's Python
    assert address.startswith("tcp://127.0.0.1:") and address in worker[0]
    assert "--nthreads 1" in worker[0]


def test_pbs_job_script_builds_without_a_batch_system():
    with jobqueue.PBSCluster(cores=2, processes=1, memory="4GB", walltime="00:20:00", queue="workq",
                             scheduler_options={"host": "127.0.0.1", "dashboard_address": None}) as cluster:
        script = cluster.job_script()
        address = cluster.scheduler_address
    lines = script.splitlines()
    assert "#PBS -q workq" in lines and "#PBS -l walltime=00:20:00" in lines
    assert any(line.startswith("#PBS -l select=1:ncpus=2:mem=") for line in lines)
    assert any(address in line and "--nthreads 2" in line for line in lines)


def test_compute_surface_on_a_slurm_cluster_whose_job_runs_here(tmp_path):
    model, data = make_model(), make_data()
    d = lnb.random_directions(model, n=2, seed=3)
    with slurm_cluster() as cluster:
        job = tmp_path / "job.sh"
        job.write_text(cluster.job_script())
        log = tmp_path / "job.log"
        proc = start(["bash", str(job)], log)  # what sbatch would run on a compute node
        try:
            wait_for_workers(cluster, 1, [proc], [log])
            surf = lnb.compute_surface(model, data, d, x=(-1, 1, 4), y=(-0.5, 0.5, 3), client=cluster)
            check_surface(surf, model, data, d)
            with Client(cluster) as client:  # a Client of it works the same, and stays open after
                client.register_plugin(TorchThreads(1))  # as the README advises for your own workers
                assert set(client.run(torch.get_num_threads).values()) == {1}
                again = lnb.compute_surface(model, data, d, x=(-1, 1, 4), y=(-0.5, 0.5, 3), client=client)
                assert client.status == "running"
            np.testing.assert_array_equal(again.loss, surf.loss)
            assert cluster.status.name == "running"  # the cluster object stays the caller's
        finally:
            stop(proc)


def test_compute_surface_on_a_scheduler_started_with_the_dask_cli(tmp_path):
    dask_cli = str(Path(sys.executable).parent / "dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = [tmp_path / "scheduler.log", tmp_path / "worker.log"]
    procs = [start([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], logs[0])]
    try:
        procs.append(start([dask_cli, "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--nworkers", "1",
                            "--no-dashboard", "--death-timeout", "60"], logs[1]))
        wait_for_workers(address, 1, procs, logs)
        model, data = make_model(), make_data()
        d = lnb.random_directions(model, n=2, seed=9)
        with Client(address, timeout="5s") as observer:
            def n_clients():  # clients from outside (workers open their own for Events; not ours to close)
                names = observer.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.clients))
                return sum(not n.startswith("Client-worker-") for n in names)

            before = n_clients()
            surf = lnb.compute_surface(model, data, d, x=(-0.8, 0.8, 3), y=(-1, 1, 5), client=address)
            check_surface(surf, model, data, d)
            deadline = time.monotonic() + 10  # the client made for the address is closed again
            while n_clients() != before and time.monotonic() < deadline:
                time.sleep(0.2)
            assert n_clients() == before
    finally:
        for p in reversed(procs):
            stop(p)
