#!/usr/bin/env bash
# The GPU check, as one script for a machine lent for a few minutes (see bench/device/README.md):
# bf16 training of LoRA and full fine-tuning (tokens/s, MFU against the measured bf16 matmul peak,
# peak memory, profiler tables), padding-free batches on and off, the evaluation's passes
# (examples/s), and vLLM serving at 1/4/16 in flight where vLLM is installed there. About 6 minutes.
# It has no network: tunelab's pure-Python dependencies the machine lacks travel as wheels in
# .whl/, the base model's config and tokenizer in .gpu/base (its weights are random: speed and
# memory do not depend on their values), the formatted train split and the prepared splits in .gpu/.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"
python3 - <<'PY'
# models/base: SmolLM2-135M's architecture and tokenizer, random weights
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(".gpu/base"), dtype=torch.float32)
model.save_pretrained("models/base")
AutoTokenizer.from_pretrained(".gpu/base").save_pretrained("models/base")
PY
mkdir -p data/formatted data/prepared && cp .gpu/train.jsonl data/formatted/train.jsonl && cp .gpu/prepared/*.jsonl data/prepared/
step() { echo "== $1 ($(date +%T))"; shift; timeout 150 "$@" 2>&1 | tail -14; }
# qlora and qat need bitsandbytes/torchao builds for the machine's torch: left out
step "training at 8x128" python3 bench/train_throughput.py --strategies lora full --steps 10 --batch 8 --length 128 --name train_cuda_8x128
step "training at 32x512, profiled" python3 bench/train_throughput.py --strategies lora full --steps 10 --batch 32 --length 512 --profile --name train_cuda_32x512
step "padded against loss-only and padding-free batches" python3 bench/train_throughput.py --strategies lora full --batching padded loss_only packed --steps 12 --name train_cuda_packing
step "evaluation passes (bf16)" python3 bench/eval_throughput.py --rows 256 --dtype bfloat16
if python3 -c "import vllm" 2>/dev/null; then
  step "vLLM serving" python3 bench/device/vllm_load.py
else
  echo "vLLM is not installed on this machine: no serving figures" | tee "$OUT/vllm_load.txt"
fi
cp bench/results/train_cuda_* bench/results/eval_throughput_cuda.* "$OUT/" 2>/dev/null
ls -la "$OUT"
