"""Evaluate a model's loss and metrics at points ``w0 + Σ c_k d_k`` of weight space.

The evaluation data is put on the model's device once; each point writes the
perturbed weights in place, runs the batches and accumulates sums on the device,
so there is one host sync per tile, not per batch. No Dask, Plotly or widgets here.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import functools
import io
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Callable, ContextManager, Mapping, Protocol

import numpy as np
import torch
from torch import nn

from .choices import PRECISIONS
from .data import (NON_FINITE_DATA, EvalData, batch_len, call_model, check_finite_data, non_finite_leaves, read_data,
                   tree_leaves, tree_map, tree_structure)
from .errors import LandscapeError, is_int, one_line, short_repr, user_frame, warn_user
from .metrics import (NOTHING_KNOWN, PROBABILITY_OUTPUTS, SKIPPED_ACCURACY, UNCOUNTED_TARGETS, DefaultLoss, OwnLoss,
                      accuracy, auto_metrics, batch_denominator, check_mean_loss, class_weights, exact_fractions,
                      find_logits, fraction_counts, logits_expr, loss_disagrees, loss_name, own_loss,
                      probability_outputs_note, probe_targets, refuse_batch_sum, refuse_class_range, refuse_unpaired,
                      resolve_metrics, sum_splits, summed_over, unwrap_compiled)
from .multipoint import fused_values
from .params import (ParamLayout, Perturber, batchnorm_modules, eval_mode, flatten, model_device, model_dtype,
                     restoring, unwrap_model)
from .spec import data_fingerprint, tree_fingerprint
from .statecheck import (StateSnapshot, check_fns_stateless, check_model_stateless, identical_outputs, map_outputs,
                         random_outputs_note, random_values_note, run_checking_inputs, same_values)
from .surface import BATCH_MEANS, RANDOM_OUTPUTS, RANDOM_VALUES
from .tuning import BATCH_CANDIDATES, SMALL_SET, Cancelled, SpeedChoices, _floats, _same_outputs


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
    compile: bool | str = False  # True, or a torch.compile mode ("max-autotune", ...): see COMPILE_MODES
    points_per_pass: int | None = None  # None: measured on the first real points (see Evaluator)
    fold_bn: bool = True  # eval mode: conv→BN pairs run as one conv (rounding-level change; see fold.py)
    target_key: str | int | None = "labels"  # dict key (or tuple index) of the targets: see data.read_data
    # a BatchNorm running_var the directions move, where a point makes it negative: True clamps it at 0, False
    # leaves it (NaN outputs there, as in the reference); None (the default) decides by the directions: clamped
    # for paths between models (their provenance says so), left for directions from files or the user
    clamp_running_var: bool | None = None

    def __post_init__(self):
        key = self.target_key  # np.int64(0) fell through every isinstance(int) test: the model ran on the
        if is_int(key):  # targets, and the spec's JSON raised (trial s35)
            object.__setattr__(self, "target_key", int(key))
        elif not isinstance(key, (str, type(None))):
            raise LandscapeError(f"target_key={short_repr(key)} of type {type(key).__name__}; expected the key of the "
                                 "targets in dict batches (a str), their position in tuple batches (an int), or "
                                 "None")

    def to_json(self) -> dict:
        out = asdict(self)
        for name, defaults in (("target_key", ("labels",)), ("clamp_running_var", (None, True))):
            if out[name] in defaults:  # defaults left out: spec keys of earlier versions stay valid
                del out[name]
        return out

    def check_one_point_modes(self) -> None:
        """Raise ``LandscapeError`` for several points per pass in a mode that evaluates one point at a
        time: BatchNorm statistics re-estimated at every point (``"bn"`` is that mode's alias)."""
        if self.mode in ("bn-recompute", "bn") and self.points_per_pass not in (None, 1):
            raise LandscapeError(
                f"points_per_pass={self.points_per_pass} with mode={self.mode!r}; BatchNorm statistics are "
                "re-estimated at every point, one point per pass: use points_per_pass=None or 1")

    def with_overrides(self, **overrides) -> "EvalSettings":
        """A copy with the named fields replaced; an unknown name raises ``LandscapeError``
        with the closest field names (``loss_name`` comes from ``loss_fn``, not from here)."""
        names = [f.name for f in dataclasses.fields(self) if f.name != "loss_name"]
        for name in overrides:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=2)
                hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
                raise LandscapeError(f"evaluation setting {name!r} does not exist; {hint}expected one of {names}")
        return dataclasses.replace(self, **overrides)


class PointEvaluator(Protocol):
    """What runners need from a per-point evaluator: ``Evaluator`` (loss and metrics) or a
    wrapper around it such as ``hessian.HessianEvaluator`` (``compute.QUANTITIES``)."""

    metric_names: list[str]  # columns after the loss, in order
    data_fingerprint: str
    n_samples: int
    device: torch.device
    bn_fold: str  # how BatchNorm ran, for the provenance
    batch_size: int | None  # samples per forward pass; None while still being tuned
    points_per_pass: int | None  # grid points per vmapped pass; None until chosen

    def session(self) -> ContextManager: ...

    def evaluate(self, coords: np.ndarray, should_stop: Callable[[], bool] | None = None) -> np.ndarray: ...


# ----------------------------------------------------------- evaluator ----

#: how to write a loss over kept targets whose batches' values ``Evaluator`` and ``hessian`` average exactly
MEAN_LOSS_FIX = ("nn.CrossEntropyLoss(ignore_index=..., weight=...), whose batches are weighted by their kept "
                 "targets' weights, or a mean over samples (e.g. F.cross_entropy(..., reduction='sum') / "
                 "len(targets) where no target is left out or weighted)")
#: what the batches of a model or loss whose values depend on the batching hold (trial s53: class-sorted data
#: gave batches of one class each, the loss 4.40 against 0.045 over the whole set, with no word of the order)
IN_ORDER = ("each of consecutive samples in the data's index order (a DataLoader's shuffle is not applied: permute "
            "the data once, e.g. x[p], y[p] for p = torch.randperm(len(x)), for batches that mix its classes)")
#: what is found where a loss that is an exact mean over what it averages moves with the batching
OUTPUTS_MOVE = ("the model's outputs depend on the rest of the batch (e.g. BatchNorm without running statistics, or "
                "a mean over the batch in forward)")
#: how to get the whole set's value where the model's outputs depend on the rest of the batch
OUTPUTS_FIX = ("a model whose outputs do not depend on the rest of the batch, e.g. BatchNorm with running statistics "
               "(track_running_stats=True), which is evaluated in eval mode")
#: samples, spread over the evaluation set, on which the loss and metrics are checked to be means over samples
SPREAD_SAMPLES = 256
#: the fewest samples those checks run on, a smaller given batch size notwithstanding: with batch_size=1..3 they ran on
#: fewer than 4 and were skipped, so a lambda's class weights were weighted by samples (up to 18 % off, its Hessian
#: 66 %) and a lambda's mean over kept targets gave NaN at every point (trial W, s44)
CHECKED_AT_LEAST = 8
BN_BATCH = 1024  # most samples a pass when BatchNorm statistics are re-estimated: fixed, so the statistics
# do not depend on the evaluation batch size (bn_data of at most 1024 samples: one pass, exact batch statistics;
# more: passes of near-equal size, e.g. 750 + 750 for 1500)


def bn_passes(n: int) -> tuple[int, int]:
    """(number of passes, samples a pass) to re-estimate BatchNorm statistics over ``n`` samples: passes of at
    most ``BN_BATCH`` and of near-equal size, since the cumulative average weighs each pass equally (a short
    last pass, 1024 + 476 of 1500, would weigh its samples twice as much as the others)."""
    n_passes = -(-n // BN_BATCH)
    return n_passes, -(-n // n_passes)


def reestimate_batchnorm(model: nn.Module, batches, run: Callable | None = None) -> None:
    """Re-estimate the BatchNorm running statistics of ``model`` at its current weights: the cumulative
    average over ``batches`` (inputs; ``bn_passes`` sizes them), each passed through ``run`` (default
    ``call_model(model, xb)``), only the BatchNorm layers in train mode (Dropout and the rest stay in eval
    mode); the model is left in eval mode.

    Not ``torch.optim.swa_utils.update_bn``, which runs the whole model in train mode: with Dropout before a
    BatchNorm layer its statistics are those of dropped-out activations, random and unlike the eval-mode
    activations each point is then evaluated on; here they are those activations'."""
    bns = batchnorm_modules(model)
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.eval()
    for m in bns:
        m.train()
    run = run or functools.partial(call_model, model)
    with torch.no_grad():
        for xb in batches:
            run(xb)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
        m.eval()


def data_key(ev: EvalData) -> str:
    """The fingerprint of evaluation data: ``spec.data_fingerprint(x, y)`` for plain ``(inputs, targets)``
    tensors (the keys stored before pytree data), ``spec.tree_fingerprint`` for every other form."""
    if ev.rule == "pair" and all(isinstance(t, torch.Tensor) for t in ev.tree):
        return data_fingerprint(ev.tree[0], ev.tree[1])
    return tree_fingerprint(tree_structure(ev.tree), tree_leaves(ev.tree))


def choose_loss(model: nn.Module, ev: EvalData, loss_fn: Callable | None) -> tuple[Callable, Callable, str]:
    """(loss, ``split(tree) -> (inputs, targets)``, a note saying which loss) for ``ev``.

    With no ``loss_fn`` and a dict batch (or inputs only), the model is called on a few samples
    with the whole dict, labels included; if its outputs hold a scalar ``.loss`` (Hugging Face
    models), that loss is used and the labels stay in the inputs. Otherwise ``loss_fn``, or the
    default cross-entropy on the logits (``metrics.DefaultLoss``); a ``torch.compile``d loss as the
    function it wraps (``metrics.unwrap_compiled``).
    """
    loss_fn = unwrap_compiled(loss_fn)
    if loss_fn is None and ev.rule in ("key", "inputs"):
        head = tree_map(lambda t: t[:2].clone(), ev.tree)  # a copy: a model writing into its inputs is refused later
        try:
            with eval_mode(model), torch.no_grad():
                out = call_model(model, head)
        except Exception:  # e.g. the model takes no `labels` keyword: then not the model's own loss
            out = None
        if out is not None and own_loss(out) is not None:
            def split(tree):
                return tree, ev.split(tree)[1]
            return OwnLoss(), split, "the model's own outputs.loss (labels passed to the model with the inputs)"
    if loss_fn is None:
        return DefaultLoss(), ev.split, "cross-entropy on the logits (default)"
    return loss_fn, ev.split, loss_name(loss_fn)


def _mixed_splits(per_split: list) -> list:
    """``per_split`` (one entry for each split of ``split_positions``) in the order of the checks' values: the
    halves three times (the model's outputs, rolled ones, right and wrong ones), the other splits, then the
    other splits again (right and wrong ones: a per-class recall over few kept targets, all predicted wrong,
    was 0 in every split and taken for a mean over kept targets, re-trial X s44)."""
    return per_split[:1] * 3 + per_split[1:] + per_split[1:]


def split_positions(m: int) -> list[tuple[slice, slice]]:
    """The ways the checks that a batch's value is the weighted mean of its parts' values split ``m`` samples
    in two: halves, even and odd positions, the first third and the rest. One split is not enough: a mean
    over kept targets equals the sample-weighted mean of two parts that keep equal shares of their samples
    (22 of 25 in each half of 50 digits whose label 0 was ignored: batch_size=50 was 9e-4 off, unwarned)."""
    return [(slice(None, m // 2), slice(m // 2, None)), (slice(0, None, 2), slice(1, None, 2)),
            (slice(None, m // 3), slice(m // 3, None))]


def _evenly(n: int, k: int) -> torch.Tensor:
    """``k`` distinct positions of ``range(n)`` (``k <= n``) spread evenly, first and last included."""
    return torch.linspace(0, n - 1, k).round().long()


def spread_indices(ev: EvalData, m: int, probed_ignore: int | None = None) -> torch.Tensor:
    """Indices (m,) of ``m`` samples spread evenly over ``ev``, in order. For class-index targets, where the set
    holds samples whose targets are all left out (padding: ``_counted``) beside ones that keep some: where an
    even spread holds fewer than two that keep some, or none of the padding, ``m`` spread over each kind, at
    least half of them keeping targets; those that keep some first. So the splits of ``split_positions`` part
    them unevenly: the halves into a part keeping more than its share and one keeping less or nothing (where a
    mean over kept targets is NaN, which no mean over samples is), the even and odd positions both keeping some
    (where class weights show). On samples that keep no target a mean over kept targets is NaN on the whole and
    on both parts and a sum of them 0; on samples that all keep one a mean over them is one over samples; on
    parts that keep equal shares (spread evenly over 8 samples, 2 of 4 in each) it is one over samples too; and
    two parts of which one keeps nothing fit any weighing of kept targets: the checks took such losses for means
    over samples, or a mean weighted by class for one over kept targets.
    Trial V (s43) and its sweep (s44), 60 samples with ``batch_size=7``: 10 kept targets spread, none among
    the 7 checked, 4.9e-2 off unwarned (class weights, 4.1e-2; their Hessian 37 % off); one kept target summed,
    scaled by 7/60; two kept targets weighted by class, both in the same part of every split, 17 % off."""
    pick = _evenly(ev.n, m)
    targets = weighing_labels(*ev.split())  # the labels a model computing its own loss is given too
    if targets is None or len(targets) != ev.n:
        return pick
    counted = _counted(targets.reshape(len(targets), -1), probed_ignore).any(1).cpu()
    kept, left = counted.nonzero().reshape(-1), (~counted).nonzero().reshape(-1)
    if not len(kept) or not len(left):
        return pick
    if not min(2, len(kept)) <= int(counted[pick].sum()) < m:
        k = min(len(kept), max(m - len(left), (m + 1) // 2))
        pick = torch.cat([kept[_evenly(len(kept), k)], left[_evenly(len(left), m - k)]]).sort().values
    keeps = counted[pick]
    return torch.cat([pick[keeps], pick[~keeps]])


def spread_splits(ev: EvalData, split: Callable, m: int, device,
                  probed_ignore: int | None = None) -> tuple[tuple, list[list]]:
    """``(inputs, targets)`` of ``m`` samples spread over ``ev`` (``spread_indices``), and for each of
    ``split_positions(m)`` those of its two parts: what the checks that a batch's value is the weighted mean of
    its parts' values compare (``Evaluator._fix_batching_for_batch_means``, ``hessian._kept_targets_rule``)."""
    idx = spread_indices(ev, m, probed_ignore).to(device)
    return split(ev.take(idx).tree), [[split(ev.take(idx[p]).tree) for p in pair] for pair in split_positions(m)]


def judged(triples: list, weights: list, by_class: bool) -> tuple[list, list]:
    """The splits (``triples`` and their parts' ``weights``) a check of a batch mean can judge: all of them, or for
    a loss weighing classes (``by_class``: ``class_weighting``) those whose two parts both weigh something (a part
    of classes weighted 0 still adds to the numerator beside label smoothing: ``weightless``)."""
    if not by_class:
        return triples, weights
    kept = [(t, w) for t, w in zip(triples, weights) if w[0] and w[1]]
    return [t for t, _ in kept], [w for _, w in kept]


def first_disagreement(triples: list, weights: list, tol: float) -> tuple[float, float, bool] | None:
    """The first (whole, weighted mean of its parts, weights known) of ``triples`` ((whole, first, second)
    values) whose parts' mean, weighted by ``weights`` ((w1, w2, known) each), is not the whole's value to
    ``tol`` relative to the largest of the three; None where every one is (parts weighing nothing are skipped)."""
    for (whole, first, second), (w1, w2, known) in zip(triples, weights):
        if w1 + w2 == 0:
            continue
        mean = (first * w1 + second * w2) / (w1 + w2) if w1 and w2 else (first if w1 else second)
        scale = max(abs(whole), abs(first), abs(second))  # a signed mean near 0: its halves' size
        if not (abs(whole - mean) <= tol * scale or (math.isnan(whole) and math.isnan(mean))):
            return whole, mean, known
    return None


#: how far ``far_outputs_disagreement`` moves half the outputs, in units of their spread over the samples
FAR_SCALES = (1.0, 10.0, 100.0, 1000.0)


def far_outputs_disagreement(fn: Callable, out, targets, pair: list, weights: tuple, tol: float
                             ) -> tuple[float, float, float] | None:
    """``(whole, weighted mean of its parts, scale)`` where ``fn``'s value on ``out`` (outputs of ``m`` samples) with
    its odd samples' float outputs moved by ``scale`` times their spread (``FAR_SCALES``) is not the mean of its
    values on the even and the odd samples (``pair``: their ``(inputs, targets)``; ``weights``: ``part_weights``),
    to ``tol``; None where it is at every scale (or the moved outputs fail or give NaN). A loss that is a mean over
    samples is one wherever the outputs lie; a function of the batch's mean that bends only away from the model's
    outputs (a loss capped for a readable plot, ``mse.clamp(max=10)``) looked like one there, and batches of 4096
    of 12,000 samples gave their capped means' mean, 6.8 % off, unwarned (trial s47)."""
    leaves = [t for _, t in tree_leaves(out) if t.is_floating_point() and t.dim() > 0]
    if not leaves:
        return None
    m = len(leaves[0])
    odd = torch.arange(m, device=leaves[0].device) % 2

    def moved_by(scale):
        def move(t):
            if t.dim() == 0 or len(t) != m:
                return t
            spread = float(t.detach().float().std()) if t.numel() > 1 else 0.0
            return t + (scale * (spread if math.isfinite(spread) and spread > 0 else 1.0)) * \
                odd.view(m, *[1] * (t.dim() - 1)).to(t.dtype)
        return move

    w1, w2, _ = weights
    for scale in FAR_SCALES:
        mixed = map_outputs(moved_by(scale), out)
        try:
            with torch.no_grad():  # a loss reading the model's parameters: torch's "requires_grad ... to a scalar"
                whole = float(fn(mixed, targets))
                parts = [float(fn(map_outputs(lambda t, s=s: t[s] if t.dim() and len(t) == m else t, mixed,
                                              every_tensor=True), yb)) for s, (_, yb) in zip((slice(0, None, 2),
                                                                                              slice(1, None, 2)), pair)]
        except Exception:  # noqa: BLE001, S112 - e.g. probabilities moved out of [0, 1]: nothing to tell here
            continue
        if not all(math.isfinite(v) for v in (whole, *parts)):
            continue
        found = first_disagreement([(whole, *parts)], [(w1, w2, False)], tol)
        if found is not None:
            return found[0], found[1], scale
    return None


def part_weights(fn: Callable, pair: list, m: int, positions: tuple[slice, slice]) -> tuple[float, float, bool]:
    """What each part ``pair`` of ``m`` samples split at ``positions`` (``spread_splits``) weighs in ``fn``'s
    mean: the targets it keeps where ``metrics.batch_denominator`` knows ``fn`` (and True), else its number
    of samples (and False)."""
    known = [batch_denominator(fn, yb) for _, yb in pair]
    if known[0] is not None:
        return float(known[0]), float(known[1]), True
    first, second = (len(range(m)[p]) for p in positions)
    return first, second, False


def weighing_labels(inputs, targets) -> torch.Tensor | None:
    """The labels of a batch that a loss averaging over its kept targets counts: the targets where they are one
    integer tensor (class indices; padding left out) or float one (missing values, NaN, left out); else the first
    such tensor among their leaves (labels beside sample weights, ``(y, w)``); for data carrying no targets
    (``target_key=None``: a model computing its own loss from the labels it is given) the inputs' ``"labels"``
    entry. None where there are none. A rule found on them (``kept_rules``) is still checked against the loss's
    values before it weighs anything (``kept_mean_rules``): a batch of padding alone, which weighed its NaN by its
    samples (an all-NaN surface for such targets, re-trial s46), weighs 0."""
    def labels(t):
        return isinstance(t, torch.Tensor) and t.dim() > 0 and not (t.is_complex() or t.dtype == torch.bool)
    if isinstance(targets, torch.Tensor):
        return targets if labels(targets) else None
    if targets is None:
        found = inputs.get("labels") if isinstance(inputs, Mapping) else None
        return found if labels(found) else None
    return next((t for _, t in tree_leaves(targets) if labels(t)), None)


def kept_rules(pairs: list, probed_ignore: int | None = None, probed_weights: torch.Tensor | None = None) -> list:
    """What a loss or metric whose batches are not means over samples may average over instead, in the order
    tried (``kept_mean_rules``), for integer targets (``pairs`` as ``spread_splits`` gives them): ("weights", w),
    each target weighted by its class's ``probed_weights`` (a function's ``weight=``, read from its gradient:
    ``metrics.class_weights``), first; ("ignore", v), the targets other than v and -100, for v = -100
    (``F.cross_entropy``'s default, a model's own loss over padded labels), the value a probe found the loss
    gives no gradient (``probed_ignore``), another negative label or 255 the targets hold (a void or padding
    label), 0 (a padding id); ("shifted", -100), the labels other than -100 after each sequence's first (a causal
    language model's own next-token loss), second among those; ("rows", -100), the samples holding a label other
    than -100 (a mean of per-sequence means, sequences of padding alone left out); last, for dict inputs holding
    an ``"attention_mask"``, ("mask", "attention_mask") and ("mask-shifted", "attention_mask"), the positions it
    keeps, all or after each sequence's first (a token loss masked by it, whatever the labels hold there), and
    ("sample-weights", k) for each leaf k of tuple or dict targets that can be sample weights (``Σ loss·w / Σ w``,
    weighted by ``Σ w``). For float targets holding NaN (missing values a loss leaves out, ``((out - y)[~y.isnan()]
    ** 2).mean()``): ("finite", None), the values not missing, and ("rows-finite", None), the samples holding one.
    None (an empty list) for other targets."""
    masked = ([("mask", MASK_KEY), ("mask-shifted", MASK_KEY)]
              if all(isinstance(xb, Mapping) and isinstance(xb.get(MASK_KEY), torch.Tensor)
                     for pair in pairs for xb, _ in pair) else [])
    common = set.intersection(*(_sample_weight_leaves(yb) for pair in pairs for _, yb in pair)) if pairs else set()
    masked += [("sample-weights", k) for k in sorted(common)]  # Σ loss·w / Σ w with (y, w) targets (trial s47)
    labels = [weighing_labels(xb, yb) for pair in pairs for xb, yb in pair]
    if any(t is None for t in labels):
        return masked
    if any(t.is_floating_point() for t in labels):  # a mean over the values not missing (NaN), trial s46
        missing = all(t.is_floating_point() for t in labels) and any(not bool(torch.isfinite(t).all()) for t in labels)
        rows = [("rows-finite", None)] if all(t.dim() >= 2 for t in labels) else []
        return ([("finite", None), *rows] if missing else []) + masked
    held = torch.unique(torch.cat([t.reshape(-1) for t in labels])).tolist()
    others = [v for v in held if (v < 0 or v == 255) and v != -100][:2]
    rules: list = [("ignore", v) for v in dict.fromkeys([-100, probed_ignore, *others, 0]) if v is not None]
    if all(t.dim() >= 2 and t.shape[-1] > 1 for t in labels):  # a causal LM's own loss over labels[..., 1:]
        rules.insert(1, ("shifted", -100))  # (its logits[..., :-1, :] predict them): 1.6e-3 off in batches of 8, s47
    if all(t.dim() >= 2 for t in labels):  # a mean over samples of each one's mean over its kept targets, samples
        rules.append(("rows", -100))  # keeping none left out: weighted by tokens, 3.4e-4 off, unwarned (trial s47)
    # the class weights its gradient shows first: a class weighted 0 is not ignored (beside label smoothing it adds
    # to the numerator), and -100 fitted the checked samples by chance where it counted that class (re-trial s43)
    return ([("weights", probed_weights)] if probed_weights is not None else []) + rules + masked


#: the inputs' entry a token loss may average over instead of labels (``("mask", MASK_KEY)``, ``kept_rules``)
MASK_KEY = "attention_mask"


def rule_weight(rule: tuple, inputs, targets) -> torch.Tensor:
    """What a batch of ``(inputs, targets)`` weighs under ``rule`` (``kept_rules``): the sum of its sample weights
    for ("sample-weights", k), the k-th leaf of its targets; else ``kept_denominator`` of its labels."""
    if rule[0] == "sample-weights":
        return tree_leaves(targets)[rule[1]][1].sum()
    return kept_denominator(rule, weighing_labels(inputs, targets), inputs)


def _sample_weight_leaves(targets) -> set[int]:
    """The positions, in ``tree_leaves`` order, of the leaves of tuple or dict ``targets`` that can be sample
    weights: float, one value per sample, finite and not negative."""
    if isinstance(targets, torch.Tensor) or targets is None:
        return set()
    leaves = [t for _, t in tree_leaves(targets)]
    n = len(leaves[0]) if leaves and leaves[0].dim() else -1
    return {k for k, t in enumerate(leaves) if t.is_floating_point() and t.dim() in (1, 2) and len(t) == n
            and t.numel() == n and bool(torch.isfinite(t).all()) and bool((t >= 0).all())}


def kept_denominator(rule: tuple, targets: torch.Tensor | None, inputs=None) -> torch.Tensor:
    """What a batch of ``targets`` weighs under ``rule`` (``kept_rules``): how many targets it keeps, or the
    sum of their class weights (targets out of the classes' range count for nothing)."""
    kind, value = rule
    if kind == "mask":  # the positions the inputs' attention mask keeps (a token loss masked by it, trial s47)
        return (inputs[value] != 0).sum()
    if kind == "mask-shifted":  # those a next-token loss masked by it predicts: all but each sequence's first
        return (inputs[value][..., 1:] != 0).sum()
    if kind == "finite":
        return torch.isfinite(targets).sum()
    if kind == "rows-finite":  # the samples with any target not missing
        return torch.isfinite(targets.reshape(len(targets), -1)).any(1).sum()
    if kind == "rows":  # the samples with any target other than the value and -100
        flat = targets.reshape(len(targets), -1)
        return ((flat != value) & (flat != -100)).any(1).sum()
    if kind == "shifted":  # the labels a next-token loss predicts: all but each sequence's first
        return (targets[..., 1:] != value).sum()
    if kind == "weights":
        w = value.to(targets.device)
        return w[targets[(targets >= 0) & (targets < len(w))]].sum()
    return ((targets != value) & (targets != -100)).sum()


#: each kind of ``kept_rules``' rules in words, ``{value}`` its value (``kept_rule_words``)
RULE_WORDS = {
    "ignore": "their targets other than {value} and -100",
    "finite": "their targets not missing (NaN)",
    "shifted": "their labels other than -100 after each sequence's first (a next-token loss)",
    "mask": "the positions their inputs' {value!r} keeps",
    "mask-shifted": "the positions their inputs' {value!r} keeps after each sequence's first (a next-token loss)",
    "rows-finite": "their samples holding a target not missing (a mean of per-sample means)",
    "rows": "their samples holding a target other than {value} (a mean of per-sample means)",
    "sample-weights": "the sum of their sample weights (the targets' leaf {value})",
}


def kept_rule_words(rule: tuple) -> str:
    """What batches weighted under ``rule`` (``kept_rules``) are weighted by, in words (a Hessian's loss note)."""
    kind, value = rule
    if kind == "weights":
        return f"their targets' class weights {[round(float(v), 6) for v in value]}"
    return RULE_WORDS[kind].format(value=value)


def kept_mean_rules(triples: list, pairs: list, tol: float, rules: list) -> list:
    """Every one of ``rules`` (``kept_rules``), in order, whose counts weigh the parts' values of each split into
    its whole's to ``tol`` (``triples``: (whole, first, second) values, one for each pair of ``pairs``, in order;
    a split keeping nothing under a rule rules it out)."""
    found = []
    for rule in rules:
        kept = [(*(float(rule_weight(rule, xb, yb)) for xb, yb in pair), True)
                for pair in pairs]
        ts, ws = judged(triples, kept, rule[0] == "weights")
        if ts and all(w1 + w2 for w1, w2, _ in ws) and first_disagreement(ts, ws, tol) is None:
            found.append(rule)
    return found


def chunk_triples(model: nn.Module, ev: EvalData, split: Callable, fn: Callable, size: int, device) -> list:
    """``fn``'s values at the model on the whole set in chunks of ``size`` samples in the data's order, each with
    those of its two halves: ``[((whole, first, second), [(inputs, targets) of each half]), ...]`` (chunks of
    fewer than 2 samples left out). What ``fits_every_chunk`` weighs: the checks of a batch mean look at up to
    256 samples spread over the set (as few as 8 with a small batch_size), which a label the loss leaves out in 10
    of 600 sequences, or sequences of padding alone beside single-token ones, passed unseen, and the batches
    were weighted by a rule those break: 1.2e-3 and 3.4e-4 off, unwarned (trial s47). Two passes over the set."""
    out = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, ev.n - 1, size):
            idx = torch.arange(start, min(start + size, ev.n), device=device)
            half = len(idx) // 2
            parts = [split(ev.take(idx[:half]).tree), split(ev.take(idx[half:]).tree)]
            xw, yw = split(ev.take(idx).tree)
            values = (float(fn(call_model(model, xw), yw)), *(float(fn(call_model(model, x), y)) for x, y in parts))
            out.append((values, parts))
    return out


def set_chunks(model: nn.Module, ev: EvalData, split: Callable, fn: Callable, size: int, device
               ) -> tuple[list, int]:
    """(``chunk_triples`` in chunks of ``size`` samples, at most the set's and 8 at least, that size); no chunks
    where they fail (e.g. out of memory: the checks on the spread samples then stand alone)."""
    size = max(min(size, ev.n), CHECKED_AT_LEAST)
    try:
        return chunk_triples(model, ev, split, fn, size, device), size
    except Exception:  # noqa: BLE001
        return [], size


def fits_every_chunk(chunks: list, rule: tuple | None, tol: float) -> tuple[float, float, int] | None:
    """None where ``rule`` (``kept_rules``; None: the samples) weighs the halves' values of each of ``chunks``
    (``chunk_triples``) into the chunk's own to ``tol``; else (whole, weighted mean of its halves, chunk number)
    of the first that it does not."""
    for k, (values, parts) in enumerate(chunks):
        if rule is None:
            weights = (float(batch_len(parts[0][0])), float(batch_len(parts[1][0])), False)
        else:
            weights = (*(float(rule_weight(rule, x, y)) for x, y in parts), True)
            if rule[0] == "weights" and not (weights[0] and weights[1]):
                continue  # a part of classes weighted 0 still counts beside label smoothing (``judged``)
        found = first_disagreement([values], [weights], tol)
        if found is not None:
            return found[0], found[1], k
    return None


def refuse_sums(model: nn.Module, loss_fn: Callable, xb, yb, out, fns: Mapping[str, Callable]) -> None:
    """Refuse a loss or metric (``fns``, by name) that sums over the batch (``metrics.refuse_batch_sum``; a
    model's own loss: ``refuse_own_loss_sum``) on the samples ``xb``, ``yb`` (outputs ``out``): a loss also on
    predictions right and wrong in each half (a margin loss summed is 0 on outputs meeting every margin, as a
    mean is, trial s42); a metric on those (a count of right predictions is 0 on samples all predicted wrong) and
    on every prediction right (a part holding few kept targets still counts some). Functions whose denominators
    ``batch_denominator`` knows (the built-in accuracy, the default loss) are means: not checked."""
    with torch.no_grad(), warnings.catch_warnings():  # the checks' few samples: scikit-learn's "only one
        warnings.simplefilter("ignore")  # class" (trial s40)
        if isinstance(loss_fn, OwnLoss):
            with eval_mode(model):
                refuse_own_loss_sum(model, loss_fn, xb, out)
        elif batch_denominator(loss_fn, yb) is None:
            for o in (out, _right_and_wrong(out, yb)):
                refuse_batch_sum(loss_fn, o, yb, None)
        for name, fn in fns.items():
            if batch_denominator(fn, yb) is not None:
                continue
            for o in (out, _right_and_wrong(out, yb), _right_and_wrong(out, yb, odd_wrong=False)):
                refuse_batch_sum(fn, o, yb, None, what=f"metric {name!r}",
                                 example="a count of right predictions, (out.argmax(1) == y).sum()",
                                 fix="divide by the number of samples (or of kept targets), e.g. "
                                     "(out.argmax(1) == y).float().mean()")


def _counted(targets: torch.Tensor, probed_ignore: int | None) -> torch.Tensor:
    """Which class-index ``targets`` hold a label no loss leaves out (not negative, 255 or ``probed_ignore``); which
    float ones are not missing (finite)."""
    if targets.is_floating_point():
        return torch.isfinite(targets)
    return (targets >= 0) & (targets != 255) & (targets != (-1 if probed_ignore is None else probed_ignore))


def holds_padding(targets, probed_ignore: int | None = None) -> bool:
    """Whether ``targets`` hold a label a loss may leave out (negative, 255, or ``probed_ignore``, the one a probe
    found the loss ignores), or are not class indices: the sum checks on them may then have told nothing."""
    if isinstance(targets, torch.Tensor) and not (targets.is_floating_point() or targets.is_complex()):
        return not bool(_counted(targets, probed_ignore).all())
    return True


def refuse_sums_spread(model: nn.Module, ev: EvalData, split: Callable, loss_fn: Callable,
                       fns: Mapping[str, Callable], probed_ignore: int | None = None) -> None:
    """``refuse_sums`` again on 8 samples spread over those of the set ``ev`` (``split`` into inputs and targets)
    whose class-index targets hold a label no loss leaves out (not negative, 255 or ``probed_ignore``; all samples
    for other targets), for where the first 8 hold such a label (``holds_padding``): a set whose first samples
    carry only ignored targets (label-sorted, padding first) gave 0 on both halves, which tells nothing, and a
    summed loss ran as the whole set's sum, N times the mean, unwarned (trial s42; the Hessian's too, trial s43;
    8 samples spread over all of a set 93 % padding held one kept target, re-trial s43)."""
    if ev.n < 16:
        return
    targets = ev.split()[1]
    idx = torch.arange(ev.n)
    if isinstance(targets, torch.Tensor) and not (targets.is_floating_point() or targets.is_complex()):
        idx = _counted(targets.reshape(len(targets), -1), probed_ignore).any(1).nonzero().reshape(-1).cpu()
        if len(idx) < 2:
            return  # a sum and a mean of one kept target are the same
    device = tree_leaves(ev.tree)[0][1].device
    pick = idx[torch.linspace(0, len(idx) - 1, min(8, len(idx))).round().long()]
    xs, ys = split(ev.take(pick.to(device)).tree)
    try:
        with eval_mode(model), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outs = call_model(model, xs)
    except Exception:  # noqa: BLE001 - e.g. a model needing its whole batch: checked on the first 8 only
        return
    refuse_sums(model, loss_fn, xs, ys, outs, fns)


def refuse_own_loss_sum(model: nn.Module, loss_fn: Callable, xb, out) -> None:
    """Raise ``LandscapeError`` where the model's own loss (``OwnLoss``) on the batch ``xb`` (outputs ``out``)
    is the sum of its values on the batch's two halves, each run through the model alone, rather than their
    weighted mean (``metrics.summed_over``): as ``refuse_batch_sum`` refuses of a ``loss_fn``. Such a loss was
    accepted, its values and curvature following the batch size (s41). Not checked for a model that fails on
    half the batch."""
    n = batch_len(xb)
    if n < 2:
        return

    def loss_on(part: slice) -> float:
        return float(loss_fn(call_model(model, tree_map(lambda t: t[part] if t.dim() and len(t) == n else t, xb))))

    try:
        whole = float(loss_fn(out))
        splits = [(loss_on(a), loss_on(b), h, n) for a, b, h in sum_splits(n)]
    except Exception:  # noqa: BLE001 - e.g. a model needing its whole batch: not checked here
        return
    mean = summed_over(whole, splits)  # as refuse_batch_sum's rule
    if mean is not None:
        raise LandscapeError(
            f"the model's own loss (outputs.loss) is {whole:.6g} on {n} samples but {mean:.6g} as the mean over "
            "two halves of them, each run through the model: it sums over the batch (e.g. reduction='sum' in "
            "forward), so its value and curvature would depend on the batch size; expected the mean over the "
            "batch: divide it by the number of samples in forward, or return per-sample outputs and pass a "
            "mean loss_fn")


def class_weighting(fn, rule: tuple | None = None) -> tuple[torch.Tensor, int] | None:
    """(class weights, ignored label) a loss weighs its targets by: a ``("weights", w)`` rule (``kept_rules``) or
    an ``nn.CrossEntropyLoss``/``nn.NLLLoss`` given ``weight=``; None for any other."""
    if rule is not None and rule[0] == "weights":
        return rule[1], -100
    if isinstance(fn, (nn.CrossEntropyLoss, nn.NLLLoss)) and fn.weight is not None:
        return fn.weight, fn.ignore_index
    return None


def weightless(targets, weighting: tuple[torch.Tensor, int] | None) -> bool:
    """Whether a batch of ``targets`` counts samples its loss weighs 0 (a class weighted 0 under ``weighting``,
    ``class_weighting``'s) and none it weighs more: its mean divides by 0, and beside label smoothing those
    samples still add to the numerator (PyTorch divides both terms by Σ w[y]), so its value is no weighted
    mean of anything, and leaving it out drops them (re-trial s43: 2.3 % off, and every point NaN where the
    first class weighed 0). A batch of ignored targets alone is not: it adds nothing, and is left out exactly."""
    if weighting is None or not isinstance(targets, torch.Tensor) or targets.is_floating_point():
        return False
    w, ignore = weighting
    t = targets.reshape(-1)
    counted = t[(t >= 0) & (t < len(w)) & (t != ignore)]
    return counted.numel() > 0 and float(w.to(t.device)[counted].abs().sum()) == 0.0


def near_equal_size(n: int, size: int) -> int:
    """The size of ``ceil(n / size)`` near-equal batches of ``n`` samples, none larger than ``size`` (300 at
    32: 10 of 30): the one batching of a model or loss whose values depend on it (``compute_surface``,
    ``eigen_map`` and ``HessianOperator`` alike), with no short tail batch that weighs its samples more."""
    return math.ceil(n / math.ceil(n / size))


def batch_ranges(n: int, size: int, weightless_at: Callable[[int, int], bool]) -> list[tuple[int, int]]:
    """``[start, stop)`` of consecutive batches of ``size`` of ``n`` samples (the last holds the rest), a batch
    that is ``weightless_at(start, stop)`` run together with the ones after it until together they weigh
    something (a weightless tail with the batch before it): every batch then weighs something or counts
    nothing, and its value is its share of the whole set's mean (``weightless``)."""
    ranges: list[tuple[int, int]] = []
    start = 0
    for a in range(0, n, size):
        b = min(a + size, n)
        if not weightless_at(start, b):
            ranges.append((start, b))
            start = b
    if start < n:  # a weightless tail
        ranges = ranges[:-1] + [(ranges[-1][0] if ranges else 0, n)]
    return ranges


def weighed_batches(ev: EvalData, split: Callable, size: int, weightings: list) -> list:
    """``[(inputs, targets), ...]`` of ``ev`` (``split`` apart) in batches of ``size`` (``ev.slices``), a batch
    that counts samples only a loss's class weighting (``weightings``: ``class_weighting``'s, one per loss or
    metric) weighs 0 run together with the next ones (``batch_ranges``, ``weightless``); for ``Evaluator`` and
    ``HessianOperator`` alike."""
    targets = ev.split()[1] if weightings else None
    if not isinstance(targets, torch.Tensor):
        return [split(t) for t in ev.slices(size)]
    ranges = batch_ranges(ev.n, int(size), lambda a, b: any(weightless(targets[a:b], w) for w in weightings))
    return [split(tree_map(lambda t, a=a, b=b: t[a:b], ev.tree)) for a, b in ranges]


def check_padding(model: nn.Module, ev: EvalData, loss_fn: Callable, split: Callable) -> None:
    """Refuse a model whose loss depends on how much padding a DataLoader's ``collate_fn`` adds.

    ``data.read_data`` collates all the samples at once, padded alike, so that every batch size
    gives the same values; a loop over the loader pads each batch to its own longest sample. For
    the samples of ``ev.collated_alone`` (collated alone: the least padding), the loss of the sample
    so collated and of its row of ``ev.tree`` (padded like the whole set) are compared, in eval mode
    without gradients, to ``rtol=1e-4`` (8 ulp for bf16/fp16 weights): a model that masks its padding
    gives the same value, one that reads padded positions (pools over them, attends to them) does not.
    A model that raises on a sample alone is not checked.

    Raises
    ------
    LandscapeError
        Naming the sample, both shapes and both losses, and the fixes (mask the padding, or pad to
        one fixed length in ``collate_fn``).
    """
    if not ev.collated_alone:
        return
    rtol = max(1e-4, 8 * torch.finfo(model_dtype(model)).eps)  # a bf16 model's losses round to ~1e-2
    with eval_mode(model), torch.no_grad():
        for row, alone in ev.collated_alone:
            padded = tree_map(lambda t, r=row: t[r:r + 1], ev.tree)
            try:
                values = [float(loss_fn(call_model(model, x), y)) for x, y in (split(alone), split(padded))]
            except Exception:  # noqa: BLE001 - e.g. a model taking batches of several samples only
                return
            a, b = values
            if a == b or (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol, abs_tol=1e-7):
                continue
            shapes = [", ".join(f"{p or 'data'} {tuple(t.shape[1:])}" for p, t in tree_leaves(tree)[:4])
                      for tree in (alone, padded)]
            raise LandscapeError(
                f"the model's loss depends on how much padding the DataLoader's collate_fn adds: sample {row} "
                f"collated alone (per-sample shapes {shapes[0]}) gives loss {a:.7g}, padded like the whole set "
                f"({shapes[1]}) {b:.7g}. landscape_nb collates all {ev.n} samples at once, padded alike, so that "
                "every batching gives the same values; a loop over the loader pads each batch to its own longest "
                "sample, so its values would differ from these, and from one batch size to another. Mask the padded "
                "positions in the model (an attention or padding mask; pool over real positions only), or pad to one "
                "fixed length in collate_fn")


class Evaluator(SpeedChoices):
    """Loss and metrics of ``model`` on ``data`` at points ``w0 + Σ c_k d_k`` of weight space.

    The evaluator perturbs ``model`` in place while a tile is evaluated and restores it
    bit-identically afterwards, also after an exception. When a ``device`` other than the
    model's is given, a private copy is moved there. Values are those of Li et al. 2018,
    "Visualizing the Loss Landscape of Neural Nets" (NeurIPS), eq. (1): the mean loss over
    the evaluation set at each point.

    Parameters
    ----------
    model : torch.nn.Module
        The network; evaluated in eval mode (or with BatchNorm statistics re-estimated per
        point when ``settings.mode == "bn-recompute"``, with only the BatchNorm layers in train mode:
        see ``_recompute_bn``).
    data : (inputs, targets), tuple or dict of tensors, Dataset, DataLoader or zero-argument callable
        Evaluation data, ``n_samples`` along the first axis of every tensor; inputs may be a
        tensor (``model(x)``), a tuple (``model(*x)``) or a dict (``model(**x)``); how targets
        are found is stated in ``data.read_data`` and recorded in ``notes``.
    directions : torch.Tensor, shape (n_dirs, n_params)
        Direction vectors in the flat weight space of ``layout``, in weight units.
    layout : ParamLayout
        Which tensors of ``model`` the flat vectors cover.
    loss_fn : callable (outputs, targets) -> scalar mean, optional
        Gets the model's outputs untouched (a tensor, tuple, dict or ``ModelOutput``). Default:
        the model's own ``outputs.loss`` for dict batches carrying labels when the model returns
        one, else cross-entropy on the logits (``metrics.find_logits``: the outputs themselves if a
        tensor, their ``.logits`` or ``"logits"`` entry, or the only score-shaped tensor, floating
        with 2 or more dims, of a tuple/list); refused, naming the fix, for outputs holding no
        logits or several tensors that could be them (``(features, logits)`` is not guessed: pass
        ``loss_fn``), float targets that are not class probabilities, one output column or class
        indices out of range.
    metrics : "auto", None, str, list of str or dict name -> callable
        Evaluated next to the loss; ``"auto"`` is accuracy when the outputs hold logits as found
        for the default loss and the targets are integer class indices of matching shape, else none,
        the reason in ``notes["accuracy"]`` (e.g. a tuple with several score-shaped tensors: name
        the metric with ``metrics=``). A callable returns the batch's mean as a scalar tensor; one
        summing over the batch (a count of right predictions) is refused, naming it.
    settings : EvalSettings, optional
        How points are evaluated (mode, subset, batch size, precision, ...).
    device : str or torch.device, optional
        Where to evaluate; default the model's device.
    bn_data : data, optional
        Data to re-estimate BatchNorm statistics on in ``"bn-recompute"`` mode (default ``data``).

    Raises
    ------
    LandscapeError
        For an unknown precision or mode, data in a form not accepted, data the model rejects,
        a loss or a metric that is not a scalar or sums over the batch (``metrics.refuse_batch_sum``).

    Notes
    -----
    Memory: the evaluation samples (after ``max_samples``) are held once on the device, and
    ``bn_data`` too in ``"bn-recompute"`` mode. Each batch's loss is weighted by its number of
    samples, or by what it averages over for the default loss, ``accuracy`` and
    ``nn.CrossEntropyLoss`` (the targets not ignored, e.g. tokens that are not padding), so batches
    never change their values. Another loss or metric that is not a mean over samples (the
    user's own mean over non-ignored tokens, a normalisation by the batch's statistics) is found
    on up to 256 samples spread over the set; every point then runs with one batching, untuned:
    the whole set as one batch up to 4096 samples (exact), else fixed batches whose
    sample-weighted mean ``notes["batches"]`` reports (and a warning). ``notes`` (``dict``) says how targets, loss and accuracy were
    chosen; it goes into the surface's provenance.

    Notes
    -----
    The batch size (when not given) is tuned on the first real grid points (on a GPU a set whose
    activations fit a quarter of the free memory runs as one batch, untuned), and the number of
    points stacked into one ``vmap`` pass is measured once; both change values only by float
    rounding and are reported as ``batch_size`` and ``points_per_pass``. On a GPU each
    ``evaluate`` call runs with cuDNN's algorithm search on and TF32 only for ``precision="tf32"``
    (the global flags are put back after).
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
        settings.check_one_point_modes()  # compute_surface refuses it first (validate)
        self.settings = settings
        self.layout = layout
        model = unwrap_model(model)
        self.user_loss_fn = loss_fn
        self.device = torch.device(device) if device is not None else model_device(model)
        if self.device != model_device(model):
            model = copy.deepcopy(model).to(self.device)
        self.model = model  # channels_last=True: its 2D convolution weights only inside a session (put back after)
        # the probe passes below leave no trace in the model; their checks (BN folding, the shared first
        # layer) compare two forms of the model in fp32, where TF32's ~1e-3 output error would refuse them
        with restoring(model), self._precision(tf32=False):
            self._setup(data, bn_data, metrics, directions, layout)

    def _setup(self, data, bn_data, metrics, directions: torch.Tensor, layout: ParamLayout) -> None:
        """Data, loss, metrics and the speed choices known before any point (``__init__``'s body)."""
        settings = self.settings
        # w0 before any call, the model held (`restoring`: another thread's run moves the weights until it ends): the
        # checks' forwards may write weights (nn.Embedding(max_norm=...), a clamp_ in forward), and every point was
        # computed around the weights they left (trial s57)
        self._given = flatten(self.model, layout)
        attributes = StateSnapshot(self.model)  # before its first call (statecheck: the checks in _validate)
        self._prepare_data(data, bn_data)  # chooses the loss: not called yet
        #: a target value a loss function gives no gradient (``probe_targets``) and its class weights
        #: (``metrics.class_weights``), set by ``_validate``
        self._probed_ignore: int | None = None
        self._probed_weights: torch.Tensor | None = None
        #: id of a loss or metric -> what its batches are found to be means over (``_kept_mean``): ("ignore", v),
        #: the targets other than v and -100, or ("weights", w), weighted by class; read by ``_denominator``
        self._kept: dict[int, tuple[str, object]] = {}
        #: the loss's values on the set's chunks (``_chunks``), and the first rule found on the spread samples that
        #: those broke, with where (said where the loss is then weighted by samples)
        self._chunk_values: list | None = None
        self._chunk_size = 0
        self._rule_missed: tuple | None = None
        loss_state = StateSnapshot(self.loss_fn)
        self.metric_fns = self._validate(metrics, attributes, loss_state)
        self._fixed_batching = False
        self._random_columns: list[int] = []  # values that differ call to call (_fix_batching_for_batch_means)
        self._weights_of, self._weights = None, []  # batch_weights()' cache, for the batches it was made from
        self._counts_of, self._counts = None, {}  # with_exact_fractions()' cache of fraction_counts, likewise
        self._fix_batching_for_batch_means()
        if any(rule[0] == "weights" for rule in self._kept.values()):  # found just now: weightless batches joined
            self.batches = self._batches(self._slice_size)
        self._check_non_finite()  # on the batches every point runs (checked before they were fixed: all NaN, s46)
        self._tuner = self._batch_size_tuner()
        self._trial_points: list = []  # (coeffs, batch size, values, rows, index) of the tuner's points (_recheck_trial)
        self.points_per_pass: int | None = settings.points_per_pass
        self.forward, self.bn_fold = self.model, "off"
        if settings.compile:  # the compiler fuses BN itself; version-keyed fold caches only break its graphs
            self.bn_fold = "off (compile)"
        elif settings.fold_bn and self.bn_batches is None:
            self.forward, self.bn_fold = self._folded()
        if settings.compile:
            self.forward = torch.compile(self.forward, mode=None if settings.compile is True else settings.compile)
        self.perturber = Perturber(self.model, layout, directions,
                                   clamp_variances=settings.clamp_running_var is not False, base=self._given)
        del self._given
        self._metric_list = list(self.metric_fns.values())
        self._bf16 = settings.precision == "bf16"
        targets = [yb for _, yb in self.batches]
        all_targets = torch.cat(targets) if all(isinstance(t, torch.Tensor) for t in targets) else None
        self._values = fused_values(self.loss_fn, self.metric_fns, all_targets, self._stacked_values)
        plain = isinstance(self.batches[0][0], torch.Tensor)  # the shared layer and format trial take one tensor
        # not under bf16 autocast: the layer's own matmul runs in bf16 there, the shared terms would not
        self.shared_layer = (None if settings.compile or self.bn_batches is not None or not plain
                             or settings.precision == "bf16" else self._shared_first_layer())
        # shared or not is measured on the first real points after the batch size is tuned (it is
        # memory-bound where the layer it replaces is compute-bound: it wins on some machines only)
        self._shared_plan = [True, False] * 3 if self.shared_layer is not None else []
        self._shared_times: dict[bool, float] = {}
        self._shared_candidate = self.shared_layer
        # channels_last or not is measured the same way for image models (oneDNN on a 2-core AVX2
        # CPU: a 16->32 channel 3x3 conv on 8x8 digits ran 2-3x faster on channels_last inputs)
        self._formats: dict[bool, object] = {}
        self._format_weights = [m.weight for m in self.model.modules() if isinstance(m, nn.Conv2d)]
        self._format_plan: list[bool] = []
        self._format_times: dict[bool, float] = {}
        tree = self._data.tree
        x = tree[0] if self._data.rule == "pair" and isinstance(tree, (tuple, list)) else None
        if (plain and not settings.channels_last and not settings.compile and isinstance(x, torch.Tensor)
                and x.ndim == 4 and any(isinstance(m, nn.Conv2d) for m in self.model.modules())):
            x_cl = x.contiguous(memory_format=torch.channels_last)
            self._formats = {False: tree, True: type(tree)([x_cl, *tree[1:]])}
            self._format_plan = [True, False] * 3 if self._runs_channels_last(x, x_cl) else []
            if self.shared_layer is not None:
                self.shared_layer.storages.add(x_cl.untyped_storage().data_ptr())
        self.channels_last = bool(settings.channels_last)  # the memory format the inputs run in now
        self._stack_plan: list[tuple[int, str]] | None = None  # passes of the trial still to run (None: not planned)
        self._stack_times: dict[int, float] = {}  # points per pass -> seconds a point
        self._stack_map: list[tuple[dict, str, int]] | None = None  # see _stack_slots
        self._batch_axis = None  # see _batch_axis_stack: None (not looked for yet), False or a BatchAxisStack
        self._stacked_on_batch_axis = False  # how the last stacked pass ran
        self._stacks_checked: dict[str, int] = {}  # by path, the largest pass verified (SpeedChoices._verify_stacked)
        self._untimed = 0.0  # seconds of checks run inside timed work (SpeedChoices._seconds leaves them out)
        #: set by a runner whose calls hold at least ``points_wanted()`` points, tiles permitting
        #: (``InProcessRunner``); otherwise stack sizes larger than a call are dropped from the trial
        self.grouped_calls = False
        self._in_session = False


    def _prepare_data(self, data, bn_data) -> None:
        """Read, sub-sample, fingerprint and move the data to the device once; split it into batches."""
        settings = self.settings
        if settings.mode not in ("eval", "bn-recompute"):
            raise LandscapeError(f"mode={settings.mode!r}; expected 'eval' or 'bn-recompute'")
        ev = read_data(data, max_samples=settings.max_samples, subset_seed=settings.subset_seed,
                       target_key=settings.target_key)
        self.n_samples = ev.n
        self._non_finite = non_finite_leaves(ev.tree)  # kept only if the loss leaves them out (_check_non_finite)
        if self._non_finite and settings.mode != "eval" and batchnorm_modules(self.model):  # inputs would reach
            check_finite_data(ev.split()[0], "the inputs", why=(  # every point's BatchNorm statistics (targets
                "BatchNorm statistics recomputed on them (mode='bn-recompute') would be NaN at every point"))  # not)
        self.data_fingerprint = data_key(ev)
        ev = ev.to(self.device)
        if settings.channels_last:
            ev.tree = tree_map(lambda t: t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t,
                               ev.tree)
        self._data = ev
        self.loss_fn, self._split, loss_note = choose_loss(self.model, ev, self.user_loss_fn)
        self.notes = {**ev.notes, "loss": loss_note}
        self.batches = self._batches(settings.batch_size or min(ev.n, BATCH_CANDIDATES[0]))
        self.bn_batches = None
        self.bn_fingerprint = self.bn_pass_size = None  # separate bn_data's hash; the pass size when several
        if settings.mode == "bn-recompute":
            bn = ev if bn_data is None else read_data(bn_data, "bn_data", target_key=settings.target_key,
                                                      targets_needed=False).to(self.device)
            given = ("the data" + (f" (max_samples={settings.max_samples})" if settings.max_samples else "")
                     if bn is ev else "bn_data")
            self.bn_one_sample = (  # said where torch refuses it (one value per channel: a BatchNorm1d on (N, C),
                f"mode='bn-recompute' re-estimates the BatchNorm statistics at every point over {given}, which hold "
                f"{bn.n} sample: BatchNorm in train mode needs more than one value per channel; give at least 2 "
                "samples (bn_data=, e.g. a batch of the training data) or mode='eval' (the model's running "
                "statistics)") if bn.n < 2 else None  # or a 1×1 map), not for a BatchNorm1d on (N, C, L) (s56)
            n_passes, size = bn_passes(bn.n)
            self.bn_batches = [self._split(t)[0] if bn is ev or bn.rule == ev.rule else bn.split(t)[0]
                               for t in bn.slices(size)]
            self.bn_fingerprint = None if bn is ev else data_key(bn)
            self.bn_pass_size = size if n_passes > 1 else None
            self.notes["bn_recompute"] = (f"BatchNorm statistics re-estimated at every point over {bn.n} samples in "
                                          f"{n_passes} pass(es) of {size} or fewer (cumulative average), only the "
                                          "BatchNorm layers in train mode (Dropout off, unlike "
                                          "torch.optim.swa_utils.update_bn)")

    def _batches(self, size: int) -> list:
        """``[(inputs, targets), ...]`` of ``size`` samples each, on the device; one whose targets a loss or metric
        weighs 0 but counts (``weightless``: a class weighted 0 beside label smoothing) joined to the one before."""
        self._slice_size = int(size)
        fns = [self.loss_fn, *getattr(self, "metric_fns", {}).values()]  # metrics and rules: none yet at first
        kept = getattr(self, "_kept", {})
        weightings = [w for w in (class_weighting(fn, kept.get(id(fn))) for fn in fns) if w is not None]
        return weighed_batches(self._data, self._split, self._slice_size, weightings)


    @property
    def metric_names(self) -> list[str]:
        return list(self.metric_fns)

    @property
    def batch_size(self) -> int:
        """Samples a batch (``_batches``' size: a batch joined to a weightless one holds more)."""
        return self._slice_size

    @property
    def tuning(self) -> bool:
        """Whether the batch size is still being tuned on the coming points."""
        return self._tuner is not None and not self._tuner.done

    def use_batch_size(self, bs: int) -> None:
        """Run the following points with batches of ``bs`` samples."""
        if self.batch_size != bs:
            self.batches = self._batches(bs)


    def _autocast(self):
        if self.settings.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _precision(self, tf32: bool | None = None):
        """On a GPU, for one ``evaluate`` call: TF32 matmuls and convolutions exactly when the precision
        is ``"tf32"`` (PyTorch's default runs fp32 convolutions in TF32, ~1e-4 relative error on a loss;
        ``"fp32"`` here means fp32), and cuDNN's algorithm search (``cudnn.benchmark``), which times the
        candidate algorithms once per input shape and keeps the fastest; the global flags are put back
        after. ``tf32=False``: fp32 whatever the precision (the set-up checks compare in fp32)."""
        if self.device.type != "cuda":
            yield
            return
        tf32 = self.settings.precision == "tf32" if tf32 is None else tf32
        with gpu_flags(tf32=tf32, benchmark=True):
            yield

    def _check_non_finite(self) -> None:
        """The loss at the model itself on each batch every point runs that weighs something in the loss
        (``batch_weights``: a batch of padding alone weighs 0), where a batch may be NaN while the set is not.

        Data holding NaN or inf are kept only where it is finite on every such batch (a loss that leaves out
        missing targets, ``out[~y.isnan()]``, or a model that fills in missing inputs: refused outright before,
        trial s46), said in ``notes``; otherwise refused naming the leaf and the count. Finite data in batches
        weighted by their samples because the loss is no mean the checks could weigh (``notes[BATCH_MEANS]``):
        refused where some batches are NaN and others not (a mean over targets masked by the inputs, clumped
        padding: an all-NaN surface, warned only, re-trial s46); NaN on every batch is the loss at the model
        itself, which ``compute_surface`` says."""
        approximated = BATCH_MEANS in self.notes
        if not self._non_finite and not approximated:
            return
        bad = []  # (batch number, loss) of the batches the loss is not finite on
        nan_metrics: dict[str, float] = {}  # a metric reading the values the loss leaves out: NaN at every point
        with eval_mode(self.model), torch.no_grad():
            for k, ((xb, yb), w) in enumerate(zip(self.batches, self.batch_weights())):
                if w is not None and float(w[0]) == 0.0:
                    continue  # weighs nothing: left out of every point (point_values)
                out = call_model(self.model, xb)
                loss = self.loss_fn(out, yb)
                if not bool(torch.isfinite(torch.as_tensor(loss)).all()):
                    bad.append((k, float(loss)))
                for column, (name, fn) in enumerate(self.metric_fns.items() if self._non_finite else (), start=1):
                    if name in nan_metrics or (w is not None and float(w[column]) == 0.0):
                        continue
                    try:
                        value = float(torch.as_tensor(fn(out, yb), dtype=torch.float64).reshape(-1)[0])
                    except Exception:  # noqa: BLE001, S112 - said where it runs at the points, as before
                        continue
                    if not math.isfinite(value):
                        nan_metrics[name] = value
        size = batch_len(self.batches[0][0])
        batching = (f"(batches of {size} samples, in the data's order), so it would be at every point; a loss that "
                    "leaves samples out is taken where every batch holds some it keeps: shuffle the samples, or "
                    "pass a larger batch_size (None: the whole set in one batch, up to 4096 samples)")
        if not self._non_finite:
            if bad and len(bad) < len(self.batches):
                (k, loss), n = bad[0], len(bad)
                raise LandscapeError(
                    f"the loss at the model itself is {loss} on batch {k + 1} of {len(self.batches)}"
                    + (f" and {n - 1} more" if n > 1 else "") + f" and finite on the others {batching}; the batches "
                    "are weighted by their samples, since the loss is no mean over samples nor over the targets "
                    "other than a padding label (the warning before says what was found)")
            return
        if bad:
            (k, loss) = bad[0]
            if len(self.batches) == 1:
                why = (f"the loss at the model itself is {loss}, so it would be at every point (a loss_fn "
                       "or model that leaves them out, as ((out - y)[~y.isnan()] ** 2).mean() does, is taken)")
            else:  # a loss that leaves them out, on a batch holding nothing else (trial s46: it named that loss)
                why = f"the loss at the model itself is {loss} on batch {k + 1} of {len(self.batches)} {batching}"
            check_finite_data(self._data.tree, why=why)
        where = ", ".join(f"the data{path}: {n}" for path, n in self._non_finite[:4])
        read = ", ".join(f"{name!r} ({value})" for name, value in nan_metrics.items())
        self.notes[NON_FINITE_DATA] = (
            f"the data hold non-finite values (NaN or inf; {where}); the loss at the model itself is finite on every "
            "batch (the model or loss_fn leaves them out), so they are kept: "
            + (f"metric {read} reads them, not finite at the model itself, so at every point (leave them out "
               "as the loss does, e.g. lambda out, y: (out - y)[~y.isnan()].abs().mean())" if nan_metrics else
               "a metric that reads them may be NaN"))

    def _validate(self, metrics, attributes: StateSnapshot, loss_state: StateSnapshot) -> dict[str, Callable]:
        """Run one small batch unperturbed: the model must accept the data, the loss be a scalar
        (and the default loss mean something for all the targets)."""
        xb, yb = tree_map(lambda t: t[:8], self.batches[0])
        buffers = [(name, b, b.clone()) for name, b in self.model.named_buffers() if b is not None]
        with eval_mode(self.model):
            with torch.no_grad():
                try:
                    out = run_checking_inputs(self.model, xb)
                except LandscapeError:
                    raise
                except Exception as exc:  # the user's model decides what it rejects
                    from .data import dtype_hint, keywords_hint, order_hint, records_hint

                    self._refuse_fixed_batch(exc)

                    form = (f"of shape {tuple(xb.shape[1:])} per sample" if isinstance(xb, torch.Tensor) else
                            f"of the form {tree_structure(xb)} with per-sample shapes "
                            + ", ".join(f"{p} {tuple(t.shape[1:])}" for p, t in tree_leaves(xb)[:6]))
                    keys = dtype_hint(xb, self.model, exc) + keywords_hint(
                        xb, self._data.rule, self.settings.target_key, self.model) + order_hint(
                        xb, yb, self._data.rule, self.settings.target_key, self.model, exc)
                    if self.settings.channels_last:
                        keys += ("; with channels_last=True the model's activations are channels_last, which "
                                 ".view() cannot flatten: use .reshape()/.flatten() in the model, or channels_last=False")
                    raise LandscapeError(
                        f"the model ({type(self.model).__name__}) raised {type(exc).__name__}: "
                        f"{one_line(exc)}{user_frame(exc)} on inputs {form}"
                        f"{keys}; if the data are shaped wrong, pass them the way the model expects (a tuple is "
                        "passed as model(*inputs), a dict as model(**inputs))"
                        f"{records_hint(self._data.tree)}; else the error is in the model itself"
                    ) from exc
                if isinstance(out, torch.Tensor) and out.dim() == 0:
                    self._refuse_scalar_outputs(out, batch_len(xb))
                changed = [name for name, b, before in buffers if not same_values(b, before)]
                if changed:
                    raise LandscapeError(
                        f"the model ({type(self.model).__name__}) changed its buffer(s) {changed[:6]} when it ran in "
                        "eval mode (e.g. a counter or a running statistic updated in forward); every grid point "
                        "would then see other values, so the surface would not be a function of the weights; "
                        "expected an eval-mode forward that leaves buffers alone (update them in training mode "
                        "only)")
                check_model_stateless(self.model, xb, out, attributes)
                random_note = random_outputs_note(self.model, xb)
                if random_note:  # warned by compute_surface, on every runner
                    self.notes[RANDOM_OUTPUTS] = random_note
                if isinstance(self.loss_fn, DefaultLoss):
                    self.loss_fn.check(out, self._data.split()[1], self._data.keys)
                    if not isinstance(out, torch.Tensor):  # which of the outputs (logits, aux) it read (trial s57)
                        self.notes["loss"] = f"cross-entropy on the logits, {logits_expr(out)} (default)"
                    probabilities = probability_outputs_note(out)
                    if probabilities:  # warned by compute_surface, on every runner
                        self.notes[PROBABILITY_OUTPUTS] = probabilities
                elif type(self.loss_fn) in (nn.CrossEntropyLoss, nn.NLLLoss):  # every sample's label, not 8
                    refuse_class_range(self.loss_fn, out, self._data.split()[1])
                check_mean_loss(self.loss_fn, out, yb, self._data.keys)
        check_padding(self.model, self._data, self.loss_fn, self._split)
        ignore, why, probe = -100, "the loss's ignore_index", NOTHING_KNOWN
        weight = getattr(self.loss_fn, "weight", None)
        if type(self.loss_fn) in (nn.CrossEntropyLoss, nn.NLLLoss) and (weight is None or bool((weight != 0).all())):
            ignore = self.loss_fn.ignore_index
        elif not isinstance(self.loss_fn, (DefaultLoss, OwnLoss)):  # also without metrics: the batch weights
            # a function's ignore_index (trial s39), a binary loss on one column (re-trial s39), labels mapped or
            # classes permuted in the loss; a class weighted 0, in a function or a module alike (trial s40)
            probe = probe_targets(self.loss_fn, out, yb, self._data.split()[1])
            self._probed_weights = class_weights(self.loss_fn, out, yb, self._data.split()[1])  # a function's
            if probe.ignored is not None:
                ignore, why = probe.ignored, "the loss gives them no gradient"
                self._probed_ignore = probe.ignored  # its batches may be means over the other targets
        if metrics == "auto":
            fns, self.notes["accuracy"], said = auto_metrics(out, yb, ignore_index=ignore, why=why, probe=probe)
            if said:  # a classifier's: warned by compute_surface (a one-logit binary model's was silent, s40)
                self.notes[SKIPPED_ACCURACY] = self.notes["accuracy"]
        else:
            fns = resolve_metrics(metrics, out, yb)
            disagrees = loss_disagrees(probe, find_logits(out).shape[1]) if any(
                f is accuracy for f in fns.values()) else None
            if disagrees:  # asked for by name: computed as asked, and the doubt said (warned by compute_surface)
                self.notes[UNCOUNTED_TARGETS] = ("accuracy (asked for by name) takes the argmax of the logits against "
                                                 f"the targets, but {disagrees}")
            if ignore != -100 and any(f is accuracy for f in fns.values()):  # the loss's padding, not counted
                fns = {n: functools.partial(accuracy, ignore_index=ignore) if f is accuracy else f
                       for n, f in fns.items()}
                self.notes["accuracy"] = f"accuracy: targets equal to {ignore} ({why}) not counted, as by the loss"
        if probe.unexplained and any(f is accuracy for f in fns.values()):
            self.notes[UNCOUNTED_TARGETS] = (
                f"accuracy counts {probe.unexplained} target position(s) of "
                + (f"{probe.probed} samples spread over the set" if probe.spread else
                   f"the first {probe.probed} samples")
                + " that the loss gives no gradient (it leaves them out, by a mask no single target value gives), so "
                "it scores predictions the loss does not count; pass compute_surface's metrics= (Python: the CLI "
                "computes the automatic accuracy only) an accuracy masked as the loss is, "
                "e.g. {'accuracy': lambda out, y: ((out.argmax(1) == y) & keep(y)).sum() / keep(y).sum()}")
        states = {"loss_fn": loss_state, **{f"metric {n!r}": StateSnapshot(f) for n, f in fns.items()}}
        with warnings.catch_warnings():  # the checks' few samples: scikit-learn's "only one class" (trial s40)
            warnings.simplefilter("ignore")  # said again, if so, where the metric runs on the set
            for name, fn in fns.items():
                value = fn(out, yb)
                if isinstance(value, torch.Tensor) and value.numel() != 1:  # a value per sample: the hint said
                    raise LandscapeError(  # "return a tensor" to a metric that did (trial s38)
                        f"metric {name!r} returned a tensor of shape {tuple(value.shape)}; expected a scalar tensor (a "
                        "batch mean): reduce it over the samples, e.g. (out.argmax(1) == y).float().mean()")
                if not isinstance(value, torch.Tensor):
                    raise LandscapeError(
                        f"metric {name!r} returned {value!r}; expected a scalar tensor (a batch mean): return a tensor "
                        "(for a Python or NumPy number, e.g. from scikit-learn, torch.tensor(value))")
                refuse_unpaired(fn, out, yb, value, what=f"metric {name!r}")  # every output against every target
            refuse_sums(self.model, self.loss_fn, xb, yb, out, fns)
            named = {"loss_fn": self.loss_fn, **{f"metric {n!r}": f for n, f in fns.items()}}
            check_fns_stateless(out, yb, named, states)
        random_note = random_values_note(out, yb, named)
        if random_note:  # warned by compute_surface, on every runner
            self.notes[RANDOM_VALUES] = random_note
        if holds_padding(yb, self._probed_ignore):  # the first 8 samples' checks may have told nothing
            refuse_sums_spread(self.model, self._data, self._split, self.loss_fn, fns, self._probed_ignore)
        return fns

    def _refuse_scalar_outputs(self, out: torch.Tensor, n: int) -> None:
        """Raise ``LandscapeError`` for a model that returned the 0-d tensor ``out`` on ``n`` samples (its own
        loss, say): batches are combined and values checked per sample, which needs a batch axis."""
        value = f"{float(out):.6g}" if not out.is_complex() else "a value"
        key = self.settings.target_key if isinstance(self.settings.target_key, str) else "labels"
        raise LandscapeError(
            f"the model ({type(self.model).__name__}) returned a 0-d tensor (a scalar, {value}) on a batch of {n} "
            f"samples; expected per-sample outputs with the samples along the first axis (e.g. logits of shape "
            f"({n}, C)), from which loss_fn and the metrics compute a batch's mean: batches of several sizes are "
            "combined and checked sample by sample. If the model computes its own loss, return the per-sample "
            "outputs (the logits) and pass loss_fn computing the loss from them (e.g. "
            f"loss_fn=torch.nn.functional.cross_entropy); or give the data as dict batches holding the targets "
            f"under the key {key!r} (target_key= names another) and return an object or dict with .loss and "
            ".logits (as Hugging Face models do), with no loss_fn: that loss is used and the logits give accuracy")

    def _refuse_fixed_batch(self, exc: Exception) -> None:
        """After the model raised ``exc`` on the first 8 samples (inside ``_validate``'s eval mode and no_grad):
        if it runs on its whole first batch, it may depend on how many samples a batch has (an index or table
        sized for the batch), which landscape_nb changes (batch-size tuning, its checks, the last batch):
        raise a ``LandscapeError`` saying so."""
        xb = self.batches[0][0]
        n = batch_len(xb)
        if n <= 8:
            return
        try:
            call_model(self.model, tree_map(torch.clone, xb))  # a copy: the model may write into it
        except Exception:  # noqa: BLE001 - it fails on its whole batch too: the general message follows
            return
        raise LandscapeError(
            f"the model ({type(self.model).__name__}) runs on its first batch of {n} samples but raised "
            f"{type(exc).__name__}: {one_line(exc)} on the first 8 of them. If that is because of how many samples a "
            "batch has (an index, a table or a shape fixed to the data set's size), a sample's outputs are not "
            "a function of its own inputs, and landscape_nb evaluates batches of other sizes (batch-size "
            "tuning, its checks, a last partial batch): expected a forward that works on any number of samples "
            "(size such tensors from the input, x.shape[0]); a model that needs every sample at once (a graph "
            "network over all nodes) takes them as one sample, inputs of shape (1, N, ...). Else the error is in "
            "the model, on what those 8 samples hold") from exc

    def _runs_channels_last(self, x: torch.Tensor, x_cl: torch.Tensor) -> bool:
        """Whether the model, as evaluated, runs on channels_last inputs and convolution weights with the
        same outputs: a forward that flattens with ``.view`` raises on the channels_last activations its
        convolutions then give."""
        k = min(4, len(x))
        try:  # torch.fx prints a folded model's error to stderr before raising it: an expected failure here
            with eval_mode(self.model), torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
                want = find_logits(call_model(self.forward, x[:k]))
                self.conv_weights_format(True)
                got = find_logits(call_model(self.forward, x_cl[:k]))
        except Exception:  # noqa: BLE001 - the model's own inputs stay as they are
            return False
        finally:
            self.conv_weights_format(False)
        return want is not None and got is not None and _same_outputs(want.float(), got.float())

    def _fix_batching_for_batch_means(self) -> None:
        """Keep one batching for every point when a value on a batch is not the mean of its parts' values:
        a loss or metric that is not a mean over samples, or a model whose outputs depend on the rest of
        the batch (BatchNorm without running statistics, a mean over the batch in forward).

        Batch values are combined weighted by their number of samples (or by what they average over, for
        the functions ``metrics.batch_denominator`` knows), which equals the value over the whole set only
        for such a mean. Otherwise the batch-size trial's points would each see another batching: a
        patchwork surface, and NaN for a batch with nothing to average. Checked on up to ``SPREAD_SAMPLES``
        samples spread over the set (never more than the given ``batch_size`` at once, but 8): the value of each
        loss and metric on them against the weighted mean of its values on two parts of them, each part run
        through the model on its own, for each split of ``split_positions`` (halves alone missed a mean over
        kept targets when both halves kept as many). A function whose weights are known averages exactly, so
        a difference there is the model's; outputs that change by the batch in a way the loss does not see
        (logits minus the batch's maximum, for cross-entropy) pass. A loss that is no mean over samples but is one
        over its targets other than a padding label (``_kept_mean``: a function's hidden ignore_index, a model's
        own loss over labels padded with -100; a metric masked so) is weighted by those (``_kept``), exactly. A
        loss or metric that is the sum of its parts at every split, on the model's outputs and on the mixed ones,
        is refused (``metrics.summed_over``). Not checked when the model's outputs are random (two calls on the
        same samples differ: said in ``notes["batches"]``).

        Then the batch size is not tuned: the whole set runs as one batch up to 4096 samples (exact), a
        larger set or a given ``batch_size`` in fixed batches, and ``notes["batches"]`` says the values are
        weighted means over those batches (a warning too)."""
        n, given = self.n_samples, self.settings.batch_size
        split = given < n if given is not None else n > SMALL_SET
        m = min(n, SPREAD_SAMPLES, max(given or SPREAD_SAMPLES, CHECKED_AT_LEAST))
        if not split or m < 4:
            return
        whole_part, pairs = spread_splits(self._data, self._split, m, self.device, self._probed_ignore)
        positions = split_positions(m)
        own = isinstance(self.loss_fn, OwnLoss)  # no loss_fn was given: not blamed on one (trials s41, s53)
        fns = {"the model's own loss (outputs.loss)" if own else "the default cross-entropy"
               if isinstance(self.loss_fn, DefaultLoss) else "loss_fn": self.loss_fn,
               **{f"metric {k!r}": f for k, f in self.metric_fns.items()}}
        not_checked = "not checked for losses that are not a mean over samples, nor for outputs that depend on the batch"
        try:
            with eval_mode(self.model), torch.no_grad():
                (xw, yw), out = whole_part, call_model(self.model, whole_part[0])
                random_model = not identical_outputs(out, call_model(self.model, xw))
                pair_outs = [[call_model(self.model, xb) for xb, _ in pair] for pair in pairs]
                # other predictions too: a metric saturated on these samples (every one right: a macro-F1
                # of 1 on the whole and on each half) shows whether it is a mean on mixed right and wrong ones
                # a metric's: the target at even positions and another class at odd ones, where class scores
                # of class-index targets allow (a masked accuracy over few kept targets, all predicted wrong, was
                # 0 on the whole and on each part, so taken for a mean over samples: NaN at every point, trial W)
                rolled = map_outputs(lambda t: _rolled_by_sample(t, m), out)
                patterned = _right_and_wrong(out, yw)
                parts = {}  # each split's parts of the mixed outputs
                for kind, mixed in (("rolled", rolled), ("patterned", rolled if patterned is None else patterned)):
                    parts[kind] = (mixed, [[map_outputs(lambda t, s=s: t[s] if t.dim() and len(t) == m else t, mixed,
                                                        every_tensor=True) for s in at] for at in positions])

                def values_of(fn, metric):  # [whole, first, second] for each split, in _mixed_splits' order
                    def on(outs_of, whole, pair):
                        return [whole, *(float(fn(o, yb)) for o, (_, yb) in zip(outs_of, pair))]

                    other = "patterned" if metric else "rolled"  # a per-class recall: its denominator shows (s44)
                    wholes = {kind: float(fn(parts[kind][0], yw)) for kind in dict.fromkeys(("rolled", other))}
                    real = float(fn(out, yw))  # each whole once, shared by its splits
                    triples = [on(os, real, pair) for os, pair in zip(pair_outs, pairs)]
                    triples[1:1] = [on(parts[kind][1][0], wholes[kind], pairs[0]) for kind in ("rolled", other)]
                    triples += [on(parts[other][1][k], wholes[other], pairs[k]) for k in range(1, len(pairs))]
                    return triples, float(fn(out, yw))  # twice: a function that samples is not compared
                values = {name: values_of(fn, column > 0) for column, (name, fn) in enumerate(fns.items())}
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: the batching is left as it is
            self.notes["batches"] = f"{not_checked} ({type(exc).__name__})"
            return
        if random_model:
            self.notes["batches"] = f"{not_checked}: the model's outputs are random (two calls on the same samples differ)"
            self._random_columns = list(range(len(fns)))
            return
        # CPU: fp32 sums in another order differ by ~1e-7, and a token mean weighted by samples was ~5e-6
        # off here (trial points 4.2e-5 off); a GPU's convolutions may pick other algorithms by batch size
        tol = 2e-6 if self.device.type == "cpu" else 5e-5
        why, outputs_move = None, False
        for column, (name, (triples, again)) in enumerate(values.items()):
            if not (triples[0][0] == again or (math.isnan(triples[0][0]) and math.isnan(again))):
                self.notes["batches"] = f"not checked for losses that are not a mean over samples: {name} is random"
                self._random_columns.append(column)
                continue
            # the halves 3 times (the model's outputs, rolled ones, a metric's right and wrong in turn), the other
            # splits, then those of a metric's right and wrong ones (_mixed_splits)
            weights = [part_weights(fns[name], pair, m, at) for pair, at in zip(pairs, positions)]
            # every split, the model's outputs' and the mixed ones' (a margin loss summed is 0 on outputs meeting
            # every margin, trial s42), the even and odd samples too (a balanced accuracy of label-sorted data)
            at = zip(triples, _mixed_splits(weights))
            summed = summed_over(triples[0][0], [(*triple[1:], int(w1), int(w1 + w2)) for triple, (w1, w2, _) in at])
            if summed is not None and not weights[0][2]:  # first 8 samples all ignored: not refused before (s42)
                raise LandscapeError(
                    f"{name} gives {triples[0][0]:.6g} on {m} samples spread over the set but {summed:.6g} as the "
                    "mean over two halves of them: it sums over the batch (e.g. reduction='sum'), so its value would "
                    "depend on the batch size; expected the mean over the batch (divide by the number of samples, or "
                    "of kept targets)")
            disagreement = first_disagreement(*judged(triples, _mixed_splits(weights),
                                                      class_weighting(fns[name]) is not None), tol)
            if disagreement is None and column == 0 and not weights[1][2] and not isinstance(self.loss_fn, OwnLoss):
                far = far_outputs_disagreement(fns[name], out, yw, pairs[1], weights[1], tol)
                if far is not None:
                    why = (f"{name} on a batch is not the sample-weighted mean of its parts' values away from the "
                           f"model's outputs: {far[0]:.7g} on {m} samples spread over the set with half their outputs "
                           f"moved by {far[2]:g} times their spread, {far[1]:.7g} from the moved and unmoved halves "
                           "(e.g. a loss capped with .clamp(max=...), or another function of the batch's mean, which "
                           "bends only where the loss is large)")
                    culprit = "the loss"
                    break
            if disagreement is None and column == 0 and not weights[1][2]:  # the whole set's chunks too (s47)
                off = fits_every_chunk(self._chunks(), None, tol)
                if off is not None:
                    why = (f"{name} on a batch is not the sample-weighted mean of its parts' values: "
                           f"{self._chunk_words(off)}, though it was on {m} samples spread over the set")
                    culprit = "the loss"
                    break
            if disagreement is None:
                continue
            if not weights[0][2] and self._kept_mean(fns[name], triples, pairs, tol, loss=column == 0):
                continue
            whole, mean, known = disagreement
            # what the figures name as depending on the batching: the loss, or only a metric (the loss then exact)
            culprit = "the loss" if column == 0 or known else name
            outputs_move = known
            if known:  # an exact mean of what it averages over: the outputs moved
                why = (f"{OUTPUTS_MOVE}: {name} is {whole:.7g} on {m} samples "
                       f"spread over the set, {mean:.7g} from two parts of them run apart, so each value depends on "
                       "how the samples are batched")
            else:
                missed = self._rule_missed if column == 0 else None
                why = (f"{name} on a batch is not the sample-weighted mean of its parts' values: {whole:.7g} on {m} "
                       f"samples spread over the set, {mean:.7g} from two parts of them, nor a mean over the targets "
                       "other than a padding label (-100, a value its gradient ignores, a negative label, 255 or 0) "
                       "or weighted by class weights its gradient shows (e.g. a normalisation by the batch, a mean "
                       "over targets masked otherwise, or outputs that depend on the batch)"
                       + ("" if missed is None else f"; weighted by {kept_rule_words(missed[0])} it fitted those "
                          f"samples but not the whole set's: {self._chunk_words(missed[1])}"))
            break
        if why is None:
            return
        size = near_equal_size(n, given or min(n, BATCH_CANDIDATES[0]))
        spread = (f" ({math.ceil(n / size)} near-equal batches of the {n} samples, none larger than "
                  f"batch_size={given}, so that no short tail batch weighs its samples more)"
                  if given and size != given else "")  # trial I (s38): an explicit 50 became 45 with no word
        fix = (OUTPUTS_FIX if outputs_move else f"a loss whose batches' sample-weighted mean is it: {MEAN_LOSS_FIX}")
        how = (f"the whole set of {n} in one batch" if size >= n else
               f"values are weighted means over batches of {size}{spread}, {IN_ORDER}, not the value over the whole "
               f"set (batch_size={n} for that, or {fix})")
        self.notes["batches"] = f"{why}; one batching for every point: {how}"
        if size < n:
            self.notes[BATCH_MEANS] = f"{culprit}: batches of {size}"  # said by every figure (sampling_note)
            warn_user(f"landscape_nb: {self.notes['batches']}")
        self.batches = self._batches(size)
        self._fixed_batching = True

    def _folded(self) -> tuple[nn.Module, str]:
        """The model with eval-mode BN folded into its convs, checked against the model itself on
        the first batch; the model unchanged (and why) when folding does not apply or disagrees."""
        from .fold import fold_batchnorm

        with eval_mode(self.model), torch.no_grad():  # trace the eval branch of models testing self.training
            try:
                folded, note = fold_batchnorm(self.model)
                if folded is self.model:
                    return folded, note
                xb = tree_map(lambda t: t[:64], self.batches[0][0])
                want, got = find_logits(call_model(self.model, xb)), find_logits(call_model(folded, xb))
                if want is None or got is None:
                    return self.model, "not folded: no tensor outputs to check the folded model against"
                want, got = want.float(), got.float()
            except Exception as exc:  # anything fx-traced that fails to run: keep the model as it is
                return self.model, f"not folded: the traced model failed ({type(exc).__name__})"
        if not _same_outputs(want, got):
            return self.model, "not folded: the folded model disagreed with the model"
        return folded, note

    def _recompute_bn(self) -> None:
        """Re-estimate BatchNorm running statistics at the current weights (`reestimate_batchnorm`) over
        ``bn_data``'s passes."""

        def run(xb):
            with self._autocast():
                call_model(self.forward, xb)

        try:
            reestimate_batchnorm(self.model, self.bn_batches, run)
        except ValueError as exc:  # torch's "Expected more than 1 value per channel when training"
            if self.bn_one_sample and "more than 1 value per channel" in str(exc):  # set with bn_batches
                raise LandscapeError(self.bn_one_sample) from exc
            raise

    @torch.no_grad()
    def point_values(self) -> torch.Tensor:
        """Loss and metrics at the weights the model holds now: a float64 tensor (1 + n_metrics,)
        on the device, the mean over the evaluation set (no host sync)."""
        if self.bn_batches is not None:
            self._recompute_bn()
            self.model.eval()  # evaluate() sets eval mode once per tile otherwise: it costs ~0.1 ms
        shared = self.shared_layer
        if shared is not None:
            shared.install()
        try:
            sums = None
            for (xb, yb), w in zip(self.batches, self.batch_weights()):
                if self._bf16:
                    with self._autocast():
                        out = call_model(self.forward, xb)
                else:
                    out = call_model(self.forward, xb)
                vals = self._values(_floats(out), yb)
                if w is None:  # one batch
                    return vals.double()
                part = torch.where(w > 0, vals.double() * w, 0.0)  # a batch with nothing to average: 0/0 there
                sums = part if sums is None else sums.add_(part)
            return sums
        finally:
            if shared is not None:
                shared.uninstall()

    def batch_weights(self) -> list[torch.Tensor | None]:
        """Per batch of ``self.batches``, the weight of each value column (loss, metrics) in the set's
        value: float64 (1 + n_metrics,) on the device; ``[None]`` for one batch. A column's weights are its
        batches' shares of what it averages over (``metrics.batch_denominator``: e.g. the tokens not
        ignored, for a cross-entropy over padded sequences; ``_denominator``: also those of a loss found to
        be a mean over the targets other than a padding label), else of the samples."""
        if self._weights_of is self.batches:
            return self._weights
        batches = self.batches
        if len(batches) == 1:
            weights: list = [None]
        else:
            cols = []
            for fn in [self.loss_fn, *self.metric_fns.values()]:
                dens = [self._denominator(fn, xb, yb) for xb, yb in batches]
                if any(d is None for d in dens) or float(sum(dens)) == 0.0:
                    dens = [torch.tensor(float(batch_len(xb))) for xb, _ in batches]
                dens = torch.stack([d.double().cpu() for d in dens])
                cols.append(dens / dens.sum())
            table = torch.stack(cols, dim=1).to(self.device)
            weights = list(table)
        self._weights_of, self._weights = batches, weights
        return weights

    def _denominator(self, fn, inputs, targets) -> torch.Tensor | None:
        """``metrics.batch_denominator``, and for a loss or metric found to average over the targets other than a
        padding value and -100 (``_kept``: e.g. ``F.cross_entropy(o, y, ignore_index=0)``, whose ignore_index
        cannot be read, a model's own token loss over labels padded with -100, an accuracy masked by hand) the
        number of those targets, or for one weighted by class (a function's ``weight=``) the sum of its targets'
        weights."""
        known = batch_denominator(fn, targets)
        rule = self._kept.get(id(fn)) if known is None else None
        return known if rule is None else rule_weight(rule, inputs, targets)

    def _kept_mean(self, fn, triples: list, pairs: list, tol: float, *, loss: bool) -> bool:
        """Whether ``fn`` (the loss where ``loss``, else a metric), whose batches are not means over samples
        (``triples`` and ``pairs`` as ``_fix_batching_for_batch_means`` has them), is the mean over the targets
        other than a value it leaves out: -100 (``F.cross_entropy``'s default, a model's own loss over padded
        labels), the value the probe found the loss gives no gradient (``_probed_ignore``), another negative
        label or 255 the targets hold (a void or padding label), or 0 (a padding id). The first whose counts weigh
        the parts' values into the whole's in every split is kept in ``_kept`` (so ``batch_weights``: exact
        batches, and none NaN for holding ignored targets alone, as label-sorted data gave at every point, trial
        s41; a masked metric NaN at every point, re-trial s42); False, and nothing kept, where none does. Last,
        for the loss, the class weights its gradient gives (``_probed_weights``: a function's ``weight=``,
        which cannot be read): its batches then weigh ``Σ w[y]``, as ``nn.CrossEntropyLoss(weight=...)``'s do."""
        rules = kept_rules(pairs, self._probed_ignore, self._probed_weights if loss else None)
        found = kept_mean_rules(triples, _mixed_splits(pairs), tol, rules)  # in the order triples has them
        if loss:  # the first that fits every chunk of the set too (few samples checked: trial s47)
            for rule in found:
                off = fits_every_chunk(self._chunks(), rule, tol)
                if off is None:
                    found = [rule]
                    break
                self._rule_missed = self._rule_missed or (rule, off)
            else:
                found = []
        if found:
            self._kept[id(fn)] = found[0]
        return bool(found)

    def _chunks(self) -> list:
        """The loss's values at the model on the set's chunks and their halves (``set_chunks``), once: chunks of
        the given batch size, else of ``SPREAD_SAMPLES``."""
        if self._chunk_values is None:
            self._chunk_values, self._chunk_size = set_chunks(
                self.model, self._data, self._split, self.loss_fn, self.settings.batch_size or SPREAD_SAMPLES,
                self.device)
        return self._chunk_values

    def _chunk_words(self, off: tuple) -> str:
        """A chunk ``fits_every_chunk`` found off, in words."""
        whole, mean, k = off
        return (f"{whole:.7g} at the model itself on samples {k * self._chunk_size} to "
                f"{min((k + 1) * self._chunk_size, self.n_samples) - 1} of the set (in its order), {mean:.7g} from "
                "their two halves")

    def _stacked_values(self, out, yb) -> torch.Tensor:
        """Loss and metrics of one batch as one tensor (1 + n_metrics,)."""
        return torch.stack([_scalar(self.loss_fn(out, yb)), *(_scalar(fn(out, yb)) for fn in self._metric_list)])


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
            if self.channels_last:  # asked for, or the format the trial kept; restoring puts the user's storage back
                self.conv_weights_format(True)
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
            if not self.tuning:
                start += self._choose_format(all_c[start:], rows, should_stop)
            if not self.tuning and not self._format_plan:
                start += self._choose_shared_and_stacking(all_c[start:], rows, should_stop, len(coords))
            k = 1 if self.tuning else self._points_per_pass_now()
            left = len(coords) - start
            if k > 1 and left > 0:  # passes of nearly equal size, none larger than k (18 points: 9 + 9, not 16 + 2)
                k = math.ceil(left / math.ceil(left / k))
            for i in range(start, len(coords), k):
                if should_stop is not None and should_stop():
                    raise Cancelled()
                if k > 1 and self.points_per_pass != 1:  # 1: stacking failed on an earlier chunk
                    try:
                        rows.append(self._points_stacked(all_c[i:i + k]))  # checked inside (_verify_stacked)
                        continue
                    except Exception as exc:  # noqa: BLE001 - e.g. out of memory later on: one point a pass
                        self._stacking_failed(exc, k)  # a real error of the model raises again just below
                for c in all_c[i:i + k]:
                    self.perturber.set(c)
                    rows.append(self.point_values()[None, :])
            values = torch.cat(rows).cpu().numpy()
        return self.with_exact_fractions(values)

    def with_exact_fractions(self, values: np.ndarray) -> np.ndarray:
        """``values`` (points, 1 + n_metrics) from `point_values` rows, each built-in accuracy column the
        exact fraction of the set it is (``metrics.exact_fractions``); in place, returned. The counts are
        taken once per batching (on a GPU each is a device sync), not once per tile."""
        if self._counts_of is not self.batches:
            self._counts = fraction_counts(self._metric_list, [yb for _, yb in self.batches])
            self._counts_of = self.batches
        return exact_fractions(values, self._counts)


def _tf32_switches() -> list[tuple[object, str, object, object]]:
    """(object, attribute, value for TF32, value for fp32) of PyTorch's TF32 switches: the
    ``fp32_precision`` settings where this torch has them (reading the legacy ``allow_tf32`` after
    a user set those raises), else the legacy ``allow_tf32`` flags."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return [(torch.backends.cuda.matmul, "fp32_precision", "tf32", "ieee"),
                (conv, "fp32_precision", "tf32", "ieee"),
                (torch.backends.cudnn.rnn, "fp32_precision", "tf32", "ieee")]
    return [(torch.backends.cuda.matmul, "allow_tf32", True, False), (torch.backends.cudnn, "allow_tf32", True, False)]


@contextlib.contextmanager
def gpu_flags(*, tf32: bool, benchmark: bool):
    """TF32 in matmuls and cuDNN (``tf32``) and cuDNN's algorithm search (``benchmark``) for the
    duration; every switch is put back as it was after, also on error."""
    switches = [(obj, name, on if tf32 else off) for obj, name, on, off in _tf32_switches()]
    switches.append((torch.backends.cudnn, "benchmark", benchmark))
    old = [getattr(obj, name) for obj, name, _ in switches]
    try:
        for obj, name, value in switches:
            setattr(obj, name, value)
        yield
    finally:
        for (obj, name, _), value in zip(switches, old):
            setattr(obj, name, value)


def _rolled_by_sample(t: torch.Tensor, m: int) -> torch.Tensor:
    """Outputs ``t`` of ``m`` samples (leading axis) with each sample's last axis rolled by a seeded random
    amount: predictions right and wrong mixed over classes with no pattern the samples' order shares, the
    same for a sample whether its batch is sliced before or after."""
    if t.dim() < 2 or len(t) != m or t.shape[-1] < 2:
        return t
    c = t.shape[-1]
    shift = torch.randint(c, (m,), generator=torch.Generator().manual_seed(0)).to(t.device)
    shift = shift.view(m, *[1] * (t.dim() - 1))
    index = (torch.arange(c, device=t.device) + shift) % c
    return t.gather(-1, index.expand(t.shape))


def _right_and_wrong(out, targets, *, odd_wrong: bool = True) -> torch.Tensor | None:
    """Class scores shaped like ``out`` whose argmax is the target for even samples and another class for odd
    ones (with ``odd_wrong=False``, the target for all), for outputs (N, C, ...) or (N, ..., C) of integer
    targets (N, ...) (each half of a batch then holds right and wrong predictions: ``refuse_batch_sum`` sees a
    count of right ones grow with the batch); None for other outputs or targets."""
    if not (isinstance(out, torch.Tensor) and out.is_floating_point() and out.dim() >= 2
            and isinstance(targets, torch.Tensor) and not targets.is_floating_point() and len(targets) == len(out)):
        return None
    axis = -1 if out.shape[:-1] == targets.shape else 1 if out.shape[2:] == targets.shape[1:] else None
    if axis is None or out.shape[axis] < 2:
        return None
    scores = torch.zeros_like(out).movedim(axis, -1)
    index = targets.long().clamp(0, scores.shape[-1] - 1)  # ignored targets (-100) too: not counted anyway
    if odd_wrong:
        index[1::2] = (index[1::2] + 1) % scores.shape[-1]
    return scores.scatter(-1, index.unsqueeze(-1), 1.0).movedim(-1, axis)


def _scalar(value: torch.Tensor) -> torch.Tensor:
    """A one-element tensor (validated) as a 0-d one, so loss and metrics stack."""
    return value if value.dim() == 0 else value.reshape(())


__all__ = ["EvalSettings", "Evaluator", "PointEvaluator", "Cancelled", "PRECISIONS"]
