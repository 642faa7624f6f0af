"""Reparametrizations that keep the function: Dinh et al. 2017, "Sharp Minima Can Generalize".

A ReLU network is unchanged when one layer's weights and bias are multiplied by
``a > 0`` and the next layer's weights divided by ``a`` (ReLU is positively
homogeneous: ``relu(a·z) = a·relu(z)``). The minimum is the same function, with the
same test error, but along raw (unnormalized) directions it looks ``a²`` times
sharper in the scaled layer, so raw-direction sharpness says nothing about
generalization. Filter normalization (Li et al. 2018) scales each direction filter
with its weights, so the filter-normalized surface of the rescaled network equals
the original's: ``notebooks/sharp_minima.ipynb`` shows both.
"""
from __future__ import annotations

import copy
import math
from typing import Mapping, Sequence

import torch
from torch import nn

from .data import call_model
from .errors import LandscapeError, one_line
from .metrics import describe
from .params import eval_mode
from .trees import tree_leaves

SCALABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Leaves that may sit between two rescaled layers: f(a·z) = a·f(z) for a > 0 (PReLU's learnt slope too: refused
# before, trial s47).
HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
               nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
               nn.Flatten, nn.Identity, nn.Dropout)


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n and not list(m.children())]


def rescalable_layers(model: nn.Module, *, check=None, rtol: float = 1e-5) -> dict[str, str]:
    """``{layer: next layer}`` for each Linear/Conv layer whose output reaches the next one
    through positively homogeneous modules only (ReLU, pooling, Flatten...).

    Candidates come from module order, which does not see a skip connection or a nonlinearity
    written in ``forward``; each is then tried (the layer's weights and bias times 2, the next
    layer's weights halved, in place and restored exactly) and kept only where the outputs stay
    within ``rtol`` (relative to their largest magnitude) on ``check``, or on 16 standard-normal
    inputs where the first module is a Linear layer. Without either (a conv net and no ``check``)
    the candidates are returned untried, and `reparametrize` tries the ones it is given.

    ``check``: as for `reparametrize`.

    Raises
    ------
    LandscapeError
        If the model cannot run on ``check`` (or, without it, on the 16 random inputs).
    """
    leaves = _leaves(model)
    out = {}
    for i, (name, mod) in enumerate(leaves):
        if not isinstance(mod, SCALABLE):
            continue
        for other, m in leaves[i + 1:]:
            if isinstance(m, SCALABLE):
                out[name] = other
                break
            if not isinstance(m, HOMOGENEOUS):
                break
    try:
        inputs = _probe_inputs(model) if check is None else check
    except LandscapeError:  # the input shape is unknown: untried
        return out
    if not out:
        return out
    mods = dict(model.named_modules())
    ref = _outputs(model, inputs, probe=check is None)
    # a residual MLP listed every skip-crossing pair, on which any list of scales was refused (trial s38)
    return {name: nxt for name, nxt in out.items()
            if _relative_change(ref, _rescaled_outputs(model, mods[name], mods[nxt], inputs)) <= rtol}


def _rescaled_outputs(model: nn.Module, layer: nn.Module, nxt: nn.Module, inputs) -> torch.Tensor:
    """The outputs on ``inputs`` with ``layer`` scaled by 2 and ``nxt``'s weights by 1/2 (the weights are copied
    back after, bit for bit: halving a float16 subnormal loses its last bit)."""
    tensors = [layer.weight, *([layer.bias] if layer.bias is not None else []), nxt.weight]
    with torch.no_grad():
        saved = [t.detach().clone() for t in tensors]
        try:
            for t, factor in zip(tensors, [2.0] * (len(tensors) - 1) + [0.5]):
                t.mul_(factor)
            return _outputs(model, inputs)  # ran once already on these inputs
        finally:
            for t, s in zip(tensors, saved):
                t.copy_(s)


def _relative_change(ref: torch.Tensor, out: torch.Tensor) -> float:
    """``max|out − ref| / max|ref|``."""
    return float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _outputs(model: nn.Module, inputs, probe: bool = False) -> torch.Tensor:
    """The model's floating-point outputs on ``inputs`` (``model(*x)`` for a tuple, ``model(**x)`` for a dict, as
    ``compute_surface`` calls it), flattened into one vector where they are a tuple or dict; ``probe``: the inputs
    are ``_probe_inputs``' (no ``check`` given), which the message says."""
    try:
        with torch.no_grad(), eval_mode(model):
            out = call_model(model, inputs)
    except Exception as exc:  # the probe or the given inputs do not fit the model
        what = (f"16 standard-normal inputs ({describe(inputs)}), made for it as no check= was given" if probe
                else f"the check inputs ({describe(inputs)})")
        raise LandscapeError(f"could not run the model on {what} ({type(exc).__name__}: {one_line(exc, 200)}); "
                             "pass check=x, a batch of inputs as the model takes them: a tensor, a tuple for "
                             "model(*x) (trial s54: a model of two inputs), or a dict for model(**x) (or, if the "
                             "model's own forward fails on good inputs, fix that first)") from exc
    if isinstance(out, torch.Tensor):
        return out
    leaves = [t.reshape(-1) for _, t in tree_leaves(out) if t.is_floating_point()]
    if not leaves:
        raise LandscapeError(f"the model's outputs on the check inputs are {describe(out)}, with no floating-point "
                             "tensor to compare; expected outputs holding the model's predictions")
    return torch.cat(leaves)


def reparametrize(model: nn.Module, layer_scales, *, check=None, rtol: float = 1e-5) -> nn.Module:
    """A copy of ``model`` with layer ``L`` scaled by ``a`` and the layer after it by ``1/a``.

    >>> sharp = lnb.reparametrize(mlp, {"layers.0": 10.0}, check=x)   # same outputs on x
    >>> sharp = lnb.reparametrize(mlp, [10.0, 0.1], check=x)          # one scale per rescalable layer

    ``layer_scales``: ``{layer name: a}`` or a list with one ``a`` per entry of
    ``rescalable_layers(model)`` (in that order); every ``a`` must be positive and
    finite. Several scales compose (layer L's weights get ``a_L / a_{L-1}``).
    Module order is taken as execution order, and a nonlinearity written in ``forward``
    (``torch.tanh(...)``) is not a module, so the copy's outputs are always compared with
    the original's (relative ``rtol``): on ``check`` when given, else on 16 standard-normal
    inputs where the model's first module is a Linear layer (its input size is known).
    This catches skip connections and functional nonlinearities between the rescaled layers.

    Parameters
    ----------
    model : torch.nn.Module
        The network; it is copied, never changed.
    layer_scales : mapping of str to float, or sequence of float
        ``{layer name: a}`` for layers in ``rescalable_layers(model)``, or one
        ``a`` per rescalable layer in that order; each ``a`` is a dimensionless
        factor, positive and finite.
    check : torch.Tensor, tuple or dict, optional
        Example inputs, shape (batch, ...) as ``model`` takes them (a tuple is passed as
        ``model(*check)``, a dict as ``model(**check)``, as ``compute_surface`` does); the
        outputs of the copy (all their floating-point tensors) are compared with the
        original's on them (eval mode). Required unless the model's first module is an
        ``nn.Linear`` of one input (then random inputs are used).
    rtol : float, optional
        The largest accepted ``max|f_new − f| / max|f|`` on ``check``.

    Returns
    -------
    torch.nn.Module
        A deep copy computing the same function, whose rescaled layers' weights
        (and biases) are multiplied by ``a_L / a_{L-1}`` (biases by ``a_L``).

    Raises
    ------
    LandscapeError
        ``model`` not a module, a layer that cannot be rescaled, a wrong number of
        scales, a scale that is not positive and finite, no ``check`` for a model
        whose input size is unknown, or outputs that differ by more than ``rtol``.

    References
    ----------
    L. Dinh, R. Pascanu, S. Bengio and Y. Bengio, "Sharp Minima Can Generalize For
    Deep Nets", ICML 2017 (the α-scale transformation of rectified networks).
    """
    if not isinstance(model, nn.Module):
        raise LandscapeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    pairs = rescalable_layers(model, check=check, rtol=rtol)
    if isinstance(layer_scales, Mapping):
        scales = dict(layer_scales)
    elif isinstance(layer_scales, Sequence) and not isinstance(layer_scales, str):
        if len(layer_scales) != len(pairs):
            raise LandscapeError(
                f"{len(layer_scales)} scales for {len(pairs)} rescalable layers {list(pairs)}; expected one scale "
                "per layer, or a dict {layer name: scale}"
            )
        scales = dict(zip(pairs, layer_scales))
    else:
        raise LandscapeError(f"layer_scales of type {type(layer_scales).__name__}; expected a dict "
                             "{layer name: scale} or a list of scales, e.g. {'layers.0': 10.0}")
    for name, a in scales.items():
        if name not in pairs:
            raise LandscapeError(
                f"layer {name!r} cannot be rescaled; " + (  # "expected one of []" (trial s59)
                    f"expected one of {list(pairs)}" if pairs else f"{type(model).__name__} has no layer that can")
                + " (Linear/Conv layers followed, "
                "through ReLU/pooling only, by another Linear/Conv layer, tried on the check inputs; BatchNorm, "
                "other nonlinearities (also one written in forward(), such as torch.tanh), a skip connection or "
                "a reused module in between break the invariance)"
            )
        if not isinstance(a, (int, float)) or isinstance(a, bool) or not math.isfinite(a) or a <= 0:
            raise LandscapeError(f"scale {a!r} for {name!r}; expected a positive finite number (ReLU is only "
                                 "homogeneous for positive factors)")
    inputs = _probe_inputs(model) if check is None else check  # refused before any copy is made
    new = copy.deepcopy(model)
    mods = dict(new.named_modules())
    out_scale: dict[str, float] = {}  # each layer's output is multiplied by this
    in_scale: dict[str, float] = {}  # each layer's input is multiplied by this
    for name, a in scales.items():
        out_scale[name] = float(a)
        in_scale[pairs[name]] = float(a)
    with torch.no_grad():
        for name in set(out_scale) | set(in_scale):
            layer = mods[name]
            a_out, a_in = out_scale.get(name, 1.0), in_scale.get(name, 1.0)
            layer.weight.mul_(a_out / a_in)
            if layer.bias is not None:
                layer.bias.mul_(a_out)
    _check_same(model, new, inputs, rtol, probe=check is None)
    return new


def _probe_inputs(model: nn.Module) -> torch.Tensor:
    """16 standard-normal inputs for a model whose first module is an ``nn.Linear``; else raise."""
    leaves = _leaves(model)
    first = leaves[0][1] if leaves else None
    if not isinstance(first, nn.Linear):
        raise LandscapeError(
            f"reparametrize needs example inputs to check that the copy computes the same function (the first "
            f"module is {type(first).__name__}, so the input shape is unknown); pass check=x, a batch of inputs "
            "as the model takes them, e.g. check=x_test[:16]")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, first.in_features, generator=gen)
    return x.to(device=first.weight.device, dtype=first.weight.dtype)


def _check_same(model: nn.Module, new: nn.Module, inputs, rtol: float, probe: bool = False) -> None:
    err = _relative_change(_outputs(model, inputs, probe), _outputs(new, inputs, probe))
    if err > rtol:
        raise LandscapeError(
            f"the rescaled model's outputs differ from the original's by {err:.3g} (relative), more than "
            f"rtol={rtol}: forward() does not pass the rescaled layer's output to the next one through "
            "ReLU/pooling only (a nonlinearity written in forward() such as torch.tanh, a skip connection or "
            "a reused module?): choose layers of a plain ReLU chain"
        )


__all__ = ["reparametrize", "rescalable_layers"]
