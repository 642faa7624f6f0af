import contextlib
import inspect
import os
from pathlib import Path

import pytest
import torch
from torch import nn


@pytest.fixture(scope="session", autouse=True)
def shared_zoo_cache(tmp_path_factory):
    """One zoo cache for the whole session (subprocesses and Dask workers inherit it)."""
    if os.environ.get("LANDSCAPE_NB_CACHE"):
        yield os.environ["LANDSCAPE_NB_CACHE"]
        return
    path = str(shared_dir(tmp_path_factory, "zoo-cache"))
    os.environ["LANDSCAPE_NB_CACHE"] = path
    yield path
    os.environ.pop("LANDSCAPE_NB_CACHE", None)


@pytest.fixture(autouse=True)
def fresh_points_per_pass_trials():
    """Each test's evaluators run their own points-per-pass trial: a choice remembered from an earlier test
    (``tuning.CHOSEN``) would make what a test sees depend on which tests ran before it."""
    from landscape_nb import tuning

    tuning.CHOSEN.clear()
    yield
    tuning.CHOSEN.clear()


if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # each xdist worker its share of the cores for torch: two processes with a 2-thread OpenMP team each on a
    # 2-core box spin-waited against each other (test_evaluate took 158 s against 21 s alone, session 51)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


def shared_dir(tmp_path_factory, name: str) -> Path:
    """A directory every process of this test run sees: under pytest-xdist (the README's ``-n 2``) the workers'
    common base temporary directory, so what one worker trains or computes (zoo weights, stores) the others read
    instead of doing it again; else a fresh one of this session's."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.mktemp(name)
    path = tmp_path_factory.getbasetemp().parent / name
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def quick_depth_comparison(tmp_path_factory):
    """``depth_comparison`` at ``depth.QUICK`` on an embedded Dask cluster, with its stores:
    (comparison, store directory). Computed once (eigen-map points dominate, ~4 min on 2 cores):
    tests/test_zoo_depth.py checks its numbers, and the skip_connections notebook, whose settings
    these are, resumes from a copy of the stores instead of computing it all again."""
    from filelock import FileLock

    from landscape_nb.cluster import get_client
    from landscape_nb.depth import DEPTHS, QUICK, depth_comparison

    store_dir = shared_dir(tmp_path_factory, "depth-stores")
    # one xdist worker computes the stores; another that needs them meanwhile waits, then resumes them (reads)
    with FileLock(f"{store_dir}.lock"):
        client, owned = get_client("local")
        try:
            return depth_comparison(DEPTHS, QUICK, client=client, store_dir=store_dir), store_dir
        finally:
            owned.close()


def docstring_example(obj) -> str:
    """The ``>>>`` and ``...`` lines of ``obj``'s docstring as one program (doctest prompts removed, the
    indentation inside them kept), to run an example as written against small stand-ins."""
    lines = inspect.cleandoc(obj.__doc__).splitlines()
    return "\n".join(line[4:] for line in lines if line.startswith((">>> ", "... ")))


class PackageWith:
    """``landscape_nb`` with some attributes replaced (e.g. ``zoo``, to run a docstring example that loads
    a zoo model against a small stand-in); every other attribute is the package's own."""

    def __init__(self, **replaced):
        import landscape_nb

        self._package, self._replaced = landscape_nb, replaced

    def __getattr__(self, name):
        return self._replaced[name] if name in self._replaced else getattr(self._package, name)


class TinyCNN(nn.Module):
    """Conv + BN + linear: has 4-D, 2-D and 1-D tensors and BN buffers."""

    def __init__(self, n_classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, n_classes)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        h = nn.functional.max_pool2d(h, 2)
        return self.fc(h.flatten(1))


class TupleVAE(nn.Module):
    """A VAE-style model returning (reconstruction, mu, logvar) of ``n_in`` features (a 2-d latent)."""

    def __init__(self, n_in: int = 6):
        super().__init__()
        self.enc, self.dec = nn.Linear(n_in, 4), nn.Linear(2, n_in)

    def forward(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=1)
        return self.dec(mu), mu, logvar


def make_mlp(seed: int = 0, n_in: int = 6, n_classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 16), nn.Tanh(), nn.Linear(16, n_classes))


@pytest.fixture
def mlp():
    return make_mlp()


@pytest.fixture
def mlp_data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(97, 6, generator=g)
    y = torch.randint(0, 3, (97,), generator=g)
    return x, y


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    m = TinyCNN()
    with torch.no_grad():  # non-trivial BN running stats
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.fixture
def cnn_data():
    g = torch.Generator().manual_seed(2)
    return torch.randn(40, 1, 8, 8, generator=g), torch.randint(0, 3, (40,), generator=g)


def naive_loss(model, data, dirs, coeffs, loss_fn=None, metric=None):
    """Copy w + Σ c_k d_k (dirs: list of {name: tensor}) into a copy of the model, loop over
    the samples in batches of 7, return the mean loss (and mean metric)."""
    import copy

    loss_fn = loss_fn or nn.functional.cross_entropy
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            new = p.clone()
            for c, d in zip(coeffs, dirs):
                new = new + float(c) * d[name]
            p.copy_(new)
        x, y = data
        total, total_m = 0.0, 0.0
        for i in range(0, len(x), 7):
            out = m(x[i:i + 7])
            total += float(loss_fn(out, y[i:i + 7])) * len(out)
            if metric:
                total_m += float((out.argmax(1) == y[i:i + 7]).float().sum())
    return total / len(x), total_m / len(x)


def few_kept_targets(n_kept: int, where: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """60 samples of 6 features (float64), their labels -100 but ``n_kept`` in 0..4 at positions spread over the
    set (``"spread"``, none of those an even spread of 7 picks), drawn at random (``"random"``) or first."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(60, 6, generator=g, dtype=torch.float64), torch.full((60,), -100)
    at = {"spread": torch.linspace(3, 56, n_kept).round().long(), "random": torch.randperm(60, generator=g)[:n_kept],
          "first": torch.arange(n_kept)}[where]
    y[at] = torch.randint(0, 5, (n_kept,), generator=g)
    return x, y


#: losses over few_kept_targets: a mean over kept targets, a sum, a mean weighted by class (hidden in lambdas)
FEW_KEPT_LOSSES = {
    "mean": lambda out, t: nn.functional.cross_entropy(out, t),
    "sum": lambda out, t: nn.functional.cross_entropy(out, t, reduction="sum"),
    "weight": lambda out, t: nn.functional.cross_entropy(out, t, weight=torch.tensor(
        [0.5, 1.0, 2.0, 1.5, 0.7], dtype=torch.float64)),
}


def model_at(model, d, a):
    """A copy of ``model`` at ``w + a·d`` (``d``: a one-direction Directions), in eval mode."""
    import copy

    m = copy.deepcopy(model)
    params = dict(m.named_parameters())
    with torch.no_grad():
        for name, t in d.as_state_dicts()[0].items():
            params[name].add_(a * t)
    return m.eval()


def random_dict_dirs(model, n, seed=0, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    return [{name: scale * torch.randn(p.shape, generator=g) for name, p in model.named_parameters()}
            for _ in range(n)]


def state_copy(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bit_identical(model, saved):
    now = model.state_dict()
    assert now.keys() == saved.keys()
    for k in saved:
        assert torch.equal(now[k], saved[k]), k


@contextlib.contextmanager
def single_thread():
    """Tiny models run far faster on one torch thread, above all on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    with single_thread():
        yield


def masked_in_batches_not_in_halves(dtype=torch.float32):
    """40 samples (4 features, classes 0-2; class 0 masked by ``ignore_index=0``) for batches of 20: 6 masked
    in the first batch, 2 in the second, but 2 in each half of the 20 samples that ``linspace(0, 39, 20)``
    spreads over the set (the other 4 masked fall between them). A mean over kept samples of the batches then
    differs from the whole set's, while the two halves of the spread samples keep equal shares."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 4, generator=g, dtype=dtype), torch.randint(1, 3, (40,), generator=g)
    y[[0, 2, 21, 23, 1, 3, 5, 7]] = 0
    spread = torch.linspace(0, 39, 20).round().long()
    assert (y[spread[:10]] == 0).sum() == (y[spread[10:]] == 0).sum() == 2 and (y[:20] == 0).sum() == 6
    return x, y


def fresh_module(folder, name: str, source: str):
    """``source`` written as ``folder/name.py`` (on sys.path) and imported anew, torch's generator seeded."""
    import importlib
    import sys

    (folder / f"{name}.py").write_text(source)
    sys.modules.pop(name, None)
    importlib.invalidate_caches()
    torch.manual_seed(0)
    return importlib.import_module(name)


# The slowest test files first (seconds on a 2-core box, --durations=0, session 51): demo 251, notebooks 238,
# failures 109, cli 87, voila 80, widgets 77, dask 69, store_safety 48, browser 46, compute 40, hessian 40,
# notebooks_analysis 40. The README's command runs the files on two pytest-xdist workers, in this order
# (--dist loadfile --no-loadscope-reorder), so the two longest start at once and the short ones fill in behind;
# by file size xdist would leave one of the long files for last, the other worker idle.
SLOW_FIRST = ("test_demo.py", "test_notebooks.py", "test_failures.py", "test_cli.py", "test_voila.py",
              "test_widgets.py", "test_dask.py", "test_store_safety.py", "test_browser.py", "test_compute.py",
              "test_hessian.py", "test_notebooks_analysis.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept
