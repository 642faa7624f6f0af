"""On-disk cache of trained zoo weights: one ``torch.save`` file per example and recipe.

Files hold only tensors, dicts, lists, strings and floats and are read with
``torch.load(weights_only=True)``, so opening one runs no code. Writes are atomic
(temporary file + ``os.replace``); a file that cannot be read is reported and ignored.

Format 2 stores the trajectory stacked, one ``(n_checkpoints, *shape)`` tensor per
parameter: ``weights_only`` unpickling costs per tensor, and ResNet-110's 16
checkpoints × 668 tensors took 3.7 s to read one by one against 0.5 s stacked.
Format-1 files (one state dict per checkpoint) are still read.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from .training import StateDict, TrainedWeights

logger = logging.getLogger(__name__)

CACHE_ENV = "LANDSCAPE_NB_CACHE"
FORMAT_VERSION = 2
_READABLE_FORMATS = (1, 2)
LOCK_SAY_EVERY = 60.0  # seconds between "still waiting" lines while another process trains the same example


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """``override``, else ``$LANDSCAPE_NB_CACHE``, else the platform's user cache dir."""
    if override is not None:
        return Path(override)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    try:
        from platformdirs import user_cache_dir
    except ImportError:
        return Path.home() / ".cache" / "landscape_nb"
    return Path(user_cache_dir("landscape_nb"))


def cache_path(directory: Path, name: str, fingerprint: str) -> Path:
    return directory / f"{name}-{fingerprint}.pt"


def read(path: Path, reference: StateDict) -> TrainedWeights | None:
    """The weights stored at ``path``, or None when missing or unreadable.

    Every state dict must match ``reference`` (an untrained model's) in keys, shapes
    and dtypes, so a stale or damaged file is never loaded into a model.
    """
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        weights = _weights_from(payload, reference)
    except Exception as error:  # any damage means "retrain", never a crash
        logger.warning("Ignoring unreadable zoo cache file %s (%s); retraining.", path, error)
        return None
    return weights


def identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime in ns) of the file at ``path``, None where there is none: whether another process
    replaced it (``write`` does so atomically) since it was last read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def write(path: Path, weights: TrainedWeights) -> None:
    """Store ``weights`` at ``path`` atomically; a failure is logged, not raised."""
    payload = {
        "format": FORMAT_VERSION,
        "trajectory": _stack(weights.trajectory),
        "minimizers": weights.minimizers,
        "test_accuracy": float(weights.test_accuracy),
    }
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
        ) as tmp:
            tmp_name = tmp.name
            torch.save(payload, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except OSError as error:
        logger.warning(
            "Could not cache zoo weights at %s (%s); they will be retrained next time. "
            "Set %s to a writable directory to fix this.", path, error, CACHE_ENV
        )
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)


@contextlib.contextmanager
def training_lock(path: Path, name: str) -> Iterator[None]:
    """Held while one process trains the weights for ``path``: another process (a second notebook's kernel, a
    Dask worker, a parallel test run) that finds them missing waits here, then reads what the first one wrote,
    instead of training the same network for minutes beside it. ``<path>.lock`` beside the file (``filelock``;
    an OS lock, released when its process ends, even killed). Where the directory cannot hold the lock file, it
    trains without one, as before."""
    from filelock import FileLock, Timeout

    lock: FileLock | None = FileLock(f"{path}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        waited = 0.0
        while True:
            try:
                lock.acquire(timeout=LOCK_SAY_EVERY if waited else 0)
                break
            except Timeout:
                if not waited:
                    logger.info("Waiting for another process that is training zoo example %r (%s.lock).", name, path)
                else:  # a holder that hangs holds it until it ends: say so, so the wait is never silent
                    logger.info("Still waiting after %.3g s for the process training zoo example %r (it holds "
                                "%s.lock; if no process is training it, end the one that hangs).", waited, name, path)
                waited += LOCK_SAY_EVERY
    except OSError as error:
        logger.debug("No training lock for %s (%s); training without one.", path, error)
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _weights_from(payload: object, reference: StateDict) -> TrainedWeights:
    if not isinstance(payload, dict) or payload.get("format") not in _READABLE_FORMATS:
        raise ValueError(f"not a zoo cache file of format {_READABLE_FORMATS}")
    trajectory = payload["trajectory"]
    if payload["format"] == 2:
        trajectory = _unstack(trajectory)
    minimizers = payload["minimizers"]
    if not isinstance(trajectory, list) or not trajectory or not isinstance(minimizers, dict):
        raise ValueError("malformed trajectory or minimizers")
    for state in [*trajectory, *minimizers.values()]:
        _check_state(state, reference)
    return TrainedWeights(trajectory, minimizers, float(payload["test_accuracy"]))


def _check_state(state: object, reference: StateDict) -> None:
    if not isinstance(state, dict) or state.keys() != reference.keys():
        raise ValueError("state dict keys differ from the architecture's")
    for key, expected in reference.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or (value.shape, value.dtype) != (
            expected.shape,
            expected.dtype,
        ):
            raise ValueError(f"tensor {key!r} differs from the architecture's")


def _stack(trajectory: list[StateDict]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([state[key] for state in trajectory]) for key in trajectory[0]}


def _unstack(stacked: object) -> list[StateDict]:
    if not isinstance(stacked, dict) or not stacked:
        raise ValueError("malformed stacked trajectory")
    lengths = {len(value) if isinstance(value, torch.Tensor) and value.ndim else -1 for value in stacked.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise ValueError("stacked trajectory tensors differ in length")
    return [{key: value[i] for key, value in stacked.items()} for i in range(lengths.pop())]
