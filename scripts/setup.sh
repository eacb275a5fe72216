#!/usr/bin/env bash
# One-command setup: .venv with every pinned dependency (requirements.txt) and synthdrive itself.
# A second run with unchanged pins is a no-op that takes seconds (stamp file in .venv).
# mmcv is compiled WITH its ops; the wheel is taken, in this order, from the wheel cache outside
# the clone, from ../shared/wheels, or built from the PyPI source (~20 min on 2 cores) and cached.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
VENV=$ROOT/.venv
CACHE=${SYNTHDRIVE_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/synthdrive/wheels}
SHARED_WHEELS=${SYNTHDRIVE_SHARED_WHEELS:-$ROOT/../shared/wheels}
STAMP=$VENV/.synthdrive-setup
pin() { grep -E "^$1==" requirements.txt | head -1 | cut -d= -f3; }
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)

check() { "$VENV/bin/python" -c "from mmcv.ops import MultiScaleDeformableAttention; import mmseg, mmdet, synthdrive" ; }

if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]] && check 2>/dev/null; then
  echo "setup: .venv is up to date (requirements.txt unchanged)"; exit 0
fi

[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
export PIP_NO_INPUT=1
"${PIP[@]}" install "pip>=24"
# Build prerequisites first: mmcv's build imports torch and pkg_resources.
"${PIP[@]}" install "torch==$(pin torch)" "torchvision==$(pin torchvision)" \
  "setuptools==$(pin setuptools)" "wheel==$(pin wheel)" "ninja==$(pin ninja)" "psutil==$(pin psutil)"

MMCV=$(pin mmcv)
mkdir -p "$CACHE"
if ! ls "$CACHE"/mmcv-"$MMCV"-*.whl >/dev/null 2>&1; then
  if ls "$SHARED_WHEELS"/mmcv-"$MMCV"-*.whl >/dev/null 2>&1; then
    echo "setup: mmcv $MMCV wheel from $SHARED_WHEELS"
    cp "$SHARED_WHEELS"/mmcv-"$MMCV"-*.whl "$CACHE"/
  else
    echo "setup: building mmcv $MMCV with ops from source (about 20 minutes on 2 cores)"
    src=$(mktemp -d)
    trap 'rm -rf "$src"' EXIT
    # download sdist, unpack, patch -std=c++17 -> c++20, check it, metadata, compile (CI runs all
    # but the compile on every run: tests/test_setup.py).
    MMCV_PYTHON=$VENV/bin/python MMCV=$MMCV bash scripts/mmcv_source.sh "$src" all
    cp "$src"/wheels/mmcv-*.whl "$CACHE"/
  fi
fi

"${PIP[@]}" install --find-links "$CACHE" --only-binary mmcv -r requirements.txt
"${PIP[@]}" install --no-deps --no-build-isolation -e .
check
echo "$want" > "$STAMP"
echo "setup: done; activate with '. .venv/bin/activate'"
