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
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

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
        if args or kwargs or torch.is_grad_enabled() or x.untyped_storage().data_ptr() not in self.storages:
            return type(self.module).forward(self.module, x, *args, **kwargs)
        h0, hd, buf = self.terms(x)
        if self.batched_coeffs is not None:  # one output per vmapped point
            return (self.batched_coeffs @ hd + h0).view(buf.shape)
        torch.addmv(h0, hd.T, self.perturber.coeffs, out=buf.view(-1))
        return buf

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

    return values


__all__ = ["SharedFirstLayer", "fused_values", "tensor_leaves", "MAX_BASIS_ELEMENTS"]
