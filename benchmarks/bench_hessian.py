"""An eigen-map point's λ_max and λ_min: one Lanczos run for both ends against two runs.

    python benchmarks/bench_hessian.py                         # resnet20/56-digits, 128 samples
    python benchmarks/bench_hessian.py --models resnet110-digits --samples 64 --tol 1e-3 --repeats 3

For each zoo model (from 100k parameters on, where ``lanczos.extreme_eigenpairs`` takes one
thick-restart run for both ends): Hessian-vector products and seconds for the largest and the
most negative eigenvalue from that one run, and from the two runs used before (λ_max, then the
top of ``λ_max·I − H``), timed in turn (medians of ``--repeats``), with the ratio and the
eigenvalues each gives. One torch thread unless ``--threads``.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import landscape_nb as lnb
from landscape_nb import hessian, lanczos


def two_runs(op, tol: float, seed: int):
    tol = max(tol, lanczos.DEVICE_LANCZOS_TOL)
    top, _, _ = lanczos._device_lanczos(op, 1, tol, None, seed)
    shifted, _, _ = lanczos._device_lanczos(op, 1, tol, None, seed + 1, shift=float(top[0]), sign=-1.0)
    return float(top[0]), float(top[0] - shifted[0])


def one_run(op, tol: float, seed: int):
    top, bottom = hessian.extreme_eigenpairs(op, n_max=1, n_min=1, tol=tol, seed=seed, relative_min=False)  # as HessianEvaluator
    return float(top.values[0]), float(bottom.values[0])


def measure(fn, op, tol: float, repeats: int):
    seconds, products = [], []
    for _ in range(repeats):
        start, t0 = op.n_products, time.perf_counter()
        values = fn(op, tol, 0)
        seconds.append(time.perf_counter() - t0)
        products.append(op.n_products - start)
    return statistics.median(seconds), statistics.median(products), values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet20-digits", "resnet56-digits"])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{args.samples} samples, tol {args.tol:g}, median of {args.repeats}")
    print("| model | parameters | one run: products, s | two runs: products, s | speed-up | "
          "λmax, λmin (one) | λmax, λmin (two) |\n|---|---|---|---|---|---|---|")
    for name in args.models:
        ex = lnb.zoo.load(name)
        x, y = ex.test
        op = hessian.HessianOperator(ex.model, (x[:args.samples], y[:args.samples]), loss_fn=ex.loss_fn)
        if op.n_params < lanczos.DEVICE_LANCZOS_MIN_PARAMS:
            print(f"| {name} | {op.n_params:,} | (below {lanczos.DEVICE_LANCZOS_MIN_PARAMS:,}: ARPACK, two runs) |")
            continue
        t1, n1, v1 = measure(one_run, op, args.tol, args.repeats)
        t2, n2, v2 = measure(two_runs, op, args.tol, args.repeats)
        print(f"| {name} | {op.n_params:,} | {n1:.0f}, {t1:.2f} | {n2:.0f}, {t2:.2f} | {t2 / t1:.2f}× | "
              f"{v1[0]:.4g}, {v1[1]:.4g} | {v2[0]:.4g}, {v2[1]:.4g} |")


if __name__ == "__main__":
    main()
