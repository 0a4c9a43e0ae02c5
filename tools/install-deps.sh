#!/usr/bin/env bash
# Why this file exists: the README's quick start and CI need the same packages on a fresh Debian 12 /
# Ubuntu machine; this installs them with apt-get (through sudo when not root), and does nothing when
# they are already there. clang-14 and libc++ are there for CI's second compiler and standard library.
#   tools/install-deps.sh          what the build, the tests and the examples need
#   tools/install-deps.sh fuzz     also Clang's sanitizer and libFuzzer runtimes (presets fuzz and tsan)
#   tools/install-deps.sh serve    also Node.js and npm for tests/serve (only when `node` is missing:
#                                  a Node.js from elsewhere, such as NodeSource's, already brings npm)
#   tools/install-deps.sh aarch64  also the cross compiler, qemu-user and Debian's arm64 Highway and
#                                  simdjson runtime (multiarch) for the CMake preset aarch64. Only the
#                                  runtime library of simdjson: libsimdjson-dev:arm64 cannot coexist with
#                                  the amd64 one, whose header serves both (cmake/aarch64/ links the rest).
set -euo pipefail
packages=(g++ clang-14 libc++-14-dev libc++abi-14-dev cmake ninja-build meson pkg-config python3 libhwy-dev libsimdjson-dev doctest-dev libsentencepiece-dev libcpp-httplib-dev)
for mode in "$@"; do
  case "${mode}" in
    fuzz) packages+=(libclang-rt-14-dev) ;;
    serve) command -v node >/dev/null 2>&1 || packages+=(nodejs npm) ;;
    aarch64) packages+=(g++-aarch64-linux-gnu qemu-user libhwy-dev:arm64 libsimdjson14:arm64) ;;
    *) echo "install-deps.sh: unknown mode '${mode}' (known: fuzz, serve, aarch64)" >&2; exit 2 ;;
  esac
done
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "${package}" 2>/dev/null | grep -q "install ok installed" || missing+=("${package}")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
# Packages named package:arm64 need dpkg to know the architecture before apt-get update lists them.
if printf '%s\n' "${missing[@]}" | grep -q ':arm64$' && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  "${sudo[@]}" dpkg --add-architecture arm64
fi
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
