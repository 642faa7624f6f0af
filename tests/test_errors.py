"""The one did-you-mean check: what it accepts, suggests and says."""
import pytest

from landscape_nb.errors import LandscapeError, check_choice


def test_a_valid_choice_is_returned_unchanged():
    assert check_choice("norm", "layer", ("filter", "layer")) == "layer"
    assert check_choice("ignore", None, ("biasbn", None)) is None


def test_message_says_what_was_given_what_was_expected_and_the_closest_choice():
    with pytest.raises(LandscapeError) as info:
        check_choice("norm", "filtre", ("filter", "layer", "weight", "none"))
    assert str(info.value) == ("unknown norm 'filtre'; expected one of ['filter', 'layer', 'weight', 'none'] "
                               "(did you mean 'filter'?)")
    assert isinstance(info.value, ValueError)


def test_no_suggestion_when_nothing_is_close_and_fix_is_appended():
    with pytest.raises(LandscapeError) as info:
        check_choice("scheme", "zzz", ("random", "pca"), fix="see SCHEMES")
    assert str(info.value) == "unknown scheme 'zzz'; expected one of ['random', 'pca']; see SCHEMES"


def test_several_suggestions_keep_the_choices_own_type():
    with pytest.raises(LandscapeError) as info:
        check_choice("zoo example", "resnet20-digit", ["resnet20-digits", "resnet20-noskip-digits", "mlp-moons"],
                     n=3, cutoff=0.4)
    assert "(did you mean 'resnet20-digits' or 'resnet20-noskip-digits'?)" in str(info.value)
    with pytest.raises(LandscapeError, match=r"did you mean None\?"):
        check_choice("ignore", "Non", ("biasbn", None))  # suggested as None, not as the string 'None'


def test_unhashable_values_are_refused_not_crashed_on():
    with pytest.raises(LandscapeError, match=r"unknown metric \['a'\]; expected one of \['acc'\]"):
        check_choice("metric", ["a"], {"acc": 1})


def test_the_packages_warnings_point_at_the_users_line():
    """However deep in the package a warning is raised, ``warnings`` shows the line of the user's call."""
    import warnings

    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    import landscape_nb as lnb

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8, drop_last=True)  # warns: its last batch is evaluated
    d = lnb.random_directions(model, n=2, seed=0)
    calls = {
        "compute_surface": lambda: lnb.compute_surface(model, loader, d, x=(-1, 1, 3), y=(-1, 1, 3), progress=False),
        "hessian_eigenvalues": lambda: lnb.hessian_eigenvalues(model, loader, k=1, which="max", max_iter=1, tol=1e-14),
        "bf16": lambda: lnb.compute_surface(model, (x, y), d, x=(-1, 1, 3), y=(-1, 1, 3), precision="bf16",
                                            progress=False),
    }
    for name, call in calls.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        ours = [w for w in caught if "landscape_nb" in str(w.message)]
        assert ours, name
        assert {(w.filename, w.lineno) for w in ours} == {(__file__, call.__code__.co_firstlineno)}, (
            name, [(w.filename, w.lineno, str(w.message)[:60]) for w in ours])
