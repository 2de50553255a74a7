#!/usr/bin/env bash
# Download, into ./.whl, the wheels (CPython 3.12, x86-64 Linux) of the packages the training code
# imports that the GPU machine's image lacks (it has torch, lightning, transformers, typer, rich,
# safetensors, numpy, pyyaml, einops, matplotlib, tensorboard). About 2.1 MB in all.
# Versions are those of this checkout's environment. scripts/gpu_train.sh installs them from ./.whl.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
EXCLUDE=$(git rev-parse --git-path info/exclude)  # keep .whl out of git (it still travels when carried)
mkdir -p "$(dirname "$EXCLUDE")"
grep -qx '/.whl/' "$EXCLUDE" 2>/dev/null || echo '/.whl/' >> "$EXCLUDE"
pkgs=()
for p in soundfile cffi pycparser soxr vector-quantize-pytorch einx frozendict torch-einops-utils loguru; do
    v=$("$PY" -m pip show "$p" 2>/dev/null | sed -n 's/^Version: //p')
    pkgs+=("$p${v:+==$v}")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "${pkgs[@]}"
du -sh .whl
