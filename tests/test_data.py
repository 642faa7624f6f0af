"""Which samples a DataLoader's evaluation uses (``landscape_nb.data``), checked against a plain loop over
the loader itself: copy ``w + a·d`` into the model, run every batch the loader yields, average by sample."""
import re
import warnings

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
from landscape_nb.data import REREAD_ITEMS, REREAD_MORE, read_data

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
    """The mean cross-entropy over every sample a pass over ``loader`` yields, at each coefficient of XS (tuple
    inputs passed as ``model(*inputs)``)."""
    out = []
    for a in XS:
        m, total, n = model_at(model, d, a), 0.0, 0
        with torch.no_grad():
            for xb, yb in loader:
                total += float(F.cross_entropy(m(*xb) if isinstance(xb, tuple) else m(xb), yb, reduction="sum"))
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


def test_max_samples_of_a_samplers_selection_says_of_how_many_it_is_drawn():
    """max_samples of a loader whose sampler selects 100 of 300 samples draws from those 100 (as a Subset of them
    does: same values) but the provenance said "40 of 300 samples" (trial s47): it names the sampler's 100."""
    model, ds, d = _setup()
    chosen = list(range(0, N, 3))
    via_sampler = lnb.compute_surface(model, DataLoader(ds, batch_size=64, sampler=SubsetRandomSampler(chosen)), d,
                                      x=(-1, 1, 3), metrics=None, max_samples=40)
    via_subset = lnb.compute_surface(model, torch.utils.data.Subset(ds, chosen), d, x=(-1, 1, 3), metrics=None,
                                     max_samples=40)
    np.testing.assert_array_equal(via_sampler.loss, via_subset.loss)
    assert via_sampler.provenance["data"]["subset"].startswith(
        f"40 of the {len(chosen)} samples the loader's sampler selects (of {N}), seed 0")
    assert via_subset.provenance["data"]["subset"].startswith(f"40 of {len(chosen)} samples, seed 0")


class Noisy(torch.utils.data.Dataset):
    """A map-style Dataset adding ``noise``·N(0, 1) to each sample as it is read (a training-time
    augmentation in ``__getitem__``, drawn from torch's global generator); noise 0 reads the same each time."""

    def __init__(self, ds: TensorDataset, noise: float):
        self.ds, self.noise = ds, noise

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        x, y = self.ds[i]
        return x + self.noise * torch.randn(x.shape), y


@pytest.mark.parametrize("wrap", [lambda ds: ds, lambda ds: DataLoader(ds, batch_size=32, shuffle=True)])
def test_a_dataset_drawing_at_random_in_getitem_is_evaluated_on_one_draw_and_said_so(wrap, tmp_path):
    """A Dataset augmenting at random was read once with no word, so two identical calls differed by 0.33 on
    a smooth surface (trial s31). Its first samples are read again: a warning (and the provenance) says the
    data are one draw of many; every grid point sees that one draw (the values are a loop's over the samples
    as first read, from the same random state), and a rerun on a store is refused naming the random reads."""
    model, ds, d = _setup()
    data = wrap(Noisy(ds, 0.5))
    torch.manual_seed(7)
    with pytest.warns(UserWarning) as caught:
        surf = lnb.compute_surface(model, data, d, x=(-1, 1, 3), metrics=None, store=tmp_path / "s.zarr")
    texts = [str(w.message) for w in caught if "draws at random" in str(w.message)]
    assert len(texts) == 1
    assert "(Noisy) gave other values when its first 8 samples were read again (8 of 8 differ)" in texts[0]
    assert texts[0] == "landscape_nb: " + surf.provenance["data"]["random_items"]
    torch.manual_seed(7)
    first = Noisy(ds, 0.5)
    first_read = [torch.stack([first[i][0] for i in range(N)]), ds.tensors[1]]
    np.testing.assert_allclose(surf.loss, _loop_over([first_read], model, d), rtol=1e-5)
    with pytest.warns(UserWarning, match="draws at random"), pytest.raises(lnb.LandscapeError) as err:
        lnb.compute_surface(model, data, d, x=(-1, 1, 3), metrics=None, store=tmp_path / "s.zarr")
    assert "other values (the Dataset draws at random in __getitem__" in str(err.value)


class SometimesFlipped(Noisy):
    """Flips the sign of a sample with probability ``p`` as it is read (an augmentation applied now and then)."""

    def __init__(self, ds: TensorDataset, p: float):
        super().__init__(ds, 0.0)
        self.p = p

    def __getitem__(self, i):
        x, y = self.ds[i]
        return (-x if float(torch.rand(())) < self.p else x), y


def test_an_augmentation_applied_to_one_sample_in_ten_is_found():
    """Only the first 8 samples were read again, so an augmentation drawn with p = 0.1 (a sample differs between
    two reads with p = 0.18) went unseen in 1 of 5 trial runs (s32; 8 of these 40 seeds): 64 are read again
    (the first 8, then 56 spread over the set), missing it with p ~ 3e-6. The values are still a loop's over
    the first read."""
    model, ds, d = _setup()
    later = 0
    for seed in range(40):
        torch.manual_seed(seed)
        with pytest.warns(UserWarning, match="draws at random") as caught:
            surf = lnb.compute_surface(model, SometimesFlipped(ds, 0.1), d, x=(-1, 1, 3), metrics=None)
        text = next(str(w.message) for w in caught if "draws at random" in str(w.message))
        spread = re.search(r"gave other values when (\d+) more of its samples, spread over the set, were read "
                           r"again \((\d+) of \1 differ\)", text)
        assert "gave other values when its first 8 samples were read again" in text or (
            spread and int(spread[1]) == REREAD_MORE - REREAD_ITEMS), text
        later += spread is not None
        if seed < 2 or spread:
            torch.manual_seed(seed)
            first = SometimesFlipped(ds, 0.1)
            first_read = [torch.stack([first[i][0] for i in range(N)]), ds.tensors[1]]
            np.testing.assert_allclose(surf.loss, _loop_over([first_read], model, d), rtol=1e-5)
    assert later >= 4  # the seeds whose first 8 samples read alike twice

class InPlace(torch.utils.data.Dataset):
    """Scales its stored samples in place as it reads them (``x = self.x[i]; x.mul_(0.5)``): every read gives
    other values, and reading one again changes what an earlier read returned, sharing its memory."""

    def __init__(self, ds: TensorDataset):
        self.x, self.y = ds.tensors[0].clone(), ds.tensors[1]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i]
        x.mul_(0.5)
        return x, self.y[i]


def test_a_dataset_changing_its_samples_in_place_is_evaluated_as_first_read_and_said_so():
    """Reading the first samples again (for the random-draw check) halved them a second time in the data
    already read, sharing their memory, with no word (a review of the change): the data are collated before,
    every sample counts as read once, and the note names the in-place change."""
    model, ds, d = _setup()
    with pytest.warns(UserWarning, match=r"or changes its stored samples in place \(x /= 255 on a cached tensor"):
        surf = lnb.compute_surface(model, InPlace(ds), d, x=(-1, 1, 3), metrics=None)
    np.testing.assert_allclose(surf.loss, _loop_over([(ds.tensors[0] * 0.5, ds.tensors[1])], model, d), rtol=1e-5)


class Standardized(TensorDataset):
    """A TensorDataset subclass standardizing each sample as it is read."""

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return (x - 0.5) / 2, y


@pytest.mark.parametrize("wrap", [lambda ds: ds, lambda ds: DataLoader(ds, batch_size=32)])
def test_a_tensordataset_subclass_is_read_through_its_own_getitem(wrap):
    """A TensorDataset's tensors were read directly, so a subclass transforming in __getitem__ was evaluated on
    its raw tensors: 13.8 % off a loop over it, with no word (trial s32)."""
    model, ds, d = _setup()
    surf = lnb.compute_surface(model, wrap(Standardized(*ds.tensors)), d, x=(-1, 1, 3), metrics=None)
    np.testing.assert_allclose(surf.loss, _loop_over([((ds.tensors[0] - 0.5) / 2, ds.tensors[1])], model, d),
                               rtol=1e-5)


def test_a_collate_fn_drawing_at_random_is_said_so():
    """A DataLoader's collate_fn masking at random (as a masked-language-model collator does) gave reruns 0.033
    apart with no word (trial s32): it is read again with the loader's collate_fn. The words name the collate_fn,
    not the dataset's __getitem__ (trial s33)."""
    model, ds, d = _setup()

    def masking(items):
        x = torch.stack([i[0] for i in items])
        return x * (torch.rand(x.shape) > 0.2), torch.stack([i[1] for i in items])

    with pytest.warns(UserWarning, match=r"the DataLoader's collate_fn \(masking\) gave other values when each of 8 "
                                         r"samples was collated alone twice: it draws at random"):
        surf = lnb.compute_surface(model, DataLoader(Noisy(ds, 0.0), batch_size=32, collate_fn=masking), d,
                                   x=(-1, 1, 3), metrics=None)
    assert "random_items" in surf.provenance["data"]



def _mixup(items):
    """Mixup written x + (1 - lam)·(x[p] - x): a batch of one sample comes back unchanged."""
    x, y = torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])
    lam, p = float(torch.rand(())), torch.randperm(len(x))
    y = F.one_hot(y, 3).float()
    return x + (1 - lam) * (x[p] - x), y + (1 - lam) * (y[p] - y)


def _clean(items):
    return torch.stack([i[0] for i in items]), F.one_hot(torch.stack([i[1] for i in items]), 3).float()


def _mixup_of_32_or_more(items):
    return _clean(items) if len(items) < 32 else _mixup(items)


def _mixup_half_the_time(items):
    return _clean(items) if float(torch.rand(())) < 0.5 else _mixup(items)


def _soft_loss_at(model, d, batches):
    """The sample-weighted mean soft-label cross-entropy over ``batches`` at each coefficient of XS."""
    out = []
    for a in XS:
        m, total, n = model_at(model, d, a), 0.0, 0
        with torch.no_grad():
            for x, y in batches:
                total += float(F.cross_entropy(m(x), y)) * len(x)
                n += len(x)
        out.append(total / n)
    return out


@pytest.mark.parametrize("collate", [_mixup, _mixup_of_32_or_more, _mixup_half_the_time])
def test_a_collate_fn_mixing_a_batch_at_random_is_said_so(collate):
    """A mixup collate_fn written x + (1 - lam)·(x[p] - x) returns a batch of one sample unchanged, so reading
    items again one at a time saw no draw while the set (collated once, as one batch) was mixed: the centre
    loss moved between runs (1.4174, 1.4132, 1.4097) with no word (trial s33); a check collating 8 samples
    twice then missed a mixup of batches of 32 or more (2.883 vs 0.005) and, 7 times in 30, one mixing half
    the batches (trial s33). The set is collated again whole and compared: whenever the values are not the
    clean data's, a warning says the collate_fn draws at random, and they are a loop's over the set as
    collated once."""
    model, ds, d = _setup()
    clean = _soft_loss_at(model, d, [_clean([ds[i] for i in range(N)])])
    warned = 0
    for seed in range(6):
        torch.manual_seed(seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            surf = lnb.compute_surface(model, DataLoader(ds, batch_size=32, collate_fn=collate), d, x=(-1, 1, 3),
                                       metrics=None)
        texts = [str(w.message) for w in caught if "draws at random" in str(w.message)]
        torch.manual_seed(seed)
        once = _soft_loss_at(model, d, [collate([ds[i] for i in range(N)])])
        np.testing.assert_allclose(surf.loss, once, rtol=1e-5)
        if texts:
            warned += 1
            assert f"collate_fn ({collate.__name__}) gave other values when the same {N} samples were collated " \
                   "again as one batch" in texts[0]
            assert texts[0] == "landscape_nb: " + surf.provenance["data"]["random_items"]
        else:  # no word only where the values are the clean data's
            np.testing.assert_allclose(surf.loss, clean, rtol=1e-6)
            assert "random_items" not in surf.provenance["data"]
    assert warned >= (6 if collate is not _mixup_half_the_time else 2)



def _seeded_mixup(items):
    """Mixup drawn from a generator seeded on each call: the same values every run, samples still mixed."""
    g = torch.Generator().manual_seed(0)
    x, y = _clean(items)
    lam, p = float(torch.rand((), generator=g)), torch.randperm(len(x), generator=g)
    return x + (1 - lam) * (x[p] - x), y + (1 - lam) * (y[p] - y)


def _batch_standardized(items):
    x, y = _clean(items)
    return (x - x.mean(0)) / (x.std(0, correction=0) + 1e-6), y


def _batch_standardized_unbiased(items):
    x, y = _clean(items)
    return (x - x.mean(0)) / (x.std(0) + 1e-6), y  # one sample: NaN, and torch warns of 0 degrees of freedom


@pytest.mark.parametrize("collate", [_seeded_mixup, _batch_standardized, _batch_standardized_unbiased])
def test_a_collate_fn_combining_samples_across_the_batch_is_said_so(collate):
    """A seeded mixup (or inputs standardized by the batch's statistics) reads the same every time, so no
    random draw is seen, but the set collated at once is mixed: 1.8e-2 off the data and off a loop over the
    loader, with no word (trial s33). A sample collated alone that is no row of the set says so; the values
    are the set's collated at once."""
    model, ds, d = _setup()
    with pytest.warns(UserWarning, match=rf"collate_fn \({collate.__name__}\) combines samples across the batch: "
                                         r"sample 0 collated alone is no row of the 300 samples") as caught:
        surf = lnb.compute_surface(model, DataLoader(ds, batch_size=32, collate_fn=collate), d, x=(-1, 1, 3),
                                   metrics=None)
    text = next(str(w.message) for w in caught if "combines samples" in str(w.message))
    assert text == "landscape_nb: " + surf.provenance["data"]["random_items"]
    assert not [w for w in caught if "degrees of freedom" in str(w.message)]  # the checks' one-sample batches (s57)
    np.testing.assert_allclose(surf.loss, _soft_loss_at(model, d, [collate([ds[i] for i in range(N)])]), rtol=1e-5)

class Stream(torch.utils.data.IterableDataset):
    """The samples of ``ds`` as a stream: in order, shuffled anew each pass (``shuffle``), or each with noise
    added with probability ``noise`` as it is yielded."""

    def __init__(self, ds, shuffle=False, noise=0.0):
        self.ds, self.shuffle, self.noise = ds, shuffle, noise

    def __iter__(self):
        order = torch.randperm(len(self.ds)) if self.shuffle else range(len(self.ds))
        for i in order:
            x, y = self.ds[int(i)]
            yield (x + torch.randn(x.shape) if float(torch.rand(())) < self.noise else x), y


@pytest.mark.parametrize("make", [
    lambda ds: DataLoader(Stream(ds), batch_size=32, collate_fn=_mixup),
    lambda ds: DataLoader(Stream(ds), batch_size=32, collate_fn=_mixup_half_the_time),
    lambda ds: DataLoader(Stream(ds, noise=0.3), batch_size=32, collate_fn=_clean),
    lambda ds: Stream(ds, noise=0.3),
], ids=["mixup", "mixup half the time", "noisy stream", "noisy stream alone"])
def test_a_stream_drawing_at_random_is_said_so(make):
    """A DataLoader over an IterableDataset had no randomness check at all: a mixup collate_fn gave centre
    losses 1.80 / 0.89 / 1.55 over three seeds, 0.005 on the data; then only its first batch was collated
    again, missing a mixup of some batches 1 time in 3, and a stream adding noise to 3 items in 10 was never
    checked (trials s33). The stream is read a second time and compared; the values are a loop over the
    first read."""
    model, ds, d = _setup()
    for seed in range(3):
        torch.manual_seed(seed)
        with pytest.warns(UserWarning, match=r"gave other values when read a second time: its __iter__ or the "
                                             r"DataLoader's collate_fn draws at random") as caught:
            surf = lnb.compute_surface(model, make(ds), d, x=(-1, 1, 3), metrics=None)
        text = next(str(w.message) for w in caught if "read a second time" in str(w.message))
        assert text == "landscape_nb: " + surf.provenance["data"]["random_items"]
        torch.manual_seed(seed)
        data = make(ds)
        batches = list(data) if isinstance(data, DataLoader) else [_clean(list(data))]
        np.testing.assert_allclose(surf.loss, _soft_loss_at(model, d, batches), rtol=1e-5)



def test_data_too_large_to_read_again_have_their_collate_fn_checked_on_a_part(monkeypatch):
    """Above RECOLLATE_BYTES a set is not collated (or a stream read) again whole: the first samples are
    collated three times instead, which still finds an always-on mixup, on a map-style set and a stream."""
    import landscape_nb.data as data_module

    monkeypatch.setattr(data_module, "RECOLLATE_BYTES", 0)
    model, ds, d = _setup()
    for loader, m in ((DataLoader(ds, batch_size=32, collate_fn=_mixup), N),
                      (DataLoader(Stream(ds), batch_size=32, collate_fn=_mixup), 32)):
        torch.manual_seed(0)
        with pytest.warns(UserWarning, match=rf"collate_fn \(_mixup\) gave other values when the same {m} samples "
                                             r"were collated again as one batch"):
            lnb.compute_surface(model, loader, d, x=(-1, 1, 3), metrics=None)

def test_a_deterministic_or_shuffling_stream_gives_no_random_draw_note():
    """A stream shuffling its order each pass reads the same samples (the mean does not depend on the order):
    no word, and the values are the data's."""
    model, ds, d = _setup()
    clean = _soft_loss_at(model, d, [_clean([ds[i] for i in range(N)])])
    for data in (DataLoader(Stream(ds), batch_size=32, collate_fn=_clean), Stream(ds, shuffle=True),
                 DataLoader(Stream(ds, shuffle=True), batch_size=32, collate_fn=_clean)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            surf = lnb.compute_surface(model, data, d, x=(-1, 1, 3), metrics=None, loss_fn=F.cross_entropy)
        np.testing.assert_allclose(surf.loss, clean, rtol=1e-5)


def test_a_dataset_reading_the_same_values_each_time_gives_no_random_draw_note(recwarn):
    model, ds, d = _setup()
    surf = lnb.compute_surface(model, Noisy(ds, 0.0), d, x=(-1, 1, 3), metrics=None)
    assert not [w for w in recwarn if "random" in str(w.message)]
    assert "random_items" not in surf.provenance["data"]
    np.testing.assert_allclose(surf.loss, _loop_over([ds.tensors], model, d), rtol=1e-5)


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


class Sentences(torch.utils.data.Dataset):
    """Token sequences of 2 to 12 tokens (ids 1..19; 0 is padding), labelled by their first token's parity."""

    def __init__(self, n=90):
        g = torch.Generator().manual_seed(5)
        lengths = torch.randint(2, 13, (n,), generator=g)
        self.items = [torch.randint(1, 20, (int(k),), generator=g) for k in lengths]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i], int(self.items[i][0] % 2)


def pad_batch(items):
    """Pads each batch to its own longest sequence: (tokens (B, L), mask (B, L)), labels (B,)."""
    tokens = nn.utils.rnn.pad_sequence([t for t, _ in items], batch_first=True)
    return (tokens, tokens != 0), torch.tensor([y for _, y in items])


class MeanOfEmbeddings(nn.Module):
    """Mean of the token embeddings, over the real tokens (``masked``) or over every position, padding included."""

    def __init__(self, masked):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.out, self.masked = nn.Embedding(20, 8), nn.Linear(8, 2), masked

    def forward(self, tokens, mask):
        e = self.emb(tokens)
        if not self.masked:
            return self.out(e.mean(1))
        m = mask.unsqueeze(-1).float()
        return self.out((e * m).sum(1) / m.sum(1))


def pad_sorted(items):
    """``pad_batch`` of the batch sorted by length, longest first (as ``pack_padded_sequence`` wants): rows move."""
    return pad_batch(sorted(items, key=lambda item: -len(item[0])))


def pad_left(items):
    """Pads each batch on the left, as decoder-only language models are fed."""
    tokens = nn.utils.rnn.pad_sequence([t.flip(0) for t, _ in items], batch_first=True).flip(1)
    return (tokens, tokens != 0), torch.tensor([y for _, y in items])


@pytest.mark.parametrize("collate", [pad_batch, pad_sorted, pad_left])
def test_a_collate_fn_padding_per_batch_gives_a_loops_values_for_a_model_masking_its_padding(collate):
    """All samples are collated at once (padded to the longest); a model that masks its padding gives, at every
    point, what a loop over the user's loader (each batch padded to its own longest) gives; a collate_fn that
    reorders the batch is no reason to refuse it (rows are matched to their samples)."""
    model, ds = MeanOfEmbeddings(masked=True), Sentences()
    loader = DataLoader(ds, batch_size=16, collate_fn=collate)
    d = lnb.random_directions(model, n=1, seed=0)
    surf = lnb.compute_surface(model, loader, d, x=(-1.0, 1.0, 3), batch_size=32)
    np.testing.assert_allclose(surf.loss, _loop_over(loader, model, d), rtol=1e-5)
    assert "pads each batch to its longest sample" in surf.provenance["data"]["collate"]



@pytest.mark.parametrize("length, more", [(2, [7, 9, 11]), (11, [7])])  # the twin the longest of all: 12
def test_a_sample_that_begins_another_is_matched_to_its_own_padded_row(length, more):
    """A sorted padding collate_fn moves rows; sample 3 [26, 6] was matched to the row of another sample that
    begins with it ([26, 6, 27]) and a masking model was refused for "depending on the padding" (trial s33).
    A row matches a sample where the rest of the row is padding (the value most rows end with)."""
    model, ds = MeanOfEmbeddings(masked=True), Sentences()
    ds.items[3] = torch.cat([ds.items[3], torch.arange(1, 13)])[:length]
    ds.items[70] = torch.cat([ds.items[3], torch.tensor(more)])  # begins with sample 3, same label
    loader = DataLoader(ds, batch_size=16, collate_fn=pad_sorted)
    d = lnb.random_directions(model, n=1, seed=0)
    surf = lnb.compute_surface(model, loader, d, x=(-1.0, 1.0, 3), batch_size=32)
    np.testing.assert_allclose(surf.loss, _loop_over(loader, model, d), rtol=1e-5)

@pytest.mark.parametrize("collate", [pad_batch, pad_sorted, pad_left])
@pytest.mark.parametrize("first_long", [False, True])
def test_a_model_reading_the_padding_of_a_collate_fn_padding_per_batch_is_refused(collate, first_long):
    """Evaluated padded alike, a model averaging over padded positions would give values other than a loop
    over the loader (shown here first), and those of the loop would follow its batch size: refused. Left
    padding passed unchecked, as did a set whose first 70 samples are of the longest length (only the first
    64 were looked at; trial s33)."""
    model, ds = MeanOfEmbeddings(masked=False), Sentences()
    if first_long:
        ds.items[:70] = [torch.cat([t, torch.arange(1, 13)])[:12] for t in ds.items[:70]]
    loader = DataLoader(ds, batch_size=16, collate_fn=collate)
    d = lnb.random_directions(model, n=1, seed=0)
    whole = DataLoader(ds, batch_size=len(ds), collate_fn=collate)  # padded alike, as evaluated
    assert abs(_loop_over(whole, model, d)[1] - _loop_over(loader, model, d)[1]) > 1e-4
    with pytest.raises(lnb.LandscapeError, match=r"loss depends on how much padding the DataLoader's collate_fn "
                                                 r"adds: sample \d+ collated alone .* Mask the padded positions"):
        lnb.compute_surface(model, loader, d, x=(-1.0, 1.0, 3))
    with pytest.raises(lnb.LandscapeError, match="how much padding"):
        lnb.hessian_eigenvalues(model, loader, k=1)


class SentenceStream(torch.utils.data.IterableDataset):
    """``Sentences``' items as a stream (a dataset read once, in order)."""

    def __init__(self, n=90):
        self.ds = Sentences(n)

    def __iter__(self):
        return (self.ds[i] for i in range(len(self.ds)))


def test_a_stream_whose_loader_pads_each_batch_is_collated_at_once_and_its_padding_checked():
    """A DataLoader over a stream with a collate_fn padding each batch was refused ("batches of shapes ... cannot
    be joined"), though the README takes such a collate_fn over a map-style dataset (trial s47). The stream's
    items are now read from its dataset and collated at once: a loop's values for a model masking its padding
    (with max_samples too), said in the provenance; a model reading its padding is refused, as for a Dataset."""
    loader = DataLoader(SentenceStream(), batch_size=16, collate_fn=pad_batch)
    model = MeanOfEmbeddings(masked=True)
    d = lnb.random_directions(model, n=1, seed=0)
    surf = lnb.compute_surface(model, loader, d, x=(-1.0, 1.0, 3), batch_size=32)
    np.testing.assert_allclose(surf.loss, _loop_over(loader, model, d), rtol=1e-5)
    assert "all 90 samples of the stream, read from its dataset, are collated at once" in \
        surf.provenance["data"]["collate"]
    first = DataLoader(Sentences(), batch_size=8, collate_fn=pad_batch, sampler=range(40))  # its first 40
    surf = lnb.compute_surface(model, loader, d, x=(-1.0, 1.0, 3), max_samples=40)
    np.testing.assert_allclose(surf.loss, _loop_over(first, model, d), rtol=1e-5)
    with pytest.raises(lnb.LandscapeError, match="loss depends on how much padding the DataLoader's collate_fn adds"):
        lnb.compute_surface(MeanOfEmbeddings(masked=False), loader, d, x=(-1.0, 1.0, 3))


def test_a_subset_of_padded_data_keeps_each_sample_collated_alone_beside_its_own_row():
    """``EvalData.take`` (the spread samples the batching checks compare) moves each sample collated alone to its
    row in the subset and drops those it leaves out: checked against the dataset's own items, not the tree."""
    ds = Sentences()
    ev = read_data(DataLoader(ds, batch_size=16, collate_fn=pad_batch))
    rows = [r for r, _ in ev.collated_alone]
    assert len(rows) == 8
    idx = torch.tensor([rows[5], 70, rows[0], rows[2], 41])  # three of them, out of order, and two others
    sub = ev.take(idx)
    assert sorted(r for r, _ in sub.collated_alone) == [0, 2, 3]
    for row, ((tokens, _), _) in sub.collated_alone:
        item = ds[int(idx[row])][0]  # the sample at that row of the subset, from the dataset
        assert torch.equal(tokens[0], item)
        assert torch.equal(sub.tree[0][0][row, :len(item)], item)


def test_a_target_key_missing_from_dict_batches_is_refused_naming_the_keys():
    """A target_key named on purpose and absent sent every entry to the model (which then blamed 'labels');
    the default 'labels', absent, still means the model computes its own loss."""
    g = torch.Generator().manual_seed(0)
    data = {"input": torch.randn(20, 6, generator=g), "label": torch.randint(0, 3, (20,), generator=g)}  # model(input=)
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    message = (r"target_key='y', but the dict batches hold the keys \['input', 'label'\]; expected the key of the "
               r"targets among them, e.g. target_key='label' \(or target_key=None for a model that computes its own "
               r"loss from the whole batch\)")  # the hint said to leave the default 'labels' (trial s49)
    with pytest.raises(lnb.LandscapeError, match=message):
        lnb.compute_surface(model, data, lnb.random_directions(model, n=1, seed=0), x=(-1, 1, 3), target_key="y")
    with pytest.raises(lnb.LandscapeError, match=message):
        lnb.hessian_eigenvalues(model, data, k=1, target_key="y")
    surf = lnb.compute_surface(model, data, lnb.random_directions(model, n=1, seed=0), x=(-1, 1, 3), target_key="label")
    with torch.no_grad():
        assert surf.loss[1] == pytest.approx(float(F.cross_entropy(model(data["input"]), data["label"])), rel=1e-6)


def test_bn_data_of_inputs_only_is_read_without_the_named_target_key():
    """``bn_data`` serves its inputs only: dict batches without the named target_key are inputs there, not refused,
    and give the BatchNorm statistics that the same inputs with targets give."""
    g = torch.Generator().manual_seed(0)
    data = {"input": torch.randn(40, 6, generator=g), "label": torch.randint(0, 3, (40,), generator=g)}
    bn_inputs = torch.randn(30, 6, generator=g) * 2 + 1
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).eval()
    d = lnb.random_directions(model, n=1, seed=0)
    kwargs = {"x": (-1, 1, 3), "target_key": "label", "mode": "bn-recompute"}
    alone = lnb.compute_surface(model, data, d, bn_data={"input": bn_inputs}, **kwargs)
    labelled = lnb.compute_surface(model, data, d, bn_data={"input": bn_inputs, "label": torch.zeros(30).long()},
                                   **kwargs)
    np.testing.assert_allclose(alone.loss, labelled.loss, rtol=1e-6)
