"""Audio tokenizers an LM can read and write: EntangleCodec checkpoints and a k-means-of-mel baseline.

Both expose the same small interface (:class:`AudioTokenizer`): ``encode`` clips to token ids at
50 Hz, ``decode`` token ids back to a 24 kHz waveform, the ``codebook`` vectors used to initialise
the LM's new embedding rows (:mod:`.vocab`) and a ``fingerprint`` naming the token space (token
shards record it and LM training checks it).

* :class:`CodecTokenizer` wraps :class:`~entanglecodec.codec.model.EntangleCodec` (its public
  ``encode``/``decode``; decode = flow decoder + vocoder).
* :class:`KMeansMelTokenizer` is the codec-controlled comparison's baseline (issue 14 (d)): the
  k-means of per-bin standardised log-mel frames fitted by
  :class:`~entanglecodec.eval.probe.KMeansTokenizer`, at the codec's frame rate and codebook size.
  Tokens are the nearest centre; decoding maps each token to its centre's log-mel frame
  (de-standardised) and vocodes it with the default vocoder, so TTS/TTA on these tokens can be
  heard and scored like the codec's. Saved as a checkpoint directory (``config.json`` with
  ``model_type: kmeans-mel`` + ``model.safetensors`` holding centres, mean, std).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..checkpoint import CONFIG_NAME, MODEL_TYPE_KEY, read_checkpoint, save_checkpoint

KMEANS_MODEL_TYPE = "kmeans-mel"
SAMPLE_RATE = 24000


class AudioTokenizer(Protocol):
    """What the LM code needs from a tokenizer (all rates in Hz, waveforms float32 at 24 kHz)."""

    name: str
    sample_rate: int
    frame_rate: int
    codebook_size: int

    def fingerprint(self) -> str: ...
    def accepts_fingerprint(self, fingerprint: str) -> bool: ...
    def codebook(self) -> np.ndarray: ...
    def encode(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]: ...
    def decode(self, codes: np.ndarray, seed: int = 0) -> np.ndarray: ...


class CodecTokenizer:
    """An EntangleCodec checkpoint as an :class:`AudioTokenizer`.

    Args:
        model: the codec (eval mode; the caption tower is not needed).
        name: label used in reports (default: the checkpoint folder name).
    """

    def __init__(self, model: Any, name: str = "entanglecodec") -> None:
        self.model = model.eval()
        self.name = name
        self.sample_rate = int(model.sample_rate)
        self.frame_rate = int(model.frame_rate)
        self.codebook_size = int(model.codebook_size)

    def fingerprint(self) -> str:
        return str(self.model.fingerprint())

    def accepts_fingerprint(self, fingerprint: str) -> bool:
        return bool(self.model.accepts_fingerprint(fingerprint))

    def codebook(self) -> np.ndarray:
        """``float32 [K, D_quant]`` codebook embeddings (``Z_q`` of every id)."""
        ids = torch.arange(self.codebook_size)[None]
        return self.model.codes_to_embeddings(ids)[0].detach().float().numpy()

    def encode(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Clips ``[S_i]`` at 24 kHz -> ``int64 [F_i]`` ids, one padded batch (same codes as alone)."""
        from ..audio import pad_batch

        x, lens = pad_batch([torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)) for w in wavs])
        tok = self.model.encode(x, SAMPLE_RATE, lens)
        return [tok.codes[i, : int(tok.lengths[i])].numpy().astype(np.int64) for i in range(len(wavs))]

    def decode(self, codes: np.ndarray, seed: int = 0) -> np.ndarray:
        """``[F]`` ids -> ``float32 [F * 480]`` waveform at 24 kHz (flow decoder + vocoder)."""
        audio = self.model.decode(torch.as_tensor(np.asarray(codes, dtype=np.int64))[None], seed=seed)
        return audio.wav[0].float().numpy()


class KMeansMelTokenizer:
    """k-means-of-mel tokens (50 Hz, ``K`` clusters); see the module docstring.

    Args:
        centres: ``[K, n_mels]`` cluster centres in standardised log-mel units.
        mean, std: ``[n_mels]`` per-bin statistics of the fitting frames (natural-log power mel).
        name: label in reports.
        vocoder: vocoder spec for :meth:`decode` (``"default"``, ``"griffin-lim"`` or a directory).
    """

    def __init__(
        self, centres: np.ndarray, mean: np.ndarray, std: np.ndarray, name: str = "kmeans-mel", vocoder: str = "default"
    ) -> None:
        from ..audio import MelFrontend
        from ..config import MelConfig

        self.centres = torch.as_tensor(np.asarray(centres, dtype=np.float32))
        self.mean = torch.as_tensor(np.asarray(mean, dtype=np.float32))
        self.std = torch.as_tensor(np.asarray(std, dtype=np.float32))
        self.name = name
        self.vocoder_spec = vocoder
        mel_cfg = MelConfig()
        self.frontend = MelFrontend(mel_cfg).eval()
        self.sample_rate = mel_cfg.sample_rate
        self.frame_rate = int(round(mel_cfg.sample_rate / mel_cfg.hop_length))
        self.codebook_size = int(self.centres.shape[0])
        self._vocoder: Any = None

    @classmethod
    def fit(cls, wavs: Sequence[np.ndarray], k: int, seed: int = 0, max_frames: int = 200_000) -> KMeansMelTokenizer:
        """Fit ``k`` clusters on the log-mel frames of ``wavs`` (24 kHz) with the probe's k-means."""
        from ..eval.probe.measure import KMeansTokenizer, LogMelFeatures

        feats = LogMelFeatures()
        km = KMeansTokenizer(k=k, seed=seed).fit([feats(np.asarray(w, dtype=np.float32)) for w in wavs], max_frames)
        assert km.mean is not None and km.std is not None
        return cls(km.model.cluster_centers_, km.mean, km.std)

    def fingerprint(self) -> str:
        h = hashlib.sha256(b"kmeans-mel")
        for t in (self.centres, self.mean, self.std):
            h.update(t.numpy().tobytes())
        return h.hexdigest()[:16]

    def accepts_fingerprint(self, fingerprint: str) -> bool:
        return fingerprint == self.fingerprint()

    def codebook(self) -> np.ndarray:
        return self.centres.numpy().copy()

    def _mel(self, wav: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return self.frontend.log_mel(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None])[0].T

    def encode(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each frame's nearest centre (Euclidean, as ``MiniBatchKMeans.predict``): ``int64 [F_i]``."""
        out = []
        for w in wavs:
            z = (self._mel(w) - self.mean) / self.std
            out.append(torch.cdist(z, self.centres).argmin(-1).numpy().astype(np.int64))
        return out

    def decode(self, codes: np.ndarray, seed: int = 0) -> np.ndarray:
        """Centre log-mel frames -> vocoder -> ``float32 [F * 480]`` at 24 kHz (``seed`` unused)."""
        from ..vocoder.load import load_vocoder

        c = torch.as_tensor(np.asarray(codes, dtype=np.int64))
        if c.numel() == 0 or int(c.min()) < 0 or int(c.max()) >= self.codebook_size:
            raise ValueError(f"k-means token ids must be a non-empty array in [0, {self.codebook_size})")
        if self._vocoder is None:
            self._vocoder = load_vocoder(self.vocoder_spec)
        log_mel = (self.centres[c] * self.std + self.mean).T[None]
        with torch.no_grad():
            wav = self._vocoder(log_mel, torch.tensor([c.numel()]))
        return wav[0].float().numpy()

    def save_pretrained(self, directory: str | Path) -> Path:
        cfg = {"k": self.codebook_size, "n_mels": int(self.centres.shape[1]), "frame_rate": self.frame_rate}
        state = {"centres": self.centres, "mean": self.mean, "std": self.std}
        return save_checkpoint(directory, cfg, state, model_type=KMEANS_MODEL_TYPE)

    @classmethod
    def from_pretrained(cls, directory: str | Path, vocoder: str = "default") -> KMeansMelTokenizer:
        _, state = read_checkpoint(directory, model_type=KMEANS_MODEL_TYPE)
        missing = {"centres", "mean", "std"} - set(state)
        if missing:
            raise ValueError(f"{directory}: k-means tokenizer lacks {sorted(missing)}")
        return cls(state["centres"].numpy(), state["mean"].numpy(), state["std"].numpy(), Path(directory).name, vocoder)


def load_audio_tokenizer(spec: str | Path | None, vocoder: str | None = None) -> AudioTokenizer:
    """A tokenizer from a directory: a k-means-of-mel checkpoint (``model_type: kmeans-mel``) or an
    EntangleCodec checkpoint (``None``: the bundled codec).

    Raises:
        CheckpointError / ValueError: the directory is not a readable tokenizer checkpoint.
    """
    from ..codec.model import EntangleCodec, default_checkpoint_dir

    d = Path(spec) if spec is not None else default_checkpoint_dir()
    cfg_path = d / CONFIG_NAME
    kind = None
    if cfg_path.is_file():
        try:
            kind = json.loads(cfg_path.read_text()).get(MODEL_TYPE_KEY)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            kind = None
    if kind == KMEANS_MODEL_TYPE:
        return KMeansMelTokenizer.from_pretrained(d, vocoder or "default")
    model = EntangleCodec.from_pretrained(d, build_text_encoder=False)
    if vocoder:
        model.set_vocoder(vocoder)
    return CodecTokenizer(model, d.name)
