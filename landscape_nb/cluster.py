"""Dask clients: make or connect a client (shipping a job and streaming tiles back: ``dask_runner``).

``parse_client`` is the one place that reads a ``client`` argument, and ``get_client`` is
shared by the API, the CLI and the notebook. ``dask_cuda`` is imported only when
``client="cuda"`` is asked for.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

from distributed import Client, WorkerPlugin

from .errors import LandscapeError
from .process import keep_heap_top, set_threads

CONNECT_TIMEOUT = "5s"


class TorchThreads(WorkerPlugin):
    """Sets torch's intra-op threads on each worker, so workers don't oversubscribe the cores,
    and keeps freed heap top mapped in the worker process (``process.keep_heap_top``)."""

    name = "landscape_nb-torch-threads"

    def __init__(self, n_threads: int):
        self.n_threads = int(n_threads)

    def setup(self, worker) -> None:
        set_threads(self.n_threads)
        keep_heap_top()


class _SchedulerGoneFilter(logging.Filter):
    """Drops the worker's "Failed to communicate with scheduler during heartbeat" record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "during heartbeat" not in record.getMessage()


class OwnedWorkers(WorkerPlugin):
    """Worker processes of a cluster made here stay quiet about what the process that made it
    handles: they ignore SIGINT, and do not log a heartbeat that found the scheduler gone.

    Ctrl-C at a terminal (or a Jupyter kernel interrupt) signals the whole process group: each
    worker printed a KeyboardInterrupt traceback, while the process that made the cluster
    closes them anyway; and a worker whose heartbeat raced that close printed a 30-line
    traceback under the CLI's one-line "interrupted". A scheduler lost mid-run is reported by
    the runner (``ClusterLost``). Not for workers you start yourself (``dask worker``), whose
    Ctrl-C and logs are theirs. A worker takes it when it joins, about a second after it is
    spawned."""

    name = "landscape_nb-owned-workers"

    def setup(self, worker) -> None:
        import threading

        if threading.current_thread() is threading.main_thread():  # a nanny's worker runs its loop there
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        quiet = logging.getLogger("distributed.worker")
        if not any(isinstance(f, _SchedulerGoneFilter) for f in quiet.filters):
            quiet.addFilter(_SchedulerGoneFilter())
        quiet_client_teardown()


def _client_teardown(unraisable) -> bool:
    """Whether ``unraisable`` is the worker's own client (made by ``get_client`` for the run's cancel
    ``distributed.Event``) failing to close in its ``__del__`` once the worker's event loop has closed."""
    return (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "IOLoop is closed"
            and getattr(unraisable.object, "__qualname__", None) == "Client.__del__"
            and getattr(unraisable.object, "__module__", "").startswith("distributed"))


def quiet_client_teardown() -> None:
    """Drop the "Exception ignored in: Client.__del__ ... RuntimeError: IOLoop is closed" traceback that a worker
    closed mid-task prints when its client is collected (a CLI run given Ctrl-C printed it under its one
    "interrupted" line, trial s36); every other unraisable exception reaches the hook installed before."""
    before = sys.unraisablehook
    if getattr(before, "quiet_client_teardown", False):
        return

    def hook(unraisable) -> None:
        if not _client_teardown(unraisable):
            before(unraisable)

    hook.quiet_client_teardown = True
    sys.unraisablehook = hook


class OwnedCluster:
    """A client and the cluster landscape_nb made for it; closing closes both."""

    def __init__(self, client: Client, cluster):
        self.client, self.cluster = client, cluster

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:  # None: the caller's cluster object, only our client to close
            self.cluster.close()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextlib.contextmanager
def _worker_environ():
    """Dask's nannies give workers ``MALLOC_TRIM_THRESHOLD_=65536``; setting it at all turns off
    glibc's adaptive mmap threshold, so every activation tensor was a fresh mmap and page
    faults (resnet20-digits: 324 vs 108 ms/point). Unset it, also in this process's environment
    while the workers start: a Dask cluster made earlier here (by the user, another library) leaves
    it there and spawned workers inherit it. (Our own malloc setting goes through ``TorchThreads``.)"""
    import dask

    left = os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            yield
    finally:
        if left is not None:
            os.environ["MALLOC_TRIM_THRESHOLD_"] = left


def unguarded_main_line() -> int | None:
    """The line of the running script (``__main__`` with a file) whose top-level code is starting
    worker processes outside an ``if __name__ == "__main__":`` block, or None when guarded (or
    not a script: a notebook, ``python -c``). Worker processes are spawned and re-import
    ``__main__``, so unguarded code would run again in every worker."""
    import ast
    import multiprocessing

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        return 0  # already inside a worker re-running the script
    if not path or not str(path).endswith(".py"):
        return None
    frame, line = sys._getframe(1), None
    while frame is not None:  # the outermost frame of the script's own top-level code
        if frame.f_globals.get("__name__") == "__main__" and frame.f_code.co_name == "<module>":
            line = frame.f_lineno
        frame = frame.f_back
    if line is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "__name__" in ast.unparse(node.test):
            if node.body[0].lineno <= line <= max(getattr(n, "end_lineno", n.lineno) for n in node.body):
                return None
    return line


def _check_main_guard() -> None:
    line = unguarded_main_line()
    if line is not None:
        where = f"{getattr(sys.modules['__main__'], '__file__', 'the script')}, line {line}" if line else "the script"
        raise LandscapeError(
            f"client='local' starts worker processes that re-run the script ({where}) because its code is not "
            "under a main guard; put it under `if __name__ == \"__main__\":` (or use client=None in-process)"
        )


@contextlib.contextmanager
def _main_without_a_missing_file():
    """While worker processes are spawned: a ``__main__`` whose ``__file__`` is no file (a script read
    from stdin, ``<stdin>``) without it. multiprocessing's spawn re-runs ``__main__`` from that path in
    each worker, which failed ("Nanny failed to start" after a FileNotFoundError); functions defined
    there reach the workers by value (cloudpickle) anyway."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or os.path.isfile(path) or getattr(main, "__spec__", None) is not None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


@contextlib.contextmanager
def _closing_if_interrupted():
    """Close a cluster whose start was interrupted (Ctrl-C, SIGTERM, an error), so that distributed's
    exit hook does not trip over its half-started workers ("Exception ignored in atexit callback:
    close_clusters ... AssertionError: Status.init")."""
    from distributed.deploy.spec import SpecCluster

    before = set(SpecCluster._instances)
    try:
        yield
    except BaseException:
        for cluster in set(SpecCluster._instances) - before:
            with contextlib.suppress(Exception):
                cluster.close(timeout=5)
            cluster.shutdown_on_close = False  # its processes are daemonic: they end with this one
        raise


def local_cluster(n_workers: int | None = None, threads_per_worker: int | None = None):
    """An embedded ``LocalCluster`` of worker processes bound to 127.0.0.1.

    Raises ``LandscapeError`` when called from a script's top-level code outside an
    ``if __name__ == "__main__":`` guard (``unguarded_main_line``)."""
    from distributed import LocalCluster

    _check_main_guard()

    n_cpu = _cpu_count()
    n_workers = int(min(n_cpu, 8) if n_workers is None else n_workers)
    if n_workers < 1:
        raise LandscapeError(f"n_workers={n_workers}; expected at least 1")
    torch_threads = threads_per_worker or max(1, n_cpu // n_workers)
    with _worker_environ(), _main_without_a_missing_file(), _closing_if_interrupted():
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
    client = Client(cluster)
    client.register_plugin(TorchThreads(torch_threads))
    client.register_plugin(OwnedWorkers())
    return OwnedCluster(client, cluster)


def cuda_cluster(n_workers: int | None = None):
    """``dask_cuda.LocalCUDACluster``: one worker per visible GPU."""
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise LandscapeError(
            "client='cuda' needs dask-cuda, which is not installed; install it with "
            "`pip install landscape_nb[cuda]`, or use client='local' for CPU workers"
        ) from None
    import torch

    if not torch.cuda.is_available():
        raise LandscapeError(
            "client='cuda' was asked for but torch sees no CUDA GPU on this machine; use client='local', "
            "or install a CUDA build of torch on a machine with a GPU"
        )
    kwargs = {} if n_workers is None else {"CUDA_VISIBLE_DEVICES": list(range(int(n_workers)))}
    with _worker_environ(), _closing_if_interrupted():
        cluster = LocalCUDACluster(host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                   silence_logs=logging.ERROR, **kwargs)
    client = Client(cluster)
    client.register_plugin(OwnedWorkers())
    return OwnedCluster(client, cluster)


IN_PROCESS = (None, "in-process", "inprocess", "none")
CLIENT_SPELLINGS = (
    "None or 'in-process' (also 'inprocess', 'none'): no Dask, tiles run in this process; "
    "'local': a LocalCluster of worker processes made here; 'cuda': a LocalCUDACluster, one worker per GPU; "
    "a scheduler address such as 'tcp://127.0.0.1:8786' or 'host:8786'; a distributed.Client; "
    "or a cluster object (LocalCluster, dask_jobqueue.SLURMCluster, ...)"
)


@dataclass(frozen=True)
class ClientChoice:
    """A parsed ``client`` argument.

    ``kind``: "in-process", "local", "cuda", "address" (``address`` holds it), "given"
    (``client`` holds the caller's ``distributed.Client``, which landscape_nb never closes) or
    "cluster" (``client`` holds the caller's cluster object; a client of it is made and closed here).
    """

    kind: str
    address: str = ""
    client: Any = None


def parse_client(value) -> ClientChoice:
    """Read a ``client`` argument; every accepted spelling is listed in ``CLIENT_SPELLINGS``.

    Parameters
    ----------
    value : None, str, ClientChoice or distributed.Client
        What the user passed as ``client`` (API), ``--client`` (CLI) or ``client=`` (Explorer).

    Returns
    -------
    ClientChoice

    Raises
    ------
    LandscapeError
        For anything else, naming every accepted spelling.
    """
    if isinstance(value, ClientChoice):
        return value
    if isinstance(value, Client):
        if value.status in ("closing", "closed"):  # "RuntimeError: IOLoop is closed" from deep in Dask (trial s59)
            raise LandscapeError(f"client={value!r} is {value.status}; expected an open distributed.Client: make a "
                                 "new one (Client(address)), or pass the scheduler's address as client='tcp://...'")
        return ClientChoice("given", client=value)
    if not isinstance(value, str) and hasattr(value, "scheduler_address"):  # LocalCluster, SLURMCluster, ...
        return ClientChoice("cluster", client=value)
    if value in IN_PROCESS:
        return ClientChoice("in-process")
    if value in ("local", "cuda"):
        return ClientChoice(value)
    if isinstance(value, str) and ":" in value:  # tcp://host:port, host:port, tls://..., ucx://...
        return ClientChoice("address", address=value)
    raise LandscapeError(f"client={value!r}; expected {CLIENT_SPELLINGS}")


def _check_address(address: str) -> None:
    """Refuse a scheduler address Dask cannot parse (no port, an ``http://`` scheme, a port that is no number)
    before a ``Client`` is built: its own ValueError came as a traceback, and the half-made client then
    waited 10 s to close (trial s39)."""
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import backends

    try:
        scheme, location = parse_address(address)
        if scheme not in backends:
            raise ValueError(f"unknown address scheme {scheme!r}; Dask's are {sorted(backends)}")
        if scheme in ("tcp", "tls", "ws", "wss"):
            parse_host_port(location)
    except ValueError as exc:
        raise LandscapeError(
            f"client={address!r} is not a Dask scheduler address ({exc}); expected 'tcp://host:port', e.g. "
            "'tcp://127.0.0.1:8786' (the address `dask scheduler` prints, or the dashboard's host with the "
            "scheduler's port, 8786 by default)") from None


def get_client(client: Any = "local", *, n_workers: int | None = None) -> tuple[Client, OwnedCluster | None]:
    """A ``distributed.Client`` for ``client`` and what to close afterwards (None if the caller owns it).

    ``"local"``: embedded LocalCluster; ``"cuda"``: LocalCUDACluster; ``"tcp://host:port"``
    (or any scheduler address): connect, failing within a few seconds when unreachable;
    a ``Client``: used as is and never closed here; a cluster object (``LocalCluster``,
    ``dask_jobqueue.SLURMCluster``, ...): a client of it, closed afterwards, the cluster not.
    Spellings: ``parse_client``.
    """
    choice = parse_client(client)
    if choice.kind == "given":
        return choice.client, None
    if choice.kind == "cluster":
        c = Client(choice.client)
        return c, OwnedCluster(c, None)
    if choice.kind == "local":
        owned = local_cluster(n_workers)
        return owned.client, owned
    if choice.kind == "cuda":
        owned = cuda_cluster(n_workers)
        return owned.client, owned
    if choice.kind == "address":
        _check_address(choice.address)
        try:
            c = Client(choice.address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise LandscapeError(
                f"cannot reach a Dask scheduler at {choice.address!r} within {CONNECT_TIMEOUT} "
                f"({type(exc).__name__}); check the address (tcp://host:port) and that the scheduler is running, "
                "or use client='local' (CLI: --client local)"
            ) from None
        except TypeError as exc:  # tls:// without a security context: distributed's "TLS expects a ssl_context"
            raise LandscapeError(
                f"cannot connect to the Dask scheduler at {choice.address!r} ({exc}); a tls:// scheduler needs its "
                "certificates: pass your own distributed.Client(address, security=Security(...)) as client="
            ) from None
        return c, OwnedCluster(c, None)  # our client of their scheduler: close it, leave the scheduler
    raise LandscapeError(
        f"client={client!r} runs in-process and needs no Dask client; expected 'local', 'cuda', "
        "a scheduler address like 'tcp://127.0.0.1:8786', or a distributed.Client"
    )
