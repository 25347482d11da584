#!/usr/bin/env bash
# GPU acceptance in one command (issue 23): short checks first, the long sweep last, one result line
# per step (PASS / FAIL / SKIP with the reason), at most about 8 minutes on one H100/H200, and
# everything it measured under one folder (default results/gpu-check).
#
#   bash benchmarks/gpu_acceptance.sh [OUT_DIR]
#
# Install first (docs/gpu.md): segbench with a CUDA torch, ".[test]", "-e plugins/segbench-unet";
# optional: ".[gpu]" (NVML: clocks, power, energy in the rows) and onnxruntime-gpu (the ORT step).
# Without a GPU visible to torch it stops at once with one line (exit 2). Exit 1 if any step failed.
# The Python parts are benchmarks/gpu_checks.py.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_acceptance: no CUDA device visible to torch here (see docs/gpu.md); nothing was run" >&2
    exit 2
fi
out=${1:-results/gpu-check}
mkdir -p "$out"
: >"$out/summary.txt"
status=0
start=$SECONDS
TOTAL=480
checks="python benchmarks/gpu_checks.py"
n=0

# step NAME SECONDS COMMAND...: run COMMAND with a time limit, its output in OUT/NN-NAME.log, one
# result line on stdout and in OUT/summary.txt (exit 77 means skipped; its last line says why).
# A step gets at most what is left of the 8 minutes (TOTAL seconds), so the whole never takes longer.
step() {
    local name=$1 limit=$2
    shift 2
    n=$((n + 1))
    local log left=$((TOTAL - (SECONDS - start)))
    log=$(printf "%s/%02d-%s.log" "$out" "$n" "$name")
    if [ "$left" -lt 5 ]; then
        echo "$(printf "%-11s" "$name") SKIP (no time left of the ${TOTAL}s)" | tee -a "$out/summary.txt"
        return
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    local t0=$SECONDS
    timeout "$limit" "$@" >"$log" 2>&1
    local rc=$? result
    case $rc in
        0) result="PASS" ;;
        77) result="SKIP ($(tail -n 1 "$log"))" ;;
        124) result="FAIL (over ${limit}s)"; status=1 ;;
        *) result="FAIL (exit $rc; see $log)"; status=1 ;;
    esac
    echo "$(printf "%-11s" "$name") $result [$((SECONDS - t0))s]" | tee -a "$out/summary.txt"
}

fs=(-m fast_scnn -d cuda --size 1024x2048)
step environment 30 $checks env "$out"
step cuda-tests 150 $checks tests "$out"
step event-timer 60 $checks timer
step capture 40 $checks capture
step headline 120 bash -c "segbench latency ${fs[*]} --batch-size 1,8 --precision fp16,bf16 --channels-last \
    --cuda-graph --budget 1 -f json --out $out >$out/headline.json && $checks latency $out/headline.json"
step compile 100 bash -c "segbench latency ${fs[*]} --batch-size 8 --precision bf16 --channels-last --compile \
    --budget 1 -f json --out $out >$out/compile.json && $checks latency $out/compile.json"
step run 90 bash -c "segbench run -m fast_scnn -d cuda --steps 50 --precision fp32,fp16 --cuda-graph -f json \
    --out $out >$out/run.json && $checks run $out/run.json"
step torchrun 90 bash -c "torchrun --standalone --nproc-per-node 1 -m segbench latency -m fast_scnn -d cuda \
    --size 512x1024 --iters 20 -f json --out $out >$out/torchrun-latency.json && \
    torchrun --standalone --nproc-per-node 1 -m segbench train -m fast_scnn -d cuda --steps 5 --batch-size 2 \
    -f json --out $out >$out/torchrun-train.json"
if $checks ort >"$out/ort-provider.txt" 2>&1; then
    step onnxruntime 60 segbench latency -m fast_scnn -d cuda --size 512x1024 --runtime torch,onnxruntime \
        -f json --out "$out"
else
    step onnxruntime 5 bash -c "cat $out/ort-provider.txt; exit 77"
fi
step sweep "$TOTAL" segbench latency -m fast_scnn,fcn8s -d cuda --size 1024x2048 --batch-size 1,8 \
    --precision fp32,bf16 --cuda-graph --budget 0.5 -f md --out "$out"
echo "segbench GPU acceptance: $([ $status -eq 0 ] && echo PASSED || echo FAILED) in $((SECONDS - start))s; results in $out" \
    | tee -a "$out/summary.txt"
exit $status
