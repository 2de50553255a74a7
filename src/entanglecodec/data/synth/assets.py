"""Recordings, sentences and sound fonts that Debian ships, unpacked into a local cache.

The synthetic corpus uses real audio from Debian packages (recorded speech prompts, game music,
desktop sound themes) and a real text corpus (fortune cookies). We never install these packages:
each one is fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` into
``$ENTANGLECODEC_ASSET_DIR`` (default ``~/.cache/entanglecodec/debian-assets``), one directory per
package. Before a package is used its ``copyright`` file is checked for the licence we vetted
(see :data:`PACKAGES`), so a repackaged upstream with a different licence is refused, not used.

A package directory holds a ``.complete.json`` marker (package, version, licence) written last, so
an interrupted unpack is redone instead of being half-used.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "ENTANGLECODEC_ASSET_DIR"
_MARKER = ".complete.json"


class AssetError(RuntimeError):
    """A Debian asset package cannot be fetched, unpacked or fails its licence check."""


@dataclass(frozen=True)
class PackageSpec:
    """A Debian package we take audio or text from.

    Attributes:
        name: Debian binary package name.
        licence: the licence we checked by reading the package's ``copyright`` file.
        licence_marker: text that must occur in ``usr/share/doc/<name>/copyright``.
        purpose: what the generator takes from it.
    """

    name: str
    licence: str
    licence_marker: str
    purpose: str


def _spec(name: str, licence: str, marker: str, purpose: str) -> PackageSpec:
    return PackageSpec(name, licence, marker, purpose)


# Only vetted packages can be fetched (an allow-list). The English Asterisk sounds, in every format, are
# reserved for external validation (see DESIGN.md) and are deliberately absent: only these languages are.
ASTERISK_LANGUAGES = ("es", "fr", "it", "ru")

PACKAGES: dict[str, PackageSpec] = {
    s.name: s
    for s in [
        *(
            _spec(
                f"asterisk-core-sounds-{lang}-g722",
                "CC-BY-SA-3.0 (ru: CC-BY-3.0)",
                "CC-BY-SA-3.0",
                f"recorded speech prompts ({lang}), 16 kHz G.722",
            )
            for lang in ASTERISK_LANGUAGES
        ),
        *(
            _spec(
                f"asterisk-core-sounds-{lang}",
                "CC-BY-SA-3.0 (ru: CC-BY-3.0)",
                "CC-BY-SA-3.0",
                f"transcripts of the {lang} prompts (core-sounds-{lang}.txt.gz)",
            )
            for lang in ASTERISK_LANGUAGES
        ),
        _spec("asterisk-prompt-es-co", "GPL-2", "GNU General Public License", "recorded Colombian Spanish prompts"),
        _spec("asterisk-prompt-fr-armelle", "BSD-style", "Redistribution and use", "recorded French prompts"),
        _spec("asterisk-prompt-it-menardi-wav", "CC-BY-SA-3.0-IT", "CC-SA-BY-3.0", "recorded Italian prompts"),
        _spec("ktuberling-data", "GPL-2+", "GPL-2+", "spoken single words in many languages"),
        _spec("klettres-data", "GPL-2+", "GPL-2+", "recorded letters and syllables in many languages"),
        _spec("fillets-ng-data", "GPL-2", "version 2 dated June, 1991", "Fish Fillets NG scripts (the dubs' transcripts)"),
        _spec("fillets-ng-data-cs", "GPL-2", "version 2 dated June, 1991", "recorded Czech game dialogue (Fish Fillets NG)"),
        _spec("fillets-ng-data-nl", "GPL-2", "version 2 dated June, 1991", "recorded Dutch game dialogue (Fish Fillets NG)"),
        _spec("drascula", "Drascula-License (free redistribution and modification)", "Drascula-License",
              "recorded English game dialogue and its subtitles (Drascula)"),
        _spec("flight-of-the-amazon-queen", "Flight-of-the-Amazon-Queen-License (free redistribution and modification)",
              "Flight-of-the-Amazon-Queen-License", "recorded English game dialogue (Flight of the Amazon Queen)"),
        _spec("beneath-a-steel-sky", "Beneath-a-Steel-Sky-License (free redistribution and modification)",
              "Beneath-a-Steel-Sky-License", "recorded English game dialogue (Beneath a Steel Sky)"),
        _spec("drascula-spanish", "Drascula-License (free redistribution and modification)", "Drascula-License",
              "recorded Spanish game dialogue (Drascula)"),
        _spec("warmux-data", "GPL-2+", "GNU General Public License", "recorded game music and sound effects"),
        _spec(
            "warzone2100-music", "GPL-2+ / CC-BY-SA-3.0 (soundtracks)", "GPL-2+",
            "recorded game music (real-speech evaluation set only)",
        ),
        _spec("openarena-data", "GPL-2+", "GPL-2+", "recorded game sound effects (real-speech evaluation set only)"),
        _spec("colobot-common-sounds", "GPL-3+", "GPL-3+", "recorded game music"),
        _spec("asterisk-moh-opsound-wav", "CC-BY-SA-3.0", "by-sa/3.0", "recorded music-on-hold tracks"),
        _spec("frozen-bubble-data", "GPL-2", "GPL-2", "recorded game sound effects and music"),
        _spec("oxygen-sounds", "LGPL-3.0-or-later", "LGPL-3.0-or-later", "desktop sound effects"),
        _spec("sound-theme-freedesktop", "CC-BY-SA-3.0 / CC-BY-3.0 / GPL-2+", "CC-BY-SA-3.0", "desktop sound effects"),
        _spec("lomiri-sounds", "CC-BY-SA-3.0 / CC-BY-4.0 / CC0-1.0", "CC-BY-SA-3.0", "phone sounds and ringtones"),
        _spec("tuxpaint-data", "GPL-2+", "GPL-2+", "sound effects of a drawing program"),
        _spec("fortunes", "BSD (fortune-mod)", "Redistribution and use", "English sentences for text-to-speech"),
        _spec("fortunes-min", "BSD (fortune-mod)", "Redistribution and use", "English sentences for text-to-speech"),
        _spec("fluid-soundfont-gm", "MIT", "MIT", "General MIDI sound font FluidR3_GM.sf2"),
    ]
}


def asset_dir() -> Path:
    """The cache root: ``$ENTANGLECODEC_ASSET_DIR`` or ``~/.cache/entanglecodec/debian-assets``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "entanglecodec" / "debian-assets"


def _run(cmd: list[str], cwd: Path, package: str) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except FileNotFoundError as e:
        raise AssetError(
            f"cannot fetch Debian package '{package}': '{cmd[0]}' is not available on this machine. "
            f"On a Debian/Ubuntu system run `apt-get download {package} && dpkg-deb -x {package}_*.deb "
            f"{asset_dir() / package}`, or point {ENV_VAR} at a directory that already holds it."
        ) from e
    except subprocess.TimeoutExpired as e:
        raise AssetError(f"cannot fetch Debian package '{package}': `{' '.join(cmd)}` timed out") from e
    if proc.returncode != 0:
        hint = " (run `apt-get update` first?)" if cmd[0] == "apt-get" else ""
        raise AssetError(
            f"cannot fetch Debian package '{package}': `{' '.join(cmd)}` failed with exit code "
            f"{proc.returncode}{hint}: {proc.stderr.strip()[-500:]}"
        )
    return proc.stdout


def check_licence(package: str, root: Path) -> str:
    """Check that an unpacked package's copyright file states the licence we vetted.

    Args:
        package: Debian package name (a key of :data:`PACKAGES`).
        root: the directory the package was unpacked into.

    Returns:
        the licence string recorded in :data:`PACKAGES`.

    Raises:
        AssetError: unknown package, missing copyright file, or the licence marker is absent.
    """
    if package not in PACKAGES:
        raise AssetError(f"'{package}' is not a vetted asset package (known: {', '.join(sorted(PACKAGES))})")
    spec = PACKAGES[package]
    copyright_file = root / "usr" / "share" / "doc" / package / "copyright"
    if not copyright_file.is_file():
        raise AssetError(f"Debian package '{package}': no copyright file at {copyright_file}; refusing to use it")
    text = copyright_file.read_text(encoding="utf-8", errors="replace")
    if spec.licence_marker not in text:
        raise AssetError(
            f"Debian package '{package}': its copyright file {copyright_file} no longer mentions "
            f"'{spec.licence_marker}' (vetted licence: {spec.licence}); refusing to use it"
        )
    return spec.licence


def ensure_package(package: str) -> Path:
    """Return the unpacked root of a Debian package, fetching and unpacking it on first use.

    Args:
        package: Debian package name (a key of :data:`PACKAGES`).

    Returns:
        directory whose subtree mirrors the package's files (``usr/share/...``).

    Raises:
        AssetError: apt/dpkg unavailable or failing, or the licence check fails.
    """
    if package not in PACKAGES:
        raise AssetError(f"'{package}' is not a vetted asset package (known: {', '.join(sorted(PACKAGES))})")
    root = asset_dir() / package
    if (root / _MARKER).is_file():
        return root
    asset_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=asset_dir(), prefix=f".{package}-") as tmp:
        tmpdir = Path(tmp)
        if shutil.which("apt-get") is None:
            _run(["apt-get"], tmpdir, package)  # raises the explanatory AssetError
        _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package], tmpdir, package)
        debs = sorted(tmpdir.glob(f"{package}_*.deb"))
        if len(debs) != 1:
            raise AssetError(f"Debian package '{package}': expected one .deb after download, found {len(debs)}")
        version = _run(["dpkg-deb", "-f", str(debs[0]), "Version"], tmpdir, package).strip()
        unpack = tmpdir / "root"
        _run(["dpkg-deb", "-x", str(debs[0]), str(unpack)], tmpdir, package)
        licence = check_licence(package, unpack)
        (unpack / _MARKER).write_text(json.dumps({"package": package, "version": version, "licence": licence}))
        if root.exists():
            shutil.rmtree(root)
        unpack.rename(root)
    return root


def package_info(package: str) -> dict[str, str]:
    """``{"package", "version", "licence"}`` of an unpacked package (fetching it if needed)."""
    root = ensure_package(package)
    info: dict[str, str] = json.loads((root / _MARKER).read_text())
    return info


def find_soundfont() -> Path:
    """Path of FluidR3_GM.sf2: the installed Debian file, else the unpacked ``fluid-soundfont-gm``."""
    system = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
    if system.is_file():
        return system
    root = ensure_package("fluid-soundfont-gm")
    path = root / "usr" / "share" / "sounds" / "sf2" / "FluidR3_GM.sf2"
    if not path.is_file():
        raise AssetError(f"fluid-soundfont-gm unpacked at {root} has no FluidR3_GM.sf2")
    return path


def soundfont_version() -> str:
    """Debian version of the sound font in use (installed or unpacked)."""
    if Path("/usr/share/sounds/sf2/FluidR3_GM.sf2").is_file():
        try:
            out = subprocess.run(
                ["dpkg-query", "-W", "-f=${Version}", "fluid-soundfont-gm"], capture_output=True, text=True
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except FileNotFoundError:
            pass
        return "installed (version unknown)"
    return package_info("fluid-soundfont-gm")["version"]
