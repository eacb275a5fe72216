"""Condition phrases in captions, and rewriting a caption from one condition to another.

Captions are "<condition-free description>, <condition phrase>." so a synthesis prompt for a
target condition is the same description with the phrase swapped (SynDiff-AD's caption
editing). Captions from other sources (LLaVA, people) may word the condition freely; retarget
then rewrites the condition words it recognises and adds what is still missing.
"""
from __future__ import annotations

import re

from synthdrive.conditions import Condition

WEATHER_PHRASES = {"clear": "in clear weather", "cloudy": "under a cloudy sky",
                   "rain": "in the rain", "fog": "in fog"}
TIME_PHRASES = {"day": "during the day", "dusk": "at dusk", "night": "at night"}

# Words that name a factor's value in free text, by part of speech, so a replacement keeps
# the grammar ("a rainy street" -> "a foggy street", "heavy rain" -> "heavy fog").
WEATHER_ADJECTIVES = {"clear": ("clear", "sunny"), "cloudy": ("cloudy", "overcast"),
                      "rain": ("rainy",), "fog": ("foggy", "misty", "hazy")}
WEATHER_NOUNS = {"clear": ("sunshine",), "cloudy": ("clouds",), "rain": ("rain", "raindrops"),
                 "fog": ("fog", "mist", "haze")}
# "clear" alone is too common ("a clear view") to mean the weather: only with these nouns.
CLEAR_NOUNS = r"(?=\s+(?:weather|sky|skies|day|night|evening|conditions))"
TIME_ADJECTIVES = {"day": ("daytime",), "dusk": ("twilight",), "night": ("nighttime", "night-time")}
TIME_NOUNS = {"day": ("day", "daylight"), "dusk": ("dusk", "sunset", "evening"), "night": ("night",)}
# Full time phrases first, so "during the day" becomes "at night", not "during the night".
TIME_PHRASE_FORMS = {"day": ("during the day", "in daylight", "in the daytime"),
                     "dusk": ("at dusk", "at sunset", "in the evening", "at twilight"),
                     "night": ("at night", "during the night", "at nighttime")}


def condition_phrase(condition: Condition) -> str:
    """'in the rain at night' for Condition('rain', 'night')."""
    return f"{WEATHER_PHRASES[condition.weather]} {TIME_PHRASES[condition.time_of_day]}"


def _words(forms) -> str:
    return r"\b(?:" + "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)) + r")\b"


def _sub(pattern: str, replacement: str, text: str) -> tuple[str, int]:
    def keep_case(m: re.Match) -> str:
        return replacement[0].upper() + replacement[1:] if m.group(0)[0].isupper() else replacement
    return re.subn(pattern, keep_case, text, flags=re.IGNORECASE)


def mentions(text: str, factor: str, value: str) -> bool:
    """Whether ``text`` names this weather / time of day in any of the recognised forms."""
    if factor == "weather":
        forms = WEATHER_ADJECTIVES[value] + WEATHER_NOUNS[value]
        if value == "clear":
            return bool(re.search(r"\bclear\b" + CLEAR_NOUNS, text, re.I)
                        or re.search(_words(("sunny",) + WEATHER_NOUNS["clear"]), text, re.I))
        return bool(re.search(_words(forms), text, re.I))
    forms = TIME_ADJECTIVES[value] + TIME_NOUNS[value] + TIME_PHRASE_FORMS[value]
    return bool(re.search(_words(forms), text, re.I))


def retarget(caption: str, source: Condition, target: Condition) -> str:
    """``caption`` of a ``source``-condition frame rewritten to describe ``target`` instead."""
    if source == target:
        return caption
    phrase = condition_phrase(source)
    if phrase in caption:
        return caption.replace(phrase, condition_phrase(target))
    text = caption
    if source.weather != target.weather:
        clear = source.weather == "clear"
        adjectives = WEATHER_ADJECTIVES[source.weather]
        pattern = (r"\bclear\b" + CLEAR_NOUNS + "|" + _words(adjectives[1:])) if clear else _words(adjectives)
        text, _ = _sub(pattern, WEATHER_ADJECTIVES[target.weather][0], text)
        text, _ = _sub(_words(WEATHER_NOUNS[source.weather]), WEATHER_NOUNS[target.weather][0], text)
    if source.time_of_day != target.time_of_day:
        src, dst = source.time_of_day, target.time_of_day
        text, _ = _sub(_words(TIME_PHRASE_FORMS[src]), TIME_PHRASES[dst], text)
        text, _ = _sub(_words(TIME_ADJECTIVES[src]), TIME_ADJECTIVES[dst][0], text)
        text, _ = _sub(_words(TIME_NOUNS[src]), TIME_NOUNS[dst][0], text)
    missing = [WEATHER_PHRASES[target.weather]] if not mentions(text, "weather", target.weather) else []
    if not mentions(text, "time_of_day", target.time_of_day):
        missing.append(TIME_PHRASES[target.time_of_day])
    if missing:
        body = text.rstrip().rstrip(".")
        text = f"{body}, {' '.join(missing)}." if body else " ".join(missing)
    return text
