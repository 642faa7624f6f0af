"""Extreme eigenpairs of a Hessian operator by Lanczos: ARPACK on the CPU, or a thick-restart
Lanczos with a float32 basis on the model's device for large models.

The operator is a ``landscape_nb.hessian.HessianOperator`` (anything with ``n_params``,
``params``, ``n_products``, ``matvec`` and ``dense``).

References
----------
Lanczos, "An iteration method for the solution of the eigenvalue problem of linear
differential and integral operators", J. Res. Nat. Bur. Standards 45, 1950.
Wu & Simon, "Thick-restart Lanczos method for large symmetric eigenvalue problems",
SIAM J. Matrix Anal. Appl. 22(2), 2000.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

logger = logging.getLogger(__name__)


class HessianLike(Protocol):
    """What the solvers use of a ``HessianOperator``."""

    n_params: int
    n_products: int
    params: list

    def matvec(self, v: torch.Tensor) -> torch.Tensor: ...

    def dense(self, max_params: int = 4096) -> np.ndarray: ...


# --------------------------------------------------------- eigenpairs ----

@dataclass(frozen=True)
class Eigenpairs:
    """Eigenvalues (descending) and unit eigenvectors (rows: float64 for a float64 model's eigenpairs from
    ARPACK, float32 otherwise), with the work done; ``converged``: every value reached the accuracy
    ``extreme_eigenpairs`` states."""

    values: np.ndarray
    vectors: torch.Tensor
    n_products: int
    converged: bool


DEVICE_LANCZOS_MIN_PARAMS = 100_000  # from this size on the Lanczos basis is float32 on the model's device
DEVICE_LANCZOS_TOL = 1e-6  # the tightest relative tolerance a float32 basis is asked for
DENSE_FALLBACK = 4096  # a model up to this size whose Lanczos run falls short gets its dense Hessian instead
assert DENSE_FALLBACK < DEVICE_LANCZOS_MIN_PARAMS  # dense matrices are float64 on the CPU
REFINE_FACTOR = 10  # a run that tightens the smallest (or settles a search for copies) takes at most
# this many times the products of the first run, unless max_iter is given
#: Ritz pairs converged beside the smallest where it is held to tol·(λ_max − λ_min) only (an eigen-map): with
#: one, a λ_min in a tight cluster came back as the cluster's second (trial s53: −0.2464 for −0.2521; a
#: 451-parameter spectrum with a cluster −0.2521, −0.2465, −0.2447: 8 of 200 seeds outside the bound, ARPACK and
#: the float32 thick-restart run alike); with a spare, none of 240, for ~30 % more products at that end
#: (benchmarks/lanczos_cluster.py)
SPARE_RITZ = 1


class _Operator:
    """``A = sign·(H − shift·I)`` on flat float64 tensors; with ``locked`` (orthonormal columns Q,
    n × j) the deflated ``x ↦ P A P x + locked_value·Q Qᵀ x``, ``P = I − Q Qᵀ``: A on the
    complement of span(Q), and the value ``locked_value`` on span(Q) (below the values sought,
    so rounding that leaks into span(Q) is not what Lanczos converges to)."""

    def __init__(self, op: HessianLike, shift: float = 0.0, sign: float = 1.0,
                 locked: np.ndarray | None = None, locked_value: float = 0.0):
        self.op, self.shift, self.sign, self.locked_value = op, float(shift), float(sign), float(locked_value)
        self.n_params, self.params = op.n_params, op.params
        self.device = op.params[0].device
        self.locked = None if locked is None else torch.from_numpy(np.ascontiguousarray(locked)).to(self.device)

    @property
    def n_products(self) -> int:
        return self.op.n_products

    def project(self, v: torch.Tensor) -> torch.Tensor:
        return v if self.locked is None else v - self.locked @ (self.locked.T @ v)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        v = torch.as_tensor(v, dtype=torch.float64).to(self.device)
        x = self.project(v)
        w = self.project(self.sign * (self.op.matvec(x).to(self.device) - self.shift * x))
        if self.locked is not None:
            w = w + self.locked_value * (self.locked @ (self.locked.T @ v))
        return w

    def linear_operator(self):
        from scipy.sparse.linalg import LinearOperator

        def mv(x):
            return self.matvec(torch.from_numpy(np.asarray(x, dtype=np.float64).reshape(-1))).cpu().numpy()

        return LinearOperator((self.n_params, self.n_params), matvec=mv, dtype=np.float64)

    def dense(self) -> np.ndarray:
        n = self.n_params
        memo = getattr(self.op, "dense_memo", None)  # one call of extreme_eigenpairs: both ends' fallbacks
        if memo is not None and "h" not in memo:
            memo["h"] = self.op.dense(max_params=n)
        h = self.sign * ((memo["h"] if memo is not None else self.op.dense(max_params=n)) - self.shift * np.eye(n))
        if self.locked is None:
            return h
        q = self.locked.cpu().numpy()
        p = np.eye(n) - q @ q.T
        return p @ h @ p + self.locked_value * q @ q.T


@dataclass(frozen=True)
class _Ritz:
    """The ``k`` largest eigenpairs of an ``_Operator``: values descending, vectors (n, k) float64,
    ``bound`` the residual ``‖A v − θ v‖`` each is known to be within; ``exact`` where they are
    known exactly (a dense spectrum, or an operator that is zero)."""

    values: np.ndarray
    vectors: np.ndarray
    converged: bool
    bound: np.ndarray
    exact: bool = False


_Accuracy = Callable[[np.ndarray], np.ndarray]  # Ritz values (descending) -> the residual each may keep


def resolution(op: HessianLike) -> float:
    """The finest relative accuracy asked of Lanczos on ``op``: about what its Hessian-vector products
    resolve, ``10·eps`` of the model's dtype (float32: 1.2e-6), floored at 1e-12 (float64), and at
    least ``DEVICE_LANCZOS_TOL`` where the basis is float32 (``DEVICE_LANCZOS_MIN_PARAMS`` on)."""
    dtype = op.params[0].dtype
    res = max(1e-12, 10.0 * torch.finfo(dtype).eps) if dtype.is_floating_point else 1e-6
    return max(res, DEVICE_LANCZOS_TOL) if op.n_params >= DEVICE_LANCZOS_MIN_PARAMS else res


def _dense(a: _Operator, k: int) -> _Ritz:
    """The ``k`` largest eigenpairs of ``a`` from its dense matrix: ``n`` products, exact."""
    vals, vecs = np.linalg.eigh(a.dense())
    idx = np.argsort(vals)[::-1][:k]
    return _Ritz(vals[idx], vecs[:, idx], True, np.zeros(k), exact=True)


def _cheaper_dense(products: float, n: int) -> bool:
    """Whether a dense matrix (``n`` products, an ARPACK-sized model) costs less than ``products``."""
    return n <= min(products, DENSE_FALLBACK)


def _dense_instead(a: _Operator, k: int, max_iter: int | None, fallback: bool) -> _Ritz | None:
    """The dense answer where Lanczos did not reach its accuracy on a model of at most ``DENSE_FALLBACK``
    parameters (``n`` more products, exact, once per call: both ends share it), with ``fallback`` and unless
    ``max_iter`` set the budget; None otherwise. A λ_min in
    a cluster of near-equal eigenvalues (160 negative ones within 2e-3 of each other, next to a λ_max of
    23.5, on a 385-parameter MLP) came back 21 % off, and as far as a run got depended on the rounding of
    its products, so the same call gave other values in other processes."""
    if not fallback or max_iter is not None or a.n_params > DENSE_FALLBACK:
        return None
    logger.info("Lanczos did not reach its accuracy: the dense Hessian of %d parameters instead (%d products)",
                a.n_params, a.n_params)
    return _dense(a, k)


def _orthonormal(n: int, k: int, seed: int) -> np.ndarray:
    """``k`` random orthonormal columns: eigenvectors of a zero operator."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, k)))
    return q


def _lanczos(a: _Operator, k: int, tol: float, max_iter: int | None, seed: int,
             v0: np.ndarray | None = None, accuracy: _Accuracy | None = None, ncv: int = 20) -> _Ritz:
    """The ``k`` largest eigenpairs of ``a``, each to a residual of ``tol·|θ|``.

    Tiny models (k ≥ n) get the dense spectrum; models of ``DEVICE_LANCZOS_MIN_PARAMS`` or more
    a thick-restart Lanczos whose basis is float32 on the model's device (``_device_lanczos``),
    which stops at ``accuracy`` instead where given; the rest ARPACK (float64 basis on the CPU),
    which knows only ``tol``, with a basis of ``max(2k + 1, ncv)`` vectors. An operator that is
    exactly zero (a loss linear in the weights) has zero eigenvalues, any orthonormal vectors its
    eigenvectors.
    """
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, eigsh

    n = a.n_params
    if k >= n:  # ARPACK needs k < n: a tiny model gets its whole spectrum densely
        return _dense(a, k)
    if v0 is None:
        v0 = a.project(torch.from_numpy(np.random.default_rng(seed).standard_normal(n)).to(a.device)).cpu().numpy()
    if n >= DEVICE_LANCZOS_MIN_PARAMS:
        tol = max(tol, DEVICE_LANCZOS_TOL)
        accuracy = accuracy or (lambda th: tol * np.maximum(np.abs(th), 1e-30))
        vals, vecs, ok = _device_lanczos(a, k, tol, max_iter, seed, v0=v0, accuracy=accuracy)
        bound = accuracy(vals) if ok else np.full(k, np.inf)
        return _Ritz(vals, vecs, ok, bound, exact=not np.any(vals))  # all exactly 0: every product was 0
    ncv = min(n, max(2 * k + 1, ncv))
    try:
        vals, vecs = eigsh(a.linear_operator(), k=k, which="LA", tol=tol, v0=v0, ncv=ncv,
                           maxiter=max_iter or max(100, 10 * ncv))
        ok = True
    except ArpackNoConvergence as exc:
        vals, vecs, ok = exc.eigenvalues, exc.eigenvectors, False
        pad = k - len(vals)
        vals = np.concatenate([vals, np.full(pad, np.nan)])
        vecs = np.concatenate([vecs.reshape(n, -1), np.full((n, pad), np.nan)], axis=1)
    except ArpackError:  # "starting vector is zero" where A·v0 is: the operator is zero
        if torch.any(a.matvec(torch.from_numpy(v0))):
            raise
        return _Ritz(np.zeros(k), _orthonormal(n, k, seed), True, np.zeros(k), exact=True)
    order = np.argsort(-vals, kind="stable")  # NaN (not converged) last
    vals = vals[order]
    bound = tol * np.maximum(np.abs(vals), np.finfo(float).eps ** (2 / 3)) if ok else np.full(k, np.inf)
    return _Ritz(vals, vecs[:, order], ok, bound)  # ARPACK's criterion


def _device_lanczos(op: HessianLike, k: int, tol: float, max_iter: int | None, seed: int,
                    shift: float = 0.0, sign: float = 1.0, chunk: int = 1 << 20, k_bottom: int = 0,
                    v0: np.ndarray | None = None, floor: float = DEVICE_LANCZOS_TOL,
                    accuracy: _Accuracy | None = None, refine: float | None = REFINE_FACTOR):
    """Thick-restart Lanczos (Wu & Simon 2000) for the ``k`` largest eigenvalues of ``sign·(H − shift·I)``,
    and with ``k_bottom`` > 0 also its ``k_bottom`` smallest, from the same Krylov space.

    Returns (values, vectors (n, k), converged), or with ``k_bottom`` ((top values, top vectors),
    (bottom values ascending, bottom vectors (n, k_bottom)), (top converged, bottom converged)).

    The basis of ``m + 1 = max(2(k + k_bottom) + 1, 20) + 1`` vectors is float32 on the model's
    device, with full reorthogonalization (two passes); the tridiagonal (arrowhead after a
    restart) matrix is float64 on the CPU. A restart keeps ``max(k, m // 2)`` Ritz vectors
    (both ends: ``max(k, m // 4)`` from the top and ``max(k_bottom, m // 4)`` from the bottom,
    fewer than ``m``), written over the basis in column chunks. Memory: ``4·(m + 1)`` bytes per
    parameter for the basis (84 for k + k_bottom ≤ 9), plus the product's float64 vectors (about 24), against ARPACK's
    ``8·(m + 3)`` (184) on the CPU with a host copy per product. A top Ritz pair has converged
    when its residual ``|β s_m|`` is at most ``tol·|θ|`` (or what ``accuracy``, given the top k
    Ritz values, returns); a bottom one when it is at most
    ``max(tol·|θ|, floor·(θ_max − θ))``: relative to itself, down to what a float32 basis
    resolves (a Krylov space is the same for ``H`` and ``c·I − H``, so one run serves both ends),
    for at most ``refine`` times the products it took to reach ``tol·(θ_max − θ)``, what a run on
    ``θ_max·I − H`` reaches (near 0 in a dense cluster, at a convex point, the tighter criterion
    may take thousands of products); ``refine=None``: up to ``max_iter`` restarts.
    Out of restarts it returns the last Ritz pairs judged, not converged.
    Where the Krylov space is invariant (a low-rank or zero Hessian) it goes on from a random
    vector orthogonal to the basis, as ARPACK does, so an operator that is exactly zero gets
    zero eigenvalues and orthonormal vectors.
    """
    n, device = op.n_params, op.params[0].device
    m = min(n - 1, max(2 * (k + k_bottom) + 1, 20))
    if k_bottom:
        keep_top = min(max(k, m // 4), max(k, (m - 1) // 2))
        keep_bottom = min(max(k_bottom, m // 4), m - 1 - keep_top)
        if keep_bottom < k_bottom:  # extreme_eigenpairs asks only where n is far larger
            raise ValueError(f"{n} parameters leave no room for {k} + {k_bottom} Ritz vectors and a restart")
    else:
        keep_top, keep_bottom = min(m - 1, max(k, m // 2)), 0
    keep = keep_top + keep_bottom
    basis = torch.empty(m + 1, n, dtype=torch.float32, device=device)
    rng = np.random.default_rng(seed)
    v0 = torch.from_numpy(rng.standard_normal(n) if v0 is None else np.asarray(v0, dtype=np.float64)).to(device)
    basis[0] = (v0 / v0.norm()).float()
    t = np.zeros((m, m))
    start, beta = 0, 0.0
    max_restarts = max_iter or max(100, 10 * m)
    theta = s = None
    converged, top_ok, bottom_ok, products, loose_at = False, False, False, 0, None
    for restart in range(max_restarts):
        for j in range(start, m):
            v = basis[j].double()
            w = sign * (op.matvec(v).to(device) - shift * v)
            products += 1
            t[j, j] = float(v @ w)
            norms = []
            for _ in range(2):  # full reorthogonalization against the float32 basis
                h = basis[:j + 1] @ w.float()
                w -= (h @ basis[:j + 1]).double()
                norms.append(float(w.norm()))
            beta = norms[1]
            if beta == 0.0 or beta < 0.717 * norms[0]:  # A·v in the basis' span (the DGKS test): invariant
                beta, w = 0.0, _orthogonal_random(basis[:j + 1], rng)
            else:
                w = w / beta
            if j + 1 < m:
                t[j, j + 1] = t[j + 1, j] = beta
            basis[j + 1] = w.float()
        # judged at a full basis only: judged after every product from 10 on, a loose tol stopped at a Ritz
        # value of the bulk's edge before the Krylov space had found an outlier beyond it (tol 0.1: λ_min
        # +0.006 for -0.15, converged; a top 1.00 for 1.12), which a 20-vector space had found
        theta, s = np.linalg.eigh(t)
        order = np.argsort(theta)[::-1]
        theta, s = theta[order], s[:, order]  # descending: the top first, the bottom last
        resid = np.abs(beta * s[m - 1])
        allowed = accuracy(theta[:k]) if accuracy is not None else tol * np.maximum(np.abs(theta[:k]), 1e-30)
        top_ok = bool(np.all(resid[:k] <= allowed))
        if k_bottom:
            low, spread = theta[m - k_bottom:], theta[0] - theta[m - k_bottom:]
            bottom_ok = bool(np.all(resid[m - k_bottom:] <= np.maximum(tol * np.abs(low), floor * spread)))
            if refine is not None and top_ok and np.all(resid[m - k_bottom:] <= tol * spread):
                loose_at = loose_at or products  # as far as a run on θ_max·I − H goes: a bounded amount more
                if not bottom_ok and products - loose_at >= refine * loose_at:
                    break
        if top_ok and (bottom_ok or not k_bottom):
            converged = True
            break
        if restart == max_restarts - 1:  # out of restarts: theta and s describe the basis as it is
            break
        # restart: the kept Ritz vectors, then the residual direction, arrowhead coupling
        kept = np.r_[np.arange(keep_top), np.arange(m - keep_bottom, m)]
        sk = torch.from_numpy(s[:, kept].T.copy()).float().to(device)
        for c in range(0, n, chunk):
            basis[:keep, c:c + chunk] = sk @ basis[:m, c:c + chunk]
        basis[keep] = basis[m]
        t = np.zeros((m, m))
        t[np.arange(keep), np.arange(keep)] = theta[kept]
        t[keep, :keep] = t[:keep, keep] = beta * s[m - 1, kept]
        start = keep
    top = (theta[:k], _ritz_vectors(basis, s[:, :k], m, chunk))
    if not k_bottom:
        return (*top, converged)
    low = np.arange(m - 1, m - 1 - k_bottom, -1)  # ascending: the most negative first
    return top, (theta[low], _ritz_vectors(basis, s[:, low], m, chunk)), (top_ok, bottom_ok)


def _orthogonal_random(basis: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A random unit vector (float64) orthogonal to the rows of the float32 ``basis`` (two passes)."""
    r = torch.from_numpy(rng.standard_normal(basis.shape[1])).to(basis.device)
    for _ in range(2):
        r -= ((basis @ r.float()) @ basis).double()
    return r / r.norm()


def _ritz_vectors(basis: torch.Tensor, s: np.ndarray, m: int, chunk: int) -> np.ndarray:
    """``V_m^T s`` as a float64 numpy array (n, k), computed in column chunks."""
    sk = torch.from_numpy(s.T.copy()).float().to(basis.device)
    out = torch.cat([sk @ basis[:m, c:c + chunk] for c in range(0, basis.shape[1], chunk)], dim=1)
    out = out.double()
    return (out / out.norm(dim=1, keepdim=True)).T.cpu().numpy()


def _largest(op: HessianLike, k: int, tol: float, max_iter: int | None, seed: int, shift: float = 0.0,
             sign: float = 1.0, floor: float | None = None, fallback: bool = True, spare: int = 0) -> _Ritz:
    """The ``k`` largest eigenpairs of ``A = sign·(H − shift·I)``, none skipped, each to its accuracy.

    Each Ritz pair is held to a residual of ``tol·|θ|``. With ``floor`` (the smallest end of H,
    from ``A = λ_max·I − H``: ``λ = shift − θ``) each λ is held to ``max(tol·|λ|, floor·θ_1)``
    instead, relative to itself: after a first run the residuals are measured (one product
    each) and where larger, Lanczos runs again from its Ritz vectors to that accuracy, for at
    most ``REFINE_FACTOR`` times the products of the first (or ``max_iter`` restarts): a λ near 0
    in a dense cluster (a convex point) may need thousands of products, and is then returned as
    far as it got, not converged, unless the model has at most ``DENSE_FALLBACK`` parameters and no
    ``max_iter`` was given: then the dense answer (``_dense_instead``). A model whose dense Hessian
    costs fewer products gets that from the start. Then, for k ≥ 2, ``_complete`` looks for
    eigenvalues skipped. ``spare``: Ritz pairs held to ``tol·|θ|`` beside the ``k`` returned (``SPARE_RITZ``).
    """
    a = _Operator(op, shift, sign)

    def need(th: np.ndarray, spread: float | None = None) -> np.ndarray:
        if floor is None:
            return tol * np.abs(th)
        spread = max(float(th[0]), 0.0) if spread is None else spread
        return np.maximum(tol * np.abs(shift + sign * th), floor * spread)

    before = op.n_products
    ritz = _lanczos(a, k + spare, tol, max_iter, seed)
    if spare:
        ritz = _Ritz(ritz.values[:k], ritz.vectors[:, :k], ritz.converged, ritz.bound[:k], ritz.exact)
    allowance = REFINE_FACTOR * (op.n_products - before)  # products a tighter run may take
    if ritz.exact or not ritz.converged:
        return ritz if ritz.converged else (_dense_instead(a, k, max_iter, fallback) or ritz)
    vals, vecs, bound, run_tol = ritz.values, ritz.vectors, ritz.bound, tol
    for _ in range(3):  # a second run is enough unless the first estimate of λ was far off
        goal = need(vals)
        if np.all(bound <= goal):
            break
        bound = _residuals(a, vals, vecs)
        tighter = max(float(np.min(goal / np.maximum(np.abs(vals), 1e-300))), floor or 0.0)
        if np.all(bound <= goal) or tighter >= run_tol:
            break
        if _cheaper_dense(allowance, op.n_params):
            return _dense(a, k)
        ncv = 40 if tighter < 1e-3 * tol else 20  # far tighter, in a cluster: a larger basis restarts less
        budget = max_iter or _restarts(allowance, k, op.n_params, ncv)
        before = op.n_products
        again = _lanczos(a, k, tighter, budget, seed, v0=vecs.sum(axis=1), accuracy=need, ncv=ncv)
        logger.debug("Lanczos again at tol %.2g for %d values: %d products", tighter, k, op.n_products - before)
        if not again.converged:
            if np.all(np.isfinite(again.values)):  # the thick-restart run's Ritz values: closer than the first
                vals, vecs = again.values, again.vectors
            logger.info("the smallest eigenvalues %s were not held to %.2g of themselves within %d restarts; "
                        "pass a larger max_iter", np.round(shift + sign * vals, 8).tolist(), tol, budget)
            return _dense_instead(a, k, max_iter, fallback) or _Ritz(vals, vecs, False, np.full(k, np.inf))
        vals, vecs, bound, run_tol = again.values, again.vectors, again.bound, tighter
    if k < 2:
        return _Ritz(vals, vecs, True, bound)
    spread = float(vals[0])
    return _complete(a, _Ritz(vals, vecs, True, bound), lambda th: need(th, spread), tol, max_iter, seed, fallback)


def _restarts(products: float, k: int, n: int, ncv: int = 20) -> int:
    """The Lanczos restarts that take about ``products`` Hessian-vector products for ``k`` values."""
    if n >= DEVICE_LANCZOS_MIN_PARAMS:
        m = min(n - 1, max(2 * k + 1, 20))
        per = m - min(m - 1, max(k, m // 2))
    else:
        per = min(n, max(2 * k + 1, ncv)) - k
    return max(1, int(np.ceil(products / max(per, 1))))


def _residuals(a: _Operator, vals: np.ndarray, vecs: np.ndarray) -> np.ndarray:
    """``‖A v − θ v‖`` of each Ritz pair: one product each."""
    out = []
    for th, v in zip(vals, vecs.T):
        v = torch.from_numpy(np.ascontiguousarray(v)).to(a.device)
        out.append(float((a.matvec(v) - th * v).norm()))
    return np.asarray(out)


def _complete(a: _Operator, ritz: _Ritz, need: _Accuracy, tol: float, max_iter: int | None, seed: int,
              fallback: bool = True) -> _Ritz:
    """The ``k`` largest with the copies of repeated eigenvalues a single-vector Lanczos skips.

    In exact arithmetic Lanczos sees one vector of each eigenspace, so a repeated eigenvalue
    comes once and the k values found go on to smaller ones. Lanczos on A deflated by the
    vectors found (``_Operator(locked=...)``, the start projected too) gives the largest
    eigenvalue left; where it exceeds the k-th found θ_k by more than ``need`` it is taken in,
    and the search repeats (at most k times). A search stops once it is decided: its value ``μ``
    above ``θ_k + need`` (a Ritz value is at most the largest eigenvalue) and held to ``need``,
    or ``μ`` plus its residual below; ARPACK, which knows only a tolerance relative to μ, runs
    at ``tol`` and again from its Ritz vector, tighter, until one is. Where nothing was skipped
    this costs one more run, the longer the closer the next eigenvalue is to θ_k.
    """
    vals, vecs, bound = ritz.values, ritz.vectors, ritz.bound
    k = len(vals)
    found = [(float(v), vecs[:, i], float(b)) for i, (v, b) in enumerate(zip(vals, bound))]
    for i in range(k):
        kth, margin = float(vals[k - 1]), float(need(vals)[k - 1])
        if vals[0] - kth <= margin:  # all found equal: a skipped copy is no larger than them
            break
        locked, _ = np.linalg.qr(np.column_stack([f[1] for f in found]))
        below = kth - max(abs(kth), 1e-2 * abs(vals[0]), 1e-300)
        deflated = _Operator(a.op, a.shift, a.sign, locked, below)
        decided = _settling(need, kth + margin)
        before = a.n_products
        left = _lanczos(deflated, 1, tol, max_iter, seed + 100 + i)
        allowance, run_tol = REFINE_FACTOR * (a.n_products - before), tol
        budget = max_iter or _restarts(allowance, 1, a.n_params)
        for _ in range(3):  # from its Ritz vector, tighter, until decided
            if not left.converged or left.exact or left.bound[0] <= decided(left.values)[0]:
                break
            if _cheaper_dense(allowance, a.n_params):
                return _dense(a, k)
            mu = abs(float(left.values[0]))
            run_tol = max(min(0.5 * run_tol, float(decided(left.values)[0]) / max(mu, 1e-300)), 1e-16)
            left = _lanczos(deflated, 1, run_tol, budget, seed, v0=left.vectors[:, 0], accuracy=decided)
        logger.debug("Lanczos deflated by %d vectors: %.8g against the k-th %.8g (margin %.2g), %d products",
                     locked.shape[1], left.values[0], kth, margin, a.n_products - before)
        if not left.converged or left.bound[0] > decided(left.values)[0]:
            return _dense_instead(a, k, max_iter, fallback) or _Ritz(vals, vecs, False, bound)
        if not left.values[0] > kth + margin:
            break
        found.append((float(left.values[0]), left.vectors[:, 0], float(left.bound[0])))
        found.sort(key=lambda f: -f[0])
        vals = np.asarray([f[0] for f in found[:k]])
        vecs = np.column_stack([f[1] for f in found[:k]])
        bound = np.asarray([f[2] for f in found[:k]])
    return _Ritz(vals, vecs, True, bound)


def _settling(need: _Accuracy, threshold: float) -> _Accuracy:
    """The residual that decides whether the largest eigenvalue exceeds ``threshold``: ``need`` above
    it, and below it the distance to it (the eigenvalue is within the residual of the Ritz value)."""
    return lambda th: np.where(th > threshold, need(th), np.maximum(need(th), threshold - th))


def extreme_eigenpairs(op: HessianLike, *, n_max: int = 1, n_min: int = 0, tol: float = 1e-3,
                       max_iter: int | None = None, seed: int = 0,
                       relative_min: bool = True) -> tuple[Eigenpairs, Eigenpairs | None]:
    """The ``n_max`` largest and ``n_min`` smallest (most negative) eigenpairs of ``op``.

    Accuracy (``converged`` says it was reached): each largest λ within ``tol·|λ|`` of an
    eigenvalue (its residual ``‖H v − λ v‖`` is at most that); each smallest within
    ``max(tol·|λ|, ρ·(λ_max − λ_min))``, ρ = ``resolution(op)`` (1e-12 for float64 models,
    about 1e-6 for float32 ones and from ``DEVICE_LANCZOS_MIN_PARAMS`` on, where the float32
    basis makes tol at least ``DEVICE_LANCZOS_TOL`` at both ends): relative to itself, down to
    what the arithmetic resolves, for at most ``REFINE_FACTOR`` times the products that
    ``tol·(λ_max − λ_min)`` takes (a λ_min near 0 in a dense cluster, at a convex point, may need
    thousands: it is then as far as it got, ``converged`` False; ``max_iter`` lifts it; a model
    whose dense Hessian costs fewer products gets that, and one of at most ``DENSE_FALLBACK``
    parameters gets it where Lanczos falls short, once for both ends, unless ``max_iter`` is given).
    With ``relative_min=False`` each smallest is held to ``tol·(λ_max − λ_min)`` only: what
    ``|λ_min/λ_max|`` needs to within about ``tol`` (an eigen-map), at the cost of a plain run with
    ``SPARE_RITZ`` more Ritz pairs converged at that end (with none, a λ_min in a tight cluster came back
    as another of the cluster, outside that bound; ``converged`` then needs the spare too, so under a
    ``max_iter`` a point may be NaN where λ_min alone had converged), and without the dense fallback (an
    eigen-map's point short of it is NaN, not n more products).
    Repeated eigenvalues come with their copies (``_complete``). A Hessian that is exactly zero gives
    zeros and orthonormal vectors.

    The largest come from Lanczos on H; the smallest from Lanczos on ``λ_max·I − H``
    (whose largest eigenvalues are ``λ_max − λ_min``), which converges like an extreme
    eigenvalue instead of an interior one (``_largest``). For one pair at each end from
    ``DEVICE_LANCZOS_MIN_PARAMS`` on, one thick-restart run yields both with that same
    accuracy for the smallest (the Krylov space of H is that of ``c·I − H``): about half
    the Hessian-vector products; the products are then counted on the largest's
    ``Eigenpairs`` (the smallest's says 0).
    """
    if op.n_params >= DEVICE_LANCZOS_MIN_PARAMS:
        tol = max(tol, DEVICE_LANCZOS_TOL)
    floor = resolution(op) if relative_min else None
    spare = SPARE_RITZ if n_min and not relative_min else 0  # a tighter run from the Ritz vector needs none
    start = op.n_products
    if n_max <= 1 and n_min == 1 and op.n_params >= DEVICE_LANCZOS_MIN_PARAMS:
        # both ends from one Krylov space (see _device_lanczos): half the products of two runs. Only
        # for one pair at each end (eigen-maps, max/min directions): with several at tight tolerance
        # the shared basis keeps no spare Ritz vectors and costs more than two runs
        (vals, vecs), (mins, min_vecs), (ok, ok_min) = _device_lanczos(
            op, max(n_max, 1), tol, max_iter, seed, k_bottom=n_min + spare, floor=tol if floor is None else floor,
            refine=None if max_iter or floor is None else REFINE_FACTOR)
        top = Eigenpairs(vals[:n_max], torch.from_numpy(vecs[:, :n_max].T.copy()).float(), op.n_products - start, ok)
        return top, Eigenpairs(mins[:n_min], torch.from_numpy(min_vecs[:, :n_min].T.copy()).float(), 0, ok_min)
    op.dense_memo = {}  # the dense fallback's matrix, shared by both ends of this call only (the weights move)
    try:
        return _both_ends(op, n_max, n_min, tol, max_iter, seed, floor, spare)
    finally:
        op.dense_memo = None


def _both_ends(op: HessianLike, n_max: int, n_min: int, tol: float, max_iter: int | None, seed: int,
               floor: float | None, spare: int = 0) -> tuple[Eigenpairs, Eigenpairs | None]:
    """`extreme_eigenpairs` by two runs of `_largest`: on H, then on ``λ_max·I − H``."""
    start = op.n_products
    high = _largest(op, max(n_max, 1), tol, max_iter, seed, fallback=floor is not None)
    rows = torch.float64 if op.params[0].dtype == torch.float64 else torch.float32  # float32: 2.5e-6 residuals
    top = Eigenpairs(high.values[:n_max], torch.from_numpy(high.vectors[:, :n_max].T.copy()).to(rows),
                     op.n_products - start, high.converged)
    if n_min <= 0:
        return top, None
    start = op.n_products
    lmax = float(np.nanmax(high.values))
    low = _largest(op, n_min, tol, max_iter, seed + 1, shift=lmax, sign=-1.0, floor=floor, fallback=floor is not None,
                   spare=spare)
    # -(H - λ_max I) has eigenvalues λ_max - λ: its largest first are the most negative first
    bottom = Eigenpairs(lmax - low.values, torch.from_numpy(low.vectors.T.copy()).to(rows), op.n_products - start,
                        low.converged)
    return top, bottom
