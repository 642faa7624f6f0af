"""Directions between models: the line through two models, the plane through three.

``interpolation_direction`` and ``plane_directions`` give ``Directions`` (``landscape_nb.directions``)
whose end points are the other models; ``paired_layout`` checks the models match.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any, Sequence

import torch
from torch import nn

from .directions import DEPENDENT_TOL, Directions, _cosines, _max_offdiag, vector_dtype
from .errors import LandscapeError, check_choice, warn_user
from .params import (ParamLayout, check_finite, check_materialized, flatten, float_state_buffers, match_state_keys,
                     unwrap_model, variance_buffers)
from .spec import centre_of, tensors_sketch
from .surface import zoo_label


def paired_layout(models: Sequence[nn.Module], include_buffers: bool, frozen: str = "include",
                  names: Sequence[str] | None = None) -> ParamLayout:
    """The layout of ``models[0]``, after checking every other model has the same tensors.

    Frozen (``requires_grad=False``) parameters that differ between the models are part of
    the path between them: with ``frozen="include"`` they join the layout (kind
    ``"frozen"``), so the end point is the other model and not a hybrid of one model's
    frozen layers with the other's trainable ones; ``frozen="refuse"`` raises instead,
    naming them. Frozen parameters equal in all models stay out. Buffers that differ between
    the models and that the layout cannot hold (integer or boolean ones such as a pruning mask,
    non-persistent ones, floating-point ones with ``include_buffers=False``) keep the first
    model's values on the whole path, so the other models' points are not those models: a
    ``UserWarning`` names them. Norm layers' buffers are left to ``include_buffers`` (and
    ``compute_surface``'s ``mode``): ``num_batches_tracked`` does nothing in eval mode.

    Parameters
    ----------
    models : sequence of torch.nn.Module
        Two or more models of one architecture (e.g. two minimizers).
    include_buffers : bool
        Whether floating-point buffers (BatchNorm statistics) are in the layout.
    frozen : {"include", "refuse"}
        What to do with frozen parameters that differ between the models.
    names : sequence of str, optional
        What the messages call each model (default ``"a"``, ``"b"``, ``"c"``, ...: "model b").

    Returns
    -------
    ParamLayout
        The tensors a direction between the models covers.

    Raises
    ------
    LandscapeError
        If a model is not a module, a model's parameter (or, with ``include_buffers``,
        floating-point buffer) names or shapes differ from the first model's (naming the
        first differing tensor and both models), a submodule differs in class or eval-mode settings (an
        activation, a slope, an ``eps``; Dropout's rate aside: ``_check_same_settings``),
        the same parameters are frozen in one model and trainable in another, frozen parameters
        differ with ``frozen="refuse"``, or a model holds NaN or inf in the layout's tensors.
    """
    check_choice("frozen", frozen, ("include", "refuse"))
    models = [unwrap_model(m) for m in models]
    names = [f"model {n}" for n in (names or "abcdefghijklmnopqrstuvwxyz"[:len(models)])]
    if isinstance(models[0], nn.Module):
        check_materialized(models[0], names[0])  # named as the path's first (re-trial s57: "the model's")
    ParamLayout.of(models[0], include_buffers=include_buffers)  # refuses a non-module before it is read
    for m, name in zip(models[1:], names[1:]):
        if not isinstance(m, nn.Module):  # a state dict or a path was refused with no way to it (trial s35)
            fix = ("it holds the tensors, not the architecture: pass landscape_nb.model_paths.model_from_state_dict("
                   f"{names[0].split()[-1]}, state), a copy of {names[0]} holding them" if isinstance(m, Mapping) else
                   "load it: landscape_nb.model_paths.model_from_state_dict("
                   f"{names[0].split()[-1]}, landscape_nb.trajectory.load_state_dict_file(path))"
                   if isinstance(m, (str, os.PathLike)) else "pass the model object itself")
            raise LandscapeError(f"{name} is a {type(m).__name__}; expected a torch.nn.Module of {names[0]}'s "
                                 f"architecture: {fix}")
        check_materialized(m, name)  # a lazy one: torch's "Can't access the shape" (re-trial s57)
        _check_same_architecture(models[0], m, names[0], name, include_buffers)
    differ = _differing_frozen(models)
    params = dict(models[0].named_parameters())
    integers = [n for n in differ if not params[n].is_floating_point()]
    if integers:  # interpolated, [2, 0, 1] → [0, 1, 2] ran [1, 0, 1] at t = 0.5; a curve fed floats (re-trial s56)
        others = [name for m, name in zip(models[1:], names[1:])
                  if any(not torch.equal(dict(m.named_parameters())[n].cpu(), params[n].cpu()) for n in integers)]
        kinds = sorted({"bool" if params[n].dtype == torch.bool else "integer" for n in integers})
        raise LandscapeError(
            f"the {' and '.join(kinds)} parameters {integers[:5]} differ between {names[0]} and {' and '.join(others)}; "
            "a path between models moves every point's weights continuously, which integers (indices, a "
            "permutation) cannot take: expected models that hold the same values there (copy one model's into the "
            f"others, e.g. other.{integers[0]}.copy_(model.{integers[0]}) under torch.no_grad())")  # (review s57)
    if differ and frozen == "refuse":
        raise LandscapeError(
            f"frozen (requires_grad=False) parameters differ between the models: {differ[:5]}; a path that keeps "
            f"{names[0]}'s values of them does not end at {' or '.join(names[1:])}. Pass frozen='include' to "
            "interpolate them too, or make them equal"
        )
    layout = ParamLayout.of(models[0], include_buffers=include_buffers, frozen=differ)
    for m, name in zip(models, names):  # a NaN end read as a NaN direction, or a control point made NaN
        try:
            check_finite(layout, layout.tensors(m), ", so every point of a path through it would be too")
        except LandscapeError as exc:
            raise LandscapeError(f"{name}: {exc}") from None
    kept = _differing_buffers(models, layout)
    if kept:  # trial s35: a's pruning mask stayed on the whole path, so t = 1 gave 1.1226 for b's 1.0923
        others = " and ".join(names[1:])
        warn_user(
            f"landscape_nb: buffers {kept[:5]} differ between the models, and a path moves only parameters and "
            "(include_buffers="
            f"True) the floating-point buffers of the state dict: these (integer or boolean ones, such as a pruning "
            f"mask, non-persistent ones{'' if include_buffers else ', and any with include_buffers=False'}) keep "
            f"{names[0]}'s values at every point, so the point of {others} is its weights with {names[0]}'s buffers, "
            f"not {others} itself, and its loss is not theirs. Fold them into the weights (torch.nn.utils.prune."
            "remove for a pruning mask), or make them equal in the models")
    return layout


def model_from_state_dict(model: nn.Module, state, what: str = "the checkpoint") -> nn.Module:
    """A copy of ``model`` holding the tensors of ``state`` (a state dict): another point of its architecture.

    >>> b = model_from_state_dict(model, torch.load("epoch90.pt", weights_only=True))
    >>> d = interpolation_direction(model, b)

    ``model`` is unwrapped (``torch.compile``, ``DataParallel``) and deep-copied, so it is left as
    it was; the copy has ``model``'s mode, dtype and device. Keys saved from a wrapper
    (``DataParallel``'s ``module.``, ``torch.compile``'s ``_orig_mod.``, a Lightning module's
    ``model.``) are read without the prefix (``params.match_state_keys``), and
    ``load_state_dict``'s own rules apply (an old BatchNorm checkpoint without
    ``num_batches_tracked`` loads).

    Parameters
    ----------
    model : torch.nn.Module
        The architecture (and its settings) the state belongs to.
    state : Mapping[str, torch.Tensor]
        The tensors, e.g. ``trajectory.load_state_dict_file(path)``.
    what : str, optional
        What messages call the state (e.g. ``"--model-file2 'b.pt'"``).

    Returns
    -------
    torch.nn.Module
        The copy.

    Raises
    ------
    LandscapeError
        Keys missing from or unexpected in ``state`` (the first few named), or a tensor whose
        shape differs from the model's: a checkpoint of another architecture.
    """
    import copy

    base = unwrap_model(model)
    if not isinstance(base, nn.Module):
        raise LandscapeError(f"model is a {type(model).__name__}; expected a torch.nn.Module")
    own = base.state_dict()
    state = match_state_keys(state, own)  # saved from DataParallel, a compiled model, a Lightning module
    for name in (n for n in own if n in state):  # the model's order: the first mismatch, every run the same
        shape = tuple(torch.as_tensor(state[name]).shape)
        if shape != tuple(own[name].shape):
            raise LandscapeError(f"{what} does not fit {type(base).__name__}: tensor {name!r} has shape {shape} there, "
                                 f"{tuple(own[name].shape)} in the model; expected a state dict saved from this "
                                 "architecture")
    other = copy.deepcopy(base)
    # load_state_dict's own rules (an old BatchNorm checkpoint without num_batches_tracked loads), then its verdict
    result = other.load_state_dict(state, strict=False)  # copies into the copy's tensors: dtype and device stay
    missing, unexpected = sorted(result.missing_keys), sorted(result.unexpected_keys)
    if missing or unexpected:
        parts = [f"{len(missing)} tensor(s) of the model missing from it (e.g. {missing[:3]})" if missing else "",
                 f"{len(unexpected)} tensor(s) the model has not (e.g. {unexpected[:3]})" if unexpected else ""]
        raise LandscapeError(
            f"{what} does not fit {type(base).__name__}: {'; '.join(p for p in parts if p)}; expected a state dict "
            "saved from this architecture (torch.save(model.state_dict(), path))")
    return other


def _tensor_shapes(model: nn.Module, include_buffers: bool) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every parameter, frozen ones too, then of the state_dict's floating-point buffers with
    ``include_buffers``."""
    out = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    if include_buffers:
        out += [(n, tuple(b.shape)) for n, b in float_state_buffers(model)]
    return out


def _n_values(shapes: list[tuple[str, tuple[int, ...]]]) -> int:
    return sum(math.prod(shape) for _, shape in shapes)


def _check_same_architecture(a: nn.Module, b: nn.Module, name_a: str, name_b: str, include_buffers: bool) -> None:
    """Refuse ``b`` unless it has ``a``'s tensors (names, shapes, order) and the same ones frozen."""
    ta, tb = _tensor_shapes(a, include_buffers), _tensor_shapes(b, include_buffers)
    if ta != tb:
        sa, sb = dict(ta), dict(tb)
        k = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
        first = ta[k][0] if k < len(ta) else tb[k][0]
        if first in sa and first in sb and sa[first] != sb[first]:
            detail = f"first differing tensor {first!r}: shape {sa[first]} in {name_a}, {sb[first]} in {name_b}"
        elif first not in sb:
            detail = f"first differing tensor {first!r}: in {name_a}, not in {name_b}"
        elif first not in sa:
            detail = f"first differing tensor {first!r}: in {name_b}, not in {name_a}"
        else:
            detail = f"the same tensors in another order, from {first!r} on"
        raise LandscapeError(
            f"{name_b} has another architecture than {name_a}: {_n_values(ta)} values in {name_a}, {_n_values(tb)} in "
            f"{name_b} ({detail}); expected two models of one architecture (the same class and parameter shapes), "
            f"e.g. two trainings of one network: build {name_b} as {name_a} was built"
        )
    _check_same_settings(a, b, name_a, name_b)
    grad_b = {n: p.requires_grad for n, p in b.named_parameters()}
    mixed = [n for n, p in a.named_parameters() if p.requires_grad != grad_b[n]]
    if mixed:
        raise LandscapeError(
            f"{name_a} and {name_b} have the same tensors but {mixed[:3]} trainable in one and frozen "
            "(requires_grad=False) in the other; expected the same parameters frozen in both: call "
            "requires_grad_() alike on both models"
        )


#: modules that are the identity in eval mode, where every path is evaluated: their settings may differ
_EVAL_IDENTITY = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_EVAL_IDENTITY_NAMES = ("DropPath", "StochasticDepth")  # timm's and torchvision's, not imported here


def _eval_setting(m: nn.Module) -> str | None:
    """What of ``m``'s settings decides its eval-mode output: its ``extra_repr`` (an activation's slope,
    BatchNorm's ``eps``), BatchNorm's ``momentum`` aside (eval and bn-recompute do not use it); None for a
    module that is the identity in eval mode."""
    if isinstance(m, _EVAL_IDENTITY) or type(m).__name__ in _EVAL_IDENTITY_NAMES:
        return None
    try:
        text = m.extra_repr()
    except Exception:  # noqa: BLE001 - a user's extra_repr that fails: the class alone is compared
        return ""
    return re.sub(r"momentum=[^,]*, ?", "", text) if isinstance(m, nn.modules.batchnorm._NormBase) else text


def _check_same_settings(a: nn.Module, b: nn.Module, name_a: str, name_b: str) -> None:
    """Refuse ``b`` unless each of its submodules is of ``a``'s class with the same eval-mode settings
    (``_eval_setting``). Otherwise the path's end (``a``'s network with ``b``'s weights) is not ``b``: a Tanh
    network with a ReLU network's weights had 1.41 for b's loss of 0.018, and a made-up barrier. Plain
    attributes are not compared (a dropout rate or ``gradient_checkpointing`` flag may differ between two
    trainings of one network): a temperature kept in one is not seen."""
    mods_a, mods_b = dict(a.named_modules(remove_duplicate=False)), dict(b.named_modules(remove_duplicate=False))
    for name in list(mods_a) + [n for n in mods_b if n not in mods_a]:
        ma, mb = mods_a.get(name), mods_b.get(name)
        if ma is not None and mb is not None and type(ma) is type(mb) and _eval_setting(ma) == _eval_setting(mb):
            continue
        where = f"submodule {name!r}" if name else "the model itself"
        if ma is None or mb is None:
            what = f"{where} is in {name_a if mb is None else name_b}, not in {name_b if mb is None else name_a}"
        elif type(ma) is not type(mb):
            what = f"{where} is a {type(ma).__name__} in {name_a}, a {type(mb).__name__} in {name_b}"
        else:
            what = f"{where} ({type(ma).__name__}) is ({ma.extra_repr()}) in {name_a}, ({mb.extra_repr()}) in {name_b}"
        raise LandscapeError(
            f"{name_a} and {name_b} have the same tensors but not the same network: {what}; a path between them "
            f"would end at {name_b}'s weights inside {name_a}'s network, not at {name_b}. Expected two models of "
            "one architecture (e.g. two trainings of one network); if that setting does not change what the "
            "model computes in eval mode, make it equal in both")


def _differing_frozen(models: Sequence[nn.Module]) -> list[str]:
    """Names of frozen parameters of ``models[0]`` whose values differ in another model."""
    first = dict(models[0].named_parameters())
    out = []
    for name, p in first.items():
        if p.requires_grad:
            continue
        for m in models[1:]:
            q = dict(m.named_parameters()).get(name)
            if q is not None and q.shape == p.shape and not torch.equal(q.detach().cpu(), p.detach().cpu()):
                out.append(name)
                break
    return out


def _differing_buffers(models: Sequence[nn.Module], layout: ParamLayout) -> list[str]:
    """Names of buffers of ``models[0]`` that ``layout`` leaves out and another model holds other values of (in
    a buffer of the same shape: a non-persistent cache grown to another length is rebuilt, not model state).
    Norm layers' buffers are not named: their statistics are ``include_buffers``' or ``mode``'s matter, and
    ``num_batches_tracked`` does nothing in eval mode."""
    covered = {e.name for e in layout.entries}
    norms = {name for name, m in models[0].named_modules() if isinstance(m, nn.modules.batchnorm._NormBase)}
    others = [dict(m.named_buffers()) for m in models[1:]]
    out = []
    for name, buf in models[0].named_buffers():
        if name in covered or name.rpartition(".")[0] in norms:
            continue
        if any(name in o and o[name].shape == buf.shape and not torch.equal(o[name].cpu(), buf.cpu()) for o in others):
            out.append(name)
    return out


def _names(names: Sequence[str] | None, models: Sequence[nn.Module]) -> tuple[str, ...]:
    """``names`` checked: one non-empty string per model of ``models``, their names on the axes and in messages;
    for None, the zoo's names of the models where each has a different one (``zoo.load``: "mlp-digits small-batch";
    a line between the zoo's minimizers was drawn "a → b", s57), else "a", "b", "c"."""
    n = len(models)
    if names is None:
        zoo = [zoo_label(m, unchanged_only=True) for m in models]  # one changed since zoo.load: a, b, c (its
        return tuple(zoo) if all(zoo) and len(set(zoo)) == n else tuple("abc"[:n])  # name would mislead)
    try:
        names = names if isinstance(names, str) else tuple(names)
    except TypeError:  # not iterable: refused below
        pass
    if not isinstance(names, tuple) or len(names) != n or not all(isinstance(x, str) and x.strip() for x in names):
        raise LandscapeError(f"names={names!r}; expected {n} non-empty strings, one per model, e.g. "
                             f"names={tuple('abc'[:n])!r}")
    if len({x.strip() for x in names}) < n:  # the axes read "A → A" and the figures' marks could not be told
        # apart (trial s49)
        raise LandscapeError(f"names={names!r} repeats a name; expected {n} different names, one per model, e.g. "
                             f"names={tuple('abc'[:n])!r}")
    return tuple(names)


def buffers_differing(a: nn.Module, others: Sequence[nn.Module]) -> list[str]:
    """The floating-point state buffers (BatchNorm statistics, `params.float_state_buffers`) in which any of
    ``others`` differs from ``a``: with ``include_buffers=False`` a path's points keep ``a``'s, so the point at 1
    has ``b``'s weights, not ``b``."""
    ref = dict(float_state_buffers(a))
    return sorted({n for m in others for n, t in float_state_buffers(m)
                   if n in ref and t.shape == ref[n].shape
                   and not torch.equal(t.detach().cpu(), ref[n].detach().cpu())})


def _weights_only(a: nn.Module, others: dict[str, nn.Module]) -> dict:
    """What a path that keeps ``a``'s buffers (``include_buffers=False``) records of the models it names
    (``others``, by name): the point of a model whose buffers differ from ``a``'s holds its weights only
    (``weights_only``, those names; ``buffers_of_the_centre``, the buffers differing), read by the figures' marks
    and `loss_barrier`. Empty where every model has ``a``'s buffers."""
    kept = {name: buffers_differing(a, [m]) for name, m in others.items()}
    if not any(kept.values()):
        return {}
    return {"weights_only": [k for k, v in kept.items() if v],
            "buffers_of_the_centre": sorted({n for v in kept.values() for n in v})}


def centre_buffers(a: nn.Module) -> dict:
    """What a path spanning buffers records of its centre's (``centre_buffers``, read by
    `spec.made_around_buffers`)."""
    return {"centre_buffers": tensors_sketch([b for _, b in float_state_buffers(a)])}


def _path_provenance(layout: ParamLayout, include_buffers: bool) -> dict:
    """What a path's provenance says about frozen parameters and BatchNorm variances."""
    prov: dict[str, Any] = {"frozen_included": list(layout.frozen_names)}
    if variance_buffers(layout):
        prov["running_var"] = ("BatchNorm running_var interpolated and clamped at 0 where a point beyond "
                               "the models makes it negative")
        prov["clamp_running_var"] = True  # compute_surface reads it (EvalSettings.clamp_running_var)
    return prov


def interpolation_direction(a: nn.Module, b: nn.Module, *, include_buffers: bool = True,
                            frozen: str = "include", names: Sequence[str] | None = None) -> Directions:
    """The direction ``θ_b − θ_a``: the surface at ``x = 0`` is model ``a`` and at ``x = 1`` model ``b``.

    >>> d = interpolation_direction(small_batch, large_batch)
    >>> surf = compute_surface(small_batch, data, d, x=(-0.5, 1.5, 41))

    With ``include_buffers=True`` (the default, as in ``interpolation_surface``)
    floating-point buffers (BatchNorm running mean and variance) are interpolated too,
    so the point at x = 1 is model ``b``; with False the evaluated models keep ``a``'s
    buffers, which makes the path through BN networks look worse than it is (x = 1 is
    ``b``'s weights with ``a``'s statistics: a BN CNN's end came out at 0.337 for ``b``'s
    0.061, and its barrier 1.32 for 1.12). Beyond
    [0, 1] an extrapolated ``running_var`` can go negative: it is clamped at 0 at
    every point (``params.Perturber``), so no NaN, and the provenance says so.
    Frozen parameters that differ between the models are interpolated too (or
    refused, ``frozen="refuse"``; see ``paired_layout``).

    Parameters
    ----------
    a, b : torch.nn.Module
        Two models of the same architecture; pass ``a`` to ``compute_surface``.
    include_buffers : bool, optional
        Also interpolate floating-point buffers (default True; it was False before 2026-12-02).
    frozen : {"include", "refuse"}, optional
        Frozen parameters that differ between the models: interpolate them, or refuse.
    names : (str, str), optional
        What to call ``a`` and ``b`` on the axis, e.g. ``("small-batch", "large-batch")``; by default their zoo
        names where both are the zoo's models (``zoo.load``), else "a" and "b" ("interpolation a → b").

    Returns
    -------
    Directions
        One unnormalized vector, shape (1, n_values) where n_values counts the
        trainable values (plus buffer values with ``include_buffers``), in the
        units of the weights, float32 (float64 when the models are float64, so the
        point at x = 1 is ``b`` to float64 rounding); ``provenance["scheme"] == "interpolate"``,
        ``provenance["frozen_included"]`` names the frozen parameters on the path.

    Raises
    ------
    LandscapeError
        If the models' tensors differ in name or shape (another architecture), or
        differ in which are frozen (see ``paired_layout``).

    References
    ----------
    I. Goodfellow, O. Vinyals and A. Saxe, "Qualitatively characterizing neural
    network optimization problems", ICLR 2015 (the 1D interpolation plot);
    H. Li et al., "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018, §3.
    """
    layout = paired_layout([a, b], include_buffers, frozen)
    wa = flatten(a, layout).cpu()
    dtype = vector_dtype(a)  # float64 models: t = 1 is b to float64 rounding, not float32's ~1e-7
    vec = (flatten(b, layout).cpu().to(dtype) - wa.to(dtype))[None, :]
    na, nb = _names(names, (a, b))
    prov = {"scheme": "interpolate", "include_buffers": bool(include_buffers),
            **centre_of(a), "x_label": f"interpolation {na} → {nb}", "models": [na, nb],
            **(centre_buffers(a) if layout.include_buffers else {}),
            **({} if include_buffers else _weights_only(a, {nb: b})),
            "norms": [float(vec.double().norm())],
            **_path_provenance(layout, include_buffers)}
    return Directions(vec, layout, prov)


def plane_directions(a: nn.Module, b: nn.Module, c: nn.Module, *, include_buffers: bool = True,
                     frozen: str = "include", names: Sequence[str] | None = None) -> Directions:
    """Two directions ``θ_b − θ_a`` and ``θ_c − θ_a``: the plane through three models.

    Model ``a`` is at (0, 0), ``b`` at (1, 0) and ``c`` at (0, 1); pass ``a`` as the
    model to ``compute_surface``.

    Parameters
    ----------
    a, b, c : torch.nn.Module
        Three models of the same architecture.
    include_buffers : bool, optional
        Also span floating-point buffers (BatchNorm statistics; default True, so each model's
        point is that model); see ``interpolation_direction``.
    frozen : {"include", "refuse"}, optional
        Frozen parameters that differ between the models: span them, or refuse.
    names : (str, str, str), optional
        What to call ``a``, ``b`` and ``c`` on the axes and in the messages, e.g. ``("final", "run 2",
        "run 3")``; by default their zoo names where all three are the zoo's models, else "a", "b" and "c"
        ("a → b", "a → c").

    Returns
    -------
    Directions
        Two unnormalized vectors, shape (2, n_values), in the units of the weights,
        float32 (float64 when the models are float64); ``provenance`` holds the axis labels, the
        models' names (``models``: `plot.contour`, `plot.heatmap`, `plot.surface` and the Explorer
        mark them at (0, 0), (1, 0) and (0, 1)), ``cosine_max`` and ``norms``.

    Raises
    ------
    LandscapeError
        If the models' tensors differ in name or shape (another architecture); if b or c holds a's
        weights, or b and c lie on one line through a (the same model, say): no plane.

    References
    ----------
    T. Garipov, P. Izmailov, D. Podoprikhin, D. Vetrov and A. G. Wilson, "Loss
    Surfaces, Mode Connectivity, and Fast Ensembling of DNNs", NeurIPS 2018 (planes
    through three networks).
    """
    layout = paired_layout([a, b, c], include_buffers, frozen)
    wa = flatten(a, layout).cpu()
    dtype = vector_dtype(a)
    wa = wa.to(dtype)
    vecs = torch.stack([flatten(b, layout).cpu().to(dtype) - wa, flatten(c, layout).cpu().to(dtype) - wa])
    na, nb, nc = _names(names, (a, b, c))
    for k, name in enumerate((nb, nc)):
        if not bool(vecs[k].any()):
            raise LandscapeError(
                f"model {name} holds the same weights as model {na} (the centre), so the plane's axis {na} → {name} "
                f"has no length; expected three different models (e.g. checkpoints of other runs or training steps)")
    cosine = _max_offdiag(_cosines(vecs))
    if torch.equal(vecs[0], vecs[1]) or cosine > 1 - DEPENDENT_TOL ** 2:
        how = "they are the same model" if torch.equal(vecs[0], vecs[1]) else f"|cosine| {cosine:.7f}"
        raise LandscapeError(
            f"models {nb} and {nc} lie on one line through {na} ({how}), so {na} → {nb} and {na} → {nc} span a "
            f"line, not a plane; expected three models not on one line: another checkpoint for {nc} (or "
            "interpolation_direction(a, b) for the line)")
    prov = {"scheme": "plane3", "include_buffers": bool(include_buffers), **centre_of(a),
            **(centre_buffers(a) if layout.include_buffers else {}),
            **({} if include_buffers else _weights_only(a, {nb: b, nc: c})),
            "x_label": f"{na} → {nb}", "y_label": f"{na} → {nc}", "models": [na, nb, nc], "cosine_max": cosine,
            "norms": vecs.double().norm(dim=1).tolist(), **_path_provenance(layout, include_buffers)}
    return Directions(vecs, layout, prov)
