"""Driving conditions: a (weather, time of day) pair, the unit every stage reports by."""
from __future__ import annotations

from typing import NamedTuple

WEATHERS = ("clear", "cloudy", "rain", "fog")
TIMES_OF_DAY = ("day", "dusk", "night")


class Condition(NamedTuple):
    weather: str
    time_of_day: str

    def __str__(self) -> str:
        return f"{self.weather}-{self.time_of_day}"

    @classmethod
    def parse(cls, text: str) -> "Condition":
        """'rain-night' -> Condition('rain', 'night'), with an error naming the valid values."""
        weather, sep, time_of_day = text.partition("-")
        if not sep or weather not in WEATHERS or time_of_day not in TIMES_OF_DAY:
            raise ValueError(f"bad condition {text!r}: write WEATHER-TIME with WEATHER in "
                             f"{WEATHERS} and TIME in {TIMES_OF_DAY}, e.g. 'rain-night'")
        return cls(weather, time_of_day)


def all_conditions() -> list[Condition]:
    return [Condition(w, t) for w in WEATHERS for t in TIMES_OF_DAY]
