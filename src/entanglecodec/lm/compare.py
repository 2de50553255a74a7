"""The codec-controlled comparison (paper Sec. 4.1.3, Tables 2-3): identical LMs on each tokenizer.

``entanglecodec lm compare -c configs/lm-compare.yaml`` runs, for every tokenizer of the config
(EntangleCodec checkpoints such as the bundled one and its ablations, and the k-means-of-mel
baseline fitted here at the first codec's codebook size and the same 50 Hz rate):

1. tokenisation of the corpus (:mod:`.shards`, resumed when already done);
2. the *same* LM recipe (size, phases, steps, batch) for every tokenizer and seed
   (:mod:`.train`, resumed when already done);
3. evaluation on the test split (held-out clips, held-out question templates):

   * **AQA** accuracy per question type: multiple choice by the LM's likelihood of each option
     (mean log-probability of its tokens), open questions by exact match of the greedy answer;
     chance level, Wilson 95 % intervals, and the difference to the first tokenizer with
     Newcombe's 95 % interval (pooled over seeds);
   * **captioning**: audio->caption retrieval R@1 among ``retrieval_clips`` test clips scored by
     the LM's own likelihood of each caption, and attribute accuracy of the greedy caption (it
     names the clip's labels: gender, language, key, mode, event...);
   * **TTS**: Whisper WER of the generated speech (:func:`entanglecodec.eval.metrics.transcribe`)
     and speaker similarity to the reference clip (Resemblyzer);
   * **TTA**: the independent judge (:class:`~.judge.AudioJudge`, trained on ground-truth audio)
     classifies the generated audio; accuracy per target and per class, with the judge's accuracy
     on the real test clips as the ceiling.

Everything lands in ``WORK/`` (tokens, runs, generated audio); the report is ``OUT.md`` + ``.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, _from_dict
from ..eval.probe.measure import TARGETS
from ..fileio import atomic_write_text
from ..training.recipe import read_recipe_dict
from .aqa import QUESTION_TYPES, label_sets, make_questions
from .audio_tokenizer import KMeansMelTokenizer, load_audio_tokenizer
from .judge import AudioJudge, diff_interval, wilson
from .tasks import understanding_prompt

log = logging.getLogger(__name__)
EVAL_PARTS: tuple[str, ...] = ("aqa", "caption", "tts", "tta")
"""What an LM is scored on; each part needs the LM to have trained on the task of the same name."""


@dataclass
class TokenizerSpec:
    """A row of the comparison: ``path`` to a codec / k-means directory, or ``kmeans: true`` to fit one."""

    name: str = ""
    path: str | None = None
    kmeans: bool = False
    k: int | None = None

    def validate(self) -> None:
        if not self.name:
            raise ConfigError("tokenizers: every entry needs a name")
        if self.kmeans == (self.path is not None):
            raise ConfigError(f"tokenizer {self.name}: give either path (a checkpoint directory) or kmeans: true")


@dataclass
class EvalSection:
    """Evaluation sizes and generation settings (identical for every tokenizer)."""

    max_test_clips: int = 200
    retrieval_clips: int = 30
    tts_clips: int = 20
    tta_clips: int = 20
    mc_fraction: float = 0.75
    asr: str = "whisper"
    speaker_similarity: bool = True
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 1.0
    guidance: float = 1.0
    max_seconds: float = 8.0
    caption_max_tokens: int = 96
    judge_targets: list[str] = field(default_factory=lambda: ["domain", "event"])
    judge_clips: int = 1000


@dataclass
class CompareConfig:
    """``configs/lm-compare.yaml``."""

    manifest: str = ""
    recipe: str = "configs/lm-small.yaml"
    recipe_overrides: list[str] = field(default_factory=list)
    # The paper trains its understanding and generation LMs apart (Table 7). With a generation recipe,
    # `recipe` trains the understanding LM (scored on AQA + captioning) and this one a second LM per
    # tokenizer and seed (scored on TTS + TTA); without it one LM is scored on every task it trained on.
    generation_recipe: str | None = None
    generation_overrides: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    tokenizers: list[TokenizerSpec] = field(default_factory=list)
    kmeans_clips: int = 2000
    # Pairs [a, b] whose AQA difference a - b gets a Newcombe interval; empty: the first tokenizer
    # against each other one. E.g. the ablations against the full recipe trained for the same steps.
    contrasts: list[list[str]] = field(default_factory=list)
    eval: EvalSection = field(default_factory=EvalSection)

    def check(self) -> None:
        """Checks that need the tokenizer list (parsed after the scalar keys)."""
        if not self.tokenizers:
            raise ConfigError("tokenizers: list at least one tokenizer")
        names = [t.name for t in self.tokenizers]
        if len(set(names)) != len(names):
            raise ConfigError(f"tokenizers: duplicate names {names}")
        if not self.seeds:
            raise ConfigError("seeds: at least one seed")
        for pair in self.contrasts:
            if len(pair) != 2 or any(n not in names for n in pair):
                raise ConfigError(f"contrasts: each entry is [name, name] of two listed tokenizers, got {pair}")

    def pairs(self) -> list[tuple[str, str]]:
        """The AQA differences to report: ``contrasts``, else the first tokenizer against each other."""
        if self.contrasts:
            return [(a, b) for a, b in self.contrasts]
        names = [t.name for t in self.tokenizers]
        return [(names[0], n) for n in names[1:]]


def load_compare_config(path: str | Path, overrides: list[str] | None = None) -> CompareConfig:
    """Read the comparison config (``base:`` / ``--set`` as every recipe; relative paths stay as written)."""
    data = read_recipe_dict(path, overrides)
    toks = data.pop("tokenizers", []) or []
    if not isinstance(toks, list):
        raise ConfigError(f"{path}: tokenizers must be a list")
    try:
        cfg = _from_dict(CompareConfig, data)
        cfg.tokenizers = [_from_dict(TokenizerSpec, t, prefix=f"tokenizers[{i}].") for i, t in enumerate(toks)]
        cfg.check()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    return cfg


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "tokenizer"


def _load_wavs(rows: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
    from ..eval.probe.measure import load_clip

    return [load_clip(r["audio"], None) for r in rows]


def fit_kmeans_tokenizer(manifest: str | Path, out: str | Path, k: int | None, codec: str | Path | None,
                         seed: int = 0, max_clips: int = 2000) -> Path:  # fmt: skip
    """Fit :class:`~.audio_tokenizer.KMeansMelTokenizer` on the train split (``k``: the codec's size)."""
    from ..data.manifest import read_manifest
    from ..eval.probe.measure import select_rows

    if k is None:
        k = load_audio_tokenizer(codec).codebook_size
    rows = select_rows(read_manifest(manifest, "train"), max_clips, seed)
    return KMeansMelTokenizer.fit(_load_wavs(rows), k, seed).save_pretrained(out)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def evaluate_lm(
    lm_dir: Path, tok: Any, rows: list[dict[str, Any]], all_rows: list[dict[str, Any]], cfg: EvalSection,
    judge: AudioJudge | None, tta_domains: Sequence[str], audio_dir: Path, seed: int, parts: Sequence[str] = EVAL_PARTS,
) -> dict[str, Any]:  # fmt: skip
    """The metrics of one trained LM on the test ``rows`` (see module docstring), for the tasks in
    ``parts`` (:data:`EVAL_PARTS`; an LM is scored only on the tasks it trained on). ``judge`` is
    needed for ``tta`` only."""
    from .generate import AudioLM, Sampling

    lm = AudioLM(lm_dir, tok)
    codes = {r["id"]: lm.encode_audio(_load_wavs([r])[0]) for r in rows}
    res: dict[str, Any] = {}
    if "aqa" in parts:
        res["aqa"] = _eval_aqa(lm, codes, rows, all_rows, cfg)
    if "caption" in parts:
        res["caption"] = _eval_caption(lm, codes, rows, cfg)
    s = Sampling(cfg.temperature, cfg.top_k, cfg.top_p, int(cfg.max_seconds * lm.vocab.frame_rate), seed, cfg.guidance)
    if "tts" in parts:
        res["tts"] = _eval_tts(lm, s, rows, cfg, tok.sample_rate, audio_dir / "tts")
    if "tta" in parts:
        if judge is None:
            raise ValueError("scoring TTA needs the judge (an AudioJudge fitted on ground-truth audio)")
        res["tta"] = _eval_tta(lm, s, rows, judge, tta_domains, tok.sample_rate, audio_dir / "tta", cfg.tta_clips)
    return res


def _eval_aqa(lm: Any, codes: Mapping[str, np.ndarray], rows: list[dict[str, Any]], all_rows: list[dict[str, Any]],
              cfg: EvalSection) -> list[dict[str, Any]]:  # fmt: skip
    """AQA items ``{type, mc, correct, chance}`` of the test questions (held-out template)."""
    from .tasks import TaskError

    labels = label_sets(all_rows)
    items = []
    for q in make_questions(rows, labels, test=True, seed=0, mc_fraction=cfg.mc_fraction):
        try:
            prompt = understanding_prompt("aqa", lm.vocab, lm.tokenizer, codes[q.row_id], q.prompt)
            if q.options:
                pred = q.options[int(np.argmax(lm.option_scores(prompt, list(q.options))))]
                chance = q.chance
            else:
                pred, _ = lm.answer("aqa", codes[q.row_id], q.prompt, 16)
                chance = 1.0 / max(1, len(labels[q.qtype]))
        except TaskError:
            continue
        items.append({"type": q.qtype, "mc": bool(q.options), "correct": _norm(pred) == _norm(q.answer), "chance": chance})
    return items


def _eval_caption(lm: Any, codes: Mapping[str, np.ndarray], rows: list[dict[str, Any]], cfg: EvalSection) -> dict[str, Any]:
    """Captioning: retrieval by the LM's likelihood + attributes named by the greedy caption."""
    cap_rows = [r for r in rows if str(r.get("caption") or "").strip()][: cfg.retrieval_clips]
    caps = [str(r["caption"]) for r in cap_rows]
    hits, attr = [], []
    for i, r in enumerate(cap_rows):
        prompt = understanding_prompt("caption", lm.vocab, lm.tokenizer, codes[r["id"]])
        scores = lm.option_scores(prompt, caps)
        hits.append(caps[int(np.argmax(scores))] == caps[i])
        text, _ = lm.answer("caption", codes[r["id"]], None, cfg.caption_max_tokens)
        for name, qt in QUESTION_TYPES.items():
            label = qt.extract(r)
            if label is not None and name not in ("count", "domain"):
                attr.append({"type": name, "correct": _norm(label) in _norm(text)})
    return {"retrieval_hits": hits, "attributes": attr}


def _eval_tts(lm: Any, s: Any, rows: list[dict[str, Any]], cfg: EvalSection, sr: int, out: Path) -> list[dict[str, Any]]:
    """TTS of English test transcripts: WER and speaker similarity per clip (audio saved under ``out``)."""
    from ..audio import save_audio
    from .tasks import TaskError

    out.mkdir(parents=True, exist_ok=True)
    tts_rows = [r for r in rows if r["domain"] == "speech" and str(r.get("text") or "").strip()
                and str(TARGETS["language"].extract(r) or "en").startswith("en")][: cfg.tts_clips]  # fmt: skip
    res: list[dict[str, Any]] = []
    for r in tts_rows:
        try:
            wav, truncated = lm.synthesize("tts", str(r["text"]), s)
        except TaskError:  # closed the audio span at once: nothing intelligible
            res.append({"id": r["id"], "truncated": False, "wer": 1.0, "hypothesis": "", "speaker_sim": None})
            continue
        save_audio(out / f"{_safe(r['id'])}.wav", wav, sr)
        res.append({"id": r["id"], "truncated": truncated, **_tts_scores(wav, r, sr, cfg)})
    return res


def _eval_tta(lm: Any, s: Any, rows: list[dict[str, Any]], judge: AudioJudge, tta_domains: Sequence[str], sr: int,
              out: Path, n_clips: int) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """TTA of test captions judged by the independent classifier: ``{target: [{label, pred}]}``."""
    from ..audio import save_audio
    from .tasks import TaskError

    out.mkdir(parents=True, exist_ok=True)
    tta_rows = [r for r in rows if r["domain"] in tta_domains and str(r.get("caption") or "").strip()][:n_clips]
    gen: list[np.ndarray | None] = []
    for r in tta_rows:
        try:
            wav, _ = lm.synthesize("tta", str(r["caption"]), s)
        except TaskError:  # no audio generated: judged wrong
            gen.append(None)
            continue
        save_audio(out / f"{_safe(r['id'])}.wav", wav, sr)
        gen.append(wav)
    res: dict[str, list[dict[str, Any]]] = {}
    for t in judge.models:
        keep = [i for i, r in enumerate(tta_rows) if TARGETS[t].extract(r) is not None]
        audible = {i: w for i in keep if (w := gen[i]) is not None}
        judged = dict(zip(audible, judge.predict(t, list(audible.values())) if audible else [], strict=True))
        if keep:
            res[t] = [{"label": TARGETS[t].extract(tta_rows[i]), "pred": judged.get(i, "(no audio)")} for i in keep]
    return res


def answer_prior(train: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]],
                 all_rows: Sequence[Mapping[str, Any]], mc_fraction: float) -> list[dict[str, Any]]:  # fmt: skip
    """The AQA score of answering without listening: the test questions of :func:`evaluate_lm`, each
    answered with the label its type takes most often in the ``train`` rows (among the options, for
    multiple choice). An LM that ignores the audio can reach this from the text alone, so it is the
    bar that says whether the tokens were used; chance (1/options) is below it when labels are skewed."""
    freq: dict[str, Counter[str]] = defaultdict(Counter)
    for r in train:
        for name, qt in QUESTION_TYPES.items():
            if (label := qt.extract(r)) is not None:
                freq[name][_norm(label)] += 1
    labels = label_sets(all_rows)
    items = []
    for q in make_questions(test, labels, test=True, seed=0, mc_fraction=mc_fraction):
        choices = list(q.options) if q.options else labels[q.qtype]
        pred = max(choices, key=lambda c: freq[q.qtype][_norm(c)])  # ties: the first listed
        chance = q.chance if q.options else 1.0 / max(1, len(labels[q.qtype]))
        items.append({"type": q.qtype, "mc": bool(q.options), "correct": _norm(pred) == _norm(q.answer), "chance": chance})
    return items


def _tts_scores(wav: np.ndarray, row: Mapping[str, Any], sr: int, cfg: EvalSection) -> dict[str, Any]:
    from ..eval.metrics import MetricError, score_transcript, speaker_similarity, transcribe

    try:
        hyp = transcribe(wav, sr, cfg.asr, "en")
    except MetricError:  # too short for the recogniser: nothing intelligible
        hyp = ""
    out: dict[str, Any] = {"wer": score_transcript(str(row["text"]), hyp).wer, "hypothesis": hyp}
    if cfg.speaker_similarity:
        ref = _load_wavs([row])[0]
        try:
            out["speaker_sim"] = float(speaker_similarity(ref, wav, sr, paired=False))  # lengths differ
        except (MetricError, ValueError):
            out["speaker_sim"] = None
    return out


def run_comparison(cfg: CompareConfig, work: str | Path, out: str | Path, command: str = "",
                   progress: Callable[[str], None] | None = None,
                   only: Sequence[str] | None = None) -> dict[str, Path]:  # fmt: skip
    """Tokenise, train and evaluate every tokenizer x seed; write the report (see module docstring).

    ``only``: prepare just these tokenizers' rows (tokens, LMs, cached evaluations) and write no
    report, so that separate processes can fill different rows of the same ``work`` folder (e.g. the
    rows whose codecs are ready while others still train); a later full run reuses them. Returns
    ``{}`` then."""
    from ..data.manifest import read_manifest
    from ..eval.probe.measure import select_rows
    from ..eval.report import report_paths, write_report
    from .recipe import LMRecipe
    from .shards import tokenize_manifest
    from .train import run_lm_training

    say = progress or log.info
    w = Path(work)
    names = [t.name for t in cfg.tokenizers]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ConfigError(f"--only {', '.join(unknown)}: not a tokenizer of the config ({', '.join(names)})")
    rows = [dict(r) for r in read_manifest(cfg.manifest)]
    test = [dict(r) for r in select_rows([r for r in rows if r["split"] == "test"], cfg.eval.max_test_clips, 0)]
    if not test:
        raise ValueError(f"{cfg.manifest}: no test rows to evaluate on")
    base = read_recipe_dict(cfg.recipe, cfg.recipe_overrides)
    # (run-folder suffix, recipe, generation: None = one LM scored on all it trained, False/True = apart)
    lms: list[tuple[str, dict[str, Any], bool | None]] = [("", base, None)]
    if cfg.generation_recipe:
        lms = [("", base, False), ("-gen", read_recipe_dict(cfg.generation_recipe, cfg.generation_overrides), True)]
    fitted: list[AudioJudge] = []

    def judge() -> AudioJudge:  # fitted once, and only when a TTA evaluation or report needs it
        if not fitted:
            say("fitting the TTA judge on ground-truth train audio")
            judge_rows = select_rows([r for r in rows if r["split"] == "train"], cfg.eval.judge_clips, 0)
            fitted.append(AudioJudge(cfg.eval.judge_targets).fit(judge_rows, _load_wavs(judge_rows)))
        return fitted[0]
    first_k: int | None = None
    results: dict[str, dict[int, Any]] = {}
    budget: dict[str, Any] = {}
    for spec in cfg.tokenizers:
        if only and spec.name not in only:
            continue
        path = spec.path
        if spec.kmeans:
            k = spec.k or first_k or load_audio_tokenizer(None).codebook_size
            kdir = w / "kmeans" / f"k{k}"
            if not (kdir / "model.safetensors").is_file():
                say(f"{spec.name}: fitting k-means-of-mel with {k} clusters")
                fit_kmeans_tokenizer(cfg.manifest, kdir, k, None, 0, cfg.kmeans_clips)
            path = str(kdir)
        tok = load_audio_tokenizer(path)
        tok.name = spec.name
        first_k = first_k or tok.codebook_size
        tdir = w / "tokens" / _safe(spec.name)
        say(f"{spec.name}: tokenising {len(rows)} clips")
        tokenize_manifest(cfg.manifest, tdir, tok)
        results[spec.name] = {}
        for seed in cfg.seeds:
            merged: dict[str, Any] = {}
            for suffix, base_recipe, generation in lms:
                run = w / "runs" / _safe(spec.name) / f"seed{seed}{suffix}"
                data = {**base_recipe, "codec": path,
                        "data": {**base_recipe.get("data", {}), "manifest": cfg.manifest, "tokens": str(tdir)}}  # fmt: skip
                data["trainer"] = {**base_recipe.get("trainer", {}), "seed": seed}
                data["model"] = {**base_recipe.get("model", {}), "seed": seed}
                recipe = LMRecipe.from_dict(data)
                label = f"{spec.name} seed {seed}{' (generation LM)' if generation else ''}"
                parts = _scored_parts(recipe, generation)
                check_run_recipe(run, recipe)
                if not (run / "lm" / "entanglecodec_lm.json").is_file():
                    say(f"{label}: training")
                    t0 = time.monotonic()
                    run_lm_training(recipe, run, resume=(run / "recipe.yaml").is_file(), progress=False)
                    (run / "train_seconds.txt").write_text(f"{time.monotonic() - t0:.1f}\n")
                spent = run / "train_seconds.txt"
                budget_key = "generation_" if generation else ""
                budget.setdefault(f"{budget_key}train_seconds", {})[f"{spec.name}/seed{seed}"] = (
                    float(spent.read_text()) if spent.is_file() else None
                )
                budget[f"{budget_key}phases"] = [asdict(p) for p in recipe.all_phases()]
                budget[f"{budget_key}batch_size"] = recipe.data.batch_size
                budget.setdefault("scored", {})["generation" if generation else "lm"] = list(parts)
                key = _eval_key(cfg.eval, test, tok.fingerprint(), run / "lm", parts)
                res = _cached_eval(run / "eval.json", key)
                if res is not None:
                    say(f"{label}: evaluation reused ({run / 'eval.json'})")
                else:
                    say(f"{label}: evaluating {', '.join(parts)}")
                    with warnings.catch_warnings():  # answers/audio cut at the maximum length are counted, not shouted
                        warnings.filterwarnings("ignore", message=".*maximum length")
                        res = evaluate_lm(run / "lm", tok, test, rows, cfg.eval, judge() if "tta" in parts else None,
                                          recipe.data.tta_domains,
                                          w / "audio" / _safe(spec.name) / f"seed{seed}", seed, parts)  # fmt: skip
                    atomic_write_text(run / "eval.json", json.dumps({"key": key, "result": res}))
                merged.update(res)
            results[spec.name][seed] = merged
    if only:
        say(f"rows ready: {', '.join(only)}; no report written (run without --only for it)")
        return {}
    prior = answer_prior([r for r in rows if r["split"] == "train"], test, rows, cfg.eval.mc_fraction)
    ceiling: dict[str, float] = {}
    if any("tta" in r for by_seed in results.values() for r in by_seed.values()):
        test_wavs = _load_wavs(test)
        for t in judge().models:
            labelled = [i for i, r in enumerate(test) if TARGETS[t].extract(r) is not None]
            pred = judge().predict(t, [test_wavs[i] for i in labelled]) if labelled else []
            ceiling[t] = float(np.mean([p == TARGETS[t].extract(test[i]) for p, i in zip(pred, labelled, strict=True)]))
    doc = {"command": command, "config": asdict(cfg), "budget": budget, "judge_ceiling": ceiling,
           "test_clips": len(test), "answer_prior": prior,
           "results": {k: {str(s): v for s, v in r.items()} for k, r in results.items()}}  # fmt: skip
    paths = report_paths(out, {"markdown": ".md", "json": ".json"})
    return write_report(paths, lambda: markdown(doc, cfg), doc)


RUN_RECIPE_FREE = (("trainer", "threads"), ("data", "tokens"))
"""Recipe keys a finished LM run may differ in and still be reused (not what the LM learns)."""


def check_run_recipe(run: Path, recipe: Any) -> None:
    """Refuse to reuse (or resume) an LM run folder that was trained with another recipe.

    The comparison reuses finished runs, so a changed recipe or budget in the config would otherwise
    report old LMs under the new recipe's name. ``RUN_RECIPE_FREE`` keys are ignored.

    Raises:
        ConfigError: the run's ``recipe.yaml`` differs; names the first differing keys.
    """
    import yaml

    path = run / "recipe.yaml"
    if not path.is_file():
        return

    def flat(d: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
        out: dict[tuple[str, ...], Any] = {}
        for k, v in d.items():
            key = (*prefix, str(k))
            out.update(flat(v, key) if isinstance(v, Mapping) else {key: v})
        return out

    old = {k: v for k, v in flat(yaml.safe_load(path.read_text()) or {}).items() if k not in RUN_RECIPE_FREE}
    new = {k: v for k, v in flat(yaml.safe_load(yaml.safe_dump(recipe.to_dict()))).items() if k not in RUN_RECIPE_FREE}
    diff = sorted(".".join(k) for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise ConfigError(f"{run} was trained with another LM recipe ({', '.join(diff[:4])}{' ...' if len(diff) > 4 else ''} "
                          "differ): use another --work-dir, or delete that run to retrain it")  # fmt: skip


def _scored_parts(recipe: Any, generation: bool | None) -> tuple[str, ...]:
    """The :data:`EVAL_PARTS` an LM is scored on: the tasks its phases trained, restricted to
    understanding (``generation=False``) or generation (``True``) when the comparison trains both apart.

    Raises:
        ConfigError: nothing to score (e.g. an understanding recipe without AQA or captioning).
    """
    trained = {t for p in recipe.all_phases() for t in (p.tasks or recipe.data.tasks)}
    wanted = {None: EVAL_PARTS, False: ("aqa", "caption"), True: ("tts", "tta")}[generation]
    parts = tuple(p for p in wanted if p in trained)
    if not parts:
        kind = {None: "", False: "understanding ", True: "generation "}[generation]
        raise ConfigError(f"the {kind}LM recipe trains none of the scored tasks {', '.join(wanted)} (it trains {sorted(trained)})")
    return parts


def _eval_key(cfg: EvalSection, test: Sequence[Mapping[str, Any]], fingerprint: str, lm_dir: Path,
              parts: Sequence[str] = EVAL_PARTS) -> str:  # fmt: skip
    """What one LM's evaluation depends on: the eval settings, the test clips, the token space, the weights.

    A rerun of the comparison (a later session, an added tokenizer) reuses an evaluation whose key
    is unchanged instead of regenerating its audio; any change to these re-evaluates.
    """
    h = hashlib.sha256()
    h.update(json.dumps(asdict(cfg), sort_keys=True).encode())
    h.update(json.dumps([str(r["id"]) for r in test]).encode())
    h.update(fingerprint.encode())
    if tuple(parts) != EVAL_PARTS:  # keys of full evaluations stay as they were
        h.update(json.dumps(list(parts)).encode())
    for f in sorted(lm_dir.glob("*.safetensors")):
        h.update(f.name.encode() + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def _cached_eval(path: Path, key: str) -> dict[str, Any] | None:
    """The stored result of :func:`evaluate_lm` when ``path`` holds one made under ``key``."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc["result"] if isinstance(doc, dict) and doc.get("key") == key else None


def _acc(items: Sequence[bool]) -> str:
    k, n = int(sum(items)), len(items)
    if n == 0:
        return "–"
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] (n={n})"


def markdown(doc: Mapping[str, Any], cfg: CompareConfig) -> str:
    """The report text: AQA, captioning, TTS and TTA tables (see module docstring)."""
    res: dict[str, dict[str, Any]] = doc["results"]
    names = list(res)
    b = doc["budget"]
    lines = [
        "# Codec-controlled comparison of audio LMs (paper Tables 2-3)", "",
        f"Command: `{doc['command']}` (config below; work folder holds tokens, runs and generated audio).", "",
        f"Identical LM recipe `{cfg.recipe}` {cfg.recipe_overrides or ''} for every tokenizer, seeds {cfg.seeds}; "
        f"phases {b.get('phases')}, batch {b.get('batch_size')}. Training seconds per run: {b.get('train_seconds')}. "
        + (f"Scored on: {', '.join(b['scored']['lm'])}. " if "scored" in b else "")
        + (f"Generation LMs (TTS, TTA), trained apart as in the paper: `{cfg.generation_recipe}` "
           f"{cfg.generation_overrides or ''}; phases {b.get('generation_phases')}, batch {b.get('generation_batch_size')}. "
           f"Training seconds per run: {b.get('generation_train_seconds')}. " if cfg.generation_recipe else "")
        + f"Test: {doc['test_clips']} held-out clips, held-out question templates. Intervals: Wilson 95 %; "
        "differences: Newcombe 95 % (pooled over seeds).", "",
        "## AQA accuracy (%)", "",
        "| tokenizer | seed | all questions | multiple choice | chance (MC) |", "|---|---|---|---|---|",
    ]  # fmt: skip
    pooled: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for name in names:
        for seed, r in res[name].items():
            items = r.get("aqa", [])
            pooled[name] += items
            mc = [i for i in items if i["mc"]]
            chance = 100 * float(np.mean([i["chance"] for i in mc])) if mc else float("nan")
            lines.append(f"| {name} | {seed} | {_acc([i['correct'] for i in items])} | {_acc([i['correct'] for i in mc])} | {chance:.1f} |")
    prior = doc.get("answer_prior") or []
    if prior:
        pmc = [i for i in prior if i["mc"]]
        lines += [f"| answer prior (no audio) | – | {_acc([i['correct'] for i in prior])} | {_acc([i['correct'] for i in pmc])} | "
                  f"{100 * float(np.mean([i['chance'] for i in pmc])) if pmc else float('nan'):.1f} |", "",
                  "The answer prior answers every question with the label its type takes most often in the training "
                  "clips, without the audio: what an LM can score from the question alone. Rows above chance but not "
                  "above the prior have not shown that they use the audio."]  # fmt: skip
    pairs = [(x, y) for x, y in cfg.pairs() if x in pooled and y in pooled]
    if pairs:
        lines += ["", "Differences (all AQA questions, pooled seeds; an interval that excludes 0 is a difference "
                  "at this budget):", "", "| tokenizers | difference [95 % CI] (points) |", "|---|---|"]  # fmt: skip
        for x, y in pairs:
            a, o = pooled[x], pooled[y]
            d, lo, hi = diff_interval(sum(i["correct"] for i in a), len(a), sum(i["correct"] for i in o), len(o))
            lines.append(f"| {x} - {y} | {100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] |")
    lines += ["", "### Per question type (pooled seeds)", "",
              "Chance: mean over the type's questions of 1/options (multiple choice) or 1/labels (open).", "",
              "| type | chance | answer prior | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]  # fmt: skip
    for qt in QUESTION_TYPES:
        per = {n: [i for i in pooled[n] if i["type"] == qt] for n in names}
        if not any(per.values()):
            continue
        ch = [i["chance"] for n in names for i in per[n]]
        pr = _acc([i["correct"] for i in prior if i["type"] == qt]) if prior else "–"
        lines.append(f"| {qt} | {100 * float(np.mean(ch)):.1f} | {pr} | " + " | ".join(_acc([i["correct"] for i in per[n]]) for n in names) + " |")
    lines += ["", "## Captioning (%)", "", "Retrieval R@1 ranks the test captions by the LM's likelihood given the audio "
              "(chance 1/N); attribute accuracy: the greedy caption names the clip's label.", "",
              "| tokenizer | seed | retrieval R@1 | chance | attributes named |", "|---|---|---|---|---|"]  # fmt: skip
    for name in names:
        for seed, r in res[name].items():
            if "caption" not in r:
                lines.append(f"| {name} | {seed} | not trained | – | – |")
                continue
            c = r["caption"]
            n = len(c["retrieval_hits"])
            lines.append(f"| {name} | {seed} | {_acc(c['retrieval_hits'])} | {100 / max(n, 1):.1f} | "
                         f"{_acc([a['correct'] for a in c['attributes']])} |")  # fmt: skip
    lines += ["", f"## TTS ({cfg.eval.asr} WER of generated speech; speaker similarity to the reference clip)", "",
              "| tokenizer | seed | clips | mean WER | median WER | truncated | speaker sim |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in names:
        for seed, r in res[name].items():
            if "tts" not in r:
                lines.append(f"| {name} | {seed} | not trained | – | – | – | – |")
                continue
            t = r["tts"]
            wer = [x["wer"] for x in t]
            sims = [x["speaker_sim"] for x in t if x.get("speaker_sim") is not None]
            fmt = (lambda v: f"{100 * v:.1f} %") if wer else (lambda v: "–")  # noqa: E731
            lines.append(f"| {name} | {seed} | {len(t)} | {fmt(float(np.mean(wer)) if wer else 0)} | "
                         f"{fmt(float(np.median(wer)) if wer else 0)} | {sum(x['truncated'] for x in t)} | "
                         f"{(f'{np.mean(sims):.3f}' if sims else '–')} |")  # fmt: skip
    lines += ["", "## TTA judged by an independent classifier (%)", "",
              "Log-mel + logistic regression trained on ground-truth train audio (not EntangleCodec's towers). "
              "Ceiling (judge on the real test clips): " + ", ".join(f"{t} {100 * v:.1f}" for t, v in doc["judge_ceiling"].items()) + ".", "",
              "| tokenizer | seed | target | accuracy | per class |", "|---|---|---|---|---|"]  # fmt: skip
    for name in names:
        for seed, r in res[name].items():
            if "tta" not in r:
                lines.append(f"| {name} | {seed} | – | not trained | – |")
            for t, items in r.get("tta", {}).items():
                by_class: dict[str, list[bool]] = defaultdict(list)
                for i in items:
                    by_class[i["label"]].append(i["pred"] == i["label"])
                cls = "; ".join(f"{c}: {sum(v)}/{len(v)}" for c, v in sorted(by_class.items()))
                lines.append(f"| {name} | {seed} | {t} | {_acc([i['pred'] == i['label'] for i in items])} | {cls} |")
    lines += ["", "## Config", "", "```", _yaml(asdict(cfg)), "```", ""]
    return "\n".join(lines)


def _yaml(d: Mapping[str, Any]) -> str:
    import yaml

    return str(yaml.safe_dump(dict(d), sort_keys=False)).rstrip()
