"""The synthesis planner (synthdrive.synthesize.planner: target mix, allocation, jobs, shards),
the prompts it writes and synthesize() on an untrained tiny generator. The synthesize stage runs
end to end after train_generator in tests/generate/test_generate.py."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import yaml

from synthdrive import generate
from synthdrive.conditions import Condition
from synthdrive.errors import UserError
from synthdrive.params import Params
from synthdrive.synthesize import prompt_for, synthesize
from synthdrive.synthesize.planner import allocate, plan, shard, target_mix
from tests.helpers import REPO, gen_params, truth


def test_planner_targets_rare_conditions_from_common_sources():
    conditions = {f"d{i}": Condition("clear", "day") for i in range(90)}
    conditions.update({f"n{i}": Condition("clear", "dusk") for i in range(10)})
    conditions.update({f"r{i}": Condition("rain", "day") for i in range(5)})
    mix = target_mix("uniform", conditions.values())
    # every pair of seen factors (rain-dusk is new but both factors were trained), no unseen factor
    assert set(mix) == {Condition(w, t) for w in ("clear", "rain") for t in ("day", "dusk")}
    jobs = plan(conditions, 60, mix, source_min_share=0.2, seed=1)
    assert len(jobs) == 60
    targets = Counter(j.target_condition for j in jobs)
    assert Condition("clear", "day") not in targets                    # already over-represented
    assert targets[Condition("clear", "dusk")] < targets[Condition("rain", "dusk")]
    assert {j.source_condition for j in jobs} == {Condition("clear", "day")}
    assert jobs == plan(conditions, 60, mix, 0.2, seed=1)
    assert jobs != plan(conditions, 60, mix, 0.2, seed=2)
    shards = [shard(jobs, i, 3) for i in range(3)]
    assert sorted(j.index for s in shards for j in s) == list(range(60))
    with pytest.raises(UserError, match="shard_index"):
        shard(jobs, 3, 3)


def test_allocate_follows_an_explicit_mix():
    real = Counter({Condition("clear", "day"): 50})
    quota = allocate(real, target_mix({"rain-night": 3, "fog-day": 1}), 40)
    assert quota == {Condition("fog", "day"): 10, Condition("rain", "night"): 30}
    with pytest.raises(UserError, match="target_mix"):
        target_mix({"snow-day": 1})
    with pytest.raises(UserError, match="target_mix=uniform"):
        target_mix("uniform", [])


def test_prompt_retargets_the_caption_and_names_the_classes(raw):
    job = plan(truth(raw), 1, target_mix({"rain-night": 1}), 0.1, seed=0)[0]
    caption = {"caption": "A street scene with a car ahead, in clear weather during the day.",
               "condition": "clear-day"}
    text = prompt_for(job, caption, raw.label(job.source_id), raw.label_space.classes)
    assert "in the rain at night" in text and "during the day" not in text
    assert "Must contain" in text and "car" in text.split("Must contain")[1]


def test_synthesize_writes_a_valid_dataset(raw, train_data, tmp_path):
    gen = generate.create(Params(gen_params()), "camvid11")
    conditions = {k: v for k, v in truth(raw).items() if k in {r["id"] for r in raw.split("train")}}
    jobs = plan(conditions, 7, target_mix("uniform", conditions.values()), 0.3, seed=0)
    out = synthesize(gen, raw, jobs, {}, tmp_path / "synthetic", batch_size=3)
    out.validate()
    assert len(out) == 7
    for r, job in zip(out.records, jobs):
        assert r["source_id"] == job.source_id and r["seed"] == job.seed
        assert r["target_condition"] == f"{r['weather']}-{r['time_of_day']}" != r["source_condition"]
        assert r["prompt"]
        np.testing.assert_array_equal(out.label(r["id"]), raw.label(job.source_id))


def test_sampler_params_rerun_synthesize_only():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert "synthesize" in stages["synthesize"]["params"]
    assert not any(p.startswith("synthesize") for p in stages["train_generator"]["params"])
    assert "models/generator" in stages["synthesize"]["deps"]
