"""Runs one peer library's 2D loss landscape in its own venv; used by bench_peers.py.

    /work/peers-venv/bin/python benchmarks/peer_driver.py JOB.pt PEER [--threads N]

JOB.pt (written by bench_peers.py) holds the zoo architecture (path of landscape_nb/zoo/models.py,
class name, arguments), the trained state dict, the test split and the two directions (by
parameter name). The model file is loaded on its own, so this venv needs torch and the peer,
not landscape_nb. Prints one JSON line: seconds (the landscape call only: imports, model and
data loading excluded), cpu_seconds (this process's CPU time meanwhile), points, and the loss grid.
One forward and loss of the model on the split runs before the timed call, so torch's first-call work
(thread pool, kernel selection) is not the peer's, as landscape_nb's is not its own (it warms up too).

Each peer gets its most favourable documented usage: the whole split as one batch, eval
mode, in-process, no progress bars; only the loss (landscape_nb also computes accuracy).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # landscaper's progress bar

import numpy as np
import torch
from torch import nn


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(t0) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) since ``t0 = clocks()``."""
    t1 = clocks()
    return t1[0] - t0[0], t1[1] - t0[1]


def load_job(path):
    job = torch.load(path, weights_only=False)
    spec = importlib.util.spec_from_file_location("zoo_models", job["models_py"])
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    model = getattr(models, job["cls"])(*job["args"], **job["kwargs"])
    model.load_state_dict(job["state"])
    return model.eval(), job


def run_loss_landscapes(model, job):
    """loss-landscapes 3.0.6: ``random_plane(model, Loss(fn, x, y), distance, steps,
    normalization='filter')``: filter-normalized random directions of its own."""
    import loss_landscapes
    from loss_landscapes.metrics import Loss

    n = job["n"]
    metric = Loss(nn.CrossEntropyLoss(), job["x"], job["y"])
    with torch.no_grad():
        t0 = clocks()
        loss = loss_landscapes.random_plane(model, metric, distance=1, steps=n, normalization="filter",
                                            deepcopy_model=False)
        return since(t0), np.asarray(loss)


def run_landscaper(model, job):
    """landscaper 1.3.1: ``compute_loss_landscape(model, data, dirs, scalar_fn, steps, distance,
    dim=2, device='cpu')`` (``LossLandscape.compute`` without building the topology object),
    given our two directions as lists of tensors in ``model.parameters()`` order."""
    from landscaper.compute import compute_loss_landscape

    names = [name for name, _ in model.named_parameters()]
    dirs = [[d[name].clone() for name in names] for d in job["dirs"]]
    crit = nn.CrossEntropyLoss()

    def scalar_fn(m, data):
        return float(crit(m(data[0]), data[1]))

    t0 = clocks()
    loss, _ = compute_loss_landscape(model, (job["x"], job["y"]), dirs, scalar_fn, steps=job["n"],
                                     distance=1.0, dim=2, device="cpu")
    return since(t0), np.asarray(loss)


def run_loss_landscape_3d(model, job):
    """loss-landscape-3d 0.1.3: ``LossLandscapeCalculator(model, loader, criterion).calculate(xs, ys,
    dir_x, dir_y, center_state)`` with our directions and coordinates; the loader is a list holding
    the one batch (a DataLoader of the whole split would collate 360 samples per point)."""
    from loss_landscape_3d import LossLandscapeCalculator

    calc = LossLandscapeCalculator(model, [(job["x"], job["y"])], nn.CrossEntropyLoss(), device="cpu")
    xs = ys = np.linspace(-1, 1, job["n"])
    center = {k: v.clone() for k, v in model.state_dict().items()}
    t0 = clocks()
    loss = calc.calculate(xs, ys, job["dirs"][0], job["dirs"][1], center)
    return since(t0), np.asarray(loss).T  # theirs is [x, y]; ours [y, x]


PEERS = {"loss-landscapes": run_loss_landscapes, "landscaper": run_landscaper,
         "loss-landscape-3d": run_loss_landscape_3d}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("job")
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, job = load_job(args.job)
    with torch.no_grad():
        nn.CrossEntropyLoss()(model(job["x"]), job["y"])
    seconds, loss = PEERS[args.peer](model, job)
    print(json.dumps({"peer": args.peer, "seconds": seconds[0], "cpu_seconds": seconds[1], "points": int(loss.size),
                      "loss": loss.tolist()}))


if __name__ == "__main__":
    main()
