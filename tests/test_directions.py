import warnings

import numpy as np
import pytest
import torch
from torch import nn

import landscape_nb as lnb
from landscape_nb import LandscapeError
from landscape_nb.directions import Directions, as_directions
from landscape_nb.evaluate import EvalSettings

from conftest import TinyCNN, make_mlp


def _per_param(d: Directions):
    return d.as_state_dicts()


def test_filter_norm_matches_weight_norm_per_filter(cnn):
    d = lnb.random_directions(cnn, n=2, norm="filter", ignore="biasbn", seed=3)
    for dd in _per_param(d):
        for name, w in cnn.named_parameters():
            if w.ndim > 1:
                for i in range(w.shape[0]):
                    np.testing.assert_allclose(float(dd[name][i].norm()), float(w[i].detach().norm()), rtol=1e-5)


def test_biasbn_directions_are_exactly_zero_for_1d_tensors(cnn):
    for norm in ("filter", "layer", "weight", "none"):
        d = lnb.random_directions(cnn, n=2, norm=norm, ignore="biasbn", seed=0)
        for dd in _per_param(d):
            for name, w in cnn.named_parameters():
                if w.ndim == 1:
                    assert torch.count_nonzero(dd[name]) == 0, (norm, name)
                else:
                    assert torch.count_nonzero(dd[name]) > 0


def test_layer_norm_matches_weight_norm_per_tensor(cnn):
    d = lnb.random_directions(cnn, n=1, norm="layer", ignore=None, seed=1)
    dd = _per_param(d)[0]
    for name, w in cnn.named_parameters():
        np.testing.assert_allclose(float(dd[name].norm()), float(w.norm()), rtol=1e-5)


def test_weight_norm_and_none_follow_the_seeded_gaussian(cnn):
    """Regenerate the Gaussian independently: weight norm is g * w, none is g."""
    for norm in ("weight", "none"):
        d = lnb.random_directions(cnn, n=1, norm=norm, ignore=None, seed=5)
        gen = torch.Generator().manual_seed(5)
        dd = _per_param(d)[0]
        for name, w in cnn.named_parameters():
            g = torch.randn(w.shape, generator=gen)
            expect = g * w.detach() if norm == "weight" else g
            torch.testing.assert_close(dd[name], expect, rtol=1e-6, atol=1e-7)


def test_directions_reproducible_by_seed_and_differ_across_seeds(cnn):
    a = lnb.random_directions(cnn, seed=7).vectors
    b = lnb.random_directions(cnn, seed=7).vectors
    c = lnb.random_directions(cnn, seed=8).vectors
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_orthogonalize_gives_cosine_below_1e6_and_reports_before_after():
    model = make_mlp()
    d = lnb.random_directions(model, n=3, norm="filter", seed=0, orthogonalize=True)
    v = d.vectors.double()
    cos = (v @ v.T) / v.norm(dim=1)[:, None] / v.norm(dim=1)[None, :]
    off = cos[~torch.eye(3, dtype=bool)]
    assert off.abs().max() < 1e-6
    assert d.provenance["cosine_max"] < 1e-6
    assert d.provenance["cosine_max_before"] > 1e-4  # a small model: random directions overlap visibly
    raw = lnb.random_directions(model, n=3, norm="filter", seed=0)
    np.testing.assert_allclose(v.norm(dim=1).numpy(), raw.vectors.double().norm(dim=1).numpy(), rtol=1e-5)
    # ignored 1-D tensors stay exactly zero after QR
    for dd in d.as_state_dicts():
        for name, w in model.named_parameters():
            if w.ndim == 1:
                assert torch.count_nonzero(dd[name]) == 0


def test_orthogonalize_function_on_user_directions():
    model = make_mlp()
    d = lnb.orthogonalize(as_directions(model, [torch.ones(sum(p.numel() for p in model.parameters())),
                                                torch.arange(sum(p.numel() for p in model.parameters())).float()]))
    v = d.vectors.double()
    assert abs(float(v[0] @ v[1])) / float(v[0].norm() * v[1].norm()) < 1e-6


def test_orthogonalize_refuses_dependent_directions():
    model = make_mlp()
    n = sum(p.numel() for p in model.parameters())
    from landscape_nb.directions import Directions
    from landscape_nb.params import ParamLayout

    with pytest.raises(LandscapeError, match="linearly dependent"):  # as_directions refuses these already
        lnb.orthogonalize(Directions(torch.stack([torch.ones(n), 2 * torch.ones(n)]), ParamLayout.of(model), {}))


def test_interpolation_direction_is_difference_of_weights_and_buffers(cnn):
    b = TinyCNN()
    with torch.no_grad():
        b.bn.running_mean.fill_(0.3)
    d = lnb.interpolation_direction(cnn, b, include_buffers=False)
    dd = d.as_state_dicts()[0]
    assert set(dd) == {n for n, _ in cnn.named_parameters()}
    for name, p in cnn.named_parameters():
        torch.testing.assert_close(dd[name], dict(b.named_parameters())[name].detach() - p.detach())
    db = lnb.interpolation_direction(cnn, b).as_state_dicts()[0]  # buffers by default, as interpolation_surface
    assert set(db) == {n for n, _ in cnn.named_parameters()} | {"bn.running_mean", "bn.running_var"}
    torch.testing.assert_close(db["bn.running_mean"], b.bn.running_mean - cnn.bn.running_mean)
    assert "bn.num_batches_tracked" not in db


def test_plane_through_three_models():
    a, b, c = make_mlp(0), make_mlp(1), make_mlp(2)
    d = lnb.plane_directions(a, b, c)
    v = d.as_state_dicts()
    for name, p in a.named_parameters():
        torch.testing.assert_close(v[0][name], dict(b.named_parameters())[name].detach() - p.detach())
        torch.testing.assert_close(v[1][name], dict(c.named_parameters())[name].detach() - p.detach())


def test_directions_save_load_roundtrip_without_pickle(tmp_path, cnn):
    d = lnb.random_directions(cnn, n=2, seed=4)
    path = d.save(tmp_path / "d.npz")
    with np.load(path, allow_pickle=False) as z:  # readable with pickle disabled
        assert set(z.files) == {"vectors", "meta"}
    e = Directions.load(path)
    assert torch.equal(e.vectors, d.vectors)
    assert e.layout == d.layout
    assert e.provenance["seed"] == 4 and e.provenance["norm"] == "filter"


def test_load_refuses_garbage(tmp_path):
    p = tmp_path / "bad.npz"
    p.write_bytes(b"not a zip")
    with pytest.raises(LandscapeError, match="cannot read directions"):
        Directions.load(p)


@pytest.mark.parametrize("kwargs, match", [
    ({"norm": "filtre"}, "did you mean 'filter'"),
    ({"norm": "dfilter"}, (r"^norm='dfilter' \(the reference implementation's normalization of the direction "
                           r"alone, each filter to unit norm, not to the weights' norm\) is not offered")),
    ({"norm": "dlayer"}, r"norm='layer' is Li et al.'s layer normalization"),  # not "did you mean", trial s35
    ({"ignore": "bias"}, "unknown ignore"),
    ({"n": 0}, "expected an integer from 1"),
    ({"seed": -1}, r"^seed=-1; expected an integer from 0 to 2\*\*64 - 1"),  # was the directions of seed 2**64 - 1
    ({"seed": 2**64}, r"^seed=18446744073709551616; expected an integer from 0"),  # was an OverflowError from torch
])
def test_random_directions_bad_options(cnn, kwargs, match):
    with pytest.raises(LandscapeError, match=match):
        lnb.random_directions(cnn, **kwargs)


def test_directions_from_another_architecture_refused():
    d = lnb.random_directions(make_mlp(), n=2)
    with pytest.raises(LandscapeError, match="another architecture"):
        as_directions(TinyCNN(), d)
    with pytest.raises(LandscapeError, match="another architecture"):
        lnb.interpolation_direction(make_mlp(), TinyCNN())


def test_models_that_differ_only_in_what_is_frozen_are_told_so():
    a, b = make_mlp(0), make_mlp(1)
    a[0].weight.requires_grad_(False)
    with pytest.raises(LandscapeError, match=r"the same tensors but \['0.weight'\] trainable in one and frozen"):
        lnb.interpolation_direction(a, b)


def test_user_directions_wrong_shape_refused(mlp):
    n = sum(p.numel() for p in mlp.parameters())
    with pytest.raises(LandscapeError, match=f"expected {n}"):
        as_directions(mlp, [torch.ones(n + 1)])
    bad = {name: torch.zeros(p.shape) for name, p in mlp.named_parameters()}
    bad["0.weight"] = torch.zeros(3, 3)
    with pytest.raises(LandscapeError, match="has shape"):
        as_directions(mlp, [bad])
    with pytest.raises(LandscapeError, match="empty list"):
        as_directions(mlp, [])


def test_user_directions_with_a_misspelt_name_are_refused_naming_it(mlp):
    d = {name: torch.ones(p.shape) for name, p in mlp.named_parameters()}
    d["0.wieght"] = d.pop("0.weight")
    with pytest.raises(LandscapeError, match=r"^direction 0 has tensors for \['0.wieght'\], which Sequential does not "
                                             r"have; .*did you mean '0.weight' for '0.wieght'\?"):
        as_directions(mlp, [d])


def test_user_directions_that_move_batchnorm_statistics_move_them(cnn, cnn_data, tmp_path):
    """Dicts made from a ``state_dict`` (as the reference's ``dir_type="states"``) move the running statistics
    too: every point equals a naive copy of the model with buffers moved, and the provenance names them. A
    variance made negative is left so, NaN there as in the reference (clamped at 0 it gave a finite, made-up loss),
    counted in n_diverged and explained. Without them in the dicts, the statistics stay."""
    import copy

    g = torch.Generator().manual_seed(4)
    dirs = [{k: 0.3 * torch.randn(v.shape, generator=g) for k, v in cnn.state_dict().items() if v.is_floating_point()}
            for _ in range(2)]
    d = as_directions(cnn, dirs)
    assert d.provenance["buffers"] == ["bn.running_mean", "bn.running_var"]
    x, y = cnn_data

    def check(s, clamp):
        for j, b in enumerate(s.y):
            for i, a in enumerate(s.x):
                m = copy.deepcopy(cnn)
                state = {k: v + float(a) * dirs[0][k] + float(b) * dirs[1][k] if k in dirs[0] else v
                         for k, v in cnn.state_dict().items()}
                if clamp:
                    state["bn.running_var"] = state["bn.running_var"].clamp_min(0)
                m.load_state_dict(state)
                with torch.no_grad():
                    want = float(torch.nn.functional.cross_entropy(m.eval()(x), y))
                np.testing.assert_allclose(s.loss[j, i], want, rtol=1e-5)  # NaN where the naive one is NaN

    s = lnb.compute_surface(cnn, cnn_data, d, x=(-2, 2, 3), y=(-2, 2, 3), store=tmp_path / "s.zarr")
    check(s, clamp=False)
    assert 0 < s.n_diverged < s.loss.size and "as in the reference" in s.divergence_note
    clamped = lnb.compute_surface(cnn, cnn_data, d, x=(-2, 2, 3), y=(-2, 2, 3),
                                  settings=EvalSettings(clamp_running_var=True))
    check(clamped, clamp=True)  # asked for: honoured, not overridden by the directions' kind
    with pytest.raises(LandscapeError, match=r"a BatchNorm running_var the directions make negative: left negative "
                                             r"\(NaN there, as in the reference\) stored, clamped at 0 now"):
        lnb.compute_surface(cnn, cnn_data, d, x=(-2, 2, 3), y=(-2, 2, 3), store=tmp_path / "s.zarr",
                            settings=EvalSettings(clamp_running_var=True))
    assert clamped.n_diverged == 0 and not clamped.divergence_note and "clamped" in clamped.provenance["running_var"]
    recomputed = lnb.compute_surface(cnn, cnn_data, d, x=(-2, 2, 3), y=(-2, 2, 3), mode="bn", bn_data=cnn_data)
    assert "clamp_running_var" not in recomputed.spec["eval"] and not recomputed.divergence_note  # unused there
    params_only = as_directions(cnn, [{k: t for k, t in dd.items() if "running" not in k} for dd in dirs])
    assert "buffers" not in params_only.provenance and params_only.layout.n_params < d.layout.n_params


def test_user_directions_that_move_a_frozen_parameter_are_refused_and_frozen_ones_are_named():
    """A frozen tensor is outside the layout: a direction moving it would be dropped silently, so it is
    refused; with zeros there it is accepted and the frozen tensor is listed as held fixed."""
    import landscape_nb as lnb
    from landscape_nb import LandscapeError

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    model[0].weight.requires_grad_(False)
    sd = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    with pytest.raises(LandscapeError, match=r"direction 0 moves \['0.weight'\], frozen in the model"):
        lnb.as_directions(model, [sd])
    sd["0.weight"] = torch.zeros_like(sd["0.weight"])
    d = lnb.as_directions(model, [sd])
    assert d.provenance["excluded"] == ["0.weight (frozen)"]
    assert "0.weight" not in {e.name for e in d.layout.entries}


def test_user_directions_that_span_fewer_axes_than_drawn_are_refused(mlp):
    """A zero, non-finite or dependent direction would draw a plausible surface that is not the model's."""
    n = sum(p.numel() for p in mlp.parameters())
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(n, generator=g) for _ in range(3))
    data = (torch.randn(20, 6, generator=g), torch.randint(0, 3, (20,), generator=g))
    for dirs, match in [([a, a.clone()], "directions 0 and 1 are parallel"),
                        ([a, -2.5 * a], "directions 0 and 1 are parallel"),
                        ([a, b, a + b], "3 directions are linearly dependent"),
                        ([a, torch.zeros(n)], "direction 1 of 2 is all zeros"),
                        ([torch.full((n,), float("nan"))], "direction 0 holds [0-9]+ non-finite")]:
        with pytest.raises(LandscapeError, match=match):
            as_directions(mlp, dirs)
        with pytest.raises(LandscapeError, match=match):  # before any point is evaluated
            lnb.compute_surface(mlp, data, dirs, x=(-1, 1, 3), y=(-1, 1, 3) if len(dirs) > 1 else None)
    # independent, however close: accepted (|cosine| 0.999), the cosine recorded
    near = a + 0.045 * b * (a.norm() / b.norm())
    d = as_directions(mlp, [a, near])
    assert 0.998 < d.provenance["cosine_max"] < 0.9995
    assert as_directions(mlp, [a, b, c]).n == 3
    assert as_directions(mlp, [torch.zeros(n)]).n == 1  # a line that stays put (e.g. between identical models)


def test_directions_objects_are_checked_too_and_orthogonalize_refuses_float32_noise(mlp, tmp_path):
    """A plane from a file (the reference's --same_dir) or from random_directions of a model with nothing to
    move is refused like user tensors; orthogonalize never turns the rounding of parallel vectors into a direction."""
    from landscape_nb.directions import Directions
    from landscape_nb.params import ParamLayout

    n = sum(p.numel() for p in mlp.parameters())
    v = torch.randn(n, generator=torch.Generator().manual_seed(1))
    same = Directions(torch.stack([v, v]), ParamLayout.of(mlp), {"scheme": "reference"})
    with pytest.raises(LandscapeError, match="parallel"):
        as_directions(mlp, same)
    with pytest.raises(LandscapeError, match="parallel"):
        lnb.orthogonalize(Directions(torch.stack([v, 3 * v]), ParamLayout.of(mlp), {}))  # 3v - 3v: float32 noise
    bn_only = torch.nn.Sequential(torch.nn.BatchNorm1d(6))
    with pytest.raises(LandscapeError, match="all zeros.*ignore=None"):
        lnb.random_directions(bn_only, n=2, ignore="biasbn")
    assert lnb.random_directions(bn_only, n=2, ignore=None).n == 2


def test_state_dict_directions_of_a_model_with_tied_weights_are_accepted():
    """A state_dict names a tied tensor under both its names; the alias is the same tensor, not an unknown one."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    model[1].weight = model[0].weight
    dirs = [{"0.weight": t, "1.weight": t} for t in torch.randn(2, 10, 4)]
    d = as_directions(model, dirs)
    assert d.layout.n_params == 40 and "buffers" not in d.provenance
    torch.testing.assert_close(d.vectors, torch.stack([dd["0.weight"].reshape(-1) for dd in dirs]), rtol=0, atol=0)
    d = as_directions(model, [{"1.weight": t} for t in torch.randn(2, 10, 4)])  # the alias alone moves it too
    assert d.layout.n_params == 40


def test_a_tied_tensor_given_different_values_under_its_names_is_refused():
    """One tensor under two names moves once: which values (the first name's? their sum, as the reference's
    set_states adds them?) would be a guess, so the direction is refused, not silently half-used."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    model[1].weight = model[0].weight
    dirs = [{k: torch.randn_like(v) for k, v in model.state_dict().items()} for _ in range(2)]
    with pytest.raises(LandscapeError, match=r"^direction 0 gives '0.weight' and '1.weight' different values, but "
                                             r"they are one tied tensor of Sequential, moved once; expected the same "
                                             r"tensor under both names"):
        as_directions(model, dirs)


def test_directions_made_before_a_parameter_was_frozen_are_told_so(mlp):
    d = lnb.random_directions(mlp, n=1, seed=0)
    mlp[0].weight.requires_grad_(False)
    with pytest.raises(LandscapeError, match=r"^the directions cover 1 tensor\(s\) frozen in the model "
                                             r"\(requires_grad=False\) since they were made: \['0.weight'\]; "):
        as_directions(mlp, d)
    deep = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    d = lnb.random_directions(deep, n=1, seed=0)
    for p in list(deep.parameters())[:-1]:  # all but one: counted, three named (trial s39: 'move' named a zero
        p.requires_grad_(False)  # direction's bias, and left out the fourth)
    with pytest.raises(LandscapeError, match=r"^the directions cover 5 tensor\(s\) .*'2.weight'\] and more; "):
        as_directions(deep, d)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_weight_is_named_not_blamed_on_its_direction(bad):
    """Filter normalization of a NaN/inf weight gives a NaN direction; the error names the weight."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    with torch.no_grad():
        model[2].weight[1, 3] = bad
    for norm in ("filter", "layer", "weight"):
        with pytest.raises(LandscapeError, match=r"the model's param '2\.weight' holds 1 non-finite value"):
            lnb.random_directions(model, n=2, norm=norm)
    d = lnb.random_directions(model, n=2, norm="none")  # raw Gaussian: nothing of the weights in it
    assert bool(torch.isfinite(d.vectors).all())


def test_a_line_along_an_all_zero_direction_warns_that_it_is_a_point(mlp):
    """Refused in a plane; on a line the flat plot is true, but rarely meant: said at the user's line."""
    x, y = torch.randn(20, 6), torch.randint(0, 3, (20,))
    zero = torch.zeros(1, sum(p.numel() for p in mlp.parameters()))
    with pytest.warns(UserWarning, match=r"^landscape_nb: direction 0 is all zeros: it moves no weight") as caught:
        surf = lnb.compute_surface(mlp, (x, y), zero, x=(-1, 1, 3), progress=False)
    assert {w.filename for w in caught} == {__file__}
    assert np.ptp(surf.loss) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lnb.compute_surface(mlp, (x, y), lnb.random_directions(mlp, n=1), x=(-1, 1, 3), progress=False)
