"""Record an optimizer's path from the user's own training loop, for trajectory PCA.

>>> rec = lnb.TrajectoryRecorder(model, every=10, path="runs/path.zarr")  # records step 0
>>> with rec:                         # records step 0 again if the weights changed since
...     for xb, yb in loader:
...         loss_fn(model(xb), yb).backward(); opt.step(); opt.zero_grad()
...         rec.step()                # every 10th call records a checkpoint
>>> # leaving the block records the final weights if the last step was not recorded
>>> d = rec.pca_directions(n=2)       # Li et al. 2018, §7, centred at the final weights
>>> path = rec.project(d, data=(x, y))
>>> lnb.plot.animate(lnb.compute_surface(model, (x, y), d, **d.suggested_grid(21)), path)

Checkpoints are whole state dicts (parameters and buffers). With ``path`` they go to a zarr
store of plain arrays, one array per tensor with a leading checkpoint axis (no pickle:
reading a store back runs no code), so a long run costs no memory and can be analysed
later with :meth:`TrajectoryRecorder.load`; without ``path`` they are kept in memory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .errors import LandscapeError, warn_user
from .params import check_materialized, to_numpy

STORE_FORMAT = "landscape_nb.trajectory/1"


def _remove_trajectory_store(path: Path) -> None:
    """Delete ``path`` for ``overwrite=True``: only a trajectory store holding nothing but its own entries
    (``zarr.json``, ``steps``, ``t0``, ``t1``, ...), or an empty directory. Anything else is refused with what
    it holds: ``zarr.open_group(mode="w")`` empties any directory, e.g. ``path="."``, and a store someone put
    notes or figures into would take them along."""
    import re
    import shutil

    import zarr

    if path.is_symlink():
        raise LandscapeError(f"path={str(path)!r} is a symbolic link; overwrite=True replaces only a trajectory "
                             "store itself, so nothing was deleted: pass the directory it points to, or a new path")
    held = sorted(p.name for p in path.iterdir()) if path.is_dir() else None
    if held == []:
        return
    try:
        fmt = dict(zarr.open_group(str(path), mode="r").attrs).get("format") if held else None
    except Exception:  # noqa: BLE001 (zarr raises many kinds for what is not a group)
        fmt = None
    foreign = [] if held is None else [n for n in held if not re.fullmatch(r"zarr\.json|steps|t\d+", n)]
    if fmt != STORE_FORMAT or foreign:
        what = "a file" if held is None else f"a directory holding {', '.join(map(repr, (foreign or held)[:4]))}" + (
            ", ..." if len(foreign or held) > 4 else "")
        kind = "a trajectory store with other files in it" if fmt == STORE_FORMAT else "not a trajectory store"
        raise LandscapeError(
            f"path={str(path)!r} is {what}, {kind}; overwrite=True replaces only a store a TrajectoryRecorder "
            f"wrote (format {STORE_FORMAT!r}, nothing else in it), so nothing was deleted: choose a new path, "
            "e.g. path='runs/traj.zarr', or move the other files out")
    shutil.rmtree(path)


class TrajectoryRecorder:
    """Checkpoints of ``model`` every ``every`` calls of :meth:`step`, in memory or a zarr store.

    Parameters
    ----------
    model : torch.nn.Module
        The model being trained (read, never changed).
    every : int
        Record after every ``every``-th call of :meth:`step` (one call per optimizer step).
    path : str or Path, optional
        A zarr store to write (a directory); ``None`` keeps the checkpoints in memory.
    overwrite : bool
        Replace an existing trajectory store at ``path`` (otherwise refused, so no run is
        lost); a path holding anything else (a file, another directory, a store with other
        files put into it, a symbolic link) is refused even so, and nothing is deleted.

    Attributes
    ----------
    n_steps : int
        Calls of :meth:`step` so far.
    steps : numpy.ndarray
        The step number of each checkpoint (0: before training).

    Notes
    -----
    The initial weights (step 0) are recorded when the recorder is made, and again on entering a
    ``with`` block (or Lightning's training start) before any step, so weights loaded or moved in
    between count. Leaving the block records the final weights (not when an exception leaves it:
    the checkpoints recorded so far stay); without one, call :meth:`record` after the last step
    when it is not a multiple of ``every``.
    """

    def __init__(self, model: nn.Module, every: int = 1, path: str | Path | None = None, *,
                 overwrite: bool = False):
        if not isinstance(model, nn.Module):
            raise LandscapeError(f"expected a torch.nn.Module, got {type(model).__name__}; pass the model itself")
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise LandscapeError(f"every={every!r}; expected an integer ≥ 1 (record every that many steps)")
        check_materialized(model)  # a lazy module: torch's ValueError from state_dict() (re-trial s57)
        self.model, self.every, self.n_steps = model, int(every), 0
        self._source = model  # the model whose states are recorded (`load`'s ``model``; ``model`` a copy there)
        self._loaded: int | None = None  # for a recorder from `load`: the checkpoints the store held then
        self._unknown_steps = False  # `load`'s model trained past the last checkpoint, by steps not given
        self._steps: list[int] = []
        self._memory: list[dict[str, torch.Tensor]] = []
        self._names = list(model.state_dict())
        self._dtypes = [str(t.dtype).removeprefix("torch.") for t in model.state_dict().values()]
        if isinstance(path, str) and not path.strip():
            raise LandscapeError(f"path={path!r} is empty; expected a directory for the store, e.g. "
                                 "path='runs/traj.zarr', or path=None to keep the checkpoints in memory")
        self.path = None if path is None else Path(path)
        self._group = None
        if self.path is not None:
            import zarr

            if self.path.exists() and not overwrite:
                other = self.path.is_file() or not (self.path / "zarr.json").is_file()  # not a store: overwrite=True
                raise LandscapeError(f"{str(self.path)!r} already exists; expected a new path for the store: " + (
                    "it is no trajectory store, so choose another path, e.g. path='runs/traj.zarr'" if other else  # is
                    "pass overwrite=True to replace it, or TrajectoryRecorder.load(path, model) to read it"))  # refused
            if self.path.exists():
                _remove_trajectory_store(self.path)
            self._group = zarr.open_group(str(self.path), mode="w")
            self._group.attrs.update({"format": STORE_FORMAT, "names": self._names, "dtypes": self._dtypes,
                                      "every": self.every})
            self._group.create_array("steps", shape=(0,), chunks=(1024,), dtype="int64")
            for i, t in enumerate(model.state_dict().values()):
                arr = to_numpy(t)
                self._group.create_array(f"t{i}", shape=(0, *arr.shape), chunks=(1, *arr.shape), dtype=arr.dtype)
        self.record()  # step 0: the weights before training, also when no ``with`` block is used

    # ------------------------------------------------------------ recording ----

    def __enter__(self) -> "TrajectoryRecorder":
        # no step yet: step 0 is the weights now; not for a recorder from `load`, whose step 0 is the run's (a
        # with block after load wrote the trained model over it, review s59)
        if self._steps == [0] and self.n_steps == 0 and self._loaded is None:
            self._write(0, self._state())
        elif not self._steps:
            self.record()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and (not self._steps or self._steps[-1] != self.n_steps):
            self.record()

    def step(self) -> None:
        """Count one optimizer step; record a checkpoint when the count is a multiple of ``every``."""
        if self._unknown_steps and self._loaded == len(self._steps):
            # its checkpoints would be labelled by steps counted from the last one, not its own (re-trial s59)
            raise LandscapeError(
                f"step() on a recorder loaded with a model that holds other weights than the last checkpoint "
                f"(step {self._steps[-1]}): it trained past it, so the steps counted from there would label its "
                "checkpoints wrong; pass TrajectoryRecorder.load(path, model, n_steps=...) the optimizer steps the "
                "model has taken")
        self.n_steps += 1
        if self.n_steps % self.every == 0:
            self.record()

    def record(self) -> None:
        """Record the model's current state now, labelled with the current step count; a step already
        recorded last is replaced by the state now (one checkpoint per step: a repeated step would be a
        zero-length segment of the path and a duplicate row for PCA)."""
        state = self._state()
        if self._steps and self._steps[-1] == self.n_steps:
            if self._loaded == len(self._steps):  # the loaded run's last checkpoint, not this run's: kept
                if _differs(state, self.checkpoint(-1)):
                    raise LandscapeError(
                        f"record() at step {self.n_steps} would replace the checkpoint the store at "
                        f"{str(self.path)!r} holds for that step by the model's weights now, which differ; pass "
                        "TrajectoryRecorder.load(path, model, n_steps=...) the optimizer steps the model has taken "
                        "(its checkpoints then go on from there), or step() first")
                return
            self._write(len(self._steps) - 1, state)
            return
        if self._group is None:
            self._memory.append({k: v.detach().cpu().clone() for k, v in state.items()})
        else:
            for i, t in enumerate(state.values()):
                self._group[f"t{i}"].append(to_numpy(t)[None])
            self._group["steps"].append(np.array([self.n_steps], dtype=np.int64))
        self._steps.append(self.n_steps)

    def _state(self) -> dict[str, torch.Tensor]:
        state = self._source.state_dict()
        self.model = self._source  # a loaded recorder centred at its last checkpoint: the training model from now
        if list(state) != self._names:
            raise LandscapeError("the model's tensors changed since recording began (names "
                                 f"{list(state)[:3]}... vs {self._names[:3]}...); expected the same architecture "
                                 "throughout: start a new recorder for a new model")
        if self._group is not None and not getattr(self, "_said_dtypes", False):
            now = [str(t.dtype).removeprefix("torch.") for t in state.values()]
            changed = [(n, a, b) for n, a, b in zip(self._names, self._dtypes, now) if a != b]
            if changed:  # a store's arrays keep their dtype: float64 checkpoints were read back float32 (trial s37)
                self._said_dtypes = True
                name, was, is_ = changed[0]
                warn_user(f"landscape_nb: TrajectoryRecorder: the model's tensors changed dtype since recording began ({name}: "
                          f"{was}, now {is_}; {len(changed)} tensors in all); the store {str(self.path)!r} keeps "
                          f"{was}, so these checkpoints are stored as {was}: start a new recorder (another path) "
                          "after converting the model to keep its precision")
        return state

    def _write(self, i: int, state: dict[str, torch.Tensor]) -> None:
        """Replace checkpoint ``i`` by ``state`` (its step label stays)."""
        if self._group is None:
            self._memory[i] = {k: v.detach().cpu().clone() for k, v in state.items()}
        else:
            for k, t in enumerate(state.values()):
                self._group[f"t{k}"][i] = to_numpy(t)

    def lightning_callback(self):
        """A PyTorch Lightning ``Callback`` driving this recorder: records at the start of
        training, calls :meth:`step` after each training batch, records the end state.

        >>> trainer = lightning.Trainer(callbacks=[rec.lightning_callback()])

        Raises ``LandscapeError`` when neither ``lightning`` nor ``pytorch_lightning`` is installed.
        """
        try:
            from lightning.pytorch.callbacks import Callback
        except ImportError:
            try:
                from pytorch_lightning.callbacks import Callback
            except ImportError:
                raise LandscapeError("lightning_callback needs PyTorch Lightning, which is not installed; install "
                                     "`lightning`, or call rec.step() in your own loop") from None
        recorder = self

        class RecorderCallback(Callback):
            def on_train_start(self, trainer, pl_module):
                recorder.__enter__()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                recorder.step()

            def on_train_end(self, trainer, pl_module):
                recorder.__exit__(None, None, None)

        return RecorderCallback()

    # -------------------------------------------------------------- reading ----

    @classmethod
    def load(cls, path: str | Path, model: nn.Module, *, n_steps: int | None = None) -> "TrajectoryRecorder":
        """A recorder reading the checkpoints of an existing store (``model``: the architecture
        they belong to, e.g. the trained model), which also goes on recording a run that was interrupted.

        The default ``final`` (the centre of the plane) is the last recorded checkpoint, as the reference
        implementation's ``plot_trajectory`` centres at the final checkpoint file: when ``model`` holds other
        weights (a freshly built model, say), ``rec.model`` is a copy of it holding the last checkpoint
        (``model`` is left as it is) and a ``UserWarning`` says to compute surfaces around ``rec.model``.

        :meth:`step` and :meth:`record` record ``model`` itself, appended to the store (``rec.model`` is then
        ``model``, as for a new recorder): train it on after an interruption and call ``rec.step()`` as before.
        Its states were recorded from a copy of the last checkpoint, which never moved (trial s59).
        ``n_steps``: the optimizer steps ``model`` has taken, where it went on past the last checkpoint (a run
        stopped at step 23 whose last checkpoint is step 20: ``n_steps=23``, so the next checkpoints are labelled
        by their own steps); default the last step recorded.

        Raises ``LandscapeError`` when ``path`` is not a trajectory store, when ``model`` is not
        a module whose state dict has the store's tensor names and shapes (another architecture:
        the message names the first tensor that differs), or when ``n_steps`` is below the last step
        recorded."""
        import zarr

        if not isinstance(model, nn.Module):
            raise LandscapeError(f"expected a torch.nn.Module, got {type(model).__name__}; pass the model the path "
                                 "was recorded from")
        path = Path(path)
        try:
            group = zarr.open_group(str(path), mode="r+")
            attrs = dict(group.attrs)
        except Exception as exc:  # zarr raises many kinds for a missing or damaged store
            raise LandscapeError(f"cannot open {str(path)!r} as a trajectory store ({type(exc).__name__}); expected "
                                 "a directory written by TrajectoryRecorder(path=...)") from None
        if attrs.get("format") != STORE_FORMAT:
            raise LandscapeError(f"{str(path)!r} is not a trajectory store (format {attrs.get('format')!r}); "
                                 f"expected {STORE_FORMAT!r}, written by TrajectoryRecorder(path=...)")
        rec = cls.__new__(cls)
        rec.model, rec.every, rec.path, rec._group, rec._memory = model, int(attrs["every"]), path, group, []
        rec._names, rec._dtypes = list(attrs["names"]), list(attrs["dtypes"])
        rec._steps = [int(s) for s in group["steps"][:]]
        rec.n_steps, rec._source, rec._loaded = rec._steps[-1] if rec._steps else 0, model, len(rec._steps)
        rec._unknown_steps = False
        if n_steps is not None:
            if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < rec.n_steps:
                raise LandscapeError(f"n_steps={n_steps!r}; expected the optimizer steps the model has taken, at "
                                     f"least {rec.n_steps}, the last step recorded in {str(path)!r} (or leave it out "
                                     "to count on from there)")
            rec.n_steps = int(n_steps)
        state = model.state_dict()
        if rec._names != list(state):
            raise LandscapeError(f"the store at {str(path)!r} holds tensors {rec._names[:3]}..., the model has "
                                 f"{list(state)[:3]}...; expected the model the path was recorded from")
        shapes = [(name, tuple(group[f"t{i}"].shape[1:]), tuple(t.shape))
                  for i, (name, t) in enumerate(state.items())]
        differ = [(name, stored, own) for name, stored, own in shapes if stored != own]
        if differ:
            name, stored, own = differ[0]
            raise LandscapeError(
                f"the store at {str(path)!r} was recorded from another architecture than {type(model).__name__}: "
                f"tensor {name!r} has shape {stored} in the store, {own} in the model ({len(differ)} of "
                f"{len(shapes)} tensors differ); expected the model the path was recorded from (the same class and "
                "tensor shapes): build it as it was built for the recording")
        last = rec.checkpoint(-1) if rec._steps else state
        if _differs(state, last):
            # trial s35: a freshly built model was the centre of the plane, far from every checkpoint
            from .model_paths import model_from_state_dict

            rec.model = model_from_state_dict(model, last, f"the last checkpoint of {str(path)!r}")
            warn_user(f"landscape_nb: the {type(model).__name__} passed to TrajectoryRecorder.load holds other weights than the "
                      f"last checkpoint recorded in {str(path)!r} (step {rec._steps[-1]}); rec.model is a copy "
                      "holding that checkpoint, the centre of rec.pca_directions() and rec.project(): compute "
                      "surfaces around rec.model (compute_surface(rec.model, ...)), or pass final= to centre "
                      f"elsewhere; rec.step() and rec.record() record the {type(model).__name__} itself, to go on "
                      "with an interrupted run" + ("" if n_steps is not None else
                                                   " (pass n_steps=, the optimizer steps it has taken)"))
            rec._unknown_steps = n_steps is None  # it trained past that checkpoint by how many steps is not known
        return rec

    @property
    def steps(self) -> np.ndarray:
        return np.asarray(self._steps, dtype=np.int64)

    @property
    def n_checkpoints(self) -> int:
        return len(self._steps)

    def checkpoint(self, i: int) -> dict[str, torch.Tensor]:
        """Checkpoint ``i`` (0-based, negative from the end) as a state dict on the CPU."""
        if not -self.n_checkpoints <= i < self.n_checkpoints:
            raise LandscapeError(f"checkpoint {i} of {self.n_checkpoints}; expected an index in "
                                 f"[{-self.n_checkpoints}, {self.n_checkpoints})")
        if self._group is None:
            return dict(self._memory[i])
        i %= self.n_checkpoints
        return {name: torch.from_numpy(np.asarray(self._group[f"t{k}"][i])).to(getattr(torch, dt))
                for k, (name, dt) in enumerate(zip(self._names, self._dtypes))}

    @property
    def checkpoints(self) -> list[dict[str, torch.Tensor]]:
        return [self.checkpoint(i) for i in range(self.n_checkpoints)]

    @property
    def labels(self) -> list[str]:
        return [f"step {s}" for s in self._steps]

    def pca_directions(self, n: int = 2, *, final: nn.Module | None = None, ignore: str | None = "biasbn",
                       data=None, loss_fn: Callable | None = None, target_key: str | int | None = "labels"):
        """``trajectory.pca_directions`` of the recorded checkpoints, centred at ``final``
        (default: the recorder's model, at its current weights: the end of training; for a recorder
        from :meth:`load`, the last checkpoint); ``data``, ``loss_fn`` and ``target_key`` as there."""
        from .trajectory import pca_directions

        return pca_directions(self, final=final or self.model, n=n, ignore=ignore, data=data, loss_fn=loss_fn,
                              target_key=target_key)

    def project(self, directions, *, final: nn.Module | None = None, data=None,
                loss_fn: Callable | None = None, mode: str = "eval", bn_data=None,
                target_key: str | int | None = "labels"):
        """``trajectory.project_trajectory`` of the recorded checkpoints, labelled by step (``data``,
        ``target_key`` and the rest as there)."""
        from .trajectory import project_trajectory

        return project_trajectory(self, directions, final=final or self.model, data=data, loss_fn=loss_fn,
                                  mode=mode, bn_data=bn_data, target_key=target_key)


def _differs(state: dict[str, torch.Tensor], checkpoint: dict[str, torch.Tensor]) -> bool:
    """Whether a model's ``state`` holds other values than a recorded ``checkpoint`` (read back on the CPU, in the
    store's dtypes)."""
    return any(not torch.equal(state[k].detach().cpu(), t.to(state[k].dtype)) for k, t in checkpoint.items())


__all__ = ["TrajectoryRecorder", "STORE_FORMAT"]
