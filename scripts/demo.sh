#!/usr/bin/env bash
# Installs what is missing, builds the examples in Release and runs the main demonstration:
# a RealNVP fitted by maximum likelihood to the bundled two-moons data. Prints the progress and
# the test NLL, and writes two_moons.png (data, learned density, samples) in the current
# directory. The other examples are built beside it, in build/release/examples. Extra arguments
# go to the example (try --help).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"

build="$root/build/release"
jobs="$(nproc 2>/dev/null || echo 2)"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DNFLOW_BUILD_TESTS=OFF \
  -DNFLOW_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$build" -j "$jobs" --target two_moons energy digits quickstart
"$build/examples/two_moons" "$@"
