#!/usr/bin/env bash
# Builds llama.cpp's own C++ server (llama-server), the peer the Runner is measured against, from the
# llama.cpp source vendored in the llama-cpp-python sdist we install, so both run the same kernels.
# Output: ${LLAMA_SERVER_CACHE:-~/.cache/modelrunner/llama-server}/bin/llama-server (built once).
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="${LLAMA_SERVER_CACHE:-$HOME/.cache/modelrunner/llama-server}"
[ -x "$cache/bin/llama-server" ] && { echo "$cache/bin/llama-server"; exit 0; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$version"
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
src="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
no_amx=""
[ "$(uname -m)" = "x86_64" ] && no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_WEBUI=OFF \
  -DCMAKE_C_FLAGS="$no_amx" -DCMAKE_CXX_FLAGS="$no_amx" >/dev/null
cmake --build "$work/build" --target llama-server -j "$(nproc)" >/dev/null
mkdir -p "$cache/bin"
cp "$work"/build/bin/llama-server "$cache/bin/"
cp "$work"/build/bin/*.so* "$cache/bin/" 2>/dev/null || true
echo "$cache/bin/llama-server"
