"""params.yaml's schema (synthdrive/params_schema.py), run by params.load() before a stage starts:
a bad value, an unknown key, a YAML syntax error or a missing data path is one line naming the
param, the value and what is allowed."""
from __future__ import annotations

import copy
import re

import pytest
import yaml

from synthdrive import params, params_schema, sweep
from synthdrive.params import ParamError, Params
from tests.helpers import REPO, deep_update

BASE = yaml.safe_load((REPO / "params.yaml").read_text())


def _with(dotted: str, value) -> dict:
    data = copy.deepcopy(BASE)
    *head, last = dotted.split(".")
    node = data
    for key in head:
        node = node[key]
    node[last] = value
    return data


def _error(data) -> str:
    with pytest.raises(ParamError) as err:
        params_schema.validate(data)
    message = str(err.value)
    assert "\n" not in message and message.startswith("params.yaml"), message
    return message


def _nested(run: dict) -> dict:
    """{'a.b': 1} -> {'a': {'b': 1}}"""
    out: dict = {}
    for dotted, value in run.items():
        *head, last = dotted.split(".")
        node = out
        for key in head:
            node = node.setdefault(key, {})
        node[last] = value
    return out


# --- what must pass --------------------------------------------------------------------------------

def test_repo_params_pass_and_load_returns_them_unchanged():
    params_schema.validate(BASE)
    assert params.load(file=REPO / "params.yaml").to_dict() == BASE  # checked, never converted


def test_tiny_params_pass():
    tiny = yaml.safe_load((REPO / "tests/tiny_params.yaml").read_text())
    params_schema.validate(deep_update(copy.deepcopy(BASE), tiny))


def test_every_sweep_run_passes():
    sweeps = yaml.safe_load((REPO / "experiments/sweeps.yaml").read_text())["sweeps"]
    for name, spec in sweeps.items():
        for run in sweep.expand(name, spec):
            params_schema.validate(deep_update(copy.deepcopy(BASE), _nested(run)))


def test_choice_lists_match_the_modules():
    """The schema writes its choices out (importing these modules would make them deps of every
    stage); they must stay equal to the modules' own lists."""
    from synthdrive import caption, classify, collect, dataset, generate, pretrained, render
    from synthdrive.collect import folder
    from synthdrive.segment import config
    from synthdrive.signs import classifier
    from synthdrive.signs import data as signs_data

    s = params_schema
    assert set(s.COLLECTORS) == set(collect.COLLECTORS)
    assert set(s.FOLDER_LAYOUTS) == set(folder.LAYOUTS) and set(s.CONDITION_RULES) == set(folder.CONDITION_RULES)
    assert set(s.RENDER_DENSITIES + s.RENDER_PROBS) == set(render.option_names())
    assert set(s.SIGN_BACKENDS) == set(signs_data.BACKENDS) and set(s.SIGN_INITS) == set(classifier.INITS)
    assert set(s.CLASSIFY_BACKENDS) == set(classify.BACKENDS)
    assert set(s.EFFNET_VARIANTS) == set(pretrained.VARIANTS)
    assert set(s.CAPTION_BACKENDS) == set(caption.BACKENDS)
    assert set(s.SEGMENTER_MODELS) == set(config.MODELS)
    assert set(s.GENERATOR_BACKENDS) == set(generate.BACKENDS)
    assert s.SPLITS == dataset.SPLITS


# --- one line per bad value -------------------------------------------------------------------------

@pytest.mark.parametrize("dotted,value,expected", [
    # the cases
    ("collect.height", "abc", "params.yaml: collect.height='abc' must be an integer >= 8"),
    ("collect.height", -8, "params.yaml: collect.height=-8 must be an integer >= 8"),
    ("collect.height", 0, "params.yaml: collect.height=0 must be an integer >= 8"),
    ("collect.height", 3.7, "params.yaml: collect.height=3.7 must be an integer >= 8"),
    ("collect.height", True, "params.yaml: collect.height=True must be an integer >= 8"),
    ("collect.procedural.frames.train", 2.5, "collect.procedural.frames.train=2.5 must be an integer >= 0"),
    ("collect.procedural.render.car_density", -3, "collect.procedural.render.car_density=-3 must be a number >= 0"),
    # the obvious others
    ("generator.spade_gan.iterations", -5, "generator.spade_gan.iterations=-5 must be an integer >= 1"),
    ("collect.procedural.render.building_prob", 1.5, "building_prob=1.5 must be a number in [0, 1]"),
    ("collect.procedural.train_mix", {"clear-day": 1, "rain-nite": 1},
     "collect.procedural.train_mix has key 'rain-nite', which must be a condition WEATHER-TIME"),
    ("collect.procedural.train_mix", {"clear-day": -1}, "train_mix.clear-day=-1 must be a number >= 0"),
    ("collect.procedural.train_mix", {"clear-day": 0}, "at least one > 0"),
    ("collect.procedural.train_mix", {}, "train_mix={} must be a mapping of conditions to weights >= 0"),
    ("collect.source", "kitti", "collect.source='kitti' is unknown; choose one of: carla, folder, procedural"),
    ("collect.seed", -1, "collect.seed=-1 must be an integer >= 0"),
    ("collect.folder.resplit", [{"match": "train/*", "split": "holdout"}],
     "collect.folder.resplit[0].split='holdout' is unknown; choose one of: test, train, val"),
    ("collect.folder.resplit", [{"split": "test"}], "missing param 'collect.folder.resplit[0].match'"),
    ("collect.folder.label_map", {300: 1},
     "collect.folder.label_map has key 300, which must be an integer in [0, 255]"),
    ("collect.folder.ignore_ids", [11, "x"], "collect.folder.ignore_ids[1]='x' must be an integer in [0, 255]"),
    ("collect.carla.port", 70000, "collect.carla.port=70000 must be an integer in [1, 65535]"),
    ("collect.carla.timeout", 0, "collect.carla.timeout=0 must be a number > 0"),
    ("collect.carla.episodes", [], "collect.carla.episodes=[] must be a non-empty list of episodes"),
    ("collect.carla.episodes", [{"weather": "ClearNoon", "condition": "snow-day"}],
     "collect.carla.episodes[0].condition='snow-day' must be a condition"),
    ("labels.space", "kitti", "labels.space='kitti' is unknown; choose one of: ade20k, camvid11"),
    ("signs.data.backend", "gan", "signs.data.backend='gan' is unknown; choose one of: diffusers, procedural"),
    ("signs.data.conditions", {"fog-day": -1}, "signs.data.conditions.fog-day=-1 must be a number >= 0"),
    ("signs.data.diffusers.height", 500, "signs.data.diffusers.height=500 must be an integer >= 8 divisible by 8"),
    ("signs.train.lr", 0, "signs.train.lr=0 must be a number > 0"),
    ("report.headline_metrics", "eval.json:x", "report.headline_metrics='eval.json:x' must be a list of"),
    ("classify.use", "guess", "classify.use='guess' is unknown; choose one of: auto, predicted, truth"),
    ("classify.heuristic.cv_folds", -1, "classify.heuristic.cv_folds=-1 must be an integer >= 0"),
    ("classify.clip.device", "gpu", "classify.clip.device='gpu' must be auto, cpu, cuda or cuda:N"),
    ("classify.clip.prompts.weather", "no placeholder", "must be a text with one {} where the word goes"),
    ("classify.clip.words.weather", {"sunny": "sunny"}, "has key 'sunny', which must be one of: clear, cloudy"),
    ("caption.backend", "gpt", "caption.backend='gpt' is unknown; choose one of: llava, template"),
    ("caption.template.min_area", 1.5, "caption.template.min_area=1.5 must be a number in [0, 1]"),
    ("caption.llava.query", "Describe {scene}.",
     "caption.llava.query='Describe {scene}.' must be a text with {classes}"),
    ("caption.llava.load_in_4bit", "yes", "caption.llava.load_in_4bit='yes' must be true or false"),
    ("segmenter.seeds", [], "segmenter.seeds=[] must be a non-empty list of seeds"),
    ("segmenter.seeds", [0, 1.5], "segmenter.seeds[1]=1.5 must be an integer >= 0"),
    ("segmenter.model.name", "unet",
     "segmenter.model.name='unet' is unknown; choose one of: fcn, mask2former, segformer"),
    ("segmenter.model.backbone_checkpoint", 5, "segmenter.model.backbone_checkpoint=5 must be null or a path"),
    # path params that are DVC deps: 'unset' names nothing, '' and null would break every dvc command
    ("classify.clip.model_dir", "", "classify.clip.model_dir='' must be a local CLIP folder (save_pretrained) "
                                    "(relative: to the repo root), or 'unset' for none"),
    ("collect.folder.path", None, "collect.folder.path=None must be a path to the dataset folder"),
    ("evaluate.fid.inception_weights", None,
     "evaluate.fid.inception_weights=None must be a pt_inception-2015-12-05 weights file"),
    ("classify.heuristic.model", "", "classify.heuristic.model='' must be a heuristic.json fit elsewhere "
                                     "(unset: fit on the train split)"),
    ("segmenter.train.scale_range", [1.0],
     "segmenter.train.scale_range=[1.0] must be a list [low, high] of 2 numbers > 0"),
    ("segmenter.train.photometric_distortion", 1, "photometric_distortion=1 must be true or false"),
    ("segmenter.mix.ratio", 1.0, "segmenter.mix.ratio=1.0 must be a number in [0, 1)"),
    ("segmenter.real_aug.targets", ["rain-nite"], "segmenter.real_aug.targets[0]='rain-nite' must be a condition"),
    ("filter_synthetic.min_miou", -1.0, "filter_synthetic.min_miou=-1.0 must be a mIoU in percent, in [0, 100]"),
    ("evaluate.split", "holdout", "evaluate.split='holdout' is unknown; choose one of: test, train, val"),
    ("evaluate.rare_conditions", "all", "evaluate.rare_conditions='all' must be 'auto' or a list of conditions"),
    ("evaluate.fid.kid_subset_size", 1, "evaluate.fid.kid_subset_size=1 must be an integer >= 2"),
    ("evaluate.fid.max_frames", float("nan"), "evaluate.fid.max_frames=nan must be an integer >= 2"),
    ("generator.backend", "stylegan", "generator.backend='stylegan' is unknown; choose one of: controlnet, pix2pix"),
    ("generator.diversity_seeds", 1, "generator.diversity_seeds=1 must be an integer >= 2"),
    ("generator.spade_gan.channels", [32, 0], "generator.spade_gan.channels[1]=0 must be an integer >= 1"),
    ("generator.spade_gan.betas", [0.5], "generator.spade_gan.betas=[0.5] must be a list of 2 numbers in [0, 1)"),
    ("generator.pix2pix.dropout", 1.0, "generator.pix2pix.dropout=1.0 must be a number in [0, 1)"),
    ("generator.vae.kl_weight", -0.1, "generator.vae.kl_weight=-0.1 must be a number >= 0"),
    ("generator.sdm.uncond_prob", 1.5, "generator.sdm.uncond_prob=1.5 must be a number in [0, 1]"),
    ("generator.sdm.beta_schedule", "cosine",
     "generator.sdm.beta_schedule='cosine' is unknown; choose one of: linear,"),
    ("generator.controlnet.width", 1004, "generator.controlnet.width=1004 must be an integer >= 8 divisible by 8"),
    ("synthesize.count", 0, "synthesize.count=0 must be an integer >= 1"),
    ("synthesize.target_mix", "unifrom", "synthesize.target_mix='unifrom' must be 'uniform' or a mapping"),
    ("synthesize.target_mix", {"rain-nite": 1}, "synthesize.target_mix has key 'rain-nite', which must be a condition"),
    ("synthesize.source_min_share", 1.5, "synthesize.source_min_share=1.5 must be a number in [0, 1]"),
    ("synthesize.sdm.eta", 2, "synthesize.sdm.eta=2 must be a number in [0, 1]"),
])
def test_bad_value_is_one_line_naming_param_value_and_allowed(dotted, value, expected):
    assert expected in _error(_with(dotted, value))


@pytest.mark.parametrize("dotted,expected", [
    ("collect.heigth", "unknown param 'collect.heigth'; collect has: carla, folder, height, procedural, seed, "
                       "source, width"),
    ("colect", "unknown param 'colect'; sections are: caption, classify, collect,"),
    ("generator.spade_gan.iteration", "unknown param 'generator.spade_gan.iteration'; generator.spade_gan has: "
                                      "batch_size, betas,"),
    ("synthesize.spade_gan", "unknown param 'synthesize.spade_gan'; synthesize has: batch_size,"),
])
def test_unknown_key_names_the_valid_keys(dotted, expected):
    assert expected in _error(_with(dotted, 1))


def test_unknown_key_inside_a_list_entry():
    data = _with("collect.carla.episodes", [{"weather": "ClearNoon", "splt": "val"}])
    assert "unknown param 'collect.carla.episodes[0].splt'; collect.carla.episodes[0] has: condition, frames, " \
           "split, weather" in _error(data)


def test_a_section_that_is_not_a_mapping():
    assert "params.yaml: collect=5 must be a mapping with keys among: carla, folder," in _error(_with("collect", 5))
    assert _error([1, 2]).startswith("params.yaml must be a mapping of sections (labels, collect,")


def test_rules_between_params():
    assert "synthesize.shard_index=2 must be an integer in 0..shard_count-1 (synthesize.shard_count=2)" in \
        _error(deep_update(copy.deepcopy(BASE), {"synthesize": {"shard_index": 2, "shard_count": 2}}))
    assert "segmenter.train.scale_range=[1.5, 0.75] must be [low, high] with low <= high" in \
        _error(_with("segmenter.train.scale_range", [1.5, 0.75]))
    assert "filter_synthetic.ignore_classes[1]='polee' is unknown; choose one of the classes of " \
           "labels.space=camvid11: sky, building, pole" in \
        _error(_with("filter_synthetic.ignore_classes", ["pole", "polee"]))
    params_schema.validate(_with("filter_synthetic.ignore_classes", ["pole", "sign"]))


def test_keys_may_be_left_out_and_are_reported_when_read():
    data = copy.deepcopy(BASE)
    del data["collect"]["height"], data["generator"]["sdm"]
    params_schema.validate(data)  # the stage that reads it says "missing param ..."
    with pytest.raises(ParamError, match="missing param 'collect.height'"):
        Params(data)["collect.height"]


def test_valid_edge_values_pass():
    for dotted, value in [
            ("collect.height", 8), ("collect.carla.timeout", 1), ("collect.carla.town", "Town01"),
            ("segmenter.model.backbone_checkpoint", "r18.pth"), ("segmenter.real_aug.targets", ["rain-night"]),
            ("evaluate.rare_conditions", []), ("synthesize.target_mix", {"rain-night": 2, "fog-day": 1}),
            ("collect.procedural.frames", {"train": 0, "val": 0}), ("classify.clip.device", "cuda:1"),
            ("collect.carla.episodes", [{"weather": {"fog_density": 90}, "condition": "fog-day"}]),
            ("segmenter.train.dist_backend", "nccl"), ("caption.llava.query", "It has {classes}; {{x}}.")]:
        params_schema.validate(_with(dotted, value))


# --- the file: YAML errors, duplicate keys ----------------------------------------------------------

def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    (tmp_path / "params.yaml").write_text("collect:\n  height: 64\n width: 128\n")
    with pytest.raises(ParamError) as err:
        params.load(file=tmp_path / "params.yaml")
    assert re.match(r"params\.yaml: line 3, column 2: not valid YAML: .*; fix the syntax$", str(err.value))
    assert "unicode string" not in str(err.value)


def test_a_key_given_twice_is_refused(tmp_path):
    (tmp_path / "params.yaml").write_text("collect:\n  height: 64\n  width: 128\n  height: 32\n")
    with pytest.raises(ParamError, match=r"params\.yaml: line 4, column 3: not valid YAML: key 'height' given "
                                         r"twice \(first on line 2\)"):
        params.load(file=tmp_path / "params.yaml")


# --- data paths --------------------------------------------------------------------------------------

def _write(tmp_path, overrides: dict):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(deep_update(copy.deepcopy(BASE), overrides)))
    return path


def test_paths_of_the_sections_a_stage_reads_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    file = _write(tmp_path, {"collect": {"source": "folder", "folder": {"path": "no/camvid"}},
                             "signs": {"real_dir": "no/signs"},
                             "classify": {"heuristic": {"model": "no/heuristic.json"}}})
    with pytest.raises(ParamError, match=rf"^params\.yaml: collect\.folder\.path='no/camvid' \({tmp_path}/no/camvid\) "
                                         r"is not a folder"):
        params.load(file=file, paths="collect")
    with pytest.raises(ParamError, match=r"^params\.yaml: signs\.real_dir='no/signs' .* is not a folder"):
        params.load("signs", file=file)
    with pytest.raises(ParamError,
                       match=r"^params\.yaml: classify\.heuristic\.model='no/heuristic.json' .* is not a file"):
        params.load("classify", file=file)
    # other stages do not need them
    assert params.load("signs.data", file=file)["backend"] == "procedural"
    assert params.load(file=file)["collect.source"] == "folder"
    # relative paths resolve against the repo root (DVC_ROOT: a queued experiment's temp copy is elsewhere)
    (tmp_path / "no" / "camvid").mkdir(parents=True)
    (tmp_path / "no" / "signs").mkdir()
    (tmp_path / "no" / "heuristic.json").write_text("{}")
    monkeypatch.chdir(tmp_path / "no")
    params.load(file=file, paths="collect")
    params.load("signs", file=file)
    params.load("classify", file=file)


def test_folder_path_is_only_needed_for_the_folder_source(tmp_path):
    file = _write(tmp_path, {"collect": {"source": "procedural", "folder": {"path": str(tmp_path / "absent")}}})
    params.load(file=file, paths="collect")


def test_unset_path_params_name_nothing(tmp_path, monkeypatch):
    """'unset' (the placeholder folder unset/, an existing DVC dep) is "no path given", however written."""
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    for value in ("unset", "./unset", str(tmp_path / "unset"), None, ""):
        assert params_schema.is_unset(value), value
    for value in ("unset/x", "../unset", str(REPO / "unset") + "2"):
        assert not params_schema.is_unset(value), value
    (tmp_path / "unset").mkdir()  # it exists (DVC needs that) but holds no dataset
    file = _write(tmp_path, {"collect": {"source": "folder"}})
    assert BASE["collect"]["folder"]["path"] == params_schema.UNSET
    with pytest.raises(ParamError, match=r"^params\.yaml: collect\.folder\.path='unset' names no dataset \(unset/ "
                                         r"is the empty placeholder\); point it at the dataset folder"):
        params.load(file=file, paths="collect")
    params.load("classify", file=file)  # classify.heuristic.model: unset = fit on the train split


# --- stage scripts: one line, exit status 1, no output -----------------------------------------------

def _fails(workdir, stage: str, overrides: dict | None, pattern: str) -> str:
    proc = workdir.run(stage, overrides, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert pattern in lines[0], lines[0]
    data = workdir.path / "data"
    assert not (data / "raw").exists() and not list(data.glob(".raw.tmp-*") if data.exists() else [])
    return lines[0]


def test_collect_stage_refuses_a_bad_height(workdir):
    _fails(workdir, "collect", {"collect": {"height": "abc"}},
           "error: params.yaml: collect.height='abc' must be an integer >= 8")


def test_any_stage_refuses_a_bad_value_of_another_section(workdir):
    """The whole file is checked: a bad value fails the first stage that runs, not only its reader."""
    _fails(workdir, "collect", {"synthesize": {"target_mix": {"clear-day": 1, "rain-nite": 1}}},
           "error: params.yaml: synthesize.target_mix has key 'rain-nite', which must be a condition")


def test_collect_stage_names_yaml_syntax_errors(workdir):
    text = (workdir.path / "params.yaml").read_text()
    (workdir.path / "params.yaml").write_text(text.replace("  height: 128", "  height: [128", 1))
    line = _fails(workdir, "collect", None, "error: params.yaml: line ")
    assert "not valid YAML" in line


def test_collect_stage_checks_the_folder_path_first(workdir, tmp_path):
    _fails(workdir, "collect", {"collect": {"source": "folder", "folder": {"path": str(tmp_path / "absent")}}},
           f"error: params.yaml: collect.folder.path='{tmp_path / 'absent'}'")
