#!/usr/bin/env bash
# Move a feature directory (`entanglecodec data features`, best its smaller copy from `entanglecodec data
# compact`) to a GPU machine in whole shards over several calls to the same warm machine, each call
# under the 64 MiB transfer limit (with the tracked tree). Unlike gpu_parts.sh (one stream cut in
# parts), every shard is its own archive: if the machine goes back before all calls are made, the
# training runs on the shards that arrived.
#
#   scripts/gpu_shards.sh pack FEATURES DEST [MB] [FIRST_MB]
#        here: DEST/cN/ folders of xz archives, each folder at most MB MiB (default 28); the first,
#        DEST/c1 (the index + the valid shards first), at most FIRST_MB (default MB), leaving room for
#        what call 1 also carries (wheels, a warm-start checkpoint). DEST must not exist.
#   scripts/gpu_shards.sh stage DIR      device: copy the archives of one carried folder into $STAGE
#                                        (default /tmp/stage, which lives while the machine stays warm)
#   scripts/gpu_shards.sh unpack DEST    device: extract every staged archive into DEST; DEST/NAME/index.json
#                                        then lists only the shards whose files all arrived
#
# A session-17 example (reports/codec-diagnosis.md §21): 17 train shards + 1 valid shard of features-v7,
# 125 MB of archives, moved in 5 calls of about 5 s each after the machine's start:
#   entanglecodec data compact /work/data/features-v7 -o /work/data/gpu-v7f --dims 64 --valid-shards 1
#   scripts/gpu_shards.sh pack /work/data/gpu-v7f gpucarry/shards 28 26   # gpucarry/ in .git/info/exclude
#   call 1 (carry gpucarry/shards/c1, .whl): scripts/gpu_shards.sh stage gpucarry/shards/c1 && ...
#   calls 2..N (carry gpucarry/shards/cK): scripts/gpu_shards.sh stage gpucarry/shards/cK
#   last call: scripts/gpu_shards.sh unpack /tmp/f && CONFIG=... scripts/gpu_train.sh /tmp/f/gpu-v7f /tmp/run 8 ...
set -euo pipefail

die() { echo "gpu_shards: $*" >&2; exit 2; }
STAGE=${STAGE:-/tmp/stage}

cmd=${1:-}
case "$cmd" in
pack)
    [ $# -ge 3 ] || die "usage: pack FEATURES DEST [MB] [FIRST_MB]"
    src=$(cd "$2" && pwd) dest=$3 mb=${4:-28} first=${5:-${4:-28}}
    [ -f "$src/index.json" ] || die "pack: $2 is not a finished feature directory (no index.json)"
    [ ! -e "$dest" ] || die "pack: $dest exists already"
    [[ "$mb" =~ ^[1-9][0-9]*$ && "$first" =~ ^[1-9][0-9]*$ ]] || die "pack: MB and FIRST_MB must be positive whole numbers"
    name=$(basename "$src") parent=$(dirname "$src")
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    extra=$(cd "$src" && ls semantic.json 2>/dev/null || true)
    tar -C "$parent" -cf - "$name/index.json" ${extra:+"$name/$extra"} | xz -6 > "$tmp/meta.tar.xz"
    # shards in index order, valid first: a partial transfer keeps validation
    shards=$(python3 -c "import json, sys; s = json.load(open(sys.argv[1]))['splits']; \
print('\n'.join(n for k in sorted(s, key=lambda k: k != 'valid') for n in s[k]['shards']))" "$src/index.json")
    for s in $shards; do
        files=$(cd "$src" && ls "$s".* | sed "s|^|$name/|")
        # shellcheck disable=SC2086
        tar -C "$parent" -cf - $files | xz -T2 -6 > "$tmp/$s.tar.xz"
    done
    mkdir -p "$dest"
    k=1 used=0 cap=$((first * 1024 * 1024))
    for a in meta $shards; do
        size=$(stat -c %s "$tmp/$a.tar.xz")
        [ "$size" -le $((mb * 1024 * 1024)) ] || die "pack: shard $a is $size bytes, more than $mb MiB"
        if [ $((used + size)) -gt "$cap" ] && [ "$used" -gt 0 ]; then
            k=$((k + 1)) used=0 cap=$((mb * 1024 * 1024))
        fi
        mkdir -p "$dest/c$k"
        mv "$tmp/$a.tar.xz" "$dest/c$k/"
        used=$((used + size))
    done
    for d in "$dest"/c*; do echo "$d: $(ls "$d" | wc -l) archive(s), $(du -sb "$d" | cut -f1) bytes"; done
    ;;
stage)
    [ $# -eq 2 ] || die "usage: stage DIR"
    [ -d "$2" ] || die "stage: $2 not found (name it in the call's carry)"
    mkdir -p "$STAGE"
    for a in "$2"/*.tar.xz; do
        xz -t "$a" || die "stage: $a is damaged"
        cp "$a" "$STAGE/.tmp" && mv "$STAGE/.tmp" "$STAGE/$(basename "$a")"
    done
    echo "staged $(ls "$STAGE"/*.tar.xz | wc -l) archive(s) in $STAGE ($(du -sh "$STAGE" | cut -f1))"
    ;;
unpack)
    [ $# -eq 2 ] || die "usage: unpack DEST"
    dest=$2
    [ -f "$STAGE/meta.tar.xz" ] || die "unpack: the index archive is not staged (the machine went back between calls?)"
    mkdir -p "$dest"
    for a in "$STAGE"/*.tar.xz; do tar -xJf "$a" -C "$dest"; done
    name=$(tar -tJf "$STAGE/meta.tar.xz" | head -n 1 | cut -d/ -f1)
    python3 - "$dest/$name" <<'PY'
import json, os, sys
root = sys.argv[1]
path = os.path.join(root, "index.json")
index = json.load(open(path))
for split, s in index["splits"].items():
    def arrived(n):
        meta = os.path.join(root, n + ".json")
        return os.path.isfile(meta) and all(os.path.isfile(os.path.join(root, f)) for f in json.load(open(meta))["files"])
    keep = [n for n in s["shards"] if arrived(n)]
    metas = [json.load(open(os.path.join(root, n + ".json"))) for n in keep]
    s.update(shards=keep, clips=sum(len(m["clips"]) for m in metas), frames=sum(m["frames"] for m in metas),
             hours=round(sum(m["seconds"] for m in metas) / 3600, 4))
if not index["splits"].get("train", {}).get("shards"):
    sys.exit(f"gpu_shards: no train shard arrived in {root}")
json.dump(index, open(path, "w"), indent=1)
print(f"unpacked {root}: " + ", ".join(f"{k} {len(v['shards'])} shard(s), {v['hours']:.2f} h" for k, v in index["splits"].items()))
PY
    ;;
*)
    die "usage: gpu_shards.sh pack FEATURES DEST [MB] [FIRST_MB] | stage DIR | unpack DEST"
    ;;
esac
