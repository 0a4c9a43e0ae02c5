#!/usr/bin/env bash
# Why this file exists: one command runs the serve soak (a bounded load on loopback that samples the
# server's RSS and counts failed requests); not part of CI, which runs the shorter run.sh.
#     tests/serve/soak.sh BUILD_DIR [seconds, default 600] [clients, default 16]
set -euo pipefail
if [ "$#" -lt 1 ] || [ "$#" -gt 3 ]; then
  echo "usage: tests/serve/soak.sh BUILD_DIR [seconds] [clients]   (BUILD_DIR/serve must exist)" >&2
  exit 2
fi
build_dir="$(cd "$1" && pwd)"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
if [ ! -x "${build_dir}/serve" ]; then
  echo "soak.sh: ${build_dir}/serve not found (build it: cmake --build --preset release --target serve)" >&2
  exit 1
fi
cd "${here}"
[ -d node_modules/openai ] || npm ci --no-audit --no-fund --loglevel=error
node soak.mjs "${build_dir}/serve" "${root}/tests/data/demo-mistral/demo-mistral-Q4_0.gguf" "${2:-600}" "${3:-16}"
