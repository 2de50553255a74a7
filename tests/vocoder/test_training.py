"""Vocoder training recipe: a few steps of the tiny recipe, exact resume, export, CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from entanglecodec.config import ConfigError
from entanglecodec.training.vocoder_recipe import VocoderRecipe, lr_lambda, migrate_legacy_recipe
from entanglecodec.training.vocoder_run import export_vocoder, train_vocoder
from entanglecodec.vocoder.model import Vocoder


def _metric(run: Path, key: str) -> list[tuple[int, float]]:
    rows = [r for f in sorted((run / "logs").glob("**/metrics.csv")) for r in csv.DictReader(f.open())]
    return [(int(float(r["train/step"])), float(r[key])) for r in rows if r.get(key) not in (None, "")]


def test_recipe_parsing(tiny_recipe: Path, tmp_path: Path) -> None:
    r = VocoderRecipe.from_yaml(tiny_recipe)
    assert r.model_config.dim == 32 and r.trainer.max_steps == 12
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: {max_stepz: 3}\n")
    with pytest.raises(ConfigError, match="max_stepz"):
        VocoderRecipe.from_yaml(bad)
    bad.write_text("model: {preset: tiny, overrides: {dimm: 3}}\n")
    with pytest.raises(ConfigError, match="model.overrides.dimm"):
        VocoderRecipe.from_yaml(bad)
    bad.write_text("trainer: {ckpt_every: 4, val_every: 6}\n")
    with pytest.raises(ConfigError, match="multiple of trainer.ckpt_every"):
        VocoderRecipe.from_yaml(bad)
    with pytest.raises(ConfigError, match="not found"):
        VocoderRecipe.from_yaml(tmp_path / "none.yaml")
    # the codec recipes' loader: base: chains and --set overrides with the same key names
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {tiny_recipe}\ntrainer: {{max_steps: 5}}\n")
    r2 = VocoderRecipe.from_yaml(child, ["optim.lr=0.5"])
    assert r2.trainer.max_steps == 5 and r2.optim.lr == 0.5 and r2.model_config.dim == 32
    oc = r.optim
    oc.schedule, oc.warmup_steps, oc.min_lr_ratio = "cosine", 10, 0.1
    assert lr_lambda(0, oc, 110) == pytest.approx(0.1) and lr_lambda(10, oc, 110) == pytest.approx(1.0)
    assert lr_lambda(110, oc, 110) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("text", "old", "new"),
    [
        ("train: {max_steps: 3}", "train.max_steps", "trainer.max_steps"),
        ("train: {lambda_mel: 3.0}", "train.lambda_mel", "loss.mel"),
        ("train: {lr_disc: 0.1}", "train.lr_disc", "optim.discriminator_lr"),
        ("data: {manifest: m.jsonl}", "data.manifest", "data.train_manifest"),
        ("model: {preset: tiny, n_fft: 960}", "model.n_fft", "model.overrides.n_fft"),
    ],
)
def test_old_recipe_keys_are_refused_naming_the_new_key(tmp_path: Path, text: str, old: str, new: str) -> None:
    p = tmp_path / "old.yaml"
    p.write_text(text + "\n")
    with pytest.raises(ConfigError) as e:
        VocoderRecipe.from_yaml(p)
    msg = str(e.value)
    assert "\n" not in msg and f"'{old}' is now '{new}'" in msg and str(p) in msg


def test_recipes_of_old_checkpoints_are_migrated() -> None:
    """The recipe dict stored in a pre-layout checkpoint (every old key) builds the same recipe."""
    old = {
        "name": "vocoder-tiny",
        "model": {**VocoderRecipe().model_config.to_dict(), "dim": 48},
        "data": {"manifest": "m.jsonl", "valid_manifest": None, "train_split": "train", "valid_split": "valid",
                 "crop_seconds": 0.2, "valid_crop_seconds": 0.5, "batch_size": 4, "num_workers": 0,
                 "domain_weights": None, "seed": 3},
        "train": {"max_steps": 12, "lr": 3e-3, "lr_disc": 1e-3, "betas": [0.8, 0.9], "weight_decay": 0.01,
                  "warmup_steps": 0, "schedule": "constant", "min_lr_ratio": 0.1, "gan_start_step": 8,
                  "lambda_mel": 45.0, "lambda_stft": 0.0, "lambda_adv": 1.0, "lambda_fm": 2.0, "mrd_weight": 1.0,
                  "gan_batch_size": 2, "grad_clip": 10.0, "steps_per_epoch": 4, "val_every_epochs": 2,
                  "val_batches": 1, "sample_every_steps": 8, "num_samples": 1, "init_from": None,
                  "log_every_steps": 2, "precision": "32-true", "threads": None, "accelerator": "cpu",
                  "devices": 1, "strategy": "auto", "num_nodes": 1, "keep_checkpoints": 2},
        "discriminator": {"periods": [2, 3], "mpd_channels": [4, 8], "mrd_resolutions": [[256, 64]], "mrd_channels": 4},
    }
    new, renamed = migrate_legacy_recipe(old)
    assert renamed
    r = VocoderRecipe.from_dict(new)
    assert r.model_config.dim == 48 and r.data.train_manifest == ["m.jsonl"] and r.trainer.seed == 3
    assert r.trainer.ckpt_every == 4 and r.trainer.val_every == 8 and r.data.valid_batches == 1
    assert r.optim.discriminator_lr == 1e-3 and r.loss.gan_start_step == 8 and r.trainer.plot_every == 8
    assert migrate_legacy_recipe(r.to_dict()) == (r.to_dict(), [])


@pytest.mark.slow
def test_train_resume_export(tiny_recipe: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    # 1) the reference run: 12 steps straight through (GAN from step 8)
    full = train_vocoder(tiny_recipe, run_dir=tmp_path / "full")
    mel = _metric(full, "train/mel_loss")
    assert mel[-1][0] == 12
    first = sum(v for _, v in mel[:2]) / 2
    last = sum(v for _, v in mel[-2:]) / 2
    assert last < first, f"mel loss did not go down: {mel}"
    assert _metric(full, "train/d_loss"), "the discriminators never trained"
    assert (full / "checkpoints" / "last.ckpt").is_file()
    assert (full / "best" / "model.safetensors").is_file()
    samples = sorted((full / "samples").glob("step-*"))
    assert samples and (samples[0] / "0_gen.wav").is_file() and (samples[0] / "mels.png").is_file()

    # 2) the same recipe stopped at step 8, then resumed to 12: identical weights
    part = tmp_path / "part"
    train_vocoder(tiny_recipe, run_dir=part, max_steps=8)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_vocoder(tiny_recipe, run_dir=tmp_path / "nothing", resume=True)
    with pytest.raises(FileExistsError, match="--resume"):  # a fresh start never overwrites a run
        train_vocoder(tiny_recipe, run_dir=part)
    # A last.ckpt written by a stop before the first periodic save carries no last_model_path; the
    # resumed run must still overwrite last.ckpt (not write last-v1.ckpt beside it, which the next
    # --resume would never read).
    last = part / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    for cb in state["callbacks"].values():
        cb["last_model_path"] = ""
    torch.save(state, last)
    train_vocoder(tiny_recipe, run_dir=part, resume=True)
    assert _metric(part, "train/mel_loss")[-1][0] == 12
    assert sorted(p.name for p in (part / "checkpoints").glob("last*")) == ["last.ckpt"]
    step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert step == torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    a = export_vocoder(full / "checkpoints" / "last.ckpt", tmp_path / "export-a")
    b = export_vocoder(part / "checkpoints" / "last.ckpt", tmp_path / "export-b")
    va, vb = Vocoder.from_pretrained(a), Vocoder.from_pretrained(b)
    for (k, x), (_, y) in zip(va.state_dict().items(), vb.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5, msg=f"resumed weights differ at {k}")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_vocoder(full, tmp_path / "export-a")
    assert export_vocoder(full, tmp_path / "export-a", overwrite=True) == tmp_path / "export-a"


def test_cli_train_and_export_errors(tmp_path: Path) -> None:
    import typer

    from entanglecodec.cli import train_vocoder

    app = typer.Typer()
    app.add_typer(train_vocoder.app)

    @app.callback()
    def _root() -> None:
        pass

    runner = CliRunner()
    res = runner.invoke(app, ["vocoder", "--config", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 1 and "not found" in res.output
    res = runner.invoke(app, ["vocoder-export", str(tmp_path / "nothing"), "-o", str(tmp_path / "o")])
    assert res.exit_code == 1 and "nothing" in res.output


def test_warm_start_copies_matching_tensors_only(tmp_path: Path) -> None:
    from entanglecodec.training.vocoder_run import warm_start
    from entanglecodec.vocoder.config import VocoderConfig

    torch.manual_seed(0)
    src = Vocoder(VocoderConfig.preset("tiny")).save_pretrained(tmp_path / "src")
    cfg = VocoderConfig.preset("tiny")
    cfg.n_fft = 960  # a different head: its projection cannot be copied
    torch.manual_seed(1)
    dst = Vocoder(cfg)
    head_before = {k: v.clone() for k, v in dst.state_dict().items() if k.startswith("head.")}
    copied, kept = warm_start(dst, src)
    ref = Vocoder.from_pretrained(src).state_dict()
    assert copied and all(torch.equal(dst.state_dict()[k], ref[k]) for k in copied)
    assert any(k.startswith("head.proj") for k in kept) and not any(k.startswith("head.proj") for k in copied)
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in head_before.items() if k in kept)
    with pytest.raises(FileNotFoundError):
        warm_start(dst, tmp_path / "missing")


@pytest.mark.slow
def test_best_restarts_when_the_validation_set_changes(tiny_recipe: Path, tmp_path: Path, tiny_corpus: Path) -> None:
    """A resume on another manifest must not compare new validation losses with the old set's best."""
    import shutil

    torch.set_num_threads(1)
    run = tmp_path / "run"
    train_vocoder(tiny_recipe, run_dir=run, max_steps=4)

    def unbeatable_best() -> None:  # as if the old validation set had been much easier
        last = run / "checkpoints" / "last.ckpt"
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        ckpt["vocoder_best_val"] = 0.0
        torch.save(ckpt, last)

    def best_step() -> int:
        return int((run / "best" / "TRAINING_STATE.txt").read_text().split()[1])

    unbeatable_best()
    train_vocoder(tiny_recipe, run_dir=run, resume=True, max_steps=8)  # same data: best stays put
    assert best_step() <= 4
    # another corpus (a copy elsewhere is another validation set): best restarts
    other = tmp_path / "other"
    shutil.copytree(tiny_corpus.parent, other)
    unbeatable_best()
    train_vocoder(tiny_recipe, run_dir=run, resume=True, max_steps=12, manifest=str(other / "manifest.jsonl"))
    assert best_step() > 8
    assert not list((run / "checkpoints").glob("best-v*.ckpt"))  # one best.ckpt, replaced in place
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["vocoder_step"] > 8


def test_training_on_a_codecs_decoded_mels(tiny_recipe: Path, tmp_path: Path) -> None:
    """``data.input_codec``: a share of the crops gets the frozen codec's decoded mel of the same audio
    as input (the loss still compares with the original); the codec stays out of the checkpoint."""
    from entanglecodec import EntangleCodec, EntangleCodecConfig
    from entanglecodec.training.vocoder_module import VocoderModule

    torch.manual_seed(0)
    codec_dir = EntangleCodec(EntangleCodecConfig.preset("tiny"), build_text_encoder=False).save_pretrained(tmp_path / "codec")
    recipe = VocoderRecipe.from_yaml(tiny_recipe, [f"data.input_codec={codec_dir}", "data.input_codec_fraction=0.5",
                                                   "trainer.max_steps=3"])
    module = VocoderModule(recipe)
    wav = torch.randn(4, 24000) * 0.1
    lengths = torch.full((4,), 24000)
    own = module.mel.log_mel(wav, lengths)
    given = module._input_mel(wav, lengths, own, 0.5, seed=0)
    codec = EntangleCodec.from_pretrained(codec_dir, build_text_encoder=False)
    want, _ = codec.decode_log_mel(codec.encode(wav[:2], 24000), seed=0, precision="float32")
    torch.testing.assert_close(given[:2], want)  # the first half: the codec's reconstruction
    torch.testing.assert_close(given[2:], own[2:])  # the rest: their own mel
    run = train_vocoder(tiny_recipe, run_dir=tmp_path / "run", overrides=[f"data.input_codec={codec_dir}", "trainer.max_steps=4"])
    assert _metric(run, "train/mel_loss")[-1][0] == 4 and (run / "best" / "model.safetensors").is_file()
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert not any(k.startswith(("_codec", "codec.")) for k in state)
    with pytest.raises(ConfigError, match="input_codec_fraction"):
        VocoderRecipe.from_yaml(tiny_recipe, ["data.input_codec_fraction=0"])


def test_a_wall_clock_budget_stops_the_run_with_a_checkpoint(tiny_recipe: Path, tmp_path: Path) -> None:
    """``trainer.max_time`` (the GPU script's budget) ends a vocoder run early, with last.ckpt."""
    run = train_vocoder(tiny_recipe, run_dir=tmp_path / "run",
                        overrides=["trainer.max_steps=400", "trainer.ckpt_every=50", "trainer.val_every=50",
                                   "trainer.max_time=00:00:00:02"])
    step = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert 0 < step < 400, step  # without the budget: all 400 steps
