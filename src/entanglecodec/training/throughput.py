"""Measure training throughput of a recipe on the current machine (``entanglecodec train throughput``)."""

from __future__ import annotations

import csv
import os
import platform
import shlex
import statistics
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from .recipe import load_recipe
from .run import run_training


def measure_throughput(config: Path, steps: int, overrides: list[str], out: Path) -> dict[str, float]:
    """Run ``steps`` optimiser steps of ``config`` in a scratch run folder and report the timings.

    Validation and checkpointing are pushed past the end so only training steps are timed.
    Returns ``{"s_per_step", "samples_per_s", "params"}`` and appends a section to ``out``.
    """
    if steps < 8:
        raise ValueError("time at least 8 steps (the first 5 are warm-up)")
    ov = [*overrides, f"trainer.max_steps={steps}", f"trainer.val_every={steps * 10}",
          f"trainer.ckpt_every={steps * 10}", f"trainer.plot_every={steps * 10}", "trainer.log_every=1"]
    recipe = load_recipe(config, ov)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        module = run_training(recipe, Path(tmp) / "run", enable_progress_bar=False)
        with open(Path(tmp) / "run" / "logs" / "metrics.csv") as fh:
            rows = list(csv.DictReader(fh))
    per_batch = [float(r["train/s_per_batch"]) for r in rows if r.get("train/s_per_batch")][4:]
    if not per_batch:
        raise ValueError("no timings were logged")
    s_batch = statistics.median(per_batch)
    s_step = s_batch * recipe.optim.accumulate
    bs = recipe.data.batch_size
    params = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    result = {"s_per_step": s_step, "samples_per_s": bs / s_batch, "params": float(params)}
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = "entanglecodec train throughput -c " + shlex.quote(str(config)) + f" --steps {steps}" + "".join(
        f" --set {shlex.quote(o)}" for o in overrides)
    lines = [
        f"\n## {Path(config).name} — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n",
        f"- machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, accelerator `{recipe.trainer.accelerator}`; 1-min load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after (other jobs slow the steps down)\n",
        f"- model: preset `{recipe.model.preset}`, {params / 1e6:.2f} M parameters ({trainable / 1e6:.2f} M trainable)\n",
        f"- batch {bs} x {recipe.data.crop_seconds:g} s crops, accumulate {recipe.optim.accumulate}, "
        f"precision `{recipe.trainer.precision}`\n",
        f"- **{s_step:.2f} s/step, {bs / s_batch:.2f} samples/s, {bs * recipe.data.crop_seconds / s_batch:.1f} s of "
        f"audio per second** (median over steps 6-{steps})\n",
        f"- command: `{cmd}`\n",
    ]
    new = not out.exists()
    with open(out, "a") as fh:
        if new:
            fh.write("# Training throughput\n\nMeasured with `entanglecodec train throughput` (median seconds per "
                     "optimiser step after 5 warm-up steps; validation and checkpointing excluded).\n")
        fh.writelines(lines)
    return result
