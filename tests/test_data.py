"""Which samples a DataLoader's evaluation uses (``landscape_nb.data``), checked against a plain loop over
the loader itself: copy ``w + a·d`` into the model, run every batch the loader yields, average by sample."""
import numpy as np
import pytest
import torch
from conftest import model_at
from torch import nn
from torch.nn import functional as F
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    SequentialSampler,
    SubsetRandomSampler,
    TensorDataset,
)

import landscape_nb as lnb

N = 300
XS = (-1.0, 0.0, 1.0)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _setup():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    return model, TensorDataset(x, y), lnb.random_directions(model, n=1, seed=0)


def _loop_over(loader, model, d):
    """The mean cross-entropy over every sample a pass over ``loader`` yields, at each coefficient of XS."""
    out = []
    for a in XS:
        m, total, n = model_at(model, d, a), 0.0, 0
        with torch.no_grad():
            for xb, yb in loader:
                total += float(F.cross_entropy(m(xb), yb, reduction="sum"))
                n += len(yb)
        out.append(total / n)
    return out


class EveryThirdBatches:
    """A batch sampler of its own (not a ``BatchSampler``): indices 0, 3, 6, ... below 120, in batches of 7."""

    def __iter__(self):
        idx = list(range(0, 120, 3))
        return iter([idx[i:i + 7] for i in range(0, len(idx), 7)])

    def __len__(self):
        return 6


@pytest.mark.parametrize("batch_sampler, n_used, order", [
    (BatchSampler(SequentialSampler(range(50)), 10, False), 50, "the first 50 indices"),
    (BatchSampler(SubsetRandomSampler(list(range(1, N, 2)), generator=torch.Generator().manual_seed(1)), 16, False),
     150, "the 150 indices of its batch sampler's SubsetRandomSampler"),
    (EveryThirdBatches(), 40, "the 40 indices of the loader's batch sampler EveryThirdBatches"),
])
def test_a_loaders_batch_sampler_selects_the_samples_evaluated(batch_sampler, n_used, order):
    """``DataLoader(ds, batch_sampler=...)`` evaluates the samples its batch sampler yields, not the whole
    dataset (a loader yielding 50 of 300 samples was evaluated on all 300, its provenance saying the loader's
    SequentialSampler was not used)."""
    model, ds, d = _setup()
    loader = DataLoader(ds, batch_sampler=batch_sampler)
    assert sum(len(yb) for _, yb in loader) == n_used
    surf = lnb.compute_surface(model, loader, d, x=(-1, 1, 3), metrics=None)
    np.testing.assert_allclose(surf.loss, _loop_over(loader, model, d), rtol=1e-5)
    assert surf.provenance["data"]["order"].startswith(order)
    assert "batch sampler" in surf.provenance["data"]["loader_batch_size"]


WEIGHTS = torch.where(torch.arange(N) % 4 == 0, 0.0, 1.0 + torch.arange(N) / N)  # every 4th sample never drawn
DRAWABLE = [i for i in range(N) if i % 4]


@pytest.mark.parametrize("make, used, differs", [
    (lambda ds: DataLoader(ds, batch_size=64, drop_last=True), range(N),
     ["with drop_last=True a pass over the loader leaves out its last 44 of 300 samples", "all 300 are evaluated"]),
    (lambda ds: DataLoader(ds, batch_size=32, sampler=torch.utils.data.RandomSampler(ds, True, 100)), range(N),
     ["RandomSampler draws 100 indices with replacement in a pass",
      "each of the 300 samples it can draw is evaluated once"]),
    (lambda ds: DataLoader(ds, batch_size=32, sampler=torch.utils.data.WeightedRandomSampler(WEIGHTS, 100)), DRAWABLE,
     ["WeightedRandomSampler draws 100 indices by weight with replacement",
      "each of the 225 samples of positive weight is evaluated once, unweighted"]),
    (lambda ds: DataLoader(ds, batch_sampler=BatchSampler(torch.utils.data.WeightedRandomSampler(WEIGHTS, 100), 16,
                                                          True)), DRAWABLE,
     ["its batch sampler's WeightedRandomSampler draws 100", "leaves out its last 4 of 100 samples"]),
])
def test_a_loader_a_loop_over_which_sees_other_samples_warns_once_and_each_sample_counts_once(make, used, differs):
    """drop_last=True, and samplers drawing with replacement or by weight, make a loop over the loader see
    other samples than the package evaluates (all it can select, each once, unweighted): a warning says so,
    naming what differs and why, and the values are the mean over the samples the package says it uses (a
    loader with replacement gave a surface from one random draw, another on the next call)."""
    model, ds, d = _setup()
    loader = make(ds)
    with pytest.warns(UserWarning) as caught:
        surf = lnb.compute_surface(model, loader, d, x=(-1, 1, 3), metrics=None)
    texts = [str(w.message) for w in caught if "differ from a loop over this DataLoader" in str(w.message)]
    assert len(texts) == 1
    why = (f"landscape_nb takes the {len(used)} distinct samples the loader's sampler can select, each once",
           "evaluates their mean in batches of its own, so that every grid point sees the same samples")
    for part in [*differs, *why]:
        assert part in texts[0]
    assert texts[0] == "landscape_nb: " + surf.provenance["data"]["differs_from_loader"]
    idx = torch.as_tensor(list(used))
    np.testing.assert_allclose(surf.loss, _loop_over([ds[idx]], model, d), rtol=1e-5)
    with pytest.warns(UserWarning, match="differ from a loop over this DataLoader"):
        again = lnb.compute_surface(model, loader, d, x=(-1, 1, 3), metrics=None)
    np.testing.assert_array_equal(again.loss, surf.loss)
    assert again.provenance["key"] == surf.provenance["key"]


@pytest.mark.parametrize("make", [
    lambda ds: DataLoader(ds, batch_size=64, shuffle=True),
    lambda ds: DataLoader(ds, batch_size=50, drop_last=True),  # nothing left out: 300 = 6 x 50
    lambda ds: DataLoader(ds, batch_size=64, sampler=SubsetRandomSampler(list(range(0, N, 3)))),
])
def test_a_loader_a_loop_over_which_sees_the_same_samples_gives_no_warning(make, recwarn):
    model, ds, d = _setup()
    surf = lnb.compute_surface(model, make(ds), d, x=(-1, 1, 3), metrics=None)
    assert not [w for w in recwarn if "DataLoader" in str(w.message)]
    assert "differs_from_loader" not in surf.provenance["data"]


def test_a_loader_with_automatic_batching_off_is_read_sample_by_sample_and_stacked():
    """``DataLoader(ds, batch_size=None)`` yields each sample unstacked (default_convert, no collation): it
    was refused as "a list of 300 samples"; its samples are stacked now, and the values are a loop's over
    them (each sample its own batch of one)."""
    model, ds, d = _setup()
    surf = lnb.compute_surface(model, DataLoader(ds, batch_size=None), d, x=(-1.0, 1.0, 3))
    one_by_one = DataLoader(ds, batch_size=None)
    want = []
    for a in XS:
        m = model_at(model, d, a)
        with torch.no_grad():
            want.append(sum(float(F.cross_entropy(m(xs[None]), ys[None])) for xs, ys in one_by_one) / N)
    np.testing.assert_allclose(surf.loss, want, rtol=1e-5)
