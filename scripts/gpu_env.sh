# Shared set-up of the GPU training scripts (gpu_train.sh, gpu_vocoder.sh); sourced, not run:
#   HERE=$(cd "$(dirname "$0")/.." && pwd)
#   source "$HERE/scripts/gpu_env.sh" INPUT_NAME "$@" || exit $?
# It reads the scripts' common arguments, INPUT RUN_DIR [MINUTES] [--set key=value ...], into INPUT,
# RUN, MINUTES (default 7) and EXTRA (the rest), sets OUT (default RUN/out) and LOG (OUT/train.log),
# and then:
#  - installs the carried wheels (./.whl, see scripts/gpu_wheels.sh) into /tmp/ec-site when present, else
#    uses an /tmp/ec-site an earlier call on the same warm machine left (GPU_WHEELS=0 skips both: a machine
#    whose Python already has the packages);
#  - puts src/ on PYTHONPATH, keeps every library offline, and logs the GPU and torch versions;
#  - defines gpu_budget RUN MINUTES: sets RESUME (--resume when RUN/checkpoints/last.ckpt exists) and
#    MAX_TIME (Lightning trainer.max_time, DD:HH:MM:SS: the time the run already trained plus MINUTES);
#  - run_trainer CMD...: runs the trainer in the background, forwards SIGTERM/SIGINT to it (it writes
#    last.ckpt), waits for it and sets STATUS;
#  - split_big FILE...: splits files over 15 MiB into FILE.part-aa, -ab, ... (a device machine's limit);
#  - collect_run RUN OUT: copies the run's newest recipe*.yaml and metrics.csv into OUT and lists OUT.

if [ $# -lt 3 ]; then
    echo "usage: $(basename "$0") $1 RUN_DIR [MINUTES] [--set key=value ...]" >&2
    return 2
fi
INPUT=$2
RUN=$3
shift 3
MINUTES=7
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    MINUTES=$1
    shift
fi
EXTRA=("$@")
OUT=${OUT:-$RUN/out}
mkdir -p "$OUT" "$RUN/checkpoints"
LOG="$OUT/train.log"

if [ "${GPU_WHEELS:-1}" != 0 ] && [ -d "$HERE/.whl" ] && ls "$HERE"/.whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ec-site \
        "$HERE"/.whl/*.whl || { echo "error: installing the carried wheels failed" >&2; return 1; }
fi
# installed now or by an earlier call on this warm machine (a call need not carry .whl again)
if [ "${GPU_WHEELS:-1}" != 0 ] && [ -d /tmp/ec-site ]; then
    export PYTHONPATH=/tmp/ec-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$HERE/src:${PYTHONPATH:-}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } 2>&1 | tee "$LOG"

gpu_budget() {
    local run=$1 minutes=$2 prior=0
    RESUME=()
    if [ -f "$run/checkpoints/last.ckpt" ]; then
        RESUME=(--resume)
        # trainer.max_time budgets the whole run (Lightning checkpoints its timer): add this call's minutes
        prior=$(python3 -c "import sys, torch; ck = torch.load(sys.argv[1], map_location='cpu', weights_only=False); \
print(int(ck.get('callbacks', {}).get('Timer', {}).get('time_elapsed', {}).get('train', 0)))" "$run/checkpoints/last.ckpt") || prior=0
    fi
    local budget=$((prior + minutes * 60))
    MAX_TIME=$(printf "%02d:%02d:%02d:%02d" $((budget / 86400)) $((budget % 86400 / 3600)) $((budget % 3600 / 60)) $((budget % 60)))
    echo "training budget $MAX_TIME ($prior s trained before this call)" | tee -a "$LOG"
}

run_trainer() {
    "$@" >>"$LOG" 2>&1 &
    local pid=$!
    trap 'kill -TERM '"$pid"' 2>/dev/null' TERM INT
    wait "$pid"
    STATUS=$?
    if kill -0 "$pid" 2>/dev/null; then  # a signal interrupted the first wait: let the trainer finish its checkpoint
        wait "$pid"
        STATUS=$?
    fi
    trap - TERM INT
    echo "training exited with status $STATUS" | tee -a "$LOG"
    tail -n 5 "$LOG"
}

split_big() {
    local f
    for f in "$@"; do
        if [ -f "$f" ] && [ "$(stat -c %s "$f")" -gt $((15 * 1024 * 1024)) ]; then
            split -b 15M "$f" "$f.part-" && rm "$f"
        fi
    done
}

collect_run() {
    local run=$1 out=$2 r m
    r=$(ls -t "$run"/recipe*.yaml 2>/dev/null | head -n 1)
    [ -n "$r" ] && cp "$r" "$out/recipe.yaml"
    m=$(ls -t "$run"/logs/*/metrics.csv "$run"/logs/metrics.csv 2>/dev/null | head -n 1)
    [ -n "$m" ] && cp "$m" "$out/metrics.csv"
    ls -la "$out" "$out"/*/ 2>/dev/null
}
