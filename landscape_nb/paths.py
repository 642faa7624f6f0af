"""Paths between minima: straight-line interpolation, loss barriers, mode connectivity (Bézier curves and
polygonal chains).

* ``interpolation_surface(a, b, data)``: the 1D loss along ``(1 − t)·θ_a + t·θ_b``.
  Whether BatchNorm buffers are interpolated matters: with ``include_buffers=False``
  every point keeps ``a``'s running statistics, so near ``b`` the weights are ``b``'s
  but the normalization is ``a``'s, and the path shows a barrier (even at t = 1)
  that belongs to the mismatched statistics, not to the weights. ``True`` (the
  default here) interpolates running means and variances too; ``mode="bn-recompute"``
  re-estimates them at every point, which is what a network at those weights
  would really use.
* ``loss_barrier(profile)``: ``max_t [L(t) − ((1 − t)·L(0) + t·L(1))]`` (Frankle et
  al. 2020), a number: 0 for a path with no bump above the chord.
* ``bezier_curve(a, b, data)``: a quadratic Bézier curve ``φ(t) = (1−t)²θ_a +
  2t(1−t)θ_c + t²θ_b`` whose control point ``θ_c`` is trained to minimize the loss
  averaged along the curve (Garipov et al., "Loss Surfaces, Mode Connectivity, and
  Fast Ensembling of DNNs", NeurIPS 2018), with its loss profile and the straight
  line's. Since ``φ(t) − θ_a = 2t(1−t)(θ_c − θ_a) + t²(θ_b − θ_a)``, the curve
  lies in the plane through the three models and is evaluated by the same
  evaluator as a surface, at coordinates ``(2t(1−t), t²)``.
* ``polychain_curve(a, b, data)``: the paper's other curve, a polygonal chain ``θ_a → θ_c → θ_b``
  (two straight segments, ``θ_c`` at t = 0.5), trained the same way; in that plane at ``(2t, 0)``
  for t ≤ 0.5, then ``(2 − 2t, 2t − 1)``.
* A plane through three models is ``model_paths.plane_directions(a, b, c)``.
"""
from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from .directions import Directions, vector_dtype
from .model_paths import interpolation_direction, paired_layout
from .errors import LandscapeError, one_line, positive_int, positive_number, seed_int, short_repr, warn_user
from .params import ParamLayout, batchnorm_modules, eval_mode, flatten, unwrap_model
from .sharpness import loss_barrier
from .surface import Surface


def interpolation_surface(a: nn.Module, b: nn.Module, data, *, x=(0.0, 1.0, 25), include_buffers: bool = True,
                          label: str | None = None, frozen: str = "include", names: Sequence[str] | None = None,
                          **compute_kwargs) -> Surface:
    """The loss (and metrics) along the straight line from ``a`` (t=0) to ``b`` (t=1).

    ``x`` is the range of t; extend it (e.g. ``(-0.5, 1.5, 41)``) to see beyond the
    ends. Other keywords go to ``compute_surface`` (``loss_fn``, ``client``,
    ``mode="bn-recompute"``, ...). Models of different architectures are refused.

    >>> line = lnb.interpolation_surface(small_batch, large_batch, ex.test, x=(-0.5, 1.5, 41))
    >>> lnb.loss_barrier(line)

    Parameters
    ----------
    a, b : torch.nn.Module
        Two models of the same architecture, at t = 0 and t = 1.
    data : tuple of tensors, Dataset or DataLoader
        What the loss is evaluated on, as for ``compute_surface``: ``(inputs,
        targets)`` with a leading sample axis, or a zero-argument factory.
    x : tuple (start, stop, num), optional
        The range of t and the number of points; t is a fraction of ``θ_b − θ_a``
        (unnormalized: t = 1 is model ``b``, to the rounding of the models' dtype:
        ``θ_b − θ_a`` is held in float64 for float64 models, in float32 otherwise).
    include_buffers : bool, optional
        Interpolate BatchNorm running statistics too (see the module docstring).
    label : str, optional
        The curve's name in plots (``provenance["label"]``).
    frozen : {"include", "refuse"}, optional
        Frozen parameters that differ between ``a`` and ``b``: on the path (t = 1 is
        then ``b`` itself), or refused with their names (``model_paths.paired_layout``).
    names : (str, str), optional
        What to call ``a`` and ``b`` on the axis and in the messages: by default their zoo names where both are
        the zoo's models (``zoo.load``), else "a" and "b" ("t (a → b)").
    **compute_kwargs
        Passed to ``compute_surface`` (``loss_fn``, ``client``, ``store``, ``mode``...).

    Returns
    -------
    Surface
        A 1D surface over t: ``loss`` (and metrics) of shape (num,), in the units
        of the loss; ``provenance`` holds ``label`` and ``x_label``.

    Raises
    ------
    LandscapeError
        Models of different architectures, a bad range, or any error of
        ``compute_surface``.

    References
    ----------
    I. Goodfellow, O. Vinyals and A. Saxe, "Qualitatively characterizing neural
    network optimization problems", ICLR 2015. J. Frankle et al., "Linear Mode
    Connectivity and the Lottery Ticket Hypothesis", ICML 2020.
    """
    from .compute import compute_surface

    a, b = unwrap_model(a), unwrap_model(b)
    d = interpolation_direction(a, b, include_buffers=include_buffers, frozen=frozen, names=names)
    surf = compute_surface(a, data, d, x=x, y=None, **compute_kwargs)
    recomputed = compute_kwargs.get("mode") == "bn-recompute"  # the buffers are then re-estimated at each point
    na, nb = d.provenance["models"]
    kept = not recomputed and d.provenance.get("weights_only")  # t = 1 is b's weights only (s49)
    default = "straight line" + (" (BN statistics re-estimated)" if recomputed else
                                 " (BN buffers interpolated)" if include_buffers and d.layout.include_buffers else
                                 f" ({na}'s BN statistics throughout: t = 1 is {nb}'s weights, not {nb})" if kept
                                 else "")
    return surf.with_provenance(label=label or default, x_label=f"t ({na} → {nb})")


# ------------------------------------------------ mode-connecting curves ----

@dataclass(frozen=True, eq=False)
class ModeCurve:
    """A trained curve between two models through a control point θ_c (Garipov et al. 2018), and both loss
    profiles: a ``BezierCurve`` or a ``PolyChain``, which differ in ``weights``.

    ``start``, ``control``, ``end``: θ_a, the trained θ_c and θ_b (flat, over ``layout``); ``profile`` and
    ``line_profile``: 1D Surfaces over t of the curve's and the straight line's loss (with metrics);
    ``history``: the training loss per step.
    """

    start: torch.Tensor
    control: torch.Tensor
    end: torch.Tensor
    layout: ParamLayout
    profile: Surface
    line_profile: Surface
    history: np.ndarray = field(default_factory=lambda: np.zeros(0))
    settings: dict = field(default_factory=dict)
    #: ``provenance["scheme"]`` of the profile, and the names the curve goes by in labels and messages
    kind: ClassVar[str] = ""
    title: ClassVar[str] = ""
    function: ClassVar[str] = ""

    @staticmethod
    def weights(t):
        """``(w_a, w_c, w_b)`` with θ(t) = w_a·θ_a + w_c·θ_c + w_b·θ_b, for a float or an array of t."""
        raise NotImplementedError

    def point(self, t: float) -> torch.Tensor:
        """θ(t), flat (``weights``), for t in [0, 1] (within 1e-9 of it: rounding); a ``t`` that is not a real
        number in [0, 1] (a string, a bool, NaN, 1.5) is refused (``LandscapeError``): the curve was trained on
        [0, 1] only."""
        if (isinstance(t, np.ndarray) and t.size == 1) or (isinstance(t, torch.Tensor) and t.numel() == 1):
            t = t.item()  # np.array(0.25), torch.tensor(0.25)
        if not (isinstance(t, numbers.Real) and not isinstance(t, bool) and math.isfinite(t)):
            raise LandscapeError(f"t={short_repr(t)}; expected a finite real number (0 at model a, 1 at model b), "
                                 "e.g. t=0.5")
        t = min(max(t, 0.0), 1.0) if -1e-9 <= t <= 1 + 1e-9 else t  # 3 * 0.1 / 0.3 is 1 (re-trial s39)
        if not 0 <= t <= 1:  # s38: t=1.5 extrapolated the polynomial with no word
            raise LandscapeError(
                f"t={t!r}; expected t in [0, 1] (0 at model a, 1 at model b): the {self.title} was trained on [0, 1] "
                "only, and beyond its ends it is an extrapolation no loss was lowered on. For the straight line "
                "beyond a and b use interpolation_surface(a, b, data, x=(-0.5, 1.5, 41))")
        t = float(t)
        wa, wc, wb = self.weights(t)
        return wa * self.start + wc * self.control + wb * self.end

    def model_at(self, model: nn.Module, t: float, *, bn_data=None) -> nn.Module:
        """A copy of ``model`` (the curve's start, or its architecture) with the weights θ(t), in eval mode.

        A model with BatchNorm: its running statistics are re-estimated over ``bn_data`` (tensors, a
        Dataset or a DataLoader; its inputs), as the profiles re-estimate them at every t (pass the data the
        curve was trained on for its ``profile``'s values). Without ``bn_data`` it keeps ``model``'s
        statistics, which belong to other weights, and a ``UserWarning`` says so: evaluated as returned, a
        trial's model gave 0.674 where the profile said 0.585. Where θ(t) is ``model``'s own weights (t = 0 with
        the start model) the copy is that model, statistics and all, without a word.

        Raises ``LandscapeError`` for a ``t`` that is not a real number in [0, 1] (``point``), a model of
        another architecture, or ``bn_data`` it cannot read."""
        from .data import read_data
        from .evaluate import bn_passes, reestimate_batchnorm

        self.layout.check_model(model, what="curve's weights")
        point = self.point(t)
        m = copy.deepcopy(model).eval()
        with torch.no_grad():
            pairs = list(zip(self.layout.tensors(m), self.layout.split(point)))
            own = all(torch.equal(dst, src.to(dst.dtype)) for dst, src in pairs)
            for dst, src in pairs:
                dst.copy_(src)
        if not batchnorm_modules(m):
            return m
        if bn_data is None and own:  # a passed at t=0: its statistics are its weights' own (trial s49 was warned)
            return m
        if bn_data is None:
            warn_user(f"landscape_nb: {type(self).__name__}.model_at: the model at t={float(t):g} keeps the BatchNorm running "
                      f"statistics of the model passed ({type(model).__name__}), which belong to other weights, so "
                      "its loss is not the profile's (whose statistics are re-estimated at every t); pass bn_data= "
                      "(the data the curve was trained on) to re-estimate them")
            return m
        param = next(iter(m.parameters()))
        bn = read_data(bn_data, "bn_data", targets_needed=False).to(param.device)
        try:
            reestimate_batchnorm(m, [bn.split(part)[0] for part in bn.slices(bn_passes(bn.n)[1])])
        except Exception as exc:
            raise LandscapeError(
                f"{type(self).__name__}.model_at: the model failed on bn_data while its BatchNorm statistics were "
                f"re-estimated ({type(exc).__name__}: {one_line(exc)}); expected bn_data whose inputs the model takes "
                f"as they are (its parameters are {param.dtype} on {param.device}: e.g. x.to({param.dtype}))") from exc
        return m

    @property
    def barrier(self) -> float:
        return loss_barrier(self.profile)

    @property
    def line_barrier(self) -> float:
        return loss_barrier(self.line_profile)

    def directions(self) -> Directions:
        """The plane of the curve: ``(θ_c − θ_a, θ_b − θ_a)``; the curve is at ``(w_c(t), w_b(t))``.

        The plane moves parameters only: the control point has no BatchNorm statistics of its own (the profiles
        re-estimate them at every t). For a BatchNorm network compute the plane with ``mode="bn-recompute"`` (and
        ``bn_data=``, the data the curve was trained on) to see the curve's own loss; in the default
        ``mode="eval"`` every point keeps the model's statistics, so b's point is not b (a trial's showed ten times
        b's loss), and ``compute_surface`` warns (``provenance["eval_mode_note"]``)."""
        prov = {"scheme": f"{self.kind}-plane", "x_label": "θ_c − θ_a", "y_label": "θ_b − θ_a"}
        if self.settings.get("bn") == "bn-recompute":  # trial s35: b's point showed ~10x its loss, and no word
            prov["eval_mode_note"] = (
                f"the plane of a {self.title} moves parameters only, not BatchNorm's running statistics (the curve "
                "has none of its own: its profiles re-estimate them at every t), so in mode='eval' every point keeps "
                "the statistics of the model passed and model b's point is b's weights with them, not b. Pass "
                "mode='bn-recompute' and bn_data= (the data the curve was trained on) for the curve's own loss, as "
                "in curve.profile")
        return Directions(torch.stack([self.control - self.start, self.end - self.start]), self.layout, prov)


@dataclass(frozen=True, eq=False)
class BezierCurve(ModeCurve):
    """A trained quadratic Bézier curve θ(t) = (1−t)²θ_a + 2t(1−t)θ_c + t²θ_b between two models, and both
    loss profiles (``ModeCurve``)."""

    kind: ClassVar[str] = "bezier"
    title: ClassVar[str] = "Bézier curve"
    function: ClassVar[str] = "bezier_curve"

    @staticmethod
    def weights(t):
        return (1 - t) ** 2, 2 * t * (1 - t), t ** 2


@dataclass(frozen=True, eq=False)
class PolyChain(ModeCurve):
    """A trained polygonal chain θ_a → θ_c → θ_b between two models (two straight segments, θ_c at t = 0.5:
    θ(t) = (1−2t)θ_a + 2tθ_c for t ≤ 0.5, (2−2t)θ_c + (2t−1)θ_b after), and both loss profiles
    (``ModeCurve``)."""

    kind: ClassVar[str] = "polychain"
    title: ClassVar[str] = "polygonal chain"
    function: ClassVar[str] = "polychain_curve"

    @staticmethod
    def weights(t):
        first = np.asarray(t) <= 0.5
        wa, wc, wb = (np.where(first, 1 - 2 * t, 0.0), np.where(first, 2 * t, 2 - 2 * t),
                      np.where(first, 0.0, 2 * t - 1))
        return (float(wa), float(wc), float(wb)) if np.ndim(t) == 0 else (wa, wc, wb)


def bezier_curve(a: nn.Module, b: nn.Module, data, *, loss_fn: Callable | None = None, n_steps: int = 500,
                 lr: float = 1e-3, batch_size: int = 64, seed: int = 0, n_points: int = 21,
                 eval_data=None, optimizer: str = "adam", target_key: str | int | None = "labels",
                 progress: bool = False) -> BezierCurve:
    """Train the control point of a quadratic Bézier curve from ``a`` to ``b`` (Garipov et al. 2018).

    >>> curve = lnb.bezier_curve(small_batch, large_batch, ex.train, n_steps=500)
    >>> curve.barrier, curve.line_barrier     # loss barriers along the curve and the line
    >>> lnb.plot.paths(curve)

    The control point starts at the midpoint (where the curve *is* the straight
    line) and is trained by ``optimizer`` ("adam" or "sgd") on minibatches of
    ``data`` with one t ~ U(0, 1) per step, minimizing E_t L(φ(t)). Models with
    BatchNorm are trained in train mode (batch statistics); their profiles are then
    evaluated with BN statistics re-estimated at every point on ``data``, the training
    data, whatever ``eval_data`` is (as Garipov et al. do: a test split's own statistics
    would fit the curve to it; ``settings["bn_data"]`` says so). The profiles are
    evaluated at ``n_points`` values of t on ``eval_data`` (default: ``data``, the
    loss the curve was trained on; a test split shows how the curve generalizes).
    Float64 models are trained and evaluated in float64 (others in float32). Frozen
    (``requires_grad=False``) parameters that differ between ``a`` and ``b`` are not trained:
    their control point stays at the midpoint, so the curve follows the straight line there
    (``settings["frozen_on_the_line"]`` names them). On the zoo's mlp-digits pair the defaults
    (500 Adam steps, lr 1e-3, ≈ 2 s on one CPU thread) bring the training-loss barrier from 0.053
    to below 0.001.

    Parameters
    ----------
    a, b : torch.nn.Module
        The curve's ends (two minimizers of the same architecture).
    data : tuple of tensors, Dataset or DataLoader
        Training data for the control point: ``(inputs, targets)`` with a leading
        sample axis (read into memory once).
    loss_fn : callable, optional
        The loss, ``loss_fn(outputs, targets)`` (default: cross-entropy).
    n_steps : int, optional
        Training steps (0 keeps the midpoint: the straight line).
    lr : float, optional
        Learning rate of the optimizer, a positive finite number.
    batch_size : int, optional
        Samples per step (drawn with replacement, seeded), a positive integer
        (more than the data holds draws as many as it holds).
    seed : int, optional
        Seed of the t and minibatch draws.
    n_points : int, optional
        Odd number ≥ 3 of values of t in [0, 1] for the profiles.
    eval_data : tuple of tensors, Dataset or DataLoader, optional
        What the profiles are evaluated on (default: ``data``).
    optimizer : {"adam", "sgd"}, optional
        Adam, or SGD with momentum 0.9.
    target_key : str or int, optional
        Where the targets are in dict (or long tuple) batches; see ``data.read_data``.
    progress : bool, optional
        Show a tqdm.auto bar over the training steps.

    Returns
    -------
    BezierCurve
        The start, trained control point and end (flat vectors of n_params
        values, float32, or float64 for float64 models), the curve's and the
        straight line's profiles (1D surfaces over t, shape (n_points,), loss
        units), the training loss per step (``history``, shape (n_steps,)) and
        the settings.

    Raises
    ------
    LandscapeError
        Models of different architectures, a negative ``n_steps``, an unknown
        ``optimizer``, a non-integer, even or too small ``n_points``, an ``lr`` that is not a
        positive finite number or a ``batch_size`` that is not a positive integer;
        a model with NaN or inf weights (naming it); an exception the model or
        ``loss_fn`` raises, in one line with the original chained; a training step whose
        loss is NaN or infinite, or that makes the control point so (naming the step and t).

    Warns
    -----
    UserWarning
        When training raised the curve: its profile peaks more than 25 % above the
        straight line's (an ``lr`` too large for ``optimizer`` overshoots without
        reaching NaN). The curve returned is the one trained.

    References
    ----------
    T. Garipov, P. Izmailov, D. Podoprikhin, D. Vetrov and A. G. Wilson, "Loss
    Surfaces, Mode Connectivity, and Fast Ensembling of DNNs", NeurIPS 2018.
    """
    return _trained_curve(BezierCurve, a, b, data, loss_fn=loss_fn, n_steps=n_steps, lr=lr, batch_size=batch_size,
                          seed=seed, n_points=n_points, eval_data=eval_data, optimizer=optimizer,
                          target_key=target_key, progress=progress)


def polychain_curve(a: nn.Module, b: nn.Module, data, *, loss_fn: Callable | None = None, n_steps: int = 500,
                    lr: float = 1e-3, batch_size: int = 64, seed: int = 0, n_points: int = 21,
                    eval_data=None, optimizer: str = "adam", target_key: str | int | None = "labels",
                    progress: bool = False) -> PolyChain:
    """Train the bend of a polygonal chain from ``a`` to ``b`` (Garipov et al. 2018; dnn-mode-connectivity's
    ``PolyChain``): θ(t) = (1−2t)θ_a + 2tθ_c for t ≤ 0.5 and (2−2t)θ_c + (2t−1)θ_b after, two straight
    segments meeting at the bend θ_c (t = 0.5).

    >>> chain = lnb.polychain_curve(small_batch, large_batch, ex.train, n_steps=500)
    >>> chain.barrier, chain.line_barrier
    >>> lnb.plot.paths(chain)

    The bend is trained exactly as ``bezier_curve`` trains its control point (from the midpoint, where the
    chain is the straight line, one t ~ U(0, 1) per step, minimizing E_t L(θ(t))), and the profiles are
    evaluated the same way; the parameters, BatchNorm and frozen-parameter handling, float64 models, the
    warning and the errors are ``bezier_curve``'s. The paper found both curves connect minima of the same
    network at near-constant loss; a chain is two straight lines, so its barrier tells whether one bend is
    enough, and its plane coordinates are (2t, 0) then (2 − 2t, 2t − 1) in ``chain.directions()``.

    Returns
    -------
    PolyChain
        The start, trained bend and end (flat vectors of n_params values, float32, or float64 for float64
        models), the chain's and the straight line's profiles (1D surfaces over t, shape (n_points,), loss
        units), the training loss per step (``history``, shape (n_steps,)) and the settings.

    Raises
    ------
    LandscapeError
        As ``bezier_curve``.

    References
    ----------
    T. Garipov, P. Izmailov, D. Podoprikhin, D. Vetrov and A. G. Wilson, "Loss Surfaces, Mode Connectivity,
    and Fast Ensembling of DNNs", NeurIPS 2018.
    """
    return _trained_curve(PolyChain, a, b, data, loss_fn=loss_fn, n_steps=n_steps, lr=lr, batch_size=batch_size,
                          seed=seed, n_points=n_points, eval_data=eval_data, optimizer=optimizer,
                          target_key=target_key, progress=progress)


def _trained_curve(cls: type[ModeCurve], a: nn.Module, b: nn.Module, data, *, loss_fn, n_steps, lr, batch_size,
                   seed, n_points, eval_data, optimizer, target_key, progress) -> ModeCurve:
    """``bezier_curve`` or ``polychain_curve``, by ``cls``."""
    from .compute import compute_surface
    from .data import call_model, dtype_hint, read_data
    from .evaluate import Evaluator, choose_loss
    from .metrics import DefaultLoss, check_mean_loss
    from .statecheck import naming_user_errors

    a, b = unwrap_model(a), unwrap_model(b)
    layout = paired_layout([a, b], include_buffers=False)
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 0:  # True: 1 step
        raise LandscapeError(f"n_steps={n_steps!r}; expected a non-negative number of training steps")
    if optimizer not in ("adam", "sgd"):
        raise LandscapeError(f"optimizer={optimizer!r}; expected 'adam' or 'sgd'")
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 3 or (n_points - 1) % 2:
        raise LandscapeError(f"n_points={n_points!r}; expected an odd integer ≥ 3 (so t = 0, 0.5, 1 are on the "
                             "grid), e.g. n_points=21 (the default)")
    positive_number("lr", lr, fix=f"the {optimizer} step size of the control point, e.g. lr=1e-3 (the default)")
    positive_int("batch_size", batch_size, fix="the samples drawn per training step, e.g. batch_size=64 (the default)")
    seed_int(seed, "the batches drawn for training")
    has_bn = bool(batchnorm_modules(a))
    w0 = flatten(a, layout).detach().cpu()
    dtype = vector_dtype(a)  # float64 models train and are evaluated in float64
    w0, w2 = w0.to(dtype), flatten(b, layout).detach().cpu().to(dtype)
    ev = read_data(data, target_key=target_key).to("cpu")
    work = copy.deepcopy(a).cpu().to(dtype)
    loss_fn_, split, _ = choose_loss(work, ev, loss_fn)
    inputs, targets = split(ev.slices(8)[0])
    step = {"at": 0}
    with naming_user_errors(work, loss_fn, lambda: (f"at training step {step['at']} of {n_steps}" if step["at"] else
                                                    "on the first 8 samples"), "nothing was returned"):
        with eval_mode(work), torch.no_grad():  # before training on it: a scalar mean, as the evaluation checks later
            try:
                out = call_model(work, inputs)
            except Exception as exc:  # inputs of another dtype: named as compute_surface names them (trial s47)
                hint = dtype_hint(inputs, work, exc)
                if not hint:
                    raise
                raise LandscapeError(f"the model ({type(a).__name__}) raised {type(exc).__name__}: {one_line(exc)} "
                                     f"on the first 8 samples{hint}") from exc
            if isinstance(loss_fn_, DefaultLoss):  # inputs alone: "no targets", not loss_fn blamed (trial s37)
                loss_fn_.check(out, targets)
            check_mean_loss(loss_fn_, out, targets)
        ctrl, history = _train_control(cls, work, layout, w0, w2, ev, split, loss_fn_, n_steps, lr, batch_size, seed,
                                       optimizer, has_bn, progress, step)
    control = ctrl.detach().clone()
    eval_data = data if eval_data is None else eval_data
    mode = "bn-recompute" if has_bn else "eval"
    t = np.linspace(0.0, 1.0, n_points)
    vectors = torch.stack([control - w0, w2 - w0])
    ev = Evaluator(a, eval_data, vectors, layout, loss_fn=loss_fn,
                   settings=_settings(mode, loss_fn, target_key), bn_data=data if has_bn else None)
    values = ev.evaluate(np.stack(cls.weights(t)[1:], axis=1))  # in the plane: (w_c, w_b)
    metrics = {m: values[:, k] for k, m in enumerate(ev.metric_names, start=1)}
    prov = {"label": f"{cls.title} (trained)", "x_label": "t (a → b)", "scheme": cls.kind, "n_steps": int(n_steps)}
    profile = Surface(t, None, values[:, 0], metrics, np.ones(len(t), bool), {}, prov)
    line = compute_surface(a, eval_data, Directions((w2 - w0)[None, :], layout, {"scheme": "interpolate"}),
                           x=(0.0, 1.0, n_points), loss_fn=loss_fn, bn_data=data if has_bn else None,
                           settings=_settings(mode, loss_fn, target_key))
    line = line.with_provenance(label="straight line" + (" (BN statistics re-estimated)" if has_bn else ""),  # as
                                x_label="t (a → b)")  # interpolation_surface's: beside its "(BN buffers interpolated)"
    _warn_if_training_raised_the_curve(cls, profile, line, n_steps, lr, optimizer)
    settings: dict[str, Any] = {"n_steps": int(n_steps), "lr": lr, "batch_size": batch_size, "seed": seed,
                                "optimizer": optimizer, "bn": mode, "frozen_on_the_line": list(layout.frozen_names)}
    if has_bn:  # which data the statistics come from: the profile changed by 1.6 % with a test split's (trial s59)
        settings["bn_data"] = "data (the training data), for the profile and the straight line alike"
    return cls(w0, control, w2, layout, profile, line, np.asarray(history), settings)


def _warn_if_training_raised_the_curve(cls: type[ModeCurve], profile: Surface, line: Surface, n_steps: int,
                                       lr: float, optimizer: str) -> None:
    """Warn when the trained curve peaks more than 25 % above the straight line it started as: training
    diverged or overshot (an ``lr`` too large for ``optimizer``), and its curve is no connecting path."""
    curve_max, line_max = np.nanmax(profile.loss, initial=-np.inf), np.nanmax(line.loss, initial=-np.inf)
    if n_steps and np.isfinite(line_max) and curve_max > line_max + 0.25 * abs(line_max):
        warn_user(
            f"landscape_nb.{cls.function}: the trained curve peaks at loss {curve_max:.6g}, above the straight line's "
            f"{line_max:.6g} that it started from: {n_steps} {optimizer} steps at lr={lr:g} made it worse (see "
            "curve.history). Pass a smaller lr (e.g. lr=1e-3 with Adam) or more steps")


def _train_control(cls: type[ModeCurve], work, layout, w0, w2, ev, split, loss_fn_, n_steps: int, lr: float,
                   batch_size: int, seed: int, optimizer: str, has_bn: bool, progress: bool, step: dict):
    """The trained control point (a Parameter) of a ``cls`` curve and the training loss per step; ``step["at"]``
    follows the step being taken, for an error's message."""
    from torch.func import functional_call

    from .data import args_kwargs, tree_map

    work.train(has_bn)
    ctrl = torch.nn.Parameter(((w0 + w2) / 2).clone())
    # frozen (requires_grad=False) parameters that differ between a and b stay on the straight line
    held = torch.cat([torch.full((math.prod(e.shape),), e.kind == "frozen") for e in layout.entries])
    opt = (torch.optim.Adam([ctrl], lr=lr) if optimizer == "adam"
           else torch.optim.SGD([ctrl], lr=lr, momentum=0.9))
    gen = torch.Generator().manual_seed(int(seed))
    buffers = {k: v for k, v in work.named_buffers()}
    history = []
    steps = range(int(n_steps))
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"{cls.title} control point", unit="step")
    device = w0.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the caller's RNG untouched
        torch.default_generator.manual_seed(int(seed))  # dropout in train mode (a model with BN) draws from it:
        if device.type == "cuda":  # two calls of one seed differed by 3.1e-3 in the profile (trial s37); only the
            torch.cuda.manual_seed(int(seed))  # generators forked (manual_seed reseeded every GPU's: review s38)
        for k in steps:
            step["at"] = k + 1
            t = float(torch.rand((), generator=gen))
            idx = torch.randint(0, ev.n, (min(batch_size, ev.n),), generator=gen)
            wa, wc, wb = cls.weights(t)
            flat = wa * w0 + wc * ctrl + wb * w2
            params = {e.name: p for e, p in zip(layout.entries, layout.split(flat))}
            inputs, targets = split(tree_map(lambda v: v[idx], ev.tree))
            out = functional_call(work, {**params, **buffers}, *args_kwargs(inputs))
            loss = loss_fn_(out, targets)
            history.append(float(loss.detach()))
            if not math.isfinite(history[-1]):
                raise LandscapeError(
                    f"{cls.function}: the training loss is {history[-1]} at step {len(history)} of {n_steps} "
                    f"(t = {t:.3f}), so its gradient would make the control point NaN and every curve after it "
                    "meaningless; nothing was returned. Check loss_fn and the data at the ends; if the loss rose step "
                    f"by step ({lr=:g}, history so far {np.round(history[-6:], 4).tolist()}), pass a smaller lr")
            opt.zero_grad()
            loss.backward()
            ctrl.grad[held] = 0  # neither Adam nor SGD then moves them: their moments stay 0
            opt.step()
            if not bool(torch.isfinite(ctrl).all()):
                raise LandscapeError(
                    f"{cls.function}: step {len(history)} of {n_steps} made the control point NaN or infinite (its "
                    f"loss was {history[-1]:.7g}, its gradient was not finite: the loss has no derivative there, or "
                    f"lr={lr:g} overflows); nothing was returned. Pass a smaller lr, or smooth the loss")
    return ctrl, history


def _settings(mode: str, loss_fn, target_key="labels"):
    from .evaluate import EvalSettings
    from .metrics import loss_name

    return EvalSettings(loss_name=loss_name(loss_fn), mode=mode, target_key=target_key)


__all__ = ["interpolation_surface", "loss_barrier", "ModeCurve", "BezierCurve", "PolyChain", "bezier_curve",
           "polychain_curve"]
