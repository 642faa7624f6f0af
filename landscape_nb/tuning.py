"""Speed choices an ``Evaluator`` makes by measurement on real grid points, so they cost no extra
passes: the batch size, the inputs' memory format, the shared first layer (``multipoint``) and, on a
GPU, how many points run stacked in one ``vmap`` pass. Each changes values only by float rounding.
"""
from __future__ import annotations

import time
from typing import Sequence

import torch

from .data import args_kwargs, batch_len, call_model, tree_map
from .metrics import find_logits
from .multipoint import SharedFirstLayer
from .params import eval_mode, restoring, variance_buffers

BATCH_CANDIDATES = (4096, 2048, 1024, 512, 256)
#: evaluation sets up to this size run as one batch, untuned: splitting them into a ragged pair
#: never paid for the up to 7 tuning points it cost (mlp-digits, 360 samples, 2-core CPU)
SMALL_SET = 512


def _floats(out):
    """Outputs of a low-precision pass as float32 where they are plain tensors; anything else untouched."""
    if isinstance(out, torch.Tensor) and out.dtype in (torch.bfloat16, torch.float16):
        return out.float()
    return out


class Cancelled(Exception):
    """Raised inside a running evaluation when the user cancelled the computation."""


def _same_outputs(want: torch.Tensor, got: torch.Tensor) -> bool:
    """Two forward passes agree up to float rounding (relative to the outputs' scale)."""
    return want.shape == got.shape and bool(
        torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max())))


class _BatchSizeTuner:
    """Which batch size the next grid point runs with while tuning, and the fastest at the end.

    ``plan`` holds (batch size, timed?) per coming point: one warm-up point, then each
    candidate timed on up to three points. A size still 30 % slower than the best on its
    second (warm) pass is not tried again; one that runs out of memory is dropped.
    """

    def __init__(self, candidates: Sequence[int]):
        self.plan: list[tuple[int, bool]] = [(candidates[0], False)] + [(b, True) for b in list(candidates) * 3]
        self.times: dict[int, float] = {}
        self.tries: dict[int, int] = {}

    @property
    def done(self) -> bool:
        return not self.plan

    def next(self) -> tuple[int, bool]:
        return self.plan[0]

    def drop(self, bs: int) -> None:
        """Never try ``bs`` again (too large for the device)."""
        self.plan = [(b, t) for b, t in self.plan if b != bs]
        self.times.pop(bs, None)
        self.tries.pop(bs, None)

    def record(self, bs: int, timed: bool, seconds: float) -> None:
        self.plan.pop(0)
        if not timed:
            return
        self.times[bs] = min(self.times.get(bs, float("inf")), seconds)
        self.tries[bs] = self.tries.get(bs, 0) + 1
        if self.tries[bs] >= 2 and self.times[bs] > 1.3 * min(self.times.values()):
            self.plan = [(b, t) for b, t in self.plan if b != bs]

    def best(self) -> int | None:
        """The fastest size once the plan is done (larger wins unless a smaller is 5 % faster)."""
        if self.plan or not self.times:
            return None
        best = max(self.times)
        for bs in sorted(self.times, reverse=True):
            if self.times[bs] < 0.95 * self.times[best]:
                best = bs
        return best


class SpeedChoices:
    """The measuring half of ``evaluate.Evaluator`` (a mixin: it uses the evaluator's model, data,
    batches, perturber and ``point_values``)."""

    def _shared_first_layer(self):
        """The first layer evaluated once per direction (``multipoint.SharedFirstLayer``) when the
        model has one that is worth it and it gives the model's own outputs at a test point; else None."""
        xb = self.batches[0][0]
        with eval_mode(self.model), torch.no_grad():
            shared = SharedFirstLayer.find(self.forward, self.perturber, xb, self.n_samples)
            if shared is None:
                return None
            with restoring(self.model):
                gen = torch.Generator().manual_seed(0)
                self.perturber.set(torch.rand(self.perturber.coeffs.shape, generator=gen).to(self.device) - 0.5)
                want = self.forward(xb).float()
                with shared.active():
                    got = self.forward(xb).float()
        return shared if _same_outputs(want, got) else None

    def _batch_size_tuner(self) -> _BatchSizeTuner | None:
        """A tuner when the batch size is free: not given, eval mode, and outputs independent of the batch."""
        bs = self.batch_size  # all samples, at most 4096
        candidates = [bs] + [b for b in BATCH_CANDIDATES if b < bs]
        if self.n_samples <= SMALL_SET:  # one batch; tuning would cost more points than it saves
            return None
        if self.settings.batch_size is None and self.bn_batches is None and len(candidates) > 1:
            if self._batch_independent():
                return _BatchSizeTuner(candidates)
        return None

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
        tuner = self._tuner
        if tuner is None or tuner.done:
            return 0
        i = 0
        while not tuner.done and i < len(coords):
            if should_stop is not None and should_stop():
                raise Cancelled()
            bs, timed = tuner.next()
            self.use_batch_size(bs)
            self.perturber.set(coords[i])
            try:
                dt = self._seconds(lambda: rows.append(self.point_values()[None, :]), reps=1)
            except torch.cuda.OutOfMemoryError:  # too large for this device: never try it again
                tuner.drop(bs)
                continue
            tuner.record(bs, timed, dt)
            i += 1
        if tuner.done and tuner.best() is not None:
            self.use_batch_size(tuner.best())
        return i

    def _use_format(self, channels_last: bool) -> None:
        if self.channels_last != channels_last:
            self._data.tree = self._formats[channels_last]
            self.batches = self._batches(self.batch_size)
            self.channels_last = channels_last

    def _choose_format(self, coords: torch.Tensor, rows: list, should_stop) -> int:
        """channels_last or contiguous inputs, by ``_ab_trial``."""
        return self._ab_trial(self._format_plan, self._format_times, self._use_format, coords, rows, should_stop)

    def _choose_shared(self, coords: torch.Tensor, rows: list, should_stop) -> int:
        """The shared first layer or the model's own, by ``_ab_trial``."""
        def use(shared: bool) -> None:
            self.shared_layer = self._shared_candidate if shared else None

        return self._ab_trial(self._shared_plan, self._shared_times, use, coords, rows, should_stop)

    def _ab_trial(self, plan: list, times: dict, apply, coords: torch.Tensor, rows: list, should_stop) -> int:
        """Time real points with ``apply(True)`` and ``apply(False)`` alternately as ``plan`` says (three
        each); keep True only if it was at least 5 % faster. Returns how many of ``coords`` were evaluated."""
        i = 0
        while plan and i < len(coords):
            if should_stop is not None and should_stop():
                raise Cancelled()
            use = plan.pop(0)
            apply(use)
            self.perturber.set(coords[i])
            dt = self._seconds(lambda: rows.append(self.point_values()[None, :]), reps=1)
            times[use] = min(times.get(use, float("inf")), dt)
            i += 1
        if not plan and len(times) == 2:
            apply(times[True] < 0.95 * times[False])  # idempotent: later calls apply the same choice
        return i

    def _batch_independent(self) -> bool:
        """Whether a sample's output is independent of the rest of its batch (up to rounding), so the
        batch size may be tuned; not so with e.g. BatchNorm without running statistics."""
        xb = tree_map(lambda t: t[:16], self.batches[0][0])
        n = batch_len(xb)
        if n < 2:
            return True
        with eval_mode(self.model), torch.no_grad():
            whole = find_logits(call_model(self.model, xb))
            parts = [find_logits(call_model(self.model, tree_map(lambda t: t[a:b], xb)))
                     for a, b in ((0, n // 2), (n // 2, n))]
        if whole is None or any(p is None for p in parts) or whole.ndim == 0 or len(whole) != n:
            return False  # nothing per sample to compare: keep the batch size
        return _same_outputs(whole.float(), torch.cat(parts).float())

    def _points_stacked(self, coords: torch.Tensor) -> torch.Tensor:
        """Several points in one pass: weights stacked on a leading axis, ``torch.func.vmap`` over it."""
        from torch.func import functional_call, vmap

        flat = torch.addmm(self.perturber.base[None, :], coords, self.perturber.directions)
        parts = self.layout.split(flat)
        for i in variance_buffers(self.layout):  # as Perturber.set: a variance cannot be negative
            parts[i] = parts[i].clamp_min(0.0)
        params = {e.name: t for e, t in zip(self.layout.entries, parts)}
        fns = list(self.metric_fns.values())

        def one(p, xb, yb):
            with self._autocast():
                out = functional_call(self.model, p, *args_kwargs(xb))
            out = _floats(out)
            return torch.stack([self.loss_fn(out, yb).float(), *(fn(out, yb).float() for fn in fns)])

        batched = vmap(one, in_dims=(0, None, None))
        sums = torch.zeros(len(coords), 1 + len(fns), dtype=torch.float64, device=self.device)
        self.model.eval()
        for xb, yb in self.batches:
            sums += batched(params, xb, yb).double() * batch_len(xb)
        return sums / self.n_samples

    def _choose_points_per_pass(self, n_dirs: int) -> int:
        """1 on CPU (stacking was slower on 2 cores); on a GPU the fastest of 1, 8, 32, 128 measured once."""
        if self.points_per_pass:
            return int(self.points_per_pass)
        if self.device.type == "cpu" or self.bn_batches is not None:
            self.points_per_pass = 1
            return 1
        best, best_k = float("inf"), 1
        for k in (1, 8, 32, 128):
            c = torch.zeros(k, n_dirs, dtype=self.perturber.base.dtype, device=self.device)
            try:
                if k == 1:
                    self.perturber.set(c[0])
                    dt = self._seconds(self.point_values)
                else:
                    dt = self._seconds(lambda: self._points_stacked(c)) / k
            except (RuntimeError, torch.cuda.OutOfMemoryError):  # model or memory does not allow stacking
                break
            if dt < best:
                best, best_k = dt, k
        self.points_per_pass = best_k
        return best_k
