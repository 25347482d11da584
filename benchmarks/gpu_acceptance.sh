#!/usr/bin/env bash
# GPU acceptance in one command: every test (no CUDA test may skip on a GPU), the GPU runtime
# comparison, the headline job on CUDA and the K^2 study on the GPU; figures land in OUT_DIR.
#
#   bash benchmarks/gpu_acceptance.sh [OUT_DIR]          (default results/gpu-acceptance)
#
# Needs an NVIDIA GPU visible to torch and segbench installed (pip install -e ".[test,onnx]"; on a
# machine without network, install from wheels carried along: pip install --no-index --find-links W -e .).
# ONNX Runtime's CUDA provider is used when onnxruntime-gpu is installed. Exit 1 if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/gpu-acceptance}
mkdir -p "$out"
status=0
step() { echo "== $*" | tee -a "$out/steps.txt"; "$@" || { echo "FAILED: $*" | tee -a "$out/steps.txt"; status=1; }; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'" || exit 1

step python -m pytest -q -rs tests -p no:cacheprovider --junitxml "$out/pytest.xml"
if python - "$out/pytest.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
skipped = [c.get("name") for c in ET.parse(sys.argv[1]).iter("testcase")
           if any("CUDA" in (s.get("message") or "") for s in c.iter("skipped"))]
print("CUDA tests skipped on a GPU machine:", skipped) if skipped else None
sys.exit(1 if skipped else 0)
PY
then :; else status=1; fi

runtimes=$(python -c "import onnxruntime as o; print('torch,onnxruntime' if 'CUDAExecutionProvider' in o.get_available_providers() else 'torch')" 2>/dev/null || echo torch)
step segbench latency -m fast_scnn,fcn8s --device cuda --size 1024x2048 --batch-size 1,8 --runtime "$runtimes" \
    --precision fp32,fp16,bf16 --channels-last --cuda-graph --format md --out "$out"
step segbench run --models fcn8s,fast_scnn --device cuda --format md --out "$out"
step segbench blocks --device cuda --size 256x256 --format md --out "$out"
echo "segbench GPU acceptance: $([ $status -eq 0 ] && echo PASSED || echo FAILED); results in $out"
exit $status
