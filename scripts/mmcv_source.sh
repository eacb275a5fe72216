#!/usr/bin/env bash
# mmcv's build from the PyPI source, in steps. scripts/setup.sh runs them all when no mmcv wheel is
# cached; CI (tests/test_setup.py) runs every step but the compile, in seconds, so that a broken
# download, a patch that no longer matches or metadata that cannot be prepared fails on every run.
#
#   bash scripts/mmcv_source.sh DIR [STEP...]      (default: all)
#   steps: download unpack patch check-patch metadata build
#          prepare = download unpack patch check-patch metadata;  all = prepare build
#
# DIR is a scratch folder (created if missing). The wheel lands in DIR/wheels.
# MMCV_PYTHON: the venv's python (default .venv/bin/python), with torch and setuptools < 81 in it:
#   mmcv's setup.py imports pkg_resources and torch, so every step runs without build isolation.
# MMCV: the version (default: the pin in requirements.txt). MAX_JOBS: compile jobs (default 2).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${MMCV_PYTHON:-$ROOT/.venv/bin/python}
MMCV=${MMCV:-$(grep -E '^mmcv==' "$ROOT/requirements.txt" | head -1 | cut -d= -f3)}
[[ $# -ge 1 ]] || { echo "usage: $0 DIR [STEP...]" >&2; exit 2; }
DIR=$1; shift
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
SRC=$DIR/mmcv-$MMCV
PIP=("$PY" -m pip --disable-pip-version-check -q)
export PIP_NO_INPUT=1

die() { echo "mmcv-source: FAILED at step '$step': $*" >&2; exit 1; }

step_download() {
  # --no-build-isolation: pip prepares the sdist's metadata while downloading; in an isolated
  # environment it would get setuptools >= 81, which has no pkg_resources (ModuleNotFoundError).
  "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation -d "$DIR" "mmcv==$MMCV" \
    || die "pip download of the mmcv $MMCV sdist failed"
  [[ -f $DIR/mmcv-$MMCV.tar.gz ]] || die "no $DIR/mmcv-$MMCV.tar.gz after the download"
}

step_unpack() {
  tar xzf "$DIR/mmcv-$MMCV.tar.gz" -C "$DIR" || die "cannot unpack mmcv-$MMCV.tar.gz"
  [[ -f $SRC/setup.py ]] || die "no setup.py in $SRC"
}

step_patch() {
  # mmcv forces -std=c++17 (last on the compiler line); torch 2.14 headers need C++20.
  grep -qF "'-std=c++17'" "$SRC/setup.py" \
    || die "no '-std=c++17' in $SRC/setup.py: mmcv's setup.py changed, update the patch"
  sed -i "s/'-std=c++17'/'-std=c++20'/g; s#'/std:c++17'#'/std:c++20'#g" "$SRC/setup.py"
}

step_check-patch() {
  if grep -nF -e "'-std=c++17'" -e "'/std:c++17'" "$SRC/setup.py" >&2; then
    die "C++17 flags left in setup.py after the patch (lines above)"
  fi
  # What the compile will really get: run setup.py with setup() stubbed out, read the extension.
  (cd "$SRC" && MMCV_WITH_OPS=1 "$PY" - <<'EOF') || die "the extension's compile flags are not C++20 (above)"
import contextlib, io, runpy, sys
import setuptools
kw = {}
setuptools.setup = lambda **k: kw.update(k)
sys.argv = ["setup.py", "egg_info"]
with contextlib.redirect_stdout(io.StringIO()):
    runpy.run_path("setup.py", run_name="__main__")
ext = kw.get("ext_modules") or []
if not ext:
    sys.exit("no extension in setup.py (is torch installed in this python?)")
args = ext[0].extra_compile_args
cxx = args.get("cxx", []) if isinstance(args, dict) else list(args)
print(f"mmcv-source: {ext[0].name} with {len(ext[0].sources)} sources, cxx flags {cxx}")
std = [a for a in cxx if "std" in a]
if not std or any("c++20" not in a for a in std):
    sys.exit(f"cxx std flags are {std}, want only -std=c++20")
EOF
}

step_metadata() {
  # Metadata of the patched tree, prepared the way `pip wheel` will (no isolation), no compile.
  MMCV_WITH_OPS=1 "${PIP[@]}" install --dry-run --ignore-installed --no-deps --no-build-isolation \
    --report "$DIR/metadata.json" "$SRC" || die "pip cannot prepare the metadata of $SRC"
  "$PY" - "$DIR/metadata.json" "$MMCV" <<'EOF' || die "wrong metadata (above)"
import json, sys
meta = json.load(open(sys.argv[1]))["install"][0]["metadata"]
got = (meta["name"], meta["version"])
print(f"mmcv-source: metadata {got[0]} {got[1]}")
sys.exit(None if got == ("mmcv", sys.argv[2]) else f"want ('mmcv', {sys.argv[2]!r}), got {got}")
EOF
}

step_build() {
  echo "mmcv-source: compiling mmcv $MMCV ops with MAX_JOBS=${MAX_JOBS:-2} (about 20 minutes on 2 cores)"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} "${PIP[@]}" wheel --no-build-isolation --no-deps \
    -w "$DIR/wheels" "$SRC" || die "compiling mmcv failed"
  ls "$DIR"/wheels/mmcv-"$MMCV"-*.whl >/dev/null 2>&1 || die "no mmcv wheel in $DIR/wheels"
}

steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(all)
expanded=()
for s in "${steps[@]}"; do
  case $s in
    prepare) expanded+=(download unpack patch check-patch metadata) ;;
    all) expanded+=(download unpack patch check-patch metadata build) ;;
    download|unpack|patch|check-patch|metadata|build) expanded+=("$s") ;;
    *) echo "mmcv-source: unknown step '$s'" >&2; exit 2 ;;
  esac
done
for step in "${expanded[@]}"; do
  t0=$SECONDS
  echo "mmcv-source: $step (mmcv $MMCV in $DIR) start $(date '+%F %T')"
  "step_$step"
  echo "mmcv-source: $step ok in $((SECONDS - t0)) s, end $(date '+%F %T')"
done
