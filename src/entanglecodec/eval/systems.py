"""Codecs under evaluation: our model, classical baselines, mel-oracle upper bounds, any external command.

A :class:`System` maps a 24 kHz mono waveform to its 24 kHz reconstruction and states its bitrate.
Outputs have the input's length (trimmed or zero-padded at the end); any codec delay is left in
place for :func:`entanglecodec.eval.metrics.align` to remove, exactly as for an unknown codec.

=============================  ======================================================  ===========
system                         what it runs                                            bitrate
=============================  ======================================================  ===========
:class:`EntangleCodecSystem`   ``EntangleCodec.reconstruct`` (tokens -> flow -> vocoder)  ``model.bitrate``
:class:`Codec2System`          Debian ``codec2``: ``c2enc``/``c2dec`` on 8 kHz 16-bit raw  700 / 1200 / 3200
:class:`OpusSystem`            Debian ``opus-tools``: ``opusenc --bitrate N`` / ``opusdec``  N kbps (VBR target)
:class:`MelOracleSystem`       wave -> codec log-mel -> vocoder (no quantisation)        ``None`` (continuous)
:class:`CommandSystem`         any command template ``"CMD {in} {out}"`` on WAV files     given or ``None``
=============================  ======================================================  ===========
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 24000
"""Rate (Hz) of every system's input and output."""


class CodecSystemError(RuntimeError):
    """A system failed to process audio (missing tool, command error, unreadable output)."""


def _check_input(wav: Any) -> np.ndarray:
    from .metrics import MetricError, check_signal

    try:
        return check_signal(wav, "input waveform").astype(np.float32)
    except MetricError as e:
        raise CodecSystemError(str(e)) from e


def _fit_length(wav: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad ``[S]`` at the end to ``n`` samples (``float32``)."""
    out = np.zeros(n, dtype=np.float32)
    k = min(n, wav.size)
    out[:k] = wav[:k]
    return out


def _require_tool(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise CodecSystemError(
            f"'{tool}' not found on PATH: install the Debian package '{package}' (apt-get install {package})"
        )
    return path


def _run(cmd: list[str] | str, timeout: float, what: str) -> None:
    """Run a command; on failure raise :class:`CodecSystemError` with the command and its stderr tail."""
    shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
    try:
        proc = subprocess.run(
            cmd, shell=isinstance(cmd, str), capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise CodecSystemError(f"{what}: command timed out after {timeout:g} s: {shown}") from e
    except OSError as e:
        raise CodecSystemError(f"{what}: cannot run {shown}: {e}") from e
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-2000:] or "(no stderr)"
        raise CodecSystemError(
            f"{what}: command failed with exit code {proc.returncode}: {shown}\nstderr:\n{err}"
        )


class System(ABC):
    """A codec under evaluation: 24 kHz mono float waveform in, 24 kHz reconstruction out.

    Attributes:
        name: label used in tables and plots.
        bitrate: bits per second of the transmitted representation, or ``None`` when it does not
            apply (continuous mel oracles) or is unknown (external commands).
    """

    name: str
    bitrate: float | None

    @abstractmethod
    def process(self, wav: np.ndarray) -> np.ndarray:
        """Reconstruct one clip.

        Args:
            wav: ``float32 [S]`` mono waveform at 24 kHz in ``[-1, 1]``.

        Returns:
            ``float32 [S]`` reconstruction at 24 kHz (same length; delay, if any, left in place).
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, bitrate={self.bitrate!r})"


# ---------------------------------------------------------------------------------------------
# External commands
# ---------------------------------------------------------------------------------------------
class CommandSystem(System):
    """Run any external codec through a shell command template on temporary WAV files.

    ``{in}`` is replaced by the input WAV (24 kHz, mono, 16-bit PCM) and ``{out}`` by the path the
    command must write; the output may use any sample rate or channel count libsndfile reads (it
    is down-mixed and resampled to 24 kHz). Both paths are shell-quoted; the template runs with
    ``/bin/sh`` from the caller's working directory (so relative paths to your own scripts and
    models work); ``$WORKDIR`` names a fresh temporary directory for intermediate files, removed
    afterwards. Pipes and ``&&`` work.

    Example::

        CommandSystem(
            "opus12", "opusenc --quiet --bitrate 12 {in} $WORKDIR/x.opus && opusdec --quiet $WORKDIR/x.opus {out}", 12000
        )

    Args:
        name: label for reports.
        template: command containing ``{in}`` and ``{out}``.
        bitrate: bits per second if known, else ``None``.
        timeout: seconds allowed per clip.
    """

    def __init__(
        self, name: str, template: str, bitrate: float | None = None, timeout: float = 600.0
    ) -> None:
        if "{in}" not in template or "{out}" not in template:
            raise ValueError(
                f"command template for system {name!r} must contain {{in}} and {{out}}: {template!r}"
            )
        if not name:
            raise ValueError("system name must not be empty")
        self.name = name
        self.template = template
        self.bitrate = bitrate
        self.timeout = float(timeout)

    def process(self, wav: np.ndarray) -> np.ndarray:
        from ..audio import AudioError, load_audio, save_audio

        x = _check_input(wav)
        with tempfile.TemporaryDirectory(prefix="entanglecodec-eval-") as tmp:
            src = Path(tmp) / "in.wav"
            dst = Path(tmp) / "out.wav"
            save_audio(src, x, SAMPLE_RATE)
            cmd = self.template.replace("{in}", shlex.quote(str(src))).replace("{out}", shlex.quote(str(dst)))
            cmd = f"export WORKDIR={shlex.quote(tmp)}; {cmd}"
            _run(cmd, self.timeout, f"system {self.name!r}")
            if not dst.exists():
                raise CodecSystemError(
                    f"system {self.name!r}: the command did not write {{out}}: {self.template}"
                )
            try:
                y, _ = load_audio(dst, SAMPLE_RATE)
            except AudioError as e:
                raise CodecSystemError(f"system {self.name!r}: cannot read the command's output: {e}") from e
        return _fit_length(y, x.size)


def parse_system_spec(spec: str, timeout: float = 600.0) -> CommandSystem:
    """Parse ``NAME=CMD`` (or ``NAME@BITRATE=CMD``, bitrate in bits per second) into a :class:`CommandSystem`.

    Example: ``"opus12@12000=opusenc --bitrate 12 {in} $WORKDIR/x.opus && opusdec $WORKDIR/x.opus {out}"``.

    Raises:
        ValueError: no ``=``, empty name, bad bitrate, or a template without ``{in}``/``{out}``.
    """
    name, sep, template = spec.partition("=")
    name = name.strip()
    if not sep or not name or not template.strip():
        raise ValueError(f"--system must look like NAME=CMD with {{in}} and {{out}} in CMD, got {spec!r}")
    bitrate: float | None = None
    if "@" in name:
        name, _, rate = name.partition("@")
        try:
            bitrate = float(rate)
        except ValueError as e:
            raise ValueError(
                f"--system {spec!r}: bitrate after '@' must be a number of bits per second, got {rate!r}"
            ) from e
        if bitrate <= 0:
            raise ValueError(f"--system {spec!r}: bitrate must be positive")
    return CommandSystem(name.strip(), template.strip(), bitrate=bitrate, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# Classical codecs
# ---------------------------------------------------------------------------------------------
CODEC2_MODES = {"700C": 700, "1200": 1200, "3200": 3200}
"""Codec2 modes offered as baselines and their bitrates (bits per second)."""


class Codec2System(System):
    """Codec2 (Debian ``codec2``): 24 kHz -> 8 kHz 16-bit raw -> ``c2enc`` -> ``c2dec`` -> 24 kHz.

    Resampling uses soxr (VHQ). Codec2 is a narrow-band speech codec: nothing above 4 kHz survives.

    Args:
        mode: ``"700C"``, ``"1200"`` or ``"3200"`` (bits per second).
        timeout: seconds allowed per call.
    """

    def __init__(self, mode: str = "3200", timeout: float = 600.0) -> None:
        mode = str(mode).upper()
        if mode not in CODEC2_MODES:
            raise ValueError(f"unknown Codec2 mode {mode!r}: use one of {sorted(CODEC2_MODES)}")
        self.mode = mode
        self.name = f"codec2-{mode}"
        self.bitrate = float(CODEC2_MODES[mode])
        self.timeout = float(timeout)

    def process(self, wav: np.ndarray) -> np.ndarray:
        from ..audio import resample

        x = _check_input(wav)
        enc = _require_tool("c2enc", "codec2")
        dec = _require_tool("c2dec", "codec2")
        pcm = (np.clip(resample(x, SAMPLE_RATE, 8000), -1.0, 1.0) * 32767.0).astype("<i2")
        with tempfile.TemporaryDirectory(prefix="entanglecodec-codec2-") as tmp:
            raw, bits, out = (os.path.join(tmp, f) for f in ("in.raw", "in.bit", "out.raw"))
            pcm.tofile(raw)
            _run([enc, self.mode, raw, bits], self.timeout, f"{self.name} encoder")
            _run([dec, self.mode, bits, out], self.timeout, f"{self.name} decoder")
            y = np.fromfile(out, dtype="<i2").astype(np.float32) / 32768.0
        if y.size == 0:
            raise CodecSystemError(
                f"{self.name}: decoder produced no samples for a {x.size / SAMPLE_RATE:.3f} s clip"
            )
        return _fit_length(resample(y, 8000, SAMPLE_RATE), x.size)


class OpusSystem(System):
    """Opus (Debian ``opus-tools``): ``opusenc --bitrate N`` on a 24 kHz WAV, ``opusdec --rate 24000``.

    ``opusdec`` removes the stream's pre-skip itself; whatever delay remains is removed by the
    evaluation's cross-correlation alignment. The bitrate is the encoder's VBR target.

    Args:
        bitrate_kbps: target bitrate in kbit/s (opusenc accepts 6..256).
        timeout: seconds allowed per call.
    """

    def __init__(self, bitrate_kbps: float = 6.0, timeout: float = 600.0) -> None:
        if not 6.0 <= float(bitrate_kbps) <= 256.0:
            raise ValueError(f"Opus bitrate must be within 6..256 kbit/s, got {bitrate_kbps}")
        self.bitrate_kbps = float(bitrate_kbps)
        self.name = f"opus-{self.bitrate_kbps:g}k"
        self.bitrate = self.bitrate_kbps * 1000.0
        self.timeout = float(timeout)

    def process(self, wav: np.ndarray) -> np.ndarray:
        from ..audio import load_audio, save_audio

        x = _check_input(wav)
        enc = _require_tool("opusenc", "opus-tools")
        dec = _require_tool("opusdec", "opus-tools")
        with tempfile.TemporaryDirectory(prefix="entanglecodec-opus-") as tmp:
            src, bits, out = (os.path.join(tmp, f) for f in ("in.wav", "in.opus", "out.wav"))
            save_audio(src, x, SAMPLE_RATE)
            _run(
                [enc, "--quiet", "--bitrate", f"{self.bitrate_kbps:g}", src, bits],
                self.timeout,
                f"{self.name} encoder",
            )
            _run(
                [dec, "--quiet", "--rate", str(SAMPLE_RATE), bits, out], self.timeout, f"{self.name} decoder"
            )
            y, _ = load_audio(out, SAMPLE_RATE)
        return _fit_length(y, x.size)


# ---------------------------------------------------------------------------------------------
# Mel oracle
# ---------------------------------------------------------------------------------------------
class MelOracleSystem(System):
    """Upper bound for any token decoder: wave -> the codec's exact log-mel -> vocoder -> wave.

    Args:
        vocoder: ``"griffin-lim"`` (32 fast Griffin-Lim iterations, always available) or any spec
            accepted by :func:`entanglecodec.vocoder.load.load_vocoder` (``"default"`` for the bundled
            neural vocoder, or a checkpoint directory).
        n_iter: Griffin-Lim iterations (ignored for neural vocoders).
    """

    bitrate = None

    def __init__(self, vocoder: str = "griffin-lim", n_iter: int = 32) -> None:
        from ..audio import MelFrontend
        from ..config import MelConfig

        self.mel_cfg = MelConfig()
        self.frontend = MelFrontend(self.mel_cfg).eval()
        self.vocoder_spec = vocoder
        if vocoder in ("griffin-lim", "gl"):
            from ..vocoder.griffin_lim import GriffinLim

            self._vocoder: Any = GriffinLim(self.mel_cfg, n_iter=n_iter)
            self.name = "mel-oracle-gl"
        else:
            from ..vocoder.load import load_vocoder
            from ..vocoder.model import VocoderLoadError

            try:  # no fall-back to Griffin-Lim: that row would be mislabelled
                self._vocoder = load_vocoder(vocoder, self.mel_cfg, fallback=False)
            except VocoderLoadError as e:
                raise CodecSystemError(f"mel oracle with the neural vocoder: {e}") from e
            self.name = "mel-oracle-vocoder" if vocoder == "default" else f"mel-oracle-{Path(vocoder).name}"

    def process(self, wav: np.ndarray) -> np.ndarray:
        import torch

        from ..vocoder.load import copy_synthesis

        x = _check_input(wav)
        y = copy_synthesis(self._vocoder, torch.from_numpy(x), self.frontend)
        return _fit_length(y.cpu().numpy().reshape(-1), x.size)


# ---------------------------------------------------------------------------------------------
# EntangleCodec
# ---------------------------------------------------------------------------------------------
class EntangleCodecSystem(System):
    """An EntangleCodec checkpoint (or an in-memory model) through ``reconstruct``.

    Args:
        checkpoint: a directory written by ``save_pretrained``, or an ``EntangleCodec`` instance.
        name: label for reports (default: the directory name, or ``"entanglecodec"``).
        steps, guidance: the decoder's Euler steps and classifier-free guidance (Eq. 12; ``None``: the
            checkpoint's default).
        oracle_f0: give a pitch-conditioned decoder the input's tracked F0 (the training tracker)
            instead of the F0 it predicts from the tokens — the diagnosis' oracle control.
    """

    def __init__(
        self,
        checkpoint: str | Path | Any,
        name: str | None = None,
        steps: int = 1,
        guidance: float | None = None,
        oracle_f0: bool = False,
    ) -> None:
        self.steps, self.guidance, self.oracle_f0 = steps, guidance, oracle_f0
        if isinstance(checkpoint, str | Path):
            from .load import load_codec

            path = Path(checkpoint)
            if not path.is_dir():
                raise CodecSystemError(
                    f"checkpoint {path} is not a directory (expected config.json + model.safetensors)"
                )
            self.model = load_codec(path).model
            self.name = name or path.resolve().name
        else:
            self.model = checkpoint
            self.name = name or "entanglecodec"
        self.model.eval()
        self.bitrate = float(self.model.bitrate)
        if oracle_f0 and self.model.pitch is None:
            raise CodecSystemError(f"{self.name}: oracle F0 needs a pitch-conditioned checkpoint (decoder.pitch_cond)")

    def process(self, wav: np.ndarray) -> np.ndarray:
        import torch

        x = _check_input(wav)
        with torch.no_grad():
            if self.oracle_f0:
                from ..training.aux_losses import frame_f0

                tokens = self.model.encode(torch.from_numpy(x)[None], SAMPLE_RATE)
                n = int(tokens.codes.shape[1])
                f0 = torch.from_numpy(frame_f0(x, SAMPLE_RATE, self.model.hop_length, n))[None]
                audio = self.model.decode(tokens, steps=self.steps, guidance=self.guidance, f0_hz=f0)
            else:
                audio = self.model.reconstruct(
                    torch.from_numpy(x)[None], SAMPLE_RATE, steps=self.steps, guidance=self.guidance
                )
        if int(audio.sample_rate) != SAMPLE_RATE:
            raise CodecSystemError(
                f"{self.name}: model returned {audio.sample_rate} Hz audio, expected {SAMPLE_RATE}"
            )
        n = int(audio.lengths[0]) if audio.lengths is not None else audio.wav.shape[-1]
        y = audio.wav[0, :n].detach().cpu().float().numpy()
        return _fit_length(y, x.size)


def default_baselines(include_neural_vocoder: bool = True, notes: list[str] | None = None) -> list[System]:
    """The baselines run beside every evaluation: Codec2 700C/1200/3200, Opus 6 kbps, mel oracles.

    The neural-vocoder mel oracle is added only when :func:`~entanglecodec.vocoder.load.load_vocoder` finds the default
    vocoder; Griffin-Lim is always there.

    Args:
        include_neural_vocoder: try to add the neural-vocoder mel oracle.
        notes: if given, receives one line per baseline that could not be built, and why.
    """
    systems: list[System] = [Codec2System(m) for m in CODEC2_MODES]
    systems.append(OpusSystem(6.0))
    systems.append(MelOracleSystem("griffin-lim"))
    if include_neural_vocoder:
        try:
            systems.append(MelOracleSystem("default"))
        except (CodecSystemError, OSError, ValueError) as e:
            if notes is not None:
                notes.append(f"baseline skipped: {e}")
    return systems
