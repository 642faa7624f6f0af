"""Hessian eigenvalue spectral density by stochastic Lanczos quadrature (SLQ).

The density ``φ(t) = (1/n) Σ_i δ(t − λ_i)`` of the n eigenvalues of the Hessian of the
mean loss is estimated without forming the Hessian (Ubaru, Chen & Saad 2017; Ghorbani,
Krishnan & Xiao 2019, the method behind PyHessian's density plots):

1. draw a probe ``v`` (Rademacher or Gaussian, scaled to unit norm);
2. run ``m = n_steps`` Lanczos steps on H from ``v``, with full reorthogonalization, giving a
   tridiagonal ``T_m``; its eigenvalues ``θ_k`` (Ritz values) and the squared first
   components ``τ_k`` of its eigenvectors (weights, summing to 1) are an m-point Gauss
   quadrature of the spectral measure seen from ``v``: ``Σ_k τ_k θ_k^p = vᵀ H^p v`` exactly for
   ``p ≤ 2m − 1``;
3. average the quadratures of ``n_probes`` probes and broaden each node by a Gaussian of
   width ``sigma``: ``φ(t) ≈ (1/n_probes) Σ_probes Σ_k τ_k N(t; θ_k, σ²)``.

Since ``E[vᵀ H^p v] = tr(H^p)/n`` for both probe kinds, the p-th moment of the density is an
unbiased estimate of the p-th moment of the eigenvalues (the broadening adds ``σ²`` to the
second moment of the smooth curve, not to :meth:`Spectrum.moment`).

**Cost**: ``n_probes × n_steps`` Hessian-vector products (fewer when Lanczos finds an invariant
subspace early), each a forward pass, a backward pass with graph and a backward through that
graph over the evaluation set (≈ 9–14 forward passes on the zoo's models; see
``landscape_nb.hessian``): the defaults, 4 probes × 64 steps, are 256 products: 1.3 s for
mlp-digits measured on the shared 2-core CPU (one torch thread), and ≈ 105 s estimated for
resnet20-digits from its measured 0.41 s per product. Memory: one probe's Lanczos
basis, ``n_steps × n_params`` float64 (64 steps of a 272k-parameter ResNet-20: 140 MB).
Probes are independent: with ``client=`` each runs as one Dask task.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .errors import LandscapeError, recording_warnings, seed_int, warn_user
from .runners import library_versions

PROBES = ("rademacher", "gaussian")
#: the default σ is at least this times max|θ| (and twice the model's float epsilon times it): a narrower one
#: draws rounding as peaks, and float64 could not resolve its grid around c·I (s40: the integral came out 19.9)
ROUNDING = 1e4 * float(np.finfo(np.float64).eps)
#: the default width's variance per unit spread of the Ritz values for a spread of 1 or more (PyHessian's
#: ``density_generate``); `default_sigma` below
SIGMA_SQUARED = 1e-5
#: most points a density is evaluated at when ``grid`` is a number (memory: about probes × steps × 8 B each)
MAX_GRID = 20_000


@dataclass(frozen=True, eq=False)
class Spectrum:
    """An SLQ estimate of the Hessian's eigenvalue density, with the quadratures it came from.

    ``density[i]`` is the estimated density at eigenvalue ``grid[i]`` (it integrates to 1
    over the real line; on ``grid``, which covers the Ritz values ± 6σ, to within 1e-8).
    ``ritz_values[p, k]`` and ``ritz_weights[p, k]`` are probe p's quadrature nodes and
    weights; a probe that stopped early (an invariant subspace: the exact spectrum seen from
    that probe) pads its rows with NaN values and zero weights.
    """

    grid: np.ndarray  # (n_grid,)
    density: np.ndarray  # (n_grid,)
    ritz_values: np.ndarray  # (n_probes, n_steps)
    ritz_weights: np.ndarray  # (n_probes, n_steps)
    sigma: float
    n_params: int
    n_products: int
    seconds: float
    probe: str = "rademacher"
    seed: int = 0
    #: what it was computed from: the model (class, state fingerprint), the loss, the SLQ settings
    #: and the library versions; ``plot.spectrum`` keeps it in the figure (``layout.meta["provenance"]``)
    provenance: dict = field(default_factory=dict)

    @property
    def n_probes(self) -> int:
        return int(self.ritz_values.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self.ritz_values.shape[1])

    def probe_moments(self, power: int) -> np.ndarray:
        """Each probe's quadrature of ``λ^power``: ``Σ_k τ_k θ_k^power`` ≈ ``vᵀ H^power v``."""
        theta = np.nan_to_num(self.ritz_values, nan=0.0)
        return (self.ritz_weights * theta ** int(power)).sum(axis=1)

    def moment(self, power: int) -> float:
        """The estimate of ``tr(H^power) / n_params`` (mean over probes; unbiased)."""
        return float(self.probe_moments(power).mean())

    def moment_stderr(self, power: int) -> float:
        """Standard error of :meth:`moment` across probes (NaN with one probe)."""
        m = self.probe_moments(power)
        return float(m.std(ddof=1) / math.sqrt(len(m))) if len(m) > 1 else math.nan

    def moment_tolerance(self, power: int) -> float:
        """``hessian.probe_factor(n_probes)`` standard errors (58 for 4 probes, 8.4 for 16, 4.5 for 64): :meth:`moment`
        is within it of the truth in at least 99.73 % of runs, whatever the eigenvalues (see there); the stated tolerance.
        (Three standard errors held only from about 64 probes on: with 4, moment 2 of a 1.2k-parameter MLP fell
        outside in 13 of 60 seeds; Student's t assumed normal probes, which a dominant eigenvalue skews.)"""
        from .hessian import probe_factor

        return probe_factor(self.n_probes) * self.moment_stderr(power)

    @property
    def trace(self) -> float:
        """The estimate of ``tr(H)`` (``n_params × moment(1)``, Hutchinson's estimator)."""
        return self.n_params * self.moment(1)

    @property
    def extremes(self) -> tuple[float, float]:
        """The smallest and largest Ritz values over all probes; they lie inside
        ``[λ_min, λ_max]`` up to the rounding of the Hessian-vector products (a float32 model's: about
        1e-7 of ``|λ|``, trial s40) and approach them as ``n_steps`` grows."""
        return float(np.nanmin(self.ritz_values)), float(np.nanmax(self.ritz_values))


# ----------------------------------------------------------- Lanczos ----

def probe_vector(n: int, index: int, *, seed: int, probe: str) -> torch.Tensor:
    """Probe ``index`` of a run: unit-norm float64, the same on every machine for a given seed."""
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0]))
    if probe == "rademacher":
        v = torch.randint(0, 2, (n,), generator=gen, dtype=torch.float64) * 2 - 1
    else:
        v = torch.randn(n, generator=gen, dtype=torch.float64)
    return v / v.norm()


def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor, n_steps: int,
            breakdown: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """``n_steps`` Lanczos steps from unit ``v0`` with full reorthogonalization (twice, Gram–Schmidt).

    Returns the tridiagonal ``T``'s diagonal ``alpha`` (m,) and off-diagonal ``beta`` (m − 1,),
    with ``m ≤ n_steps`` (fewer when ``β`` falls below ``breakdown × ‖T‖``: ``v0`` lies in an
    invariant subspace and ``T`` already holds every eigenvalue it sees).
    """
    n = v0.numel()
    m = min(int(n_steps), n)
    basis = torch.zeros(m, n, dtype=torch.float64, device=v0.device)
    basis[0] = v0
    alpha, beta = [], []
    scale = 0.0
    for j in range(m):
        w = matvec(basis[j]).to(torch.float64)
        a = float(basis[j] @ w)
        alpha.append(a)
        if j == m - 1:
            break
        w = w - a * basis[j] - (beta[-1] * basis[j - 1] if j > 0 else 0.0)
        for _ in range(2):  # full reorthogonalization against every earlier vector
            w = w - basis[:j + 1].T @ (basis[:j + 1] @ w)
        b = float(w.norm())
        scale = max(scale, abs(a), b)
        if b <= breakdown * max(scale, 1e-300):
            break
        beta.append(b)
        basis[j + 1] = w / b
    return np.asarray(alpha), np.asarray(beta)


def gauss_quadrature(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ritz values and weights (squared first eigenvector components) of the tridiagonal T."""
    from scipy.linalg import eigh_tridiagonal

    if len(alpha) == 1:
        return alpha.copy(), np.ones(1)
    theta, vecs = eigh_tridiagonal(alpha, beta)
    return theta, vecs[0] ** 2


def breakdown_for(dtype: torch.dtype) -> float:
    """Lanczos's ``breakdown`` for products computed in ``dtype``: below ~100 ulp of float32 or float64, β
    is rounding noise; capped at 1e-3 for bfloat16 and float16, where 100 ulp is 0.78 and 0.098 of
    ‖T‖: a bf16 MLP's probes stopped after 2 steps of 64, λ_max 21 % low (trial s34). Their products'
    noise, ~1 % of ‖H‖ in bf16, then stays in the Ritz values, as the precision warning says."""
    return min(100 * torch.finfo(dtype).eps, 1e-3)


def run_probe(model: nn.Module, data, loss_fn, index: int, *, n_steps: int, seed: int, probe: str,
              max_samples: int | None, batch_size: int | None, target_key: str | int | None = "labels") -> dict:
    """One probe's quadrature; module level so Dask can pickle it (one task per probe)."""
    from .hessian import HessianOperator, user_errors
    from .params import weights_put_back

    # said where the caller is: a Dask worker's stayed in its log (trial s34: a model sampling at random); weights
    # a forward writes put back (re-trial s57)
    with recording_warnings([]) as said, weights_put_back(model):
        op = HessianOperator(model, data, loss_fn=loss_fn, max_samples=max_samples, batch_size=batch_size,
                             target_key=target_key)
        v0 = probe_vector(op.n_params, index, seed=seed, probe=probe).to(op.params[0].device)
        with user_errors(op, loss_fn, f"the spectral density's probe {index}"), op.reusing_graph():
            alpha, beta = lanczos(op.matvec, v0, n_steps, breakdown=breakdown_for(op.dtype))
    theta, tau = gauss_quadrature(alpha, beta)
    return {"theta": theta, "tau": tau, "n_products": op.n_products, "n_params": op.n_params,
            "warnings": said, "loss": getattr(op, "loss_note", None), "data": getattr(op, "data_fingerprint", None),
            "n_samples": op.n_samples, "versions": dict(library_versions()),  # a Dask worker's, where it ran
            "eps": float(torch.finfo(op.dtype).eps)}  # the products' precision, not a frozen parameter's (review s57)


# ----------------------------------------------------------- density ----

def default_sigma(lo: float, hi: float) -> float:
    """The default width of `hessian_spectrum`'s Gaussians for Ritz values spread over ``lo..hi`` (``hi > lo``):
    σ² = ``SIGMA_SQUARED``·s·min(1, s), s = hi − lo. PyHessian's σ² = 1e-5·max(1, s) (Yao et al. 2020,
    ``density_generate``) for s ≥ 1; below, the same share of the spread as at s = 1 (0.32 %), where PyHessian's
    stays √1e-5 whatever the spread.

    >>> round(default_sigma(0, 100), 6), round(default_sigma(-1, 0), 6), round(default_sigma(0, 0.01), 8)
    (0.031623, 0.003162, 3.162e-05)
    """
    spread = float(hi) - float(lo)
    return math.sqrt(SIGMA_SQUARED * spread * min(1.0, spread))


def broaden(theta: np.ndarray, tau: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """``Σ_k τ_k N(grid; θ_k, σ²)`` averaged over rows (probes); NaN nodes have zero weight."""
    theta = np.nan_to_num(np.atleast_2d(theta), nan=0.0)
    tau = np.atleast_2d(tau)
    z = (grid[None, None, :] - theta[..., None]) / sigma
    kernel = np.exp(-0.5 * z * z) / (sigma * math.sqrt(2 * math.pi))
    return (tau[..., None] * kernel).sum(axis=1).mean(axis=0)


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise LandscapeError(f"{name}={value!r}; expected an integer ≥ {low}")
    return int(value)


def hessian_spectrum(model: nn.Module, data, loss_fn: Callable | None = None, *, n_probes: int = 4,
                     n_steps: int = 64, sigma: float | None = None, grid: Any = 1000,
                     probe: str = "rademacher", seed: int = 0, max_samples: int | None = None,
                     batch_size: int | None = None, target_key: str | int | None = "labels",
                     client=None) -> Spectrum:
    """The eigenvalue spectral density of the loss Hessian at ``model``'s weights (SLQ).

    >>> spec = lnb.hessian_spectrum(model, (x, y), n_probes=4, n_steps=64)
    >>> spec.grid, spec.density          # the curve PyHessian plots (log scale shows the bulk)
    >>> spec.extremes, spec.trace        # outermost Ritz values; tr(H) estimate

    Parameters
    ----------
    model : torch.nn.Module
        At the weights to analyse (not modified; the Hessian is taken in eval mode, with
        respect to the trainable parameters, as in ``landscape_nb.hessian``).
    data
        ``(inputs, targets)``, a Dataset, a DataLoader or a zero-argument factory.
    loss_fn : callable, optional
        ``(outputs, targets) -> mean loss``; cross-entropy by default.
    n_probes : int
        Random probe vectors (≥ 1); the moment estimates' standard error shrinks as
        ``1/√n_probes`` (Rademacher probes: the Hutchinson variance, times 1/n_params).
    n_steps : int
        Lanczos steps per probe (≥ 1; at most ``n_params`` are used). The quadrature is exact
        for moments up to ``2·n_steps − 1``; the extreme Ritz values converge to ``λ_min`` and
        ``λ_max`` as it grows (PyHessian uses 90).
    sigma : float, optional
        Width of the Gaussian put on each Ritz value, in eigenvalue units. Default
        (`default_sigma`): PyHessian's σ² = 1e-5·spread of the Ritz values for a spread of 1 or
        more, and the same share of the spread below it, σ = √1e-5·spread (0.32 %; PyHessian's
        max(1, spread) kept σ at 0.0032 there, 25 % of a trained MLP's 0.0126 spread, and its curve
        put 34 % of its mass below −1e-3 where no eigenvalue lay, trial s56); at least what the
        model's floats resolve, max(``ROUNDING``, 2·eps of its products' dtype)·max|θ| (a Hessian c·I: one narrow
        peak, not its Ritz values' rounding drawn as several; float32 eigenvalues near 1e6: σ ≥ 0.24); and at least
        2·spread/(``MAX_GRID`` − 27) with ``grid`` a number, the narrowest that grid resolves (0.01 % of
        the spread: from a spread of about 1000, where PyHessian's needs more than ``MAX_GRID`` points).
        A wider σ smooths the curve and spreads the bulk's mass: at 1 % of the
        spread, a trial's (s40) curve put 23 % of its mass below −0.1 where 1.7 % of the Ritz
        weight lay, which read as negative curvature.
    grid : int or array_like
        Number of equally spaced eigenvalues covering the Ritz values ± 6σ (more where needed
        for a step of at most σ/2, so that the density integrates to 1; at most ``MAX_GRID``), or
        the eigenvalues (1-D, increasing) to evaluate the density at.
    probe : {"rademacher", "gaussian"}
        Distribution of the probe entries; both are scaled to unit norm.
    seed : int
        Probe i is drawn from ``SeedSequence([seed, i])``: the same probes in-process and on Dask.
    max_samples, batch_size : int, optional
        As for ``HessianOperator``: a seeded subset of the data, and the batch size of products.
    target_key : str or int, optional
        Where the targets are in each batch, as ``compute_surface``'s: a dict key (default
        ``"labels"``) or a position in tuple batches.
    client : distributed.Client or "local", optional
        Run one Dask task per probe (``"local"``: an embedded LocalCluster of worker processes,
        closed afterwards). ``None``: in this process.

    Returns
    -------
    Spectrum
        ``grid``, ``density``, per-probe ``ritz_values``/``ritz_weights``, ``n_products``
        (Hessian-vector products done: ``n_probes × n_steps`` or fewer), ``seconds`` (wall time
        of the call, a cluster's start-up included).

    Raises
    ------
    LandscapeError
        For counts below 1, an unknown probe kind, a non-positive ``sigma``, a bad ``grid`` or a
        ``sigma`` too narrow for a grid of ``MAX_GRID`` points, and for
        what ``hessian.HessianOperator`` refuses: a ``batch_size`` or ``max_samples`` that is not a
        positive integer, data not accepted or holding NaN/inf, a loss that is not a scalar mean over
        the batch (``reduction='none'`` or ``'sum'``); and an exception the model or ``loss_fn`` raises
        during the products, chained (``hessian.user_errors``); ``hessian.NonFiniteCurvature`` where the
        loss at the weights is NaN or infinite, or a Hessian-vector product is.

    References
    ----------
    Ubaru, Chen & Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos quadrature",
    SIAM J. Matrix Anal. Appl. 2017. Ghorbani, Krishnan & Xiao, "An investigation into neural
    net optimization via Hessian eigenvalue density", ICML 2019. Li et al., "Visualizing the
    loss landscape of neural nets", NeurIPS 2018 (§6: curvature and non-convexity).
    """
    n_probes = _check_int("n_probes", n_probes, 1)
    n_steps = _check_int("n_steps", n_steps, 1)
    seed_int(seed, "the probe vectors")
    if probe not in PROBES:
        raise LandscapeError(f"probe={probe!r}; expected one of {PROBES}")
    if sigma is not None and not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise LandscapeError(f"sigma={sigma!r}; expected a positive width in eigenvalue units, or None for the "
                             "default (PyHessian's σ² = 1e-5·spread of the Ritz values for a spread of 1 or more, "
                             "0.32 % of the spread below)")
    if not isinstance(model, nn.Module):
        raise LandscapeError(f"expected a torch.nn.Module, got {type(model).__name__}; pass the model itself")
    options = dict(n_steps=n_steps, seed=int(seed), probe=probe, max_samples=max_samples, batch_size=batch_size,
                   target_key=target_key)
    t0 = time.perf_counter()
    if client is None:
        results = [run_probe(model, data, loss_fn, i, **options) for i in range(n_probes)]
    else:
        results = _run_on_dask(client, model, data, loss_fn, n_probes, options)
    for message, category in dict.fromkeys(w for r in results for w in r["warnings"]):  # once each, not per probe
        warn_user(message, category)
    rows = max(len(r["theta"]) for r in results)
    theta = np.full((n_probes, rows), np.nan)
    tau = np.zeros((n_probes, rows))
    for i, r in enumerate(results):
        theta[i, :len(r["theta"])], tau[i, :len(r["tau"])] = r["theta"], r["tau"]
    lo, hi = float(np.nanmin(theta)), float(np.nanmax(theta))
    if sigma is None:  # no narrower than the floats resolve, relative to |H| (max(1, |θ|) gave c·I with c = 1e-4
        # a σ of 1e-3, half its mass below 0; a 1e-3·|θ| for "coinciding" values drew a float32 cluster 50 wide at
        # 1e6 as 1000 wide: re-trials s56)
        scale = max(abs(lo), abs(hi)) or 1.0  # H = 0
        eps = max(r["eps"] for r in results)
        sigma = max(default_sigma(lo, hi), max(ROUNDING, 2 * eps) * scale)
        if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):  # PyHessian's σ needs a grid of
            sigma = max(sigma, 2 * (hi - lo) / (MAX_GRID - 27))  # 2√(spread/1e-5) points: past MAX_GRID from a
    sigma = float(sigma)                                          # spread of 1000 (re-trial s56): 0.01 % of it
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        points = _check_int("grid", grid, 2)
        span = hi - lo + 12 * sigma
        needed = math.ceil(span / (sigma / 2)) + 1  # a step of σ/2 or less resolves every peak (trial s40: a σ
        if needed > MAX_GRID:  # below the step of 1000 points gave a density integrating to 0.42, then 2.93)
            raise LandscapeError(
                f"sigma={sigma:.3g} is too narrow for Ritz values spread over [{lo:.4g}, {hi:.4g}]: a density "
                f"that integrates to 1 needs a grid step of at most σ/2, {needed} points, more than {MAX_GRID}; "
                "pass a larger sigma, or grid= an array of the eigenvalues to evaluate the density at")
        grid_arr = np.linspace(lo - 6 * sigma, hi + 6 * sigma, max(points, needed))
    else:
        grid_arr = np.asarray(grid, dtype=np.float64)
        if grid_arr.ndim != 1 or len(grid_arr) < 2 or not np.all(np.diff(grid_arr) > 0):
            raise LandscapeError(f"grid of shape {grid_arr.shape}; expected a number of points (e.g. 1000) or a "
                                 "1-D increasing array of eigenvalues")
    density = broaden(theta, tau, grid_arr, sigma)
    return Spectrum(grid_arr, density, theta, tau, sigma, int(results[0]["n_params"]),
                    int(sum(r["n_products"] for r in results)), time.perf_counter() - t0,
                    probe, int(seed), _provenance(model, n_probes, sigma, options, results[0]))


def _provenance(model: nn.Module, n_probes: int, sigma: float, options: dict, first: dict) -> dict:
    """``Spectrum.provenance``: the model's class and the fingerprint of its state (``spec.model_fingerprint``, a
    surface's ``spec["model"]["weights"]``), the loss (which one: the note of the first probe's operator, e.g. the
    model's own outputs.loss), the data's fingerprint and samples, the settings and the library versions (of the
    process that ran the first probe)."""
    from .spec import model_fingerprint

    return {"quantity": "hessian spectrum (stochastic Lanczos quadrature)",
            "model": {"class": type(model).__qualname__, "weights": model_fingerprint(model)},
            "loss": first["loss"], "data": {"fingerprint": first["data"], "samples": first["n_samples"]},
            "n_probes": n_probes, "sigma": sigma, **{k: v for k, v in options.items() if v is not None},
            **first["versions"]}


def _run_on_dask(client, model, data, loss_fn, n_probes: int, options: dict) -> list[dict]:
    from distributed import Client

    owned = None
    if isinstance(client, str) and client == "local":
        from .cluster import local_cluster

        owned = local_cluster()
        client = owned.client
    elif not isinstance(client, Client):
        raise LandscapeError(f"client={client!r}; expected None (in-process), 'local' or a distributed.Client")
    try:
        model_f, data_f = client.scatter([model, data], broadcast=True, hash=False)  # shipped once per worker
        futures = [client.submit(run_probe, model_f, data_f, loss_fn, i, pure=False, **options)
                   for i in range(n_probes)]
        return client.gather(futures)
    finally:
        if owned is not None:
            owned.close()


__all__ = ["Spectrum", "hessian_spectrum", "lanczos", "gauss_quadrature", "probe_vector", "broaden", "PROBES"]
