"""An eigen-map point's λ_min where the smallest eigenvalues sit in a tight cluster: with and without a
spare Ritz pair converged beside it (``lanczos.SPARE_RITZ``).

An eigen-map holds λ_min to ``tol·(λ_max − λ_min)`` only (``extreme_eigenpairs(relative_min=False)``).
A Ritz value with that residual is that close to *an* eigenvalue; with one Ritz pair sought, Lanczos
could stop at the second of a cluster before its Krylov space had found the smallest (trial s53: a
BatchNorm MLP, −0.2464 for −0.2521). Part 1: synthetic Hessians with the smallest three at −0.2521,
−0.2465, −0.2447, a bulk in [−0.24, 0.05] and a top of 3.26 — 451 parameters as a rotated dense matrix
(ARPACK) and 100,000 as a diagonal one (the float32 thick-restart run for both ends) — counting the seeds
whose λ_min is outside the bound, against ``numpy.linalg.eigvalsh``/the diagonal. Part 2: zoo models at
their trained weights, one eigen-map point each way: products, seconds and values. One torch thread.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

import landscape_nb as lnb
from landscape_nb import hessian, lanczos

CLUSTER = [-0.2521, -0.2465, -0.2447]
TOP = [3.26, 2.1, 1.5, 0.9, 0.7, 0.5, 0.4]


class Matrix:
    """A HessianLike over a given symmetric matrix (dense float64) or diagonal."""

    def __init__(self, h: torch.Tensor, diagonal: bool):
        self.h, self.diagonal = h, diagonal
        self.n_params = h.shape[0]
        self.n_products = 0
        self.params = [torch.zeros(self.n_params)]

    def matvec(self, v):
        self.n_products += 1
        v = v.to(torch.float64)
        return self.h * v if self.diagonal else self.h @ v

    def dense(self, max_params: int = 4096):
        self.n_products += self.n_params
        return torch.diag(self.h).numpy() if self.diagonal else self.h.numpy().copy()


def spectrum(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    bulk = -0.24 * rng.random(n - 10) + 0.05 * rng.random(n - 10) ** 4
    return np.r_[bulk, TOP, CLUSTER]


def synthetic(n: int, seeds: int, tol: float, spare: int) -> tuple[int, float, float]:
    """Seeds outside the bound, mean products, the largest error over the bound."""
    lanczos.SPARE_RITZ = spare
    misses, products, worst = 0, 0, 0.0
    for seed in range(seeds):
        ev = spectrum(n, seed)
        if n >= lanczos.DEVICE_LANCZOS_MIN_PARAMS:
            op = Matrix(torch.from_numpy(ev), diagonal=True)
        else:
            q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
            op = Matrix(torch.from_numpy(q @ np.diag(ev) @ q.T), diagonal=False)
        _, bottom = lanczos.extreme_eigenpairs(op, n_max=1, n_min=1, tol=tol, seed=seed, relative_min=False)
        err = float(bottom.values[0]) - ev.min()
        bound = tol * (ev.max() - ev.min())
        misses += err > bound
        products += op.n_products
        worst = max(worst, err / bound)
    return misses, products / seeds, worst


def zoo_point(name: str, samples: int, tol: float, spare: int):
    lanczos.SPARE_RITZ = spare
    ex = lnb.zoo.load(name)
    x, y = ex.test
    op = hessian.HessianOperator(ex.model, (x[:samples], y[:samples]), loss_fn=ex.loss_fn)
    with op.reusing_graph():
        t0 = time.perf_counter()
        top, bottom = lanczos.extreme_eigenpairs(op, n_max=1, n_min=1, tol=tol, seed=0, relative_min=False)
        seconds = time.perf_counter() - t0
    return op.n_params, op.n_products, seconds, float(top.values[0]), float(bottom.values[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=120)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--models", nargs="*", default=["mlp-digits", "cnn-digits", "resnet20-digits"])
    parser.add_argument("--samples", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, tol {args.tol:g}")
    print("\n| parameters | spare | seeds outside the bound | mean products | worst error / bound |\n|---|---|---|---|---|")
    for n in (451, 100_000):
        for spare in (0, 1):
            misses, products, worst = synthetic(n, args.seeds, args.tol, spare)
            print(f"| {n:,} | {spare} | {misses} of {args.seeds} | {products:.1f} | {worst:.2f} |")
    print("\n| model | parameters | spare | products | s | λmax | λmin |\n|---|---|---|---|---|---|---|")
    for name in args.models:
        zoo_point(name, args.samples, args.tol, 0)  # not timed: the first run's allocations and kernels
        for spare in (0, 1):
            n, products, seconds, lmax, lmin = zoo_point(name, args.samples, args.tol, spare)
            print(f"| {name} | {n:,} | {spare} | {products} | {seconds:.2f} | {lmax:.6g} | {lmin:.6g} |")
    lanczos.SPARE_RITZ = 1


if __name__ == "__main__":
    main()
