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
from typing import Iterator

import torch
from torch import nn

from .params import Perturber

#: the terms of every batch together must fit in this many elements (fp32: 256 MiB)
MAX_BASIS_ELEMENTS = 64 * 2**20
#: use the shared layer only when its fan-in per output is this many times the terms per output
MIN_FAN_IN_RATIO = 4

_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _Stop(Exception):
    """Raised by a pre-hook to end a forward pass once the first layer's input is seen."""


def tensor_leaves(tree) -> list[torch.Tensor]:
    """The tensors in a tensor, tuple, list or dict of them (inputs as the data path passes them)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in tensor_leaves(v)]
    if isinstance(tree, (tuple, list)):
        return [t for v in tree for t in tensor_leaves(v)]
    return []


def _call(forward: nn.Module, xb):
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
    inputs : callable xb -> tensor
        The layer's input for a batch (recorded from a forward pass cut short).

    Use ``SharedFirstLayer.find`` to build one; ``active(xb)`` replaces the layer's output by
    ``terms[0] + Σ c_k terms[k]`` for the duration of one forward pass over ``xb``.
    """

    def __init__(self, module: nn.Module, perturber: Perturber, slots: dict[str, int]):
        self.module = module
        self.perturber = perturber
        self.slots = slots  # "weight"/"bias" -> index in perturber.targets
        self._terms: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._current: torch.Tensor | None = None

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
                _call(forward, xb)
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
        return cls(module, perturber, slots)

    # ------------------------------------------------------------- terms -----
    def _input(self, forward: nn.Module, xb) -> torch.Tensor:
        seen = []

        def hook(m, args):
            seen.append(args[0])
            raise _Stop

        handle = self.module.register_forward_pre_hook(hook)
        try:
            with torch.no_grad():
                _call(forward, xb)
        except _Stop:
            pass
        finally:
            handle.remove()
        return seen[0]

    @torch.no_grad()
    def terms(self, forward: nn.Module, xb) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(centre output flat, direction outputs (n_dirs, M), output buffer) for batch ``xb``."""
        key = tuple((t.data_ptr(), tuple(t.shape)) for t in tensor_leaves(xb))
        if key in self._terms:
            return self._terms[key]
        from torch.func import functional_call

        x = self._input(forward, xb)
        p = self.perturber
        split = p.layout.split
        centre, dirs = split(p.base), split(p.directions)
        names = list(self.slots)

        def out(tensors):
            return functional_call(self.module, dict(zip(names, tensors)), (x,))

        h0 = out([centre[self.slots[n]] for n in names])
        hd = torch.stack([out([dirs[self.slots[n]][k] for n in names]) for k in range(p.directions.shape[0])])
        entry = (h0.reshape(-1).contiguous(), hd.reshape(len(hd), -1).contiguous(), torch.empty_like(h0))
        held = sum(h.numel() + d.numel() for h, d, _ in self._terms.values())
        if held + entry[0].numel() + entry[1].numel() > MAX_BASIS_ELEMENTS:
            self._terms.clear()  # the batches of another batch size took the room: keep this size's
        self._terms[key] = entry
        return entry

    def _forward(self, *args, **kwargs) -> torch.Tensor:
        return self._current

    @contextlib.contextmanager
    def active(self, forward: nn.Module, xb) -> Iterator[None]:
        """For one forward pass over ``xb``: the layer returns the combination at the current point."""
        h0, hd, buf = self.terms(forward, xb)
        torch.addmv(h0, hd.T, self.perturber.coeffs, out=buf.view(-1))
        self._current = buf
        own = self.module.__dict__.get("forward")  # a forward set on the instance, if any, is put back
        self.module.forward = self._forward  # an instance attribute: shadows the class's forward
        try:
            yield
        finally:
            if own is None:
                del self.module.forward
            else:
                self.module.forward = own
            self._current = None

    def clear(self) -> None:
        """Forget the terms (the centre or the data changed)."""
        self._terms.clear()


__all__ = ["SharedFirstLayer", "tensor_leaves", "MAX_BASIS_ELEMENTS"]
