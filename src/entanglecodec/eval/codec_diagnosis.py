"""Where does pitch die? Measurements behind ``reports/codec-diagnosis.md`` (the intelligible-tokens issue).

For one codec checkpoint and a set of speech clips:

* :func:`gradient_norms` — the gradient norm each stage-1 loss term (flow through the quantizer's
  straight-through path, contrastive, VQ commitment, and the optional auxiliary terms) sends into
  the encoder's parameters and into ``h~``;
* :func:`pitch_probes` — linear and small-MLP probes of voicing and log-F0 (WORLD DIO + StoneMask on
  the clip) on the encoder output ``H``, on ``h~``, on the code vectors ``Z_q`` of the tokens, and on
  the input mel itself (the ceiling);
* :func:`semantic_probes` — how much of a speech recogniser's encoder frame (Whisper, 50 Hz) a ridge
  probe reads from the mel, ``h~`` and ``Z_q`` (each with two frames of context either side): what is
  *said* that survives quantisation (the ``loss.semantic`` question);
* :func:`predictor_pitch` — the pitch-conditioned codec's own voicing/F0 predictor on ``Z_q`` (the
  contour its decoder and the pulse phase read at decode time) against the same tracker;
* :func:`decode_pitch` — F0 accuracy (:func:`~entanglecodec.eval.metrics.pitch_accuracy`: pYIN, F0
  RMSE in cents, as in the real-speech evaluation report), voicing F1 and log-mel L1 of the decoded
  mel (through the vocoder) for N Euler steps and guidance values at the same checkpoint.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..codec.model import EntangleCodec
from ..codec.pitch import F0_REFERENCE_HZ
from ..training.aux_losses import frame_f0
from .load import load_codec
from .report import report_paths, write_report


@dataclass
class Clip:
    """One evaluation clip: ``wav [S]`` float32 at 24 kHz, its id and speaker."""

    id: str
    wav: np.ndarray
    speaker: str
    caption: str | None = None


def speech_clips(
    manifest: str | Path, split: str, recorded_only: bool = True, max_clips: int = 24, max_seconds: float = 8.0
) -> list[Clip]:
    """Speech clips of ``split`` (recorded people only, by default), at most ``max_seconds`` each."""
    from ..data.manifest import read_manifest
    from .load import load_clip

    rows = read_manifest(manifest, split, allow_empty=True)
    out: list[Clip] = []
    for r in rows:
        if r["domain"] != "speech":
            continue
        row: dict[str, Any] = dict(r)
        spk = (row.get("attributes") or {}).get("speaker") or {}
        kind = spk.get("kind") if isinstance(spk, dict) else None
        if recorded_only and kind not in (None, "recorded", "real"):
            continue
        wav = load_clip(row["audio"], max_seconds)
        speaker = row.get("speaker") or (spk.get("id") if isinstance(spk, dict) else None) or "?"
        caption = row.get("caption")
        out.append(Clip(str(row["id"]), wav, str(speaker), str(caption) if caption else None))
        if len(out) >= max_clips:
            break
    if not out:
        raise ValueError(f"{manifest}: no speech clips in split {split!r}")
    return out


def _mel(model: EntangleCodec, wav: np.ndarray) -> Tensor:
    x = torch.from_numpy(wav).float()[None]
    with torch.no_grad():
        return model.frontend(x, torch.tensor([x.shape[1]]))


def gradient_norms(model: EntangleCodec, clips: Sequence[Clip], captions: Sequence[str] | None = None,
                   crop_frames: int = 200, seed: int = 0) -> dict[str, dict[str, float]]:
    """Gradient norm of each loss term w.r.t. the encoder's parameters and ``h~`` (one batch of crops).

    The model is copied and put in training mode (the copy's codebook may move; the caller's does not).
    """
    m = copy.deepcopy(model).train()
    torch.manual_seed(seed)
    mels = [_mel(m, c.wav)[0, :, :crop_frames] for c in clips]
    f = min(x.shape[-1] for x in mels)
    mel = torch.stack([x[:, :f] for x in mels])
    mask = torch.ones(mel.shape[0], f, dtype=torch.bool)
    enc_params = [p for p in m.encoder.parameters() if p.requires_grad]
    result: dict[str, dict[str, float]] = {}
    terms = ["flow", "vq"] + (["contrast"] if captions is not None and m.text_encoder is not None else [])
    for term in terms:
        m.zero_grad(set_to_none=True)
        enc = m.encoder(mel, mask)
        q = m.quantizer(enc.frames, mask)
        q.pre_quant.retain_grad()
        if term == "flow":
            # pitch-conditioned decoders read the comb of the codes' own contour, detached: in
            # training it comes from a tracker, so it sends the encoder no gradient either
            pitch = m.pitch_features(q.quantized.detach(), None)
            loss, _ = m.decoder.loss(mel, q.quantized, mask, torch.Generator().manual_seed(seed), pitch)
        elif term == "vq":
            loss = q.loss
        else:
            from ..training.codec_losses import logit_scale_parameter
            from ..training.losses import contrastive_loss

            a = m.audio_proj(enc.cls)
            t = m.text_encoder(list(captions or [])[: mel.shape[0]])  # type: ignore[misc]
            loss, _ = contrastive_loss(a, t, logit_scale_parameter(m))
        loss.backward()
        g_enc = torch.sqrt(sum((p.grad.pow(2).sum() for p in enc_params if p.grad is not None), torch.tensor(0.0)))
        g_h = q.pre_quant.grad.norm() if q.pre_quant.grad is not None else torch.tensor(0.0)
        result[term] = {"loss": float(loss), "encoder_grad_norm": float(g_enc), "h_tilde_grad_norm": float(g_h)}
    return result


def _frame_targets(clips: Sequence[Clip], n_frames: Sequence[int]) -> list[np.ndarray]:
    return [frame_f0(c.wav, 24000, 480, n) for c, n in zip(clips, n_frames, strict=True)]


Features = dict[str, list[np.ndarray]]
"""What :func:`features` returns: per-clip frames of ``mel``, ``H``, ``h~`` and ``Z_q``."""


def features(model: EntangleCodec, clips: Sequence[Clip]) -> Features:
    """Per-frame features of every clip: ``mel``, ``H``, ``h~`` and ``Z_q`` (each ``[F, D]``)."""
    m = model.eval()
    out: Features = {"mel": [], "H": [], "h~": [], "Z_q": []}
    with torch.no_grad():
        for c in clips:
            mel = _mel(m, c.wav)
            enc = m.encoder(mel)
            h = m.quantizer.project(enc.frames)
            zq = m.quantizer.embed_codes(m.quantizer.nearest(h))
            out["mel"].append(mel[0].T.numpy())
            out["H"].append(enc.frames[0].numpy())
            out["h~"].append(h[0].numpy())
            out["Z_q"].append(zq[0].numpy())
    return out


def pitch_probes(model: EntangleCodec, clips: Sequence[Clip], seed: int = 0, feats: Features | None = None,
                 targets: list[np.ndarray] | None = None) -> dict[str, dict[str, float]]:
    """Voicing accuracy and F0 error (cents, voiced frames) of linear and MLP probes per feature.

    Clips are split in two halves by index (probes fit on one half, scored on the other). Chance
    levels: voicing = majority-class accuracy; F0 = predicting the training mean of log-F0.
    ``feats`` / ``targets``: :func:`features` and the tracker's F0 of the same clips, when the
    caller has them already.
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.preprocessing import StandardScaler

    feats = feats if feats is not None else features(model, clips)
    targets = targets if targets is not None else _frame_targets(clips, [x.shape[0] for x in feats["mel"]])
    idx = np.arange(len(clips))
    train_ids, test_ids = idx[::2], idx[1::2]

    def stack(name: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([feats[name][i] for i in ids]), np.concatenate([targets[i] for i in ids])

    out: dict[str, dict[str, float]] = {}
    _, f0_tr = stack("mel", train_ids)
    _, f0_te = stack("mel", test_ids)
    v_tr, v_te = f0_tr > 0, f0_te > 0
    log_tr = np.log2(np.maximum(f0_tr, 1.0) / F0_REFERENCE_HZ)
    log_te = np.log2(np.maximum(f0_te, 1.0) / F0_REFERENCE_HZ)
    majority = float(max(v_te.mean(), 1 - v_te.mean()))
    mean_cents = float(1200 * np.abs(log_te[v_te] - log_tr[v_tr].mean()).mean())
    out["chance"] = {"vuv_acc_linear": majority, "vuv_acc_mlp": majority, "f0_cents_linear": mean_cents,
                     "f0_cents_mlp": mean_cents}
    for name in ("mel", "H", "h~", "Z_q"):
        x_tr, _ = stack(name, train_ids)
        x_te, _ = stack(name, test_ids)
        sc = StandardScaler().fit(x_tr)
        x_tr, x_te = sc.transform(x_tr), sc.transform(x_te)
        res: dict[str, float] = {}
        for kind in ("linear", "mlp"):
            if kind == "linear":
                clf: Any = LogisticRegression(max_iter=500)
                reg: Any = Ridge(alpha=1.0)
            else:
                clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=300, random_state=seed)
                reg = MLPRegressor(hidden_layer_sizes=(128,), max_iter=300, random_state=seed)
            clf.fit(x_tr, v_tr)
            res[f"vuv_acc_{kind}"] = float((clf.predict(x_te) == v_te).mean())
            reg.fit(x_tr[v_tr], log_tr[v_tr])
            res[f"f0_cents_{kind}"] = float(1200 * np.abs(reg.predict(x_te[v_te]) - log_te[v_te]).mean())
        out[name] = res
    return out


def _context(x: np.ndarray, k: int = 2) -> np.ndarray:
    """Stack each frame of ``x [F, D]`` with its ``k`` neighbours on both sides (edges repeated): ``[F, (2k + 1) D]``."""
    pad = np.concatenate([np.repeat(x[:1], k, axis=0), x, np.repeat(x[-1:], k, axis=0)])
    return np.concatenate([pad[i : i + x.shape[0]] for i in range(2 * k + 1)], axis=1)


def semantic_probes(model: EntangleCodec, clips: Sequence[Clip], teacher: str = "base",
                    encode: Any = None, feats: Features | None = None) -> dict[str, dict[str, float]]:
    """Ridge probes from the mel, ``h~`` and ``Z_q`` (+-2 frames of context) to a teacher's frames.

    The teacher is the encoder of the packaged Whisper model ``teacher`` (``encode`` overrides it:
    :data:`~entanglecodec.data.semantic.Encoder`). Targets are standardised with the fitting half's
    statistics; probes (ridge, penalty chosen by leave-one-out on the fitting half; the teacher is
    far from linear in any of them, so these are lower bounds, comparable across checkpoints) fit
    on half the clips (by index) and report, on the other half, the mean
    cosine and the R^2 (explained share of the variance) of the predicted frames. ``chance``
    predicts the mean frame. ``feats``: :func:`features` of the clips, when the caller has them.
    """
    from sklearn.linear_model import RidgeCV

    from ..data.semantic import teacher_frames, whisper_encoder

    if encode is None:
        encode, _ = whisper_encoder(teacher, threads=torch.get_num_threads())
    feats = feats if feats is not None else features(model, clips)
    targets = [teacher_frames(c.wav, 24000, x.shape[0], encode) for c, x in zip(clips, feats["mel"], strict=True)]
    idx = np.arange(len(clips))
    tr, te = idx[::2], idx[1::2]
    y_tr = np.concatenate([targets[i] for i in tr])
    y_te = np.concatenate([targets[i] for i in te])
    mu, sd = y_tr.mean(axis=0), y_tr.std(axis=0) + 1e-6
    y_tr, y_te = (y_tr - mu) / sd, (y_te - mu) / sd

    def score(pred: np.ndarray) -> dict[str, float]:
        cos = (pred * y_te).sum(1) / (np.linalg.norm(pred, axis=1) * np.linalg.norm(y_te, axis=1) + 1e-9)
        r2 = 1.0 - float(((pred - y_te) ** 2).sum()) / float(((y_te - y_te.mean(axis=0)) ** 2).sum())
        return {"cosine": float(cos.mean()), "r2": r2}

    out = {"chance": score(np.repeat(y_tr.mean(axis=0, keepdims=True), y_te.shape[0], axis=0))}
    for name in ("mel", "h~", "Z_q"):
        x_tr = np.concatenate([_context(feats[name][i]) for i in tr])
        x_te = np.concatenate([_context(feats[name][i]) for i in te])
        m, s = x_tr.mean(axis=0), x_tr.std(axis=0) + 1e-6
        reg = RidgeCV(alphas=(1.0, 10.0, 100.0, 1e3, 1e4, 1e5)).fit((x_tr - m) / s, y_tr)
        out[name] = score(reg.predict((x_te - m) / s))
    return out


@torch.no_grad()
def predictor_pitch(model: EntangleCodec, clips: Sequence[Clip], feats: Features | None = None,
                    targets: list[np.ndarray] | None = None) -> dict[str, float] | None:
    """Voicing accuracy / F1 and mean absolute F0 error (cents) of the codec's own pitch predictor.

    It reads the token vectors ``Z_q`` (``decoder.pitch_cond`` models; ``None`` for the others), the
    contour the decoder and the pulse phase use at decode time, and is scored on every clip's frames
    against the probes' targets (WORLD DIO + StoneMask on the clip). Nothing is fitted here, so the
    number is comparable across checkpoints on the same clips: the "pitch precision in the tokens"
    of ``reports/codec-diagnosis.md``. ``feats`` / ``targets`` as in :func:`pitch_probes`.
    """
    from .metrics import vuv_agreement

    predictor = model.pitch
    if predictor is None:
        return None
    zq = (feats if feats is not None else features(model.eval(), clips))["Z_q"]
    targets = targets if targets is not None else _frame_targets(clips, [x.shape[0] for x in zq])
    pred_v, pred_f, ref = [], [], []
    for z, f0 in zip(zq, targets, strict=True):
        logit, octaves = predictor.predict(torch.from_numpy(z)[None])
        pred_v.append(logit[0].numpy() > 0)
        pred_f.append(octaves[0].numpy())
        ref.append(f0)
    pv, po, f0 = np.concatenate(pred_v), np.concatenate(pred_f), np.concatenate(ref)
    voiced = f0 > 0
    err = np.abs(po[voiced] - np.log2(np.maximum(f0[voiced], 1.0) / F0_REFERENCE_HZ)) * 1200
    return {"vuv_acc": float((pv == voiced).mean()), "vuv_f1": vuv_agreement(voiced, pv),
            "f0_cents_mean": float(err.mean()) if err.size else float("nan"),
            "f0_cents_median": float(np.median(err)) if err.size else float("nan"),
            "voiced_frames": float(voiced.sum())}


@torch.no_grad()
def _reconstruct_continuous(model: EntangleCodec, wav: np.ndarray, steps: int, guidance: float, seed: int) -> np.ndarray:
    """Decode from the continuous ``h~`` instead of the tokens (the ``quantizer.bypass`` control), one window."""
    mel = _mel(model, wav)
    h = model.quantizer.project(model.encoder(mel).frames)
    noise = torch.randn(mel.shape, generator=torch.Generator().manual_seed(seed))
    out = model.decoder.sample(h, None, steps, guidance, noise, model.pitch_features(h, None))
    flen = torch.tensor([mel.shape[-1]])
    return model._vocode(model.frontend.denormalize(out), flen)[0].numpy()


def decode_pitch(model: EntangleCodec, clips: Sequence[Clip], settings: Sequence[tuple[int, float]] = ((1, 1.0),),
                 seed: int = 0, continuous: bool = False) -> dict[str, dict[str, float]]:
    """For each ``(steps, guidance)``: mean V/UV F1, F0 RMSE / correlation, log-mel L1 of the reconstruction.

    The reconstruction is decoded to a waveform with the model's vocoder; F0 is tracked on both
    waveforms. ``continuous`` decodes from ``h~`` (bypass control; clips must fit one window).
    """
    from .metrics import log_mel_l1, pitch_accuracy, stoi

    m = model.eval()
    out: dict[str, dict[str, float]] = {}
    for steps, guidance in settings:
        rows = []
        for c in clips:
            torch.manual_seed(seed)
            if continuous:
                rec = _reconstruct_continuous(m, c.wav, steps, guidance, seed)
            else:
                tokens = m.encode(torch.from_numpy(c.wav), 24000)
                rec = m.decode(tokens, steps=steps, guidance=guidance).wav[0].numpy()
            n = min(rec.size, c.wav.size)
            pitch = pitch_accuracy(c.wav[:n], rec[:n], 24000, min_frames=0)
            st = {"vuv_f1": pitch.vuv_f1, "f0_rmse_cents": pitch.rmse_cents, "f0_corr": pitch.correlation,
                  "voiced_both": float(pitch.frames)}
            st["mel_l1"] = log_mel_l1(c.wav[:n], rec[:n], 24000)
            st["stoi"] = stoi(c.wav[:n], rec[:n], 24000)
            rows.append(st)
        out[f"steps={steps} guidance={guidance:g}"] = {
            k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]
        }
    return out


def _table(rows: dict[str, dict[str, float]], cols: Sequence[str]) -> str:
    lines = ["| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, r in rows.items():
        cells = [f"{r[c]:.4g}" if c in r and r[c] == r[c] else "–" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_diagnosis(
    checkpoint: str | Path,
    manifest: str | Path,
    split: str,
    out: str | Path,
    max_clips: int = 24,
    settings: Sequence[tuple[int, float]] = ((1, 1.0), (8, 1.0), (32, 3.0)),
    command: str = "",
    teacher: str | None = None,
) -> Path:
    """Run the measurements on one checkpoint and write ``OUT.md`` + ``OUT.json`` (the semantic probes
    only with a ``teacher``: a packaged Whisper model name).

    Returns the markdown path.
    """
    model = load_codec(checkpoint).model
    clips = speech_clips(manifest, split, max_clips=max_clips)
    batch = clips[:8]
    captions = [c.caption for c in batch]
    grads = gradient_norms(model, batch, captions if all(captions) else None)  # type: ignore[arg-type]
    feats = features(model, clips)  # encoded once for the three measurements that read them
    targets = _frame_targets(clips, [x.shape[0] for x in feats["mel"]])
    probes = pitch_probes(model, clips, feats=feats, targets=targets)
    predictor = predictor_pitch(model, clips, feats=feats, targets=targets)
    semantic = semantic_probes(model, clips, teacher, feats=feats) if teacher else None
    decode = decode_pitch(model, clips, settings, continuous=model.config.quantizer.bypass)
    result = {"checkpoint": str(checkpoint), "manifest": str(manifest), "split": split, "clips": len(clips),
              "gradients": grads, "probes": probes, "predictor": predictor, "semantic": semantic,
              "decode": decode}
    md = [
        f"# Codec diagnosis: `{checkpoint}`",
        "",
        f"{len(clips)} speech clips of split `{split}` of `{manifest}`. Produced by:",
        "",
        "```",
        command or f"entanglecodec eval diagnose {checkpoint} -m {manifest} --split {split} -o {out}",
        "```",
        "",
        "## Gradient each loss term sends into the encoder (one batch of 8 crops, training mode)",
        "",
        _table(grads, ["loss", "encoder_grad_norm", "h_tilde_grad_norm"]),
        "",
        "## Pitch probes (fit on half the clips, scored on the other half)",
        "",
        "Voicing accuracy and mean absolute log-F0 error in cents on voiced frames; F0 targets from WORLD DIO.",
        "",
        _table(probes, ["vuv_acc_linear", "vuv_acc_mlp", "f0_cents_linear", "f0_cents_mlp"]),
        "",
        *([
            "## The codec's own pitch predictor on `Z_q` (every clip, same targets; what decoding reads)",
            "",
            _table({"predictor": predictor}, ["vuv_acc", "vuv_f1", "f0_cents_mean", "f0_cents_median", "voiced_frames"]),
            "",
        ] if predictor is not None else []),
        *([
            f"## What is said: ridge probes to Whisper-{teacher} encoder frames (+-2 frames of context)",
            "",
            "Fit on half the clips, scored on the other half: mean cosine and R^2 of the standardised teacher frames.",
            "",
            _table(semantic, ["cosine", "r2"]),
            "",
        ] if semantic is not None else []),
        "## Decoded speech vs Euler steps and guidance (through the bundled vocoder)",
        "",
        _table(decode, ["vuv_f1", "f0_rmse_cents", "f0_corr", "mel_l1", "stoi"]),
        "",
    ]
    paths = report_paths(out, {"markdown": ".md", "json": ".json"})
    write_report(paths, lambda: "\n".join(md), result)
    return paths["markdown"]
