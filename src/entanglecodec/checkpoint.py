"""Checkpoint directories: ``config.json`` + ``model.safetensors``, for every model of the package.

One format (the Hugging Face layout) and one strictness for the codec, the vocoder and the mel
discriminator:

* :func:`save_checkpoint` writes the weights, then ``config.json`` with the SHA-256 of the weights
  (:data:`WEIGHTS_CHECKSUM_KEY`) and, when given, a ``model_type``; both files are written
  atomically (a temporary file renamed into place), so a failure leaves no partial checkpoint.
* :func:`read_checkpoint` checks the directory and both files, parses the JSON object, verifies
  the checksum (checkpoints saved before it existed have none and still load), checks
  ``model_type``, reads the tensors and refuses NaN/Inf weights.
* :func:`check_state` compares the tensors with the ones a model built from the config expects
  (missing, unexpected, shape mismatch) in one message.

Every failure raises :class:`CheckpointError` (or the subclass the caller passes) naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .fileio import atomic_write, atomic_write_text

if TYPE_CHECKING:  # torch is imported by the functions that read or write tensors, so that
    import torch  # locating a checkpoint (the ONNX runtime's fast path) does not load it
    from torch import Tensor

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_CHECKSUM_KEY = "weights_sha256"
"""Key of ``config.json`` holding the hex SHA-256 of ``model.safetensors``."""
MODEL_TYPE_KEY = "model_type"


class CheckpointError(ValueError):
    """A checkpoint directory is missing files, or its weights do not match its config."""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in ``chunk``-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_weights_checksum(weights: str | Path, expected: object) -> None:
    """Check ``weights`` against the checksum from ``config.json`` (``None``: nothing to check).

    Raises:
        ValueError: the stored checksum is malformed, or the file's checksum differs (the message
            names the file and says it is corrupted or was changed after saving).
    """
    if expected is None:
        return
    if not isinstance(expected, str) or len(expected) != 64:
        raise ValueError(f"{weights}: config.json has a malformed {WEIGHTS_CHECKSUM_KEY!r} entry: {expected!r}")
    actual = file_sha256(weights)
    if actual != expected.lower():
        raise ValueError(
            f"{weights}: checksum mismatch (config.json says {expected[:12]}..., the file is {actual[:12]}...): "
            "the weights are corrupted or were changed after saving"
        )


def is_checkpoint_dir(directory: str | Path) -> bool:
    """``True`` when ``directory`` holds both ``config.json`` and ``model.safetensors``."""
    d = Path(directory)
    return (d / CONFIG_NAME).is_file() and (d / WEIGHTS_NAME).is_file()


def save_checkpoint(
    directory: str | Path,
    config: Mapping[str, Any],
    state: Mapping[str, Tensor],
    model_type: str | None = None,
    metadata: Mapping[str, str] | None = None,
    card: str | None = None,
) -> Path:
    """Write ``state`` to ``directory/model.safetensors`` and ``config`` (+ checksum) to ``config.json``.

    Args:
        directory: created when missing.
        config: a JSON-serialisable mapping (the model's config as a dict).
        state: tensors to save (detached, made contiguous and moved to the CPU here).
        model_type: stored under ``model_type`` in ``config.json`` (checked by :func:`read_checkpoint`).
        metadata: string pairs stored in the safetensors header.
        card: a model card (see :func:`model_card`) written to ``README.md``.

    Returns:
        The directory.
    """
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    meta = dict(metadata or {})
    atomic_write(d / WEIGHTS_NAME, lambda tmp: save_file(tensors, str(tmp), metadata=meta or None))
    cfg: dict[str, Any] = dict(config)
    if model_type is not None:
        cfg[MODEL_TYPE_KEY] = model_type
    cfg[WEIGHTS_CHECKSUM_KEY] = file_sha256(d / WEIGHTS_NAME)
    atomic_write_text(d / CONFIG_NAME, json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    if card is not None:
        atomic_write_text(d / CARD_NAME, card)
    return d


def read_checkpoint(
    directory: str | Path,
    model_type: str | None = None,
    map_location: str | torch.device = "cpu",
    error: type[CheckpointError] = CheckpointError,
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read and verify a checkpoint directory; return ``(config dict, tensors)``.

    The returned config has the checksum and ``model_type`` keys removed (ready for the config
    class's ``from_dict``).

    Args:
        directory: the checkpoint directory.
        model_type: when given, a ``model_type`` stored in ``config.json`` must equal it (a file
            without the key is accepted: older checkpoints did not write it).
        map_location: device of the returned tensors.
        error: the :class:`CheckpointError` subclass to raise.

    Raises:
        CheckpointError: directory or file missing, unreadable JSON or safetensors, checksum
            mismatch, another ``model_type``, or NaN/Inf weights.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    if not d.is_dir():
        raise error(f"{d}: checkpoint directory not found")
    cfg_path, w_path = d / CONFIG_NAME, d / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise error(f"{d}: missing {p.name} (a checkpoint holds {CONFIG_NAME} + {WEIGHTS_NAME})")
    try:
        raw = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise error(f"{cfg_path}: not a readable JSON file ({e})") from e
    if not isinstance(raw, dict):
        raise error(f"{cfg_path}: must hold a JSON object")
    checksum = raw.pop(WEIGHTS_CHECKSUM_KEY, None)
    found_type = raw.pop(MODEL_TYPE_KEY, model_type)
    if model_type is not None and found_type != model_type:
        raise error(f"{cfg_path}: model_type is {found_type!r}, not {model_type!r}")
    try:
        verify_weights_checksum(w_path, checksum)
    except ValueError as e:
        raise error(str(e)) from e
    try:
        state = load_file(str(w_path), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise error(f"{w_path}: not a readable safetensors file ({e})") from e
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise error(f"{w_path}: corrupted weights: {len(bad)} tensor(s) hold NaN/Inf (e.g. {', '.join(bad[:3])})")
    return raw, state


def check_state(
    expected: Mapping[str, Tensor],
    state: Mapping[str, Tensor],
    where: str | Path,
    error: type[CheckpointError] = CheckpointError,
) -> None:
    """Raise ``error`` unless ``state`` has exactly the names and shapes of ``expected``.

    The message names ``where`` and lists up to three missing, unexpected and mis-shaped tensors.
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shape_bad = [
        f"{k}: file {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or shape_bad:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors (e.g. {', '.join(unexpected[:3])})")
        if shape_bad:
            parts.append(f"shape mismatch: {'; '.join(shape_bad[:3])}")
        raise error(f"{where}: weights do not match config.json: " + "; ".join(parts))


def convert_weights(directory: str | Path, dtype: torch.dtype, min_numel: int = 1024) -> Path:
    """Rewrite a checkpoint directory's floating-point weights of at least ``min_numel`` elements in
    ``dtype`` (e.g. ``torch.float16`` halves a codec for transport); smaller tensors (normalisation
    statistics, norms, biases, scalars) stay as they are. ``config.json`` gets the new checksum; the
    safetensors header metadata is kept. Loading casts back to the model's dtype (shapes are what
    :func:`check_state` compares).

    Raises:
        CheckpointError: as :func:`read_checkpoint`.
    """
    from safetensors import safe_open

    d = Path(directory)
    raw, state = read_checkpoint(d)
    model_type = json.loads((d / CONFIG_NAME).read_text()).get(MODEL_TYPE_KEY)  # read_checkpoint drops it
    with safe_open(str(d / WEIGHTS_NAME), framework="pt") as fh:
        meta = fh.metadata() or {}
    cast = {k: v.to(dtype) if v.is_floating_point() and v.numel() >= min_numel else v for k, v in state.items()}
    return save_checkpoint(d, raw, cast, model_type=model_type, metadata=meta)


def set_weights_metadata(directory: str | Path, updates: Mapping[str, str]) -> Path:
    """Rewrite a checkpoint directory's safetensors header metadata with ``updates`` merged in (the
    tensors unchanged, ``config.json`` given the new checksum), e.g. a fingerprint that rounding the
    weights by :func:`convert_weights` has changed.

    Raises:
        CheckpointError: as :func:`read_checkpoint`.
    """
    from safetensors import safe_open

    d = Path(directory)
    raw, state = read_checkpoint(d)
    model_type = json.loads((d / CONFIG_NAME).read_text()).get(MODEL_TYPE_KEY)
    with safe_open(str(d / WEIGHTS_NAME), framework="pt") as fh:
        meta = {**(fh.metadata() or {}), **updates}
    return save_checkpoint(d, raw, state, model_type=model_type, metadata=meta)


# ---------------------------------------------------------------------------------------------
# Where a checkpoint comes from: a directory, or a Hugging Face Hub repository (cache-aware)
# ---------------------------------------------------------------------------------------------
CARD_NAME = "README.md"
"""The model card: the file a Hugging Face Hub repository shows on its page."""
HUB_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
"""Files fetched from a Hub repository (nothing else in it is downloaded)."""


def split_repo_id(spec: str) -> tuple[str, str | None] | None:
    """``"owner/name"`` or ``"owner/name@revision"`` -> ``(repo_id, revision)``; ``None`` when
    ``spec`` is not shaped like a Hub model id (exactly one ``/``, Hub-valid names)."""
    repo, _, revision = spec.partition("@")
    if repo.count("/") != 1 or spec.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return repo, revision or None
    try:
        validate_repo_id(repo)
    except HFValidationError:
        return None
    return repo, revision or None


def hub_snapshot(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    error: type[CheckpointError] = CheckpointError,
) -> Path:
    """Local directory of ``repo_id`` (at ``revision``) from the Hugging Face cache, downloading
    :data:`HUB_FILES` when the cache lacks them and downloads are allowed.

    ``huggingface_hub`` does the work, so its cache (``$HF_HUB_CACHE`` / ``$HF_HOME``, or
    ``cache_dir``) and ``HF_HUB_OFFLINE=1`` (cache only, never the network) behave as in every
    Hugging Face library.

    Raises:
        CheckpointError: the repository is not cached while offline, does not exist, or cannot be
            reached (one line naming the repository and what to do).
    """
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as e:  # pragma: no cover - huggingface_hub comes with transformers
        raise error(f"{repo_id}: loading from the Hugging Face Hub needs `pip install huggingface_hub`") from e
    at = f"{repo_id}@{revision}" if revision else repo_id
    try:
        path = Path(
            str(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=list(HUB_FILES)))
        )
    except LocalEntryNotFoundError as e:
        raise error(
            f"{at}: not a local directory, and not in the Hugging Face cache while downloads are off "
            "(HF_HUB_OFFLINE=1, or no network): download it once with HF_HUB_OFFLINE=0 "
            f"(or `hf download {repo_id}`), or pass a checkpoint directory"
        ) from e
    except RevisionNotFoundError as e:
        raise error(f"{at}: the Hugging Face repository has no revision {revision!r}") from e
    except RepositoryNotFoundError as e:
        raise error(f"{at}: no such Hugging Face model repository (or it is private: log in with `hf auth login`)") from e
    except (HfHubHTTPError, OSError) as e:
        raise error(f"{at}: could not fetch it from the Hugging Face Hub ({' '.join(str(e).split())[:200]})") from e
    if not is_checkpoint_dir(path):
        raise error(f"{at}: the Hugging Face repository holds no {CONFIG_NAME} + {WEIGHTS_NAME} ({path})")
    return path


def resolve_checkpoint(
    spec: str | Path,
    cache_dir: str | Path | None = None,
    error: type[CheckpointError] = CheckpointError,
) -> Path:
    """A checkpoint spec -> its local directory.

    ``spec`` is an existing directory (used as it is) or a Hub id ``owner/name[@revision]``
    (:func:`hub_snapshot`); an existing path always wins over a Hub id of the same spelling.

    Raises:
        CheckpointError: neither an existing path nor a Hub id, or the Hub lookup failed.
    """
    if Path(spec).expanduser().exists():
        return Path(spec).expanduser()
    hub = split_repo_id(str(spec))
    if hub is None:
        raise error(f"{spec}: checkpoint directory not found (nor a Hugging Face repo id 'owner/name')")
    return hub_snapshot(hub[0], hub[1], cache_dir, error)


DEFAULT_CODEC_DIR = "checkpoints/entanglecodec-small"
DEFAULT_VOCODER_DIR = "checkpoints/vocoder-small"
"""The bundled models, relative to a source checkout's root."""


def _find_repo_checkpoints() -> Path:
    return Path(__file__).resolve().parents[2] / "checkpoints"


def default_checkpoint_dir(cache_dir: str | Path | None = None) -> Path:
    """The default model: ``$ENTANGLECODEC_CHECKPOINT`` (a directory or a Hugging Face Hub id
    ``owner/name[@revision]``, see :func:`resolve_checkpoint`), else the bundled
    ``checkpoints/entanglecodec-small`` of a source checkout.

    Raises:
        CheckpointError: the variable names nothing usable, or no bundled model exists (a wheel
            ships none: pass a directory or a Hub id, or set the variable).
    """
    env = os.environ.get("ENTANGLECODEC_CHECKPOINT")
    if env:
        c = Path(env).expanduser()
        if not c.exists() and split_repo_id(env) is not None:
            try:
                return resolve_checkpoint(env, cache_dir)
            except CheckpointError as e:
                raise CheckpointError(f"ENTANGLECODEC_CHECKPOINT={env}: {e}") from e
        if not is_checkpoint_dir(c):
            why = "does not exist" if not c.exists() else f"does not hold {CONFIG_NAME} + {WEIGHTS_NAME}"
            raise CheckpointError(f"ENTANGLECODEC_CHECKPOINT={env}: {why} (unset it to use the bundled model)")
        return c
    candidates = [_find_repo_checkpoints() / Path(DEFAULT_CODEC_DIR).name]
    for c in candidates:
        if is_checkpoint_dir(c):
            return c
    raise CheckpointError(
        "no default EntangleCodec model found: none of "
        + ", ".join(str(c) for c in candidates)
        + " holds config.json + model.safetensors (a source checkout ships checkpoints/entanglecodec-small). "
        "Pass a checkpoint directory or a Hugging Face repo id (--checkpoint / from_pretrained), "
        "set ENTANGLECODEC_CHECKPOINT, or train one (`entanglecodec train stage1`, see README)."
    )


def default_vocoder_dir(error: type[CheckpointError] = CheckpointError) -> Path | None:
    """Directory of the shipped default vocoder, or ``None`` if it is not installed.

    Looked up in ``$ENTANGLECODEC_VOCODER`` first (a directory or a Hugging Face Hub id), then
    ``checkpoints/vocoder-small`` under a source checkout's root and under the current working
    directory.

    Raises:
        CheckpointError (``error``): ``$ENTANGLECODEC_VOCODER`` is a Hub id that cannot be resolved.
    """
    env = os.environ.get("ENTANGLECODEC_VOCODER")
    if env and not Path(env).exists() and split_repo_id(env) is not None:
        return resolve_checkpoint(env, error=error)
    candidates = [Path(env)] if env else []
    candidates += [_find_repo_checkpoints() / Path(DEFAULT_VOCODER_DIR).name, Path.cwd() / DEFAULT_VOCODER_DIR]
    for c in candidates:
        if is_checkpoint_dir(c):
            return c
    return None


def model_card(
    title: str,
    summary: str,
    facts: Mapping[str, object],
    usage: str,
    tags: list[str],
    pipeline_tag: str | None = None,
) -> str:
    """A model card (Markdown with the Hub's YAML metadata block) for a checkpoint directory.

    Args:
        title: the heading.
        summary: one paragraph on what the model is.
        facts: ``name -> value`` rows of a table (sizes, rates, fingerprint...).
        usage: a Python snippet showing how to load and use it.
        tags: Hub tags (the library name is added).
        pipeline_tag: the Hub task, when one fits.
    """
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        license="mit", library_name="entanglecodec", tags=["entanglecodec", *tags], pipeline_tag=pipeline_tag
    )
    rows = "\n".join(f"| {k} | {v} |" for k, v in facts.items())
    body = (
        f"# {title}\n\n{summary}\n\n| field | value |\n|---|---|\n{rows}\n\n"
        f"## Use\n\n```python\n{usage.strip()}\n```\n\n"
        f"Files: `{CONFIG_NAME}` (configuration, with the SHA-256 of the weights), `{WEIGHTS_NAME}`.\n"
    )
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}").content)
