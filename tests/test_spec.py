"""Spec keys are what existing stores resume by: they must never change by accident.

The expected keys below were computed with the code as it was before the redesign (commit
65e00be); a change here means every store written by earlier versions stops resuming.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import landscape_nb as lnb


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)


@pytest.mark.parametrize("n, kwargs, key", [
    (1, dict(x=(-1, 1, 5)), "df5e6b9121c3bcabd7c7c297"),
    (2, dict(x=(-1, 1, 3), y=(-0.5, 0.5, 4), mode="bn-recompute", max_samples=16, batch_size=8, tile=(2, 2)),
     "85b257f435b8c37053c398e3"),
    (2, dict(x=(-1, 1, 2), y=(-1, 1, 2), quantity="hessian", quantity_options={"tol": 1e-3}),
     "f44f69f48e6242b4f5d8850e"),
])
def test_spec_key_is_unchanged_since_before_the_redesign(n, kwargs, key):
    model = _model()
    d = lnb.random_directions(model, n=n, seed=0)
    assert lnb.compute_surface(model, _data(), d, **kwargs).provenance["key"] == key


def _notebook_loss():
    """A loss as a notebook defines it (module ``__main__``: cloudpickle writes it and its globals by value),
    reading a large tensor, a large array and a small tensor, and those three."""
    space = {"__name__": "__main__", "nn": nn, "table": torch.arange(300_000, dtype=torch.float32),
             "array": np.arange(300_000, dtype=np.float64), "small": torch.arange(10, dtype=torch.float32)}
    exec("def loss(out, t):\n"  # noqa: S102 - a function of module __main__, as a notebook makes it
         "    return nn.functional.cross_entropy(out, t) + 0 * (table[:3].sum() + float(array[0]) + small[0])\n",
         space)
    return space["loss"], space


@pytest.mark.parametrize("change", ["table", "array", "small"])
def test_a_loss_fingerprint_follows_the_large_tensors_it_reads_without_pickling_them(change):
    """A notebook loss's fingerprint is its cloudpickle bytes hashed, its globals by value; tensors and
    arrays go in as their SHA-256 (a 188 MB global cost 1.35 s and 367 MB to pickle, and torch pickles a
    storage under a key of its own: equal tensors gave other keys). Changing one element of any of them
    changes the key; equal values give the same."""
    from landscape_nb.spec import _callable_fingerprint

    loss, space = _notebook_loss()
    before = _callable_fingerprint(loss)
    assert before == _callable_fingerprint(_notebook_loss()[0])  # equal globals: the same
    space[change][7] += 1
    assert _callable_fingerprint(loss) != before
    space[change][7] -= 1
    assert _callable_fingerprint(loss) == before


def _placed_loss(filename: str, lines_above: int, smoothing: float = 0.05, file: str | None = None):
    """A loss as a script or notebook cell defines it (module ``__main__``), compiled as written in ``filename``
    (a notebook's cells are /tmp/ipykernel_<pid>/<hash>.py) below ``lines_above`` other lines, in a module whose
    ``__file__`` is ``file``."""
    space = {"__name__": "__main__", "nn": nn, **({"__file__": file} if file else {})}
    source = "\n" * lines_above + ("def loss(out, t):\n"
                                    f"    return nn.functional.cross_entropy(out, t, label_smoothing={smoothing})\n")
    exec(compile(source, filename, "exec"), space)  # noqa: S102 - a function of module __main__
    return space["loss"]


def test_a_script_or_notebook_loss_is_fingerprinted_by_what_it_computes_not_where_it_is_written(tmp_path):
    """Trial s54: a loss defined in a script got another fingerprint (so its store another key, refused "other
    code or values under the same name") after a line was added above it, or the script was run from another
    folder; a notebook's after a kernel restart (its cell's file names the kernel's pid). Its code's file name,
    line numbers and module ``__file__`` are left out: the same function in other places has one fingerprint,
    and a changed constant another. The whole path: a store resumes with the loss compiled elsewhere."""
    from landscape_nb.spec import _callable_fingerprint

    here = _placed_loss("/tmp/ipykernel_101/1a2b.py", 0, file="/home/a/run.py")
    elsewhere = [_placed_loss("/tmp/ipykernel_202/1a2b.py", 0), _placed_loss("run.py", 3, file="/srv/b/run.py"),
                 _placed_loss("/home/a/run.py", 40, file="/home/a/run.py")]
    assert {_callable_fingerprint(f) for f in elsewhere} == {_callable_fingerprint(here)}
    assert here.__code__.co_firstlineno != elsewhere[2].__code__.co_firstlineno  # they are placed apart
    assert _callable_fingerprint(_placed_loss("run.py", 0, smoothing=0.1)) != _callable_fingerprint(here)

    # a loss that is a module class of the script: cloudpickle gave each class object a random tracker id, so
    # the same class defined again (another process, a kernel restarted) had another fingerprint (review s54)
    def module_loss(lines_above: int, smoothing: float = 0.05):
        space = {"__name__": "__main__", "nn": nn}
        exec(compile("\n" * lines_above + "class Focal(nn.Module):\n    def forward(self, out, t):\n"  # noqa: S102
                     f"        return nn.functional.cross_entropy(out, t, label_smoothing={smoothing})\n",
                     f"/tmp/ipykernel_{lines_above}/c.py", "exec"), space)
        return space["Focal"]()

    assert _callable_fingerprint(module_loss(0)) == _callable_fingerprint(module_loss(7))
    assert type(module_loss(0)) is not type(module_loss(0))  # two class objects, as two processes make
    assert _callable_fingerprint(module_loss(0, smoothing=0.1)) != _callable_fingerprint(module_loss(0))

    model = _model().eval()
    d = lnb.random_directions(model, n=2, seed=0)
    kw = {"x": (-1, 1, 3), "y": (-1, 1, 3), "store": tmp_path / "s.zarr"}
    first = lnb.compute_surface(model, _data(), d, loss_fn=here, **kw)
    again = lnb.compute_surface(model, _data(), d, loss_fn=elsewhere[2], **kw)
    assert again.provenance["key"] == first.provenance["key"]
    np.testing.assert_array_equal(again.loss, first.loss)
    with pytest.raises(lnb.LandscapeError, match="holds a different surface.*loss function"):
        lnb.compute_surface(model, _data(), d, loss_fn=_placed_loss("run.py", 0, smoothing=0.1), **kw)


def test_equal_losses_holding_tensors_have_one_fingerprint():
    """Two ``nn.CrossEntropyLoss(weight=w)`` with equal weights had two fingerprints (torch pickles each
    storage under a key of its own), so a store's spec did not match the same loss made again in another
    process, and an interrupted run could not be resumed; another weight gives another."""
    from landscape_nb.spec import _callable_fingerprint

    def make(w):
        return nn.CrossEntropyLoss(weight=torch.tensor(w))

    assert _callable_fingerprint(make([1.0, 2.0, 3.0])) == _callable_fingerprint(make([1.0, 2.0, 3.0]))
    assert _callable_fingerprint(make([1.0, 2.0, 3.0])) != _callable_fingerprint(make([1.0, 2.0, 4.0]))


def test_a_store_resumes_with_the_same_weighted_loss_made_again(tmp_path):
    """The whole path: a surface stored with ``nn.CrossEntropyLoss(weight=w)`` and asked for again with that
    loss made anew was refused, "holds a different surface ... loss_fingerprint"; it loads now."""
    model = _model().eval()
    d = lnb.random_directions(model, n=2, seed=0)
    store = tmp_path / "s.zarr"
    kw = {"x": (-1, 1, 3), "y": (-1, 1, 3), "store": store}
    first = lnb.compute_surface(model, _data(), d, loss_fn=nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0])), **kw)
    again = lnb.compute_surface(model, _data(), d, loss_fn=nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0])), **kw)
    assert again.provenance["key"] == first.provenance["key"]
    np.testing.assert_array_equal(again.loss, first.loss)


EXEC_SOURCE = '''
import torch

scale = 0.5
N_CALLS = 0
TEMP = 2.0


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.scale = 1.0

    def forward(self, x):
        global N_CALLS
        N_CALLS += 1
        return self.lin(x) * self.scale / TEMP + sum(v for v in (0.0,))
'''


def test_globals_fingerprint_sees_the_globals_a_forward_reads_and_nothing_else():
    """Only globals the bytecode loads count: ``self.scale`` is not the global ``scale``, and a call counter
    the forward writes is state, not a setting (both refused a legitimate resume); a forward whose source
    cannot be read (exec, stdin) hashes its bytecode without the addresses a code object's repr holds."""
    from landscape_nb.spec import globals_fingerprint

    def build():
        space = {"__name__": "user_exec_module"}
        exec(compile(EXEC_SOURCE, "<user code>", "exec"), space)  # noqa: S102 - code without readable source
        torch.manual_seed(0)
        return space, space["Net"]()

    space, net = build()
    first = globals_fingerprint(net)
    assert set(first) == {"user_exec_module.TEMP", "user_exec_module.Net.forward()"}, first
    net(torch.zeros(1, 3))  # the counter moves; the unrelated global named like an attribute changes
    space["scale"] = 0.7
    assert globals_fingerprint(net) == first
    other_space, other = build()  # the same code made again: new code objects at other addresses
    assert globals_fingerprint(other) == first
    other_space["TEMP"] = 3.0
    changed = globals_fingerprint(other)
    assert changed["user_exec_module.TEMP"] != first["user_exec_module.TEMP"]
    assert changed["user_exec_module.Net.forward()"] == first["user_exec_module.Net.forward()"]


CHAIN_SOURCE = '''
import torch
from torch import nn
import torch.nn.functional as F

K = 2.0


def k(x):
    return x * K


def h(x):
    return k(x)


def g(x):
    return h(x) + k(x)


def loss(o, t, temp=1.0):
    return F.cross_entropy(g(o) / temp, t)


def act(x):
    return torch.tanh(x)


class Base(nn.Module):
    def forward(self, x):
        return self.lin(x) * K


class Net(Base):
    def __init__(self):
        super().__init__()
        self.lin, self.act = nn.Linear(3, 2), act

    def forward(self, x):
        return self.act(super().forward(x))
'''


def test_the_loaded_code_fingerprint_a_worker_compares_is_complete_and_the_same_in_every_process(tmp_path):
    """What each Dask worker compares (``loaded=True``): the same entries whatever the hash seed (a chain
    loss → g → h → k reading K lost k() and K in 3 of 6 seeds, as a set's order decided), default arguments (a
    changed ``temp=3.0`` hashed alike), a base class's forward reached by super() and a function kept as an
    attribute; each computed in a fresh process, as a worker would."""
    (tmp_path / "lnb_chain.py").write_text(CHAIN_SOURCE)
    script = ("import json, sys; sys.path.insert(0, sys.argv[1]); import lnb_chain as m\n"
              "from landscape_nb.spec import globals_fingerprint\n"
              "print(json.dumps(globals_fingerprint(m.Net(), m.loss, loaded=True)))\n")
    runs = []
    for seed in ("0", "1", "2", "3"):
        out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
        runs.append(json.loads(out.stdout))
    assert all(r == runs[0] for r in runs), runs
    assert {"lnb_chain.k()", "lnb_chain.K", "lnb_chain.Base.forward()", "lnb_chain.act()"} <= set(runs[0]), runs[0]
    (tmp_path / "lnb_chain.py").write_text(CHAIN_SOURCE.replace("temp=1.0", "temp=3.0"))
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True)
    edited = json.loads(out.stdout)
    assert edited["lnb_chain.loss()"] != runs[0]["lnb_chain.loss()"]
    assert {k: v for k, v in edited.items() if k != "lnb_chain.loss()"} == {
        k: v for k, v in runs[0].items() if k != "lnb_chain.loss()"}
