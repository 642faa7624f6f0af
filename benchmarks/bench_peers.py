"""landscape_nb against the peer libraries, side by side, measured in one run.

    python benchmarks/bench_peers.py                    # zoo models, grids 21×21 and 51×51
    python benchmarks/bench_peers.py --quick            # grids 11×11 and 21×21 (a busy 2-core box)
    python benchmarks/bench_peers.py --grids 21 --models mlp-digits

Same work for every tool: a 2D filter-normalized random plane of a trained zoo model, the
zoo's test split (360 samples) in one batch, one process, fp32. Each peer gets its most
favourable documented usage (see ``peer_driver.py``) and runs in a subprocess of its own
venv (``--peers-python``, default /work/peers-venv/bin/python; create it with
``pip install landscape-nb[bench]`` there, landscaper with ``--no-deps``: it pulls topopy,
which declares numpy<2); its time is the landscape call alone, measured inside that
process. The reference algorithm (tomgoldstein/loss-landscape: per point, copy the weights
in, DataLoader of 128, fp32) runs here on ``--ref-points`` points of the grid.

landscape_nb's time is the whole ``compute_surface`` call (setup, validation, batch-size
tuning, hashing included) in-process, loss and accuracy. Every tool runs ``--repeats`` times
in interleaved rounds (bare forward, landscape_nb, each peer) and its best round counts, so
a machine whose speed drifts biases no column. landscape_nb's later rounds start from the
points per pass its first round's trial chose (``tuning.CHOSEN``: a second surface of a
model in one process, as in a notebook); "first surface" is its first round, trial included.
Efficiency = points × bare forward time /
wall time, where the bare forward is the best round's median of
``cross_entropy(model(x), y)`` over the whole split, model as written.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import landscape_nb as lnb  # noqa: E402
from landscape_nb import tuning  # noqa: E402
from landscape_nb.directions import random_directions  # noqa: E402
from landscape_nb.zoo.entries import registry  # noqa: E402
from bench_surface import median_seconds, print_table, reference_algorithm  # noqa: E402

PEERS = ("loss-landscapes", "landscaper", "loss-landscape-3d")
MODELS = ("mlp-digits", "cnn-digits", "resnet20-digits")


def bare_forward_seconds(model, x, y, reps=30, clock=None) -> float:
    """Median time of one forward + cross-entropy over the whole split (``clock``: CPU time, as a
    mean over ``reps`` calls)."""
    crit = nn.CrossEntropyLoss()
    model.eval()
    with torch.no_grad():
        if clock is None:
            return median_seconds(lambda: crit(model(x), y), reps)
        crit(model(x), y)
        t0 = clock()
        for _ in range(reps):
            crit(model(x), y)
        return (clock() - t0) / reps


def ours(model, data, d, n) -> tuple[float, float, np.ndarray, dict]:
    t0, c0 = time.perf_counter(), time.process_time()
    surf = lnb.compute_surface(model, data, d, x=(-1, 1, n), y=(-1, 1, n))
    return time.perf_counter() - t0, time.process_time() - c0, surf.loss, surf.provenance


def write_job(path, name, model, x, y, d, n) -> None:
    recipe_model = registry.recipe(name).model
    cls = getattr(recipe_model, "func", recipe_model)
    torch.save({
        "models_py": str(Path(lnb.__file__).parent / "zoo" / "models.py"), "cls": cls.__name__,
        "args": tuple(getattr(recipe_model, "args", ())), "kwargs": dict(getattr(recipe_model, "keywords", {}) or {}),
        "state": model.state_dict(), "x": x, "y": y, "n": n,
        "dirs": [{k: v for k, v in sd.items()} for sd in d.as_state_dicts()],
    }, path)


def run_peer(python, job, peer, threads) -> dict:
    cmd = [python, str(HERE / "peer_driver.py"), str(job), peer]
    if threads:
        cmd += ["--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"rc {res.returncode}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="grids 11×11 and 21×21")
    parser.add_argument("--grids", type=int, nargs="+", default=None)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--peers", nargs="+", default=list(PEERS))
    parser.add_argument("--peers-python", default=os.environ.get("PEERS_PYTHON", "/work/peers-venv/bin/python"))
    parser.add_argument("--ref-points", type=int, default=40, help="grid points the reference algorithm runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads everywhere (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of every tool in turn; each tool's best round counts (this machine's speed "
                             "drifts by up to 30%% within minutes: a bare cnn-digits forward took 5.3 to 6.9 ms)")
    args = parser.parse_args()
    grids = args.grids or ([11, 21] if args.quick else [21, 51])
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"# bench_peers: torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    rows, rows_cpu, checks = [], [], []
    # imports and first-call work happen once per process: excluded for every tool (the peers' driver
    # times its landscape call after importing and one forward), so landscape_nb warms up on a 3×3 grid first
    warm = lnb.zoo.load(args.models[0])
    ours(warm.model, warm.test, random_directions(warm.model, n=2, seed=1), 3)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            ex = lnb.zoo.load(name)
            model, (x, y) = ex.model.eval(), ex.test
            d = random_directions(model, n=2, seed=0)
            for n in grids:
                job = Path(tmp) / f"{name}-{n}.pt"
                write_job(job, name, model, x, y, d, n)
                pts = n * n
                fwds, walls, cpus = [], [], []
                tuning.CHOSEN.clear()  # the first round runs the points-per-pass trial: "its first surface"
                peer_ms, peer_cpu, peer_err = {}, {}, {}
                for _ in range(args.repeats):  # interleaved rounds: a slow minute of the machine hits every tool
                    fwds.append(bare_forward_seconds(model, x, y))
                    w1, c1, loss, prov = ours(model, (x, y), d, n)
                    walls.append(w1)
                    cpus.append(c1)
                    for peer in args.peers:
                        out = run_peer(args.peers_python, job, peer, args.threads)
                        if "error" in out:
                            print(f"  {peer} failed on {name} {n}x{n}: {out['error']}", file=sys.stderr)
                            continue
                        peer_ms[peer] = min(peer_ms.get(peer, np.inf), out["seconds"] / out["points"] * 1e3)
                        peer_cpu[peer] = min(peer_cpu.get(peer, np.inf), out["cpu_seconds"] / out["points"] * 1e3)
                        if peer == "loss-landscape-3d":  # same directions and coordinates: the same values
                            theirs = np.asarray(out["loss"])
                            peer_err[peer] = float(np.max(np.abs(theirs - loss) / np.abs(loss)))
                coords = [(a, b) for b in np.linspace(-1, 1, n) for a in np.linspace(-1, 1, n)]
                sel = np.linspace(0, pts - 1, min(args.ref_points, pts)).astype(int)
                c0 = time.process_time()
                ref_s, ref_loss = reference_algorithm(model, (x, y), d, [coords[i] for i in sel], "cpu")
                ref_cpu = (time.process_time() - c0) / len(sel)
                fwd = min(fwds)
                fwd_cpu = bare_forward_seconds(model, x, y, clock=time.process_time)
                wall = min(walls)
                ours_ms = wall / pts * 1e3
                ours_cpu = min(cpus) / pts * 1e3
                fastest_cpu = min(peer_cpu.values()) if peer_cpu else float("nan")
                rows_cpu.append((name, f"{n}×{n}", fwd_cpu * 1e3, ours_cpu, cpus[0] / pts * 1e3,
                                 pts * fwd_cpu * 1e3 / (ours_cpu * pts),
                                 *[peer_cpu.get(p, float("nan")) for p in args.peers], ref_cpu * 1e3,
                                 fastest_cpu / ours_cpu, ref_cpu * 1e3 / ours_cpu))
                ref_err = float(np.max(np.abs(loss.reshape(-1)[sel] - ref_loss) / np.abs(ref_loss)))
                fastest = min(peer_ms.values()) if peer_ms else float("nan")
                rows.append((name, f"{n}×{n}", fwd * 1e3, ours_ms, walls[0] / pts * 1e3, pts * fwd / wall,
                             *[peer_ms.get(p, float("nan")) for p in args.peers], ref_s * 1e3,
                             fastest / ours_ms, ref_s * 1e3 / ours_ms))
                checks.append((name, f"{n}×{n}", ref_err, peer_err.get("loss-landscape-3d", float("nan")),
                               prov.get("batch_size"), prov.get("bn_fold")))
                print(f"  done {name} {n}x{n}: ours {ours_ms:.3f} ms/pt, peers {peer_ms}", file=sys.stderr)
    header = (["model", "grid", "bare fwd ms", "landscape_nb ms/pt", "its first surface ms/pt", "efficiency"]
              + [f"{p} ms/pt" for p in args.peers] + ["reference ms/pt", "vs fastest peer", "vs reference"])
    fmt = (["{}", "{}", "{:.3f}", "{:.3f}", "{:.3f}", "{:.2f}"] + ["{:.3f}"] * len(args.peers)
           + ["{:.3f}", "{:.2f}×", "{:.1f}×"])
    load = os.getloadavg()
    print_table(f"ms per grid point (load average at end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f})",
                header, rows, fmt)
    print_table("the same in CPU time of the process (robust to other load on the machine; with 2 torch threads "
                "it counts the threads' spinning too)", header, rows_cpu, fmt)
    print_table("checks", ["model", "grid", "max rel. diff vs reference", "max rel. diff vs loss-landscape-3d",
                           "batch size", "BatchNorm"], checks, ["{}", "{}", "{:.1e}", "{:.1e}", "{}", "{}"])


if __name__ == "__main__":
    main()
