#!/usr/bin/env bash
# The GPU check, as one script for a machine lent for a few minutes (see bench/device/README.md).
# It has no network: tunelab's pure-Python dependencies the machine lacks travel as wheels in
# .whl/, the base model's config and tokenizer in .gpu/ (its weights are random: speed and
# memory do not depend on their values), the formatted train split in .gpu/train.jsonl.
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
mkdir -p data/formatted && cp .gpu/train.jsonl data/formatted/train.jsonl
STRATEGIES="full lora prompt_tuning prefix_tuning ia3"  # qlora and qat need bitsandbytes/torchao builds for this torch
python3 bench/train_throughput.py --strategies $STRATEGIES --steps 10 --batch 8 --length 128 --name train_cuda_8x128 2>&1 | tail -12
python3 bench/train_throughput.py --strategies $STRATEGIES --steps 10 --batch 32 --length 512 --profile --name train_cuda_32x512 2>&1 | tail -12
cp bench/results/train_cuda_8x128.md bench/results/train_cuda_8x128.json bench/results/train_cuda_32x512.md \
   bench/results/train_cuda_32x512.json bench/results/train_cuda_32x512_lora_profile.txt bench/results/train_cuda_32x512_full_profile.txt "$OUT/" 2>/dev/null
ls -la "$OUT"
