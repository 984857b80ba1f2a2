#!/usr/bin/env bash
# llama.cpp for Hoshikage, built once per set of build flags and kept outside pip's cache.
#
#   scripts/llama-cpp.sh wheel        print the path of a llama-cpp-python wheel built with RPC
#   scripts/llama-cpp.sh rpc-server   print the path of llama.cpp's ggml-rpc-server, same sources
#   scripts/llama-cpp.sh llama-server print the path of llama.cpp's llama-server (the benchmark's
#                                     peer), same sources and flags
#   scripts/llama-cpp.sh key | dir    the cache key of the current flags, and its folder
#
# The flags are the user's CMAKE_ARGS (CUDA, Metal, ...) with -DGGML_RPC=on appended. pip's
# wheel cache ignores CMAKE_ARGS (a wheel built once without RPC would be reused silently), so
# the wheel is built with --no-cache-dir and kept here instead, under a key made of the version,
# the flags and the machine: ${HOSHIKAGE_LLAMA_CACHE:-~/.cache/hoshikage/llama-cpp}/<key>/ (the
# sdist, fetched from PyPI with pip download, is shared in .../sdist/). Delete a key's folder
# to force a rebuild (after changing compilers or the CUDA toolkit, say).
# ggml-rpc-server is compiled from the same sdist's tools/rpc/rpc-server.cpp and linked against
# the ggml libraries inside that wheel, so both ends of the connection run the same ggml, and
# the RPC protocol versions match, without compiling ggml twice.
# Progress goes to stderr; stdout carries only the path.
set -euo pipefail

VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
PYTHON="${PYTHON:-python3}"
FLAGS="${CMAKE_ARGS:-}"
case " $FLAGS " in
  *" -DGGML_RPC=on "*|*" -DGGML_RPC=ON "*) ;;
  *) FLAGS="${FLAGS:+$FLAGS }-DGGML_RPC=on" ;;
esac
KEY=$(printf '%s\n%s\n%s\n' "$VERSION" "$FLAGS" "$(uname -sm)" | sha256sum | cut -c1-16)
ROOT="${HOSHIKAGE_LLAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hoshikage/llama-cpp}"
DIR="$ROOT/$KEY"

log() { echo "llama-cpp.sh: $*" >&2; }

sdist() {  # shared by every key: the sources do not depend on the flags
  local found
  found=$(ls "$ROOT"/sdist/llama_cpp_python-"$VERSION".tar.gz 2>/dev/null || true)
  if [ -z "$found" ]; then
    mkdir -p "$ROOT/sdist"
    log "downloading the llama-cpp-python $VERSION sdist"
    "$PYTHON" -m pip download --disable-pip-version-check -q --no-cache-dir --no-deps \
      --no-binary :all: -d "$ROOT/sdist" "llama-cpp-python==$VERSION" >&2
    found=$(ls "$ROOT"/sdist/llama_cpp_python-"$VERSION".tar.gz)
  fi
  echo "$found"
}

wheel() {
  local found
  found=$(ls "$DIR"/wheel/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -n1 || true)
  if [ -n "$found" ]; then echo "$found"; return; fi
  local src; src=$(sdist)
  mkdir -p "$DIR/wheel.tmp"
  log "building llama-cpp-python $VERSION with CMAKE_ARGS=\"$FLAGS\" (several minutes; log: $DIR/wheel.log)"
  local start=$SECONDS
  if ! CMAKE_ARGS="$FLAGS" "$PYTHON" -m pip wheel --disable-pip-version-check --no-cache-dir \
      --no-deps -w "$DIR/wheel.tmp" "$src" >"$DIR/wheel.log" 2>&1; then
    tail -n 40 "$DIR/wheel.log" >&2
    log "the build failed; full log: $DIR/wheel.log"
    exit 1
  fi
  log "built in $((SECONDS - start)) s"
  printf '%s\n' "$FLAGS" >"$DIR/flags"
  rm -rf "$DIR/wheel" && mv "$DIR/wheel.tmp" "$DIR/wheel"
  ls "$DIR"/wheel/llama_cpp_python-"$VERSION"-*.whl | head -n1
}

rpc_server() {
  local exe="$DIR/rpc-server/ggml-rpc-server"
  if [ -x "$exe" ]; then echo "$exe"; return; fi
  local whl src; whl=$(wheel); src=$(sdist)
  local work="$DIR/rpc-server.tmp"
  rm -rf "$work" && mkdir -p "$work"
  log "compiling ggml-rpc-server against the wheel's ggml"
  "$PYTHON" - "$whl" "$work" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if name.startswith("llama_cpp/lib/libggml"):
            z.extract(name, sys.argv[2])
EOF
  mv "$work/llama_cpp/lib" "$work/lib" && rm -rf "$work/llama_cpp"
  local top="llama_cpp_python-$VERSION/vendor/llama.cpp"
  tar -xzf "$src" -C "$work" "$top/tools/rpc/rpc-server.cpp" "$top/ggml/include"
  "${CXX:-c++}" -O2 -std=c++17 -I"$work/$top/ggml/include" "$work/$top/tools/rpc/rpc-server.cpp" \
    -o "$work/ggml-rpc-server" -L"$work/lib" -lggml -lggml-base -lggml-rpc -lpthread \
    -Wl,-rpath,'$ORIGIN/lib' >&2
  rm -rf "$work/llama_cpp_python-$VERSION"
  rm -rf "$DIR/rpc-server" && mv "$work" "$DIR/rpc-server"
  echo "$exe"
}

# llama-server, the benchmark's peer (make bench): built by cmake from the same sdist's
# llama.cpp with the same flags (its own static ggml, since the server links llama.cpp's
# common library, which the wheel does not ship).
llama_server() {
  local exe="$DIR/llama-server/llama-server"
  if [ -x "$exe" ]; then echo "$exe"; return; fi
  local src; src=$(sdist)
  local work="$DIR/llama-server.tmp"
  rm -rf "$work" && mkdir -p "$work"
  tar -xzf "$src" -C "$work"
  local top="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"
  log "building llama-server with CMAKE_ARGS=\"$FLAGS\" (several minutes; log: $DIR/llama-server.log)"
  local start=$SECONDS
  # shellcheck disable=SC2086  # the flags are a list of words, as pip's CMAKE_ARGS are
  if ! { cmake -S "$top" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
      -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF $FLAGS &&
      cmake --build "$work/build" -j"$(nproc)" --target llama-server; } >"$DIR/llama-server.log" 2>&1; then
    tail -n 40 "$DIR/llama-server.log" >&2
    log "the build failed; full log: $DIR/llama-server.log"
    exit 1
  fi
  log "built in $((SECONDS - start)) s"
  rm -rf "$DIR/llama-server" && mkdir -p "$DIR/llama-server"
  cp "$work/build/bin/llama-server" "$exe"
  rm -rf "$work"
  echo "$exe"
}

case "${1:-}" in
  wheel) wheel ;;
  rpc-server) rpc_server ;;
  llama-server) llama_server ;;
  key) echo "$KEY" ;;
  dir) echo "$DIR" ;;
  *) echo "usage: $0 wheel|rpc-server|llama-server|key|dir" >&2; exit 2 ;;
esac
