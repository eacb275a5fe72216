"""Condition phrases and caption retargeting (synthdrive.prompts): the caption stage's captions
and the synthesis prompts name a condition with these."""
from __future__ import annotations

import pytest

from synthdrive.conditions import WEATHERS, Condition, all_conditions
from synthdrive.prompts import condition_phrase, mentions, retarget


def test_condition_phrases_are_distinct_and_name_their_condition():
    phrases = {condition_phrase(c) for c in all_conditions()}
    assert len(phrases) == 12
    for c in all_conditions():
        p = condition_phrase(c)
        assert mentions(p, "weather", c.weather) and mentions(p, "time_of_day", c.time_of_day)
        others = [w for w in WEATHERS if w != c.weather]
        assert not any(mentions(p, "weather", w) for w in others), p


@pytest.mark.parametrize("source,target", [(a, b) for a in all_conditions() for b in all_conditions()])
def test_retarget_template_captions_between_every_pair(source, target):
    caption = f"A street scene with the road ahead and two cars on the left, {condition_phrase(source)}."
    out = retarget(caption, source, target)
    assert out == f"A street scene with the road ahead and two cars on the left, {condition_phrase(target)}."


@pytest.mark.parametrize("caption,source,target,expected", [
    ("A rainy street at night with cars.", Condition("rain", "night"), Condition("fog", "day"),
     "A foggy street during the day with cars."),
    ("Heavy rain on a busy road during the day.", Condition("rain", "day"), Condition("clear", "dusk"),
     "Heavy sunshine on a busy road at dusk."),
    ("A car parked on a clear road on a sunny day.", Condition("clear", "day"),
     Condition("cloudy", "night"), "A car parked on a clear road on a cloudy night."),
    ("Cars wait at a junction.", Condition("clear", "day"), Condition("fog", "night"),
     "Cars wait at a junction, in fog at night."),
    ("A misty evening street.", Condition("fog", "dusk"), Condition("rain", "dusk"),
     "A rainy evening street."),
])
def test_retarget_free_text(caption, source, target, expected):
    assert retarget(caption, source, target) == expected


def test_retarget_leaves_no_source_words_and_is_identity_on_same_condition():
    caption = "A foggy road at night, with fog around the street lights."
    out = retarget(caption, Condition("fog", "night"), Condition("clear", "day"))
    assert not mentions(out, "weather", "fog") and not mentions(out, "time_of_day", "night")
    assert mentions(out, "weather", "clear") and mentions(out, "time_of_day", "day")
    assert retarget(caption, Condition("fog", "night"), Condition("fog", "night")) == caption
