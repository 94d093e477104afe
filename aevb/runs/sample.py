"""Drawing samples from a trained run (Figs. 7–11)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..checkpoint import refuse_link
from ..errors import AevbError
from ..figures import save_samples
from ..memory import require_sampling_memory
from .layout import refuse_to_replace
from .loading import load_run, model_choice


def sample_run(
    run_dir: str | os.PathLike,
    *,
    num_samples: int = 100,
    seed: int = 0,
    out: str | None = None,
    device: str = "auto",
    label: int | None = None,
    checkpoint: bool | str = False,
    overwrite: bool = False,
) -> Path:
    """Draw ``num_samples`` images E[x|z], z ~ p(z), from a run; write a PNG grid (and .npy).

    A conditional run draws E[x|z, y]: all of class ``label`` when given; otherwise the
    class-conditional grid, one row per class and ⌈num_samples / C⌉ columns, each column one z.
    A full-VB run decodes with θ = μ_θ, the mean of q(θ). ``checkpoint``: which model (as for
    :func:`~aevb.runs.load_run`): "final" (False, the default), "latest" (True: the latest
    checkpoint's, a run still training or stopped; the default file name then ends in
    ``-checkpoint``) or "best" (by validation bound; the name ends in ``-best``), so that the run's own figures are never replaced. An ``out`` that exists is
    replaced only with ``overwrite`` (the default file, the same draw again, always is, but never
    through a symbolic link in its place).
    """
    if num_samples < 1:
        raise AevbError(f"`num_samples` must be a positive integer, got {num_samples}")
    checkpoint = model_choice(checkpoint)
    suffix = {"final": "", "latest": "-checkpoint", "best": "-best"}[checkpoint]
    # One file per (seed, label): a labelled draw never overwrites the class grid of the same seed.
    default_name = f"samples-seed{seed}{'' if label is None else f'-label{label}'}{suffix}.png"
    target = Path(out) if out else Path(run_dir) / default_name
    if target.suffix.lower() not in (".png", ".npy"):
        raise AevbError(f"`out` {target}: unsupported file type {target.suffix or '(none)'!r}; use .png or .npy")
    if out:
        refuse_to_replace(target, overwrite)
    else:  # a file in the run directory, which others may share: never written through a link there
        refuse_link(target)
    model, _ = load_run(run_dir, device, checkpoint)
    generator = torch.Generator().manual_seed(seed)
    classes = model.config.num_classes
    columns = min(10, num_samples)
    # Before anything is drawn: all the images are decoded at once, so too many cannot be streamed.
    require_sampling_memory(
        model.config,
        num_samples,
        class_grid=classes is not None and label is None,
        png=target.suffix.lower() == ".png",
        device=next(model.parameters()).device,
    )
    if classes is None:
        if label is not None:
            raise AevbError("`label` needs a conditional run (trained with `conditional`)")
        images = model.sample(num_samples, generator=generator).cpu()
    elif label is None:
        columns = -(-num_samples // classes)
        images = model.class_grid(columns, generator=generator).cpu()
    else:
        if not 0 <= label < classes:
            raise AevbError(f"`label` {label} is outside the run's classes 0..{classes - 1}")
        images = model.sample(num_samples, generator=generator, labels=torch.full((num_samples,), label)).cpu()
    if target.suffix.lower() == ".npy":
        import numpy as np

        with open(target, "wb") as stream:  # a file object: np.save adds no second suffix to .NPY
            np.save(stream, images.numpy())
        return target
    if model.config.image_shape is None:
        raise AevbError("the model's data have no image shape; write samples to a .npy file (`out` FILE.npy)")
    what = ("one row per class" if label is None else f"class {label}") if classes is not None else "samples"
    save_samples(
        images,
        model.config.image_shape,
        target,
        columns=columns,
        title=f"{images.shape[0]} {'samples, ' if classes is not None else ''}{what}, seed {seed}",
    )
    return target
