"""Evaluate a model's loss and metrics at points ``w0 + Σ c_k d_k`` of weight space.

The evaluation data is put on the model's device once; each point writes the
perturbed weights in place, runs the batches and accumulates sums on the device,
so there is one host sync per tile, not per batch. No Dask, Plotly or widgets here.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import inspect
import time
from dataclasses import asdict, dataclass
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from .errors import LandscapeError
from .params import ParamLayout, Perturber, eval_mode, restoring

PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass(frozen=True)
class EvalSettings:
    """Everything about *how* points are evaluated that changes the values."""

    loss_name: str = "cross_entropy"
    mode: str = "eval"  # "eval": BN running stats; "bn-recompute": BN stats re-estimated per point
    max_samples: int | None = None
    subset_seed: int = 0
    batch_size: int | None = None
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    points_per_pass: int | None = None  # None: 1 on CPU, measured on a GPU (see Evaluator)
    fold_bn: bool = True  # eval mode: conv→BN pairs run as one conv (rounding-level change; see fold.py)

    def to_json(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- data ----

def as_tensors(data, what: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """Accept ``(inputs, targets)``, a ``Dataset``, a ``DataLoader`` or a zero-argument
    callable returning one of those; return two tensors with a leading sample axis."""
    from torch.utils.data import DataLoader, Dataset, TensorDataset

    if callable(data) and not isinstance(data, (Dataset, DataLoader, nn.Module)):
        try:
            n_required = sum(
                p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                for p in inspect.signature(data).parameters.values()
            )
        except (TypeError, ValueError):
            n_required = 0
        if n_required:
            raise LandscapeError(
                f"{what} is a callable taking {n_required} required argument(s); expected a zero-argument "
                "factory returning (inputs, targets), a Dataset or a DataLoader"
            )
        data = data()
    if isinstance(data, DataLoader):
        batches = [tuple(b) for b in data]
        if not batches or len(batches[0]) < 2:
            raise LandscapeError(f"{what}: the DataLoader yields no (inputs, targets) batches")
        return _check_pair(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]), what)
    if isinstance(data, TensorDataset):
        return _check_pair(data.tensors[0], data.tensors[1], what)
    if isinstance(data, Dataset):
        items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        if not items:
            raise LandscapeError(f"{what}: the Dataset is empty")
        xs = torch.stack([torch.as_tensor(it[0]) for it in items])
        ys = torch.stack([torch.as_tensor(it[1]) for it in items])
        return _check_pair(xs, ys, what)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return _check_pair(torch.as_tensor(data[0]), torch.as_tensor(data[1]), what)
    raise LandscapeError(
        f"{what} of type {type(data).__name__}; expected (inputs, targets) tensors, a Dataset, a DataLoader "
        "or a zero-argument callable returning one of those"
    )


def _check_pair(x: torch.Tensor, y: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y) or len(x) == 0:
        raise LandscapeError(
            f"{what}: inputs of shape {tuple(x.shape)} and targets of shape {tuple(y.shape)}; expected the same "
            "non-zero number of samples along the first axis"
        )
    return x, y


def hash_tensor(h, t: torch.Tensor, name: str = "") -> None:
    """Feed a tensor's name, dtype, shape and exact bytes into hashlib object ``h``."""
    t = t.detach().cpu().contiguous().reshape(-1)
    h.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy())  # the buffer itself: no copy of large data


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    hash_tensor(h, x)
    hash_tensor(h, y)
    return h.hexdigest()[:24]


def subset(x: torch.Tensor, y: torch.Tensor, max_samples: int | None, seed: int):
    if max_samples is None or max_samples >= len(x):
        return x, y
    if int(max_samples) < 1:
        raise LandscapeError(f"max_samples={max_samples}; expected a positive number of samples or None for all")
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(int(seed)))[: int(max_samples)]
    idx = idx.sort().values
    return x[idx], y[idx]


# ------------------------------------------------------------- metrics ----

def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fraction of argmax predictions equal to integer targets (or to argmax of one-hot targets)."""
    if targets.ndim == outputs.ndim:
        targets = targets.argmax(dim=-1)
    return (outputs.argmax(dim=-1) == targets).float().mean()


BUILTIN_METRICS: dict[str, Callable] = {"accuracy": accuracy}


def loss_name(loss_fn) -> str:
    if loss_fn is None:
        return "cross_entropy"
    name = getattr(loss_fn, "__qualname__", None) or type(loss_fn).__qualname__
    return f"{getattr(loss_fn, '__module__', '') or type(loss_fn).__module__}.{name}"


def resolve_metrics(metrics, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, Callable]:
    """``"auto"`` means accuracy for classification outputs (N, C>1) with integer targets."""
    if metrics == "auto":
        classify = outputs.ndim == 2 and outputs.shape[1] > 1 and not targets.is_floating_point()
        return {"accuracy": accuracy} if classify else {}
    if metrics is None:
        return {}
    if isinstance(metrics, str):
        metrics = [metrics]
    out: dict[str, Callable] = {}
    items = metrics.items() if isinstance(metrics, Mapping) else [(m, m) for m in metrics]
    for name, fn in items:
        if isinstance(fn, str):
            if fn not in BUILTIN_METRICS:
                raise LandscapeError(
                    f"unknown metric {fn!r}; expected one of {sorted(BUILTIN_METRICS)} or a mapping "
                    "name -> callable(outputs, targets) returning a scalar mean"
                )
            fn = BUILTIN_METRICS[fn]
        if not callable(fn):
            raise LandscapeError(f"metric {name!r} is {fn!r}; expected a callable(outputs, targets) -> scalar")
        out[str(name)] = fn
    return out


# ----------------------------------------------------------- evaluator ----

BATCH_CANDIDATES = (4096, 2048, 1024, 512, 256)


class Evaluator:
    """Loss and metrics of ``model`` on ``data`` at grid points along ``directions``.

    The evaluator perturbs ``model`` in place while a tile is evaluated and
    restores it bit-identically afterwards, also after an exception. When a
    ``device`` other than the model's is given, a private copy is moved there.
    """

    def __init__(
        self,
        model: nn.Module,
        data,
        directions: torch.Tensor,
        layout: ParamLayout,
        *,
        loss_fn: Callable | None = None,
        metrics="auto",
        settings: EvalSettings | None = None,
        device: str | torch.device | None = None,
        bn_data=None,
    ):
        settings = settings or EvalSettings()
        if settings.precision not in PRECISIONS:
            raise LandscapeError(f"precision={settings.precision!r}; expected one of {PRECISIONS}")
        model_device = _model_device(model)
        self.device = torch.device(device) if device is not None else model_device
        if self.device != model_device:
            model = copy.deepcopy(model).to(self.device)
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.settings = settings
        self.layout = layout
        self.loss_fn = loss_fn or nn.CrossEntropyLoss()
        x, y = as_tensors(data)
        x, y = subset(x, y, settings.max_samples, settings.subset_seed)
        self.n_samples = len(x)
        self.data_fingerprint = data_fingerprint(x, y)
        bs = settings.batch_size or min(len(x), BATCH_CANDIDATES[0])
        x = x.to(self.device)
        if settings.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        self._xy = (x, y.to(self.device))
        self.batches = self._split(bs)
        self._in_session = False
        self._bs_plan: list[tuple[int, bool]] = []  # (batch size, timed?) for the next points; see _tune_on
        self._bs_times: dict[int, float] = {}
        self._bs_tries: dict[int, int] = {}
        self.bn_batches = None
        if settings.mode == "bn-recompute":
            bx, by = as_tensors(bn_data if bn_data is not None else (x, y), "bn_data")
            bx = bx.to(self.device)
            self.bn_batches = [bx[i:i + bs] for i in range(0, len(bx), bs)]
        elif settings.mode != "eval":
            raise LandscapeError(f"mode={settings.mode!r}; expected 'eval' or 'bn-recompute'")
        self.metric_fns = self._validate(metrics)
        candidates = [bs] + [b for b in BATCH_CANDIDATES if b < bs]  # bs: all samples, at most 4096
        tune = settings.batch_size is None and self.bn_batches is None and len(candidates) > 1
        if tune and self._batch_independent():
            # one warm-up point, then each candidate timed on up to three points
            self._bs_plan = [(candidates[0], False)] + [(b, True) for b in candidates * 3]
        self.forward, self.bn_fold = self.model, "off"
        if settings.compile:  # the compiler fuses BN itself; version-keyed fold caches only break its graphs
            self.bn_fold = "off (compile)"
        elif settings.fold_bn and self.bn_batches is None:
            self.forward, self.bn_fold = self._folded()
        if settings.compile:
            self.forward = torch.compile(self.forward)
        self.perturber = Perturber(self.model, layout, directions)

    @property
    def metric_names(self) -> list[str]:
        return list(self.metric_fns)

    @property
    def batch_size(self) -> int:
        return len(self.batches[0][0])

    def _split(self, bs: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self._xy
        return [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)]

    def _seconds(self, fn, reps: int = 2) -> float:
        """Wall time of ``fn()``'s last repetition (the first ones warm up)."""
        for _ in range(reps):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            t0 = time.perf_counter()
            fn()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            dt = time.perf_counter() - t0
        return dt

    def _tune_on(self, coords: torch.Tensor, rows: list, should_stop) -> int:
        """Evaluate the first points with each candidate batch size in turn and keep the fastest.

        Eval mode only, where the batch size changes values only by rounding. Every timed
        pass is a real grid point, so tuning costs nothing extra; a plan longer than the
        tile goes on in the next one. Returns how many of ``coords`` were evaluated.
        """
        i = 0
        while self._bs_plan and i < len(coords):
            if should_stop is not None and should_stop():
                raise Cancelled()
            bs, timed = self._bs_plan[0]
            if self.batch_size != bs:
                self.batches = self._split(bs)
            self.perturber.set(coords[i])
            try:
                dt = self._seconds(lambda: rows.append(self._point()[None, :]), reps=1)
            except torch.cuda.OutOfMemoryError:  # too large for this device: never try it again
                self._bs_plan = [(b, t) for b, t in self._bs_plan if b != bs]
                self._bs_times.pop(bs, None)
                self._bs_tries.pop(bs, None)
                continue
            self._bs_plan.pop(0)
            if timed:
                self._bs_times[bs] = min(self._bs_times.get(bs, float("inf")), dt)
                self._bs_tries[bs] = self._bs_tries.get(bs, 0) + 1
                # still 30 % slower on its second (warm) pass: no more tries for this size
                if self._bs_tries[bs] >= 2 and self._bs_times[bs] > 1.3 * min(self._bs_times.values()):
                    self._bs_plan = [(b, t) for b, t in self._bs_plan if b != bs]
            i += 1
        if not self._bs_plan and self._bs_times:
            best = max(self._bs_times)  # larger batches win ties: a smaller one must be 5 % faster
            for bs in sorted(self._bs_times, reverse=True):
                if self._bs_times[bs] < 0.95 * self._bs_times[best]:
                    best = bs
            self.batches = self._split(best)
            self._bs_times, self._bs_tries = {}, {}
        return i

    def _autocast(self):
        if self.settings.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _precision(self):
        if self.settings.precision != "tf32" or self.device.type != "cuda":
            yield
            return
        old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old

    def _validate(self, metrics) -> dict[str, Callable]:
        """Run one small batch unperturbed: the model must accept the data, the loss be a scalar."""
        xb, yb = self.batches[0][0][:8], self.batches[0][1][:8]
        with eval_mode(self.model):
            with torch.no_grad():
                try:
                    out = self.model(xb)
                except Exception as exc:  # the user's model decides what it rejects
                    raise LandscapeError(
                        f"the model rejected inputs of shape {tuple(self.batches[0][0].shape[1:])} per sample "
                        f"({type(exc).__name__}: {exc}); pass data shaped the way the model expects"
                    ) from exc
                try:
                    loss = self.loss_fn(out, yb)
                except Exception as exc:
                    raise LandscapeError(
                        f"loss_fn failed on outputs {tuple(out.shape)} and targets {tuple(yb.shape)} "
                        f"({type(exc).__name__}: {exc}); expected a callable (outputs, targets) -> scalar mean loss"
                    ) from exc
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise LandscapeError(
                f"loss_fn returned {shape}; expected a scalar tensor (the mean loss over the batch), "
                "e.g. use reduction='mean'"
            )
        fns = resolve_metrics(metrics, out, yb)
        for name, fn in fns.items():
            value = fn(out, yb)
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise LandscapeError(f"metric {name!r} returned {value!r}; expected a scalar tensor (a batch mean)")
        return fns

    def _batch_independent(self) -> bool:
        """Whether a sample's output is independent of the rest of its batch (up to rounding), so the
        batch size may be tuned; not so with e.g. BatchNorm without running statistics."""
        xb = self.batches[0][0][:16]
        if len(xb) < 2:
            return True
        with eval_mode(self.model), torch.no_grad():
            whole = self.model(xb).float()
            halves = torch.cat([self.model(xb[:len(xb) // 2]), self.model(xb[len(xb) // 2:])]).float()
        return _same_outputs(whole, halves)

    def _folded(self) -> tuple[nn.Module, str]:
        """The model with eval-mode BN folded into its convs, checked against the model itself on
        the first batch; the model unchanged (and why) when folding does not apply or disagrees."""
        from .fold import fold_batchnorm

        with eval_mode(self.model), torch.no_grad():  # trace the eval branch of models testing self.training
            try:
                folded, note = fold_batchnorm(self.model)
                if folded is self.model:
                    return folded, note
                xb = self.batches[0][0][:64]
                want, got = self.model(xb).float(), folded(xb).float()
            except Exception as exc:  # anything fx-traced that fails to run: keep the model as it is
                return self.model, f"not folded: the traced model failed ({type(exc).__name__})"
        if not _same_outputs(want, got):
            return self.model, "not folded: the folded model disagreed with the model"
        return folded, note

    def _recompute_bn(self) -> None:
        """Re-estimate BatchNorm running statistics at the current weights (cumulative average)."""
        bns = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        self.model.train()
        for xb in self.bn_batches:
            with self._autocast():
                self.forward(xb)
        for m, mom in zip(bns, momenta):
            m.momentum = mom

    @torch.no_grad()
    def _point(self) -> torch.Tensor:
        if self.bn_batches is not None:
            self._recompute_bn()
            self.model.eval()  # evaluate() sets eval mode once per tile otherwise: it costs ~0.1 ms
        sums = torch.zeros(1 + len(self.metric_fns), dtype=torch.float64, device=self.device)
        for xb, yb in self.batches:
            with self._autocast():
                out = self.forward(xb)
            out = out.float()
            n = len(xb)
            sums[0] += self.loss_fn(out, yb).double() * n
            for k, fn in enumerate(self.metric_fns.values(), start=1):
                sums[k] += fn(out, yb).double() * n
        return sums / self.n_samples

    def _points_stacked(self, coords: torch.Tensor) -> torch.Tensor:
        """Several points in one pass: weights stacked on a leading axis, ``torch.func.vmap`` over it."""
        from torch.func import functional_call, vmap

        flat = torch.addmm(self.perturber.base[None, :], coords, self.perturber.directions)
        params = {e.name: t for e, t in zip(self.layout.entries, self.layout.split(flat))}
        fns = list(self.metric_fns.values())

        def one(p, xb, yb):
            with self._autocast():
                out = functional_call(self.model, p, (xb,))
            out = out.float()
            return torch.stack([self.loss_fn(out, yb).float(), *(fn(out, yb).float() for fn in fns)])

        batched = vmap(one, in_dims=(0, None, None))
        sums = torch.zeros(len(coords), 1 + len(fns), dtype=torch.float64, device=self.device)
        self.model.eval()
        for xb, yb in self.batches:
            sums += batched(params, xb, yb).double() * len(xb)
        return sums / self.n_samples

    def _choose_points_per_pass(self, n_dirs: int) -> int:
        """1 on CPU (stacking was slower on 2 cores); on a GPU the fastest of 1, 8, 32, 128 measured once."""
        if self.settings.points_per_pass:
            return int(self.settings.points_per_pass)
        if self.device.type == "cpu" or self.bn_batches is not None:
            return 1
        best, best_k = float("inf"), 1
        for k in (1, 8, 32, 128):
            c = torch.zeros(k, n_dirs, dtype=self.perturber.base.dtype, device=self.device)
            try:
                if k == 1:
                    self.perturber.set(c[0])
                    dt = self._seconds(self._point)
                else:
                    dt = self._seconds(lambda: self._points_stacked(c)) / k
            except (RuntimeError, torch.cuda.OutOfMemoryError):  # model or memory does not allow stacking
                break
            if dt < best:
                best, best_k = dt, k
        self.settings = dataclasses.replace(self.settings, points_per_pass=best_k)
        return best_k

    @contextlib.contextmanager
    def session(self):
        """Snapshot the model and set eval mode once around many ``evaluate`` calls (the
        in-process runner's tiles; about 0.1 ms a tile otherwise); the model is put back
        bit-identically when the outermost session ends, also after an exception."""
        if self._in_session:
            yield
            return
        with restoring(self.model):  # only this: grad mode and TF32 flags are per evaluate() call,
            if any(m.training for m in self.model.modules()):  # so code run between tiles never sees them
                self.model.eval()
            if self.forward is not self.model:  # weights changed through .data keep their version
                for m in self.forward.modules():
                    if hasattr(m, "clear_cache"):
                        m.clear_cache()
            self._in_session = True
            try:
                yield
            finally:
                self._in_session = False

    def evaluate(self, coords: np.ndarray, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """Values at each row of ``coords`` (n_points, n_dirs): array (n_points, 1 + n_metrics).

        Column 0 is the loss, then the metrics in ``metric_names`` order. The
        model is restored on return. ``should_stop`` is polled between points;
        when it returns True the evaluation ends early and raises ``Cancelled``.
        """
        coords = np.asarray(coords, dtype=np.float64)
        # coefficients go to the device once per tile: no host sync between points
        all_c = torch.as_tensor(coords, dtype=self.perturber.base.dtype, device=self.device)
        rows: list[torch.Tensor] = []
        with self.session(), self._precision(), torch.no_grad():
            start = self._tune_on(all_c, rows, should_stop)
            k = 1 if self._bs_plan else self._choose_points_per_pass(coords.shape[1])
            for i in range(start, len(coords), k):
                if should_stop is not None and should_stop():
                    raise Cancelled()
                if k == 1:
                    self.perturber.set(all_c[i])
                    rows.append(self._point()[None, :])
                else:
                    rows.append(self._points_stacked(all_c[i:i + k]))
            values = torch.cat(rows).cpu().numpy()
        return values


class Cancelled(Exception):
    """Raised inside a running evaluation when the user cancelled the computation."""


def _same_outputs(want: torch.Tensor, got: torch.Tensor) -> bool:
    """Two forward passes agree up to float rounding (relative to the outputs' scale)."""
    return want.shape == got.shape and bool(
        torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max())))


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


HEAP_TOP_PAD = 256 << 20
MMAP_THRESHOLD = 32 << 20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)


def keep_heap_top(n_bytes: int = HEAP_TOP_PAD) -> bool:
    """Ask glibc to keep ``n_bytes`` of freed heap top instead of returning it to the OS, and
    to serve blocks up to 32 MiB from its heaps rather than fresh mmaps.

    CPU evaluation allocates and frees the same multi-megabyte activations for every batch;
    when glibc trims them away each time, the next batch page-faults them back in
    (resnet20-digits on 2 cores: 51 vs 54–64 ms per point, and batches of 1797 ran up to
    1.7× slower). This changes the whole process, so only entry points that own their
    process call it: the CLI and the Dask workers landscape_nb starts (their plugin). Returns
    False where the C library is not glibc.
    """
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # M_TOP_PAD turns off glibc's adaptive mmap threshold; left at 128 KiB, every activation of
    # a thread's arena (Dask runs tasks in threads) became a fresh mmap: 3.5x slower there
    return bool(libc.mallopt(-2, int(n_bytes))) and bool(libc.mallopt(-3, MMAP_THRESHOLD))  # TOP_PAD, MMAP_THRESHOLD


def set_threads(n: int) -> None:
    """Torch intra-op threads (used by worker plugins; the in-process path leaves them alone)."""
    torch.set_num_threads(max(1, int(n)))


__all__ = [
    "EvalSettings", "Evaluator", "Cancelled", "as_tensors", "accuracy", "data_fingerprint", "subset",
    "loss_name", "resolve_metrics",
]
