"""scripts/setup.sh's source path for mmcv (scripts/mmcv_source.sh), every step but the compile.

CI always finds a cached mmcv wheel, so without this test a broken sdist download, a patch that no
longer matches mmcv's setup.py or metadata pip cannot prepare would only show on a fresh machine.
The real steps need PyPI: they skip when it is unreachable, unless SYNTHDRIVE_REQUIRE_PYPI=1
(.ci/run sets it), where they fail instead.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "mmcv_source.sh"
MMCV = re.search(r"^mmcv==(\S+)", (REPO / "requirements.txt").read_text(), re.M).group(1)
PREPARE = ["download", "unpack", "patch", "check-patch", "metadata"]


def run_steps(workdir: Path, *steps: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MMCV_PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), str(workdir), *steps], env=env,
                          capture_output=True, text=True, timeout=600)


def require_pypi() -> None:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    try:
        urllib.request.urlopen(f"{index}/mmcv/", timeout=20).close()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the index
        why = f"package index {index} unreachable ({type(exc).__name__}: {exc})"
        if os.environ.get("SYNTHDRIVE_REQUIRE_PYPI") == "1":
            pytest.fail(why + " and SYNTHDRIVE_REQUIRE_PYPI=1")
        pytest.skip(why)


def test_mmcv_source_steps_up_to_the_compile(tmp_path):
    require_pypi()
    res = run_steps(tmp_path, "prepare")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    for step in PREPARE:
        assert f"mmcv-source: {step} ok" in res.stdout, out
    setup_py = (tmp_path / f"mmcv-{MMCV}" / "setup.py").read_text()
    assert "'-std=c++20'" in setup_py and "'-std=c++17'" not in setup_py
    # The flags the compile would get, read from setup.py's extension with torch installed.
    flags = re.search(r"mmcv-source: mmcv\._ext with (\d+) sources, cxx flags (.*)", res.stdout)
    assert flags and int(flags.group(1)) > 50 and "-std=c++20" in flags.group(2), out
    assert f"metadata mmcv {MMCV}" in res.stdout, out
    assert not (tmp_path / "wheels").exists(), "prepare must not compile"


def fake_source(tmp_path: Path, setup_py: str) -> Path:
    src = tmp_path / f"mmcv-{MMCV}"
    src.mkdir()
    (src / "setup.py").write_text(setup_py)
    return src


def test_patch_fails_loudly_when_setup_py_no_longer_matches(tmp_path):
    fake_source(tmp_path, "extra_compile_args = {'cxx': ['-std=c++23']}\n")
    res = run_steps(tmp_path, "patch")
    assert res.returncode != 0
    assert "FAILED at step 'patch'" in res.stderr and "update the patch" in res.stderr


def test_check_patch_fails_on_cxx17_left(tmp_path):
    fake_source(tmp_path, "a = ['-std=c++20']\nb = ['-std=c++17']\n")
    res = run_steps(tmp_path, "check-patch")
    assert res.returncode != 0
    assert "FAILED at step 'check-patch'" in res.stderr and "C++17 flags left" in res.stderr


def test_unknown_step_is_refused(tmp_path):
    res = run_steps(tmp_path, "compile")
    assert res.returncode == 2 and "unknown step 'compile'" in res.stderr


def test_setup_sh_builds_mmcv_through_these_steps():
    setup_sh = (REPO / "scripts" / "setup.sh").read_text()
    assert re.search(r'bash scripts/mmcv_source\.sh "\$src" all', setup_sh)
