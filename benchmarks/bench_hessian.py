"""An eigen-map point's λ_max and λ_min: one Lanczos run for both ends against two runs; and a
Hessian-vector product through one kept gradient graph against one computed for each product.

    python benchmarks/bench_hessian.py                         # resnet20/56-digits, 128 samples
    python benchmarks/bench_hessian.py --models resnet110-digits --samples 64 --tol 1e-3 --repeats 3
    python benchmarks/bench_hessian.py --graph-samples 8 64 360 --models mlp-digits cnn-digits resnet20-digits

For each zoo model (from 100k parameters on, where ``lanczos.extreme_eigenpairs`` takes one
thick-restart run for both ends): Hessian-vector products and seconds for the largest and the
most negative eigenvalue from that one run, and from the two runs used before (λ_max, then the
top of ``λ_max·I − H``), timed in turn (medians of ``--repeats``), with the ratio and the
eigenvalues each gives. Then, for each model and each of ``--graph-samples``, the milliseconds of one
product (median of 20, after 3) inside ``HessianOperator.reusing_graph`` (one backward pass through
the gradient graph kept for the weights, what eigen-maps, eigenvalues, spectra and traces use) and
outside it (a forward and two backward passes each, as before), the ratio, and the largest
difference between the two products. One torch thread unless ``--threads``.
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
    # with the spare Ritz pair an eigen-map's one run converges beside λ_min (lanczos.SPARE_RITZ)
    shifted, _, _ = lanczos._device_lanczos(op, 1 + lanczos.SPARE_RITZ, tol, None, seed + 1, shift=float(top[0]),
                                            sign=-1.0)
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


def product_ms(op, v, reuse: bool, n: int = 20) -> tuple[float, torch.Tensor]:
    """Median ms of ``op.matvec(v)`` (after 3 not timed), inside ``reusing_graph`` or not, and the product."""
    import contextlib

    with op.reusing_graph() if reuse else contextlib.nullcontext():
        for _ in range(3):
            hv = op.matvec(v)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            op.matvec(v)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times), hv


def graph_table(models, samples) -> None:
    print("\n| model | samples | kept graph (ms/product) | each its own (ms/product) | speed-up | max |Δ| / max |Hv| |"
          "\n|---|---|---|---|---|---|")
    for name in models:
        ex = lnb.zoo.load(name)
        x, y = ex.test
        for n in samples:
            op = hessian.HessianOperator(ex.model, (x[:n], y[:n]), loss_fn=ex.loss_fn)
            v = torch.randn(op.n_params, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            kept, hv_kept = product_ms(op, v, True)
            own, hv_own = product_ms(op, v, False)
            diff = float((hv_kept - hv_own).abs().max() / hv_own.abs().max())
            print(f"| {name} | {n} | {kept:.1f} | {own:.1f} | {own / kept:.2f}× | {diff:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet20-digits", "resnet56-digits"])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--graph-samples", type=int, nargs="*", default=[8, 64],
                        help="sample counts of the kept-graph table (none: no table)")
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
    if args.graph_samples:
        graph_table(args.models, args.graph_samples)


if __name__ == "__main__":
    main()
