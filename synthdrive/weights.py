"""Local weights that load as data, checked before a stage does anything expensive.

A file or folder a param names is never code: weights are read with
``torch.load(weights_only=True)`` or safetensors only, and a folder is checked to hold weight
files before a stage starts, so a wrong path is one line naming the param and the folder instead
of a library traceback half-way through (and no half-written output).

- :func:`check_model_folder`: a ``save_pretrained`` folder (transformers or diffusers model:
  ``config.json`` plus ``*.safetensors`` / ``*.bin``, every shard an index names present);
- :func:`check_pipeline_folder`: a diffusers pipeline folder (``model_index.json``; each model
  component's subfolder holds its weights; no component that is custom code);
- :func:`check_all`: several checks, every problem reported in one line;
- :func:`load_tensors`: a weights file as a dict of tensors, refusing anything a pickle would
  have to run code (or even build a non-tensor object) for.

transformers and diffusers read ``*.bin`` files with ``torch.load(weights_only=True)`` themselves
and never run a folder's ``*.py`` without ``trust_remote_code``, which synthdrive never sets.
"""
from __future__ import annotations

import json
import pickle
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Iterable, Mapping

from synthdrive.errors import UserError
from synthdrive.params import resolve_path
from synthdrive.params_schema import is_unset

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
# model_index.json components whose subfolder holds no weights (tokenizers, schedulers, ...)
# need nothing; a subfolder with a config.json is a model and needs its weight files.
MODEL_CONFIG = "config.json"


class WeightsError(UserError):
    """A weights file or folder that is missing, incomplete or not plain tensors."""


def weight_files(folder: Path) -> list[Path]:
    """The weight files directly in ``folder`` (safetensors or torch .bin, sharded or not)."""
    return sorted(f for pattern in WEIGHT_PATTERNS for f in Path(folder).glob(pattern) if f.is_file())


def _missing_shards(folder: Path) -> list[str]:
    """Shards that a ``*.index.json`` in ``folder`` names but the folder lacks."""
    missing: list[str] = []
    for index in sorted(folder.glob("*.index.json")):
        try:
            shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (ValueError, AttributeError):
            return [f"{index.name} (not a weight index)"]
        missing += sorted(s for s in shards if not (folder / s).is_file())
    return missing


def model_folder_problem(folder: Path, marker: str = MODEL_CONFIG) -> str | None:
    """What keeps ``folder`` from being a local model with weights, or None."""
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not (folder / marker).is_file():
        return f"{folder} is not a model folder (no {marker})"
    if not weight_files(folder):
        return f"{folder} has {marker} but no weights (no {' or '.join(WEIGHT_PATTERNS)})"
    missing = _missing_shards(folder)
    if missing:
        return f"{folder} lacks weight shards its index names: {', '.join(missing[:3])}"
    return None


def pipeline_folder_problem(folder: Path, skip: Iterable[str] = ()) -> str | None:
    """What keeps ``folder`` from being a diffusers pipeline with weights, or None.

    ``skip``: components the caller replaces (``safety_checker=None``, a separate ControlNet)."""
    index = folder / "model_index.json"
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not index.is_file():
        return f"{folder} is not a pipeline folder (no model_index.json)"
    try:
        components = json.loads(index.read_text())
    except ValueError as e:
        return f"{index} is not JSON ({e})"
    if not isinstance(components, dict):
        return f"{index} is not a component table"
    with_weights = 0
    for name, spec in sorted(components.items()):
        if name.startswith("_") or name in set(skip) or not isinstance(spec, list) or len(spec) != 2 \
                or spec[0] is None:
            continue
        sub = folder / name
        if not sub.is_dir():
            return f"{folder} lacks the {name}/ folder its model_index.json lists"
        if isinstance(spec[0], str) and (sub / f"{spec[0]}.py").is_file():
            return (f"{sub} is custom code ({spec[0]}.py); synthdrive loads only diffusers and "
                    f"transformers classes")
        if (sub / MODEL_CONFIG).is_file():
            problem = model_folder_problem(sub)
            if problem:
                return problem
            with_weights += 1
    if not with_weights:
        return f"{folder} has model_index.json but no model component with weights"
    return None


def _fail(param: str, value, problem: str, hint: str, error: type[UserError]) -> None:
    shown = value if value is None else str(value)
    raise error(f"params.yaml: {param}={shown!r}: {problem}" + (f"; {hint}" if hint else ""))


def _checked(value, param: str, hint: str, error: type[UserError], problem_of: Callable) -> Path:
    if is_unset(value):
        _fail(param, value, "no folder given", hint, error)
    path = resolve_path(value)
    problem = problem_of(path)
    if problem:
        _fail(param, value, problem, hint, error)
    return path


def check_model_folder(value, param: str, hint: str = "", marker: str = MODEL_CONFIG,
                       error: type[UserError] = WeightsError) -> Path:
    """The model folder named by param ``param`` (``value``; relative to the repo root), or
    ``error`` naming both."""
    return _checked(value, param, hint, error, lambda path: model_folder_problem(path, marker))


def check_pipeline_folder(value, param: str, hint: str = "", skip: Iterable[str] = (),
                          error: type[UserError] = WeightsError) -> Path:
    """The diffusers pipeline folder named by param ``param`` (``value``; relative to the repo
    root), or ``error``."""
    return _checked(value, param, hint, error, lambda path: pipeline_folder_problem(path, skip))


def check_all(*checks: Callable[[], Path]) -> list[Path]:
    """Run every check; all their problems become one line (the first error's class)."""
    paths, errors = [], []
    for check in checks:
        try:
            paths.append(check())
        except UserError as e:
            errors.append(e)
    if errors:
        raise type(errors[0])(" | ".join(str(e) for e in errors))
    return paths


def _unpickling_reason(e: Exception) -> str:
    """The gist of torch's (long, multi-line) weights_only refusal."""
    text = str(e)
    m = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", text)
    if m:
        return f"its pickle asks for {m[1]}, which no weights file needs (unpickling it would run code)"
    m = re.search(r"Unsupported operand \S+", text)
    if m:
        return m[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[1] if len(lines) > 1 else lines[0] if lines else type(e).__name__)[:200]


FIX = "re-save it as a plain state dict (torch.save(model.state_dict())) or as .safetensors"


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def load_tensors(path, param: str | None, allow: list | None = None, fix: str = FIX,
                 error: type[UserError] = WeightsError) -> dict:
    """The contents of weights file ``path`` (named by param ``param``, if any), read as data.

    ``.safetensors`` through safetensors, anything else through ``torch.load(weights_only=True)``
    (``allow``: extra types admitted with ``torch.serialization.safe_globals``, e.g. mmengine's
    checkpoint bookkeeping). A file whose pickle wants anything else (code) is refused, in one line.
    """
    import torch

    path = Path(path)
    name = f"params.yaml: {param}={str(path)!r}: {path}" if param else str(path)
    if not path.is_file():
        raise error(f"{name} does not exist")
    refuse = f"{name} is not a tensor-only weights file"
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors' own SafetensorError, OSError, ...
            raise error(f"{refuse} ({_first_line(e)}); {fix}") from None
    guard = torch.serialization.safe_globals(allow) if allow else nullcontext()
    try:
        with guard:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise error(f"{refuse}: {_unpickling_reason(e)}; {fix}") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise error(f"{refuse} ({_first_line(e)}); {fix}") from None
    if not isinstance(obj, Mapping):
        raise error(f"{refuse} (it holds a {type(obj).__name__}, not a dict of tensors); {fix}")
    return dict(obj)


def tensor_state_dict(obj: Mapping, path, param: str | None, error: type[UserError] = WeightsError) -> dict:
    """``obj`` (from :func:`load_tensors`) as a flat {name: tensor} state dict, or ``error``."""
    import torch

    bad = [k for k, v in obj.items() if not (isinstance(k, str) and torch.is_tensor(v))]
    if bad or not obj:
        what = f"entry {bad[0]!r} is not a tensor" if bad else "it is empty"
        name = f"params.yaml: {param}={str(path)!r}: {path}" if param else str(path)
        raise error(f"{name} is not a state dict of tensors ({what}); {FIX}")
    return dict(obj)
