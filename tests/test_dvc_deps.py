"""Every stage's deps in dvc.yaml cover the synthdrive code its script imports (DESIGN.md:
"rebuilds only what changed" must hold for code too), every params section it reads, and the
data and weights its path params name (``${param}`` deps: new files there rerun it)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from synthdrive import params_schema
from synthdrive.codehash import closure
from tests.helpers import REPO

def _stages():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in dvc.items():
        body = stage.get("do", stage)
        yield name, body


@pytest.mark.parametrize("name,stage", list(_stages()), ids=[n for n, _ in _stages()])
def test_stage_deps_cover_its_imports(name, stage):
    cmd = stage["cmd"]
    script = next(tok for tok in cmd.split() if tok.startswith("stages/") and tok.endswith(".py"))
    deps = [str(d) for d in stage.get("deps", [])]
    assert script in deps, f"{name}: dvc.yaml deps must list its script {script}"
    missing = [f for f in closure(script=REPO / script, lazy=True)
               if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)]
    assert not missing, f"stage {name}: dvc.yaml deps lack {missing} (imported by {script})"


def test_closure_follows_transitive_imports():
    files = closure(script=REPO / "stages/collect.py", lazy=True)
    assert "synthdrive/dataset.py" in files and "synthdrive/errors.py" in files
    assert "synthdrive/label_spaces.yaml" in files
    assert "synthdrive/collect/carla.py" in files  # a backend imported by name


def test_synthesize_imports_no_caption_backend():
    """Synthesis prompts retarget captions with synthdrive.prompts; the caption package (and its
    LLaVA backend) is the caption stage's alone, so a captioner edit does not rerun synthesize."""
    files = closure(script=REPO / "stages/synthesize.py", lazy=True)
    assert "synthdrive/prompts.py" in files
    assert not [f for f in files if f.startswith("synthdrive/caption/")]
    assert "synthdrive/caption/llava.py" in closure(script=REPO / "stages/caption.py", lazy=True)


# --- path params: the data and weights a stage reads are deps --------------------------------------

PARAM_DEP = re.compile(r"^\$\{([\w.]+)\}$")
# Stages that read a path param outside their params: list (the controlnet generator samples from
# the folders that models/generator's manifest names).
EXTRA_READERS = {"generator.controlnet.base_model_dir": {"synthesize"},
                 "generator.controlnet.controlnet_dir": {"synthesize"}}
# Path params that are no deps, and why (dvc.yaml's header says so too): their empty value means
# a mode, and DVC has no optional deps.
NOT_DEPS = {"signs.real_dir": "'' = score on the procedural test set (stages/train_signs.py)",
            "segmenter.model.backbone_checkpoint": "null = train the backbone from scratch (segment/config.py)"}
# Leaf keys of params.yaml that name a file or folder.
PATH_KEY = re.compile(r"(^|_)(path|dir|model|weights|checkpoint)$")


def _param_deps(stage: dict) -> set[str]:
    return {m.group(1) for d in stage.get("deps", []) if (m := PARAM_DEP.match(str(d)))}


def _declares(stage: dict, param: str) -> bool:
    return any(param == p or param.startswith(p + ".") for p in stage.get("params", []) if isinstance(p, str))


def _leaves(node, name: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{name}.{key}" if name else str(key))
    else:
        yield name, node


def test_path_params_are_deps_of_the_stages_that_read_them():
    inputs = params_schema.input_paths()
    stages = dict(_stages())
    for name, stage in stages.items():
        unknown = _param_deps(stage) - set(inputs)
        assert not unknown, f"{name}: deps {unknown} are no InputPath param of synthdrive/params_schema.py"
    for param in inputs:
        readers = {n for n, st in stages.items() if _declares(st, param)} | EXTRA_READERS.get(param, set())
        listed = {n for n, st in stages.items() if param in _param_deps(st)}
        assert readers, f"{param}: no stage declares it"
        assert listed == readers, (f"{param} (read by {sorted(readers)}) must be a dep (${{{param}}}) of exactly "
                                   f"those stages in dvc.yaml, not {sorted(listed)}")


def test_every_path_param_is_a_dep_or_says_why_not():
    """A new param naming data or weights needs InputPath in the schema (and its dvc.yaml deps)."""
    leaves = dict(_leaves(yaml.safe_load((REPO / "params.yaml").read_text())))
    named = {k for k in leaves if PATH_KEY.search(k.rsplit(".", 1)[-1])}
    assert named == set(params_schema.input_paths()) | set(NOT_DEPS)
    assert not set(params_schema.input_paths()) & set(NOT_DEPS)


def test_path_param_defaults_exist_in_a_fresh_clone():
    """DVC refuses a missing dep: every default names something in the repo, the empty placeholder
    folder unset/ where nothing is given (git-tracked: a queued experiment's copy has it too)."""
    placeholder = REPO / params_schema.UNSET
    assert placeholder.is_dir() and [f.name for f in placeholder.iterdir()] == ["README.md"]
    leaves = dict(_leaves(yaml.safe_load((REPO / "params.yaml").read_text())))
    for param in params_schema.input_paths():
        value = leaves[param]
        assert isinstance(value, str) and value and not Path(value).is_absolute(), (param, value)
        assert (REPO / value).resolve().is_relative_to(REPO) and (REPO / value).exists(), (param, value)
    assert params_schema.is_unset(leaves["collect.folder.path"])


def test_dvc_fills_path_deps_from_params(dvc_repo, tmp_path):
    """DVC's own reading of dvc.yaml: ${collect.folder.path} becomes the param's value (what
    `dvc exp run -S collect.folder.path=...` writes), the placeholder by default."""
    from dvc.repo import Repo

    work = dvc_repo(copy=("dvc.yaml",), params={"collect": {"folder": {"path": str(tmp_path / "camvid")}},
                                                "caption": {"llava": {"model_dir": "../llava"}}}).init(git=False).path
    with Repo(str(work)) as repo:
        deps = {s.name: [d.def_path for d in s.deps] for s in repo.index.stages}
    assert str(tmp_path / "camvid") in deps["collect"]
    assert "../llava" in deps["caption"] and params_schema.UNSET not in deps["caption"]
    assert deps["classify"].count(params_schema.UNSET) == 3
    assert params_schema.UNSET in deps["evaluate"] and params_schema.UNSET in deps["synthesize"]


def test_segmenter_variants_come_from_dvc_yaml_in_pipeline_order():
    """train_segmenter's matrix, then train_segmenter_synth's: the variants evaluate reads and
    reports, in this order (synthdrive.segment.train.VARIANTS / SYNTH_VARIANTS)."""
    from synthdrive.segment.train import SYNTH_VARIANTS, VARIANTS

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    plain = stages["train_segmenter"]["matrix"]["variant"]
    synth = stages["train_segmenter_synth"]["matrix"]["variant"]
    assert tuple(plain + synth) == VARIANTS and tuple(synth) == SYNTH_VARIANTS
