"""``scripts/gpu_parts.sh``: a directory travels to a GPU machine in parts over several calls."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_parts.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("xz") is None, reason="needs bash and xz")


def _run(*args: str, stage: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "STAGE": str(stage)})


def test_pack_stage_over_two_calls_then_unpack(tmp_path: Path) -> None:
    src = tmp_path / "features-x"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    (src / "a.bin").write_bytes(rng.bytes(1_600_000))  # random bytes do not compress: 2+ parts of 1 MiB
    (src / "sub" / "b.json").write_text('{"k": 1}\n')
    carry = tmp_path / "carry"
    stage = tmp_path / "stage"
    r = _run("pack", str(src), str(carry / "features-x"), "1", stage=stage)
    assert r.returncode == 0, r.stderr
    parts = sorted(carry.glob("features-x.part-*"))
    assert len(parts) == 2 and all(p.stat().st_size <= 2**20 for p in parts)
    again = _run("pack", str(src), str(carry / "features-x"), "1", stage=stage)
    assert again.returncode == 2 and "exists already" in again.stderr  # never overwrites

    # call 1 carries the first part (and the checksum list), call 2 the second
    held = tmp_path / "held"
    held.mkdir()
    shutil.move(str(parts[1]), held / parts[1].name)
    assert _run("stage", str(carry / "features-x"), stage=stage).returncode == 0
    early = _run("unpack", "features-x", str(tmp_path / "out"), stage=stage)
    assert early.returncode == 2 and parts[1].name in early.stderr and "Traceback" not in early.stderr
    parts[0].unlink()
    shutil.move(str(held / parts[1].name), parts[1])
    r = _run("stage", str(carry / "features-x"), stage=stage)
    assert r.returncode == 0 and "2 of 2" in r.stdout, r.stdout + r.stderr

    r = _run("unpack", "features-x", str(tmp_path / "out"), stage=stage)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "features-x" / "a.bin").read_bytes() == (src / "a.bin").read_bytes()
    assert (tmp_path / "out" / "features-x" / "sub" / "b.json").read_text() == '{"k": 1}\n'

    # a part damaged on the way is refused by name
    data = parts[1].read_bytes()
    parts[1].write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    bad = _run("stage", str(carry / "features-x"), stage=stage)
    assert bad.returncode == 2 and "damaged" in bad.stderr and parts[1].name in bad.stderr
