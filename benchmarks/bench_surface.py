"""Seconds per grid point: the reference algorithm vs landscape_nb, measured in one run.

    python benchmarks/bench_surface.py                 # CPU: zoo models, Dask scaling
    python benchmarks/bench_surface.py --gpu           # + CIFAR-shaped ResNet-56 and client="cuda"

Efficiency (DESIGN.md) = points × (best time of one unperturbed forward pass of the model
as written over the evaluation set) / wall time of the whole surface; landscape_nb folds
eval-mode BatchNorm into the convs, so it can exceed 1. The roofline table counts the
useful FLOPs per pass and divides by the measured fp32 GEMM peak: the time no fp32
direct-convolution implementation can beat on this CPU. The reference algorithm is
tomgoldstein/loss-landscape's: per point, copy the weights in, stream the data from
host memory through a DataLoader in batches of 128, fp32, one host sync per batch.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import landscape_nb as lnb
from landscape_nb.directions import random_directions
from landscape_nb.evaluate import EvalSettings, Evaluator, gpu_flags
from landscape_nb.process import keep_heap_top


def best_forward_seconds(model, data, device, repeats=15, **settings) -> float:
    """Time of one unperturbed pass of the model as written (BN not folded) over the evaluation
    set at its best batch size: the median of ``repeats`` passes (a surface's time per point is
    a mean over many passes, so a minimum here would flatter the baseline by the noise)."""
    from landscape_nb.evaluate import BATCH_CANDIDATES

    d = random_directions(model, n=2)
    settings = {**settings, "fold_bn": False}
    ev = Evaluator(model, data, d.vectors, d.layout, device=device, settings=EvalSettings(**settings))
    ev.shared_layer = None  # the model as written: its first layer runs too
    n = ev.n_samples
    sizes = [settings["batch_size"]] if settings.get("batch_size") else [n] + [b for b in BATCH_CANDIDATES if b < n]
    ev.model.eval()

    def median_pass(bs, reps):
        ev.use_batch_size(bs)
        with torch.no_grad(), ev._precision():
            return median_seconds(lambda: ev.point_values().cpu(), reps, device)

    best_bs = min(sizes, key=lambda bs: median_pass(bs, 5))
    return median_pass(best_bs, repeats)


def median_seconds(fn, reps, device="cpu") -> float:
    """Median wall time of ``reps`` calls of ``fn`` after one warm-up call."""
    times = []
    for _ in range(reps + 1):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def reference_algorithm(model, data, directions, points, device) -> tuple[float, np.ndarray]:
    """Seconds per point and losses of the reference implementation's loop."""
    model = model.to(device).eval()
    params = [p for p in model.parameters()]
    w0 = [p.detach().clone() for p in params]
    dirs = [[t.to(device) for t in sd.values()] for sd in directions.as_state_dicts()]
    x, y = (t.cpu() for t in data)
    crit = nn.CrossEntropyLoss()
    losses = []
    t0 = time.perf_counter()
    for c in points:
        for i, p in enumerate(params):  # the reference's set_weights
            p.data = w0[i] + sum(float(ck) * dirs[k][i] for k, ck in enumerate(c))
        loader = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=False)
        total, correct, n = 0.0, 0, 0
        with torch.no_grad():
            for xb, yb in loader:
                xb, yb = xb.to(device), yb.to(device)
                out = model(xb)
                total += crit(out, yb).item() * len(xb)
                correct += (out.argmax(1) == yb).sum().item()
                n += len(xb)
        losses.append(total / n)
    elapsed = (time.perf_counter() - t0) / len(points)
    for p, w in zip(params, w0):
        p.data = w
    return elapsed, np.array(losses)


def all_digits(ex):
    return torch.cat([ex.train[0], ex.test[0]]), torch.cat([ex.train[1], ex.test[1]])


def bench_model(label, model, data, device, n_grid, n_ref, rows, **settings):
    d = random_directions(model, n=2, seed=0)
    pts = [(a, b) for b in np.linspace(-1, 1, n_grid) for a in np.linspace(-1, 1, n_grid)]
    # on the CPU the baseline and the reference are measured before and after the surface and
    # averaged, so a machine whose speed drifts (this VM's does, by ~15 %) biases no column
    fwd = best_forward_seconds(model, data, device, **settings)
    ref_s, ref_loss = reference_algorithm(model, data, d, pts[:n_ref], device)
    t0 = time.perf_counter()
    surf = lnb.compute_surface(model, data, d, x=(-1, 1, n_grid), y=(-1, 1, n_grid), device=device, **settings)
    wall = time.perf_counter() - t0
    if torch.device(device).type == "cpu":
        ref_s = (ref_s + reference_algorithm(model, data, d, pts[:n_ref], device)[0]) / 2
        fwd = (fwd + best_forward_seconds(model, data, device, **settings)) / 2
    ours = wall / surf.loss.size
    got = surf.loss.reshape(-1)[:n_ref]
    rel = float(np.max(np.abs(got - ref_loss) / np.abs(ref_loss)))
    setup = wall - surf.provenance["seconds"]  # evaluator, data to device, hashing, validation
    rows.append((label, str(device), f"{n_grid}x{n_grid}", fwd * 1e3, ref_s * 1e3, ours * 1e3,
                 surf.loss.size * fwd / wall, ref_s / ours, rel, setup))
    return surf


def useful_flops_per_sample(model, x) -> float:
    """FLOPs (2 per multiply-add) of the convolutions and linear layers for one sample,
    counting only kernel taps that land inside the input (zero padding costs nothing)."""
    import torch.nn.functional as F

    total = [0.0]

    def conv_hook(m, inputs, out):
        xin = inputs[0]
        spatial = xin.shape[2:]
        if m.padding_mode != "zeros":
            taps = out[0, 0].numel() * float(np.prod(m.kernel_size))
        else:
            conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(spatial)]
            ones = conv(torch.ones(1, 1, *spatial), torch.ones(1, 1, *m.kernel_size), stride=m.stride,
                        padding=m.padding, dilation=m.dilation)
            taps = float(ones.sum())
        total[0] += 2 * taps * (m.in_channels // m.groups) * m.out_channels

    def linear_hook(m, inputs, out):
        total[0] += 2 * out[0].numel() * m.in_features

    handles = [m.register_forward_hook(conv_hook if isinstance(m, nn.modules.conv._ConvNd) else linear_hook)
               for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return total[0]


def conv_floor_seconds(model, x, repeats=3) -> float:
    """Sum over the model's convolutions of each one's best time over the evaluation set,
    every layer at its own best memory format and batch size (weights as they are): what the
    convolutions alone cost with this CPU's oneDNN, before any other layer is counted."""
    calls = []
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, tuple(i[0].shape[1:]))))
             for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    try:
        with torch.no_grad():
            model.eval()(x[:1])
    finally:
        for h in hooks:
            h.remove()
    n, total = len(x), 0.0
    sizes = [n] + [b for b in (1024, 512, 256) if b < n]
    with torch.no_grad():
        for conv, shape in calls:
            best = float("inf")
            for fmt in (torch.contiguous_format, torch.channels_last):
                inp = torch.randn(n, *shape).contiguous(memory_format=fmt)
                w = conv.weight.contiguous(memory_format=fmt)
                for bs in sizes:
                    run = lambda: [conv._conv_forward(inp[i:i + bs], w, conv.bias)  # noqa: E731
                                   for i in range(0, n, bs)]
                    best = min(best, median_seconds(run, repeats))
            total += best
    return total


def peak_gemm_flops(n=2048, repeats=7) -> float:
    """FLOP/s of a large fp32 matrix product: what this CPU's BLAS reaches at best."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def bench_roofline(rows):
    """How far from the arithmetic floor each conv model is, and the best speed-up any fp32
    direct-convolution implementation could have over the reference on this CPU."""
    peak = peak_gemm_flops()
    out = []
    for label, _, _, fwd_ms, ref_ms, ours_ms, *_ in rows:
        if "resnet" not in label and "cnn" not in label:
            continue
        ex = lnb.zoo.load(label)
        x = all_digits(ex)[0]
        flops = useful_flops_per_sample(ex.model, x) * len(x)
        floor_ms = flops / peak * 1e3
        conv_ms = conv_floor_seconds(ex.model, x) * 1e3
        out.append((label, flops / 1e9, peak / 1e9, floor_ms, ref_ms / floor_ms, conv_ms, ref_ms / conv_ms, ref_ms,
                    ours_ms, flops / (ours_ms / 1e3) / peak * 100, ref_ms / ours_ms))
    print_table("CPU roofline: useful FLOPs at the measured fp32 GEMM peak, and the convolutions alone",
                ["model", "GFLOP per pass", "peak GFLOP/s (2048² matmul)", "peak floor ms/pt",
                 "ceiling vs reference at peak", "convs alone ms/pt (each at its best)",
                 "ceiling vs reference, convs alone", "reference ms/pt", "landscape_nb ms/pt",
                 "landscape_nb % of peak", "landscape_nb speed-up"], out,
                ["{}", "{:.2f}", "{:.0f}", "{:.1f}", "{:.2f}x", "{:.1f}", "{:.2f}x", "{:.1f}", "{:.1f}", "{:.0f}",
                 "{:.2f}x"])


def print_table(title, header, rows, fmt):
    print(f"\n## {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(f.format(v) for f, v in zip(fmt, r)) + " |")


def bench_dask(ex, n_grid, n_ref):
    """Reference vs in-process (2 threads, 1 thread) vs Dask with 1 and 2 single-thread workers."""
    from landscape_nb.cluster import local_cluster

    data = all_digits(ex)
    d = random_directions(ex.model, n=2, seed=0)
    kw = dict(x=(-1, 1, n_grid), y=(-1, 1, n_grid))
    n_pts = n_grid * n_grid
    ref_s, _ = reference_algorithm(ex.model, data, d, [(0.1, 0.1)] * n_ref, "cpu")
    rows, base = [("reference algorithm (2 threads)", ref_s * n_pts, ref_s * 1e3, 1.0, float("nan"), float("nan"),
                   float("nan"))], None
    threads = torch.get_num_threads()
    for label, n_threads in (("in-process, 2 threads", threads), ("in-process, 1 thread", 1)):
        torch.set_num_threads(n_threads)
        t0 = time.perf_counter()
        ref = lnb.compute_surface(ex.model, data, d, **kw)
        t = time.perf_counter() - t0
        rows.append((label, t, t / n_pts * 1e3, ref_s * n_pts / t, float("nan"), float("nan"), 0.0))
    torch.set_num_threads(threads)
    t_in_1 = rows[-1][1]
    for n in (1, 2):
        owned = local_cluster(n_workers=n, threads_per_worker=1)
        try:
            lnb.compute_surface(ex.model, data, d, x=(-1, 1, 3), y=(-1, 1, 3), client=owned.client)  # warm workers
            t0 = time.perf_counter()
            s = lnb.compute_surface(ex.model, data, d, **kw, client=owned.client)
            t = time.perf_counter() - t0
        finally:
            owned.close()
        base = base or t
        diff = float(np.max(np.abs(s.loss - ref.loss) / np.abs(ref.loss)))
        rows.append((f"dask, {n} worker(s) x 1 thread", t, t / n_pts * 1e3, ref_s * n_pts / t, base / t,
                     (t - t_in_1) / t_in_1 * 100 if n == 1 else float("nan"), diff))
    print_table(f"Runners: {ex.name}, {n_grid}x{n_grid} grid, {len(data[0])} samples (reference time extrapolated "
                f"from {n_ref} points)",
                ["runner", "wall s", "ms/pt", "speed-up vs reference", "speed-up vs 1 worker",
                 "Dask overhead vs in-process 1 thread %", "max rel diff"], rows,
                ["{}", "{:.1f}", "{:.1f}", "{:.2f}x", "{:.2f}", "{:.1f}", "{:.1e}"])


def cifar_resnet56():
    from landscape_nb.zoo.models import ResNet

    return ResNet(n_classes=10, n_blocks=9, n_in_channels=3).eval()  # 6·9 + 2 = 56 layers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", type=int, default=11)
    ap.add_argument("--ref-points", type=int, default=6)
    ap.add_argument("--dask-grid", type=int, default=31)
    ap.add_argument("--no-dask", action="store_true")
    ap.add_argument("--gpu", action="store_true", help="also run the GPU section (needs CUDA)")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU sections")
    ap.add_argument("--digits-gpu", action="store_true", help="GPU: also cnn-digits and resnet20-digits, 21x21")
    ap.add_argument("--profile", action="store_true", help="GPU: the kernels of three ResNet-56 bf16 points")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's heap trimming as it is (the CLI and our workers keep 256 MiB)")
    args = ap.parse_args()
    torch.manual_seed(0)
    kept = False if args.default_malloc else keep_heap_top()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"cuda {torch.cuda.is_available() and torch.cuda.get_device_name()}, "
          f"heap top kept (all runs below, reference too): {kept}")
    if not args.no_cpu:
        bench_cpu(args)
    if args.gpu and torch.cuda.is_available():
        bench_gpu(args)


def bench_cpu(args):
    rows = []
    for name in ("mlp-digits", "resnet20-digits", "resnet20-noskip-digits", "vit-digits"):
        ex = lnb.zoo.load(name)
        bench_model(name, ex.model, all_digits(ex), "cpu", args.grid, args.ref_points, rows)
    header = ["model", "device", "grid", "forward ms", "reference ms/pt", "landscape_nb ms/pt", "efficiency",
              "speed-up vs reference", "max rel diff", "setup s"]
    fmt = ["{}", "{}", "{}", "{:.2f}", "{:.2f}", "{:.2f}", "{:.2f}", "{:.1f}x", "{:.1e}", "{:.2f}"]
    print_table("CPU, in-process (digits: all 1797 samples; forward = the model as written, best batch size, "
                "median of 15 passes)",
                header, rows, fmt)
    bench_roofline(rows)
    if not args.no_dask:
        bench_dask(lnb.zoo.load("resnet20-digits"), args.dask_grid, args.ref_points)


#: the GPU section's device and CIFAR-shaped evaluation set (a CPU smoke run of this script shrinks them)
GPU, CIFAR_SAMPLES = "cuda", 10000


def bench_gpu(args):
    rows = []
    ex = lnb.zoo.load("mlp-digits")
    data = all_digits(ex)
    bench_model("mlp-digits fp32, 1 pt/pass", ex.model, data, GPU, 51, 20, rows, points_per_pass=1)
    bench_model("mlp-digits fp32, auto stacked", ex.model, data, GPU, 51, 20, rows)
    if args.digits_gpu:
        for name in ("cnn-digits", "resnet20-digits"):
            m = lnb.zoo.load(name)
            bench_model(f"{name} fp32, auto", m.model, all_digits(m), GPU, 21, 6, rows)
    header = ["model", "device", "grid", "forward ms", "reference ms/pt", "landscape_nb ms/pt", "efficiency",
              "speed-up vs reference", "max rel diff vs reference", "setup s"]
    fmt = ["{}", "{}", "{}", "{:.2f}", "{:.2f}", "{:.2f}", "{:.2f}", "{:.1f}x", "{:.1e}", "{:.2f}"]
    print_table(f"GPU: {torch.cuda.get_device_name() if GPU == 'cuda' else GPU} (ms/pt = one surface's wall "
                "time, its first in this process at that size, setup included, over its points)", header, rows, fmt)
    bench_gpu_targets(ex, args)
    if args.profile:
        model, (x, y) = cifar_resnet56(), cifar_data()
        profile_point(model, (x, y), CIFAR_SAMPLES, dict(channels_last=True, precision="bf16", compile=True))
    try:
        from landscape_nb.cluster import cuda_cluster

        owned = cuda_cluster()
        d = random_directions(ex.model, n=2, seed=0)
        t0 = time.perf_counter()
        s = lnb.compute_surface(ex.model, data, d, x=(-1, 1, 51), y=(-1, 1, 51), client=owned.client)
        print(f"\nclient='cuda' ({len(owned.client.scheduler_info()['workers'])} workers): mlp-digits 51x51 in "
              f"{time.perf_counter() - t0:.2f} s, complete={s.is_complete}")
        owned.close()
    except lnb.LandscapeError as exc:
        print(f"\nclient='cuda' skipped: {exc}")


def cifar_data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(CIFAR_SAMPLES, 3, 32, 32, generator=g), torch.randint(0, 10, (CIFAR_SAMPLES,), generator=g)


def bench_gpu_targets(ex, args):
    """Issue 12's GPU targets: the digits MLP's whole 51x51 surface (median of 5 after a warm-up, the
    two evaluation sets interleaved), and the CIFAR-shaped ResNet-56 on 10,000 samples per precision:
    a 3x3 surface first (compile, cuDNN's algorithm search), then 4x4 and 8x8; a point's cost is their
    difference over 48 points, and the 51x51 estimate is the 4x4 surface's fixed cost plus 2601 such
    points. The error is against the reference algorithm in strict fp32 at three grid points."""
    out = []
    sets = [("mlp-digits (1797 samples)", all_digits(ex)), ("mlp-digits (360, test split)", ex.test)]
    d = random_directions(ex.model, n=2, seed=0)
    times: dict[str, list[float]] = {label: [] for label, _ in sets}
    kept = {}
    for _ in range(6):
        for label, data in sets:
            _sync(GPU)
            t0 = time.perf_counter()
            s = lnb.compute_surface(ex.model, data, d, x=(-1, 1, 51), y=(-1, 1, 51), device=GPU)
            _sync(GPU)
            times[label].append(time.perf_counter() - t0)
            kept[label] = f"{s.provenance['batch_size']} / {s.provenance['points_per_pass']}"
    for label, _ in sets:
        out.append((f"{label}, fp32", "51x51 measured", float(np.median(times[label][1:])), float("nan"),
                    float("nan"), kept[label]))
    model, data = cifar_resnet56(), cifar_data()
    d = random_directions(model, n=2, seed=0)
    grid4 = [(a, b) for b in np.linspace(-1, 1, 4) for a in np.linspace(-1, 1, 4)][:3]
    with gpu_flags(tf32=False, benchmark=False):  # PyTorch's default runs fp32 convolutions in TF32
        _, ref = reference_algorithm(model, data, d, grid4, GPU)
    modes = [("fp32", {}), ("tf32", {"precision": "tf32"}), ("tf32 + channels_last", dict(channels_last=True, precision="tf32")),
             ("bf16 + channels_last", dict(channels_last=True, precision="bf16")),
             ("bf16 + channels_last + compile", dict(channels_last=True, precision="bf16", compile=True)),
             ("tf32 + channels_last + compile", dict(channels_last=True, precision="tf32", compile=True)),
             # last: Triton's autotuning of each convolution shape may take minutes
             ("bf16 + channels_last + compile max-autotune",
              dict(channels_last=True, precision="bf16", compile="max-autotune-no-cudagraphs"))]
    for label, st in modes:
        try:
            walls, surfs = {}, {}
            for n in (3, 4, 8):
                _sync(GPU)
                t0 = time.perf_counter()
                surfs[n] = lnb.compute_surface(model, data, d, x=(-1, 1, n), y=(-1, 1, n), device=GPU, **st)
                _sync(GPU)
                walls[n] = time.perf_counter() - t0
            point = (walls[8] - walls[4]) / 48
            err = float(np.max(np.abs(surfs[4].loss.reshape(-1)[:3] - ref) / np.abs(ref)))
            out.append((f"resnet56-cifar 10k, {label}", "51x51 estimated", walls[4] - 16 * point + 2601 * point,
                        point * 1e3, err, surfs[8].provenance["batch_size"]))
            print(f"resnet56-cifar {label}: 3x3 {walls[3]:.2f} s (compile, algorithm search), 4x4 {walls[4]:.2f} s, "
                  f"8x8 {walls[8]:.2f} s; BN: {surfs[8].provenance.get('bn_fold')}; 51x51 ~{out[-1][2]:.0f} s, "
                  f"{point * 1e3:.1f} ms a point, max rel diff {err:.1e}", flush=True)  # kept if a later mode times out
        except Exception as exc:  # noqa: BLE001 - report and go on: one failing mode must not hide the others
            print(f"resnet56-cifar {label}: failed: {type(exc).__name__}: {exc}", flush=True)
    print_table(f"GPU targets: {torch.cuda.get_device_name() if GPU == 'cuda' else GPU} (issue 12: mlp-digits 51x51 "
                "<= 0.03 s; ResNet-56 51x51 <= 60 s in bf16 + compile, <= 180 s in fp32)",
                ["surface", "how", "seconds", "ms a point", "max rel diff vs strict fp32", "batch / points per pass"],
                out, ["{}", "{}", "{:.3f}", "{:.1f}", "{:.1e}", "{}"])


def profile_point(model, data, batch_size, settings):
    """The CUDA kernels of three grid points, by total time: where a point's time goes."""
    from torch.profiler import ProfilerActivity, profile

    d = random_directions(model, n=2, seed=0)
    ev = Evaluator(model, data, d.vectors, d.layout, device=GPU,
                   settings=EvalSettings(batch_size=batch_size, points_per_pass=1, **settings))
    pts = np.array([[0.1, 0.2], [0.3, -0.1], [-0.2, 0.4], [0.0, 0.1]])
    ev.evaluate(pts[:1])  # warm-up (compile)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        ev.evaluate(pts[1:])
        _sync(GPU)
    print(f"\n## Profile: ResNet-56, {settings}, batch {batch_size}, 3 points\n")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60))


if __name__ == "__main__":
    main()
