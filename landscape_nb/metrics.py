"""Metrics evaluated next to the loss: built-ins, name resolution, and unpacking value rows."""
from __future__ import annotations

import functools
import math
import re
import warnings
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from .errors import LandscapeError, one_line
from .trees import likely_target_key, tensor_leaves


def unwrap_compiled(fn):
    """The callable inside ``torch.compile`` wrappers (nested ones too): a compiled function's original
    (``_torchdynamo_orig_callable``), a compiled module's ``_orig_mod`` (the module itself); anything else as is.

    A compiled loss or metric is evaluated as the function it wraps, as a compiled model is
    (``params.unwrap_model``): the same values up to rounding (a compiled function also the same store
    key; torch marks a compiled module itself, so its key differs from a never-compiled one's), without the
    compiler's work on each shape the checks use (a 7x7 plane of a small MLP took 7-23 s with a
    compiled ``nn.CrossEntropyLoss`` instead of 2 s, and the batch-axis check's function mode made
    dynamo hit its recompile limit, printing warnings). ``compile=True`` compiles the forward pass.
    """
    while True:
        inner = getattr(fn, "_orig_mod", None)  # first: a compiled module's orig callable is its bound forward
        if not isinstance(inner, torch.nn.Module):
            inner = getattr(fn, "_torchdynamo_orig_callable", None)
        if inner is None or inner is fn:
            return fn
        fn = inner


def find_logits(outputs) -> torch.Tensor | None:
    """The class scores in a model's outputs: the tensor itself, its ``.logits`` (Hugging Face
    ``ModelOutput``), a ``"logits"`` dict entry, or the only score-shaped element of a tuple/list
    (a floating tensor with a class axis); None if none, or if several elements could be the scores
    (``(features, logits)`` is not guessed: the caller names them with ``loss_fn``)."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    logits = getattr(outputs, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(outputs, Mapping) and isinstance(outputs.get("logits"), torch.Tensor):
        return outputs["logits"]
    if isinstance(outputs, (tuple, list)):
        scores = [t for t in outputs if isinstance(t, torch.Tensor) and t.is_floating_point() and t.ndim >= 2]
        if len(scores) == 1:
            return scores[0]
    return None


def ambiguous_logits(outputs) -> bool:
    """Whether ``outputs`` is a tuple/list with several tensors that could each be the class scores."""
    return isinstance(outputs, (tuple, list)) and sum(
        isinstance(t, torch.Tensor) and t.is_floating_point() and t.ndim >= 2 for t in outputs) > 1


def own_loss(outputs) -> torch.Tensor | None:
    """The model's own scalar loss in its outputs (``outputs.loss`` or ``outputs["loss"]``), or None."""
    loss = getattr(outputs, "loss", None)
    if loss is None and isinstance(outputs, Mapping):
        loss = outputs.get("loss")
    return loss if isinstance(loss, torch.Tensor) and loss.numel() == 1 else None


def describe(outputs, *, few: bool = False) -> str:
    """A short description of model outputs for error messages (shape, or type and fields). ``few``: they are a few
    samples' (a check's), so each shape's first axis reads N (the targets of 8 checked samples were named "a tensor
    of shape (8, 6)", trial s46)."""
    if isinstance(outputs, torch.Tensor):
        return f"a tensor of shape {_n_first(tuple(outputs.shape)) if few and outputs.dim() else tuple(outputs.shape)}"
    if isinstance(outputs, Mapping):
        inner = ", ".join(f"{k}: {describe(v, few=few) if isinstance(v, torch.Tensor) else type(v).__name__}"
                          for k, v in list(outputs.items())[:6])
        return f"{type(outputs).__name__}({inner})"
    if isinstance(outputs, (tuple, list)):
        return (f"a {type(outputs).__name__} of {len(outputs)} "
                f"({', '.join(describe(v, few=few) for v in outputs[:4])})")
    return type(outputs).__name__


def accuracy(outputs, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Fraction of argmax predictions equal to integer targets (or to argmax of one-hot targets).

    ``outputs``: logits (N, C) or (N, C, ...) with targets (N,) or (N, ...), or any outputs holding
    them (``find_logits``); targets equal to ``ignore_index`` (the cross-entropy's, -100 by default)
    are not counted.
    """
    logits = find_logits(outputs)
    if logits is None:
        raise LandscapeError(f"accuracy found no logits in the outputs ({describe(outputs)})")
    if targets.ndim == logits.ndim:
        targets = targets.argmax(dim=1 if logits.ndim > 2 else -1)
    pred = logits.argmax(dim=1 if logits.ndim > 2 else -1)
    keep = targets != ignore_index
    return ((pred == targets) & keep).sum().float() / keep.sum().clamp_min(1).float()


class DefaultLoss:
    """Cross-entropy on the logits of any outputs (``find_logits``): the loss when none is given.

    Targets: class indices (N,) or (N, ...), or class probabilities of the logits' shape (soft labels,
    e.g. label smoothing or mixup). ``check`` refuses what it cannot mean, with the fix: other float
    targets (regression), a single output column, class indices outside ``[0, C)`` (other than -100,
    ignored).
    """

    def __call__(self, outputs, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(find_logits(outputs), targets)

    def check(self, outputs, targets: torch.Tensor | None, keys: list | None = None) -> None:
        """Raise ``LandscapeError`` unless cross-entropy of ``outputs`` against all ``targets`` means something.
        ``keys``: the dict batches' keys, where the data are dict batches (named where no targets were found)."""
        fix = ("pass loss_fn= (e.g. loss_fn=nn.MSELoss() for regression; from the CLI, have your module:function "
               "return (model, data, loss_fn))")
        logits = find_logits(outputs)
        if targets is None:
            likely = likely_target_key(keys or ())
            held = (f"the dict batches hold the keys {list(keys)}, none of them 'labels' (target_key's default), so "
                    "every key went to the model as inputs" + (f" (target_key={likely!r} reads the targets from "
                                                                f"{likely!r}); else " if likely else "; ")
                    if keys else "")  # a key under another name was the model's **kwargs (trial s57)
            raise LandscapeError(
                f"the data carry no targets and the model's outputs ({describe(outputs)}) hold no .loss; {held}"
                "pass (inputs, targets), a dict with a 'labels' entry (or target_key= naming the key of the targets), "
                "or a model returning its loss"
            )
        if logits is None and ambiguous_logits(outputs):
            raise LandscapeError(
                f"the outputs are a {type(outputs).__name__} of several tensors ({describe(outputs)}) and the default "
                "cross-entropy does not guess which holds the logits; pass loss_fn= naming them, e.g. "
                "loss_fn=lambda out, y: F.cross_entropy(out[i], y) with i where your model puts the logits (a key "
                "for a dict), and metrics= likewise (from the CLI, return (model, data, loss_fn) from your "
                "module:function)")
        if logits is None:
            raise LandscapeError(f"the default cross-entropy found no logits in the outputs ({describe(outputs)}); {fix}")
        n_classes = logits.shape[1] if logits.ndim > 1 else 1
        _refuse_class_axis_guess(logits, targets, logits_expr(outputs))
        if targets.is_floating_point() and (logits.ndim < 2 or n_classes < 2):
            binary = bool(((targets == 0) | (targets == 1)).all())
            raise LandscapeError(
                f"the model gives one value per sample (outputs {_n_first(tuple(logits.shape))}) and the targets are "
                f"floating point ({targets.dtype}, shape {_n_first(tuple(targets.shape))})"
                + (", all 0 or 1: a binary classifier with one logit (loss_fn=nn.BCEWithLogitsLoss(), with targets "
                   "of the outputs' shape: y.view_as(out)) or a regression" if binary else ": a regression")
                + f", for which the default loss (cross-entropy over classes) means nothing; {fix}"
            )
        if targets.is_floating_point() and not _class_probabilities(logits, targets):
            raise LandscapeError(
                f"targets are floating point ({targets.dtype}, shape {tuple(targets.shape)}) but not class "
                f"probabilities: the default loss is cross-entropy over class indices (integer targets) or over "
                f"probabilities (targets of the logits' shape {_n_first(tuple(logits.shape))}, each in "
                f"[0, 1], summing to 1 over the classes, dim 1), and means nothing for these; "
                + (_padded_probabilities(logits, targets, logits_expr(outputs)) or (
                    "multi-hot labels of the logits' shape (several classes a sample, each 0 or 1) take "
                    "loss_fn=nn.BCEWithLogitsLoss(), one binary loss a class; " + fix  # not MSE (trial s40)
                    if targets.shape[1:] == logits.shape[1:] and bool(((targets == 0) | (targets == 1)).all())
                    else fix))
            )
        if logits.ndim < 2 or n_classes < 2:
            raise LandscapeError(
                f"the model gives one value per sample (outputs {_n_first(tuple(logits.shape))}), and cross-entropy "
                "over one class is 0 everywhere; for a binary classifier with one logit pass loss_fn=nn."
                "BCEWithLogitsLoss() with float targets of the outputs' shape (e.g. loss_fn=lambda out, y: "
                "F.binary_cross_entropy_with_logits(out, y.float().view_as(out))); for a regression, "
                "loss_fn=nn.MSELoss() with float targets of the outputs' shape"
            )
        one_hot = _one_hot_integers(logits, targets)
        if one_hot:
            raise LandscapeError(one_hot)
        hint = _class_range_hint(logits, targets, -100)  # the rule the user's own losses get (refuse_class_range)
        if hint:
            raise LandscapeError(f"{hint}; or {fix}")


def _one_hot_integers(logits, targets) -> str | None:
    """What to say of integer one-hot targets of the logits' shape (``F.one_hot(y)``), which cross-entropy refuses
    with "Expected floating point type for target with class probabilities" (trial s38); None for others."""
    if not (isinstance(logits, torch.Tensor) and isinstance(targets, torch.Tensor)) or targets.is_floating_point():
        return None
    if targets.shape != logits.shape or targets.ndim < 2 or targets.dtype == torch.bool:
        return None
    if not (bool(((targets == 0) | (targets == 1)).all()) and bool((targets.sum(1) == 1).all())):
        return None
    return (f"the targets are one-hot integers ({targets.dtype}, shape {_n_first(tuple(targets.shape))}, the logits' "
            "shape): cross-entropy takes class indices or float class probabilities; pass the indices, "
            "y.argmax(1), or the probabilities, y.float()")


#: the key of ``DataInfo.notes`` saying the default loss was given probabilities (`probability_outputs_note`)
PROBABILITY_OUTPUTS = "probability outputs"
UNCOUNTED_TARGETS = "uncounted targets"  # notes key: accuracy counts positions the loss leaves out (warned)
SKIPPED_ACCURACY = "skipped accuracy"  # notes key: a classifier's automatic accuracy skipped, and why (warned)


class Quiet(str):
    """A reason to skip the automatic accuracy that is no classifier's (a regression's, an autoencoder's, a
    metric-learning loss's): recorded in the provenance, not warned (trial s41: a VAE and a Poisson regression were
    warned with an accuracy to pass)."""


NO_TARGETS = Quiet("the data carry no targets")
NOT_CLASS_INDICES = Quiet("the targets are floating point (not class indices)")  # a regression's


def probability_outputs_note(outputs) -> str | None:
    """What to say when the logits the default cross-entropy found (``find_logits``) are probabilities already:
    each in [0, 1], summing to 1 over the classes (dim 1), as a model ending in softmax gives. Cross-entropy
    takes log_softmax of them again, which squeezes the surface: 1.59–2.36 over a plane where the same
    weights' log-probabilities gave 0.215–151 (trial s34), with no word. None otherwise."""
    logits = find_logits(outputs)
    if logits is None or logits.ndim < 2 or logits.shape[1] < 2 or not logits.is_floating_point():
        return None
    if not _sums_to_one(logits, 1):
        return None
    return (f"the model's outputs {_n_first(tuple(logits.shape))} are probabilities already (each in [0, 1], summing "
            "to 1 over dim 1: a softmax at the end of the model?), and the default cross-entropy takes logits: it "
            "applies log_softmax to them again, which flattens the surface. If the model was trained with that loss, "
            "this is its loss; else pass loss_fn=lambda out, y: F.nll_loss(out.clamp_min(1e-30).log(), y) (or drop "
            "the final softmax)")


def logits_expr(outputs) -> str:
    """How a loss written for the user reaches the logits in ``outputs`` (``find_logits``): ``out``,
    ``out.logits``, ``out["logits"]`` or ``out[i]``."""
    if isinstance(outputs, torch.Tensor):
        return "out"
    if isinstance(getattr(outputs, "logits", None), torch.Tensor):
        return "out.logits"
    if isinstance(outputs, Mapping):
        return 'out["logits"]'
    logits = find_logits(outputs)
    return next((f"out[{i}]" for i, t in enumerate(outputs) if t is logits), "out")


def _refuse_class_axis_guess(logits: torch.Tensor, targets: torch.Tensor, expr: str = "out") -> None:
    """Raise ``LandscapeError`` when class-index ``targets`` (N, d1, ...) fit ``logits`` with the classes on
    the last dim: a language model's (N, L, V) logits and (N, L) tokens, or a channels-last segmentation's
    (N, H, W, C) and (N, H, W). ``F.cross_entropy`` takes dim 1 as the classes: with L != V it read L as the
    number of classes (its range message then said "the model has L output classes"); with L == V the
    shapes fit both axes and it gave cross-entropy over the positions, a plausible number that is not the
    model's loss. The fix given moves the last dim to dim 1 (``movedim(-1, 1)``: a transpose of dims 1 and
    2 would read W as the classes of (N, H, W, C) logits, 1.7 % off in a trial with W == C). Float targets of
    the logits' shape summing to 1 over the last dim are class probabilities there (a pointer network's
    one-hot positions over (N, L, L) logits were read over dim 1, 4.7 % off in a trial)."""
    if logits.ndim < 3 or targets.is_complex():
        return
    shape, got = tuple(logits.shape), tuple(targets.shape)  # the logits may be of a few samples: dim 0 apart
    soft = targets.is_floating_point()  # class probabilities (soft labels) of the logits' shape
    if soft:
        if got[1:] != shape[1:] or not _sums_to_one(targets, -1):
            return
        seen = f"logits {_n_first(shape)} and class-probability targets of that shape (summing to 1 over the last dim)"
        ambiguous = _sums_to_one(targets, 1)
    else:
        dims = _class_dims(shape, got)
        if len(shape) - 1 not in dims:
            return
        seen = f"logits {_n_first(shape)} and class-index targets {_n_first(got)}"
        ambiguous = 1 in dims
    fix = (f"loss_fn=lambda out, y: F.cross_entropy({expr}.movedim(-1, 1), {'y.movedim(-1, 1)' if soft else 'y'}) "
           "for classes on the last dim (from the CLI, have your module:function return (model, data, loss_fn))")
    if ambiguous:
        raise LandscapeError(
            f"the {seen} fit the classes on dim 1 and on the last dim alike (a sequence as long as the "
            "vocabulary, or an image as many pixels a side as it has classes?), and the default cross-entropy "
            "does not guess which: pass "
            + ("loss_fn=nn.CrossEntropyLoss()" if expr == "out" else
               f"loss_fn=lambda out, y: F.cross_entropy({expr}, y)")
            + f" for classes on dim 1 (torch's convention: (N, C, d1, ...)), or {fix}")
    raise LandscapeError(
        f"the {seen} put the classes on the last dim (a language model's (N, L, V), or channels-last "
        f"(N, H, W, C)), while the default "
        f"cross-entropy takes them on dim 1 (torch's (N, C, d1, ...)); pass {fix}")


def _sums_to_one(targets: torch.Tensor, dim: int) -> bool:
    """Whether float ``targets`` are each in [0, 1] and sum to 1 over ``dim`` (to 1e-3, float16 rounding)."""
    t = targets.detach().double()
    return bool(t.numel() and torch.all((t >= 0) & (t <= 1))
                and torch.allclose(t.sum(dim), torch.ones((), dtype=t.dtype), atol=1e-3))


def _padded_probabilities(logits: torch.Tensor, targets: torch.Tensor, expr: str) -> str | None:
    """The fix for class probabilities of the logits' shape whose rows sum to 1 or to 0 (all-zero targets at
    padded positions: the default cross-entropy would count each as a loss of 0 in its mean), over dim 1 or
    the last dim; None for other targets. Such targets got the regression fix (trial s33)."""
    if logits.ndim < 2 or targets.shape[1:] != logits.shape[1:] or not targets.numel():
        return None
    t = targets.detach().double()
    if not torch.all((t >= 0) & (t <= 1)):
        return None
    for dim in dict.fromkeys((1, t.ndim - 1)):
        sums = t.sum(dim)
        zero, one = sums.abs() <= 1e-3, (sums - 1).abs() <= 1e-3
        if bool(torch.all(zero | one)) and bool(zero.any()) and bool(one.any()):
            d = "1" if dim == 1 else "-1"
            return (f"they sum to 1 over dim {d} except at {int(zero.sum())} of {zero.numel()} positions where they "
                    "are all 0 (padding?), which the default cross-entropy would count as a loss of 0 each in its "
                    "mean; pass a loss_fn averaging over the positions that have targets, e.g. loss_fn=lambda out, "
                    f"y: (-(y * {expr}.log_softmax({d})).sum({d}))[y.sum({d}) > 0].mean() (from the CLI, have your "
                    "module:function return (model, data, loss_fn))")
    return None


def _class_probabilities(logits: torch.Tensor | None, targets: torch.Tensor) -> bool:
    """Whether float ``targets`` are class probabilities for ``logits`` (what ``F.cross_entropy`` takes as
    soft labels): the logits' shape, (N, C) or (N, C, ...) (any N: ``logits`` may be of a few samples),
    every entry in [0, 1], summing to 1 over dim 1 (to 1e-3, float16 rounding); a regression target of
    that shape is not."""
    if logits is None or logits.ndim < 2 or targets.shape[1:] != logits.shape[1:] or not targets.numel():
        return False
    return _sums_to_one(targets, 1)


class OwnLoss:
    """The model's own ``outputs.loss`` (Hugging Face models given their labels); targets unused."""

    def __call__(self, outputs, targets=None) -> torch.Tensor:
        loss = own_loss(outputs)
        if loss is None:
            raise LandscapeError(f"the model's outputs ({describe(outputs)}) hold no scalar .loss")
        return loss


def batch_denominator(fn, targets) -> torch.Tensor | None:
    """What ``fn`` divides a batch's sum by, from the targets alone, for the losses and metrics that
    average over target elements rather than samples: the number of class-index targets not ignored
    (the default loss, ``accuracy``, ``nn.CrossEntropyLoss``; -100 or its ``ignore_index``), or the sum
    of their class weights (``nn.CrossEntropyLoss(weight=...)``). A 0-d tensor; None for any other
    function or float targets (taken to be a mean over samples)."""
    if not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.is_complex():
        return None
    if fn is accuracy or isinstance(fn, DefaultLoss):
        return (targets != -100).sum()
    if isinstance(fn, functools.partial) and fn.func is accuracy and not fn.args:
        return (targets != fn.keywords.get("ignore_index", -100)).sum()
    if type(fn) is torch.nn.CrossEntropyLoss and fn.reduction == "mean":
        kept = targets != fn.ignore_index
        if fn.weight is None:
            return kept.sum()
        return fn.weight.to(targets.device)[targets[kept]].sum()  # label smoothing divides by the same sum
    return None


def fraction_counts(fns: list, target_batches: list) -> dict[int, int]:
    """For each built-in ``accuracy`` among the metrics ``fns``, by its column in a values row (loss first, so
    1 + its index), the N its value is a fraction K/N of over the whole set: the targets not ignored in
    ``target_batches`` (the batches' targets), or for one-hot or probability targets the number of argmaxes
    ``accuracy`` takes (samples, or pixels of a segmentation map: (N, C, H, W) targets count N·H·W). Columns
    whose N is not known are left out."""
    counts = {}
    for j, fn in enumerate(fns, 1):
        if not (fn is accuracy or (isinstance(fn, functools.partial) and fn.func is accuracy and not fn.args)):
            continue
        dens = [batch_denominator(fn, yb) if not _argmaxed(yb) else yb.numel() // yb.shape[1 if yb.ndim > 2 else -1]
                for yb in target_batches]  # one-hot or probability targets: one prediction per argmax taken
        if all(d is not None for d in dens):
            counts[j] = int(sum(int(d) for d in dens))
    return counts


def exact_fractions(values: np.ndarray, counts: dict[int, int]) -> np.ndarray:
    """``values`` (points, columns) with each column ``j`` of ``counts`` (`fraction_counts`: a built-in accuracy
    and its N) put back on the fraction K/N it is, in place: its batches' float32 means gave
    0.32499998807907104 for 130 of 400 (32.499998807907104 % in a reference .h5 file) and other digits on
    other runners or batchings. Only where every value lies within 0.25 of a count (N up to 2**24);
    non-finite values are left as they are."""
    for j, n in counts.items():
        col = values[:, j]
        finite = np.isfinite(col)
        if not 0 < n <= 2 ** 24 or not finite.any():
            continue
        k = np.round(col[finite] * n)
        if np.all(np.abs(col[finite] * n - k) < 0.25):
            values[finite, j] = k / n
    return values


def _argmaxed(targets) -> bool:
    """Whether ``accuracy`` takes the argmax of ``targets`` (float one-hot or probabilities of the logits' shape)."""
    return isinstance(targets, torch.Tensor) and targets.is_floating_point() and targets.ndim >= 2


_SIZES = re.compile(r"target size \(torch\.Size\(\[([\d, ]*)\]\)\) that is different to the input size "
                    r"\(torch\.Size\(\[([\d, ]*)\]\)\)")


def _refuse_broadcasting(caught: list) -> None:
    """Raise ``LandscapeError`` if torch warned, among the warnings ``caught`` from a loss call, that a loss
    (``mse_loss``, ``l1_loss``, ``smooth_l1_loss``, ``huber_loss``) got targets of another shape than its
    input and the two broadcast to more elements than either holds: outputs (N, 1) against targets (N,)
    compare every output with every target, an (N, N) loss that is no per-sample loss. Other warnings are
    shown again."""
    for w in caught:
        m = _SIZES.search(str(w.message))
        if m is None:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            continue
        target, given = ([int(v) for v in g.split(",") if v.strip()] for g in m.groups())
        try:
            both = list(torch.broadcast_shapes(target, given))
        except RuntimeError:
            continue  # not broadcastable: torch raises on its own
        if math.prod(both) > max(math.prod(target), math.prod(given)):
            raise LandscapeError(_broadcast_words(given, target, both, f"torch warned: {w.message}"))


def _broadcast_words(given: list, target: list, both: list, why: str, what: str = "loss_fn") -> str:
    """The refusal of a loss (or metric: ``what`` names it) whose outputs of shape ``given`` and targets of shape
    ``target`` broadcast to ``both`` (more elements than either), ``why`` saying how it was seen, with the
    reshape that fixes it."""
    if len(given) == len(target) + 1 and given[-1] == 1:  # outputs (N, 1), targets (N,)
        fix = (f"reshape the targets (e.g. y[:, None]) or the outputs in {what} (e.g. lambda out, y: "
               "F.mse_loss(out.squeeze(-1), y))")
    elif len(target) == len(given) + 1 and target[-1] == 1:  # outputs (N,), targets (N, 1)
        fix = (f"reshape the targets (e.g. y.squeeze(-1)) or the outputs in {what} (e.g. lambda out, y: "
               "F.mse_loss(out[:, None], y))")
    else:
        fix = f"reshape the targets or the outputs in {what} to one shape"
    return (f"{what} got outputs of shape {_n_first(given)} and targets of shape {_n_first(target)} (N samples), "
            f"which broadcast to {_n_at(both, {len(both) - len(given), len(both) - len(target)})} ({why}): every "
            "output was compared with every target, so the value is not a loss per sample; expected targets shaped "
            f"like the outputs: {fix}")


def refuse_unpaired(loss_fn, outputs, targets, loss: torch.Tensor, what: str = "loss_fn") -> None:
    """Raise ``LandscapeError`` for a loss (or a metric: ``what`` names it) of outputs and targets of other
    shapes, as many elements each, that broadcast to more (outputs (N, 1), targets (N,)), whose value follows
    the targets but stays the same when they are shifted one sample against the outputs: it compares every
    output with every target, as ``lambda out, y: ((out - y) ** 2).mean()`` does there, with no warning from
    torch to catch (``_refuse_broadcasting``; trial s53: accepted, an (N, N) loss drawn as the landscape). A
    loss that pairs each output with its own target changes (``out.squeeze(-1) - y`` and ``out - y[:, None]``
    both do); one that reads no target (``out.pow(2).mean()``) is left alone, and so is one where the outputs
    or the shifted targets are all alike (nothing to tell) or the loss fails on the changed targets."""
    if not (isinstance(outputs, torch.Tensor) and isinstance(targets, torch.Tensor) and outputs.ndim and targets.ndim
            and outputs.shape != targets.shape and outputs.numel() == targets.numel() and len(outputs) > 1
            and outputs.is_floating_point()):
        return
    given, target = list(outputs.shape), list(targets.shape)
    try:
        both = list(torch.broadcast_shapes(outputs.shape, targets.shape))
    except RuntimeError:
        return
    if math.prod(both) <= outputs.numel():
        return
    shifted = targets.roll(1, 0)
    spread = (outputs.max() - outputs.min()).abs()
    if torch.equal(shifted, targets) or not bool(spread > 1e-6 * outputs.abs().max()):
        return
    def same(value) -> bool:
        return (isinstance(value, torch.Tensor) and value.numel() == 1
                and math.isclose(float(value), float(loss), rel_tol=1e-5, abs_tol=1e-12))

    try:
        again, moved = loss_fn(outputs, shifted), loss_fn(outputs, targets + 1)
    except Exception:  # noqa: BLE001 - the user's loss: what it rejects tells nothing here
        return
    if bool(torch.isfinite(loss)) and same(again) and not same(moved):
        raise LandscapeError(_broadcast_words(given, target, both, "its value did not change when the targets were "
                                              "shifted one sample against the outputs", what))


def _n_first(shape) -> str:
    """A shape with its sample axis, the first, as N: ``(N, 1)``; the values checked are a few samples' only, whose
    count means nothing to the user."""
    return _n_at(shape, {0})


def _n_at(shape, samples: set[int]) -> str:
    """A shape with the axes ``samples`` as N: a broadcast of outputs (N, 1, 8, 8) against targets (N, 8, 8) is
    (N, N, 8, 8), not "(N, N, N, N)" as every axis of the checked 8 samples' size was (trial s41)."""
    dims = ["N" if k in samples else str(v) for k, v in enumerate(shape)]
    return f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"


def _class_dims(shape: tuple, target_shape: tuple) -> list[int]:
    """The dims of logits of ``shape`` that class-index targets of ``target_shape`` leave out, any sample counts
    apart (dim 0): where the classes can be. [1] for (N, C, H, W) and (N, H, W); [2] for a language model's
    (N, L, V) and (N, L); [1, 2] where L == V; [] where the targets fit no single axis."""
    return [d for d in range(1, len(shape)) if tuple(target_shape[1:]) == shape[1:d] + shape[d + 1:]]


def _class_range_hint(outputs, targets, ignore_index: int) -> str | None:
    """Why a loss failed when integer ``targets`` (other than ``ignore_index``) are class indices outside the
    ``C`` classes of the outputs' logits (``find_logits``): what a label counted from 1, or a model with one
    output too few, gives (torch says "Target 5 is out of bounds", which read as a fault of the loss's
    signature). The classes are along dim 1 for (N, C) logits; for more dims, the one the targets' shape
    leaves out (dim 1 for (N, C, H, W) logits and (N, H, W) targets, the last for (N, L, V) logits and (N, L)
    targets, as a language model's loss reshapes them). None otherwise, or where that is ambiguous."""
    logits = find_logits(outputs)
    if (not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.is_complex()
            or logits is None or logits.ndim < 2 or not targets.numel()):
        return None
    shape = tuple(logits.shape)
    dims = _class_dims(shape, tuple(targets.shape))
    if len(dims) != 1:  # the targets leave out no single axis (or several alike, e.g. L == V)
        return None
    dim = dims[0]
    kept = targets[targets != ignore_index]
    n_classes = shape[dim]
    if not kept.numel() or (int(kept.min()) >= 0 and int(kept.max()) < n_classes):
        return None
    lo, hi = int(kept.min()), int(kept.max())
    outside = torch.unique(kept[(kept < 0) | (kept >= n_classes)]).tolist()
    if len(outside) == 1 and int(((kept >= 0) & (kept < n_classes)).sum()) and (  # one label of those that
            outside[0] < 0 or outside[0] == 255):  # mark void pixels or padding (255, -1), not a class (trial s40)
        return (f"the targets hold {outside[0]}, outside the {n_classes} classes along dim {dim} (the others are in "
                f"[0, {n_classes - 1}]): a void or padding label? pass loss_fn=nn.CrossEntropyLoss(ignore_index="
                f"{outside[0]}) to leave it out; else check the labels or the model's number of outputs")
    return (f"the targets hold class indices in [{lo}, {hi}] but the outputs have {n_classes} classes along dim "
            f"{dim}, so expected indices in [0, {n_classes - 1}]; check the labels (counted from 1? subtract 1) or "
            "the model's number of outputs")


def refuse_class_range(loss_fn, outputs, targets) -> None:
    """Raise ``LandscapeError`` if the class-index ``targets`` of the whole set (not only the first batch's
    8 samples the other checks see) hold an index outside the classes of ``outputs`` (a few samples' are
    enough), other than the loss's ``ignore_index``: a label 9 at sample 40 of a 4-class model failed in the
    middle of the grid with torch's "index 9 is out of bounds for dimension 0 with size 4"."""
    hint = _class_range_hint(outputs, targets, getattr(loss_fn, "ignore_index", -100))
    if hint:
        raise LandscapeError(f"loss_fn ({type(loss_fn).__name__}) cannot take these targets: {hint}")


def check_mean_loss(loss_fn, outputs, targets, keys: list | None = None) -> torch.Tensor:
    """``loss_fn(outputs, targets)`` on a first small batch, checked to be what every value computed from it
    takes it to be: a scalar mean over the batch. Returns it.

    A summed loss (``reduction='sum'``) is refused: its value, and so its curvature, would follow the batch
    size (tuned for a surface, chosen by the user for a Hessian), and batches are combined as a weighted mean.
    It is found on tensor outputs of at least 2 samples: the loss of the batch equals the sum of its two
    halves' losses rather than their weighted mean (a mean over kept targets, e.g. tokens that are not
    padding, equals neither and passes; a loss needing more samples than half the batch is not checked).

    Raises
    ------
    LandscapeError
        If ``loss_fn`` raises (its error chained), returns no scalar tensor (e.g. ``reduction='none'``),
        sums over the batch, or broadcasts targets of another shape against the outputs to more elements than
        either holds (torch's "Using a target size ... that is different to the input size" warning on
        ``(N, 1)`` outputs and ``(N,)`` targets: ``_refuse_broadcasting``; a function of them that torch does not
        warn of: ``refuse_unpaired``), or changes the outputs in place
        (``out += prior.log()``: the metrics then read what it left, 0.815 for 0.897, and it was blamed on state
        kept between calls, re-trial s40).
    """
    with torch.no_grad():
        before = [o.clone() for o in tensor_leaves(outputs)]
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loss = loss_fn(outputs, targets)
        except Exception as exc:
            yshape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else None
            failed = (f"loss_fn failed on outputs ({describe(outputs)}) and targets of shape {yshape} "
                      f"({type(exc).__name__}: {one_line(exc)})")
            out_of_range = (_class_range_hint(outputs, targets, getattr(loss_fn, "ignore_index", -100))
                            if "out of bounds" in str(exc) else None)  # torch's "Target 5 is out of bounds."
            if out_of_range:
                raise LandscapeError(f"{failed}: {out_of_range}") from exc
            one_hot = _one_hot_integers(find_logits(outputs), targets) if "floating point" in str(exc) else None
            if one_hot:
                raise LandscapeError(f"{failed}: {one_hot}") from exc
            if (isinstance(targets, torch.Tensor) and not targets.is_floating_point() and "Long" in str(exc)
                    and targets.dtype != torch.int64):  # int32 class indices (re-trial s38: "expected a callable")
                raise LandscapeError(f"{failed}: the targets are {targets.dtype} class indices, and cross-entropy "
                                     "takes int64 ones: pass y.long()") from exc
            logits = find_logits(outputs)
            if (isinstance(targets, torch.Tensor) and not targets.is_floating_point() and targets.ndim == 2
                    and targets.shape[1] == 1 and logits is not None and logits.ndim == 2 and logits.shape[1] > 1):
                raise LandscapeError(  # numpy's or scikit-learn's column of labels (trial s40: "expected a callable")
                    f"{failed}: the targets are a column of class indices {_n_first(tuple(targets.shape))}, and "
                    f"cross-entropy over {_n_first(tuple(logits.shape))} logits takes one index a sample, shape (N,): "
                    "pass y.squeeze(1) (or y.reshape(-1))") from exc
            if targets is None:  # (X,) or TensorDataset(X): read as a blame of the user's loss (trial s39)
                likely = likely_target_key(keys or ())  # ``keys``: a dict batch's, said (re-trial s57)
                held = (f"; the dict batches hold the keys {list(keys)}, none of them the targets' target_key, so every "
                        "key went to the model" + (f" (target_key={likely!r} reads the targets from {likely!r})"
                                                   if likely else "") if keys else "")
                raise LandscapeError(
                    f"{failed}: the data carry no targets (inputs alone: a 1-tuple, a TensorDataset of one tensor, "
                    f"or batches without a target entry), so loss_fn got targets=None{held}; pass (inputs, targets), "
                    "e.g. (X, X) for an autoencoder's reconstruction loss, or a loss_fn that takes targets=None") from exc
            raise LandscapeError(
                f"{failed}; expected a callable (outputs, targets) -> scalar mean loss "
                "that takes the model's outputs as they are (e.g. out.logits for a ModelOutput)"
            ) from exc
        after = tensor_leaves(outputs)
        if any(a.shape != b.shape or not bool(((a == b) | (a != a) & (b != b)).all()) for a, b in zip(after, before)):
            raise LandscapeError(
                "loss_fn changed the model's outputs in place (e.g. out += prior.log(), out[:, 3] = -1e4), so the "
                "metrics, and any loss after it, read what it left there; make a new tensor instead (out = out + "
                "prior.log(), out = out.clone() first)")
        _refuse_broadcasting(caught)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            n = targets.shape[0] if isinstance(targets, torch.Tensor) and targets.ndim else None
            each = ("sample" if not isinstance(loss, torch.Tensor) or loss[:1].numel() == 1 else  # (N, 20): not
                    "sample and element, e.g. per token")  # "per sample?" (trial s39)
            shape = ((f"a tensor of shape {_n_first(tuple(loss.shape))} for N samples (one value per {each}?)"
                      if loss.ndim and loss.shape[0] == n else f"a tensor of shape {tuple(loss.shape)}")
                     if isinstance(loss, torch.Tensor) else f"a {type(loss).__name__}")
            own = ("; a model's own loss (out.loss of a Hugging Face model) is None when the labels do not reach "
                   "it: with a dict batch, target_key=None passes every key, the labels too, to model(**batch)"
                   if loss is None else ", e.g. use reduction='mean'")  # trial s46: "use reduction='mean'"
            raise LandscapeError(
                f"loss_fn returned {shape}; expected a scalar tensor (the mean loss over the batch){own}"
            )
        refuse_unpaired(loss_fn, outputs, targets, loss)
    refuse_batch_sum(loss_fn, outputs, targets, loss)
    return loss


def refuse_batch_sum(fn, outputs, targets, value: torch.Tensor | None, *, what: str = "loss_fn",
                     example: str = "reduction='sum'", fix: str = "use reduction='mean'") -> None:
    """Raise ``LandscapeError`` if ``value``, ``fn(outputs, targets)`` on a first small batch (None: computed
    here), is a sum over the batch rather than a mean: on tensor outputs of at least 2 samples, the value of
    the batch equals the sum of its two halves' values rather than their weighted mean. Batches are combined
    as a weighted mean and their size is tuned or chosen, so a sum's value would follow the batch size (a
    count of right predictions gave 43 with batches of 100 and 194 with 450, the whole set's count being 387).

    A mean over kept targets (tokens that are not padding) equals neither and passes; so does a batch whose
    two halves do not both give a non-zero value (a half with nothing kept may give 0, as a sum with nothing
    counted does: not told apart here), and a function needing more samples than half the batch. A sum is
    the sum of its parts at any split: it is confirmed at the first third and the rest, and at the even and
    odd samples (a balanced accuracy over a fixed class list, on label-sorted samples, halved at both others).
    ``what`` names the function in the message, ``example`` a sum it may be, ``fix`` how to make it a mean.
    """
    n = len(targets) if isinstance(targets, torch.Tensor) and targets.dim() else 0
    if not isinstance(outputs, torch.Tensor) or n < 2 or outputs.dim() == 0 or len(outputs) != n:
        return
    try:
        with torch.no_grad():
            whole = float(fn(outputs, targets) if value is None else value)
            splits = [(float(fn(outputs[a], targets[a])), float(fn(outputs[b], targets[b])), h, n)
                      for a, b, h in sum_splits(n)]
    except Exception:  # noqa: BLE001 - a function needing more samples than half the batch: not checked here
        return
    mean = summed_over(whole, splits)
    if mean is not None:
        raise LandscapeError(
            f"{what} gives {whole:.6g} on {n} samples but {mean:.6g} as the mean over two halves of them: it "
            f"sums over the batch (e.g. {example}), so its value would depend on the batch size; expected "
            f"the mean over the batch: {fix}")


def sum_splits(n: int) -> list[tuple[slice, slice, int]]:
    """The splits of ``n`` samples at which a sum over the batch is the sum of its parts' values, as
    ``(first part, second part, samples in the first)``: the halves, the first third and the rest, and the even
    and odd samples (each part then holds every class of label-sorted data: a balanced accuracy is no sum of its
    halves there, s42). What ``refuse_batch_sum`` and a model's own loss's check compare (``summed_over``)."""
    parts = [(slice(None, h), slice(h, None), h) for h in dict.fromkeys((n // 2, max(1, n // 3)))]
    return parts + [(slice(0, None, 2), slice(1, None, 2), (n + 1) // 2)]


def summed_halves(whole: float, first: float, second: float, h: int, n: int) -> float | None:
    """The halves' weighted mean where ``whole``, a value on ``n`` samples, is the sum of ``first`` and ``second``,
    its values on the first ``h`` and the other ``n - h`` samples, rather than a mean of them (a sum over the
    batch); None otherwise. Any weighted mean lies between its parts' values, a sum of two of one sign beyond
    both: a mean over kept tokens whose first half keeps one well-predicted token (halves 9.1e-5 and 1.1768,
    whole 1.1762) is the sum of its halves to 1e-3, and was refused (review s42). None where a half gives 0
    (nothing kept there may give 0, as a sum with nothing counted does) or the halves differ in sign."""
    mean = (first * h + second * (n - h)) / n
    beyond = abs(whole) > max(abs(first), abs(second)) * (1 + 1e-4) and first * second > 0
    if beyond and abs(whole - mean) > 1e-4 * abs(mean) and abs(whole - (first + second)) <= 1e-3 * abs(whole):
        return mean
    return None


def summed_over(whole: float, splits: list[tuple[float, float, int, int]]) -> float | None:
    """The first split's weighted mean where ``whole`` is the sum of its two parts' values (``summed_halves``) at
    every split ``(first, second, h, n)`` whose parts both give a value of one sign, and there is one such; None
    otherwise. A sum is the sum of its parts at any split; a macro-F1 on 8 samples was 1 there and 0.5 on each
    half (each holding 2 of its 4 classes), the sum of its halves, but not of its first third and the rest (s42).
    A part giving 0 (padding alone) tells nothing."""
    means = []
    for first, second, h, n in splits:
        if first * second > 0:
            mean = summed_halves(whole, first, second, h, n)
            if mean is None:
                return None
            means.append(mean)
    return means[0] if means else None


BUILTIN_METRICS: dict[str, Callable] = {"accuracy": accuracy}


def loss_name(loss_fn) -> str:
    if loss_fn is None:
        return "cross_entropy"
    name = getattr(loss_fn, "__qualname__", None) or type(loss_fn).__qualname__
    return f"{getattr(loss_fn, '__module__', '') or type(loss_fn).__module__}.{name}"


def _parts(tree, name: str) -> list[tuple[str, object, torch.Tensor]]:
    """``(expression, key, tensor)`` for each tensor one level into ``tree`` as user code reaches it: ``out['k']``,
    ``out[i]``, ``out.field`` (a dataclass's, an output object's), or ``out`` for a tensor."""
    if isinstance(tree, torch.Tensor):
        return [(name, None, tree)]
    if isinstance(tree, Mapping):
        items = [(f"{name}[{k!r}]", k, v) for k, v in tree.items()]
    elif isinstance(tree, (tuple, list)):
        items = [(f"{name}[{i}]", i, v) for i, v in enumerate(tree)]
    else:
        fields = vars(tree) if hasattr(tree, "__dict__") else {}
        items = [(f"{name}.{k}", k, v) for k, v in fields.items() if not k.startswith("_")]
    return [(e, k, v) for e, k, v in items if isinstance(v, torch.Tensor)]


def _accuracy_lambda(outputs, targets) -> tuple[str, str]:
    """``(lambda, words after it)``: the accuracy to pass for outputs and targets of several tensors
    (`accuracy_problem`): the pair of a tensor of
    class indices and the logits that fit it (more classes than its largest index, of its length), where exactly
    one pair fits or one shares its (str) key; else a template with LOGITS and LABELS to fill in, which cannot run as a
    wrong accuracy (re-trial s57: out[0], a regression head, scored 0.35 against the labels)."""
    labels = [(e, k, t) for e, k, t in _parts(targets, "y")
              if not t.is_floating_point() and t.dtype != torch.bool and t.ndim == 1 and t.numel()]
    logits = [(e, k, t) for e, k, t in _parts(outputs, "out") if t.is_floating_point() and t.ndim == 2
              and t.shape[1] >= 2]
    pairs = [(le, oe, isinstance(lk, str) and lk == ok) for le, lk, lt in labels for oe, ok, ot in logits  # a key
             # shared by name only: the i-th output is not the i-th target's head (re-trial s57)
             if ot.shape[0] == lt.shape[0] and int(lt.min()) >= 0 and int(lt.max()) < ot.shape[1]]
    named = [p for p in pairs if p[2]]
    if len(pairs) == 1 or len(named) == 1:
        target, out, _ = (named or pairs)[0]
        return f"lambda out, y: ({out}.argmax(1) == {target}).float().mean()", ""
    return ("lambda out, y: (out[LOGITS].argmax(1) == y[LABELS]).float().mean()",
            " with LOGITS and LABELS where your model puts the logits and your data the class indices")


def accuracy_problem(outputs, targets: torch.Tensor | None, *, named: bool = False) -> str | None:
    """Why the argmax accuracy (`accuracy`) means nothing for ``outputs`` and ``targets`` as their shapes and
    types show; None where it applies. ``named``: ``metrics="accuracy"`` asked for it, which also takes
    one-hot or class-probability targets of the logits' shape (their argmax); ``metrics="auto"`` skips those.
    Asked for by name, one logit a sample gave 0 or 1 at every point, and (N, L, C) logits raised inside it
    or took the argmax over the positions (trial s40)."""
    logits = find_logits(outputs)
    if targets is None:
        return NO_TARGETS
    if not isinstance(targets, torch.Tensor):  # (labels, sample weights), a multi-task dict: crashed here (trial s46)
        lam, tail = _accuracy_lambda(outputs, targets)
        return (f"the targets are {describe(targets, few=True)}, not one tensor of class indices, so which of them the logits "
                f"predict is not known; pass metrics= naming it, e.g. {{'accuracy': {lam}}}{tail}")
    zero_one = bool(((targets == 0) | (targets == 1)).all())
    if logits is None:
        if targets.is_floating_point() and not zero_one:  # a regression's, whatever its outputs (trial s41)
            return NOT_CLASS_INDICES
        if ambiguous_logits(outputs):  # a tuple or dict of outputs (trial s38)
            lam, tail = _accuracy_lambda(outputs, targets)  # the one that fits, or a template (re-trial s57)
            return (f"several tensors could be the logits in the outputs ({describe(outputs, few=True)}); pass metrics= to name "
                    f"them, e.g. metrics={{'accuracy': {lam}}}{tail}")
        return f"no logits found in the outputs ({describe(outputs, few=True)}); pass metrics= to name them"
    shape, got = _n_first(tuple(logits.shape)), _n_first(tuple(targets.shape))
    several = logits.ndim >= 2 and logits.shape[1] >= 2
    if several and _class_probabilities(logits, targets.float()) and (targets.is_floating_point() or zero_one):
        return None if named else ("the targets are class probabilities (soft labels); metrics='accuracy' counts the "
                                   "logits' argmax equal to the targets' argmax" if targets.is_floating_point() else
                                   f"targets {got} are one-hot; metrics='accuracy' takes their argmax")
    signs = bool(((targets == -1) | (targets == 1)).all()) and not zero_one  # ±1 labels of a hinge loss
    if targets.is_floating_point() and not (zero_one or (signs and not several)):
        return NOT_CLASS_INDICES
    if not several and len(torch.unique(targets)) > 2:  # counts, ranks (trial s41: "a binary model's one logit")
        return Quiet(f"one output a sample ({shape}) and targets of more than two values: a regression's (counts, "
                     "ranks?), not a classifier's")
    if not several:  # ±1 labels: the sign against them; 0/1 labels: the sign as 0/1 (re-trial s41: 0.495 for 0.998)
        rule = ("(torch.where(out.reshape(-1) > 0, 1, -1) == y.reshape(-1)).float().mean()" if signs else
                "((out.reshape(-1) > 0).long() == y.reshape(-1).long()).float().mean()")
        return (f"logits of shape {shape} have fewer than 2 classes (a binary model's one logit a sample, whose "
                f"prediction is its sign: pass e.g. {{'accuracy': lambda out, y: {rule}}}"
                + ("" if signs else ", > 0.5 for probabilities") + ")")
    if targets.shape[1:] == logits.shape[1:] and logits.ndim == targets.ndim:
        if not zero_one:  # counts of a Poisson regression (re-trial s41)
            return Quiet(f"targets {got} of the logits' shape are not class indices")
        said = (f"targets {got} of the logits' shape are not one class a sample (multi-hot labels? their accuracy is "
                "per label: e.g. {'accuracy': lambda out, y: ((out > 0).float() == y).float().mean()})")
        return Quiet(said) if targets.is_floating_point() else said  # binarized pixels of an autoencoder (s41)
    if targets.is_floating_point():
        return NOT_CLASS_INDICES
    last = ("e.g. {'accuracy': lambda out, y: (out.argmax(-1) == y)[y != -100].float().mean()} for classes on the "
            "last dim (the logits' tensor: out.logits of a model returning several; -100, the padding a cross-entropy "
            "leaves out, not counted)")  # the hint counted -100 positions as wrong: 0.20 for 0.34 (re-trial s42)
    if (logits.ndim != targets.ndim + 1 or logits.shape[0] != targets.shape[0]
            or logits.shape[2:] != targets.shape[1:]):
        classes_last = logits.ndim > 2 and logits.shape[:-1] == targets.shape
        column = logits.ndim == 2 and targets.ndim == 2 and targets.shape[1] == 1  # scikit-learn's column (s40)
        return f"logits {shape} and targets {got} are not (N, C, ...) and (N, ...)" + (
            f"; pass metrics= {last}" if classes_last else
            "; pass metrics= e.g. {'accuracy': lambda out, y: (out.argmax(1) == y.squeeze(1)).float().mean()} for a "
            "column of class indices" if column else "")
    if logits.ndim > 2 and logits.ndim - 1 in _class_dims(tuple(logits.shape), tuple(targets.shape)):
        return (f"logits {shape} fit targets {got} with the classes on dim 1 and on the last dim alike (a sequence "
                "as long as the vocabulary?), so which axis holds the classes is not known; pass metrics= naming "
                f"it, {last}")
    return None


def loss_disagrees(probe: LossProbe, n_columns: int) -> str | None:
    """Why the loss's gradient (``probe``, `probe_targets`) shows that the argmax of the logits against the targets is
    not its prediction; None where nothing does. Trials (s40) found each of these scored silently: a binary loss on
    one column of two, targets the loss maps into the classes (``(t + 1) // 2`` of ±1 labels, ``t - 1`` of labels
    counted from 1, ordinal thresholds) or a marker of unlabelled samples another term reads, negated outputs
    (distances), classes permuted, swapped or merged in the loss."""
    if probe.groups:  # not a classifier's loss: not warned (Quiet)
        return Quiet("the loss is unchanged when the classes are renamed (the targets relabelled, the outputs kept): it "
                     "reads the targets as groups, as a contrastive or metric-learning loss does, not as columns of the "
                     "outputs, so their argmax means nothing; pass metrics= with a rule of your own (e.g. a "
                     "nearest-centroid accuracy)")
    if probe.unread:
        return unread_classes_note(probe.unread, n_columns)
    if probe.outside:
        shown = ", ".join(map(str, probe.outside[:6])) + (", ..." if len(probe.outside) > 6 else "")
        if probe.outside == (-1,) and probe.held == (1,):
            why, rule = "±1 labels the loss maps into the classes, (y + 1) // 2?", "(y + 1) // 2"
        elif min(probe.outside) >= n_columns and 0 not in probe.held:
            why, rule = "labels counted from 1, which the loss maps as y - 1?", "y - 1"
        else:
            why = ("a marker of unlabelled samples or void pixels that another term of the loss reads (an entropy "
                   "or Dice term over every sample)? or labels the loss maps into the classes?")
            rule = None
        example = (f"(out.argmax(1) == {rule}).float().mean()" if rule else
                   f"(out.argmax(1) == y)[(y >= 0) & (y < {n_columns})].float().mean() for the labelled ones")
        return (f"the targets hold {shown}, outside the logits' classes 0 to {n_columns - 1}, at positions the loss "
                f"counts ({why}), so the argmax can never equal them; pass metrics= with the loss's own rule, e.g. "
                f"{{'accuracy': lambda out, y: {example}}}")
    contrary, counted = probe.contrary
    if counted and contrary * 2 > counted:
        return (f"at {contrary} of {counted} target positions probed, raising the target's logit raises the loss "
                "(negated outputs, distances? classes permuted or renumbered in the loss? not class scores?), so the "
                "argmax of the outputs is not its prediction; pass metrics= with the loss's own rule of prediction")
    if probe.swapped:
        shown = ", ".join(map(str, probe.swapped[:8])) + (", ..." if len(probe.swapped) > 8 else "")
        return (f"for class(es) {shown}, raising the target's logit raises the loss at every position and point "
                "probed: the loss predicts them by other columns (classes swapped or merged in it, remap[y]?) or the "
                "outputs are no class scores (an embedding, with proxies or class weights inside the loss?), so "
                "the argmax of the outputs is not its prediction; pass metrics= with the loss's rule, e.g. "
                "{'accuracy': lambda out, y: (out.argmax(1) == remap[y]).float().mean()}")
    if probe.ranked is not None and probe.ranked[0] > probe.ranked[1] + 1e-6 * max(abs(probe.ranked[1]), 1e-12):
        return (f"with each target's logit swapped to the largest of its row the loss is {probe.ranked[0]:.4g}, and "
                f"{probe.ranked[1]:.4g} with it swapped to the smallest: the loss prefers the target's output small "
                "(distances, as in a prototype head's cross_entropy(-out.pow(2), y)? negated outputs?), so the argmax "
                "is not its prediction; pass metrics= with the loss's own rule, e.g. "
                "{'accuracy': lambda out, y: (out.argmin(1) == y).float().mean()}")
    return None


def unread_classes_note(unread: Sequence[int], n_columns: int) -> str:
    """Why the argmax over all ``n_columns`` logits is not the prediction of a loss that gives the logits of the
    classes ``unread`` no gradient (``probe_targets``), and the metric to pass instead."""
    classes = f"class {unread[0]}" if len(unread) == 1 else "classes " + ", ".join(map(str, unread))
    rule = "the loss's own rule of prediction"
    if n_columns == 2 and len(unread) == 1:
        c = 1 - unread[0]
        rule = (f"the loss's rule, e.g. {{'accuracy': lambda out, y: ((out[:, {c}] > 0).long() == y).float().mean()}} "
                "for logits (> 0.5 for probabilities)")
    return (f"the loss gives the logits of {classes} no gradient at any sample (a binary loss on one column, "
            f"out[:, k]?), so the argmax over the {n_columns} columns is not its prediction; pass metrics= with {rule}")


def auto_metrics(outputs, targets: torch.Tensor | None, ignore_index: int = -100,
                 why: str = "the loss's ignore_index",
                 probe: LossProbe | None = None) -> tuple[dict[str, Callable], str, bool]:
    """``metrics="auto"``: accuracy when the outputs hold logits (N, C>1, ...) (``find_logits``) and the
    targets are integer class indices of matching shape (`accuracy_problem`); else none. Targets equal to
    ``ignore_index`` (the loss's, e.g. a padding class; ``why`` says how it is known) are not counted. Where the
    loss's gradient shows the argmax is not its prediction (``probe``, `loss_disagrees`), none. Returns (metrics, a
    note saying why, whether a classifier's accuracy was skipped: a skip to be said, where a regression's or
    inputs-only data's is expected)."""
    problem = accuracy_problem(outputs, targets)
    if problem is None and probe is not None:
        problem = loss_disagrees(probe, find_logits(outputs).shape[1])
    if problem is not None:
        return {}, f"accuracy skipped: {problem}", not isinstance(problem, Quiet)
    if ignore_index != -100:
        return ({"accuracy": functools.partial(accuracy, ignore_index=ignore_index)},
                f"accuracy: argmax of the logits against the targets, those equal to {ignore_index} ({why}) not "
                "counted", False)
    return {"accuracy": accuracy}, "accuracy: argmax of the logits against the targets", False


PROBE_ELEMENTS = 1 << 22  # random logits drawn by probe_targets at most (16 MB in float32)


class LossProbe(NamedTuple):
    """What ``probe_targets`` found of the targets a loss counts (see there)."""

    ignored: int | None  # the one target value the loss leaves out, or None
    unexplained: int  # positions left out that no single value explains
    probed: int  # samples probed
    unread: tuple[int, ...]  # classes in the targets whose logits get no gradient at any position
    outside: tuple[int, ...] = ()  # target values outside [0, C) the loss counts (it maps them into the classes)
    contrary: tuple[int, int] = (0, 0)  # (positions where raising the target's logit raises the loss, of)
    swapped: tuple[int, ...] = ()  # classes whose every position does so at every point (swapped in the loss)
    held: tuple[int, ...] = ()  # the classes in [0, C) the probed targets hold
    spread: bool = False  # whether the probed samples were spread over the set (else the first batch's)
    ranked: tuple[float, float] | None = None  # the loss with each target's logit made its row's largest, smallest
    groups: bool = False  # the loss is unchanged when the classes are renamed: it reads the targets as groups


NOTHING_KNOWN = LossProbe(None, 0, 0, ())


def probe_targets(loss_fn: Callable, outputs, targets: torch.Tensor | None,
                  every_target: torch.Tensor | None = None) -> LossProbe:
    """The target values and logits ``loss_fn`` leaves out, and whether the argmax of the logits is its prediction,
    found by its gradient (a ``LossProbe``).

    The loss is differentiated with respect to the logits at three points, each a piece of evidence where the loss
    and its gradient are finite there: two probes put in place of the model's logits (of their shape; probes, not
    the model's values), every position predicted wrong (each target's class at -1, the others at +1, plus
    N(0, 0.01²)) and every position predicted right (+1 and -1); and the model's own logits on the batch
    ``targets``. A loss that saturates at one point (clamped, or a log outside its domain at the other) is read at
    the others: the probe at -1 alone skipped valid accuracies (``F.nll_loss(o.log(), y)`` on probabilities, a
    clamped ArcFace, logit clipping) and warned of masks that were not (``ce.clamp(max=2)``) (re-trial s40). The
    probes take ``probed`` samples of ``every_target`` (the whole set's targets, evenly spread, as many as
    ``PROBE_ELEMENTS`` logits hold), since padding may sit at the end of a length-sorted set; where the loss cannot
    take those with the rest of ``outputs`` (the model's on the few samples of ``targets``), they take ``targets``.

    A position counts in the loss where its logits' gradient is above ``STILL`` of the median position's at some
    point (a penalty on every logit, ``1e-6 * o.pow(2).mean()``, gave the padding a gradient: re-trial s40).
    ``ignored``: the one target value (other than -100, which ``accuracy`` skips already) whose positions, all of
    them and only they, do not count (a padding token 0 given by ``lambda o, y: F.cross_entropy(o, y,
    ignore_index=0)``, whose ``ignore_index`` cannot be read, or a class weighted 0, trial s39); a value the
    model's own logits give a gradient counts. ``unexplained``: positions (targets other than -100) that do not
    count and no single value explains (a loss masked by something else, or several values); 0 if none.
    ``unread``: classes other than ``ignored`` that the probed targets hold but whose logits (column ``c`` of dim
    1) get a gradient under 1e-3/C of the largest column's at every point, as a binary loss on one column,
    ``F.binary_cross_entropy_with_logits(o[:, 1], y)``, leaves column 0 (re-trial s39; a class the targets never
    hold is not in it, since ``F.nll_loss`` reads the target's column only). ``outside``: target values outside
    [0, C) (other than -100 and ``ignored``) at positions the loss counts (labels it maps into the classes, or a
    marker of unlabelled samples another term reads). ``contrary``: (positions where raising the target's logit
    raises the loss more than raising every logit alike, of those counted whose target's logit gets a gradient), at
    the point where fewest do: a loss whose prediction is the argmax lowers itself by raising the target's logit,
    and negated outputs or classes permuted in the loss do not (trial s40); a term lowering every logit (a z-loss)
    is not read as that (re-trial s40). ``swapped``: classes all of whose positions do so at every point
    (classes swapped or merged in the loss: re-trial s40). ``NOTHING_KNOWN`` when the logits are not found, the
    targets are not class indices, or no point gives a finite loss and gradient."""
    logits = find_logits(outputs)
    if (logits is None or not isinstance(targets, torch.Tensor) or targets.is_floating_point()
            or not logits.is_floating_point() or logits.ndim != targets.ndim + 1 or logits.shape[0] != targets.shape[0]
            or tuple(logits.shape[2:]) != tuple(targets.shape[1:])):
        return NOTHING_KNOWN
    if not isinstance(outputs, (torch.Tensor, tuple, list)) and not (
            isinstance(outputs, Mapping) and outputs.get("logits") is logits):
        return NOTHING_KNOWN  # e.g. a ModelOutput: the loss may read other fields of it
    tries = [targets]
    if isinstance(every_target, torch.Tensor) and tuple(every_target.shape[1:]) == tuple(targets.shape[1:]):
        m = max(1, min(len(every_target), PROBE_ELEMENTS // max(1, logits[:1].numel())))
        picked = torch.linspace(0, len(every_target) - 1, m).round().long().unique()
        tries.insert(0, every_target[picked.to(every_target.device)].to(logits.device))
    for t in tries:  # a probe at which no position gets a gradient (a clamp saturated everywhere) tells nothing
        probes = [g for g in (_probe_gradient(loss_fn, outputs, logits, t, right) for right in (False, True))
                  if g is not None and not bool(_still(g, t != -100).all())]
        if probes:
            break
    else:
        t, probes = targets, []
    model = _probe_gradient(loss_fn, outputs, logits, targets, None)
    if not probes and model is None:
        return NOTHING_KNOWN
    probed = bool(probes)  # the model's own logits alone, on a few samples, decide nothing beyond what is still
    if not probes:
        t, probes, model = targets, [model], None
    n_classes = logits.shape[1]
    kept = t != -100
    still = torch.stack([_still(g, kept) for g in probes]).all(0)  # (N, ...): positions counted at no probe
    if model is not None:  # a value at every position of which the model's own logits get a gradient counts (the
        moved = ~_still(model, targets != -100)  # probes saturated there); one masked at some is read positionally
        for v in torch.unique(targets[targets != -100]).tolist():
            if bool(moved[targets == v].all()) and bool(still[t == v].all()):
                still &= t != v
    points = [(g, t) for g in probes] + ([(model, targets)] if model is not None else [])
    pulls = [_target_pull(g, tt) for g, tt in points]  # the probes' first, as in points
    quiet = _quiet_values(points) if probed else {v for v in torch.unique(t[kept]).tolist() if bool(still[t == v].all())}
    for v in [v for v in quiet if 0 <= v < n_classes] if probed else []:  # a class weighted low (1e-3 of 1500,
        # re-trial s40) still pulls its logit up at most of its positions at every probe, as a penalty or z-loss on
        # padding does not at the probe predicting it right
        if all(bool((t == v).any()) and float((pull[t == v] < 0).double().mean()) > 0.5 for pull in pulls[:len(probes)]):
            quiet.discard(v)
    ignored, unexplained = (int(next(iter(quiet))), 0) if len(quiet) == 1 else (None, 0)
    quiet_at = torch.isin(t, torch.tensor(sorted(quiet), dtype=t.dtype, device=t.device))
    loose = kept & ((still & ~quiet_at) if len(quiet) == 1 else (still | quiet_at))  # several quiet values: said
    if bool(loose.any()):
        unexplained = int(loose.sum())  # a mask no single value gives (or several values left out)
    inside = (t >= 0) & (t < n_classes)
    groups = bool(_relabel_invariant(loss_fn, outputs, logits, targets, t))  # a triplet loss is 0 at both probes
    if len(points) < 2:  # one point, the model's few samples, is too little to say the argmax is not the prediction
        return LossProbe(ignored, unexplained, len(t), (), (), (0, 0), (), (), t is not targets, None, groups)

    def columns(g):  # (C,): whether each column's largest gradient is more than 1e-3/C of the largest column's
        size = g.abs().transpose(0, 1).reshape(n_classes, -1).amax(1)
        return size > 1e-3 / n_classes * size.max()  # a 1e-4 penalty read column 0 of a one-column loss (s40)

    read = torch.stack([columns(g) for g, _ in points]).any(0)
    held = torch.unique(t[inside]).tolist()
    unread = tuple(int(c) for c in held if c != ignored and not bool(read[c])) if bool(read.any()) else ()
    counted = ~still & kept & (t != (-100 if ignored is None else ignored))
    outside = tuple(int(v) for v in torch.unique(t[counted & ~inside]).tolist() if v not in quiet)
    contrary = None
    seen, against = torch.zeros(n_classes, dtype=torch.long), torch.zeros(n_classes, dtype=torch.bool)
    for (g, tt), at_target in zip(points, pulls):
        ins = (tt >= 0) & (tt < n_classes) & (tt != (-100 if ignored is None else ignored))
        told = ins & (at_target != 0)
        up = told & (at_target > 0)
        here = (int(up.sum()), int(told.sum()))
        if here[1] and (contrary is None or here[0] * contrary[1] < contrary[0] * here[1]):
            contrary = here  # the point where the smallest share goes up: label smoothing 0.9 does at the right one
        seen += torch.bincount(tt[told].cpu(), minlength=n_classes) > 0  # points where class c was told
        against |= torch.bincount(tt[told & ~up].cpu(), minlength=n_classes) > 0  # ... and one went down
    swapped = tuple(c for c in held if c != ignored and bool(seen[c]) and not bool(against[c]))
    return LossProbe(ignored, unexplained, len(t), unread, outside, contrary or (0, 0), swapped,
                     tuple(int(c) for c in held), t is not targets, _ranked_losses(loss_fn, outputs, logits, targets),
                     groups)


STILL = 1e-4  # a position's logits whose gradient is under this share of the median position's do not count
QUIET = 1e-2  # a target value whose positions' mean gradient is under this share of the loudest value's is left out


def _target_pull(grad: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, ...): d loss / d (the target's logit) less the mean over the classes at each position, where the target
    lies in [0, C) (elsewhere class 0's, for the caller to mask). Negative: raising the target's logit more than
    every logit alike lowers the loss, as a class's loss does however small its weight; a term pushing every logit
    down (a z-loss, a penalty on padding) says nothing of which is up."""
    g = grad - grad.mean(1, keepdim=True)
    inside = (targets >= 0) & (targets < grad.shape[1])
    return g.gather(1, torch.where(inside, targets, 0).unsqueeze(1)).squeeze(1)


def _quiet_values(points: list) -> set:
    """The target values the loss barely reads: at every point (gradient, targets) where a value occurs, its
    positions' mean gradient is at most ``QUIET`` of the loudest value's. Padding under a penalty on every logit,
    or void pixels under a z-loss, get a gradient, but one far below a counted position's (re-trial s40: counted,
    0.567 for 0.919). A class weighted low is kept by its caller (`_target_pull`)."""
    present_anywhere, loud_somewhere = set(), set()
    for g, tt in points:
        k = tt != -100
        values, inverse = torch.unique(tt[k], return_inverse=True)
        if not len(values):
            continue
        size = g.abs().sum(1)[k].double()
        mean = (torch.zeros(len(values), dtype=torch.float64, device=size.device).index_add_(0, inverse, size)
                / torch.bincount(inverse, minlength=len(values)).double())
        loud = float(mean.max())
        here = {int(v) for v, m in zip(values.tolist(), mean.tolist()) if m <= QUIET * loud}
        present = {int(v) for v in values.tolist()}
        present_anywhere |= present
        loud_somewhere |= present - here
    return present_anywhere - loud_somewhere


def _still(grad: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """(N, ...): positions whose logits get a gradient under ``STILL`` of the median kept position's."""
    size = grad.abs().sum(1)
    nonzero = size[kept & (size > 0)]
    if not nonzero.numel():
        return torch.ones_like(size, dtype=torch.bool)
    return size <= STILL * nonzero.median()


def _with_logits(outputs, logits: torch.Tensor, other: torch.Tensor):
    """``outputs`` with ``other`` in place of ``logits`` (a tensor, the ``"logits"`` entry, or a tuple's item)."""
    if isinstance(outputs, torch.Tensor):
        return other
    if isinstance(outputs, Mapping):
        return {**outputs, "logits": other}
    items = [other if o is logits else o for o in outputs]
    return type(outputs)(*items) if hasattr(outputs, "_fields") else type(outputs)(items)  # a namedtuple's too


def _ranked_losses(loss_fn: Callable, outputs, logits: torch.Tensor, targets: torch.Tensor
                   ) -> tuple[float, float] | None:
    """The loss at the model's own ``logits`` with each counted position's target logit swapped with the largest
    of its row, and with the smallest: a loss whose prediction is the argmax is lower at the first. Swapping keeps
    the row's values (distances stay positive), so a prototype head's ``F.cross_entropy(-o.pow(2), y)``, whose
    prediction is the argmin, shows the other order where the gradient at probes did not (0.000 for its 0.989,
    re-trial s40). None where either loss is not finite or the loss raised."""
    inside = ((targets >= 0) & (targets < logits.shape[1])).unsqueeze(1)
    at = torch.where(inside, targets.unsqueeze(1), 0)
    own = logits.detach()

    def swapped(extreme: torch.Tensor) -> torch.Tensor:
        out = own.clone()
        out.scatter_(1, extreme, own.gather(1, at))
        out.scatter_(1, at, own.gather(1, extreme))
        return torch.where(inside, out, own)

    high, low = (_loss_value(loss_fn, outputs, logits, swapped(extreme), targets)
                 for extreme in (own.argmax(1, keepdim=True), own.argmin(1, keepdim=True)))
    return None if high is None or low is None else (high, low)


def _loss_value(loss_fn: Callable, outputs, logits: torch.Tensor, other: torch.Tensor,
                targets: torch.Tensor) -> float | None:
    """``loss_fn`` on ``outputs`` with ``other`` in place of ``logits``, as a float; None where the loss raised
    (a loss that takes no other logits), or is no finite scalar there."""
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = loss_fn(_with_logits(outputs, logits, other), targets)
    except Exception:  # noqa: BLE001 - nothing is known
        return None
    if not isinstance(value, torch.Tensor) or value.numel() != 1 or not bool(torch.isfinite(value)):
        return None
    return float(value)


def _probe_logits(logits: torch.Tensor, targets: torch.Tensor, right: bool) -> torch.Tensor:
    """Logits of ``logits``' shape for ``targets``: each position's target class at -1 and the others at +1
    (``right=False``), or at +0.25 and -0.25 (``True``: right by a margin of 0.5 only, label smoothing's optimum),
    plus N(0, 0.01²); positions whose target is no class (-100, 255 void pixels) left as drawn."""
    probe = 0.01 * torch.randn((len(targets), *logits.shape[1:]), generator=torch.Generator().manual_seed(0))
    probe = (probe + (-0.25 if right else 1.0)).to(logits.device, logits.dtype)
    classes = (targets >= 0) & (targets < logits.shape[1])
    index = torch.where(classes, targets, 0).unsqueeze(1)
    drawn = probe.gather(1, index)
    probe.scatter_(1, index, torch.where(classes.unsqueeze(1), torch.full_like(drawn, 0.25 if right else -1.0), drawn))
    return probe


def _relabel_invariant(loss_fn: Callable, outputs, logits: torch.Tensor, targets: torch.Tensor,
                       probed: torch.Tensor) -> bool | None:
    """Whether the loss is unchanged (to 1e-6) when the targets' classes are renamed (each held class to the next
    held one), the logits kept, at every point where it is not 0: the probes predicting every position of
    ``probed`` wrong and right, and the model's own ``logits`` on ``targets``. A loss reading the targets as groups
    (supervised-contrastive, triplet) is; one reading them as columns of the outputs is not. Its argmax accuracy
    was computed on embeddings, 0.008 at the centre, with no word (trial s41). Not at the model's own logits alone:
    a head initialized to zero gives equal logits, where a cross-entropy does not change either. None where no
    point tells (fewer than two classes held, the loss 0, raising or not finite)."""
    said = []
    for t, at in ((probed, _probe_logits(logits, probed, right=False)), (probed, _probe_logits(logits, probed, True)),
                  (targets, logits.detach())):
        inside = (t >= 0) & (t < logits.shape[1])
        held = torch.unique(t[inside])
        if len(held) < 2 or bool((~inside & (t != -100)).any()):  # targets the loss maps (y // 5 of 10 classes
            continue  # onto 2 logits) would not be renamed: unchanged, read as groups (re-trial s41)
        renamed = t.clone()
        renamed[inside] = held.roll(-1)[torch.searchsorted(held, t[inside])]
        values = [_loss_value(loss_fn, outputs, logits, at, labels) for labels in (t, renamed)]
        if None not in values and max(map(abs, values)) > 1e-12:  # a loss of 0 at both tells nothing
            said.append(abs(values[0] - values[1]) <= 1e-6 * max(map(abs, values)))
    return all(said) if said else None


def class_weights(loss_fn: Callable, outputs, targets: torch.Tensor | None,
                  every_target: torch.Tensor | None = None) -> torch.Tensor | None:
    """The relative weight ``loss_fn`` gives each class, read from its gradient at all-zero logits: there every
    class has probability 1/C, so a cross-entropy weighted by ``w`` pulls position i's target logit by
    ``-w[y_i] (1 - 1/C) / Σ w[y]``, its class's weight up to one factor; with label smoothing ε, by that times
    1 - ε against another position's pull on the same logits (``_class_weights_on``: C ≥ 3, the smoothing term
    cancels, so ``weight=`` with ``label_smoothing=`` is read too). A float64 (C,) tensor, the largest 1,
    where every position of a class is pulled alike (to 1e-6 relative) and the classes not all alike: a function's
    class weights, ``F.cross_entropy(o, y, weight=w)``, which cannot be read (a batch's value is then the mean
    weighted by ``Σ w[y]`` of its targets, trial s42); None otherwise (logits not found as plain (N, C, ...) tensor
    outputs, targets not class indices, the loss raising or not finite, or no such weights). Read on targets of
    every class, two samples each, of one position (a class of 4 images in 600 that the set's spread samples
    missed got weight 0: its batches weighed too little, 4e-4 off with no word, re-trial s42); where the loss
    refuses those, on the targets given (``every_target``: the whole set's, evenly spread), and None where a
    class the set holds is not among them."""
    logits = find_logits(outputs)
    if (logits is None or logits is not outputs or not isinstance(targets, torch.Tensor) or targets.is_floating_point()
            or targets.is_complex() or logits.ndim != targets.ndim + 1 or len(logits) != len(targets)):
        return None
    if tuple(logits.shape[2:]) == tuple(targets.shape[1:]):  # classes along dim 1, as probe_targets reads
        dim = 1
    elif targets.ndim >= 2 and tuple(logits.shape[:-1]) == tuple(targets.shape):  # on the last: (N, L, C) token
        dim = -1  # logits a loss flattens itself (weight= on them was weighted by samples, 1.9e-2 off, trial s47)
    else:
        return None
    n_classes = logits.shape[dim]
    every = every_target if isinstance(every_target, torch.Tensor) else targets
    each = torch.arange(n_classes, device=logits.device).repeat(2).view(-1, *[1] * (targets.ndim - 1))
    ones = [1] * (targets.ndim - 1)
    weights = _class_weights_on(loss_fn, logits.new_zeros((len(each), *ones, n_classes) if dim == -1 else
                                                          (len(each), n_classes, *ones)), each.to(targets.dtype), dim)
    if weights is None and tuple(every.shape[1:]) == tuple(targets.shape[1:]):  # the loss needs the data's shape
        m = max(1, min(len(every), PROBE_ELEMENTS // max(1, logits[:1].numel())))
        picked = torch.linspace(0, len(every) - 1, m).round().long().unique()
        spread = every[picked.to(every.device)].to(logits.device)
        weights = _class_weights_on(loss_fn, logits.new_zeros((len(spread), *logits.shape[1:])), spread, dim)
        held = torch.unique(every[(every >= 0) & (every < n_classes)])
        if weights is not None and not bool(torch.isin(held.to(spread.device), torch.unique(spread)).all()):
            return None  # a class the set holds whose weight was not read
    return weights


def _class_weights_on(loss_fn: Callable, zero: torch.Tensor, targets: torch.Tensor, dim: int = 1
                      ) -> torch.Tensor | None:
    """``class_weights`` read at the all-zero logits ``zero`` (a fresh tensor, differentiated; classes along
    ``dim``) for ``targets``."""
    n_classes = zero.shape[dim]
    kept = (targets >= 0) & (targets < n_classes)
    if not bool(kept.any()):
        return None
    zero.requires_grad_(True)
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (grad,) = torch.autograd.grad(loss_fn(zero, targets), zero, allow_unused=True)
    except Exception:  # noqa: BLE001 - nothing known
        return None
    if grad is None or not bool(torch.isfinite(grad).all()):
        return None
    g = grad.double().movedim(dim, -1).reshape(-1, n_classes)[kept.reshape(-1)]  # (kept positions, classes)
    y = targets[kept].reshape(-1).long()
    if n_classes >= 3 and bool((y != y[0]).any()):
        # label smoothing adds (ε/C)(W/C - w_k) / Σw[y] to every logit k of every position, which the target's
        # pull alone mixes into w[y]; against a partner position q of another target, at a third class k, it
        # cancels: (g[p,y] - g[q,y]) - (g[p,k] - g[q,k]) = -(1 - ε) w[y] / Σw[y] (trial s43: weight= with
        # label_smoothing= in a lambda was weighted by samples, 91 % off on label-sorted batches)
        first = int((y != y[0]).nonzero()[0])
        q = torch.where(y == y[0], first, 0)  # each position's partner: the first of another target
        yq = y[q]
        k = torch.zeros_like(y)  # the smallest class that is neither target
        for c in (1, 2):
            k = torch.where((k == y) | (k == yq), c, k)
        rows = torch.arange(len(y), device=y.device)
        pull = -((g[rows, y] - g[q, y]) - (g[rows, k] - g[q, k]))
    else:
        pull = -g.gather(1, y.clamp(0, n_classes - 1).unsqueeze(1)).squeeze(1)
    scale = float(pull.abs().max()) if pull.numel() else 0.0
    pull = torch.where(pull.abs() < 1e-6 * scale, 0.0, pull)  # a class weighted 0: ~1e-9 either side by rounding
    weights = torch.zeros(n_classes, dtype=torch.float64, device=grad.device)
    for c in torch.unique(y).tolist():
        at = pull[y == c]
        if float(at.max() - at.min()) > 1e-6 * max(float(at.abs().max()), 1e-300) or float(at.min()) < 0:
            return None  # a class pulled unevenly: no weight per class
        weights[c] = at.mean()
    held = weights[torch.unique(y)]
    if float(held.max()) <= 0 or float(held.max() - held.min()) <= 1e-6 * float(held.max()):
        return None  # all alike: a plain mean
    return weights / held.max()


def _probe_gradient(loss_fn: Callable, outputs, logits: torch.Tensor, targets: torch.Tensor,
                    right: bool | None) -> torch.Tensor | None:
    """The gradient of ``loss_fn`` with respect to the logits (``probe_targets``): at a probe for ``targets``,
    every position predicted wrong (``right=False``) or right (``True``), or at the model's own logits (None);
    None where the loss raised, or it or its gradient is not finite there (the log of a probe's -1)."""
    probe = logits.detach().clone() if right is None else _probe_logits(logits, targets, right)
    probe.requires_grad_(True)
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = loss_fn(_with_logits(outputs, logits, probe), targets)
            (grad,) = torch.autograd.grad(value, probe, allow_unused=True)
    except Exception:  # noqa: BLE001 - a loss that takes no probe logits: nothing is known, it runs as given
        return None
    finite = isinstance(value, torch.Tensor) and bool(torch.isfinite(value.detach()).all())
    return grad if finite and grad is not None and bool(torch.isfinite(grad).all()) else None


def resolve_metrics(metrics, outputs, targets) -> dict[str, Callable]:
    """``"auto"``: see ``auto_metrics``; None: none; names of built-ins or name -> callable. ``"accuracy"`` named
    where it means nothing for these outputs and targets (`accuracy_problem`) raises ``LandscapeError``: it gave
    0 or 1 at every point of a binary model's surface with no word (trial s40). Where the loss's gradient
    suggests another rule of prediction (`loss_disagrees`), evidence rather than proof, the caller warns."""
    if metrics == "auto":
        return auto_metrics(outputs, targets)[0]
    if metrics is None:
        return {}
    if isinstance(metrics, str):
        metrics = [metrics]
    out: dict[str, Callable] = {}
    items = metrics.items() if isinstance(metrics, Mapping) else [(m, m) for m in metrics]
    for name, fn in items:
        fn = unwrap_compiled(fn)
        if isinstance(fn, str):
            if fn not in BUILTIN_METRICS:
                raise LandscapeError(
                    f"unknown metric {fn!r}; expected one of {sorted(BUILTIN_METRICS)} or a mapping "
                    "name -> callable(outputs, targets) returning a scalar mean"
                )
            if fn == "accuracy":
                problem = accuracy_problem(outputs, targets, named=True)
                if problem is not None:
                    raise LandscapeError(
                        f"metric 'accuracy' (the argmax of the logits against class-index targets) means nothing "
                        f"here: {problem}")
            fn = BUILTIN_METRICS[fn]
        if not callable(fn):
            raise LandscapeError(f"metric {name!r} is {fn!r}; expected a callable(outputs, targets) -> scalar")
        if str(name) == "loss":
            raise LandscapeError(
                "a metric is named 'loss', the name of the surface's loss itself (surf.loss, the 'loss' column of "
                "a store): its values would take the loss's place; name it otherwise (e.g. metrics={'loss2': ...}), "
                "or pass the function as loss_fn= to make it the loss")
        out[str(name)] = fn
    return out


def split_values(values: np.ndarray, metric_names: Sequence[str]) -> dict[str, np.ndarray]:
    """``{"loss": values[..., 0], name_k: values[..., k]}`` for evaluator output whose last axis is
    the loss followed by the metrics in ``metric_names`` order (views, no copies)."""
    return {"loss": values[..., 0], **{m: values[..., k] for k, m in enumerate(metric_names, start=1)}}


__all__ = ["find_logits", "own_loss", "describe", "DefaultLoss", "OwnLoss", "auto_metrics", "accuracy", "batch_denominator", "check_mean_loss", "refuse_batch_sum", "BUILTIN_METRICS", "loss_name", "resolve_metrics", "split_values"]
