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
