"""The shared condition helpers every stage uses: keys, the rare subgroups, one-per-condition picks."""
import pytest

from synthdrive.conditions import condition_key, one_per_condition, rare_conditions


def test_condition_key_of_a_record():
    assert condition_key({"weather": "rain", "time_of_day": "night"}) == "rain-night"
    assert condition_key({"weather": "fog"}, missing="?") == "fog-?"
    with pytest.raises(KeyError):
        condition_key({"weather": "fog"})


def test_rare_conditions_are_all_but_the_most_common_or_the_given_list():
    train = ["clear-day"] * 5 + ["rain-day"] * 2 + ["fog-dusk"]
    assert rare_conditions(train) == ["fog-dusk", "rain-day"]
    assert rare_conditions(train, ["rain-night"]) == ["rain-night"]
    assert rare_conditions([]) == []
    with pytest.raises(ValueError, match="bad condition"):
        rare_conditions(train, ["rain-nite"])


def test_one_per_condition_takes_conditions_in_turn():
    frames = [("a", "clear-day"), ("b", "clear-day"), ("c", "fog-day"), ("d", "rain-dusk")]
    picked = one_per_condition(frames, lambda f: f[1], 4)
    assert [f[0] for f in picked] == ["a", "c", "d", "b"]
    assert [f[0] for f in one_per_condition(frames, lambda f: f[1], 2, order=["rain-dusk"])] == ["d", "a"]
