"""Shared fixtures: offline Hugging Face, few threads, tiny models."""

from __future__ import annotations

import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# compiled ONNX runtimes (entanglecodec.runtime) of the suite go to a fresh folder, not the user's cache
_CACHE = tempfile.mkdtemp(prefix="entanglecodec-test-cache-")
os.environ["ENTANGLECODEC_CACHE"] = _CACHE

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def tiny_model():  # noqa: ANN201
    from entanglecodec import EntangleCodec, EntangleCodecConfig

    torch.manual_seed(0)
    return EntangleCodec(EntangleCodecConfig.preset("tiny")).eval()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_CACHE, ignore_errors=True)
