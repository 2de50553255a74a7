#!/usr/bin/env bash
# Issue 14's codec-controlled comparison (configs/lm-compare.yaml -> reports/lm.md) from nothing, on
# one machine, in two lanes that share its cores. Every stage resumes, so after an interruption
# (a session's end) the same command carries on:
#
#   nohup scripts/lm_compare.sh >> /work/runs/lm-compare.log 2>&1 &
#
#   0. corpus       entanglecodec data synth (2.5 h, seed 61: byte-identical on every machine)
#   1. features     train+valid mels + caption embeddings, once with rich captions, once with asr_caption
#   lane A          the three ablation codecs of paper Table 4 trained identically from scratch for
#                   $STEPS steps (full recipe / loss.contrast=0 / data.text_field=asr_caption), exported;
#                   then the LM rows of the first two
#   lane B          the LM rows of the bundled codec and k-means-of-mel, then (once lane A has
#                   exported it) the w/o-rich-caption row
#                   Each lane trains its rows' understanding LMs (AQA, captioning) first, then their
#                   generation LMs (TTS, TTA), so the AQA rows are complete first.
#   2. report       a last `lm compare` without --only reuses every row and writes reports/lm.{md,json}
#
# `scripts/lm_compare.sh a` (or b, or report) runs one part alone, e.g. to restart a lane.
# Environment: DATA (/work/data), RUNS (/work/runs), STEPS (600; must match the names in the config),
# THREADS (1 per codec lane; the LMs take trainer.threads from the config).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/work/data}
RUNS=${RUNS:-/work/runs}
STEPS=${STEPS:-600}
THREADS=${THREADS:-1}
EC=${EC:-.venv/bin/entanglecodec}
CORPUS=$DATA/synth-v6
WORK=${WORK:-$RUNS/lm-compare-v6u}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
say() { echo "[$(date +%H:%M:%S)] $*"; }

if [ ! -f "$CORPUS/manifest.jsonl" ]; then
    say "corpus -> $CORPUS"
    resume=(); [ -d "$CORPUS" ] && resume=(--resume)
    $EC data synth --hours 2.5 --out "$CORPUS" --seed 61 --workers 2 --no-progress "${resume[@]}"
fi
for field in caption asr_caption; do
    f=$DATA/features-v6-$field
    if [ ! -f "$f/index.json" ]; then
        say "features ($field) -> $f"
        resume=(); [ -d "$f" ] && resume=(--resume)
        $EC data features "$CORPUS/manifest.jsonl" -o "$f" --codec-config configs/small-cpu.yaml \
            --split train --split valid --text-field "$field" --no-progress "${resume[@]}"
    fi
done

codec() {  # name, text field, extra --set ...: train (or resume) and export one ablation codec
    local name=$1 field=$2; shift 2
    local run=$RUNS/trio-v6-$name export=$RUNS/trio-v6-$name-export
    [ -f "$export/model.safetensors" ] && return 0
    local resume=(); [ -f "$run/recipe.yaml" ] && resume=(--resume)
    say "codec $name: $STEPS steps -> $run"
    $EC train stage1 -c configs/small-cpu.yaml --run-dir "$run" --no-progress "${resume[@]}" \
        --set data.features="$DATA/features-v6-$field" --set data.num_workers=1 \
        --set trainer.max_steps="$STEPS" --set trainer.threads="$THREADS" --set trainer.val_every=200 "$@"
    $EC train export "$run" -o "$export.partial" --overwrite
    mv "$export.partial" "$export"
}

rows() {  # lm compare --only for the named tokenizers: understanding LMs first, then generation LMs
    local args=()
    for n in "$@"; do args+=(--only "$n"); done
    $EC lm compare -c configs/lm-compare.yaml --work-dir "$WORK" -o reports/lm "${args[@]}" --set generation_recipe=null
    $EC lm compare -c configs/lm-compare.yaml --work-dir "$WORK" -o reports/lm "${args[@]}"
}

lane_a() {
    codec full caption
    codec no-contrastive caption --set loss.contrast=0.0
    codec asr-caption asr_caption --set data.text_field=asr_caption
    rows "full-$STEPS" "w/o contrastive-$STEPS"
}
lane_b() {
    rows entanglecodec kmeans-mel
    until [ -f "$RUNS/trio-v6-asr-caption-export/model.safetensors" ]; do sleep 60; done
    rows "w/o rich caption-$STEPS"
}

report() {
    say "report"
    $EC lm compare -c configs/lm-compare.yaml --work-dir "$WORK" -o reports/lm
}

case "${1:-all}" in  # one part alone (after an interruption of that part): a | b | report
    a) lane_a; exit ;;
    b) lane_b; exit ;;
    report) report; exit ;;
    all) ;;
    *) echo "usage: $0 [a|b|report]" >&2; exit 2 ;;
esac
lane_a > "$RUNS/lm-compare-lane-a.log" 2>&1 &
a=$!
lane_b > "$RUNS/lm-compare-lane-b.log" 2>&1 &
b=$!
say "lanes running: A (pid $a, codecs) -> $RUNS/lm-compare-lane-a.log, B (pid $b) -> $RUNS/lm-compare-lane-b.log"
wait $a
wait $b
report
