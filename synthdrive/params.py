"""params.yaml access with errors that say which key is missing and where to add it."""
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
        try:
            return self[dotted]
        except ParamError:
            return default

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


def load(section: str | None = None, file: str | os.PathLike | None = None) -> Params:
    """params.yaml of the working directory. Not ``repo_root()``: a queued ``dvc exp run`` runs
    the stage in a temp copy holding the ``-S`` overrides while DVC_ROOT names the main repo."""
    path = Path(file) if file else Path.cwd() / "params.yaml"
    if not path.is_file():
        raise ParamError(f"{path}: not found; run the stage from the repo root")
    params = Params(yaml.safe_load(path.read_text()) or {}, file=str(path.name))
    return params[section] if section else params
