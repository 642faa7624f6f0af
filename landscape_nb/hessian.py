"""Curvature of the loss: Hessian-vector products, extreme eigenpairs, trace, eigen-maps.

The Hessian is that of the mean loss over the evaluation set, with respect to the
model's trainable parameters, the model in eval mode (BatchNorm running statistics
fixed). Products ``H v`` use double backpropagation batch by batch, so nothing of
size n_params² is ever formed; extreme eigenpairs come from Lanczos (ARPACK's
``scipy.sparse.linalg.eigsh`` on a ``LinearOperator``), the trace from Hutchinson's
estimator.

Which directions to slice along: Böttcher & Wheeler ("Visualizing high-dimensional
loss landscapes with Hessian directions", 2022) show that random planes see almost
only positive curvature even at saddle points, and recommend the eigenvectors of the
largest and most negative eigenvalues; ``hessian_directions`` gives those.

The non-convexity map of Li et al. 2018 (Fig. 6), ``eigen_maps.eigen_map``, evaluates
``|λ_min / λ_max|`` (0 where λ_min ≥ 0: ``eig_ratio``) at every grid point through the same tiles and runners as a loss
surface (``compute_surface(..., quantity="hessian")``, in-process or Dask); the per-point
work is ``HessianEvaluator`` here.
**Cost per point**: one loss pass plus two Lanczos runs (λ_max, then λ_min on the
shifted operator), each of 20–40 Hessian-vector products over the evaluation set at
``tol=1e-3``; from ``DEVICE_LANCZOS_MIN_PARAMS`` on, one run of about as many products
yields both (``lanczos.extreme_eigenpairs``). The count is returned per point (metric ``n_hvp``). One product is a
forward pass, a backward pass with graph, and a backward through that graph. Measured
on the 2-core CPU, one torch thread: mlp-digits (17,226
parameters, 360 test samples) forward 0.25 ms, product 2.2 ms (≈ 9 forwards), a point
52–82 products, 0.37 s with ARPACK's overhead (≈ 1,500 forwards: a 21×21 map ≈ 3 min);
resnet20-digits (272,186 parameters) forward 30 ms, product 0.41 s (≈ 14 forwards),
so ≈ 26 s per point with two runs, about half that with one. Use coarse grids, ``max_samples`` and a Dask cluster.
"""
from __future__ import annotations

import contextlib
import functools
import math
import numbers
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .data import (batch_len, call_model, check_finite_data, keywords_hint, non_finite_leaves, order_hint, read_data,
                   tree_leaves, tree_map)
from .directions import Directions, _cosines, _max_offdiag
from .errors import LandscapeError, check_choice, one_line, positive_int, seed_int, short_repr, warn_user
from .evaluate import (CHECKED_AT_LEAST, IN_ORDER, MEAN_LOSS_FIX, OUTPUTS_FIX, OUTPUTS_MOVE, SPREAD_SAMPLES,
                       Cancelled, check_padding, choose_loss, class_weighting, data_key, first_disagreement,
                       fits_every_chunk, holds_padding, judged, kept_mean_rules, kept_rule_words, kept_rules,
                       near_equal_size, part_weights, refuse_sums, refuse_sums_spread, rule_weight, set_chunks,
                       split_positions, spread_splits, weighed_batches)
from .lanczos import DEVICE_LANCZOS_MIN_PARAMS, DEVICE_LANCZOS_TOL, Eigenpairs, extreme_eigenpairs  # noqa: F401
from .lanczos import DENSE_FALLBACK
from .lanczos import _Operator
from .metrics import (DefaultLoss, OwnLoss, batch_denominator, check_mean_loss, class_weights, describe,
                      probability_outputs_note, probe_targets, unwrap_compiled)
from .params import (ParamLayout, check_finite, eval_mode, holding, model_device, model_dtype, restoring,
                     unwrap_model, weights_put_back)
from .statecheck import (StateSnapshot, check_fns_stateless, check_model_stateless, naming_user_errors,
                         random_outputs_note, run_checking_inputs)
from .spec import centre_of

EIGEN_METRICS = ("lambda_max", "lambda_min", "eig_ratio", "n_hvp")


class NonFiniteCurvature(LandscapeError):
    """A Hessian-vector product of a NaN or infinite loss, or one with NaN/inf values at a finite loss.

    Autograd can give finite products of a loss that is NaN (``log(u)`` where ``u < 0``), so the loss
    is checked too: eigenvalues, traces and densities of such products would look plausible and mean
    nothing. ``eigen_maps.eigen_map`` (``HessianEvaluator``) stores NaN at such a point instead.
    """

    def __init__(self, n_product: int, loss: float):
        self.n_product, self.loss = n_product, loss
        if not math.isfinite(loss):
            why = (" (autograd can still give finite Hessian-vector products of a NaN loss, e.g. of log(u) where "
                   "u < 0)") if math.isnan(loss) else ""
            text = (f"the loss at these weights is {loss}, so their curvature means nothing{why}; check the model's "
                    "outputs and loss_fn at these weights: a diverged model, a log of 0, or a log or sqrt of a "
                    "negative value")
        else:
            text = (f"Hessian-vector product {n_product} has NaN or infinite values at a finite loss ({loss:.7g}): "
                    "the loss has no second derivative at these weights (e.g. sqrt or abs at 0, a log near 0) or it "
                    "overflows; evaluate in float64 (copy.deepcopy(model).double()) or smooth the loss there")
        super().__init__(text)

    def __reduce__(self):  # from a Dask worker (hessian_spectrum(client=...)): rebuilt from its figures
        return type(self), (self.n_product, self.loss)


class HessianOperator:
    """``H v`` for the mean loss of ``model`` on ``data`` at the model's current weights.

    >>> op = HessianOperator(model, (x, y))
    >>> hv = op.matvec(v)              # v: flat float tensor with op.n_params values
    >>> lin = op.as_linear_operator()  # for scipy.sparse.linalg.eigsh
    >>> with op.reusing_graph():       # many products at the same weights: one backward pass each
    ...     top, vector = scipy.sparse.linalg.eigsh(lin, k=1, which="LA")

    ``matvec`` reads the weights at call time, so evaluating the curvature at a
    perturbed point only needs the weights written in place (as the eigen-map does).

    Data take every form ``compute_surface`` takes (pytrees, dict batches, the model's own
    ``outputs.loss``; see ``data.read_data`` and ``evaluate.choose_loss``). Products run with
    the math kernel of ``scaled_dot_product_attention`` (the fused CPU/flash kernels have no
    double backward; the math kernel computes the same function), on the model inside a
    ``torch.compile``/``DataParallel`` wrapper (``params.unwrap_model``). ``progress`` is a
    callable ``(n_products)`` called after each product (the public functions pass a tqdm bar).

    ``batches=`` (a list of ``(inputs, targets)`` on the model's device, e.g. an ``Evaluator``'s)
    replaces ``data``: they are used as given, with the data and loss checks below.

    Raises
    ------
    LandscapeError
        For a model that is not an ``nn.Module`` or holds NaN/inf weights; a ``batch_size`` or ``max_samples`` that is not a
        positive integer; data not accepted, or holding NaN/inf where the loss or its gradient at the model
        is then not finite (``data`` or ``batches``; kept with a warning otherwise); a model that
        fails on the first samples, writes into its inputs or keeps state between calls; a loss that
        fails, is not a scalar (``reduction='none'``), sums over the batch (``reduction='sum'``: the
        values would follow ``batch_size``) or keeps state between calls; a call under
        ``torch.inference_mode()``. From ``matvec``: ``NonFiniteCurvature`` where the loss at the weights is NaN
        or infinite, or a product is; before the first product, a model whose second backward pass misses part
        of the Hessian (`_check_second_derivatives`: a ``@once_differentiable`` custom Function, products that
        are not symmetric), and a ``UserWarning`` for a custom Function whose backward is constant in its inputs.
    """

    def __init__(self, model: nn.Module, data=None, *, loss_fn: Callable | None = None,
                 batch_size: int | None = None, max_samples: int | None = None, subset_seed: int = 0,
                 batches=None, layout: ParamLayout | None = None, target_key: str | int | None = "labels"):
        if not isinstance(model, nn.Module):
            raise LandscapeError(f"expected a torch.nn.Module, got {type(model).__name__}; pass the model itself")
        if torch.is_inference_mode_enabled():  # it said the loss "carries no gradient: drop any .detach()" (s36)
            raise LandscapeError(
                "a Hessian was asked for under torch.inference_mode(), where autograd takes no gradient at all (a "
                "Hessian-vector product takes two); expected a call outside that block: under torch.no_grad() it "
                "works (the products turn gradients on themselves)")
        positive_int("batch_size", batch_size, none="all samples in one pass")
        positive_int("max_samples", max_samples, none="all samples")
        model = unwrap_model(model)
        self.model = model
        with holding(model):  # not while another thread's compute_surface moves the weights (trial s35)
            self.layout = layout or ParamLayout.of(model)
            self.params = self.layout.tensors(model)
            check_finite(self.layout, self.params, ", so every Hessian-vector product would be too")
        self.progress: Callable[[int], None] | None = None
        self.dense_memo: dict | None = None  # set by lanczos.extreme_eigenpairs for one call (its dense fallback)
        if batches is None:
            if data is None:
                raise LandscapeError("HessianOperator needs data: pass (inputs, targets), a Dataset or a DataLoader")
            ev = read_data(data, max_samples=max_samples, subset_seed=subset_seed, target_key=target_key)
            non_finite = (ev.tree, "the data") if non_finite_leaves(ev.tree) else None  # kept where the loss leaves
            # them out (_check_non_finite_data)
            ev = ev.to(model_device(model))
            model_state = StateSnapshot(model)  # before its first call (choose_loss may call it)
            loss_fn, split, self.loss_note = choose_loss(model, ev, loss_fn)
            self.data_fingerprint = data_key(ev)  # what Spectrum.provenance names the data by
            loss_state = StateSnapshot(loss_fn)
            xb, yb = split(ev.slices(8)[0])
            # a model writing into its inputs, or a model or loss keeping state between calls, is refused here
            with eval_mode(model), torch.no_grad():
                out = _first_outputs(model, xb, keywords_hint(xb, ev.rule, target_key, model),
                                     lambda exc: order_hint(xb, yb, ev.rule, target_key, model, exc))
                check_model_stateless(model, xb, out, model_state)
                random_note = random_outputs_note(model, xb, RANDOM_EFFECT)
            if random_note:  # MC dropout: three runs gave λ_min -0.38, -0.41, -0.45, each "converged" (trial s34)
                warn_user(f"landscape_nb: {random_note}")
            if isinstance(loss_fn, DefaultLoss):
                loss_fn.check(out, ev.split()[1], ev.keys)
                probabilities = probability_outputs_note(out)
                if probabilities:
                    warn_user(f"landscape_nb: {probabilities}")
            check_mean_loss(loss_fn, out, yb, ev.keys)  # a scalar mean: a sum would follow batch_size
            # a function's hidden ignore_index and class weights: the targets its batches' means are over
            every = ev.split()[1]
            probed = ((probe_targets(loss_fn, out, yb, every).ignored, class_weights(loss_fn, out, yb, every))
                      if not isinstance(loss_fn, (DefaultLoss, OwnLoss)) else (None, None))
            refuse_sums(model, loss_fn, xb, yb, out, {})  # a model's own loss too; right and wrong predictions
            if holds_padding(yb, probed[0]):  # the first 8 all padding: a sum was 0 on both halves (trial s43)
                refuse_sums_spread(model, ev, split, loss_fn, {}, probed[0])
            _check_differentiable(model, loss_fn, xb, yb)
            check_fns_stateless(out, yb, {"loss_fn": loss_fn}, {"loss_fn": loss_state})
            check_padding(model, ev, loss_fn, split)  # a collate_fn padding per batch: one padding for all
            batches, kept = [split(t) for t in ev.slices(batch_size or ev.n)], None
            if len(batches) > 1:
                kept, equal = _kept_targets_rule(model, ev, split, loss_fn, batch_len(batches[0][0]), *probed)
                if equal is not None:  # values depend on the batching: compute_surface's and eigen_map's batches
                    batches = [split(t) for t in ev.slices(equal)]
                if kept is not None:  # named by Spectrum.provenance
                    self.loss_note = f"{self.loss_note}; its batches weighted by {kept_rule_words(kept)}"
                weighting = class_weighting(loss_fn, kept)
                if weighting is not None:  # a batch of classes weighted 0 alone: run with the next ones
                    batches = weighed_batches(ev, split, batch_size or ev.n, [weighting])
        else:  # made elsewhere (the eigen-map's Evaluator checked its own): what decides the values is checked
            kept = None
            batches = list(batches)
            if not batches:
                raise LandscapeError("batches=[]; expected a list of (inputs, targets) batches, or data= instead")
            non_finite = (batches, "the batches") if non_finite_leaves(batches) else None
            loss_fn = unwrap_compiled(loss_fn) or DefaultLoss()
            xb, yb = tree_map(lambda t: t[:8], batches[0])
            with eval_mode(model), torch.no_grad():
                out = _first_outputs(model, xb)
            check_mean_loss(loss_fn, out, yb)
            _check_differentiable(model, loss_fn, xb, yb)
        self.loss_fn = loss_fn
        self.batches = batches
        self.n_samples = sum(batch_len(b[0]) for b in self.batches)
        # each batch's share of the mean: of the targets the loss keeps (padded tokens: metrics.batch_denominator;
        # a function's or the model's own loss found to leave a padding label out: _kept_targets_rule)
        dens = [batch_denominator(self.loss_fn, yb) if kept is None else
                rule_weight(kept, xb, yb) for xb, yb in self.batches]
        if any(d is None for d in dens) or float(sum(dens)) == 0.0:
            dens = [batch_len(xb) for xb, _ in self.batches]
        self._shares = [float(d) / float(sum(dens)) for d in dens]
        if 0.0 in self._shares:  # a batch whose targets are all ignored has a NaN mean and no share: left out
            kept = [(b, share) for b, share in zip(self.batches, self._shares) if share > 0.0]
            self.batches, self._shares = [b for b, _ in kept], [share for _, share in kept]
        self.n_params = self.layout.n_params
        if self.dtype in (torch.bfloat16, torch.float16):
            warn_user(f"landscape_nb: the model's weights are {str(self.dtype).removeprefix('torch.')}, so each "
                      "Hessian-vector product is computed to about 1e-2 relative: eigenvalues, traces and "
                      "densities are no more accurate than that (a bf16 MLP's λ_min came back 2 % off, converged); "
                      "for more, evaluate a float32 copy (copy.deepcopy(model).float())")
        self.n_products = 0
        self._reuse = False  # within `reusing_graph`: the gradient graph of one batch, built once per weights
        self._graph: tuple | None = None  # (the weights' key, loss, gradients with their graph)
        self._checked = False  # `_check_second_derivatives`, before the first product
        if non_finite is not None:
            self._check_non_finite_data(*non_finite)

    def _check_non_finite_data(self, tree, what: str) -> None:
        """Data holding NaN or inf (``tree``, named ``what``) are kept, with a warning, where the loss and its
        gradient at the model are finite on every batch: a loss_fn that leaves them out, as ``compute_surface``
        keeps them (missing regression targets were refused here, trial s46); otherwise refused as
        ``data.check_finite_data`` refuses, naming the batch and the fix. The products are checked too
        (``NonFiniteCurvature``)."""
        with holding(self.model), eval_mode(self.model), torch.enable_grad(), second_order_formulas():
            for k, (xb, yb) in enumerate(self.batches):
                loss = self._loss(xb, yb)
                bad = "loss" if not bool(torch.isfinite(loss)) else None
                if bad is None:
                    grads = torch.autograd.grad(loss, self.params, allow_unused=True)
                    bad = None if all(bool(torch.isfinite(g).all()) for g in grads if g is not None) else "gradient"
                if bad is not None:
                    batch = f" on batch {k + 1} of {len(self.batches)}" if len(self.batches) > 1 else ""
                    check_finite_data(tree, what, why=(
                        f"the {bad} at the model itself is not finite{batch}, so every Hessian-vector product would "
                        "be NaN (a loss_fn that leaves them out by indexing, as ((out - y)[~y.isnan()] ** 2).mean() "
                        "does, is taken where every batch holds some values it keeps; torch.where(mask, (out - y) ** "
                        "2, 0) still passes NaN into the gradient)"))
        where = ", ".join(f"{what}{path}: {n}" for path, n in non_finite_leaves(tree)[:4])
        warn_user(f"landscape_nb: {what} hold non-finite values (NaN or inf; {where}); the loss and its gradient at "
                  "the model are finite on every batch (the model or loss_fn leaves them out), so they are kept; a "
                  "Hessian-vector product they reach still stops the run (NonFiniteCurvature)")

    @property
    def dtype(self) -> torch.dtype:
        """The least precise of the parameters' dtypes, which bounds the products' precision (the first's: a
        float64 scalar registered before bf16 layers drew a spectrum 4x too narrow, no bf16 warning, re-trial s57)."""
        return max((p.dtype for p in self.params), key=lambda t: torch.finfo(t).eps)

    def _loss(self, xb, yb) -> torch.Tensor:
        return self.loss_fn(call_model(self.model, xb), yb).reshape(())  # a one-element (1,) loss as a scalar

    def gradient(self) -> torch.Tensor:
        """The gradient of the mean loss, flat."""
        total = torch.zeros(self.n_params, dtype=torch.float64, device=self.params[0].device)
        with holding(self.model), eval_mode(self.model), torch.enable_grad(), second_order_formulas():
            for (xb, yb), share in zip(self.batches, self._shares):
                g = torch.autograd.grad(self._loss(xb, yb), self.params, allow_unused=True)
                total += _flat(g, self.params).double() * share
        return total

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` (flat, float64) by double backpropagation, summed over the batches."""
        v = torch.as_tensor(v)
        if v.numel() != self.n_params:
            got = f"an array of shape {tuple(v.shape)}" if v.ndim > 1 else f"a vector of {v.numel()} values"
            raise LandscapeError(f"{got}; expected one vector of {self.n_params} values (one per trainable value)"
                                 + (": for several vectors, call matvec on each column" if v.ndim > 1 else ""))
        if not bool(torch.isfinite(v).all()):  # its NaN product was blamed on the loss (trial s34)
            raise LandscapeError(f"the vector holds {int((~torch.isfinite(v)).sum())} NaN or infinite values of "
                                 f"{v.numel()}; expected finite values")
        if not self._checked:
            self._check_second_derivatives()
        total, loss_total = self._product(v)
        self.n_products += 1
        if not bool(torch.isfinite(loss_total) & torch.isfinite(total).all()):  # one host sync a product
            raise NonFiniteCurvature(self.n_products, float(loss_total))
        if self.progress is not None:
            self.progress(self.n_products)
        return total

    @contextlib.contextmanager
    def reusing_graph(self):
        """Within this block the products reuse one gradient graph: with the data in one batch, the loss and its
        gradient (``create_graph=True``) are computed once for the weights as they are, and each product is one
        backward pass through that graph (``retain_graph=True``, as PyHessian's products do) instead of a forward
        and two backward passes: 1.4-2.4 times faster for the zoo's digits models (ResNet-20 on 8 samples: 57 → 35 ms
        a product, one thread; ``benchmarks/bench_hessian.py``), the same values to the bit. For the many products of one Lanczos run, spectral
        density probe or trace estimate at fixed weights; the model is held (``params.holding``) meanwhile, and a
        product finds the graph built again where the weights, buffers or data changed (a tensor replaced, or
        written in place other than through ``.data``). Memory: the graph stays between products, as large as
        it is during one; with several batches (``batch_size`` given, to bound memory) nothing is kept. The
        graph is let go on leaving the block."""
        if len(self.batches) != 1 or self._reuse:
            yield
            return
        with holding(self.model):
            self._reuse = True
            try:
                yield
            finally:
                self._reuse, self._graph = False, None

    def _weights_key(self) -> tuple:
        """What the kept gradient graph was built at: each parameter's, buffer's and data tensor's storage and
        version counter (a view shares its base's, so the flat-vector writes of `params` bump it)."""
        tensors = [*self.params, *self.model.buffers(), *(t for _, t in tree_leaves(self.batches[0]))]
        return tuple((t.data_ptr(), t._version) for t in tensors if isinstance(t, torch.Tensor))

    def _kept_graph(self) -> tuple[torch.Tensor, tuple]:
        """(loss, gradients with their graph) at the weights as they are: the kept ones where they are still
        these weights' (`reusing_graph`), else computed (and kept)."""
        key = self._weights_key()
        if self._graph is None or self._graph[0] != key:
            self._graph = None  # the old graph let go before the new one is built
            self._graph = (key, *self._gradient_graph(*self.batches[0]))
        return self._graph[1], self._graph[2]

    def _gradient_graph(self, xb, yb) -> tuple[torch.Tensor, tuple]:
        """(loss, gradients with their graph, ``create_graph=True``) on one batch, in eval mode."""
        with eval_mode(self.model), torch.enable_grad():
            loss = self._loss(xb, yb)
            return loss.detach(), torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)

    def _product(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(H v, loss)``, both float64, not counted in ``n_products``."""
        parts = [u.to(dtype=p.dtype) for u, p in zip(self.layout.split(v.reshape(-1).to(self.params[0].device)),
                                                     self.params)]  # each its own parameter's dtype
        total = torch.zeros(self.n_params, dtype=torch.float64, device=self.params[0].device)
        loss_total = total.new_zeros(())  # the model held: another thread's compute_surface moved the weights under
        with holding(self.model), second_order_formulas():  # it (s35)
            for (xb, yb), share in zip(self.batches, self._shares):  # within `reusing_graph`: one batch, kept
                loss, grads = self._kept_graph() if self._reuse else self._gradient_graph(xb, yb)
                loss_total += loss.double() * share
                # H v = ∂(gᵀv)/∂w: through the gradients that depend on the weights, into every weight (a gradient
                # constant in its own weights still varies with others': a custom backward run in numpy)
                pairs = [(g, u) for g, u in zip(grads, parts) if g is not None and g.requires_grad]
                if not pairs:
                    continue  # the loss is linear in every parameter on this batch
                hv = torch.autograd.grad([g for g, _ in pairs], self.params, grad_outputs=[u for _, u in pairs],
                                         retain_graph=self._reuse, allow_unused=True)
                total += _flat(hv, self.params).double() * share
        return total, loss_total

    def _check_second_derivatives(self) -> None:
        """Refuse a model whose second backward pass misses part of the Hessian, before the first product. A
        custom ``autograd.Function`` whose backward is ``@once_differentiable``, or computed outside autograd, is
        a constant to that pass: its part of the Hessian was missing and λ_max came back 0.256 for 1.139,
        converged, with no word (trial s36). The first is refused by name; the others where the products are
        not those of a symmetric matrix (uᵀHv ≠ vᵀHu for random u, v: two products, once)."""
        self._checked = True
        loss, nodes = _custom_functions(self)
        custom = {node._forward_cls.__qualname__: getattr(node._forward_cls.backward, "__wrapped__", None) is not None
                  for node in nodes}  # each with whether its backward is @once_differentiable
        once = sorted(name for name, wrapped in custom.items() if wrapped)
        fix = ("give such a torch.autograd.Function a backward made of torch operations without "
               "@once_differentiable (or write the operation with torch operations), with no .detach(), numpy or "
               "torch.no_grad step in it")
        if once:
            raise LandscapeError(
                f"the model's graph holds custom autograd Functions whose backward is @once_differentiable "
                f"({', '.join(once)}): the second backward pass a Hessian-vector product needs takes them as "
                f"constants, so part of the Hessian would be missing from every eigenvalue, trace and density; "
                f"expected a backward that is itself differentiable: {fix}")
        constant = _constant_backwards(self, loss, nodes) if nodes else []
        if constant:  # elementwise: the term left out is symmetric, so the products below cannot show it (s36)
            warn_user(
                f"landscape_nb: the backward of the custom autograd Functions {', '.join(constant)} does not depend "
                "on their inputs through differentiable operations, so the Hessian counts their second derivative "
                "as zero: right for a piecewise-linear operation (a custom ReLU, a straight-through estimator), "
                "wrong for a smooth one (tanh, GELU) whose backward runs in numpy, .detach() or torch.no_grad (a "
                "tanh's λ_min came back 11 % off): write such a backward with torch operations on the saved "
                "tensors")
        g = torch.Generator().manual_seed(0)
        u, v = (torch.randn(self.n_params, generator=g, dtype=torch.float64) for _ in range(2))
        hu, hv = self._product(u)[0].cpu(), self._product(v)[0].cpu()
        a, b = float(u @ hv), float(v @ hu)
        scale = float(u.norm() * hv.norm() + v.norm() * hu.norm()) / 2
        tol = max(1e-3, 16 * torch.finfo(self.dtype).eps)  # fp32 products agree to ~1e-6 of the scale
        if not (math.isfinite(a) and math.isfinite(b) and scale > 0) or abs(a - b) <= tol * scale:
            return  # NaN: the first product says so (NonFiniteCurvature)
        if abs(float(v @ self._product(u)[0].cpu()) - b) > tol * scale:
            return  # a model sampling at random (MC dropout): its products differ each time, as it was told
        named = f" (custom autograd Functions in the model's graph: {', '.join(sorted(custom))})" if custom else ""
        raise LandscapeError(
            f"the Hessian-vector products of this model are not those of a symmetric matrix (uᵀHv = {a:.4g}, "
            f"vᵀHu = {b:.4g} for two random vectors; a Hessian is symmetric), so part of the second derivative is "
            "missing: an operation whose backward is not itself differentiable counts as a constant in the second "
            f"backward pass{named}; expected a model whose backward is differentiable torch operations: {fix}")

    def as_linear_operator(self, shift: float = 0.0, sign: float = 1.0):
        """``sign · (H − shift·I)`` as a float64 scipy ``LinearOperator`` on numpy vectors (the one the
        Lanczos solvers use, ``lanczos._Operator``)."""
        return _Operator(self, shift, sign).linear_operator()

    def dense(self, max_params: int = DENSE_FALLBACK) -> np.ndarray:
        """The full Hessian (n_params²), one product per column; only for small models."""
        if self.n_params > max_params:
            raise LandscapeError(f"a dense Hessian of {self.n_params}² values was asked; expected at most "
                                 f"{max_params} parameters: use hessian_eigenvalues / hessian_trace instead")
        eye = torch.eye(self.n_params, dtype=torch.float64)
        with self.reusing_graph():  # n products at the same weights
            return torch.stack([self.matvec(e) for e in eye], dim=1).cpu().numpy()


def _custom_functions(op: HessianOperator) -> tuple[Any, list]:
    """The loss on the first batch (None where the model raised: the first product names it) and the nodes of
    custom ``torch.autograd.Function`` classes in its graph."""
    xb, yb = op.batches[0]
    try:
        with eval_mode(op.model), torch.enable_grad(), second_order_formulas():
            loss = op._loss(xb, yb)
    except Exception:  # noqa: BLE001 - the model's own error: the first product names it (user_errors)
        return None, []
    return loss, [node for node in _graph(getattr(loss, "grad_fn", None)) if getattr(node, "_forward_cls", None)]


def _graph(start, stop=frozenset()):
    """The autograd nodes reachable from ``start`` (a ``grad_fn``, or None), each once, not going through the
    nodes in ``stop``."""
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node is None or node in seen or node in stop:
            continue
        seen.add(node)
        yield node
        stack.extend(nxt for nxt, _ in node.next_functions)


def _constant_backwards(op: HessianOperator, loss, nodes: list) -> list[str]:
    """The custom Functions among ``nodes`` whose backward's result does not depend, through differentiable
    operations, on the Function's inputs or outputs (only on the incoming gradient): its second derivative
    counts as zero. Found by one gradient with ``create_graph=True``, each node's backward result then walked
    back, the incoming gradient's graph left out, for the nodes that made the Function's inputs."""
    captured = {}

    def keep(node):
        return lambda grad_inputs, grad_outputs: captured.__setitem__(node, (grad_inputs, grad_outputs))

    handles = [node.register_hook(keep(node)) for node in nodes]
    try:
        with eval_mode(op.model), torch.enable_grad(), second_order_formulas():
            torch.autograd.grad(loss, op.params, create_graph=True, allow_unused=True)
    except Exception:  # noqa: BLE001 - the products say what fails
        return []
    finally:
        for handle in handles:
            handle.remove()
    constant = set()
    for node, (grad_inputs, grad_outputs) in captured.items():
        stop = {g.grad_fn for g in grad_outputs if isinstance(g, torch.Tensor) and g.grad_fn is not None}
        for (producer, _), grad in zip(node.next_functions, grad_inputs):
            if producer is None or grad is None:
                continue  # an input that needs no gradient (the data)
            if not any(at is producer for at in _graph(grad.grad_fn, stop)):
                constant.add(node._forward_cls.__qualname__)
    return sorted(constant)


#: what a model that samples at random does to a Hessian (`statecheck.random_outputs_note`)
RANDOM_EFFECT = ("each Hessian-vector product sees another draw: eigenvalues, traces and densities hold that noise "
                 "(Lanczos may still say converged)")


def _check_differentiable(model: nn.Module, loss_fn: Callable, xb, yb) -> None:
    """Refuse a ``loss_fn`` whose value carries no gradient of the weights (outputs ``.detach()``-ed, a loss
    computed in numpy, ``.item()`` wrapped in a tensor): every Hessian-vector product needs one. torch said
    only "element 0 of tensors does not require grad" from its autograd (trial X)."""
    try:
        with eval_mode(model), torch.enable_grad(), second_order_formulas():
            loss = loss_fn(call_model(model, xb), yb)
    except Exception:  # noqa: BLE001 - the model's own error: the first product names it (user_errors)
        return
    if isinstance(loss, torch.Tensor) and not loss.requires_grad:
        raise LandscapeError(f"loss_fn returned a loss that carries no gradient of the model's weights ("
                             f"{describe(loss)}, requires_grad=False); expected a differentiable function of "
                             "the outputs: a Hessian needs its second derivatives. Drop any .detach(), .item() or "
                             "numpy step in it (torch.no_grad inside it does the same)")


def _kept_targets_rule(model: nn.Module, ev, split: Callable, loss_fn: Callable, size: int,
                       probed_ignore: int | None, probed_weights: torch.Tensor | None) -> tuple[tuple | None, int | None]:
    """``(rule, equal)``: how to weigh the losses of batches of ``size`` so that their weighted mean is the loss
    over the whole set, and None, or None and the size of the batches to run where none does (None where
    that is ``size``: the batches as given). ``rule``: None for
    by samples (or by the targets ``metrics.batch_denominator`` knows a loss keeps), or a rule of
    ``evaluate.kept_rules`` where the loss is found to be a mean over the targets other than a padding label or
    weighted by class (a function's hidden ``ignore_index`` or ``weight=``, a model's own loss over labels padded
    with -100), as ``compute_surface`` weighs its batches (``Evaluator._kept_mean``). Checked at the current
    weights on up to 256 samples spread over the set against two parts of them, for each split of
    ``evaluate.split_positions``; not for a model whose outputs are random. Where neither fits (a normalisation
    by the batch, outputs that depend on the rest of the batch) warns (``UserWarning``): the Hessian is then that
    of the sample-weighted mean of ``equal``'s near-equal batches (``evaluate.near_equal_size``), batched as
    ``compute_surface`` and ``eigen_map`` batch such a model, so that all give the same values. ``probed_ignore``
    and ``probed_weights``: what the probes of a loss function found (``metrics.probe_targets``,
    ``metrics.class_weights``), None for none."""
    n = ev.n
    m = min(n, SPREAD_SAMPLES, max(size, CHECKED_AT_LEAST))
    if m < 4:
        return None, None
    device = tree_leaves(ev.tree)[0][1].device
    (xw, yw), pairs = spread_splits(ev, split, m, device, probed_ignore)
    tol = 2e-6 if device.type == "cpu" else 5e-5  # as Evaluator's: fp32 sums in another order
    tol = max(tol, 8 * torch.finfo(model_dtype(model)).eps)  # a bf16 model's losses round to ~1e-2
    with eval_mode(model), torch.no_grad():
        whole = float(loss_fn(call_model(model, xw), yw))
        if whole != float(loss_fn(call_model(model, xw), yw)) or math.isnan(whole):
            return None, None  # random outputs: nothing to compare
        triples = [(whole, *(float(loss_fn(call_model(model, xb), yb)) for xb, yb in pair)) for pair in pairs]
    weights = [part_weights(loss_fn, pair, m, at) for pair, at in zip(pairs, split_positions(m))]
    disagreement = first_disagreement(*judged(triples, weights, class_weighting(loss_fn) is not None), tol)
    chunks = None
    if disagreement is None:
        if weights[0][2]:  # weights known: exact
            return None, None
        chunks = set_chunks(model, ev, split, loss_fn, size, device)[0]
        off = fits_every_chunk(chunks, None, tol)  # the whole set's chunks too, as compute_surface's (trial s47)
        if off is None:
            return None, None
        disagreement = (off[0], off[1], False)
    whole, mean, known = disagreement
    if not known:
        for rule in kept_mean_rules(triples, pairs, tol, kept_rules(pairs, probed_ignore, probed_weights)):
            chunks = set_chunks(model, ev, split, loss_fn, size, device)[0] if chunks is None else chunks
            if fits_every_chunk(chunks, rule, tol) is None:
                return rule, None
    equal = near_equal_size(n, size)
    spread = (f" (near-equal batches of {equal}, none larger than batch_size={size}, as compute_surface and "
              "eigen_map batch them, so that no short tail batch weighs its samples more)" if equal != size else "")
    if known:  # an exact mean of what it averages over: the outputs moved (trial s53: the loss was blamed)
        why = (f"{OUTPUTS_MOVE}: the loss is {whole:.7g} on {m} samples spread over the set, "
               f"{mean:.7g} from two parts of them run apart")
        fix = OUTPUTS_FIX
    else:
        why = ("the loss on a batch is not the sample-weighted mean of its parts' values "
               f"({whole:.7g} on {m} samples spread over the set, {mean:.7g} from two parts of them, nor a mean over "
               "the targets other than a padding label or weighted by class: e.g. a normalisation by the batch)")
        fix = f"a loss whose batches' sample-weighted mean is it: {MEAN_LOSS_FIX}"
    warn_user(
        f"landscape_nb: {why}, so with batch_size={size} the Hessian is that of the sample-weighted mean of "
        f"{-(-n // size)} batches' losses{spread}, {IN_ORDER}, not of the loss over all {n} samples: pass "
        f"batch_size=None (one pass) for that, or {fix}")
    return None, (equal if equal != size else None)


def _first_outputs(model: nn.Module, xb, hint: str = "", hint_of: Callable | None = None):
    """The model's outputs on its first samples (in the caller's eval mode and no_grad), the data kept as
    they were; an error of the model as a ``LandscapeError`` saying so (and ``hint``, e.g. ``keywords_hint``,
    and ``hint_of(error)``, e.g. ``data.order_hint``)."""
    try:
        return run_checking_inputs(model, xb)
    except LandscapeError:
        raise
    except Exception as exc:  # the user's model decides what it rejects
        from .data import dtype_hint

        raise LandscapeError(f"the model ({type(model).__name__}) raised {type(exc).__name__}: {one_line(exc)} "
                             f"on the first {batch_len(xb)} samples{dtype_hint(xb, model, exc)}{hint}"
                             f"{hint_of(exc) if hint_of else ''}") from exc


def math_attention():
    """``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``: ``scaled_dot_product_attention`` by its
    reference formula, which has a double backward (the fused kernels have none)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: the older switch (CPU attention there has no fused kernel)
        return torch.backends.cuda.sdp_kernel(enable_flash=False, enable_math=True, enable_mem_efficient=False)
    return sdpa_kernel(SDPBackend.MATH)


class _WeightNormByFormula(TorchFunctionMode):
    """``torch._weight_norm(v, g, dim)`` (both ``nn.utils.parametrizations.weight_norm`` and the older
    ``nn.utils.weight_norm`` call it) computed as its definition, ``v · g / ‖v‖`` with the norm over every
    dimension but ``dim`` (Salimans & Kingma 2016): the fused kernel's double backward is wrong for
    ``dim`` other than None in torch 2.13 on the CPU (Hessian-vector products off by 23 %, eigenvalues by
    5 %, against finite differences of the gradient), the formula's is exact. The forward values agree."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch._weight_norm:
            named = {**dict(zip(("v", "g", "dim"), args)), **kwargs}
            v, g, dim = named["v"], named["g"], named.get("dim", 0)
            return v * (g / torch.norm_except_dim(v, 2, dim))
        return func(*args, **kwargs)


@contextlib.contextmanager
def second_order_formulas():
    """While Hessian-vector products run: the operations whose fused kernels have no (or a wrong) double
    backward, computed by their reference formulas: attention (``math_attention``) and weight norm
    (``_WeightNormByFormula``)."""
    with math_attention(), _WeightNormByFormula():
        yield


@contextlib.contextmanager
def _progress(op: HessianOperator, show: bool, desc: str, loss_fn: Callable | None):
    """While ``desc`` runs its products: a tqdm.auto bar counting them while ``show``; and an error
    the user's model or ``loss_fn`` raises, as ``user_errors`` says."""
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(desc=desc, unit="HVP")
        start = op.n_products
        op.progress = lambda n: bar.update(n - start - bar.n)
    try:
        with user_errors(op, loss_fn, desc):
            yield
    finally:
        if bar is not None:
            op.progress = None
            bar.close()


def user_errors(op: HessianOperator, loss_fn: Callable | None, what: str):
    """Re-raise an exception the user's model or ``loss_fn`` raises during ``op``'s products as a
    ``LandscapeError`` naming the function and the product (``statecheck.naming_user_errors``), chained to
    it, as ``compute_surface`` does; other exceptions pass unchanged."""
    return naming_user_errors(op.model, loss_fn, lambda: f"in Hessian-vector product {op.n_products + 1} of {what}",
                              "nothing was kept; the model's weights are unchanged")


class EigenvalueResult(dict):
    """``{"max": array, "min": array}`` with the work done: ``n_products`` (Hessian-vector
    products), ``converged`` (ARPACK reached ``tol`` for every value asked) and ``seconds``."""

    n_products: int = 0
    converged: bool = True
    seconds: float = 0.0


def _flat(grads, params) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def check_lanczos_options(tol, max_iter, seed) -> None:
    """The Lanczos options every eigenvalue entry takes: ``tol`` a finite number ≥ 0, ``max_iter`` a positive
    integer or None, ``seed`` an integer ≥ 0 (ARPACK took a negative ``tol`` or ``max_iter=0`` silently, and
    failed inside its Fortran code on a float ``k`` or ``tol``)."""
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not math.isfinite(tol) or tol < 0:
        raise LandscapeError(f"tol={short_repr(tol)}; expected a relative tolerance ≥ 0, e.g. tol=1e-3 (smaller is "
                             "more exact and slower; 0 means machine precision)")
    if tol >= 1:
        raise LandscapeError(f"tol={short_repr(tol)}; expected a relative tolerance below 1 (1 or more allows any "
                             "value, 100 % off), e.g. tol=1e-3 (smaller is more exact and slower)")
    positive_int("max_iter", max_iter, none="the solver's default, at least 100")
    seed_int(seed, "the Lanczos start vector")


def _check_rank(op: HessianOperator, rank: int, what: str, example: str) -> None:
    """Refuse asking for more eigenvalues than the Hessian has (one per trainable parameter)."""
    if rank > op.n_params:
        raise LandscapeError(f"{what}, but the model has {op.n_params} trainable parameters, so its Hessian has "
                             f"{op.n_params} eigenvalues; expected at most {op.n_params}, e.g. {example}")


def _weights_put_back(fn):
    """``fn(model, ...)`` with the model's weights, buffers and modes put back after it (`params.restoring`): a forward
    that writes its own weights (nn.Embedding(max_norm=...), a clamp_ in forward) left them written, where the
    README says every computation restores them (re-trial s57)."""
    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        with weights_put_back(model):
            return fn(model, *args, **kwargs)
    return wrapper


@_weights_put_back
def hessian_eigenvalues(model: nn.Module, data, loss_fn=None, *, k: int = 1, which: str = "both",
                        tol: float = 1e-3, max_iter: int | None = None, seed: int = 0,
                        max_samples: int | None = None, batch_size: int | None = None,
                        target_key: str | int | None = "labels", progress: bool = False) -> EigenvalueResult:
    """The ``k`` largest (``which="max"``), most negative (``"min"``) or both eigenvalues.

    >>> lnb.hessian_eigenvalues(model, (x, y), k=3)   # {"max": array([...]), "min": array([...])}

    Lanczos (ARPACK) on Hessian-vector products; the most negative ones come from the shifted
    operator ``λ_max·I − H``, so they converge like extreme eigenvalues, then again from their
    Ritz vectors where that holds them to ``tol`` of themselves. A repeated eigenvalue comes with
    its copies (for k ≥ 2, a search of the operator deflated by the vectors found); a Hessian
    that is exactly zero (a loss linear in the weights) gives zeros.

    Parameters
    ----------
    model : torch.nn.Module
        The network; the Hessian is that of the mean loss over ``data`` with respect to its
        trainable parameters, in eval mode, at its current weights.
    data : (inputs, targets), Dataset, DataLoader or zero-argument callable
        Evaluation data, samples along the first axis.
    loss_fn : callable (outputs, targets) -> scalar mean, optional
        Default cross-entropy.
    k : int
        How many eigenvalues of each end: 1 up to the number of trainable parameters (then all).
    which : {"max", "min", "both"}
    tol : float
        Relative accuracy, ≥ 0 (0: as fine as the arithmetic resolves): each largest λ is within ``tol·|λ|`` of an eigenvalue of the Hessian
        (Lanczos' residual ``‖Hv − λv‖`` is at most that); each most negative within
        ``max(tol·|λ|, ρ·(λ_max − λ_min))``, ρ what the products resolve: 1e-12 for float64
        models, about 1e-6 for float32 ones and from 100,000 parameters on (where ``tol`` is at
        least 1e-6). The smallest cost more where |λ_min| ≪ λ_max: near a minimum, for k = 1, 1–42
        more products on the zoo's small models, 260 on a 120k-parameter MLP; near 0 in a dense
        cluster (a convex point) it can take thousands, so the run that tightens them stops at 10
        times the products of the first (``converged`` False then; ``max_iter`` lifts the limit). A
        model of at most 4,096 parameters (``lanczos.DENSE_FALLBACK``) then gets its dense Hessian
        instead, n more products and exact, unless ``max_iter`` is given.
    max_iter : int, optional
        Lanczos restarts allowed to each run, a positive integer (default ``max(100, 10·ncv)``).
    seed : int
        Seed of the Lanczos start vector, an integer ≥ 0.
    max_samples : int, optional
        Use a fixed-seed subset of this many samples (fewer samples: cheaper products).
    batch_size : int, optional
        Samples per forward/backward pass (default: all at once); changes memory, not values (a
        loss summed over the batch, whose values would follow it, is refused; a mean over kept
        tokens, values not missing, or the like has its batches weighted by those, as
        ``compute_surface``'s; any other mean gets a ``UserWarning``: the batches are then weighted
        by samples).
    target_key : str or int, optional
        Where the targets are in dict (or long tuple) batches; see ``data.read_data``.
    progress : bool
        Show a tqdm.auto bar counting Hessian-vector products.

    Returns
    -------
    EigenvalueResult
        A dict: ``"max"``: array (k,), descending; ``"min"``: array (k,), ascending (most negative
        first). Units: loss per weight² (the weights' own units). NaN where ARPACK found no value at
        all within ``max_iter``; a value short of its accuracy is as far as it got, with a
        ``UserWarning``. Attributes ``n_products``, ``converged`` (True: every value reached the accuracy
        ``tol`` promises within ``max_iter``; False: some did not, e.g. NaN, or a smallest known
        only to about ``tol·(λ_max − λ_min)``) and ``seconds`` report the work.

    Notes
    -----
    Memory (besides the model's double-backward graph for one batch on its device): from
    ``DEVICE_LANCZOS_MIN_PARAMS`` (100,000) parameters on, a thick-restart Lanczos keeps its
    ``m + 1`` basis vectors (``m = max(2k + 1, 20)``) in float32 on the model's device:
    ``4·(m + 1)`` bytes per parameter (84 for k ≤ 9) plus about 24 for the product's float64
    vectors, with ``tol`` at least 1e-6; smaller models use ARPACK, ``8·(m + 3)`` bytes per
    parameter (184; 344 for a run that tightens the smallest) in float64 on the CPU.

    Raises
    ------
    LandscapeError
        For an unknown ``which``; a ``k`` that is not a positive integer or exceeds the model's number of
        trainable parameters (the Hessian has no more eigenvalues); a negative or non-finite ``tol``; a
        ``max_iter`` that is not a positive integer; a ``seed`` that is not an integer ≥ 0; and for what
        ``HessianOperator`` refuses: a model that is not an ``nn.Module``, data not accepted or holding
        NaN/inf, a loss that is not a scalar mean over the batch (``reduction='none'`` or ``'sum'``); and
        an exception the model or ``loss_fn`` raises during the products, named in one line and chained
        as ``__cause__`` (``user_errors``); ``NonFiniteCurvature`` where the loss at the weights is NaN or
        infinite, or a Hessian-vector product is.

    References
    ----------
    .. [1] H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the Loss Landscape of
       Neural Nets", NeurIPS 2018 (section 7: Hessian eigenvalues and the non-convexity map).
    """
    if which not in ("max", "min", "both"):
        raise LandscapeError(f"which={which!r}; expected 'max', 'min' or 'both'")
    positive_int("k", k)
    check_lanczos_options(tol, max_iter, seed)
    t0 = time.perf_counter()
    op = HessianOperator(model, data, loss_fn=loss_fn, max_samples=max_samples, batch_size=batch_size,
                         target_key=target_key)
    _check_rank(op, k, f"k={k} eigenvalues of each end were asked", f"k={op.n_params} for all of them")
    with _progress(op, progress, "Hessian eigenvalues", loss_fn), op.reusing_graph():
        top, bottom = extreme_eigenpairs(op, n_max=k if which != "min" else 1, n_min=k if which != "max" else 0,
                                         tol=tol, max_iter=max_iter, seed=seed)
    _warn_not_converged("hessian_eigenvalues", top if which != "min" else None, bottom, tol, max_iter, op)
    out = EigenvalueResult()
    if which != "min":
        out["max"] = top.values
    if bottom is not None:
        out["min"] = bottom.values
    out.n_products = op.n_products
    out.converged = bool(top.converged and (bottom is None or bottom.converged))
    out.seconds = time.perf_counter() - t0
    return out


def _parse_which(which) -> list[tuple[str, int]]:
    if isinstance(which, str):
        which = (which,)
    out = []
    for w in which:
        kind, rank = str(w)[:3], str(w)[3:] or "1"
        if kind not in ("max", "min") or not rank.isdigit() or int(rank) < 1:
            raise LandscapeError(f"which entry {w!r}; expected 'max', 'min', or e.g. 'max2' for the second largest")
        out.append((kind, int(rank)))
    if not 1 <= len(out) <= 3 or len(set(out)) != len(out):
        raise LandscapeError(f"which={which!r}; expected one or two different entries (three for a volume), "
                             "e.g. ('max', 'min') or ('max', 'max2', 'max3')")
    return out


@_weights_put_back
def hessian_directions(model: nn.Module, data, which=("max", "min"), *, loss_fn=None, tol: float = 1e-3,
                       max_iter: int | None = None, seed: int = 0, max_samples: int | None = None,
                       batch_size: int | None = None, target_key: str | int | None = "labels",
                       progress: bool = False, data_name: str | None = None) -> Directions:
    """Unit Hessian eigenvectors at ``model``'s weights, to use as the axes of a line or plane.

    >>> d = lnb.hessian_directions(model, (x, y), which=("max", "min"))
    >>> surf = lnb.compute_surface(model, (x, y), d, x=(-1, 1, 41), y=(-1, 1, 41))

    Random planes see almost only positive curvature even at saddle points; the eigenvectors
    of the largest and most negative eigenvalues show the extremes [2]_.

    Parameters
    ----------
    model : torch.nn.Module
        The network; the Hessian is that of the mean loss over ``data`` with respect to its
        trainable parameters, in eval mode, at its current weights.
    data : (inputs, targets), Dataset, DataLoader or zero-argument callable
        Evaluation data, samples along the first axis.
    loss_fn : callable (outputs, targets) -> scalar mean, optional
        Default cross-entropy.
    which : str or sequence of one to three str
        ``"max"`` (largest eigenvalue), ``"min"`` (most negative), ``"max2"``, ``"min2"``...
        (k-th, k up to the number of trainable parameters); one entry gives a line, two a plane,
        three a volume (e.g. the top 3).
    tol, max_iter, seed
        As in ``hessian_eigenvalues``: each largest eigenvalue within ``tol·|λ|``, each most
        negative within ``max(tol·|λ|, ρ·(λ_max − λ_min))`` (ρ: 1e-12 float64, ~1e-6 float32).
    max_samples : int, optional
        Use a fixed-seed subset of this many samples (fewer samples: cheaper products).
    batch_size : int, optional
        Samples per forward/backward pass (default: all at once); changes memory, not values (a
        loss summed over the batch, whose values would follow it, is refused; a mean over kept
        tokens, values not missing, or the like has its batches weighted by those, as
        ``compute_surface``'s; any other mean gets a ``UserWarning``: the batches are then weighted
        by samples).
    target_key : str or int, optional
        Where the targets are in dict (or long tuple) batches; see ``data.read_data``.
    progress : bool
        Show a tqdm.auto bar counting Hessian-vector products.
    data_name : str, optional
        What ``data`` is (e.g. ``"training"``), named in the axis labels: "(on 512 training samples)".
        The surface is often another split's loss, whose curvature these eigenvalues are not.

    Returns
    -------
    Directions
        Vectors of shape (len(which), n_params), norm 1 (coordinates are in weight units), the
        sign fixed so the largest-magnitude entry is positive; ``provenance["eigenvalues"]``
        holds the eigenvalues and the axis labels name them, ``n_hvp``, ``converged`` and
        ``seconds`` the work done.

    Raises
    ------
    LandscapeError
        For a malformed or repeated ``which`` entry, or one whose rank exceeds the model's number of
        trainable parameters; ``tol``, ``max_iter`` or ``seed`` refused as in ``hessian_eigenvalues``;
        and for what ``HessianOperator`` refuses: data not accepted or holding NaN/inf, a loss that is
        not a scalar mean over the batch (``reduction='none'`` or ``'sum'``); and an exception the
        model or ``loss_fn`` raises during the products, chained (``user_errors``); ``NonFiniteCurvature``
        where the loss at the weights is NaN or infinite, or a Hessian-vector product is.

    References
    ----------
    .. [1] H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the Loss Landscape of
       Neural Nets", NeurIPS 2018 (section 7: Hessian eigenvalues and the non-convexity map).
    .. [2] L. Böttcher, G. Wheeler, "Visualizing high-dimensional loss landscapes with Hessian
       directions", 2022 (arXiv:2208.13219).
    """
    spec = _parse_which(which)
    check_lanczos_options(tol, max_iter, seed)
    n_max = max([r for k, r in spec if k == "max"], default=0)
    n_min = max([r for k, r in spec if k == "min"], default=0)
    t0 = time.perf_counter()
    op = HessianOperator(model, data, loss_fn=loss_fn, max_samples=max_samples, batch_size=batch_size,
                         target_key=target_key)
    for kind, rank in spec:
        end = "largest" if kind == "max" else "most negative"
        _check_rank(op, rank, f"which entry '{kind}{rank}' asks for eigenvalue {rank} counted from the {end}",
                    f"'{kind}{op.n_params}'")
    with _progress(op, progress, "Hessian directions", loss_fn), op.reusing_graph():
        top, bottom = extreme_eigenpairs(op, n_max=max(n_max, 1), n_min=n_min, tol=tol, max_iter=max_iter,
                                         seed=seed)
    _warn_not_converged("hessian_directions", top if n_max else None, bottom, tol, max_iter, op)
    rows, values, labels = [], [], []
    for kind, rank in spec:
        pairs = top if kind == "max" else bottom
        v = pairs.vectors[rank - 1]
        v = v * torch.sign(v[v.abs().argmax()])
        rows.append(v / v.norm())
        values.append(float(pairs.values[rank - 1]))
        name = "λ_max" if (kind, rank) == ("max", 1) else "λ_min" if (kind, rank) == ("min", 1) else f"λ_{kind}{rank}"
        samples = f"{op.n_samples} {data_name} samples" if data_name else f"{op.n_samples} samples"
        labels.append(f"Hessian eigenvector {name} = {values[-1]:.4g} (on {samples})")
    cosine_before = _orthonormal_rows(rows, values, tol)
    prov = {"scheme": "hessian", "which": [f"{k}{r}" for k, r in spec], "eigenvalues": values,
            **({"orthogonalized": True, "cosine_max_before": cosine_before} if cosine_before else {}),
            "hessian_samples": op.n_samples,  # the eigenvalues are of the loss on these, not the surface's data
            "x_label": labels[0], **({"y_label": labels[1]} if len(labels) > 1 else {}),
            **({"z_label": labels[2]} if len(labels) > 2 else {}),
            "converged": bool(top.converged and (bottom is None or bottom.converged)),
            "n_hvp": op.n_products, "seconds": time.perf_counter() - t0, "norms": [1.0] * len(rows),
            # another model's eigenvectors, labelled with its eigenvalues, were taken with no word (trial s38)
            **centre_of(model)}
    return Directions(torch.stack(rows), op.layout, prov)  # float64 for a float64 model below DEVICE_LANCZOS_MIN_PARAMS


def _orthonormal_rows(rows: list[torch.Tensor], values: list[float], tol: float) -> float:
    """Make ``rows`` (unit eigenvectors, in place) orthonormal where they are not: vectors from both ends of the
    spectrum overlap where λ_max = λ_min (a Hessian c·I or 0, every vector an eigenvector), and a plane on them
    was drawn on skewed axes (cosine 0.63, trial s49). Each row loses its components along the rows before it, a
    vector of the same eigenspace where their eigenvalues agree; a UserWarning says where all are equal. Returns
    the largest |cosine| before, 0.0 where they already were orthonormal (to 1e-6)."""
    cosine = _max_offdiag(_cosines(torch.stack(rows)))
    if cosine <= 1e-6:
        return 0.0
    if max(values) - min(values) <= tol * max(abs(v) for v in values):
        warn_user(f"landscape_nb.hessian_directions: the eigenvalues asked for are all {values[0]:.4g}: the curvature "
                  "is the same along these directions (a Hessian c·I, or 0, has every vector as an eigenvector), so "
                  "the axes are one orthonormal pair of them among many")
    for i in range(1, len(rows)):
        v = rows[i].double()
        for u in rows[:i]:
            v = v - (u.double() @ v) * u.double()
        if float(v.norm()) < 1e-3:
            raise LandscapeError(f"hessian_directions: eigenvector {i + 1} of {len(rows)} lies along the ones before "
                                 "it, so they span no plane; expected distinct eigenvectors: ask for other ones (e.g. "
                                 "which=('max', 'max2')), or use random_directions where the curvature is the same "
                                 "in every direction")
        rows[i] = (v / v.norm()).to(rows[i].dtype)
    return cosine


def _warn_not_converged(caller: str, top: Eigenpairs | None, bottom: Eigenpairs | None, tol: float,
                        max_iter: int | None, op: HessianOperator) -> None:
    """A ``UserWarning`` for each end whose eigenpairs Lanczos did not hold to their accuracy (``converged``
    False): the values returned are as far as it got (a λ_min near 0 came back 7–50 % off at the default
    limit, seen on 1.2k-parameter MLPs near a minimum), which only the flag said."""
    for name, pairs in (("λ_max", top), ("λ_min", bottom)):
        if pairs is None or pairs.converged:
            continue
        values = ", ".join(f"{v:.6g}" for v in np.asarray(pairs.values)[:4])
        limit = f"max_iter={max_iter} restarts" if max_iter else "the default limit"
        fix = (f"Leave out max_iter: a model of {op.n_params} parameters then gets its dense Hessian where Lanczos "
               "falls short, exact" if max_iter and op.n_params <= DENSE_FALLBACK else
               "Pass a larger max_iter (Lanczos restarts, e.g. max_iter=1000) or a looser tol")
        warn_user(
            f"landscape_nb.{caller}: {name} = [{values}] did not reach tol={tol:g} of itself within {limit} "
            f"({op.n_products} Hessian-vector products in all): it is as far as Lanczos got and may be off by far "
            f"more (a λ_min in a cluster of near-equal eigenvalues came back 21 % off; converged=False). {fix}")


# -------------------------------------------------------------- trace ----

# standard errors that hold a mean of n probes' quadratic forms within a two-sided 99.73 % interval when one
# eigenvalue with a dense eigenvector dominates (each probe λ·χ²₁, the most skewed case): the 99.73 % quantile of
# |t| for n draws of χ²₁, 10⁶ runs a count (benchmarks/calibrate_probe_factor.py prints it again). Student's t
# assumes normal probes: at 8 probes its 4.5 standard errors missed in 5.8 % of runs, not 0.27 % (trial s53: a
# 55-parameter MLP's trace outside its tolerance in 2.3 % of seeds)
PROBE_FACTORS = {2: 1795.04, 3: 150.05, 4: 58.16, 5: 35.08, 6: 25.02, 7: 19.69, 8: 16.45, 10: 12.63, 12: 10.58,
                 14: 9.31, 16: 8.44, 20: 7.26, 24: 6.54, 28: 6.05, 32: 5.7, 40: 5.2, 48: 4.87, 56: 4.64, 64: 4.45,
                 80: 4.21, 96: 4.05, 112: 3.91, 128: 3.8, 160: 3.66, 192: 3.56, 224: 3.48, 256: 3.43, 320: 3.37,
                 384: 3.3, 448: 3.25, 512: 3.21, 640: 3.18, 768: 3.17, 896: 3.14, 1024: 3.1}


def probe_factor(n: int) -> float:
    """Standard errors of a mean of ``n`` probes (Hutchinson's ``zᵀHz``, a density's ``vᵀHᵏv``) in a two-sided
    interval that holds the truth in at least 99.73 % of runs (the normal's ±3σ) whatever the eigenvalues: its
    width is that of the most skewed probes, one dominant eigenvalue with a dense eigenvector, each probe
    ``λ·χ²₁``. Not where a dominant eigenvector lies on a handful of weights, so that Rademacher probes can all
    come out alike (``u = (e₁ + e₂)/√2``: all 8 probes 0, standard error 0, in 0.4 % of runs); a network's
    are spread over many (`PROBE_FACTORS`; between its counts interpolated in log-log, beyond 1024 probes
    ``3 + (k₁₀₂₄ − 3)·√(1024/n)``, the skew's 1/√n decay). 16.4 for 8 probes, 8.4 for 16, 4.5 for 64, 3.4 for
    256; Student's t (4.5, 3.6, 3.1, 3.0), which assumes normal probes, covered 94 % at 8. NaN for fewer than 2.

    Hutchinson 1989 (the estimator); the χ²₁ bound: a rank-one Hessian ``λuuᵀ`` gives ``zᵀHz = λ(z·u)²``."""
    if n < 2:
        return math.nan
    counts = sorted(PROBE_FACTORS)
    if n > counts[-1]:
        return 3.0 + (PROBE_FACTORS[counts[-1]] - 3.0) * math.sqrt(counts[-1] / n)
    logs = np.log([PROBE_FACTORS[c] for c in counts])
    return float(np.exp(np.interp(math.log(n), np.log(counts), logs)))


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's estimate of tr(H) with its standard error.

    ``tolerance`` = ``probe_factor(n_samples)`` standard errors: the estimate is within it of the true trace in
    at least 99.73 % of runs, whatever the eigenvalues (16.4 standard errors for 8 probes, 8.4 for 16, 4.5 for 64, 3.4
    for 256). Student's t (4.5 for 8 probes), as before, assumed normal probes: where one eigenvalue dominates
    they are skewed, and a 55-parameter MLP's trace fell outside it in 2.3 % of seeds at 8 probes, 3 % at 16
    (trial s53; 5.8 % at 8 for a rank-one Hessian). More probes give a tighter tolerance twice over: a smaller
    standard error and a smaller factor.
    """

    value: float
    stderr: float
    n_samples: int
    n_products: int = 0
    seconds: float = 0.0

    @property
    def tolerance(self) -> float:
        return probe_factor(self.n_samples) * self.stderr

    def __float__(self) -> float:
        return self.value


@_weights_put_back
def hessian_trace(model: nn.Module, data, loss_fn=None, *, n_samples: int = 64, seed: int = 0,
                  max_samples: int | None = None, batch_size: int | None = None,
                  target_key: str | int | None = "labels", progress: bool = False) -> TraceEstimate:
    """Hutchinson's estimate of the Hessian trace: ``tr(H) ≈ mean_i zᵢᵀ H zᵢ``, Rademacher ``zᵢ``.

    >>> est = lnb.hessian_trace(model, (x, y), n_samples=64)
    >>> est.value, est.tolerance     # the trace within ± tolerance in at least 99.7 % of runs

    Parameters
    ----------
    model : torch.nn.Module
        The network; the Hessian is that of the mean loss over ``data`` with respect to its
        trainable parameters, in eval mode, at its current weights.
    data : (inputs, targets), Dataset, DataLoader or zero-argument callable
        Evaluation data, samples along the first axis.
    loss_fn : callable (outputs, targets) -> scalar mean, optional
        Default cross-entropy.
    n_samples : int
        Probe vectors (one Hessian-vector product each), at least 2.
    seed : int
        Seed of the probe vectors (an integer).
    max_samples : int, optional
        Use a fixed-seed subset of this many samples (fewer samples: cheaper products).
    batch_size : int, optional
        Samples per forward/backward pass (default: all at once); changes memory, not values (a
        loss summed over the batch, whose values would follow it, is refused; a mean over kept
        tokens, values not missing, or the like has its batches weighted by those, as
        ``compute_surface``'s; any other mean gets a ``UserWarning``: the batches are then weighted
        by samples).
    target_key : str or int, optional
        Where the targets are in dict (or long tuple) batches; see ``data.read_data``.
    progress : bool
        Show a tqdm.auto bar counting Hessian-vector products.

    Returns
    -------
    TraceEstimate
        ``value`` (loss per weight²), ``stderr`` (standard error of the mean of the probes),
        ``tolerance`` (``probe_factor`` standard errors: a 99.73 % interval), ``n_products`` and
        ``seconds``. Memory: one probe and one product (float64, 16 bytes per parameter) besides
        the model's graph.

    Raises
    ------
    LandscapeError
        For ``n_samples`` < 2, a ``seed`` that is not an integer, and for what ``HessianOperator``
        refuses: data not accepted or holding NaN/inf, a loss that is not a scalar mean over the batch
        (``reduction='none'`` or ``'sum'``); and an exception the model or ``loss_fn`` raises during
        the products, chained (``user_errors``); ``NonFiniteCurvature`` where the loss at the weights is NaN or
        infinite, or a Hessian-vector product is.

    References
    ----------
    .. [1] M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for
       Laplacian smoothing splines", Communications in Statistics 18(3), 1989.
    """
    if not isinstance(n_samples, (int, np.integer)) or n_samples < 2:
        raise LandscapeError(f"n_samples={n_samples!r}; expected an integer ≥ 2 (probe vectors)")
    seed_int(seed, "the probe vectors")
    t0 = time.perf_counter()
    op = HessianOperator(model, data, loss_fn=loss_fn, max_samples=max_samples, batch_size=batch_size,
                         target_key=target_key)
    gen = torch.Generator().manual_seed(int(seed))
    samples = []
    with _progress(op, progress, "Hessian trace", loss_fn), op.reusing_graph():
        for _ in range(int(n_samples)):
            z = torch.randint(0, 2, (op.n_params,), generator=gen).double() * 2 - 1
            samples.append(float(z @ op.matvec(z).cpu()))
    s = np.asarray(samples)
    return TraceEstimate(float(s.mean()), float(s.std(ddof=1) / math.sqrt(len(s))), len(s), op.n_products,
                         time.perf_counter() - t0)


# ------------------------------------------------------ eigen-map points ----

#: definitions of an eigen-map's ``eig_ratio`` (``eig_ratio``)
RATIOS = ("negative", "abs")
#: each definition in words, for a surface's provenance (``provenance["eig_ratio"]``): the metric's one name held
#: either, and a surface of compute_surface(quantity="hessian") did not say which (trial s47)
RATIO_WORDS = {"negative": "negative: |λ_min/λ_max| where λ_min < 0, 0 where λ_min ≥ 0 (Li et al. 2018, Fig. 6)",
               "abs": "abs: |λ_min/λ_max| at every point (the reference's plot_2d_eig_ratio; for a positive definite "
                      "Hessian, the inverse condition number)"}


def eig_ratio(lmax: float, lmin: float, ratio: str = "negative") -> float:
    """The non-convexity ratio of Li et al. 2018 (Fig. 6) at one point, dimensionless.

    ``"negative"``: ``|λ_min / λ_max|`` where ``λ_min < 0`` (negative curvature against the largest), 0 where
    ``λ_min ≥ 0`` (no negative curvature: locally convex, blue in the map); with ``λ_max < 0`` as well (a
    local maximum) it is at least 1. ``"abs"``: ``|λ_min / λ_max|`` as written, which for a positive definite
    Hessian is the inverse condition number ``λ_min/λ_max`` (a convex least-squares fit showed 0.76, read as
    "negative curvature comparable to the positive"). NaN where ``λ_max`` is 0 or either is NaN."""
    if lmax == 0 or not (math.isfinite(lmax) and math.isfinite(lmin)):
        return math.nan
    if ratio == "negative":
        return max(-lmin, 0.0) / abs(lmax) + 0.0  # + 0.0: 0, not -0.0, where λ_min is 0
    return abs(lmin / lmax)


class HessianEvaluator:
    """Per-point evaluator for ``quantity="hessian"``: loss, λ_max, λ_min, ``eig_ratio``, HVPs.

    Its ``ratio`` defaults to ``"abs"`` (``|λ_min/λ_max|`` as written), which ``compute_surface(...,
    quantity="hessian")`` without ``quantity_options["ratio"]`` gets (the spec stores of a store written
    before the option); ``eigen_maps.eigen_map`` passes ``"negative"`` (0 where λ_min ≥ 0) by default.

    It wraps the loss ``Evaluator`` (data handling, device, perturbation, restore) and
    only replaces what is computed at each point, so tiles run through the same
    runners (in-process and Dask) as a loss surface.
    """

    def __init__(self, base, *, tol: float = 1e-3, max_iter: int | None = None, seed: int = 0,
                 ratio: str = "abs"):
        check_lanczos_options(tol, max_iter, seed)  # compute_surface's quantity_options come here unchecked
        check_choice("ratio", ratio, RATIOS)
        self.base = base
        self.tol, self.max_iter, self.seed, self.ratio = float(tol), max_iter, int(seed), ratio
        # the Hessian of the trainable parameters, wherever the directions move the point: directions that
        # also move buffers (BN statistics) or frozen parameters failed on their lack of requires_grad
        with restoring(base.model):  # its first forward may write the weights (re-trial s57: left written)
            self.op = HessianOperator(base.model, loss_fn=base.loss_fn, batches=base.batches,
                                      layout=ParamLayout.of(base.model))

    @property
    def metric_names(self) -> list[str]:
        return list(EIGEN_METRICS)

    data_fingerprint = property(lambda self: self.base.data_fingerprint)
    n_samples = property(lambda self: self.base.n_samples)
    device = property(lambda self: self.base.device)
    bn_fold = property(lambda self: self.base.bn_fold)
    batch_size = property(lambda self: self.base.batch_size)  # the Hessian products use the base's batches
    notes = property(lambda self: self.base.notes)
    points_per_pass = 1

    def session(self):
        return contextlib.nullcontext()  # each evaluate() restores the model itself

    def point(self) -> list[float]:
        loss = float(self.base.point_values()[0])
        start = self.op.n_products
        if not math.isfinite(loss):  # a diverged point: no curvature, as compute_surface stores its NaN loss
            return [loss, math.nan, math.nan, math.nan, 0.0]
        # the ratio is what the map shows: λ_min to tol·(λ_max − λ_min) gives it to about ±tol, and
        # holding λ_min to tol of itself would cost 1.4-5x the products at a minimum (lanczos._largest)
        try:
            with self.op.reusing_graph():  # the products of this point's Lanczos run share one gradient graph
                top, bottom = extreme_eigenpairs(self.op, n_max=1, n_min=1, tol=self.tol, max_iter=self.max_iter,
                                                 seed=self.seed, relative_min=False)
        except NonFiniteCurvature:  # no second derivative here (or an overflow): NaN at this point only, and
            return [loss, math.nan, math.nan, math.nan, math.nan]  # n_hvp NaN tells it from a Lanczos short of tol
        lmax, lmin = float(top.values[0]), float(bottom.values[0])
        if not (top.converged and bottom.converged):  # as far as Lanczos got: a plausible wrong value, not shown
            lmax = lmin = math.nan
        return [loss, lmax, lmin, eig_ratio(lmax, lmin, self.ratio), float(self.op.n_products - start)]

    def evaluate(self, coords: np.ndarray, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.float64)
        rows = []
        with restoring(self.base.model), self.base._precision():  # a GPU's "fp32" is fp32 here too
            self.base.model.eval()
            for c in coords:
                if should_stop is not None and should_stop():
                    raise Cancelled()
                self.base.perturber.set(c)
                rows.append(self.point())
        return np.asarray(rows, dtype=np.float64)


__all__ = ["HessianOperator", "NonFiniteCurvature", "EigenvalueResult", "math_attention", "Eigenpairs",
           "extreme_eigenpairs", "hessian_eigenvalues", "hessian_directions", "check_lanczos_options", "TraceEstimate",
           "probe_factor", "hessian_trace", "HessianEvaluator", "EIGEN_METRICS", "RATIOS", "RATIO_WORDS", "eig_ratio"]
