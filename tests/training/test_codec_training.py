"""Stage 1 / discriminator / stage 2 recipes, resume, NaN handling, export, config errors."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from entanglecodec import ConfigError, EntangleCodec
from entanglecodec.training.nan_policy import NonFiniteLossError
from entanglecodec.training.recipe import load_recipe
from entanglecodec.training.run import export_run, load_run, run_training

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"


def recipe(corpus: Path, *extra: str, path: Path = TINY):
    return load_recipe(path, [f"data.train_manifest={corpus}", *extra])


def metrics(run: Path, segment: str = "") -> list[dict[str, str]]:
    """The CSV log of a run (``segment``: ``resume-N`` for a resumed segment's log)."""
    with open(run / "logs" / segment / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_stage1_loss_goes_down_and_exports(corpus, tmp_path):
    run = tmp_path / "run"
    run_training(recipe(corpus, "trainer.max_steps=40", "trainer.val_every=10", "trainer.keep_best=val/loss"), run,
                 enable_progress_bar=False)
    rows = metrics(run)
    vals = [(float(r["val/loss"]), int(r["step"])) for r in rows if r.get("val/loss")]
    assert len(vals) == 4  # best.ckpt holds the validation with the lowest loss
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert best["global_step"] == min(vals)[1] + 1
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 40
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8
    usage = [float(r["train/usage"]) for r in rows if r.get("train/usage")]
    active = [float(r["train/active_codes"]) for r in rows if r.get("train/active_codes")]
    assert usage[-1] > 0 and active[-1] >= usage[-1]
    assert any(r.get("train/dead_codes") for r in rows) and any(r.get("train/grad_norm") for r in rows)
    assert list((run / "plots").glob("val_mel_step*.png"))
    assert (run / "tb").is_dir() and (run / "mel_stats.json").is_file()
    from entanglecodec.training.report import write_training_report

    md = write_training_report(run, tmp_path / "rep" / "run.md")
    assert "train/active_codes" in md.read_text() and md.with_suffix(".png").is_file()
    out = export_run(run, tmp_path / "export")
    model = EntangleCodec.from_pretrained(out)
    codes = model.encode(torch.randn(24000) * 0.1, 24000).codes
    assert codes.shape == (1, 50)
    assert float(model.frontend.mel_std.mean()) != 1.0  # statistics travelled with the export
    with pytest.raises(FileExistsError):
        export_run(run, out)
    with pytest.raises(FileExistsError, match="--resume"):
        run_training(recipe(corpus), run, enable_progress_bar=False)


def test_resume_continues_exactly(corpus, tmp_path):
    full = tmp_path / "full"
    run_training(recipe(corpus, "trainer.max_steps=20"), full, enable_progress_bar=False)
    part = tmp_path / "part"
    run_training(recipe(corpus, "trainer.max_steps=10"), part, enable_progress_bar=False)
    mid = torch.load(part / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert mid["global_step"] == 10
    run_training(recipe(corpus, "trainer.max_steps=20"), part, resume=True, enable_progress_bar=False)
    a = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(part / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == 20
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert sa.keys() == sb.keys()
    assert all(int(sa[k]["step"]) == int(sb[k]["step"]) == 20 for k in sa)
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], msg=k)
    for k in sa:
        torch.testing.assert_close(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"])
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        run_training(recipe(corpus), tmp_path / "empty", resume=True, enable_progress_bar=False)


def test_stage2_changes_only_decoder(corpus, tmp_path):
    s1 = tmp_path / "s1"
    run_training(recipe(corpus, "trainer.max_steps=10"), s1, enable_progress_bar=False)
    s1_export = export_run(s1, tmp_path / "s1_export")
    disc_run = tmp_path / "disc"
    run_training(
        recipe(corpus, f"init_from={s1_export}", path=REPO / "configs" / "tiny-disc.yaml"), disc_run,
        enable_progress_bar=False,
    )
    disc_rows = [float(r["train/disc"]) for r in metrics(disc_run) if r.get("train/disc")]
    assert len(disc_rows) == 10
    disc_export = export_run(disc_run, tmp_path / "disc_export")
    s2 = tmp_path / "s2"
    module = run_training(
        recipe(corpus, f"init_from={s1_export}", f"discriminator={disc_export}",
               path=REPO / "configs" / "tiny-stage2.yaml"),
        s2, enable_progress_bar=False,
    )
    assert any(r.get("train/adv") for r in metrics(s2))
    # the trained decoder ran in train mode (condition dropout on), the frozen tokenizer and the
    # frozen critic in eval mode, though the export they came from loads in eval mode
    assert module.model.decoder.training and module.model.decoder.transformer.training
    assert not module.model.encoder.training and not module.model.quantizer.training
    assert module.disc is not None and not module.disc.training
    before = EntangleCodec.from_pretrained(s1_export).state_dict()
    after = module.model.state_dict()
    frozen = [k for k in before if k.split(".")[0] in ("encoder", "quantizer", "audio_proj", "frontend")]
    assert frozen and any(k.startswith("quantizer.vq") for k in frozen)
    for k in frozen:
        assert torch.equal(before[k], after[k]), f"{k} changed in stage 2"
    changed = [k for k in before if k.startswith("decoder.") and not torch.equal(before[k], after[k])]
    assert changed, "stage 2 did not train the decoder"
    disc_before = torch.load(disc_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    for k, v in module.disc.state_dict().items():
        assert torch.equal(v, disc_before["state_dict"][f"disc.{k}"]), f"discriminator {k} moved in stage 2"
    s2_export = export_run(s2, tmp_path / "s2_export")
    full = EntangleCodec.from_pretrained(s2_export)
    assert full.text_encoder is not None and full.embed_text(["a tone"]).shape == (1, 16)

    # loss.adv_critic: joint -- the critic keeps learning; the decoder's terms do not move it, and
    # the frozen encoder/quantizer stay bit-identical.
    s2j = tmp_path / "s2_joint"
    joint = run_training(
        recipe(corpus, f"init_from={s1_export}", f"discriminator={disc_export}", "loss.adv_critic=joint",
               "loss.feature_matching=1.0", path=REPO / "configs" / "tiny-stage2.yaml"),
        s2j, enable_progress_bar=False,
    )
    rows = metrics(s2j)
    assert any(r.get("train/disc") for r in rows) and any(r.get("train/fm") for r in rows)
    moved = [k for k, v in joint.disc.state_dict().items() if not torch.equal(v, disc_before["state_dict"][f"disc.{k}"])]
    assert moved, "the joint critic did not learn"
    assert joint.disc.training and joint.model.decoder.training
    after_j = joint.model.state_dict()
    for k in frozen:
        assert torch.equal(before[k], after_j[k]), f"{k} changed in joint stage 2"


def test_joint_critic_gets_only_its_own_gradient(corpus, tmp_path):
    """The decoder's adversarial term reaches the decoder, never the critic's weights."""
    from entanglecodec.training.codec_module import CodecModule

    s1 = tmp_path / "s1"
    run_training(recipe(corpus, "trainer.max_steps=2"), s1, enable_progress_bar=False)
    s1_export = export_run(s1, tmp_path / "s1_export")
    disc_run = tmp_path / "disc"
    run_training(recipe(corpus, f"init_from={s1_export}", "trainer.max_steps=2",
                        path=REPO / "configs" / "tiny-disc.yaml"), disc_run, enable_progress_bar=False)
    disc_export = export_run(disc_run, tmp_path / "disc_export")
    rec = recipe(corpus, f"init_from={s1_export}", f"discriminator={disc_export}", "loss.adv_critic=joint",
                 path=REPO / "configs" / "tiny-stage2.yaml")
    module = CodecModule(rec.to_dict(), str(tmp_path / "m"))
    real = torch.randn(2, module.model.config.mel.n_mels, 40)
    fake = torch.randn(2, module.model.config.mel.n_mels, 40, requires_grad=True)
    out = module._adversarial(real, fake)
    out["adv"].backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.disc.parameters()), "generator term leaked into the critic"
    out["disc"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.disc.parameters())


def test_nan_loss_stops_with_checkpoint_intact(corpus, tmp_path, monkeypatch):
    import entanglecodec.training.codec_module as codec_module

    orig = codec_module.stage1_losses
    calls = {"n": 0}

    def poisoned(*a, **k):  # noqa: ANN002, ANN003, ANN202
        out = orig(*a, **k)
        calls["n"] += 1
        if calls["n"] > 12:
            out["flow"] = out["flow"] * float("nan")
        return out

    monkeypatch.setattr(codec_module, "stage1_losses", poisoned)
    run = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step"):
        run_training(recipe(corpus, "trainer.max_steps=30", "trainer.val_every=100"), run, enable_progress_bar=False)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 10
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    calls["n"] = 0
    module = run_training(
        recipe(corpus, "trainer.max_steps=15", "trainer.nan_policy=skip", "trainer.max_nan_skips=100",
               "trainer.val_every=100"),
        tmp_path / "skip", enable_progress_bar=False,
    )
    assert module.nan_skips > 0


def test_recipe_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: stage1\noptim: {lrr: 0.1}\n")
    with pytest.raises(ConfigError, match="optim.lrr"):
        load_recipe(bad)
    bad.write_text("stage: stage1\ntrainer: {max_steps: ten}\n")
    with pytest.raises(ConfigError, match="trainer.max_steps"):
        load_recipe(bad)
    bad.write_text("stage: stage1\nmodel: {preset: tiny, overrides: {encoder: {width: 3}}}\n")
    with pytest.raises(ConfigError, match="encoder.width"):
        load_recipe(bad).model.build()
    bad.write_text("stage: stage2\n")
    with pytest.raises(ConfigError, match="init_from"):
        load_recipe(bad)
    with pytest.raises(ConfigError, match="override"):
        load_recipe(TINY, ["nonsense"])
    with pytest.raises(ConfigError, match="trainer.keep_best"):
        load_recipe(TINY, ["trainer.keep_best=loss"])
    assert load_recipe(TINY, ["trainer.keep_best=max:val/sem_cos"]).trainer.best_monitor() == ("val/sem_cos", "max")
    for name in ["paper", "small", "small-disc", "small-stage2", "paper-stage2", "ablation-no-contrastive",
                 "ablation-asr-caption", "ablation-no-stage2", "small-cpu-pitch", "small-cpu-distill"]:
        r = load_recipe(REPO / "configs" / f"{name}.yaml")
        r.model.build()
    assert load_recipe(REPO / "configs" / "ablation-no-contrastive.yaml").loss.contrast == 0.0
    assert load_recipe(REPO / "configs" / "ablation-asr-caption.yaml").data.text_field == "asr_caption"
    assert load_recipe(REPO / "configs" / "paper.yaml").optim.accumulate == 4
    distill = load_recipe(REPO / "configs" / "small-cpu-distill.yaml")
    assert distill.stage == "stage2" and distill.loss.distill > 0 and distill.loss.flow == 0 and distill.loss.adv == 0


def test_overrides_read_exponent_numbers_as_numbers():
    # YAML 1.1 reads "5e-4" (no dot) as a string; a --set value written that way is still a number
    r = load_recipe(TINY, ["optim.lr=5e-4", "optim.weight_decay=1E-2", "trainer.nan_policy=skip"])
    assert r.optim.lr == pytest.approx(5e-4) and r.optim.weight_decay == pytest.approx(1e-2)
    assert r.trainer.nan_policy == "skip"
    with pytest.raises(ConfigError, match="optim.lr"):
        load_recipe(TINY, ["optim.lr=5e-4x"])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "entanglecodec.cli", *args]


def test_sigterm_saves_and_resume_completes(corpus, tmp_path):
    run = tmp_path / "sig"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = _cli("train", "stage1", "-c", str(TINY), "--run-dir", str(run), "--no-progress",
               "--set", f"data.train_manifest={corpus}", "--set", "trainer.max_steps=400",
               "--set", "trainer.ckpt_every=1000", "--set", "trainer.val_every=1000", "--set", "data.num_workers=1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "logs" / "hparams.yaml").exists():
        time.sleep(0.5)
    time.sleep(6)
    # like pkill -f / scancel: every process of the job (main + data worker) gets the signal
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file(), out[-2000:]
    step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert 0 < step < 400
    done = subprocess.run(
        _cli("train", "stage1", "-c", str(TINY), "--run-dir", str(run), "--no-progress", "--resume",
             "--set", f"data.train_manifest={corpus}", "--set", f"trainer.max_steps={step + 5}"),
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == step + 5
    assert sorted(p.name for p in last.parent.glob("last*")) == ["last.ckpt"]  # never a last-v1.ckpt beside it


def test_ddp_two_processes_gloo(corpus, tmp_path):
    run = tmp_path / "ddp"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "entanglecodec.cli", "train", "stage1",
           "-c", str(TINY), "--run-dir", str(run), "--no-progress", "--set", f"data.train_manifest={corpus}",
           "--set", "trainer.devices=2", "--set", "trainer.strategy=ddp", "--set", "trainer.max_steps=6",
           "--set", "data.batch_size=2", "--set", "trainer.val_every=3"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    sums = [(run / f"param_checksum_rank{r}.txt").read_text() for r in (0, 1)]
    assert sums[0] == sums[1]
    module = load_run(run)
    assert module.model.codebook_size == 64
    ck = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ck["global_step"] == 6


def test_cpu_recipe_switches_train_and_export(corpus, tmp_path):
    """Frame-added conditioning, t = 0 training share and both auxiliary heads train; heads are not exported."""
    run = tmp_path / "run"
    rec = recipe(corpus, "trainer.max_steps=12", "loss.primitives=1.0", "loss.mel_regression=1.0",
                 "model.overrides.decoder.cond_mode=add", "model.overrides.decoder.t_zero_fraction=0.5")
    run_training(rec, run, enable_progress_bar=False)
    rows = metrics(run)
    for key in ("train/prim", "train/prim_vuv_acc", "train/prim_f0_cents", "train/mel_reg"):
        vals = [float(r[key]) for r in rows if r.get(key)]
        assert len(vals) == 12 and all(v == v for v in vals), key
    out = export_run(run, tmp_path / "export")
    model = EntangleCodec.from_pretrained(out)
    assert model.config.decoder.cond_mode == "add"
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        assert not any(k.startswith(("primitive_head", "mel_head")) for k in fh.keys())
    assert model.decode(model.encode(torch.randn(12000) * 0.1, 24000)).wav.shape[-1] == 12000


def test_resume_is_exact_at_epoch_ends_and_after_validation(tmp_path, corpus_maker):
    """One batch per epoch (5 clips, batch 4) makes every checkpoint an epoch's last batch, and
    validation runs in between: the data order, the crops and the RNG stream must all resume."""
    root = tmp_path / "corpus"
    root.mkdir()
    small = corpus_maker(root, n_train=5, n_valid=2, seconds=1.7, seed=3)
    extra = ("trainer.val_every=3", "trainer.ckpt_every=3")
    full = tmp_path / "full"
    run_training(recipe(small, "trainer.max_steps=9", *extra), full, enable_progress_bar=False)
    part = tmp_path / "part"
    run_training(recipe(small, "trainer.max_steps=5", *extra), part, enable_progress_bar=False)
    run_training(recipe(small, "trainer.max_steps=9", *extra), part, resume=True, enable_progress_bar=False)
    a = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    b = torch.load(part / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_pre_layout_run_checkpoint_exports(corpus, tmp_path):
    """A run checkpoint written before the layout change (temperature stored as model.logit_scale)
    still exports and resumes."""
    run = tmp_path / "run"
    run_training(recipe(corpus, "trainer.max_steps=2"), run, enable_progress_bar=False)
    ckpt = run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    state["state_dict"]["model.logit_scale"] = state["state_dict"].pop("logit_scale")
    torch.save(state, ckpt)
    out = export_run(run, tmp_path / "export")
    assert EntangleCodec.from_pretrained(out).config.name == "tiny"
    run_training(recipe(corpus, "trainer.max_steps=3"), run, resume=True, enable_progress_bar=False)


def test_pitch_conditioned_warm_start_then_stage2(corpus, tmp_path):
    """decoder.pitch_cond: a stage-1 warm start from another run's .ckpt copies what matches (aux heads
    included) and adds the pitch modules fresh; the predictor trains and exports; stage 2 keeps it frozen."""
    from entanglecodec.training.codec_module import CodecModule
    from entanglecodec.training.run import warm_start_stage1

    base = tmp_path / "base"
    run_training(recipe(corpus, "trainer.max_steps=6", "loss.primitives=1.0"), base, enable_progress_bar=False)
    ckpt = base / "checkpoints" / "last.ckpt"
    pitch_args = (f"init_from={ckpt}", "loss.primitives=1.0", "model.overrides.decoder.pitch_cond=true",
                  "optim.pitch_lr=0.01")
    rec = recipe(corpus, "trainer.max_steps=8", *pitch_args)
    module = CodecModule(rec.to_dict(), str(tmp_path / "probe"))
    (tmp_path / "probe").mkdir()
    warm_start_stage1(module, ckpt, tmp_path / "probe")
    theirs, mine = load_run(base).state_dict(), module.state_dict()
    assert any(k.startswith("primitive_head.") for k in theirs) and "model.frontend.mel_std" in theirs
    for k, v in theirs.items():  # everything the source had, the auxiliary heads and statistics included
        assert torch.equal(mine[k], v), k
    assert sorted(set(mine) - set(theirs)) == sorted(k for k in mine if ".pitch" in k or "harmonic_depth" in k)
    assert float(module.model.decoder.pitch_proj.weight.abs().max()) == 0.0  # fresh and neutral
    with pytest.raises(ConfigError, match="no tensor matches|neither"):
        warm_start_stage1(module, tmp_path, tmp_path / "probe")

    run = tmp_path / "pitch"
    trained = run_training(rec, run, enable_progress_bar=False)
    rows = metrics(run)
    for key in ("train/pitch", "train/pitch_f0_cents", "train/pitch_vuv_acc"):
        assert len([r for r in rows if r.get(key)]) == 8, key
    assert float(trained.model.decoder.pitch_proj.weight.abs().max()) > 0  # the decoder learned to read it
    assert float(trained.model.decoder.harmonic_depth.bias.abs().max()) > 0
    groups = trained.configure_optimizers().param_groups
    assert [g["base_lr"] for g in groups] == [rec.optim.lr, 0.01]
    assert sum(p.numel() for p in groups[1]["params"]) == sum(
        p.numel() for part in (trained.model.pitch, trained.model.decoder.pitch_proj, trained.model.decoder.harmonic_depth)
        for p in part.parameters()
    )
    out = export_run(run, tmp_path / "pitch_export")
    model = EntangleCodec.from_pretrained(out)
    assert model.pitch is not None and model.decode(model.encode(torch.randn(12000) * 0.1, 24000)).wav.shape[-1] == 12000

    s2 = run_training(
        recipe(corpus, f"init_from={out}", "loss.adv=0", "trainer.max_steps=3", path=REPO / "configs" / "tiny-stage2.yaml"),
        tmp_path / "s2", enable_progress_bar=False,
    )
    for k, v in model.pitch.state_dict().items():
        assert torch.equal(v, s2.model.pitch.state_dict()[k]), f"pitch predictor {k} moved in stage 2"
    assert any(r.get("train/flow") for r in metrics(tmp_path / "s2"))

    # guidance distillation (stage 2, loss.distill): one pass learns the frozen teacher's guided velocity
    dist = run_training(
        recipe(corpus, f"init_from={out}", "loss.adv=0", "loss.flow=0", "loss.vq=0", "loss.distill=1.0",
               "loss.distill_guidance=2.0", "optim.lr=1e-3", "trainer.max_steps=40",
               path=REPO / "configs" / "tiny-stage2.yaml"),
        tmp_path / "dist", enable_progress_bar=False,
    )
    rows = metrics(tmp_path / "dist")
    assert len([r for r in rows if r.get("train/distill")]) == 40
    assert dist.teacher is not None and dist.model.config.decoder.guidance == 0.0
    for k, v in model.decoder.state_dict().items():
        assert torch.equal(v, dist.teacher.state_dict()[k]), f"teacher {k} moved"
    import json

    from entanglecodec.audio import load_audio

    row = json.loads(Path(corpus).read_text().splitlines()[0])
    wav, sr = load_audio(Path(corpus).parent / row["audio"], None)
    codes = model.encode(wav, sr).codes
    with torch.no_grad():
        zq = model.quantizer.embed_codes(codes)
        pitch = model.pitch_features(zq, None)
        x0 = torch.randn(1, model.config.mel.n_mels, codes.shape[-1], generator=torch.Generator().manual_seed(0))
        t0 = torch.zeros(1)
        target = dist.teacher.guided_velocity(x0, t0, zq, None, 2.0, pitch)
        before = (dist.teacher(x0, t0, zq, None, pitch) - target).abs().mean()
        after = (dist.model.decoder(x0, t0, zq, None, pitch) - target).abs().mean()
    assert after < 0.8 * before, (float(before), float(after))
    assert EntangleCodec.from_pretrained(export_run(tmp_path / "dist", tmp_path / "dist_export")).config.decoder.guidance == 0.0
    with pytest.raises(ConfigError, match="stage2 term"):
        recipe(corpus, "loss.distill=1.0")
    with pytest.raises(ConfigError, match="distill_guidance must be >= 0"):
        recipe(corpus, "loss.distill_guidance=-0.5")
    recipe(corpus, "loss.distill_guidance=0")  # 0: the anchor of a stage 2 on a distilled model



def test_slim_checkpoint_warm_starts_with_its_auxiliary_heads(corpus, tmp_path):
    from entanglecodec.training.codec_module import CodecModule
    from entanglecodec.training.run import slim_checkpoint, warm_start_stage1

    aux = ("loss.primitives=1.0", "loss.mel_regression=1.0")
    base = tmp_path / "base"
    run_training(recipe(corpus, "trainer.max_steps=4", *aux), base, enable_progress_bar=False)
    last = base / "checkpoints" / "last.ckpt"
    slim = slim_checkpoint(base, tmp_path / "warm.ckpt")
    assert slim.stat().st_size < last.stat().st_size / 2
    saved = torch.load(slim, map_location="cpu", weights_only=False)
    assert set(saved) == {"state_dict", "hyper_parameters", "global_step"}
    assert all(v.dtype == torch.float16 for v in saved["state_dict"].values() if v.is_floating_point())
    trained = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]

    module = CodecModule(recipe(corpus, *aux).to_dict(), str(tmp_path / "m"))
    fresh = {k: v.clone() for k, v in module.state_dict().items() if k.startswith("mel_head.")}
    (tmp_path / "m").mkdir()
    warm_start_stage1(module, slim, tmp_path / "m")
    mine = module.state_dict()
    assert fresh and any(not torch.equal(mine[k], v) for k, v in fresh.items())
    for name, v in mine.items():  # the heads an export lacks come back too, to float16 rounding
        if name.startswith(("mel_head.", "primitive_head.", "model.quantizer.")) and v.is_floating_point():
            assert torch.allclose(v, trained[name].float(), rtol=1e-2, atol=1e-3), name

    torch.save({"state_dict": {}}, tmp_path / "bare.ckpt")
    with pytest.raises(ValueError, match="no recipe"):
        slim_checkpoint(tmp_path / "bare.ckpt", tmp_path / "again.ckpt")
    assert not (tmp_path / "again.ckpt").exists()

    # the CLI: one-line errors, nothing written, and the checkpoint it reads is never replaced
    from typer.testing import CliRunner

    from entanglecodec.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["train", "slim", str(base), "-o", str(tmp_path / "cli.ckpt")])
    assert ok.exit_code == 0 and (tmp_path / "cli.ckpt").is_file(), ok.output
    for args, code, words in (
        ([str(base), "-o", str(tmp_path / "x.ckpt"), "--dtype", "int8"], 2, "--dtype"),
        ([str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.ckpt")], 1, "not found"),
        ([str(tmp_path / "bare.ckpt"), "-o", str(tmp_path / "x.ckpt")], 1, "no recipe"),
        ([str(last), "-o", str(last)], 1, "would overwrite"),
    ):
        res = runner.invoke(app, ["train", "slim", *args])
        assert res.exit_code == code and words in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "x.ckpt").exists() and last.stat().st_size > slim.stat().st_size


def test_anneal_ends_at_min_lr_and_detached_heads_spare_the_encoder(corpus, tmp_path):
    """optim.anneal_fraction: the rate is flat, then falls by a cosine to min_lr at the last step;
    optim.aux_detach_steps: while on, the auxiliary heads' losses send no gradient into the encoder."""
    from entanglecodec.training.codec_module import CodecModule

    run = tmp_path / "run"
    rec = recipe(corpus, "trainer.max_steps=10", "optim.lr=1e-3", "optim.min_lr=1e-5", "optim.anneal_fraction=0.5")
    run_training(rec, run, enable_progress_bar=False)
    lrs = [float(r["train/lr"]) for r in metrics(run) if r.get("train/lr")]
    assert len(lrs) == 10
    assert lrs[:5] == pytest.approx([1e-3] * 5)
    assert all(b < a for a, b in zip(lrs[5:], lrs[6:], strict=False)) and lrs[-1] < 0.15 * lrs[0]
    # extended to 30 steps with --resume: the rate is back at its pre-decay value until the new window
    run_training(recipe(corpus, "trainer.max_steps=30", "optim.lr=1e-3", "optim.min_lr=1e-5", "optim.anneal_fraction=0.5"),
                 run, resume=True, enable_progress_bar=False)  # fmt: skip
    more = [float(r["train/lr"]) for r in metrics(run, "resume-1") if r.get("train/lr")]
    assert len(more) == 20 and more[:5] == pytest.approx([1e-3] * 5) and more[-1] < 0.15 * more[0]
    with pytest.raises(ConfigError, match="anneal_fraction"):
        recipe(corpus, "optim.anneal_fraction=1.5")

    def encoder_grad(detach_steps: int) -> float:
        rec = recipe(corpus, "loss.primitives=1.0", "loss.mel_regression=1.0", f"optim.aux_detach_steps={detach_steps}")
        module = CodecModule(rec.to_dict(), str(tmp_path / f"m{detach_steps}"))
        module.train()
        mel = torch.randn(2, module.model.config.mel.n_mels, 60)
        batch = {"log_mel": mel, "mel_lengths": torch.tensor([60, 60]), "f0": torch.full((2, 60), 120.0)}
        module.recipe.loss.flow = module.recipe.loss.vq = module.recipe.loss.contrast = module.recipe.loss.pitch = 0.0
        out = module._losses(batch)
        loss = out["prim"] + out["mel_reg"]
        loss.backward()
        return sum(float(p.grad.abs().sum()) for p in module.model.encoder.parameters() if p.grad is not None)

    assert encoder_grad(0) > 0
    assert encoder_grad(5) == 0


def test_warm_start_into_a_larger_codebook_keeps_the_trained_codes(corpus, tmp_path):
    """The 'larger codebook' control: init_from a run with K codes into a model with 2K codes copies the
    K trained codes into the leading entries; the new ones start unused and the dead-code rule seeds them."""
    from entanglecodec.training.codec_module import CodecModule
    from entanglecodec.training.run import warm_start_stage1

    base = tmp_path / "base"
    run_training(recipe(corpus, "trainer.max_steps=4"), base, enable_progress_bar=False)
    ckpt = base / "checkpoints" / "last.ckpt"
    theirs = load_run(base).state_dict()
    k = next(v.shape[1] for n, v in theirs.items() if n.endswith("_codebook.embed"))
    rec = recipe(corpus, f"init_from={ckpt}", "trainer.max_steps=3", f"model.overrides.quantizer.codebook_size={2 * k}")
    module = CodecModule(rec.to_dict(), str(tmp_path / "probe"))
    (tmp_path / "probe").mkdir()
    warm_start_stage1(module, ckpt, tmp_path / "probe")
    mine = module.state_dict()
    for name in ("embed", "embed_avg", "cluster_size"):
        key = next(n for n in theirs if n.endswith(f"_codebook.{name}"))
        assert mine[key].shape[1] == 2 * k and torch.equal(mine[key][:, :k], theirs[key]), key
    size = next(n for n in mine if n.endswith("_codebook.cluster_size"))
    assert float(mine[size][:, k:].abs().max()) == 0.0  # unused, so dead at once whatever the threshold
    trained = run_training(rec, tmp_path / "big", enable_progress_bar=False)
    assert trained.model.config.quantizer.codebook_size == 2 * k
    embed = next(n for n in mine if n.endswith("_codebook.embed"))
    moved = (trained.state_dict()[embed][0, k:] - mine[embed][0, k:]).abs().amax(-1) > 0
    assert float(moved.float().mean()) > 0.5  # most new codes were seeded from the batches


def test_export_sets_decode_defaults_without_changing_the_tokens(corpus, tmp_path):
    """export_run(decode=...) / `train export --decode-from --decode`: only decode-time options, validated
    against the model before anything is written; the weights and the token fingerprint stay the same."""
    from entanglecodec.codec.model import decode_defaults, set_decode_defaults

    run = tmp_path / "run"
    run_training(recipe(corpus, "trainer.max_steps=3"), run, enable_progress_bar=False)
    plain = export_run(run, tmp_path / "plain")
    out = export_run(run, tmp_path / "set", decode={"guidance": 0, "decoder.pulse_voiced_prob": 0.7})
    assert decode_defaults(out)["guidance"] == 0.0 and isinstance(decode_defaults(out)["guidance"], float)
    a, b = EntangleCodec.from_pretrained(plain), EntangleCodec.from_pretrained(out)
    assert b.config.decoder.guidance == 0.0 and b.config.decoder.pulse_voiced_prob == 0.7
    assert a.fingerprint() == b.fingerprint()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    for bad, match in [({"pitch_cond": True}, "not decode-time settings: pitch_cond"),
                       ({"pulse_phase": True}, "pulse_phase needs pitch_cond"),  # this model predicts no pitch
                       ({"guidance": 11}, r"guidance must lie in \[0, 10\]")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            export_run(run, tmp_path / "bad", decode=bad)
        assert not (tmp_path / "bad").exists()
        with pytest.raises(ValueError, match=match):
            set_decode_defaults(out, bad)
    assert decode_defaults(out)["pulse_voiced_prob"] == 0.7  # a refused change leaves the file as it was
    cli = subprocess.run(_cli("train", "export", str(run), "-o", str(tmp_path / "cli"), "--decode-from", str(out),
                              "--decode", "guidance=0.5"), capture_output=True, text=True)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert decode_defaults(tmp_path / "cli")["guidance"] == 0.5 and decode_defaults(tmp_path / "cli")["pulse_voiced_prob"] == 0.7
    cli = subprocess.run(_cli("train", "export", str(run), "-o", str(tmp_path / "cli2"), "--decode", "guidance"),
                         capture_output=True, text=True)  # fmt: skip
    assert cli.returncode == 1 and "--decode 'guidance' must look like key.sub=value" in cli.stderr
    assert "Traceback" not in cli.stderr and not (tmp_path / "cli2").exists()
    cli = subprocess.run(_cli("train", "export", str(run), "-o", str(tmp_path / "cli3"), "--decode-from",
                              str(tmp_path / "nowhere")), capture_output=True, text=True)  # fmt: skip
    assert cli.returncode == 1 and "nowhere/config.json: not a readable codec config" in cli.stderr
    assert "Traceback" not in cli.stderr and not (tmp_path / "cli3").exists()
