"""Validation figures (matplotlib, Agg backend): reference mels above, model output below."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor


def save_mel_grid(
    path: str | Path,
    refs: Sequence[Tensor],
    outs: Sequence[Tensor],
    title: str = "",
    labels: tuple[str, str] = ("reference", "output"),
) -> Path:
    """Plot pairs of mels ``[n_mels, F]`` as a 2 x N grid PNG (row 0: ``refs``, row 1: ``outs``).

    Each column shares the colour range of its reference; ``labels`` title the two rows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = len(refs)
    fig, axes = plt.subplots(2, n, figsize=(10 if n == 1 else 4 * n, 5), squeeze=False, sharex="col")
    for i in range(n):
        vmin, vmax = float(refs[i].min()), float(refs[i].max())
        for row, m in enumerate((refs[i], outs[i])):
            ax = axes[row][i]
            ax.imshow(m.float().cpu().numpy(), origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma")
            ax.set_ylabel("mel bin")
            ax.set_title(labels[row], fontsize=9)
        axes[1][i].set_xlabel("frame (20 ms)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(p, dpi=80)
    plt.close(fig)
    return p


def save_mel_comparison(original: Tensor, reconstruction: Tensor, path: str | Path, title: str = "") -> Path:
    """Plot two normalised mels ``[n_mels, F]`` (original above, reconstruction below) to a PNG."""
    return save_mel_grid(path, [original], [reconstruction], title, ("original", "reconstruction (1 Euler step)"))
