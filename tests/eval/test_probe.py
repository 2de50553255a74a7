"""Linear probes, targets, protocols and retrieval (``entanglecodec.eval.probe``).

The end-to-end corpus: 36 one-second tones, 3 pitch classes x 2 timbres (sine-like and
bright odd-harmonic), 4 train + 2 test clips per combination, with corpus-style attributes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from entanglecodec.eval.probe.measure import (
    TARGETS,
    ProbeError,
    code_histogram,
    model_features,
    parse_target,
    plan_target,
    pool,
    resolve_targets,
    retrieval_metrics,
    select_rows,
)
from entanglecodec.eval.probe.report import write_probe_report
from entanglecodec.eval.probe.run import ModelSpec, ProbeResults, run_probes

SR = 24000
PITCHES = {"low": 220.0, "normal": 440.0, "high": 880.0}
TIMBRES = {"soft": (0, "female"), "bright": (40, "male")}  # GM program, gender label


def _tone(f0: float, timbre: str, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(SR) / SR
    f = f0 * (1 + rng.uniform(-0.02, 0.02))
    harmonics = [1] if timbre == "soft" else [1, 3, 5, 7]
    x = sum(np.sin(2 * np.pi * h * f * t + rng.uniform(0, 6.28)) / h for h in harmonics)
    x = x * np.minimum(1.0, 20 * t) * np.minimum(1.0, 20 * (1 - t))
    x = x + 0.003 * rng.standard_normal(t.size)
    return (0.3 * rng.uniform(0.6, 1.0) * x / np.max(np.abs(x))).astype(np.float32)


@pytest.fixture(scope="module")
def tone_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for pitch, f0 in PITCHES.items():
        for timbre, (program, gender) in TIMBRES.items():
            for rep in range(6):
                split = "train" if rep < 4 else "test"
                name = f"{pitch}-{timbre}-{rep}"
                sf.write(root / f"{name}.wav", _tone(f0, timbre, rng), SR, subtype="PCM_16")
                rows.append({
                    "id": name, "audio": f"{name}.wav", "domain": "speech", "split": split,
                    "caption": f"a {pitch} {timbre} tone, take {rep}",
                    "attributes": {
                        "speaker": {"id": f"tone:{timbre}", "gender": gender, "pitch": pitch},
                        "music": {"programs": [program], "roles": ["melody"]},
                        "take": f"t{rep % 2}" if split == "train" else f"u{rep % 2}",
                    },
                })  # fmt: skip
    path = root / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from entanglecodec import EntangleCodecConfig
    from entanglecodec.codec.model import EntangleCodec

    torch.manual_seed(0)
    return EntangleCodec(EntangleCodecConfig.preset("tiny")).save_pretrained(
        tmp_path_factory.mktemp("ckpt") / "tiny"
    )


@pytest.fixture(scope="module")
def results(tone_manifest: Path, tiny_ckpt: Path) -> ProbeResults:
    torch.set_num_threads(1)
    return run_probes(
        tone_manifest,
        [ModelSpec("tiny", checkpoint=str(tiny_ckpt))],
        features=["tokens", "tokens-hist", "prequant", "frames", "logmel", "kmeans"],
        targets=resolve_targets(["pitch", "speaker", "gender", "instrument", "reverb"], ["take=take"]),
    )


# ------------------------------------------------------------------ targets
def test_builtin_targets_read_corpus_attributes() -> None:
    row = {
        "domain": "mixture",
        "attributes": {
            "speaker": {"id": "flite:awb", "gender": "male", "words_per_second": 4.1},
            "music": {
                "programs": [45, 24],
                "roles": ["chords", "melody"],
                "tempo_bpm": 122.0,
                "mode": "minor",
            },
            "events": [{"label": "dog bark", "level_dbfs": -30.0}, {"label": "chime", "level_dbfs": -12.0}],
            "environment": {"reverb": "strong", "noise_type": None},
        },
    }
    got = {name: t.extract(row) for name, t in TARGETS.items()}
    assert got["domain"] == "mixture"
    assert got["speaker"] == "flite:awb" and got["gender"] == "male"
    assert got["rate"] == "fast"  # from words_per_second when no rate label
    assert got["instrument"] == "guitar"  # program 24 plays the melody
    assert got["tempo"] == "moderate (100-130 bpm)"
    assert got["mode"] == "minor" and got["event"] == "chime"
    assert got["reverb"] == "strong" and got["noise"] == "none"
    assert got["pitch"] is None and got["language"] is None
    estimated = {"attributes": {"music": {"tempo_bpm": 90.0, "tempo_estimated": True}}}
    assert TARGETS["tempo"].extract(estimated) is None
    assert TARGETS["noise"].extract({"attributes": {}}) is None


def test_custom_targets_and_errors() -> None:
    t = parse_target("key=music.key")
    assert t.extract({"attributes": {"music": {"key": "Bb"}}}) == "Bb"
    assert t.extract({"attributes": {}}) is None
    for bad in ("key", "=music.key", "key="):
        with pytest.raises(ProbeError, match="NAME=dotted.path"):
            parse_target(bad)
    with pytest.raises(ProbeError, match="unknown target"):
        resolve_targets(["pitch", "colour"])
    with pytest.raises(ProbeError, match="duplicate"):
        resolve_targets(["pitch"], ["pitch=speaker.pitch"])


def test_plan_protocols() -> None:
    t = parse_target("c=c")

    def rows(train: list[str], test: list[str]) -> list[dict[str, Any]]:
        return [{"split": "train", "attributes": {"c": c}} for c in train] + [
            {"split": "test", "attributes": {"c": c}} for c in test
        ]

    p = plan_target(t, rows(["a", "b"] * 4, ["a", "b", "a", "b", "z"]))
    assert p.protocol == "held-out" and len(p.test) == 4 and p.dropped == 1
    assert p.classes == ["a", "b"] and p.chance == pytest.approx(0.5)
    p = plan_target(t, rows(["a", "b"] * 4, ["x", "y"] * 5))  # disjoint classes, as held-out voices
    assert p.protocol == "within-test" and len(p.train) == len(p.test) == 5
    assert set(p.train).isdisjoint(p.test)
    assert all(p.labels[i] in ("x", "y") for i in p.train + p.test)
    assert "stratified" in p.reason
    p = plan_target(t, rows(["a"] * 8, ["x", "y"]))
    assert p.protocol == "skipped" and "too few" in p.reason and np.isnan(p.chance)


def test_select_rows_spreads_domains_and_is_seeded() -> None:
    rows = [{"id": i, "domain": "speech" if i < 8 else "music"} for i in range(10)]
    a = select_rows(rows, 4, seed=1)
    assert len(a) == 4 and sum(r["domain"] == "music" for r in a) == 2
    assert a == select_rows(rows, 4, seed=1)
    assert select_rows(rows, None) == rows


# ------------------------------------------------------------------ features and metrics
def test_pool_and_histogram() -> None:
    x = np.array([[1.0, 2.0], [3.0, 2.0]])
    np.testing.assert_allclose(pool(x), [2.0, 2.0, 1.0, 0.0])
    np.testing.assert_allclose(pool(x, "mean"), [2.0, 2.0])
    np.testing.assert_allclose(code_histogram(np.array([0, 2, 2, 3]), 4), [0.25, 0, 0.5, 0.25])
    with pytest.raises(ProbeError):
        pool(np.zeros((0, 3)))


def test_retrieval_metrics() -> None:
    rng = np.random.default_rng(0)
    e = rng.standard_normal((10, 8))
    caps = [f"c{i}" for i in range(10)]
    perfect = retrieval_metrics(e, e, caps)
    assert perfect["a2t_r1"] == perfect["t2a_r1"] == 1.0
    r = retrieval_metrics(e, rng.standard_normal((10, 8)), caps)
    for d in ("a2t", "t2a"):
        assert 0.0 <= r[f"{d}_r1"] <= r[f"{d}_r5"] <= 1.0
    # two identical clips share a caption: their tie is not a miss, either audio is a correct answer
    dup = e.copy()
    dup[1] = e[0]
    caps2 = ["same", "same"] + caps[2:]
    r2 = retrieval_metrics(dup, dup, caps2)
    assert r2["a2t_r1"] == r2["t2a_r1"] == 1.0
    assert retrieval_metrics(dup, dup, caps)["a2t_r1"] == 0.8  # distinct captions: the tie counts against
    with pytest.raises(ProbeError, match="retrieval"):
        retrieval_metrics(e, e[:5], caps)


def test_model_features_match_public_api(tone_manifest: Path, tiny_ckpt: Path) -> None:
    from entanglecodec.audio import load_audio
    from entanglecodec.codec.model import EntangleCodec

    model = EntangleCodec.from_pretrained(tiny_ckpt)
    wavs = [load_audio(tone_manifest.parent / f"{n}.wav", SR)[0] for n in ("low-soft-0", "high-bright-5")]
    wavs[1] = wavs[1][: SR // 2]  # different lengths: padded batch
    f = model_features(model, wavs, ["tokens", "tokens-hist"], pooling="mean", with_audio_embedding=True)
    for i, w in enumerate(wavs):
        codes = model.encode(torch.from_numpy(w), SR).codes
        z = model.codes_to_embeddings(codes)[0].double().numpy()
        np.testing.assert_allclose(f["tokens"][i], z.mean(0), atol=1e-6)
        np.testing.assert_allclose(f["tokens-hist"][i], code_histogram(codes[0].numpy(), model.codebook_size))
        emb = model.embed_audio(torch.from_numpy(w), SR)[0].double().numpy()
        np.testing.assert_allclose(f["audio_embedding"][i], emb, atol=1e-5)


# ------------------------------------------------------------------ end to end
def test_logmel_probe_finds_pitch(results: ProbeResults) -> None:
    pitch = results.scores["logmel"]["pitch"]
    assert pitch["chance"] == pytest.approx(1 / 3)
    assert pitch["accuracy"] >= 0.8, pitch
    assert results.scores["logmel"]["speaker"]["accuracy"] >= 0.8  # timbre


def test_every_feature_set_and_target_is_scored(results: ProbeResults) -> None:
    assert set(results.feature_rows) == {
        "tokens · tiny", "tokens-hist · tiny", "prequant · tiny", "frames · tiny", "logmel", "kmeans (K=64)",
    }  # fmt: skip
    protocols = {p.target: p.protocol for p in results.plans}
    assert protocols == {
        "pitch": "held-out", "speaker": "held-out", "gender": "held-out", "instrument": "held-out",
        "reverb": "skipped", "take": "within-test",
    }  # fmt: skip
    for row in results.feature_rows:
        assert set(results.scores[row]) == {"pitch", "speaker", "gender", "instrument", "take"}
        for s in results.scores[row].values():
            assert 0.0 <= s["accuracy"] <= 1.0 and 0.0 <= s["chance"] <= 1.0
    assert results.clips == {"train": 24, "test": 12}
    r = results.retrieval["tiny"]
    assert r["n"] == 12
    for d in ("a2t", "t2a"):
        assert 0.0 <= r[f"{d}_r1"] <= r[f"{d}_r5"] <= 1.0


def test_report_files(results: ProbeResults, tmp_path: Path) -> None:
    paths = write_probe_report(results, tmp_path / "probe", command="entanglecodec eval probe ...")
    md = paths["markdown"].read_text()
    assert "| logmel |" in md and "*chance*" in md and "within-test" in md and "R@1" in md
    assert paths["plot"].stat().st_size > 1000
    doc = json.loads(paths["json"].read_text())
    assert doc["targets"]["reverb"]["protocol"] == "skipped"
    assert doc["targets"]["pitch"]["balanced_chance"] == pytest.approx(1 / 3)
    assert doc["settings"]["timings_s"]["log-mel"] >= 0
    assert doc["scores"]["logmel"]["pitch"]["accuracy"] == results.scores["logmel"]["pitch"]["accuracy"]


def test_run_probes_rejects_bad_requests(tone_manifest: Path) -> None:
    with pytest.raises(ProbeError, match="need a model"):
        run_probes(tone_manifest, [], features=["tokens"])
    with pytest.raises(ProbeError, match="unknown feature"):
        run_probes(tone_manifest, [], features=["mfcc"])
    with pytest.raises(ProbeError, match="must differ"):
        run_probes(tone_manifest, [], features=["logmel"], split_test="train")


def test_cli_probe(tone_manifest: Path, tmp_path: Path) -> None:
    from entanglecodec.cli.eval import app

    runner = CliRunner()
    out = tmp_path / "rep" / "probe"
    res = runner.invoke(app, [
        "probe", "--manifest", str(tone_manifest), "--random-preset", "tiny", "--no-bundled",
        "--features", "tokens,logmel", "--targets", "pitch,gender", "--max-clips", "18", "--out", str(out),
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "tiny random init (untrained)" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").exists() and out.with_suffix(".json").exists()
    bad = runner.invoke(
        app, ["probe", "--manifest", str(tone_manifest), "--targets", "colour", "--no-bundled"]
    )
    assert bad.exit_code == 2 and "unknown target" in bad.output
    missing = runner.invoke(app, ["probe", "--manifest", str(tmp_path / "nope.jsonl"), "--no-bundled"])
    assert missing.exit_code == 2 and "not found" in missing.output
