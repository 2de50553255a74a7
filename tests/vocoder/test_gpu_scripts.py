"""``scripts/audio_subset.py`` and ``scripts/gpu_vocoder.sh`` (the GPU vocoder recipe), run on the
CPU with the tiny vocoder: the subset is balanced and loadable, the script warm-starts, trains within
its budget, exports and collects its files, and a second call resumes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def test_audio_subset_is_balanced_deterministic_and_within_budget(tiny_corpus: Path, tmp_path: Path) -> None:
    def run(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(REPO / "scripts" / "audio_subset.py"), str(tiny_corpus), "-o", str(out),
                               *extra], capture_output=True, text=True, timeout=120)

    r = run(tmp_path / "a", "--max-mb", "0.2", "--clip-seconds", "0.5", "--valid-clips", "1")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()]
    assert [x["split"] for x in rows].count("valid") == 1 and "test" not in {x["split"] for x in rows}
    train = [x for x in rows if x["split"] == "train"]
    assert {x["domain"] for x in train} == {"speech", "music"}
    assert all(abs(x["duration"] - 0.5) < 1e-3 for x in rows)
    assert sum(f.stat().st_size for f in (tmp_path / "a" / "audio").rglob("*.flac")) <= 0.2 * 2**20
    assert run(tmp_path / "b", "--max-mb", "0.2", "--clip-seconds", "0.5", "--valid-clips", "1").returncode == 0
    assert (tmp_path / "a" / "manifest.jsonl").read_text() == (tmp_path / "b" / "manifest.jsonl").read_text()
    again = run(tmp_path / "a")
    assert again.returncode == 2 and "exists" in again.stderr  # never overwrites


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_vocoder_script_trains_exports_and_resumes(tiny_corpus: Path, tmp_path: Path) -> None:
    from entanglecodec import EntangleCodec, EntangleCodecConfig
    from entanglecodec.vocoder.config import VocoderConfig
    from entanglecodec.vocoder.model import Vocoder

    torch.manual_seed(0)
    init = Vocoder(VocoderConfig.preset("tiny")).save_pretrained(tmp_path / "init")
    codec = EntangleCodec(EntangleCodecConfig.preset("tiny"), build_text_encoder=False).save_pretrained(tmp_path / "codec")
    run_dir = tmp_path / "run"
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # python3 = this interpreter
    env = {**os.environ, "PATH": path, "GPU_WHEELS": "0", "INIT": str(init), "CODEC": str(codec), "CONFIG": str(REPO / "configs" / "vocoder-tiny.yaml")}
    small = ["--set", "trainer.threads=1", "--set", "data.num_workers=0", "--set", "data.batch_size=2",
             "--set", "loss.gan_batch_size=2", "--set", "trainer.ckpt_every=2", "--set", "trainer.val_every=2"]

    def call(steps: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(REPO / "scripts" / "gpu_vocoder.sh"), str(tiny_corpus), str(run_dir), "1",
                               *small, "--set", f"trainer.max_steps={steps}"],
                              capture_output=True, text=True, env=env, timeout=600)

    r = call(4)
    log = (run_dir / "out" / "train.log").read_text()
    assert r.returncode == 0, r.stdout + r.stderr + log
    assert "warm start from" in log and "input_codec" in (run_dir / "out" / "recipe.yaml").read_text()
    out = run_dir / "out"
    assert (out / "export" / "model.safetensors").is_file() and (out / "metrics.csv").is_file()
    assert Vocoder.from_pretrained(out / "export").config.dim == VocoderConfig.preset("tiny").dim
    r = call(8)  # resumes from last.ckpt (no second warm start)
    assert r.returncode == 0, r.stdout + r.stderr
    step = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert step >= 8 and "training budget" in (out / "train.log").read_text()
    # the 16-bit export (how the bundled vocoder is stored): half the weight bytes, loads as float32
    from typer.testing import CliRunner

    from entanglecodec.cli import app

    res = CliRunner().invoke(app, ["train", "vocoder-export", str(run_dir / "checkpoints" / "last.ckpt"),
                                   "-o", str(tmp_path / "half"), "--dtype", "float16"])
    assert res.exit_code == 0, res.output
    full, half = out / "export" / "model.safetensors", tmp_path / "half" / "model.safetensors"
    assert half.stat().st_size < 0.75 * full.stat().st_size
    assert next(Vocoder.from_pretrained(tmp_path / "half").parameters()).dtype == torch.float32
    assert json.loads((tmp_path / "half" / "config.json").read_text())["model_type"] == "entanglecodec-vocoder"
    bad = CliRunner().invoke(app, ["train", "vocoder-export", str(out / "export"), "-o", str(tmp_path / "x"), "--dtype", "int8"])
    assert bad.exit_code == 2 and "--dtype" in bad.output
