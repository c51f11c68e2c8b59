#!/usr/bin/env bash
# One command on a fresh machine: install, then build -> QAT-train -> convert -> analyze -> export
# the seed-003 style VWW model on the built-in dataset. Results go to ${1:-tinyvision_out}/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-tinyvision_out}"
bash scripts/install.sh
tinyvision build   --model=seed003_vww --resolution=96 --output="$OUT/model.keras"
tinyvision train   --model="$OUT/model.keras" --dataset=builtin_vww --epochs=3 --qat_epochs=1 --output="$OUT/model_qat.h5"
tinyvision convert --model="$OUT/model_qat.h5" --dataset=builtin_vww --output="$OUT/model.tflite"
tinyvision analyze --model="$OUT/model.tflite" --plot="$OUT/memory.png" --report="$OUT/report.json"
tinyvision export  --model="$OUT/model.tflite" --output="$OUT/c"
echo "done: $OUT/"
