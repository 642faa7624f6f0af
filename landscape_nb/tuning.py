"""Speed choices an ``Evaluator`` makes by measurement on real grid points, so they cost no extra
passes: the batch size, the inputs' memory format, how many points run stacked in one ``vmap`` pass
and, where one point a pass is kept, the shared first layer (``multipoint``). Each changes values
only by float rounding.
"""
from __future__ import annotations

import math
import threading
import time
import warnings
from typing import Sequence

import torch

from .data import batch_len, call_model, tree_map
from .errors import LandscapeError, one_line
from .metrics import find_logits
from .multipoint import (
    BatchAxisStack,
    NotPerSample,
    PerSampleGuard,
    SharedFirstLayer,
    tensor_leaves,
)
from .params import eval_mode, restoring

BATCH_CANDIDATES = (4096, 2048, 1024, 512, 256)
#: CPU: stack only as many points as keep their activations under this many bytes (it never paid on a
#: conv net's larger activations)
STACK_BYTES = 256 * 2**20
#: CPU: of the points-per-pass candidates, those past the smallest only while a pass's activations stay
#: under this many bytes, about what a last-level cache holds: beyond it the memory-bound kernels of a
#: stacked pass slow down per point faster than fewer passes save (mlp-digits, 360 samples, ~0.55 MB of
#: activations a point, 2-core EPYC with 32 MiB L3: whole 21x21 surfaces in passes of 16-32 points 0.11-0.13
#: ms a point at best, of 64 0.13-0.16; the trial, timing one pass of each, kept 64 in half of its runs)
STACK_CPU_CACHE_BYTES = 24 * 2**20
#: CPU: no stacking trial when one point already takes this long; a vmapped pass saves per-pass Python
#: overhead (~0.1-0.3 ms), a small share of such a point, and the trial's slower passes cost more than that
#: (cnn-digits, 2.8 ms a point with channels_last weights: 5.7 ms a point in passes of 4, 5.4 in passes
#: of 16, the trial's 52 such points 9 % of a 21x21 plane; mlp-digits, 0.2 ms a point: 0.09 in passes of 64)
STACK_CPU_MAX_SECONDS = 0.001
#: evaluation sets up to this size run as one batch, untuned: splitting them into a ragged pair
#: never paid for the up to 7 tuning points it cost (mlp-digits, 360 samples, 2-core CPU)
SMALL_SET = 512
#: GPU: the whole evaluation set in one batch, untuned, when its activations take at most this share of
#: the free memory (H200: ResNet-56 on 10,000 CIFAR-shaped samples ran fastest in one batch in fp32, tf32,
#: bf16 and compiled, 42-114 ms a pass vs 46-118 ms in batches of 4096 and 79-317 ms in batches of 1024 and
#: smaller; mlp-digits' 1797 samples spent ~20 ms of a 70 ms 51x51 surface on batch-size trial points)
GPU_ONE_BATCH_SHARE = 0.25
#: GPU: points per pass tried, smallest first (each within an eighth of the free memory). H200, 51x51
#: mlp-digits surface (1797 samples): 8-32-128-512 43-45 ms, 32-512 32 ms, 64-1024 25-29 ms, 512 alone
#: 23 ms; cnn-digits and resnet20-digits kept 32 or 128 and ran 21x21 alike (111 and 438-441 ms) with both
STACK_GPU_SIZES = (64, 1024)
#: points per pass chosen by the finished trials of this process (``SpeedChoices._trial_key``: the model's
#: structure, the data's shapes, batch size, device, precision, threads, loss and metrics): a later
#: evaluator of the same starts from the choice, its first stacked pass still checked against single
#: points (mlp-digits, 2-core CPU: the trial cost a 21x21 surface ~4 ms of ~58). At most ``CHOSEN_KEPT``.
CHOSEN: dict[tuple, int] = {}
CHOSEN_KEPT = 64
_CHOSEN_LOCK = threading.Lock()  # evaluators in threads of one process (Dask's, the Explorer's) may finish together


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the device ran out of memory: PyTorch's ``OutOfMemoryError``, or an
    allocation failure some backends raise as a plain ``RuntimeError`` (cuBLAS's and cuDNN's
    ``*_STATUS_ALLOC_FAILED``, "MPS backend out of memory")."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in ("out of memory", "ALLOC_FAILED"))


def _floats(out):
    """Outputs of a low-precision pass as float32 where they are plain tensors; anything else untouched."""
    if isinstance(out, torch.Tensor) and out.dtype in (torch.bfloat16, torch.float16):
        return out.float()
    return out


def _output_leaves(outputs) -> list[torch.Tensor]:
    """The tensors of a model's outputs (a tensor, or a tuple, list or dict of them), or its logits where they sit
    in an object's attribute (``find_logits``)."""
    leaves = tensor_leaves(outputs)
    if not leaves:
        logits = find_logits(outputs)
        leaves = [] if logits is None else [logits]
    return leaves


class Cancelled(Exception):
    """Raised inside a running evaluation when the user cancelled the computation."""


def _same_outputs(want: torch.Tensor, got: torch.Tensor, rtol: float = 1e-4) -> bool:
    """Two forward passes agree up to float rounding (``rtol``, and a tenth of it relative to the finite
    outputs' scale; NaN and infinities must sit at the same places)."""
    if want.shape != got.shape:
        return False
    finite = want[want.isfinite()]
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    return bool(torch.allclose(got, want, rtol=rtol, atol=0.1 * rtol * scale, equal_nan=True))


class _BatchSizeTuner:
    """Which batch size the next grid point runs with while tuning, and the fastest at the end.

    ``plan`` holds (batch size, timed?) per coming point: one warm-up point, then each
    candidate timed on up to three points. A size still 30 % slower than the best on its
    second (warm) pass is not tried again; one that runs out of memory is dropped.
    ``whole_only`` (a GPU, the whole set estimated to fit): one pass at ``candidates[0]``, and
    the trial above over the other sizes only if that pass runs out of memory.
    """

    def __init__(self, candidates: Sequence[int], whole_only: bool = False):
        self.candidates = list(candidates)
        self.whole_only = whole_only
        self.plan: list[tuple[int, bool]] = self._trial(self.candidates[:1] if whole_only else self.candidates)
        self.times: dict[int, float] = {}
        self.tries: dict[int, int] = {}

    @staticmethod
    def _trial(sizes: list[int]) -> list[tuple[int, bool]]:
        if len(sizes) == 1:
            return [(sizes[0], False)]
        return [(sizes[0], False)] + [(b, True) for b in sizes * 3]

    @property
    def done(self) -> bool:
        return not self.plan

    def next(self) -> tuple[int, bool]:
        return self.plan[0]

    def drop(self, bs: int) -> None:
        """Never try ``bs`` again (too large for the device)."""
        if self.whole_only:  # the whole set did not fit after all: the trial over the smaller sizes
            self.whole_only = False
            rest = [b for b in self.candidates if b != bs]
            self.plan = self._trial(rest) if rest else []
            return
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
                want = find_logits(call_model(self.forward, xb))
                with shared.active():
                    got = find_logits(call_model(self.forward, xb))
        if want is None or got is None:  # no tensor outputs to compare (find_logits): the model's own layer
            return None
        return shared if _same_outputs(want.float(), got.float()) else None

    def _batch_size_tuner(self) -> _BatchSizeTuner | None:
        """A tuner when the batch size is free: not given, eval mode, and outputs independent of the batch.
        On a GPU a set whose activations fit ``GPU_ONE_BATCH_SHARE`` of the free memory runs as one batch."""
        def sizes_from(top: int) -> list[int]:
            return [top] + [b for b in BATCH_CANDIDATES if b < top]

        candidates = sizes_from(self.batch_size)  # all samples, at most 4096
        if self.n_samples <= SMALL_SET or self._fixed_batching:  # one batch (tuning would cost more than it saves
            return None  # on a small set; a loss that is not a mean over samples keeps one batching for all points)
        if self.settings.batch_size is None and self.bn_batches is None and len(candidates) > 1:
            if self._batch_independent():
                if self.device.type == "cuda" and self._whole_set_fits():  # its first step takes the whole set
                    return _BatchSizeTuner(sizes_from(self.n_samples), whole_only=True)
                return _BatchSizeTuner(candidates)
        return None

    def _whole_set_fits(self) -> bool:
        """Whether the whole evaluation set's activations (``_activation_bytes``) fit ``GPU_ONE_BATCH_SHARE``
        of the free GPU memory (an estimate: a pass that runs out of memory falls back to the trial)."""
        with eval_mode(self.model):
            per_sample = self._activation_bytes(self.model)
        free = torch.cuda.mem_get_info(self.device)[0]
        return per_sample is not None and self.n_samples * per_sample <= GPU_ONE_BATCH_SHARE * free

    def _seconds(self, fn, reps: int = 2) -> float:
        """Wall time of ``fn()``'s last repetition (the first ones warm up)."""
        for _ in range(reps):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            t0, untimed = time.perf_counter(), self._untimed
            fn()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            dt = time.perf_counter() - t0 - (self._untimed - untimed)  # checks run inside fn are not its speed
        return dt

    def _tune_on(self, coords: torch.Tensor, rows: list, should_stop) -> int:
        """Evaluate the first points with each candidate batch size in turn and keep the fastest.

        Eval mode only, where the batch size changes values only by rounding (checked: outputs of the
        unperturbed model against its halves' before, ``_recheck_trial`` on the trial's points after). Every
        timed pass is a real grid point (those run with another size than the one kept run again with it);
        a plan longer than the tile goes on in the next one. Returns how many of ``coords`` were evaluated.
        """
        tuner = self._tuner
        if tuner is None or tuner.done:
            return 0
        trial = self._trial_points
        i = 0
        while not tuner.done and i < len(coords):
            if should_stop is not None and should_stop():
                raise Cancelled()
            bs, timed = tuner.next()
            self.use_batch_size(bs)
            self.perturber.set(coords[i])
            try:
                dt = self._seconds(lambda: rows.append(self.point_values()[None, :]), reps=1)
            except RuntimeError as exc:
                if not out_of_memory(exc):
                    raise
                tuner.drop(bs)  # too large for this device: never try it again
                continue
            tuner.record(bs, timed, dt)
            trial.append((coords[i], bs, rows[-1][0], rows, len(rows) - 1))
            i += 1
        if tuner.done and tuner.best() is not None:
            self.use_batch_size(tuner.best())
            self._recheck_trial()
        return i

    def _recheck_trial(self) -> None:
        """Run every trial point that ran with another batch size than the one kept again with the kept one,
        and return that value: every point of the surface then comes from one batching. Raise
        ``LandscapeError`` if a value differs by more than rounding (1e-4; TF32 and bf16 to what they round):
        the model's outputs, or the loss or a metric, then depend on how the samples are batched at these
        weights (e.g. a branch on a batch statistic that flips away from the trained weights, a mean over
        tokens rather than samples), which the checks on the unperturbed model cannot see. Values that
        differ call to call (a loss that samples, a random model: ``_random_columns``) are not compared.
        Points of a trial spread over several tiles are returned with their tile; those of earlier tiles
        are compared only. Cost: the trial's points at other sizes once more (up to 12 of a 5-size trial;
        the set is larger than ``SMALL_SET``, so the trial runs at all)."""
        trial, self._trial_points = self._trial_points, []
        kept = self.batch_size
        others = sorted((t for t in trial if t[1] != kept), key=lambda t: -abs(math.log(t[1] / kept)))
        rtol, atol = self._stacked_tolerance((1e-4, 1e-7))
        compared = [c for c in range(len(trial[0][2]) if trial else 0) if c not in self._random_columns]
        for coeffs, bs, was, rows, index in others:
            self.perturber.set(coeffs)
            now = self.point_values()
            rows[index] = now[None, :]  # the kept batching's value (a list already returned is not read again)
            if not compared or torch.allclose(was[compared], now[compared], rtol=rtol, atol=atol, equal_nan=True):
                continue
            names = ["loss", *self.metric_fns]
            differ = {n: (float(a), float(b)) for c, (n, a, b) in enumerate(zip(names, was, now))
                      if c in compared and not torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)}
            raise LandscapeError(
                f"at {coeffs.tolist()}, with batches of {bs} samples "
                + ", ".join(f"{n} is {a:.7g}" for n, (a, b) in differ.items())
                + f", but with batches of {kept} (the size the batch-size trial kept) "
                + ", ".join(f"{b:.7g}" for a, b in differ.values())
                + ": the values depend on how the samples are batched at these weights, so the surface would mix "
                "batchings. Either the model's outputs do (e.g. a branch on, or a normalisation by, a statistic of "
                "the batch, or state kept between calls), or " + " or ".join(differ) + " is not a mean over samples "
                "(e.g. a mean over the tokens that are not padding: then average per sample first, or use "
                "nn.CrossEntropyLoss(ignore_index=...), whose token counts are weighed exactly). Pass batch_size= "
                "(the number of samples for the whole set at once, or the batch size you evaluate with) so that "
                "every point runs with one batching")

    def _use_format(self, channels_last: bool) -> None:
        if self.channels_last != channels_last:
            self._data.tree = self._formats[channels_last]
            self.batches = self._batches(self.batch_size)
            self.channels_last = channels_last
        self.conv_weights_format(channels_last)

    def conv_weights_format(self, channels_last: bool) -> None:
        """The model's 2D convolution weights in channels_last memory format (or back to contiguous):
        oneDNN then gives channels_last activations also for one-channel inputs, whose memory format
        is ambiguous (digits: cnn-digits 2x, resnet20-digits 1.2-1.4x faster a forward on a 2-core
        CPU, mostly in max pooling). The tensors' values stay; ``params.restoring`` puts the user's
        own storage back when the session ends."""
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        changed = False
        for w in self._format_weights:
            if not w.is_contiguous(memory_format=fmt):
                w.data = w.data.contiguous(memory_format=fmt)
                changed = True
        if changed:
            for m in self.forward.modules():  # folds derived from the old tensors
                if hasattr(m, "clear_cache"):
                    m.clear_cache()

    def _choose_format(self, coords: torch.Tensor, rows: list, should_stop) -> int:
        """channels_last or contiguous inputs and convolution weights, by ``_ab_trial``."""
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

    def _batch_independent(self, repeated: bool = False, rtol: float = 1e-4) -> bool:
        """Whether a sample's outputs depend on that sample alone (up to ``rtol``), so the batch size may be
        tuned (not so with e.g. BatchNorm without running statistics): on up to 16 samples at the weights
        held now, the batch's outputs equal its two halves' and, with ``repeated``, each copy's in the batch
        repeated twice (as points on the batch axis need; a table indexed by batch position fails that).
        False for a model without per-sample tensor outputs, or one that fails on these batches."""
        xb = tree_map(lambda t: t[:16], self.batches[0][0])
        n = batch_len(xb)
        if n < 2 and not repeated:
            return True
        runs = [tree_map(lambda t, a=a, b=b: t[a:b], xb) for a, b in ((0, n // 2), (n // 2, n))] if n >= 2 else []
        if repeated:
            runs.append(tree_map(lambda t: torch.cat([t, t]), xb))
        try:
            with eval_mode(self.model), torch.no_grad():
                whole, *outs = (call_model(self.model, b) for b in [xb, *runs])
        except Exception:  # noqa: BLE001 - e.g. a fixed batch size in the model
            return False
        # every per-sample tensor of the outputs, not only the logits: a tuple (o, -o) has none find_logits
        # names, and was said to mix samples, its points run one a pass (trial s38)
        whole, *leaves = (_output_leaves(o) for o in (whole, *outs))
        per_sample = [k for k, t in enumerate(whole) if t.ndim and len(t) == n and t.is_floating_point()]
        if not per_sample or any(len(ls) != len(whole) for ls in leaves):
            return False  # nothing per sample to compare
        for k in per_sample:
            got = [ls[k].double() for ls in leaves]
            halves = [torch.cat(got[:2])] if n >= 2 else []
            copies = list(got[-1].split(n)) if repeated else []
            if not all(_same_outputs(whole[k].double(), g, rtol=rtol) for g in halves + copies):
                return False
        return True

    def _stack_slots(self) -> list[tuple[dict, str, int]]:
        """(``module._parameters`` or ``_buffers``, key, layout index) of every tensor of ``self.forward``
        the perturber writes, found by identity: the folded model (other module names), tied weights
        (two slots, one index) and a module reachable by two paths (one slot) all map alike."""
        if self._stack_map is None:
            index = {id(t): i for i, t in enumerate(self.perturber.targets)}
            self._stack_map = [(table, key, index[id(t)]) for m in self.forward.modules()
                               for table in (m._parameters, m._buffers) for key, t in table.items()
                               if t is not None and id(t) in index]
        return self._stack_map

    def _points_stacked(self, coords: torch.Tensor) -> torch.Tensor:
        """Several points in one pass: ``(len(coords), 1 + n_metrics)`` float64 on the device.

        The weights of all points are stacked on a leading axis and ``torch.func.vmap`` runs the model
        (folded where BN folds) over it, each point's tensors swapped into the modules for the pass
        and put back after; a shared first layer (``multipoint``) combines its terms with every
        point's coefficients at once; loss and metrics are the fused ones of ``point_values``."""
        from torch.func import vmap

        flat = torch.addmm(self.perturber.base[None, :], coords, self.perturber.directions)
        parts = self.layout.split(flat)
        for i in self.perturber.clamped:  # as Perturber.set
            parts[i] = parts[i].clamp_min(0.0)
        slots = self._stack_slots()
        self._stacked_on_batch_axis = False
        batch_axis = self._batch_axis_stack()
        if batch_axis is not None and batch_axis.fits(self.batches, len(coords)):
            try:
                if "batch axis" not in self._stacks_checked:
                    self._hold_far_from(coords)
                sums = self._points_on_batch_axis(batch_axis, parts, coords)
                self._verify_stacked(coords, sums, "batch axis")
                self._stacked_on_batch_axis = True
                return sums
            except Exception as exc:  # noqa: BLE001 - e.g. a model that reshapes the batch: vmap below
                self._no_batch_axis(f"{type(exc).__name__}: {one_line(exc, 200, 'left out')}")
        used = sorted({i for _, _, i in slots})
        # the shared first layer whenever the model has one: stacked, its terms replace a matmul with
        # per-point weights by one small GEMM (mlp-digits: 0.09 vs 0.2 ms a point at 32 points a pass)
        shared = self._shared_candidate

        def one(p, c, xb, yb):
            tensors = dict(zip(used, p))
            saved = [table[key] for table, key, _ in slots]
            try:
                for table, key, i in slots:
                    table[key] = tensors[i]
                if shared is not None:
                    shared.batched_coeffs = c
                with self._autocast():
                    out = call_model(self.forward, xb)
                vals = self._values(_floats(out), yb)
                return vals if vals.dtype == torch.float64 else vals.float()  # a float64 model's values stay so
            finally:
                for (table, key, _), t in zip(slots, saved):
                    table[key] = t

        batched = vmap(one, in_dims=(0, 0, None, None))
        if "vmap" not in self._stacks_checked:
            self._hold_far_from(coords)
        stacked = [parts[i] for i in used]
        sums = None
        if shared is not None:
            shared.install()
        try:
            with warnings.catch_warnings():
                # torch's "performance drop ... batching rule for aten::_weight_norm ... file us an issue", six times
                # a surface (trial s60): vmap loops over the points for that op, which the tuning's timing measures
                warnings.filterwarnings("ignore", "There is a performance drop because we have not yet implemented "
                                        "the batching rule")
                for (xb, yb), w in zip(self.batches, self.batch_weights()):
                    vals = batched(stacked, coords, xb, yb).double()
                    if w is not None:  # several batches: each column weighted by its share (Evaluator.batch_weights)
                        vals = torch.where(w > 0, vals * w, 0.0)
                    sums = vals if sums is None else sums.add_(vals)
        finally:
            if shared is not None:
                shared.uninstall()
                shared.batched_coeffs = None
            for m in self.forward.modules():  # folds cached from the stacked tensors: not kept
                if hasattr(m, "clear_cache"):
                    m.clear_cache()
        # a model reading a weight past the swapped module tensors (a dict of them built in __init__) computes
        # every point at the weights it holds, as on the batch axis; one point of the first pass at 1e-4 passed
        # such a model 1.3e-3 off (trial s43): checked as closely as the batch axis
        self._verify_stacked(coords, sums, "vmap")
        return sums

    def _batch_axis_stack(self) -> BatchAxisStack | None:
        """The ``BatchAxisStack`` of ``self.forward`` (built on first use), None where the model does
        not qualify or it failed before."""
        if self._batch_axis is None:  # every input a batch of samples (nothing shared across them)
            ok = all(tensor_leaves(xb) and all(t.dim() >= 1 and len(t) == batch_len(xb) for t in tensor_leaves(xb))
                     for xb, _ in self.batches)
            stack = ok and BatchAxisStack.find(self.forward, self._stack_slots(), self._shared_candidate)
            if stack and not self._batch_independent(repeated=True, rtol=1e-5):
                stack = None
                self.notes["stacked_passes"] = ("vmap: a sample's outputs depend on the rest of its batch (e.g. a "
                                                "normalisation by the batch), so points cannot share one batch")
            self._batch_axis = stack or False
        return self._batch_axis or None

    def _stacked_tolerance(self, exact: tuple[float, float]) -> tuple[float, float]:
        """(rtol, atol) for a stacked pass against one point alone: ``exact`` in full precision, else within
        what batched kernels round in TF32 or bf16 (~1e-3/~1e-2 on a loss)."""
        return {"tf32": (5e-3, 1e-6), "bf16": (3e-2, 1e-6)}.get(self.settings.precision, exact)

    def _farthest(self, coords: torch.Tensor) -> int:
        """The row of ``coords`` farthest from the point the model holds now (the one a check compares)."""
        return int(torch.linalg.vector_norm(coords - self.perturber.coeffs, dim=1).argmax())

    def _hold_far_from(self, coords: torch.Tensor) -> None:
        """Hold weights far from every point of ``coords`` (4 times the largest coefficient, at least 4, past
        the first point on every axis) while the first stacked pass of a path runs: a model reading a weight
        past what the pass swaps (a dict of its weights built in ``__init__``) computes every point at the
        weights held, which ``_verify_stacked``'s single points then miss by far more than rounding, where held
        weights near the pass's points gave errors under its 1e-5 there and 1.7e-4 elsewhere (re-trial s43).
        Values of a model that reads no weight so are not changed."""
        self.perturber.set(coords[0] + 4.0 * max(1.0, float(coords.abs().max())))

    def _verify_stacked(self, coords: torch.Tensor, stacked: torch.Tensor, path: str) -> None:
        """Raise ``ValueError`` if a stacked pass's values differ from single points' beyond rounding (1e-5
        relative in float32): the first, middle, last and farthest from the weights held now of the first pass
        by ``path`` ("batch axis" or "vmap"; a weight read outside its layer, by a reduction on the batch axis
        or through a reference the pass does not swap, e.g. a dict of the weights built in ``__init__``, gives
        points other than their own values), and that farthest point in each pass larger than any checked
        before by that path. Its time is left out of the trial's timings (``_untimed``)."""
        k = len(coords)
        done = self._stacks_checked.get(path, 0)
        if k <= done:
            return
        t0 = time.perf_counter()
        farthest = self._farthest(coords)
        which = {farthest} if done else {farthest, 0, k // 2, k - 1}
        rtol, atol = self._stacked_tolerance((1e-10, 1e-12) if stacked.dtype == self.perturber.base.dtype
                                             == torch.float64 else (1e-5, 1e-7))
        for j in sorted(which):
            self.perturber.set(coords[j])
            alone = self.point_values()
            if not torch.allclose(stacked[j], alone, rtol=rtol, atol=atol, equal_nan=True):
                raise ValueError(f"stacked values {stacked[j].tolist()} differ from one point's {alone.tolist()} at "
                                 f"{coords[j].tolist()} (a pass of {k})")
        self._stacks_checked[path] = k
        self._untimed += time.perf_counter() - t0

    def _no_batch_axis(self, why: str) -> None:
        """Stack with ``vmap`` from now on, and say why (``notes``, so the provenance)."""
        self._batch_axis = False
        self.notes["stacked_passes"] = f"vmap: points on the batch axis failed ({why})"

    def _points_on_batch_axis(self, stack: BatchAxisStack, parts: list[torch.Tensor], coords: torch.Tensor) -> torch.Tensor:
        """``_points_stacked`` by ``BatchAxisStack``: the same (k, 1 + n_metrics) float64 values."""
        k = len(coords)
        per_point = getattr(self._values, "per_point", None)
        sums = None
        guard = PerSampleGuard([parts[i] for _, _, i in self._stack_slots()])
        try:
            with stack.active(parts, coords, guard), guard:
                for (xb, yb), w in zip(self.batches, self.batch_weights()):
                    n = batch_len(xb)
                    xk = stack.batch(xb, k)
                    with self._autocast():
                        out = call_model(self.forward, xk)
                    with guard.trusted():
                        out = _floats(out)
                        vals = per_point(out, yb, k) if per_point is not None else None
                        if vals is None:
                            if not isinstance(out, torch.Tensor) or out.dim() == 0 or len(out) != k * n:
                                raise ValueError(f"outputs of shape {getattr(out, 'shape', type(out).__name__)} "
                                                 f"for {k} points of {n} samples")
                            per = out.reshape(k, n, *out.shape[1:]).unbind()
                    if vals is None:  # the user's loss and metrics, point by point, still guarded
                        vals = torch.stack([self._values(o, yb) for o in per])
                    with guard.trusted():
                        vals = (vals if vals.dtype == torch.float64 else vals.float()).double()  # as vmap's
                        if w is not None:  # several batches: each column weighted by its share (batch_weights)
                            vals = torch.where(w > 0, vals * w, 0.0)
                        sums = vals if sums is None else sums.add_(vals)
        except NotPerSample as exc:  # a BaseException (a model catching Exception cannot hide it): vmap then
            raise ValueError(str(exc)) from None
        if guard.violation is not None:  # raised inside the model, and caught there
            raise ValueError(guard.violation)
        return sums

    def _stack_candidates(self) -> list[int]:
        """Points per pass to try, largest last: those whose activations fit ``STACK_BYTES`` (CPU; past the
        smallest, ``STACK_CPU_CACHE_BYTES``) or an eighth of the free GPU memory, estimated from the largest
        module output of one sample."""
        if self.points_per_pass or self.bn_batches is not None or self.settings.compile:
            return []
        per_sample = self._activation_bytes()
        if per_sample is None:
            return []
        pass_bytes = self.batch_size * per_sample
        if self.device.type == "cuda":
            return [k for k in STACK_GPU_SIZES if k * pass_bytes <= torch.cuda.mem_get_info(self.device)[0] / 8]
        ks = [k for k in (16, 32, 64) if k * pass_bytes <= STACK_BYTES]  # a vmapped pass costs ~0.7 ms more
        return ks[:1] + [k for k in ks[1:] if k * pass_bytes <= STACK_CPU_CACHE_BYTES]  # than a plain one

    def _activation_bytes(self, module=None) -> int | None:
        """Three times the largest module output of one sample of ``module`` (default ``self.forward``),
        in bytes (what a no-grad pass holds at once, roughly); None if the outputs cannot be measured."""
        module = self.forward if module is None else module
        sizes: list[int] = []

        def hook(m, args, out):
            if isinstance(out, torch.Tensor):
                sizes.append(out.numel() * out.element_size())

        xb = tree_map(lambda t: t[:1], self.batches[0][0])
        handles = []
        try:
            for m in module.modules():  # a ScriptModule takes no hooks ("not supported on ScriptModules")
                handles.append(m.register_forward_hook(hook))
            with torch.no_grad():
                call_model(module, xb)
        except Exception:  # noqa: BLE001 - no sizes known: nothing is stacked
            return None
        finally:
            for h in handles:
                h.remove()
        return 3 * max(sizes) if sizes else None

    def _trial_key(self) -> tuple | None:
        """What the points-per-pass trial's choice depends on (``CHOSEN``'s key), None where the model's
        modules cannot be listed. Speed only: a key that misses a difference costs speed, not values."""
        def shapes(tree) -> tuple:
            return tuple((tuple(t.shape), t.dtype, t.stride()) for t in tensor_leaves(tree))

        try:
            modules = tuple((name, type(m), m.extra_repr()) for name, m in self.forward.named_modules())
        except Exception:  # noqa: BLE001 - e.g. an extra_repr that fails: the trial runs
            return None
        loss = getattr(self.loss_fn, "__qualname__", type(self.loss_fn).__qualname__)
        return (str(self.device), self.settings.precision, torch.get_num_threads(), self.channels_last,
                self.batch_size, tuple((shapes(xb), shapes(yb)) for xb, yb in self.batches), modules,
                tuple((tuple(t.shape), t.dtype) for t in self.perturber.targets), self._shared_candidate is not None,
                loss, tuple(self.metric_fns))

    def _remember_choice(self) -> None:
        """Keep ``points_per_pass`` as this model's choice for later evaluators of this process (``CHOSEN``)."""
        key = self._trial_key()
        if key is not None and self.points_per_pass:
            with _CHOSEN_LOCK:
                CHOSEN.pop(key, None)
                CHOSEN[key] = int(self.points_per_pass)
                while len(CHOSEN) > CHOSEN_KEPT:
                    CHOSEN.pop(next(iter(CHOSEN)))

    def _planned_stacking(self) -> list[tuple[int, str]]:
        """The points-per-pass trial still to run, built on first use: (points, role) passes, role "time"
        (timed) or "check" (untimed: its pass is the first, checked against single points: ``_verify_stacked``).
        Empty where an earlier trial of this process chose for the same model, data and settings
        (``CHOSEN``): its first stacked pass is then checked as a given ``points_per_pass``'s is."""
        if (self._stack_plan is None and not self.points_per_pass and self.bn_batches is None
                and not self.settings.compile):  # as _stack_candidates' conditions
            key = self._trial_key()
            chosen = CHOSEN.get(key) if key is not None else None
            if chosen:
                self.points_per_pass = chosen
                self.notes["points_per_pass"] = (f"{self.points_per_pass}, as the trial of an earlier surface of this "
                                                 "process chose for the same model structure, data shapes and settings")
                self._stack_plan = []
        if self._stack_plan is None:
            ks = self._stack_candidates()
            if self._format_times:  # one point a pass was timed already (the format trial)
                self._stack_times[1] = min(self._format_times.values())
            self._stack_plan = ([] if self._format_times else [(1, "time"), (1, "time")]) + [(4, "check")] + [
                (k, "time") for k in ks] if ks else []
            if not ks and not self.points_per_pass:
                self.points_per_pass = 1
        return self._stack_plan

    def _stacking_too_slow(self) -> bool:
        """Whether one point on the CPU takes long enough that the trial's stacked passes are not run."""
        return self.device.type == "cpu" and self._stack_times.get(1, 0.0) > STACK_CPU_MAX_SECONDS

    def points_wanted(self) -> int:
        """How many points the next ``evaluate`` call should get to run at full speed: 1 while the batch
        size, format or shared layer are timed point by point, the single points or the next stacked pass
        of the points-per-pass trial (``_choose_stacking`` gives a pass the few points of the call's last
        tile beyond it), then four passes of the points per pass chosen. A runner that can group small
        tiles (``InProcessRunner``) does; calls stay short, so that a cancelled run loses little."""
        if self.tuning or self._format_plan or (self._shared_plan and self.points_per_pass is not None):
            return 1
        plan = self._planned_stacking()
        if plan:
            if plan[0][0] == 1 or self._stacking_too_slow():  # single points next
                return sum(1 for k, _ in plan if k == 1) or 1
            upto = next((i for i, (k, role) in enumerate(plan) if role == "time"), len(plan) - 1)
            return sum(k for k, _ in plan[:upto + 1])
        k = self._points_per_pass_now()
        return 1 if k == 1 else 4 * k  # several passes a call: the last, shorter one costs little

    def settle(self) -> None:
        """The run ended with a trial unfinished (a small grid): keep the best batch size and points per
        pass timed so far, so the provenance names them."""
        tuner = self._tuner
        if tuner is not None and not tuner.done:
            tuner.plan.clear()
            if tuner.best() is not None:
                self.use_batch_size(tuner.best())
        if not self.points_per_pass:  # 1 where the grid ended before any stacked pass
            self.points_per_pass = self._points_per_pass_now()

    def _points_per_pass_now(self) -> int:
        """The points per pass chosen, or the fastest timed so far while the trial goes on."""
        if self.points_per_pass:
            return int(self.points_per_pass)
        times = self._stack_times
        if not times:
            return 1
        # the largest stack within 5 % of the fastest: one timed pass each is noisy, and within that
        # margin a larger stack has fewer passes to pay Python for
        return max(k for k, t in times.items() if t <= 1.05 * min(times.values()))

    def _choose_shared_and_stacking(self, coords: torch.Tensor, rows: list, should_stop, tile_points: int) -> int:
        """The points-per-pass trial, then the shared-first-layer trial only if one point a pass is kept
        (a stacked pass always combines the shared layer's terms; its two single points run shared).
        Returns how many of ``coords`` were evaluated."""
        i = 0
        if self.points_per_pass is None:
            i += self._choose_stacking(coords, rows, should_stop, tile_points)
            if self.points_per_pass is None:  # the trial goes on in the next call
                return i
        if self.points_per_pass > 1:
            self._shared_plan.clear()
        return i + self._choose_shared(coords[i:], rows, should_stop)

    def _choose_stacking(self, coords: torch.Tensor, rows: list, should_stop, tile_points: int) -> int:
        """Points per pass by timing real points: one point at a time (twice, unless the format trial
        timed single points already), then each candidate of ``_stack_candidates`` in turn until one is
        more than 5 % slower per point than the best so far on two passes (a size's first pass may be
        slow from new shapes and fresh memory: it runs again before it is given up); the largest within
        5 % of the fastest is kept. On the CPU a point slower than ``STACK_CPU_MAX_SECONDS`` keeps one
        point a pass at once.

        The first stacked pass is checked against one point evaluated alone; a model, loss or metric
        that ``vmap`` cannot run, or a disagreement beyond rounding, keeps one point per pass, the
        reason in ``notes["points_per_pass"]``. A plan longer than the call goes on in the next one.
        Returns how many of ``coords`` were evaluated.
        """
        plan, times = self._planned_stacking(), self._stack_times
        if plan and plan[0][0] > tile_points and not self.grouped_calls:  # tiles of a Dask task: what fits
            plan[:] = [step for step in plan if step[0] <= tile_points]
            while plan and plan[-1][1] != "time":
                plan.pop()
        i = 0
        while plan:
            if plan[0][0] > 1 and self._stacking_too_slow():
                plan.clear()  # one point is slow enough that a pass's overhead does not matter (also in a
                break  # call too short for the next stacked pass: small tiles then keep coming one by one)
            if i + plan[0][0] > len(coords):
                break
            if should_stop is not None and should_stop():
                raise Cancelled()
            k, role = plan.pop(0)
            n = k + self._leftover(k, role, len(coords) - i - k, plan[0][0] if plan else 0)  # points it runs
            chunk = coords[i:i + n]
            i += n
            if n == 1:
                self.perturber.set(chunk[0])
                dt = self._seconds(lambda: rows.append(self.point_values()[None, :]), reps=1)
            else:
                n_rows = len(rows)
                try:
                    dt = self._seconds(lambda: rows.append(self._points_stacked(chunk)), reps=1) / n
                except Exception as exc:  # noqa: BLE001 - anything vmap or the user's code refuses
                    del rows[n_rows:]  # values of a pass that then failed its check
                    i -= n
                    self._stacking_failed(exc, n)
                    break
            if role != "time":
                continue
            best = min(times.values()) if times else float("inf")
            retry = k > 1 and k not in times  # a size's first timing: one more pass before it is given up
            times[k] = min(times.get(k, float("inf")), dt)
            if k > 1 and dt > 1.05 * best:
                if retry:
                    plan.insert(0, (k, "time"))
                else:
                    plan.clear()  # larger stacks only get slower from here
        if not plan and not self.points_per_pass:
            self.points_per_pass = self._points_per_pass_now()
            self._remember_choice()
        return i

    @staticmethod
    def _leftover(k: int, role: str, rest: int, next_k: int) -> int:
        """How many of the ``rest`` points of the call after a trial pass of ``k`` the pass takes too,
        rather than leave them to a small pass of their own: those the next step (``next_k`` points, 0 if
        none) cannot take, all of them for the untimed check, at most ``k // 2`` for a timed pass (its time
        per point then stands for ``k``)."""
        if rest <= 0 or (next_k and rest >= next_k):
            return 0
        if role == "check":
            return rest
        return rest if rest <= k // 2 else 0

    def _stacking_failed(self, exc: Exception, k: int) -> None:
        """One point per pass from now on, and why (``notes``, so the provenance)."""
        self.notes["points_per_pass"] = (f"one point per pass: stacking {k} points failed "
                                         f"({type(exc).__name__}: {one_line(exc, 160, 'left out')})")
        if self._stack_plan:
            self._stack_plan.clear()
        self._stack_times.clear()
        self._stack_times[1] = 0.0
        self.points_per_pass = 1
