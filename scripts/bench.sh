#!/usr/bin/env bash
# Benchmarks nflow against a plain PyTorch implementation of the same three models (two-moons
# RealNVP, 8x8-digits RealNVP, 32 planar layers on the U1 energy), in float and double, with 1
# and 2 threads: training-step, log_prob and sample throughput, peak memory, GFLOP/s against a
# GEMM peak measured in the same run, and a same-function check (nflow's parameters loaded into
# the PyTorch models). Installs what is missing, builds in Release into build/bench, prints the
# tables and writes them to build/bench/results.md (raw JSON lines: build/bench/results.jsonl).
#
#   bash scripts/bench.sh [--blas] [--quick]
#     --blas   also build nflow with EIGEN_USE_BLAS on OpenBLAS (OpenMP build) in
#              build/bench-blas and compare Eigen's kernels with it (or NFLOW_BENCH_BLAS=1)
#     --quick  3 repeats of >= 0.1 s instead of 7 of >= 0.2 s
#   Environment: NFLOW_BENCH_REPEATS, NFLOW_BENCH_MIN_TIME override the timing settings;
#   NFLOW_BENCH_OPENBLAS_CORETYPE=auto|none|<core> (see below).
#
# Both sides run with the same allocator settings and the same OpenMP runtime (GNU libgomp):
# PyTorch's BLAS (Debian's torch calls libblas.so.3) is pointed at the OpenMP build of OpenBLAS
# through LD_LIBRARY_PATH, so that torch.set_num_threads governs it as Eigen::setNbThreads
# governs nflow. OpenBLAS 0.3.21 (Debian 12) does not know recent Intel CPUs and falls back to
# its slowest ("Prescott") kernels; with the default `auto`, such a fallback is replaced by
# SkylakeX (AVX-512) or Haswell (AVX2) kernels when the CPU has them, so that PyTorch is not
# handicapped by a detection failure. Everything runs on the machine as it is: other load makes
# the numbers noisy (the load average is recorded in the table's header).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

blas="${NFLOW_BENCH_BLAS:-0}"
repeats="${NFLOW_BENCH_REPEATS:-7}"
min_time="${NFLOW_BENCH_MIN_TIME:-0.2}"
for arg in "$@"; do
  case "$arg" in
    --blas) blas=1 ;;
    --quick)
      repeats=3
      min_time=0.1
      ;;
    -h | --help)
      sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "bench.sh: unknown argument $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

bash "$root/scripts/setup.sh" python3-torch python3-numpy libopenblas0-openmp libopenblas-dev

py=/usr/bin/python3 # Debian's interpreter, which has python3-torch (not a pyenv python on PATH)
jobs="$(nproc 2>/dev/null || echo 2)"
build="$root/build/bench"
build_blas="$root/build/bench-blas"
openmp_blas_dir=/usr/lib/x86_64-linux-gnu/openblas-openmp

configure_and_build() { # <build dir> <ON|OFF for NFLOW_BENCH_BLAS>
  cmake -S "$root" -B "$1" -DCMAKE_BUILD_TYPE=Release -DNFLOW_BUILD_BENCHMARKS=ON \
    -DNFLOW_BUILD_TESTS=OFF -DNFLOW_BUILD_EXAMPLES=OFF -DNFLOW_BENCH_BLAS="$2" >/dev/null
  cmake --build "$1" -j "$jobs" --target bench_nflow
}
configure_and_build "$build" OFF
[ "$blas" = 1 ] && configure_and_build "$build_blas" ON

# The same allocator settings for both sides: no mmap for blocks below 32 MiB and no trimming,
# so that neither side pays for returning memory to the system between steps.
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967295

# OpenBLAS kernel selection (see the header).
coretype="${NFLOW_BENCH_OPENBLAS_CORETYPE:-auto}"
coretype_note=""
if [ "$coretype" = auto ]; then
  detected="$(OPENBLAS_VERBOSE=2 "$py" -c "import ctypes; ctypes.CDLL('$openmp_blas_dir/libopenblas.so.0')" 2>&1 |
    sed -n 's/^Core: //p' | head -n 1)"
  coretype=none
  case "$detected" in
    Prescott | Katmai | Core2 | Penryn | Dunnington | Nehalem | Atom | "")
      if grep -qw avx512f /proc/cpuinfo; then
        coretype=SkylakeX
      elif grep -qw avx2 /proc/cpuinfo; then
        coretype=Haswell
      fi
      ;;
  esac
  [ "$coretype" != none ] && coretype_note=" (OpenBLAS detected '${detected:-nothing}')"
fi
if [ "$coretype" != none ]; then
  export OPENBLAS_CORETYPE="$coretype"
else
  unset OPENBLAS_CORETYPE
fi

results="$build/results.jsonl"
export_dir="$build/export"
rm -rf "$export_dir"
mkdir -p "$export_dir"
: >"$results"

meta() { # JSON line describing the run
  "$py" - "$@" <<'EOF'
import json, os, sys, time, platform
k = dict(a.split("=", 1) for a in sys.argv[1:])
cpu = "?"
with open("/proc/cpuinfo") as f:
    for line in f:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
load = " ".join(open("/proc/loadavg").read().split()[:3])
r = {"impl": "meta", "cpu": cpu, "nproc": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"),
     "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}
r["load_" + k.pop("when")] = load
r.update(k)
print(json.dumps(r))
EOF
}
torch_version="$("$py" -c 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)')"
meta when=start "torch=$torch_version" "openblas_coretype=${OPENBLAS_CORETYPE:-as detected}$coretype_note" >>"$results"

timing=(--repeats "$repeats" --min-time "$min_time")
echo "nflow bench: timing ${repeats} repeats of >= ${min_time} s; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}$coretype_note"
start=$(date +%s)
# Each measurement in its own process (peak RSS per configuration); nflow and PyTorch back to
# back for each cell, so that changes in the machine's load hit both alike.
for config in gemm a b c; do
  for scalar in float double; do
    for threads in 1 2; do
      echo "== config $config, $scalar, $threads thread(s)   [$(($(date +%s) - start)) s]"
      export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
      "$build/bench/bench_nflow" --config "$config" --scalar "$scalar" --threads "$threads" \
        "${timing[@]}" >>"$results"
      # The parameters nflow ends with, for PyTorch to load, written by a process of its own so
      # that the export's memory does not count as the measurement's.
      if [ "$threads" = 1 ] && [ "$config" != gemm ]; then
        "$build/bench/bench_nflow" --config "$config" --scalar "$scalar" --threads 1 \
          "${timing[@]}" --ops export --export "$export_dir" >>"$results"
      fi
      if [ "$blas" = 1 ]; then
        LD_LIBRARY_PATH="$openmp_blas_dir" "$build_blas/bench/bench_nflow" --config "$config" \
          --scalar "$scalar" --threads "$threads" "${timing[@]}" >>"$results"
      fi
      LD_LIBRARY_PATH="$openmp_blas_dir" "$py" "$root/bench/reference_torch.py" bench \
        --config "$config" --scalar "$scalar" --threads "$threads" "${timing[@]}" \
        --params-from "$export_dir" >>"$results"
    done
  done
done

echo "== weight-equivalence check"
OMP_NUM_THREADS=1 LD_LIBRARY_PATH="$openmp_blas_dir" "$py" "$root/bench/reference_torch.py" check \
  --dir "$export_dir" >>"$results"
meta when=end >>"$results"
echo "== done in $(($(date +%s) - start)) s; results in $results"
echo
"$py" "$root/bench/report.py" "$results" --out "$build/results.md"
