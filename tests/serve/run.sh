#!/usr/bin/env bash
# Why this file exists: one command runs the serve tests (CI's step and a developer's): installs the
# pinned client packages (openai, @mistralai/mistralai, @aws-sdk/client-bedrock-runtime) with npm ci,
# then drives BUILD_DIR/serve on the demo model with them over loopback.
#     tests/serve/run.sh build/release
set -euo pipefail
if [ "$#" -ne 1 ]; then
  echo "usage: tests/serve/run.sh BUILD_DIR   (BUILD_DIR/serve must exist)" >&2
  exit 2
fi
build_dir="$(cd "$1" && pwd)"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
if [ ! -x "${build_dir}/serve" ]; then
  echo "run.sh: ${build_dir}/serve not found (build it: cmake --build --preset release --target serve)" >&2
  exit 1
fi
cd "${here}"
npm ci --no-audit --no-fund --loglevel=error
node test.mjs "${build_dir}/serve" "${root}/tests/data/demo-mistral/demo-mistral-Q4_0.gguf"
