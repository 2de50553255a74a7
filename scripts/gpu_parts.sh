#!/usr/bin/env bash
# Move a directory larger than one device call's transfer (64 MiB with the tracked tree) to a GPU
# machine over several calls to the same warm machine. /tmp on that machine survives between calls
# while it stays warm (30 s after each call); the repository copy there does not keep new files.
#
#   scripts/gpu_parts.sh pack DIR PREFIX [MB]   here: tar + xz DIR into parts PREFIX.part-aa, -ab, ...
#                                               of at most MB MiB each (default 48) and the checksum
#                                               list PREFIX.sha256; nothing existing is overwritten
#   scripts/gpu_parts.sh stage PREFIX           device: copy the parts of PREFIX carried in this call
#                                               into $STAGE (default /tmp/stage), each checked
#                                               against PREFIX.sha256 (carry it in every call)
#   scripts/gpu_parts.sh unpack NAME DEST       device: when every part listed in $STAGE/NAME.sha256
#                                               is staged and intact, extract them into DEST
#
# Example, a feature shard in three calls, each carrying PREFIX.sha256 and one part (the last call also
# the warm start and .whl; every call's tree and carried paths must stay under 64 MiB):
#   scripts/gpu_parts.sh pack /work/data/features-v2 gpucarry/parts/features-v2 40
#   calls 1, 2: scripts/gpu_parts.sh stage gpucarry/parts/features-v2
#   call 3:     scripts/gpu_parts.sh stage gpucarry/parts/features-v2 && \
#               scripts/gpu_parts.sh unpack features-v2 /tmp/f && scripts/gpu_train.sh /tmp/f/features-v2 ...
set -euo pipefail

die() { echo "gpu_parts: $*" >&2; exit 2; }
STAGE=${STAGE:-/tmp/stage}

cmd=${1:-}
case "$cmd" in
pack)
    [ $# -ge 3 ] || die "usage: pack DIR PREFIX [MB]"
    src=$2 prefix=$3 mb=${4:-48}
    [ -d "$src" ] || die "pack: $src is not a directory"
    [[ "$mb" =~ ^[1-9][0-9]*$ ]] || die "pack: MB must be a positive whole number, got $mb"
    if compgen -G "$prefix.part-*" >/dev/null || [ -e "$prefix.sha256" ]; then
        die "pack: $prefix.part-* or $prefix.sha256 exists already (remove them first)"
    fi
    mkdir -p "$(dirname "$prefix")"
    tmp=$(mktemp -d "$(dirname "$prefix")/.pack.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    name=$(basename "$prefix")
    tar -C "$(dirname "$src")" -cf - "$(basename "$src")" | xz -T2 -6 | split -b "${mb}M" - "$tmp/$name.part-"
    (cd "$tmp" && sha256sum "$name".part-* > "$name.sha256")
    mv "$tmp/$name".part-* "$tmp/$name.sha256" "$(dirname "$prefix")/"
    n=$(wc -l < "$prefix.sha256")
    echo "packed $src into $n part(s) of at most $mb MiB: $prefix.part-* (list: $prefix.sha256)"
    ;;
stage)
    [ $# -eq 2 ] || die "usage: stage PREFIX"
    prefix=$2 name=$(basename "$2")
    [ -f "$prefix.sha256" ] || die "stage: $prefix.sha256 not found (carry the checksum list in every call)"
    mkdir -p "$STAGE"
    cp "$prefix.sha256" "$STAGE/$name.sha256"
    found=0
    for part in "$prefix".part-*; do
        [ -f "$part" ] || continue
        base=$(basename "$part")
        want=$(awk -v f="$base" '$2 == f {print $1}' "$prefix.sha256")
        [ -n "$want" ] || die "stage: $base is not in $prefix.sha256"
        got=$(sha256sum "$part" | cut -d' ' -f1)
        [ "$got" = "$want" ] || die "stage: $base is damaged (sha256 mismatch)"
        cp "$part" "$STAGE/$base.tmp" && mv "$STAGE/$base.tmp" "$STAGE/$base"
        found=$((found + 1))
    done
    have=$(cd "$STAGE" && ls "$name".part-* 2>/dev/null | wc -l)
    echo "staged $found part(s) of $name in $STAGE; $have of $(wc -l < "$prefix.sha256") there now"
    ;;
unpack)
    [ $# -eq 3 ] || die "usage: unpack NAME DEST"
    name=$2 dest=$3
    [ -f "$STAGE/$name.sha256" ] || die "unpack: nothing of $name staged in $STAGE (run stage first)"
    missing=$(cd "$STAGE" && awk '{print $2}' "$name.sha256" | while read -r f; do [ -f "$f" ] || printf '%s ' "$f"; done)
    [ -z "$missing" ] || die "unpack: parts not staged yet: $missing(the machine went back between calls?)"
    (cd "$STAGE" && sha256sum --quiet -c "$name.sha256") || die "unpack: a staged part of $name is damaged"
    mkdir -p "$dest"
    (cd "$STAGE" && awk '{print $2}' "$name.sha256" | xargs cat) | xz -d | tar -x -C "$dest"
    echo "unpacked $name into $dest"
    ;;
*)
    die "usage: gpu_parts.sh pack DIR PREFIX [MB] | stage PREFIX | unpack NAME DEST"
    ;;
esac
