#!/usr/bin/env bash
# The numerical tests under every CPU kernel variant this machine can select (issue #17): torch's ATen
# capability, the OpenMP thread count, MKL's conditional-numerical-reproducibility modes and oneDNN's ISA cap.
# Each variant's worst error per comparison is logged by tests/numerics.py and tabulated at the end, in units
# of eps32 x max|reference| (the tolerance each test allows is k of these units).
#   bash scripts/kernel_matrix.sh [OUT_DIR]      (a temp folder by default; about 1 minute per variant on 2 cores)
# ATEN_CPU_CAPABILITY=avx512 is tried only where the CPU has AVX-512 (elsewhere it dies with SIGILL).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-$(mktemp -d -t kernel-matrix.XXXX)}
mkdir -p "$OUT"
TESTS="tests/test_cocoop_exact.py tests/test_fidelity_cocoop.py tests/test_fidelity_mvp.py tests/test_spine_launch.py
       tests/test_training.py tests/test_mvp_models.py tests/test_mvp_engine.py tests/test_cocoop_engine.py
       tests/test_clip_train.py"
VARIANTS=(
  "avx2-threads2 OMP_NUM_THREADS=2"
  "avx2-threads1 OMP_NUM_THREADS=1"
  "default-threads2 ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=2"
  "default-threads1 ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1"
  "onednn-sse41 ONEDNN_MAX_CPU_ISA=SSE41"
  "mkl-cbwr-compatible MKL_CBWR=COMPATIBLE"
  "mkl-cbwr-avx MKL_CBWR=AVX"
  "all-lowest ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 MKL_CBWR=COMPATIBLE ONEDNN_MAX_CPU_ISA=SSE41"
)
grep -q avx512f /proc/cpuinfo && VARIANTS+=("avx512 ATEN_CPU_CAPABILITY=avx512")
status=0
for variant in "${VARIANTS[@]}"; do
  read -r name settings <<<"$variant"
  rm -f "$OUT/$name.jsonl"
  # shellcheck disable=SC2086
  env $settings VLPT_NUMERICS_LOG="$OUT/$name.jsonl" $PY -m pytest -q -p no:cacheprovider $TESTS >"$OUT/$name.log" 2>&1
  rc=$?
  echo "$name ($settings): $(tail -n 1 "$OUT/$name.log")"
  [ $rc -eq 0 ] || status=1
done
$PY - "$OUT" <<'PY'
import collections, json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print(f"\nworst error per comparison, in eps32 x max|reference| (k: what the test allows)")
for path in sorted(out.glob("*.jsonl")):
    worst = collections.defaultdict(lambda: (0.0, 0))
    for line in path.read_text().splitlines():
        r = json.loads(line)
        key = r["test"].split("::")[-1].split("[")[0] + " " + r["what"].split(" ")[0]
        worst[key] = max(worst[key], (r["ulps_of_scale"], r["k"]))
    print(f"{path.stem}:")
    for key, (ulps, k) in sorted(worst.items()):
        print(f"  {key:70s} {ulps:7.1f} of k={k}")
PY
exit $status
