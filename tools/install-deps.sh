#!/usr/bin/env bash
# Why this file exists: the README's quick start and CI need the same packages on a fresh Debian 12 /
# Ubuntu machine; this installs them with apt-get (through sudo when not root), and does nothing when
# they are already there. clang-14 and libc++ are there for CI's second compiler and standard library.
#   tools/install-deps.sh          what the build, the tests and the examples need
#   tools/install-deps.sh fuzz     also Clang's sanitizer and libFuzzer runtimes (presets fuzz and tsan)
set -euo pipefail
packages=(g++ clang-14 libc++-14-dev libc++abi-14-dev cmake ninja-build meson pkg-config python3 libhwy-dev libsimdjson-dev doctest-dev libsentencepiece-dev libcpp-httplib-dev)
for mode in "$@"; do
  case "${mode}" in
    fuzz) packages+=(libclang-rt-14-dev) ;;
    *) echo "install-deps.sh: unknown mode '${mode}' (known: fuzz)" >&2; exit 2 ;;
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
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
