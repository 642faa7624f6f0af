"""Sharing work between grid points: the model's first layer evaluated once per direction.

A linear or convolutional layer is affine in its own weights, so at ``w0 + Σ c_k d_k``
its output on a fixed input is ``f(x; w0) + Σ c_k f_lin(x; d_k)``, where ``f_lin`` is
the layer with the direction's weight and bias slices in place of its own. When that
layer is the first one to see the data (its input is a view of the evaluation inputs,
so it depends on no weight), the ``1 + n_dirs`` terms are computed once per batch, and
each grid point replaces the layer's matmul or convolution by one ``addmv`` over them.
For the zoo's MLP (64-128-64-10) that halves the FLOPs of every point.

Exact up to float rounding (the sum is taken in another order); ``Evaluator`` checks the
result against the model itself before using it and otherwise evaluates the plain way.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from .data import tree_map
from .params import Perturber

#: the terms of every batch together must fit in this many elements (fp32: 256 MiB)
MAX_BASIS_ELEMENTS = 64 * 2**20
#: use the shared layer only when its fan-in per output is this many times the terms per output
MIN_FAN_IN_RATIO = 4

_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_OWN_FORWARDS = {cls.forward for cls in _AFFINE}


def tensor_leaves(tree) -> list[torch.Tensor]:
    """The tensors in a tensor, tuple, list or dict of them (inputs as the data path passes them)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in tensor_leaves(v)]
    if isinstance(tree, (tuple, list)):
        return [t for v in tree for t in tensor_leaves(v)]
    return []


def call(forward: nn.Module, xb):
    """``forward(xb)``, ``forward(*xb)`` or ``forward(**xb)`` for a tensor, tuple/list or dict."""
    if isinstance(xb, dict):
        return forward(**xb)
    if isinstance(xb, (tuple, list)):
        return forward(*xb)
    return forward(xb)


class SharedFirstLayer:
    """The first affine layer of ``forward``, evaluated once per direction and batch.

    Parameters
    ----------
    module : nn.Linear or nn.ConvNd
        The layer; its weight (and bias, if any) are tensors the perturber writes.
    perturber : Perturber
        Holds the centre, the directions and the coefficients of the current point.
    slots : dict "weight"/"bias" -> int
        Where the layer's weight and bias are in ``perturber.targets``.
    storages : set of int
        Addresses of the data storages the layer's input may be a view of; any other input
        runs the layer itself.

    Use ``SharedFirstLayer.find`` to build one; while installed (``install``/``uninstall`` or
    ``active()``) the layer returns ``terms[0] + Σ c_k terms[k]`` for each input it is given,
    the terms computed once per distinct input (batch).
    """

    def __init__(self, module: nn.Module, perturber: Perturber, slots: dict[str, int], storages: set[int]):
        self.module = module
        self.perturber = perturber
        self.slots = slots
        self.storages = storages
        self._terms: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._own = None
        #: inside a ``vmap`` over points (``SpeedChoices._points_stacked``): each point's coefficients
        self.batched_coeffs: torch.Tensor | None = None
        #: in a ``BatchAxisStack`` pass: the points' coefficients (k, n_dirs), and the storage address of
        #: each input repeated for it -> the evaluation input it repeats
        self.stacked_coeffs: torch.Tensor | None = None
        self.repeated: dict[int, torch.Tensor] = {}

    # ------------------------------------------------------------ finding ----
    @classmethod
    def find(cls, forward: nn.Module, perturber: Perturber, xb, n_samples: int) -> "SharedFirstLayer | None":
        """The first linear/conv layer that ``forward`` applies to a view of the inputs ``xb``,
        once per pass, with perturbed weights, enough fan-in to be worth sharing and terms for
        ``n_samples`` samples that fit in ``MAX_BASIS_ELEMENTS``; else None."""
        targets = {id(t): i for i, t in enumerate(perturber.targets)}
        leaves = tensor_leaves(xb)
        if not leaves:
            return None
        storages = {t.untyped_storage().data_ptr() for t in leaves}
        calls: list[tuple[nn.Module, torch.Tensor]] = []

        def hook(m, args):
            calls.append((m, args[0] if args else None))

        handles = [m.register_forward_pre_hook(hook) for m in forward.modules() if isinstance(m, _AFFINE)]
        try:
            with torch.no_grad():
                call(forward, xb)
        except Exception:  # the model runs on its own in the evaluator; here only the structure matters
            return None
        finally:
            for h in handles:
                h.remove()
        if not calls:
            return None
        module, inp = calls[0]
        if sum(m is module for m, _ in calls) != 1 or not isinstance(inp, torch.Tensor):
            return None
        if type(module).forward not in _OWN_FORWARDS:  # a subclass's forward (a weight constraint, "same"
            return None  # padding): not the affine map of its weights the terms stand for
        if inp.untyped_storage().data_ptr() not in storages:  # computed from the data: may hold weights
            return None
        slots = {"weight": targets.get(id(module.weight), -1)}
        if module.bias is not None:
            slots["bias"] = targets.get(id(module.bias), -1)
        if min(slots.values()) < 0:  # a weight the perturber does not write (frozen, or a derived copy)
            return None
        n_terms = 1 + perturber.directions.shape[0]
        fan_in = module.weight[0].numel()
        if fan_in < MIN_FAN_IN_RATIO * n_terms or len(inp) == 0:
            return None
        with torch.no_grad():
            per_sample = module(inp[:1]).numel()
        if n_terms * per_sample * n_samples > MAX_BASIS_ELEMENTS:
            return None
        return cls(module, perturber, slots, storages)

    # ------------------------------------------------------------- terms -----
    @torch.no_grad()
    def terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(centre output flat, direction outputs (n_dirs, M), output buffer) for the layer input ``x``,
        computed on first use and kept while they fit in ``MAX_BASIS_ELEMENTS``."""
        key = (x.data_ptr(), tuple(x.shape), tuple(x.stride()))
        entry = self._terms.get(key)
        if entry is not None:
            return entry
        p = self.perturber
        centre, dirs = p.layout.split(p.base), p.layout.split(p.directions)
        w, b = self.slots["weight"], self.slots.get("bias")
        run = self.module._conv_forward if isinstance(self.module, nn.modules.conv._ConvNd) else F.linear
        h0 = run(x, centre[w], None if b is None else centre[b])
        hd = torch.stack([run(x, dirs[w][k], None if b is None else dirs[b][k]) for k in range(len(p.directions))])
        h0, hd = h0.contiguous(), hd.contiguous()  # channels_last outputs: combined in the standard layout
        entry = (h0.view(-1), hd.view(len(hd), -1), torch.empty_like(h0))
        held = sum(h.numel() + d.numel() for h, d, _ in self._terms.values())
        if held + entry[0].numel() + entry[1].numel() > MAX_BASIS_ELEMENTS:
            self._terms.clear()  # the batches of another batch size took the room: keep this size's
        self._terms[key] = entry
        return entry

    def _forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """The layer's output at ``perturber.coeffs``: ``terms[0] + Σ c_k terms[k]``, one addmv."""
        if self.stacked_coeffs is not None and not (args or kwargs):
            rows = self._rows_per_point(x)
            if rows is not None:
                return rows
        if args or kwargs or torch.is_grad_enabled() or x.untyped_storage().data_ptr() not in self.storages:
            return type(self.module).forward(self.module, x, *args, **kwargs)
        h0, hd, buf = self.terms(x)
        if self.batched_coeffs is not None:  # one output per vmapped point
            return (self.batched_coeffs @ hd + h0).view(buf.shape)
        torch.addmv(h0, hd.T, self.perturber.coeffs, out=buf.view(-1))
        return buf

    def _rows_per_point(self, x: torch.Tensor) -> torch.Tensor | None:
        """For ``x`` laid out as ``BatchAxisStack`` repeats the inputs (k copies of the evaluation
        samples, point-major, contiguous from the start of the repeated storage): the layer's output
        at each point's coefficients, (k * n, ...), from the terms of the samples themselves; None for
        any other input."""
        orig = self.repeated.get(x.untyped_storage().data_ptr())
        k = len(self.stacked_coeffs)
        if (orig is None or not x.is_contiguous() or x.data_ptr() != x.untyped_storage().data_ptr()
                or x.dim() == 0 or x.shape[0] % k or x.numel() != k * orig.numel()):
            return None
        h0, hd, buf = self.terms(orig.view(x.shape[0] // k, *x.shape[1:]))
        return torch.addmm(h0[None], self.stacked_coeffs, hd).view(x.shape[0], *buf.shape[1:])

    def install(self) -> None:
        """From now on the layer combines terms (until ``uninstall``); a forward set on the instance
        is put back after. Only for passes over the evaluation batches, under ``torch.no_grad``."""
        d = self.module.__dict__
        self._own = d.get("forward")
        d["forward"] = self._forward  # an instance attribute shadows the class's forward

    def uninstall(self) -> None:
        d = self.module.__dict__
        if self._own is None:
            d.pop("forward", None)
        else:
            d["forward"] = self._own
        self._own = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """``install`` for the duration."""
        self.install()
        try:
            yield
        finally:
            self.uninstall()

    def clear(self) -> None:
        """Forget the terms (the centre or the data changed)."""
        self._terms.clear()


#: ``BatchAxisStack`` keeps the repeated inputs of a pass for the next one up to this size
REPEATS_KEPT_BYTES = 64 * 2**20
#: a stacked linear layer with at most this many outputs computes them transposed, ``W @ x^T``, so that
#: the GEMM's long side is the samples (2-core CPU, 32 points of (360, 64) -> 10 logits: 5-6 vs 15-30 us
#: a point; from 64 outputs up both orders ran alike)
SMALL_OUT_FEATURES = 16


def _plain_linear(m: nn.Module) -> bool:
    return type(m).forward is nn.Linear.forward and isinstance(m, nn.Linear) and "forward" not in m.__dict__


class BatchAxisStack:
    """Several grid points in one ordinary forward pass: the evaluation samples of every point one
    after another on the batch axis (point-major), each perturbed ``nn.Linear`` one batched GEMM of
    each point's samples with that point's weights.

    For models whose perturbed tensors all sit in plain ``nn.Linear`` layers (weight and bias; MLPs).
    The inputs are repeated once per point; a linear layer's input, (k * n, ..., in), is read as
    (k, n * ..., in) and multiplied by the (k, out, in) weights with ``baddbmm``, the bias added in
    the GEMM; a shared first layer (``SharedFirstLayer``) gives each point its rows from its terms.
    Unlike ``torch.func.vmap`` this adds no per-operation batching, and the GEMMs take the bias and
    the operand order that suit them: mlp-digits (360 samples, 2-core CPU, same process, interleaved)
    ran 77 and 100 us a point in passes of 16 and 32 points against 113 and 134 under ``vmap``; its
    21x21 surface 108 against 147 us a point.

    A model that mixes samples across the batch axis, splits the batch, or reads a linear layer's
    weight outside its forward computes other values. The evaluator uses this class only for models
    whose outputs per sample do not depend on the rest of the batch (``SpeedChoices._batch_independent``
    with ``repeated=True``); ``_forward`` refuses an input whose first axis is not the pass's k × n
    rows; the module tensors hold the stacked (k, ...) weights while a pass runs, so a weight used
    elsewhere fails on its shape, or, reduced over every point, is caught when the evaluator compares
    points of the first pass with single points (``SpeedChoices._verify_batch_axis``). Any of these
    sends the stacked passes to ``vmap``.
    """

    def __init__(self, forward: nn.Module, slots: list[tuple[dict, str, int]], shared: SharedFirstLayer | None):
        self.forward = forward
        self.slots = slots
        self.shared = shared
        self.linears = [m for m in forward.modules() if _plain_linear(m) and (shared is None or m is not shared.module)]
        self._inputs: dict[tuple, tuple] = {}
        self._kept_bytes = 0  # of the repeated inputs in _inputs
        self.rows = 0  # points × samples of the batch a pass runs now

    @classmethod
    def find(cls, forward: nn.Module, slots: list[tuple[dict, str, int]],
             shared: SharedFirstLayer | None) -> BatchAxisStack | None:
        """One for ``forward`` if every perturbed tensor (``slots``: (``module._parameters`` or
        ``_buffers``, key, layout index)) is the weight or bias of a plain ``nn.Linear`` or of the
        shared first layer; else None."""
        allowed = {id(m._parameters) for m in forward.modules() if _plain_linear(m)}
        if shared is not None:
            allowed.add(id(shared.module._parameters))
        if not slots or any(id(table) not in allowed or key not in ("weight", "bias") for table, key, _ in slots):
            return None
        return cls(forward, slots, shared)

    @staticmethod
    def fits(batches: list, k: int) -> bool:
        """Whether a pass of ``k`` points keeps its repeated inputs (every batch's, k copies each) within
        ``REPEATS_KEPT_BYTES``; a larger pass would copy its inputs again each time (a wide input, e.g.
        3072 features: 16-23x slower a point than under ``vmap``), so it runs under ``vmap``."""
        return k * sum(t.numel() * t.element_size() for xb, _ in batches for t in tensor_leaves(xb)) <= REPEATS_KEPT_BYTES

    def repeat(self, xb, k: int):
        """``xb`` (a tensor, tuple/list or dict of them, each with the batch first) with each leaf
        repeated ``k`` times along the batch axis, point-major; kept for the next pass of ``k`` while all
        kept together stay within ``REPEATS_KEPT_BYTES``."""
        leaves = tensor_leaves(xb)
        key = (k, *((t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype) for t in leaves))
        hit = self._inputs.get(key)
        if hit is not None:
            return hit[0]
        rep = tree_map(lambda t: t.repeat(k, *[1] * (t.dim() - 1)), xb)
        size = k * sum(t.numel() * t.element_size() for t in leaves)
        if self._kept_bytes + size > REPEATS_KEPT_BYTES:
            self._inputs.clear()
            self._kept_bytes = 0
        if size <= REPEATS_KEPT_BYTES:
            self._inputs[key] = (rep, xb)  # the source too: its address stays taken while the key is kept
            self._kept_bytes += size
        return rep

    @contextlib.contextmanager
    def active(self, parts: list[torch.Tensor], coords: torch.Tensor) -> Iterator[None]:
        """For one pass of ``len(coords)`` points: the module tensors of ``slots`` hold the stacked
        ``parts`` (each (k, *shape)), the linear layers run ``_forward``; per batch, ``batch`` gives the
        repeated inputs (the shared layer then gives each point's rows for them)."""
        saved = [table[key] for table, key, _ in self.slots]
        k = len(coords)
        try:
            for table, key, i in self.slots:
                table[key] = parts[i]
            for m in self.linears:
                m.__dict__["forward"] = functools.partial(self._forward, m, k)
            self.rows = 0  # set per batch by the caller: points × samples
            if self.shared is not None:
                self.shared.stacked_coeffs = coords
                self.shared.install()
            yield
        finally:
            if self.shared is not None:
                self.shared.uninstall()
                self.shared.stacked_coeffs, self.shared.repeated = None, {}
            for m in self.linears:
                m.__dict__.pop("forward", None)
            for (table, key, _), t in zip(self.slots, saved):
                table[key] = t

    def batch(self, xb, k: int):
        """The inputs of one batch for the pass now active: ``repeat(xb, k)``, the rows per layer input
        set for ``_forward``, and the shared layer told which tensors repeat which."""
        rep = self.repeat(xb, k)
        self.rows = k * len(tensor_leaves(xb)[0])
        if self.shared is not None:
            self.shared.repeated = {r.untyped_storage().data_ptr(): t
                                    for r, t in zip(tensor_leaves(rep), tensor_leaves(xb))}
        return rep

    def _forward(self, m: nn.Linear, k: int, x: torch.Tensor) -> torch.Tensor:
        """``m`` on ``x`` (k * n, ..., in), each point's rows with its own weight and bias; raises
        ``ValueError`` for an input whose first axis is not the pass's k × n samples (a model that
        splits, merges or folds the batch: which rows are whose would be a guess)."""
        w, b = m.weight, m.bias
        if w.dim() == 2 and (b is None or b.dim() == 1):  # not perturbed (frozen)
            return F.linear(x, w, b)
        if x.dim() < 2 or x.shape[0] != self.rows:
            raise ValueError(f"a pass of {k} points on the batch axis ({self.rows} rows) gave {m} an input of "
                             f"shape {tuple(x.shape)}")
        lead = x.shape[:-1]
        x3 = x.reshape(k, -1, x.shape[-1])
        w = w.expand(k, *w.shape) if w.dim() == 2 else w
        out_features = w.shape[1]
        if b is not None and b.dim() == 1:
            b = b.expand(k, out_features)
        if out_features <= SMALL_OUT_FEATURES:
            xt = x3.transpose(1, 2)
            out = (torch.bmm(w, xt) if b is None else torch.baddbmm(b[:, :, None], w, xt)).transpose(1, 2)
        else:
            wt = w.transpose(1, 2)
            out = torch.bmm(x3, wt) if b is None else torch.baddbmm(b[:, None, :], x3, wt)
        return out.reshape(*lead, out_features)


def fused_values(loss_fn, metric_fns: dict, targets, fallback: Callable) -> Callable:
    """``(outputs, targets) -> tensor [loss, *metrics]`` for one batch: for the default loss
    (``metrics.DefaultLoss`` or a plain ``nn.CrossEntropyLoss``) on tensor logits, with no metric or the built-in accuracy, and integer class targets,
    a version with the same values up to rounding in about half the time; else ``fallback``.

    torch's ``log_softmax`` over a short last axis (10 classes) runs ~15x slower than over the first
    axis of the transposed logits, so the loss is taken there: ``-mean(log_softmax(out.T)[y, i])``.
    """
    from .metrics import DefaultLoss, accuracy

    plain_ce = type(loss_fn) is DefaultLoss or (
        type(loss_fn) is nn.CrossEntropyLoss and loss_fn.weight is None and loss_fn.reduction == "mean"
        and loss_fn.label_smoothing == 0.0 and loss_fn.ignore_index == -100)
    metrics = list(metric_fns.values())
    if not plain_ce or metrics not in ([], [accuracy]) or not isinstance(targets, torch.Tensor):
        return fallback
    if targets.dtype != torch.int64 or targets.dim() != 1 or len(targets) == 0 or int(targets.min()) < 0:
        return fallback  # one-hot or probability targets, ignore_index: the loss function itself
    with_accuracy = bool(metrics)

    def values(out, y: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or y.dim() != 1:  # e.g. a ModelOutput
            return fallback(out, y)
        loss = torch.log_softmax(out.T, 0).gather(0, y[None]).mean().neg()
        if with_accuracy:
            # max's indices are argmax's (the first of tied maxima, NaN counted as the maximum) in 3/4 of
            # its time on (points, samples, 10) logits
            return torch.stack([loss, (out.max(1).indices == y).float().mean()])
        return loss[None]

    def per_point(out, y: torch.Tensor, k: int) -> torch.Tensor | None:
        """The values of ``k`` points whose outputs are stacked on the batch axis (``BatchAxisStack``):
        (k, 1 + n_metrics); None where ``out`` is not (k * len(y), classes) logits."""
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or y.dim() != 1 or len(out) != k * len(y):
            return None
        o = out.reshape(k, len(y), -1).transpose(1, 2)  # (k, classes, samples): see above
        loss = F.cross_entropy(o, y.expand(k, -1), reduction="none").mean(1)
        if with_accuracy:
            return torch.stack([loss, (o.max(1).indices == y).float().mean(1)], 1)
        return loss[:, None]

    values.per_point = per_point
    return values


__all__ = ["BatchAxisStack", "SharedFirstLayer", "fused_values", "tensor_leaves", "MAX_BASIS_ELEMENTS"]
