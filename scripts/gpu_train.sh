#!/usr/bin/env bash
# Stage 1 of a codec recipe (configs/small-cpu.yaml unless CONFIG=...) on one GPU, trained from a pre-computed feature directory
# (`entanglecodec data features`), for a wall-clock budget; brings back 16-bit warm-start checkpoints in $OUT.
#
#   scripts/gpu_train.sh FEATURES RUN_DIR [MINUTES] [--set key=value ...]
#
#   FEATURES   feature directory (index.json + shards); no audio, no Debian tools needed
#   RUN_DIR    run folder on the GPU machine; a RUN_DIR/checkpoints/last.ckpt there is resumed
#   MINUTES    training budget (Lightning trainer.max_time; default 7); the checkpoints follow it
#   RESUME_FROM=path.ckpt (environment): start from this Lightning checkpoint (copied to RUN_DIR)
#   CONFIG=path.yaml (environment): the stage-1 recipe (default configs/small-cpu.yaml), e.g.
#              CONFIG=configs/small-cpu-pitch.yaml with --set init_from=export-or-ckpt for a warm start
#   OUT        where the results go (default RUN_DIR/out): warm.ckpt (`entanglecodec train slim`: recipe +
#              float16 weights with the auxiliary heads, no optimiser; split into warm.ckpt.part-aa, -ab, ...
#              when it is over 15 MiB, a device machine's limit: join with `cat warm.ckpt.part-* > warm.ckpt`),
#              metrics.csv, recipe.yaml and train.log. warm.ckpt is the next warm start (--set
#              init_from=warm.ckpt; an export cannot give that: its heads start fresh) and exports anywhere:
#              `entanglecodec train export warm.ckpt -o DIR --dtype float16 [--decode-from checkpoints/...]`.
#              (At most 8 files come back from a device machine: the export is made here, not there.)
# Python packages the GPU image lacks are installed from ./.whl when it is there (see README,
# "Training on a GPU from pre-computed features"). Further --set arguments override the recipe,
# e.g. --set data.batch_size=128 --set optim.lr=4e-4, or --set trainer.devices=4 --set trainer.strategy=ddp.
# SIGTERM/SIGINT: the trainer writes last.ckpt, then warm.ckpt is still written.
# With --set trainer.keep_best=val/flow (or another val/ metric) warm.ckpt comes from checkpoints/best.ckpt,
# the best validation step (FROM=last: the last step), and warm-last.ckpt from the last; train.log names both.
set -uo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/gpu_env.sh
source "$HERE/scripts/gpu_env.sh" FEATURES "$@" || exit $?
FEATURES=$INPUT

if [ -n "${RESUME_FROM:-}" ]; then
    cp "$RESUME_FROM" "$RUN/checkpoints/last.ckpt" || exit 1
fi
gpu_budget "$RUN" "$MINUTES"

CONFIG=${CONFIG:-$HERE/configs/small-cpu.yaml}
run_trainer python3 -m entanglecodec.cli train stage1 -c "$CONFIG" --run-dir "$RUN" "${RESUME[@]}" --no-progress \
    --set data.features="$FEATURES" \
    --set trainer.accelerator=gpu --set trainer.precision=bf16-mixed --set trainer.threads=8 \
    --set data.batch_size=64 --set data.num_workers=8 \
    --set trainer.max_time="$MAX_TIME" --set trainer.max_steps=10000000 \
    --set trainer.ckpt_every=500 --set trainer.val_every=500 --set trainer.plot_every=2000 \
    "${EXTRA[@]}"

if [ -f "$RUN/checkpoints/last.ckpt" ]; then
    step_of() { python3 -c "import sys, torch; print(torch.load(sys.argv[1], map_location='cpu', weights_only=False)['global_step'])" "$1"; }
    SRC=$RUN/checkpoints/last.ckpt
    # with --set trainer.keep_best=...: warm.ckpt is the best validation step (unless FROM=last) and
    # warm-last.ckpt the last one, since a metric can pick a step too early (session 22: the pitch term)
    if [ -f "$RUN/checkpoints/best.ckpt" ] && [ "${FROM:-best}" = best ]; then
        SRC=$RUN/checkpoints/best.ckpt
        echo "last step $(step_of "$RUN/checkpoints/last.ckpt") -> warm-last.ckpt" | tee -a "$LOG"
        python3 -m entanglecodec.cli train slim "$RUN/checkpoints/last.ckpt" -o "$OUT/warm-last.ckpt" >>"$LOG" 2>&1 \
            || echo "slim checkpoint of the last step failed (see train.log)" | tee -a "$LOG"
    fi
    echo "step $(step_of "$SRC") ($SRC) -> warm.ckpt" | tee -a "$LOG"
    python3 -m entanglecodec.cli train slim "$SRC" -o "$OUT/warm.ckpt" >>"$LOG" 2>&1 \
        || echo "slim checkpoint failed (see train.log)" | tee -a "$LOG"
    split_big "$OUT/warm.ckpt" "$OUT/warm-last.ckpt"
fi
collect_run "$RUN" "$OUT"
exit $STATUS
