#!/usr/bin/env bash
# Stage 1 of a codec recipe (configs/small-cpu.yaml unless CONFIG=...) on one GPU, trained from a pre-computed feature directory
# (`entanglecodec data features`), for a wall-clock budget; exports 16-bit weights into $OUT.
#
#   scripts/gpu_train.sh FEATURES RUN_DIR [MINUTES] [--set key=value ...]
#
#   FEATURES   feature directory (index.json + shards); no audio, no Debian tools needed
#   RUN_DIR    run folder on the GPU machine; a RUN_DIR/checkpoints/last.ckpt there is resumed
#   MINUTES    training budget (Lightning trainer.max_time; default 7); the export follows it
#   RESUME_FROM=path.ckpt (environment): start from this Lightning checkpoint (copied to RUN_DIR)
#   CONFIG=path.yaml (environment): the stage-1 recipe (default configs/small-cpu.yaml), e.g.
#              CONFIG=configs/small-cpu-pitch.yaml with --set init_from=export-or-ckpt for a warm start
#   OUT        where the results go (default RUN_DIR/out): export/config.json and the 16-bit
#              export/model.safetensors (split into export/model.safetensors.part-aa, -ab, ... when it is
#              over 15 MiB; join with `cat model.safetensors.part-* > model.safetensors`),
#              metrics.csv, recipe.yaml, train.log, and warm.ckpt (`entanglecodec train slim`: recipe +
#              float16 weights with the auxiliary heads, no optimiser; split like the export) for the
#              next warm start (--set init_from=warm.ckpt), which an export cannot give: its heads start fresh
#
# Python packages the GPU image lacks are installed from ./.whl when it is there (see README,
# "Training on a GPU from pre-computed features"). Further --set arguments override the recipe,
# e.g. --set data.batch_size=128 --set optim.lr=4e-4, or --set trainer.devices=4 --set trainer.strategy=ddp.
# SIGTERM/SIGINT: the trainer writes last.ckpt, then the export still runs.
set -uo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 FEATURES RUN_DIR [MINUTES] [--set key=value ...]" >&2
    exit 2
fi
FEATURES=$1
RUN=$2
shift 2
MINUTES=7
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    MINUTES=$1
    shift
fi
OUT=${OUT:-$RUN/out}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT" "$RUN/checkpoints"
LOG="$OUT/train.log"

if [ -d "$HERE/.whl" ] && ls "$HERE"/.whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ec-site \
        "$HERE"/.whl/*.whl || { echo "error: installing the carried wheels failed" >&2; exit 1; }
    export PYTHONPATH=/tmp/ec-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$HERE/src:${PYTHONPATH:-}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

if [ -n "${RESUME_FROM:-}" ]; then
    cp "$RESUME_FROM" "$RUN/checkpoints/last.ckpt" || exit 1
fi
RESUME=()
PRIOR=0
if [ -f "$RUN/checkpoints/last.ckpt" ]; then
    RESUME=(--resume)
    # trainer.max_time budgets the whole run (Lightning checkpoints its timer): add this call's minutes
    PRIOR=$(python3 -c "import sys, torch; ck = torch.load(sys.argv[1], map_location='cpu', weights_only=False); \
print(int(ck.get('callbacks', {}).get('Timer', {}).get('time_elapsed', {}).get('train', 0)))" "$RUN/checkpoints/last.ckpt") || PRIOR=0
fi
BUDGET=$((PRIOR + MINUTES * 60))
MAX_TIME=$(printf "%02d:%02d:%02d:%02d" $((BUDGET / 86400)) $((BUDGET % 86400 / 3600)) $((BUDGET % 3600 / 60)) $((BUDGET % 60)))

{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } 2>&1 | tee "$LOG"

CONFIG=${CONFIG:-$HERE/configs/small-cpu.yaml}
python3 -m entanglecodec.cli train stage1 -c "$CONFIG" --run-dir "$RUN" "${RESUME[@]}" --no-progress \
    --set data.features="$FEATURES" \
    --set trainer.accelerator=gpu --set trainer.precision=bf16-mixed --set trainer.threads=8 \
    --set data.batch_size=64 --set data.num_workers=8 \
    --set trainer.max_time="$MAX_TIME" --set trainer.max_steps=10000000 \
    --set trainer.ckpt_every=500 --set trainer.val_every=500 --set trainer.plot_every=2000 \
    "$@" >>"$LOG" 2>&1 &
TRAIN=$!
trap 'kill -TERM $TRAIN 2>/dev/null' TERM INT
wait $TRAIN
STATUS=$?
if kill -0 $TRAIN 2>/dev/null; then  # a signal interrupted the first wait: let the trainer finish its checkpoint
    wait $TRAIN
    STATUS=$?
fi
trap - TERM INT
echo "training exited with status $STATUS (budget $MAX_TIME of training time, $PRIOR s before this call)" | tee -a "$LOG"
tail -n 5 "$LOG"

if [ -f "$RUN/checkpoints/last.ckpt" ]; then
    rm -rf "$OUT/export"
    python3 -m entanglecodec.cli train export "$RUN" -o "$OUT/export" --dtype float16 >>"$LOG" 2>&1 \
        || echo "export failed (see train.log)" | tee -a "$LOG"
    rm -f "$OUT/export/README.md"  # regenerable; at most 8 files come back from a device machine
    python3 -m entanglecodec.cli train slim "$RUN" -o "$OUT/warm.ckpt" >>"$LOG" 2>&1 \
        || echo "slim checkpoint failed (see train.log)" | tee -a "$LOG"
    for W in "$OUT/export/model.safetensors" "$OUT/warm.ckpt"; do
        if [ -f "$W" ] && [ "$(stat -c %s "$W")" -gt $((15 * 1024 * 1024)) ]; then
            split -b 15M "$W" "$W.part-" && rm "$W"
        fi
    done
fi
R=$(ls -t "$RUN"/recipe*.yaml 2>/dev/null | head -n 1)
[ -n "$R" ] && cp "$R" "$OUT/recipe.yaml"
M=$(ls -t "$RUN"/logs/*/metrics.csv "$RUN"/logs/metrics.csv 2>/dev/null | head -n 1)
[ -n "$M" ] && cp "$M" "$OUT/metrics.csv"
ls -la "$OUT" "$OUT/export" 2>/dev/null
exit $STATUS
