"""params.yaml access with errors that say which key is missing and where to add it.

``load()`` checks the whole file against the schema in ``synthdrive.params_schema`` (types,
ranges, choices) and the data paths of the sections a stage reads, so a bad param stops the stage
before it starts work, with one ParamError line naming the param, its value and what is allowed."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from synthdrive.errors import UserError


class ParamError(UserError, KeyError):
    """A missing or invalid param in params.yaml."""


def repo_root() -> Path:
    """The DVC repo root: DVC_ROOT inside a stage (also for queued experiments), else cwd."""
    return Path(os.environ.get("DVC_ROOT", os.getcwd())).resolve()


def resolve_path(value: str | os.PathLike) -> Path:
    """A path param as a path: ``~`` expanded, a relative one against ``repo_root()`` (queued
    experiments run in a temp copy while the data stays in the repo)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else repo_root() / path


class Params:
    """A read-only view of one section of params.yaml; ``p["a.b"]`` walks nested keys."""

    def __init__(self, data: dict, path: str = "", file: str = "params.yaml"):
        self._data, self._path, self._file = data, path, file

    def __getitem__(self, dotted: str) -> Any:
        node: Any = self._data
        walked = self._path
        for key in dotted.split("."):
            walked = f"{walked}.{key}" if walked else key
            if not isinstance(node, dict) or key not in node:
                raise ParamError(f"{self._file}: missing param '{walked}'; add it "
                                 f"(see the README's params table or the repo's params.yaml)")
            node = node[key]
        return Params(node, walked, self._file) if isinstance(node, dict) else node

    def get(self, dotted: str, default: Any = None) -> Any:
        """``self[dotted]``, or ``default`` when it is missing (a dict default as Params too, so
        callers get one type either way)."""
        try:
            return self[dotted]
        except ParamError:
            return Params(default, dotted, self._file) if isinstance(default, dict) else default

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def choice(self, dotted: str, options) -> str:
        """A param that names one of ``options`` (a backend, a source)."""
        value = self[dotted]
        if value not in options:
            name = f"{self._path}.{dotted}" if self._path else dotted
            raise ParamError(f"{self._file}: {name}={value!r} is unknown; "
                             f"choose one of: {', '.join(sorted(options))}")
        return value

    def items(self):
        return self._data.items()

    def to_dict(self) -> dict:
        return self._data


class _Loader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _Loader, node, deep: bool = False):
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: construct_mapping says so
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice (first on line {first + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse(text: str, name: str = "params.yaml"):
    """YAML text -> data; a syntax error is one ParamError line naming the file and the line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = str(e.problem or e.context or e)
        if e.problem and e.context:
            started = e.context_mark
            what += (f" ({e.context} started on line {started.line + 1})"
                     if started and mark and started.line != mark.line else f" ({e.context})")
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise ParamError(f"{name}: {where}: not valid YAML: {' '.join(what.split())}; "
                         f"fix the syntax") from None
    except yaml.YAMLError as e:
        raise ParamError(f"{name}: not valid YAML ({' '.join(str(e).split())}); fix the syntax") from None


def load(section: str | None = None, file: str | os.PathLike | None = None, *,
         paths=None) -> Params:
    """params.yaml of the working directory. Not ``repo_root()``: a queued ``dvc exp run`` runs
    the stage in a temp copy holding the ``-S`` overrides while DVC_ROOT names the main repo.

    The whole file must pass the schema (``synthdrive.params_schema``); the data paths under
    ``paths`` (dotted sections; default: ``section``) must exist."""
    from synthdrive import params_schema  # it imports this module

    path = Path(file) if file else Path.cwd() / "params.yaml"
    if not path.is_file():
        raise ParamError(f"{path}: not found; run the stage from the repo root")
    data = parse(path.read_text(), path.name)
    data = {} if data is None else data
    params_schema.validate(data, path.name)
    paths = ([section] if section else []) if paths is None else [paths] if isinstance(paths, str) else paths
    params_schema.check_paths(data, paths, path.name)
    params = Params(data, file=str(path.name))
    return params[section] if section else params
