#!/usr/bin/env bash
# Installs the Debian 12 packages Sophia needs to build, test and run, and
# nothing when they are all there already, so scripts/run and scripts/test
# can call it every time. Arguments are more packages wanted by the caller
# only (scripts/fuzz and scripts/build-matrix: clang), checked the same way. dpkg-query decides what is missing; only then is
# apt-get called (update first: a fresh machine has no package lists).
#
# Node.js is the exception: a machine may carry its own node and npm outside
# apt (a newer release than Debian's), and installing Debian's over it would
# downgrade or conflict, so nodejs/npm are asked for only when the command
# itself is missing from PATH.
#
# Not installed on purpose: libopenblas-dev. faiss's CMake package links
# /usr/lib/x86_64-linux-gnu/libblas.so and liblapack.so, which libblas-dev and
# liblapack-dev provide; libopenblas-dev would switch those alternatives to a
# threaded OpenBLAS (a second thread pool beside faiss's OpenMP, and a
# library that crashes on some CPUs in this Debian release).
set -euo pipefail

packages=(
  build-essential cmake pkg-config git ca-certificates
  libevent-dev libhiredis-dev libpq-dev libwebsockets-dev
  libwebsockets-evlib-uv libuv1-dev libssl-dev libyaml-dev libltdl-dev
  libfaiss-dev liblapack-dev libblas-dev libjansson-dev libcmocka-dev
  libsystemd-dev # sd_notify for sophiad.service (core/lib/notify.h)
  libzstd-dev # cache.compress: large values in L2 and L3 (core/cache/cache_zstd.h)
  libmsgpack-dev # /ws subprotocol sophia.v1.msgpack (core/ws/ws_msgpack.h)
  zlib1g-dev # websocket.compression: deflate (core/ws/ws_deflate.h)
  libjemalloc-dev # sophiad's malloc (cmake/SophiaDeps.cmake)
  redis-server postgresql procps iproute2 curl
  openssl # the TLS test makes its own CA and certificates
  chromium # the dashboard's browser test (playwright-core drives it)
)
packages+=("$@")
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == installed ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "deps: installing ${missing[*]}" >&2
sudo_cmd=()
if ((EUID != 0)); then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "deps: not root and no sudo; install as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  sudo_cmd=(sudo)
fi

"${sudo_cmd[@]}" apt-get update
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${missing[@]}"
