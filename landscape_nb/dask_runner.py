"""Dask execution of a job: ship it to the workers once, stream tiles back (``DaskRunner``).

Clients (``parse_client``, ``get_client``, local and CUDA clusters) are in ``landscape_nb.cluster``.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import logging
import math
import sys
import threading
import time
import types
import uuid
from collections import OrderedDict
from typing import Iterator, Sequence

import cloudpickle
import numpy as np
from distributed import Client, Event, as_completed, get_worker

from .errors import LandscapeError, one_line, recording_warnings, warn_user
from .evaluate import Cancelled, PointEvaluator
from .grid import Grid, Tile
from .runners import ClusterLost, DataInfo, Job, describe, library_versions, raise_from_user_code
from .spec import globals_fingerprint, users_module
from .splits import is_splits

logger = logging.getLogger("landscape_nb.cluster")  # the runner's messages keep the cluster's logger name


# ------------------------------------------------------------- shipping ----

def _module_names(job: Job, follow: bool = True) -> set[str]:
    """Modules whose code the job's objects need: the model's classes, the loss, metrics and data (a
    Dataset's class, inside a DataLoader too, and its collate_fn), and the user's modules those import
    (``helpers`` in ``import helpers`` or ``from helpers import act``), transitively."""
    names = {type(m).__module__ for m in job.model.modules()}
    splits = tuple(job.data.values()) if is_splits(job.data) else ()  # data={"train": factory, ...}
    for obj in (job.loss_fn, job.data, job.bn_data, *splits):
        parts = [obj, getattr(obj, "collate_fn", None)]
        while hasattr(parts[-2], "dataset") and len(parts) < 20:  # DataLoader(Subset(ds)), e.g. random_split's
            parts[-1:-1] = [parts[-2].dataset]
        for part in parts:
            if part is not None and not isinstance(part, (tuple, list, dict)):
                names.add(getattr(part, "__module__", None) or type(part).__module__)
    if isinstance(job.metrics, dict):
        names.update(getattr(f, "__module__", "") for f in job.metrics.values() if callable(f))
    todo = [n for n in names if n in sys.modules and users_module(n)] if follow else []
    while todo:
        for value in list(vars(sys.modules[todo.pop()]).values()):
            name = (value.__name__ if isinstance(value, types.ModuleType) else
                    getattr(value, "__module__", None) if isinstance(value, (type, types.FunctionType)) else None)
            if isinstance(name, str) and name not in names and name in sys.modules and users_module(name):
                names.add(name)
                todo.append(name)
    return {n for n in names if n and n != "__main__" and n in sys.modules}


def _importable(names: Sequence[str]) -> dict[str, bool]:
    out = {}
    for n in names:
        try:
            out[n] = importlib.util.find_spec(n) is not None
        except (ImportError, ValueError):
            out[n] = False
    return out


def pack_job(client: Client, job: Job) -> bytes:
    """cloudpickle the job; modules that any worker now in the cluster cannot import (a notebook's or a
    test's) go by value, so that every worker runs the same code whichever is asked."""
    names = sorted(_module_names(job))
    try:
        on_workers = client.run(_importable, names, on_error="return") if names else {}
    except Exception:  # noqa: BLE001 - no answer from the cluster as a whole: ask one worker, as before
        on_workers = {"one": client.submit(_importable, names, pure=False).result()}
    # a worker that did not answer (an error) may not import anything: by value, whoever runs the tiles
    answers = [can if isinstance(can, dict) else {} for can in on_workers.values()]
    by_value = [n for n in names if not all(can.get(n, False) for can in answers)]
    try:
        payload = _dumps(job, by_value)
    except Exception:  # noqa: BLE001 - a module sent whole holds what cannot be pickled (a lock): as before, the
        direct = _module_names(job, follow=False)  # worker then names the module it lacks
        try:
            payload = _dumps(job, [n for n in by_value if n in direct])
        except Exception as exc:  # pickle raises many kinds (RuntimeError, TypeError, ...)
            raise LandscapeError(_unpicklable(job, exc)) from exc
    if len(payload) > 64 * 2**20:
        logger.warning("the job sent to each Dask worker is %.0f MiB (modules sent by value because a worker cannot "
                       "import them: %s, with all their globals); put them on the workers' PYTHONPATH to send less",
                       len(payload) / 2**20, ", ".join(by_value) or "none")
    return payload


def _unpicklable(job: Job, exc: Exception) -> str:
    """Why the job cannot travel to the workers, naming parametrized modules (``torch.nn.utils.parametrize``:
    weight_norm, spectral_norm, orthogonal), which torch refuses to pickle."""
    from torch.nn.utils import parametrize

    said = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    model = job.model
    found = [f"{name or 'the model'!r} ({type(m).__name__})" for name, m in model.named_modules()
             if parametrize.is_parametrized(m)]
    if found:
        return (f"the model cannot be sent to the Dask workers: its module{'s' if len(found) > 1 else ''} "
                f"{', '.join(found[:4])} {'is' if len(found) == 1 else 'are'} parametrized "
                "(torch.nn.utils.parametrize, e.g. weight_norm or spectral_norm), which torch does not pickle "
                f"({said}); expected a picklable model: compute in this process (client=None, CLI without --client), "
                "where parametrized models are evaluated as they are")
    return (f"the model, data, loss_fn or metrics cannot be pickled to send them to the Dask workers ({said}); "
            "expected picklable objects: compute in this process (client=None, CLI without --client), or make "
            "them picklable (define classes and functions at module level, not in a function or a lambda "
            "closing over a lock, a file or a generator)")


def _dumps(job: Job, by_value: list[str]) -> bytes:
    for name in by_value:
        cloudpickle.register_pickle_by_value(sys.modules[name])
    try:
        return cloudpickle.dumps(job)
    finally:
        for name in by_value:
            cloudpickle.unregister_pickle_by_value(sys.modules[name])


_CACHE_SIZE = 2


#: held by every task that builds or runs an evaluator: a worker with several threads (``nthreads``,
#: ``processes=False``, ``dask worker --nthreads 4``) ran tiles at once on its one model copy, each moving the
#: weights under the other, which gave a complete surface with a point in two wrong (0.18 off on a 1.6–1.8
#: surface). Tiles in a process run one at a time: one single-threaded worker per core is the fast layout.
_ONE_AT_A_TIME = threading.Lock()


def _worker_evaluator(token: str, payload: bytes) -> PointEvaluator:
    """Build this worker's evaluator for a job once; later tiles of the job reuse it."""
    try:
        holder = get_worker()
    except ValueError:  # not on a worker (e.g. client.run_on_scheduler); use a module cache
        holder = sys.modules[__name__]
    cache = getattr(holder, "_landscape_nb_evaluators", None)
    if cache is None:
        cache = OrderedDict()
        setattr(holder, "_landscape_nb_evaluators", cache)
    if token not in cache:
        try:
            job = cloudpickle.loads(payload)
        except ModuleNotFoundError as exc:
            raise LandscapeError(
                f"{_this_worker()} cannot import module {exc.name!r}, which the model, loss or data needs "
                f"({exc}); install it in the workers' environment or put it on their PYTHONPATH (a worker that "
                "joined after the run started gets the job as the first workers could read it)"
            ) from None
        except AttributeError as exc:  # "Can't get attribute 'Net' on <module 'netdefs' ...>": blamed on the model
            raise LandscapeError(_unpickled_elsewhere(exc)) from None
        # said on the client, once each (describe): in a worker's log the user of a remote cluster never saw an
        with recording_warnings([], portable=True, each=_telling(holder, token)) as said:  # eigen-map's, a loss's
            ev = job.evaluator()  # batches' or their own (s36); told as given too: reading a stream takes minutes
        ev.said_on_worker = said  # the tiles' warnings join it
        # what the user's code reads from its modules here, and its code as loaded here (_check_code)
        ev.code_globals = globals_fingerprint(job.model, job.loss_fn, job.metrics, loaded=True)
        cache[token] = ev
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
    return cache[token]


def _said_topic(token: str) -> str:
    """The Dask event topic a worker tells the warnings it gives building a job's evaluator on (``_telling``)."""
    return f"landscape_nb-said-{token}"


def _telling(holder, token: str):
    """A function that tells the caller of job ``token`` a ``(message, category)`` as the worker ``holder`` gives
    it (``Worker.log_event``; the caller's ``DaskRunner._await_probe`` reads them), or None off a worker: an
    endless stream built by a data factory on the worker said "still reading" only in the worker's log, and the
    caller waited in silence until the sample cap refused it (re-trial s46)."""
    if not hasattr(holder, "log_event"):
        return None

    def tell(said: tuple) -> None:
        message, category = said
        name = category.__name__ if category.__module__ == "builtins" else "UserWarning"
        try:
            holder.log_event(_said_topic(token), {"message": message, "category": name})
        except Exception as exc:  # noqa: BLE001 - telling is a courtesy: the warning comes back with the result
            logger.debug("a warning could not be told to the caller as it came: %s", exc)

    return tell


def _told_warning(msg) -> tuple[str, type[Warning]] | None:
    """``(message, category)`` of an event ``_telling`` logged; None for anything else."""
    import builtins

    if not isinstance(msg, dict) or not isinstance(msg.get("message"), str):
        return None
    category = getattr(builtins, str(msg.get("category")), UserWarning)
    return msg["message"], category if isinstance(category, type) and issubclass(category, Warning) else UserWarning


def _forget(token: str, dask_worker=None) -> None:
    """Drop a finished job's evaluator (its model copy and data) from a worker."""
    cache = getattr(dask_worker, "_landscape_nb_evaluators", None)
    if cache is not None:
        cache.pop(token, None)


@dataclasses.dataclass(frozen=True)
class _Refused:
    """A ``LandscapeError`` a task returns rather than raises: Dask retries a task that raises (on this or
    another worker), and a retry on an evaluator past the check that refused (the batch-size trial's, run
    once per worker) or on a worker that has not met it would compute the tile and drop the refusal."""

    error: LandscapeError

    def __reduce__(self):  # with the user's exception it came from (``__cause__``) and that one's traceback
        import pickle

        cause = None if self.error.__cause__ is None else _Raised(self.error.__cause__)
        try:
            pickle.dumps(cause)
        except Exception:  # noqa: BLE001 - a cause pickle cannot rebuild: the refusal travels without it
            cause = None
        return _refused_again, (self.error, cause)


def _refused_again(error: LandscapeError, cause: _Raised | None) -> _Refused:
    if cause is not None:
        error.__cause__ = cause.error
    return _Refused(error)


class _Raised:
    """An exception of the user's code (model, loss, metric) a task returns rather than raises: Dask would run
    the tile twice more, failing the same way and logging a worker traceback each time. Its traceback travels
    with it (tblib), so this process names the function that raised it (``statecheck.culprit``). Memory
    errors still raise: Dask's retry on another worker may fit (``_returned``)."""

    def __init__(self, error: BaseException):
        self.error = error

    def __reduce__(self):
        from tblib import Traceback

        tb = self.error.__traceback__  # an exception pickles without it
        return _raised_again, (self.error, None if tb is None else Traceback(tb).to_dict())


def _raised_again(error: BaseException, tb: dict | None) -> _Raised:
    from tblib import Traceback

    return _Raised(error if tb is None else error.with_traceback(Traceback.from_dict(tb).as_traceback()))


def _returned(exc: Exception) -> _Raised:
    """``exc`` as a task's value; raised again here when it is a memory error or cannot be pickled."""
    import pickle

    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        raise exc
    raised = _Raised(exc)
    try:
        pickle.loads(pickle.dumps(raised))
    except Exception:  # noqa: BLE001 - an exception type pickle cannot rebuild: Dask's own path reports it
        raise exc from None
    return raised


def _unpickled_elsewhere(exc: AttributeError) -> str:
    """Why a job whose classes pickle by reference to a module of the user's cannot be read on a worker: the
    worker's module of that name lacks one (another file, or a folder of that name on its path, which imports
    as an empty namespace package: trial s35)."""
    import re

    found = re.search(r"Can't get attribute '([^']+)' on <module '([^']+)'", str(exc))
    if not found:
        return f"{_this_worker()} could not read the job ({type(exc).__name__}: {exc})"
    name, module = found.groups()
    there = sys.modules.get(module)
    where = (getattr(there, "__file__", None) or
             f"the folder(s) {list(getattr(there, '__path__', []))} (a namespace package: no __init__.py)")
    if _defined_in_file(getattr(there, "__file__", None), name):  # edited since this worker imported it (trial s59:
        return (f"{_this_worker()} could not read the job: its module {module!r} ({where}) was imported before "  # told
                f"{name!r} was added to that file ({exc}); a worker imports a module once: restart the workers "  # to
                "(client.restart(), or restart the dask worker processes) to read the edited file")  # fix PYTHONPATH)
    return (f"{_this_worker()} could not read the job: its module {module!r} is {where}, which has no {name!r} "
            f"({exc}); the workers must import the same {module} as this process: put its folder first on their "
            "PYTHONPATH, or rename a folder or file of that name on their path")


def _defined_in_file(path: str | None, name: str) -> bool:
    """Whether the source file at ``path`` defines ``name`` (a class, function or top-level assignment of that
    name) as it reads now."""
    import re

    if not path or not str(path).endswith(".py"):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return False
    last = re.escape(name.split(".")[-1])
    return re.search(rf"^\s*(?:class|def|async\s+def)\s+{last}\b|^{last}\s*[:=]", text, re.MULTILINE) is not None


def _this_worker() -> str:
    try:
        return f"the Dask worker at {get_worker().address}"
    except ValueError:
        return "a Dask worker"


OPTIMIZE = "<python -O level>"  # in _check_code's expected items: code entries compare only at the same level
VERSIONS = "<library versions>"  # in _check_code's expected items: the client's `library_versions`


def _say_versions(ev: PointEvaluator, expected: tuple) -> None:
    """Warn (once, in the worker's warnings the client gives) where this worker runs other library versions than
    the client (``expected``, `library_versions` there): other kernels and defaults may give its points other
    values than the client's or another worker's, beyond rounding. Not refused: a cluster's image often lags a
    patch release. The workers' torch was neither checked nor recorded (trial s39)."""
    here = dict(library_versions())
    differ = [(name, here.get(name), given) for name, given in expected if here.get(name) != given]
    if not differ:
        return
    message = (f"landscape_nb: {_this_worker()} runs {', '.join(f'{n} {v}' for n, v, _ in differ)} where this process "
               f"runs {', '.join(f'{n} {v}' for n, _, v in differ)}: its points come from other library code (kernels, "
               "defaults), which may give other values than this process would, beyond rounding; install the same "
               "versions on the workers (the surface's provenance['workers'] records each worker's), or compute in "
               "this process (client=None)")
    if (message, UserWarning) not in ev.said_on_worker:
        ev.said_on_worker.append((message, UserWarning))


def _check_code(ev: PointEvaluator, expected: tuple) -> None:
    """Refuse a worker whose user code (as it loaded it) or module-level globals read by the model, loss or
    metrics differ from the client's (``spec.globals_fingerprint(..., loaded=True)``, both sides' entries).

    Workers import the user's modules from their files: one that imported a module before its file was
    edited runs the old code until restarted, a value set in the client after importing never reaches them,
    and a worker started with another environment (``SCALE = float(os.environ[...])``) reads another value;
    each gave a surface of another model, or one mixing two, with nothing to show it. Every worker checks
    the job when it builds its evaluator (the probe's and each tile's)."""
    here, there = dict(expected), ev.code_globals
    _say_versions(ev, here.pop(VERSIONS, ()))
    if here.pop(OPTIMIZE, None) != str(sys.flags.optimize):  # -O drops asserts: other bytecode, the same model
        here = {k: v for k, v in here.items() if not k.endswith("()")}
    both = [k for k in here if k in there]
    differ = [k for k in both if here[k] != there[k]]
    if not differ:
        return
    code, values = [k for k in differ if k.endswith("()")], [k for k in differ if not k.endswith("()")]
    said = []
    if code:
        said.append(f"runs other code than this process for {', '.join(code[:6])} (it imported the module before "
                    "its file was edited, or this process did, or it runs another Python version: restart the "
                    "workers, e.g. client.restart(), or importlib.reload the module here, so both run the file as it "
                    "is now)")
    if values:
        said.append(f"reads other values than this process of {', '.join(values[:6])} (module-level globals: a "
                    "worker imports your modules from its files, so a value set in this process after importing "
                    "them does not reach it, and one started with other environment variables computes its own: "
                    "set it in the module's file and restart the workers, pass it as an argument (a "
                    "functools.partial, or an attribute of the model or loss), or run in this process, client=None)")
    raise LandscapeError(f"{_this_worker()} " + "; and it ".join(said) + ": its points would be of another model "
                         "or loss than the one this process holds, so the run is refused (points already stored are "
                         "kept)")


def _probe(token: str, payload: bytes, expected: tuple = ()) -> DataInfo | _Refused | _Raised:
    with _ONE_AT_A_TIME:
        try:
            ev = _worker_evaluator(token, payload)
            _check_code(ev, expected)
            return describe(ev)
        except LandscapeError as exc:
            return _Refused(exc)
        except Exception as exc:  # noqa: BLE001 - the user's model, loss or metric on the first batch
            return _returned(exc)


def _settled(token: str, dask_worker=None) -> DataInfo | None:
    """What this worker's evaluator for the job settled on; None where it ran no tile of it."""
    ev = getattr(dask_worker, "_landscape_nb_evaluators", {}).get(token)
    return None if ev is None else describe(ev)


@dataclasses.dataclass(frozen=True)
class _TileDone:
    """A tile's values, and the worker that computed them with what its evaluator had settled on then: the run's
    record of each worker (``provenance["workers"]``) keeps one that died or left before the end."""

    values: np.ndarray
    worker: str
    batch_size: int | None
    points_per_pass: int | None
    versions: tuple


def _eval_tile(token: str, payload: bytes, coords: np.ndarray, event_name: str,
               fingerprint: str | None = None, expected: tuple = ()) -> _TileDone | _Refused | _Raised | None:
    """The tile's values (`_TileDone`); None if cancelled; ``_Refused`` for a ``LandscapeError``, which this
    worker's evaluator then gives every later tile of the job too; ``_Raised`` for another exception of the
    user's code."""
    with _ONE_AT_A_TIME:
        try:
            ev = _worker_evaluator(token, payload)
        except LandscapeError as exc:
            return _Refused(exc)
        except Exception as exc:  # noqa: BLE001 - the user's code on a first batch (a worker joined late)
            return _returned(exc)
        if getattr(ev, "_refused", None) is not None:
            return _Refused(ev._refused)
        try:
            _check_code(ev, expected)  # a worker that joined after the probe, or another than the probe's
            values = _evaluate_tile(ev, coords, event_name, fingerprint)
        except LandscapeError as exc:
            ev._refused = exc
            return _Refused(exc)
        except Exception as exc:  # noqa: BLE001 - the user's model, loss or metric: the same on a retry
            return _returned(exc)
        if values is None:
            return None
        info = describe(ev)
        return _TileDone(values, get_worker().address, info.batch_size, info.points_per_pass, info.versions)


def _evaluate_tile(ev: PointEvaluator, coords: np.ndarray, event_name: str, fingerprint: str | None) -> np.ndarray | None:
    if fingerprint is not None and ev.data_fingerprint != fingerprint:
        raise LandscapeError(
            f"the data the Dask worker at {get_worker().address} read hash to {ev.data_fingerprint}, those the "
            f"run's first worker read to "
            f"{fingerprint} (the run's data fingerprint): each worker builds the data itself, and a data function "
            "that draws without a seed (e.g. torch.randn), a Dataset that augments at random in __getitem__ (e.g. "
            "train-time transforms) or reads something that differs per process gives each worker other data, so "
            "the surface would mix data sets; expected the same data on every worker: seed the data function "
            "(torch.manual_seed, a torch.Generator), evaluate on a Dataset without random transforms, or pass the "
            "tensors themselves")
    stop = Event(event_name)
    last = [0.0, False]

    def should_stop() -> bool:  # ask the scheduler at most every 0.2 s
        now = time.monotonic()
        if now - last[0] > 0.2:
            last[0], last[1] = now, stop.is_set()
        return last[1]

    try:
        with recording_warnings(ev.said_on_worker, portable=True):  # e.g. a Hessian's, at its first product
            return ev.evaluate(coords, should_stop=should_stop)
    except Cancelled:
        return None


def _budget(name: str, default: str) -> float:
    """Seconds from dask config ``landscape-nb.<name>`` (env ``DASK_LANDSCAPE_NB__<NAME>``), else ``default``."""
    import dask
    from dask.utils import parse_timedelta

    value = dask.config.get(f"landscape-nb.{name}", default)
    try:
        return float(parse_timedelta(value, default="s"))
    except (KeyError, ValueError, TypeError):
        raise LandscapeError(f"dask config landscape-nb.{name}={value!r}; expected a duration such as '30s', "
                             "'2 minutes' or a number of seconds") from None


WORKER_WAIT = "30s"  # how long a run waits for a worker when the cluster has none (config: landscape-nb.worker-wait)
START_WAIT = "10 minutes"  # how long a run waits for its first worker (config: landscape-nb.start-wait)
PROBE_POLL = 1.0  # seconds between looks for the warnings the probe's worker tells while it runs (_await_probe)
MAX_RECOVERIES = 3  # resubmissions of the remaining tiles after lost inputs or a reconnect, per run


class DaskRunner:
    """Runs tiles as Dask tasks: the job travels once per worker, tiles carry only coordinates.

    Failure semantics: an exception of the user's code comes back as the task's value (``_Raised``:
    the same error on a retry) and is raised as one line; a task that raises otherwise (a memory error,
    an unpicklable exception) is retried ``retries`` times; a task whose worker dies is rerun by Dask
    on another worker (Dask's ``distributed.scheduler.allowed-failures``); when tasks or the scattered
    job are lost (the only worker died, or the client reconnected to the scheduler), the remaining tiles
    are resubmitted, up to ``MAX_RECOVERIES`` times, once a worker is present again within
    ``worker_wait`` seconds. Past that budget, or when the client loses the scheduler for good,
    ``runners.ClusterLost`` is raised.
    ``run`` never ends early unless the user cancelled.
    """

    def __init__(self, client: Client, retries: int = 2, worker_wait: float | None = None):
        self.client = client
        self.retries = retries
        self.worker_wait = _budget("worker-wait", WORKER_WAIT) if worker_wait is None else float(worker_wait)
        self._said_waiting_at = -math.inf  # when a wait for a worker was last said (_say_waiting_for_worker)
        self.start_wait = _budget("start-wait", START_WAIT)  # as given, below worker-wait too (trial s39)
        self.token = uuid.uuid4().hex
        self.said_live: list[tuple[str, type[Warning]]] = []  # the probe's warnings given as they came (_await_probe)
        self.payload = None
        self.packed: bytes | None = None
        self.fingerprint: str | None = None  # of the data the probe's worker read (prepare)
        self.expected_code: tuple = ()  # spec.globals_fingerprint(..., loaded=True) here: every worker's must match
        # address -> [tiles computed, (batch_size, points_per_pass, versions) at its last tile]
        self.tiles_by_worker: dict[str, list] = {}
        self.probed: DataInfo | None = None  # the job's first check (prepare)
        self.description = f"dask ({len(client.scheduler_info().get('workers', {}))} workers)"
        self.dashboard_link = client.dashboard_link
        self.address = getattr(client.scheduler, "address", "") or "(unknown address)"

    def prepare(self, job: Job) -> DataInfo:
        """Ship the job and run its first check (the model, loss and metrics on the first batch) on a worker: what
        the data are (``DataInfo``). A worker that dies there (out of memory, trial s39) is replaced and the check
        tried again, ``retries`` times, as tiles are; then ``ClusterLost`` names it."""
        self._wait_for_workers(self.start_wait, first=True)  # batch-queued workers (dask-jobqueue) may take a while
        for attempt in itertools.count():  # each attempt returns, continues (at most retries times) or raises
            fut = None
            try:
                if attempt == 0:
                    code = globals_fingerprint(job.model, job.loss_fn, job.metrics, loaded=True)
                    self.expected_code = (*code.items(), (OPTIMIZE, str(sys.flags.optimize)),
                                          (VERSIONS, library_versions()))
                    self.packed = pack_job(self.client, job)
                    self.payload = self.client.scatter(self.packed, broadcast=True, hash=False)
                else:
                    self._recover()  # a worker back (within worker-wait), the job shipped again
                fut = self.client.submit(_probe, self.token, self.payload, self.expected_code, pure=False,
                                         retries=self.retries)
                info = self._await_probe(fut)
                if isinstance(info, (_Refused, _Raised)):
                    raise info.error
                self.fingerprint = info.fingerprint  # every worker's tiles must come from these data (_eval_tile)
                self.probed = info  # what `settled` starts from where no worker that ran tiles answers
                return info
            except ClusterLost:
                raise
            except Exception as exc:  # the model, loss or a metric failing on the worker's first batch
                died = fut is not None and (_lost(fut, exc) or type(exc).__name__ == "KilledWorker")
                if not self._connected():
                    raise ClusterLost(self._why_lost(waited=False) + f" before the run started ({type(exc).__name__})"
                                      ) from None
                if died and attempt < self.retries:
                    logger.warning("the Dask worker running the job's first check died (%s); trying again on "
                                   "another (%d of %d)", type(exc).__name__, attempt + 1, self.retries)
                    continue
                if died:  # "the cluster lost all its workers", of a nanny's that restarted it (trial s39); not a
                    # lost cluster (exit 3, "the store resumes"): the job kills every worker, so a rerun would too
                    raise LandscapeError(  # (trial s59)
                        f"the Dask worker running the job's first check (the model on its first batch) died each of "
                        f"the {attempt + 1} times it was tried ({type(exc).__name__}); a worker that dies there ran "
                        "out of memory (its memory_limit, or the machine's: the model and its data must fit in one "
                        "worker; give the workers more memory, or compute in this process, client=None) or crashed "
                        "in native code; the worker's log says which") from None
                if fut is None:  # packing or shipping the job failed, not the user's code on a worker
                    raise
                raise_from_user_code(exc, job)

    def _await_probe(self, fut):
        """The probe's result; meanwhile the warnings its worker gives building the job (``_telling``: "still
        reading the stream" of a data factory's stream on the worker) are given here as they come, each once,
        and kept in ``said_live`` (``compute_surface`` does not give them again)."""
        while True:
            try:
                return fut.result(timeout=PROBE_POLL)
            except TimeoutError:
                pass
            finally:
                self._tell_said()

    def _tell_said(self) -> None:
        try:
            events = self.client.get_events(_said_topic(self.token))
        except Exception:  # noqa: BLE001 - a scheduler without events: the warnings come with the result
            return
        for _, msg in events:
            said = _told_warning(msg)
            if said is not None and said not in self.said_live:
                self.said_live.append(said)
                warn_user(*said)

    # ---------------------------------------------------------- health ----

    def _n_workers(self) -> int:
        """Workers the scheduler knows now (one small identity call, without the per-worker details)."""
        try:
            info = self.client.scheduler_info(n_workers=0)
            return int(info.get("n_workers", len(info.get("workers", {}))))
        except Exception:  # a client between connections
            return 0

    def _connected(self) -> bool:
        return self.client.status == "running"

    def _why_lost(self, waited: bool = True) -> str:
        within = f" within {self.worker_wait:g} s" if waited else ""
        if self.client.status in ("closing", "closed"):
            return f"lost the connection to the Dask scheduler at {self.address} and could not reconnect"
        if not self._connected():
            return f"lost the connection to the Dask scheduler at {self.address}" + (
                f" and it did not come back{within}" if waited else "")
        if self._n_workers() == 0:
            return f"the Dask cluster at {self.address} lost all its workers" + (
                f" and got none back{within}" if waited else "")
        return f"tasks of the run were lost by the Dask cluster at {self.address} (a worker died with the job's data)"

    def _say_waiting_for_worker(self, seconds_left: float) -> None:
        """Said once a wait: the round's watch and `_wait_for_workers` after it may wait for the same worker."""
        now = time.monotonic()
        if now - self._said_waiting_at < self.worker_wait:
            return
        self._said_waiting_at = now
        logger.warning("waiting for a Dask worker at %s (at most %.3g s more; start workers with `dask worker %s`, "
                       "or stop this run: a store keeps its finished tiles)", self.address, seconds_left, self.address)

    def _wait_for_workers(self, seconds: float | None = None, *, first: bool = False) -> None:
        """Until the client is connected and the cluster has a worker, at most ``seconds`` (``worker_wait``);
        ``first``: the run's first wait, for workers that may not have started yet (``start_wait``)."""
        seconds = self.worker_wait if seconds is None else seconds
        start = time.monotonic()
        deadline, said = start + seconds, False
        while not (self._connected() and self._n_workers() > 0):
            if not said and time.monotonic() - start > 2.0:  # a silent wait reads as a hang
                said = True
                if self._connected():
                    self._say_waiting_for_worker(deadline - time.monotonic())
                else:  # the scheduler went, not the workers (trial s35: it advised starting workers)
                    reconnect = getattr(self.client, "_timeout", None)  # the client's own budget ends the wait
                    logger.warning(  # it said "at most 28 s more" and gave up after 5 (trial s39)
                        "waiting for the Dask scheduler at %s to come back (the Dask client gives up on it %s; "
                        "restart it as it was started, and the `dask worker` processes too, which exit with it; "
                        "or stop this run: a store keeps its finished tiles)", self.address,
                        f"{reconnect:g} s after losing it" if isinstance(reconnect, (int, float)) else
                        f"within at most {deadline - time.monotonic():.3g} s")
            if self.client.status in ("closing", "closed") or time.monotonic() > deadline:
                if first:  # it said "lost all its workers" of a cluster that never had one (trial s39)
                    raise ClusterLost(f"the Dask cluster at {self.address} had no worker within {seconds:g} s "
                                      "of the start (landscape-nb.start-wait); start workers, or scale the "
                                      "cluster, and rerun")
                raise ClusterLost(self._why_lost())
            time.sleep(0.25)

    def _recover(self) -> None:
        """Get a connected client and a worker back (within the budget), then ship the job again."""
        self._wait_for_workers()
        try:
            self.client.cancel([self.payload])
        except Exception as exc:
            logger.debug("could not release the old job payload: %s", exc)
        self.payload = self.client.scatter(self.packed, broadcast=True, hash=False)

    # ------------------------------------------------------------- run ----

    def _submit(self, grid: Grid, tiles: Sequence[Tile], event_name: str, attempt: int) -> dict:
        futures = {}
        for rank, t in enumerate(tiles):
            fut = self.client.submit(_eval_tile, self.token, self.payload, grid.coords(t), event_name, self.fingerprint,
                                     self.expected_code,
                                     key=f"landscape_nb-tile-{self.token}-{attempt}-" + "-".join(map(str, t.index)),
                                     priority=len(tiles) - rank, retries=self.retries, pure=False)
            futures[fut.key] = (fut, t)
        return futures

    def run(self, job: Job, grid: Grid, tiles: Sequence[Tile], cancel: threading.Event) -> Iterator[tuple[Tile, np.ndarray]]:
        remaining = {t.index: t for t in tiles}  # in priority order
        event_name = f"landscape_nb-cancel-{self.token}"
        for attempt in range(MAX_RECOVERIES + 1):
            if not remaining:
                return
            if attempt:
                logger.info("%s; resubmitting the %d tiles left once a worker is there (waiting at most %g s)",
                            self._why_lost(waited=False), len(remaining), self.worker_wait)
                self._recover()
            lost = yield from self._round(job, grid, remaining, cancel, event_name, attempt)
            if cancel.is_set():
                return
            if not lost and remaining:  # cannot happen: every future ends done or lost
                raise ClusterLost(f"{len(remaining)} tiles ended neither computed nor lost")
        if remaining:
            raise ClusterLost(self._why_lost() + f"; gave up after {MAX_RECOVERIES} resubmissions")

    def _round(self, job, grid, remaining: dict, cancel: threading.Event, event_name: str, attempt: int):
        """Submit the remaining tiles once; yield those that finish. Returns whether any were lost."""
        futures = self._submit(grid, list(remaining.values()), event_name, attempt)
        finished = threading.Event()
        starved = threading.Event()

        def watch() -> None:  # the user's cancel, and a cluster left without workers past the budget
            no_workers_since, tick = None, 0
            while not finished.wait(0.1):
                tick += 1
                if cancel.is_set():
                    try:
                        Event(event_name, client=self.client).set()
                    except Exception as exc:
                        logger.debug("could not signal the workers to stop: %s", exc)
                    self._cancel(futures)
                    return
                if tick % 10:  # the cluster's health once a second
                    continue
                if self._connected() and self._n_workers() == 0:
                    no_workers_since = no_workers_since or time.monotonic()
                    waited = time.monotonic() - no_workers_since
                    if waited > 2.0:  # the wait was silent (trial s59: 30 s without a word); said once a wait
                        self._say_waiting_for_worker(self.worker_wait - waited)
                    if waited > self.worker_wait:
                        starved.set()
                        self._cancel(futures)
                        return
                else:
                    no_workers_since = None

        watcher = threading.Thread(target=watch, name="landscape_nb-watch", daemon=True)
        watcher.start()
        lost = False
        try:
            for fut in as_completed([f for f, _ in futures.values()]):
                if cancel.is_set():
                    return lost
                t = futures[fut.key][1]
                try:
                    values = None if fut.cancelled() else fut.result()
                    if isinstance(values, (_Refused, _Raised)):
                        raise values.error
                except Exception as exc:
                    if _lost(fut, exc) or _comm_failed(exc) or not self._connected():
                        lost = True  # the cluster's failure, not the task's: resubmitted, or ClusterLost
                        continue
                    if type(exc).__name__ == "KilledWorker":  # Dask gave up after allowed-failures deaths
                        raise ClusterLost(f"tile {t.index} was running on Dask workers that died each time it "
                                          f"was tried ({one_line(exc, 200)}); out of memory, or a "
                                          "crash in native code?") from exc
                    raise_from_user_code(exc, job, t, grid)
                if values is None:  # cancelled, by Dask or by the user's cancel (checked above)
                    lost = True
                    continue
                if isinstance(values, _TileDone):  # (a worker of an older release returns the values alone)
                    seen = self.tiles_by_worker.setdefault(values.worker, [0, None])
                    seen[0] += 1
                    seen[1] = (values.batch_size, values.points_per_pass, values.versions)
                    values = values.values
                del remaining[t.index]
                yield t, values.reshape(*t.shape, -1)
            if starved.is_set():
                raise ClusterLost(self._why_lost())
            return lost
        finally:
            finished.set()
            self._cancel(futures)

    def _cancel(self, futures: dict) -> None:
        try:
            self.client.cancel([f for f, _ in futures.values()])
        except Exception as exc:  # a client that lost its scheduler
            logger.debug("could not cancel futures: %s", exc)

    def settled(self) -> DataInfo | None:
        """Each worker tunes its own evaluator: the batch size and points per pass they all chose (None
        where they differ), each worker's in ``per_worker`` (`runners.DataInfo`), with the tiles it computed in
        this run; a worker that died or left the cluster before the end (``left``) as its last tile found it
        (trial s54b: a killed worker was missing). None when no worker can be asked."""
        try:
            infos = {addr: info for addr, info in self.client.run(_settled, self.token).items() if info is not None}
        except Exception as exc:  # a worker or scheduler that died meanwhile: the choices stay unknown
            logger.debug("could not ask the workers what they settled on: %s", exc)
            return None
        if not infos and (not self.tiles_by_worker or self.probed is None):
            return None
        first = next(iter(infos.values())) if infos else self.probed  # those that ran tiles all gone: recorded
        try:
            alive = set(self.client.scheduler_info().get("workers", {}))
        except Exception as exc:  # noqa: BLE001 - as above: those that answered are alive
            logger.debug("could not list the workers: %s", exc)
            alive = set(infos)
        rows = {addr: (i.batch_size, i.points_per_pass, i.versions, False) for addr, i in infos.items()}
        rows.update({addr: (*settled, addr not in alive)
                     for addr, (_, settled) in self.tiles_by_worker.items() if addr not in infos})
        common = {name: values.pop() if len(values := {row[k] for row in rows.values()}) == 1 else None
                  for k, name in enumerate(("batch_size", "points_per_pass"))}
        notes = dict(kv for i in (list(infos.values()) or [first]) for kv in i.notes)  # each worker's (most agree)
        per_worker = tuple((addr, *row[:3], self.tiles_by_worker.get(addr, [0])[0], row[3])
                           for addr, row in sorted(rows.items()))
        said = tuple(dict.fromkeys(w for i in infos.values() for w in i.warnings))
        return dataclasses.replace(first, **common, notes=tuple(notes.items()), per_worker=per_worker, warnings=said)

    def close(self) -> None:
        if self.payload is not None:
            try:
                self.client.cancel([self.payload])
                self.client.run(_forget, self.token)
            except Exception as exc:  # a worker or scheduler that died meanwhile has nothing left to free
                logger.debug("could not clear worker caches: %s", exc)
            self.payload = None


def _comm_failed(exc: BaseException) -> bool:
    """Whether fetching a result failed in Dask's communication (a worker or the scheduler gone while the
    client gathered it: ``CommClosedError``), not in the task."""
    from distributed.comm.core import CommClosedError

    return isinstance(exc, CommClosedError)


def _lost(fut, exc: BaseException) -> bool:
    """Whether a future failed because the cluster lost it (not because the task raised)."""
    if type(exc).__name__ == "KilledWorker":
        return False  # a task that killed its worker again and again: report it, do not resubmit
    return fut.cancelled() or type(exc).__name__ in ("CancelledError", "FutureCancelledError") or \
        getattr(fut, "status", "") in ("cancelled", "lost")
