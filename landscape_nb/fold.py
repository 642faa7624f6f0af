"""Fold eval-mode BatchNorm into the convolution before it, live.

In eval mode ``bn(conv(x))`` is ``conv(x)`` scaled and shifted per channel, so it equals one
convolution with weight ``w·s`` and bias ``(b − μ)·s + β``, ``s = γ / √(σ² + ε)``. The folded
module keeps references to the original ``conv`` and ``bn`` and derives the folded weight at
every call, so perturbing the model's parameters in place (as the evaluator does) is seen at
once and restoring them needs nothing extra. It saves one pass over every BN activation;
values change only by float rounding (about 1e-7 relative).

Only call sites where a ``Conv{1,2,3}d`` output goes solely into a BatchNorm with running
statistics of matching width are folded. A model that ``torch.fx`` cannot trace, or one with
forward hooks (pruning masks, weight norm, activation recorders), is used unchanged;
:func:`fold_batchnorm` says why.

Tracing patches ``nn.Module.__call__`` for the whole process for a few milliseconds, once per
evaluator; another thread running a module in that window (e.g. your own cell while the
Explorer starts a computation) can fail. Pass ``fold_bn=False`` to ``compute_surface`` where
that matters.
"""
from __future__ import annotations

import threading

import torch
from torch import nn

from .params import batchnorm_modules

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# torch.fx patches nn.Module.__call__ process-wide while it traces (a few ms per model); the
# lock keeps our own evaluators (threads of one Dask worker) from tracing at the same time.
# Other threads calling modules during those milliseconds can still fail: see the docstring.
_TRACING = threading.Lock()


class FoldedConvBN(nn.Module):
    """``bn(conv(x))`` for an eval-mode ``bn`` as one convolution; shares ``conv`` and ``bn``.

    The folded weight is recomputed only when a source tensor changed in place (its version
    counter moved), so a point's batches share one fold; the BN part only when a BN tensor (or the
    conv's bias) changed.
    """

    def __init__(self, conv: nn.modules.conv._ConvNd, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.conv, self.bn = conv, bn
        self.clear_cache()

    def clear_cache(self) -> None:
        """Forget the fold: for weights changed without a version bump (through ``.data``)."""
        self._key = self._bn_key = None  # None: never equal to a key
        self._folded: tuple[torch.Tensor, torch.Tensor] | None = None
        self._scale: tuple[torch.Tensor, torch.Tensor] | None = None  # (per-channel scale as a view, bias)
        self._held: tuple = ()  # keeps the sources alive so their ids in the keys stay theirs

    def _sources(self) -> tuple:
        c, b = self.conv, self.bn
        return (c.weight, c.bias, b.weight, b.bias, b.running_mean, b.running_var)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the one convolution. The BN part (scale and bias) and the weight are cached
        apart: where a point moves only the conv weights (random directions leave BN parameters and
        statistics alone by default), a refold is one multiply."""
        sources = self._sources()
        key = tuple(None if t is None else (id(t), t._version, t.dtype, t.device) for t in sources)
        if key == self._key:
            return self._folded
        conv, bn = self.conv, self.bn
        grad = torch.is_grad_enabled()  # autograd through the fold: never cache a graph
        if grad or key[1:] != self._bn_key:
            scale = torch.rsqrt(bn.running_var + bn.eps)
            if bn.weight is not None:
                scale = scale * bn.weight
            shift = -bn.running_mean if conv.bias is None else conv.bias - bn.running_mean
            bias = shift * scale
            if bn.bias is not None:
                bias = bias + bn.bias
            scale_and_bias = (scale.reshape(-1, *([1] * (conv.weight.ndim - 1))), bias)
            if grad:
                return conv.weight * scale_and_bias[0], bias
            self._bn_key, self._scale = key[1:], scale_and_bias
        scale, bias = self._scale
        self._key, self._folded, self._held = key, (conv.weight * scale, bias), sources
        return self._folded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.folded()
        return self.conv._conv_forward(x, weight, bias)


def _foldable(conv, bn) -> bool:
    return (
        isinstance(conv, _CONVS)
        and isinstance(bn, nn.modules.batchnorm._BatchNorm)
        and bn.running_mean is not None
        and bn.num_features == conv.out_channels
    )


def _has_forward_hooks(model: nn.Module) -> bool:
    """Hooks run by ``module(x)``: folding calls neither the conv nor the BN, and tracing inlines
    containers, so any of them could be skipped."""
    from torch.nn.modules import module as _module

    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, str]:
    """An eval-only view of ``model`` with conv→BN pairs folded, and a one-line account.

    The result shares every parameter and buffer with ``model``; use it for forward
    passes in eval mode only (it ignores ``bn.training``). When nothing can be folded
    or the model cannot be traced, ``model`` itself is returned.
    """
    if not batchnorm_modules(model):
        return model, "no BatchNorm"
    if _has_forward_hooks(model):  # e.g. torch.nn.utils.prune recomputes conv.weight in a pre-hook
        return model, "not folded: the model has forward hooks"
    own = set(vars(model))
    try:
        with _TRACING:
            gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # data-dependent control flow, custom tracers: run the model as it is
        return model, f"not folded: torch.fx could not trace the model ({type(exc).__name__})"
    finally:  # the tracer stores each plain tensor attribute forward reads on the model as _tensor_constantN
        for name in set(vars(model)) - own:  # (the traced module keeps its own reference): not left there
            if name.startswith("_tensor_constant"):
                del vars(model)[name]
    modules = dict(gm.named_modules())
    n_folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        prev = node.args[0]
        if not isinstance(prev, torch.fx.Node) or prev.op != "call_module" or len(prev.users) != 1:
            continue
        conv, bn = modules.get(prev.target), modules.get(node.target)
        if not _foldable(conv, bn):
            continue
        name = f"_folded_{n_folded}"
        gm.add_submodule(name, FoldedConvBN(conv, bn))
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(name, prev.args, prev.kwargs)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        gm.graph.erase_node(prev)
        n_folded += 1
    if not n_folded:
        return model, "not folded: no conv→BatchNorm pair"
    gm.graph.lint()
    gm.recompile()
    return gm, f"folded {n_folded} conv→BatchNorm pairs"
