#!/usr/bin/env bash
# The vocoder's training on one GPU from a carried audio subset (scripts/audio_subset.py), for a
# wall-clock budget; exports float32 weights into $OUT. The vocoder caps perceived quality
# (reports/codec-diagnosis.md §11): a CPU session gives it ~3 000 GAN steps, a GPU tens of thousands.
#
#   scripts/gpu_vocoder.sh MANIFEST RUN_DIR [MINUTES] [--set key=value ...]
#
#   MANIFEST   manifest.jsonl of the subset (audio paths relative to it; train + valid rows)
#   RUN_DIR    run folder on the GPU machine; a RUN_DIR/checkpoints/last.ckpt there is resumed
#   MINUTES    training budget (trainer.max_time; default 7); the export follows it
#   INIT=DIR (environment): warm start of a fresh run (default checkpoints/vocoder-small); the
#              critics start fresh, so the GAN runs from step 0 (loss.gan_start_step=0)
#   CODEC=DIR (environment): codec-in-the-loop inputs, 75 % of the crops (default
#              checkpoints/entanglecodec-small; CODEC= for copy-synthesis only)
#   CONFIG=path.yaml (environment): the recipe (default configs/vocoder-small.yaml)
#   OUT        where the results go (default RUN_DIR/out): export/ (config.json + model.safetensors,
#              split into .part-aa, -ab, ... when over 15 MiB), best/ (lowest validation mel L1),
#              metrics.csv, recipe.yaml, train.log
#
# Batch 64 one-second crops, the critics on 16 of them, 8 loader workers, float32 (TF32 on the GPU).
# Further --set arguments override, e.g. --set optim.lr=2e-4. SIGTERM/SIGINT: last.ckpt, then the export.
set -uo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/gpu_env.sh
source "$HERE/scripts/gpu_env.sh" MANIFEST "$@" || exit $?
MANIFEST=$INPUT
gpu_budget "$RUN" "$MINUTES"

START=()
[ ${#RESUME[@]} -eq 0 ] && START=(--init-from "${INIT:-$HERE/checkpoints/vocoder-small}")
LOOP=()
CODEC=${CODEC-$HERE/checkpoints/entanglecodec-small}
[ -n "$CODEC" ] && LOOP=(--set data.input_codec="$CODEC" --set data.input_codec_fraction=0.75)
ACCEL=gpu
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || ACCEL=cpu

run_trainer python3 -m entanglecodec.cli train vocoder -c "${CONFIG:-$HERE/configs/vocoder-small.yaml}" \
    --run-dir "$RUN" --manifest "$MANIFEST" "${RESUME[@]}" "${START[@]}" \
    --set trainer.accelerator=$ACCEL --set trainer.threads=8 --set data.num_workers=8 \
    --set data.batch_size=64 --set loss.gan_batch_size=16 --set loss.gan_start_step=0 \
    --set trainer.max_time="$MAX_TIME" --set trainer.ckpt_every=500 --set trainer.val_every=500 \
    --set trainer.plot_every=100000000 "${LOOP[@]}" "${EXTRA[@]}"

if [ -f "$RUN/checkpoints/last.ckpt" ]; then
    rm -rf "$OUT/export" "$OUT/best"
    python3 -m entanglecodec.cli train vocoder-export "$RUN/checkpoints/last.ckpt" -o "$OUT/export" >>"$LOG" 2>&1 \
        || echo "export failed (see train.log)" | tee -a "$LOG"
    [ -d "$RUN/best" ] && cp -r "$RUN/best" "$OUT/best"
    rm -f "$OUT"/export/README.md "$OUT"/best/README.md  # regenerable; few files come back from a device machine
    split_big "$OUT/export/model.safetensors" "$OUT/best/model.safetensors"
fi
collect_run "$RUN" "$OUT"
exit $STATUS
