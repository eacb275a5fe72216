"""Which synthetic frames to make: target conditions toward an explicit target mix, source
layouts from the common conditions (SynDiff-AD samples sources by frequency and targets
favouring rare subgroups; here the target mix is a param, uniform by default)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from synthdrive.conditions import Condition, all_conditions, weighted_mix
from synthdrive.params import ParamError


@dataclass(frozen=True)
class Job:
    index: int                 # position in the whole plan (ids stay unique across shards)
    source_id: str
    source_condition: Condition
    target_condition: Condition
    seed: int


def target_mix(spec, seen: Iterable[Condition] = ()) -> dict[Condition, float]:
    """``'uniform'`` or {condition: weight}, normalised to sum 1.

    ``uniform`` spreads over every weather x time-of-day pair whose weather and time each occur
    in ``seen`` (the train frames' conditions): the in-project generators learn one embedding per
    factor, so a combination of seen factors is within reach (procedural: all 12) while a factor
    never trained is noise (CamVid, all clear weather: clear-day and clear-dusk only). An explicit
    map is taken as written (ControlNet renders any condition from its prompt)."""
    if spec == "uniform":
        seen = set(seen)
        reachable = [c for c in all_conditions() if c.weather in {s.weather for s in seen}
                     and c.time_of_day in {s.time_of_day for s in seen}]
        if not reachable:
            raise ParamError("synthesize.target_mix=uniform: no train frame has a known condition; "
                             "give an explicit {condition: weight} map")
        return {c: 1 / len(reachable) for c in reachable}
    if not isinstance(spec, dict):
        raise ParamError(f"synthesize.target_mix={spec!r}: write 'uniform' or a map "
                         f"{{condition: weight}}, e.g. {{rain-night: 1, fog-day: 1}}")
    return weighted_mix(spec, "synthesize.target_mix")


def allocate(real: Counter, mix: dict[Condition, float], count: int) -> dict[Condition, int]:
    """How many synthetic frames per target condition so real + synthetic moves toward ``mix``:
    each condition's shortfall against mix x (real + count), shared out by largest remainder."""
    total = sum(real.values()) + count
    shortfall = {c: max(0.0, share * total - real.get(c, 0)) for c, share in mix.items()}
    weights = shortfall if sum(shortfall.values()) > 0 else dict(mix)
    norm = sum(weights.values())
    exact = {c: count * w / norm for c, w in weights.items()}
    quota = {c: int(np.floor(v)) for c, v in exact.items()}
    by_remainder = sorted(exact, key=lambda c: (-(exact[c] - quota[c]), str(c)))
    for c in by_remainder[: count - sum(quota.values())]:
        quota[c] += 1
    return {c: n for c, n in sorted(quota.items(), key=lambda kv: str(kv[0])) if n}


def plan(conditions: dict[str, Condition], count: int, mix: dict[Condition, float],
         source_min_share: float, seed: int) -> list[Job]:
    """The whole synthesis plan for the train frames ``conditions`` ({id: Condition}).

    Sources are drawn uniformly from frames whose condition makes up at least
    ``source_min_share`` of the train split (so by frequency, from common conditions only).
    """
    if not conditions:
        raise ParamError("synthesize: no train frames to take layouts from")
    real = Counter(conditions.values())
    common = {c for c, n in real.items() if n / len(conditions) >= source_min_share}
    if not common:
        raise ParamError(f"synthesize.source_min_share={source_min_share}: no condition is that "
                         f"common (largest share {max(real.values()) / len(conditions):.2f}); lower it")
    pool = sorted(i for i, c in conditions.items() if c in common)
    rng = np.random.default_rng(seed)
    jobs = []
    for target, n in allocate(real, mix, count).items():
        for _ in range(n):
            source = pool[int(rng.integers(len(pool)))]
            jobs.append(Job(len(jobs), source, conditions[source], target, int(rng.integers(2**31))))
    return jobs


def shard(jobs: list[Job], index: int, count: int) -> list[Job]:
    """The jobs of shard ``index`` of ``count`` (machines split one synthesis by index)."""
    if not 0 <= index < count:
        raise ParamError(f"synthesize.shard_index={index} must be in 0..shard_count-1 ({count - 1})")
    return jobs[index::count]
