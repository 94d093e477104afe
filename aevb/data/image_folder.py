"""A folder of PNG/JPEG images as data (``aevb train --dataset DIR``), read with Pillow.

The folder holds either the images themselves (no labels) or one subfolder per class, the
convention of torchvision's ``ImageFolder``: the subfolders, sorted by name, are the classes
0, 1, ..., their images labelled so. Within a folder the files are read sorted by name, so the
same folder always gives the same array. Names that begin with a dot (``.DS_Store``,
``.ipynb_checkpoints``) are skipped; any other file that is not a ``.png``, ``.jpg`` or ``.jpeg``
image is a one-line error naming it.

Grey images (Pillow modes ``L`` and ``1``) give one channel; RGB images three. Other 8-bit modes
(RGBA, LA, palette ``P``, CMYK, ...) are converted to RGB, dropping any transparency; in a folder
that holds any colour image, the grey ones are converted to RGB too. 16-bit and floating-point
images (modes ``I;16``, ``I``, ``F``) are refused: their grey levels do not fit 0..255.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import AevbError
from .formats import _one_line

__all__ = ["IMAGE_SUFFIXES", "read_image_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GREY_MODES = ("L", "1")
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _visible(folder: Path) -> list[Path]:
    return sorted((entry for entry in folder.iterdir() if not entry.name.startswith(".")), key=lambda p: p.name)


def _image_files(folder: Path) -> list[Path]:
    files = _visible(folder)
    for entry in files:
        if entry.is_dir():
            raise AevbError(
                f"{entry}: a folder inside the class folder {folder.name}; a class folder holds only images"
            )
        if entry.suffix.lower() not in IMAGE_SUFFIXES:
            raise AevbError(f"{entry}: not a PNG or JPEG image (.png, .jpg, .jpeg); move it out of {folder}")
    return files


def _layout(folder: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """The image files of ``folder`` in reading order, their labels (None: no class folders) and
    the class names."""
    entries = _visible(folder)
    classes = [entry for entry in entries if entry.is_dir()]
    if not classes:
        return _image_files(folder), None, []
    loose = [entry for entry in entries if not entry.is_dir()]
    if loose:
        raise AevbError(
            f"{loose[0]}: {folder} holds both files and class folders; put the images either directly "
            "in it or in one subfolder per class"
        )
    files, labels = [], []
    for label, class_folder in enumerate(classes):
        members = _image_files(class_folder)
        if not members:
            raise AevbError(f"{class_folder}: the class folder holds no images")
        files += members
        labels += [label] * len(members)
    return files, labels, [c.name for c in classes]


def _read_image(path: Path, image_size: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 (H, W) (grey) or (H, W, 3) (RGB), resized to ``image_size`` (H, W)."""
    from PIL import Image, UnidentifiedImageError  # deferred: only image folders need Pillow

    try:
        with Image.open(path) as image:
            if image.format not in ("PNG", "JPEG"):
                raise AevbError(f"{path}: a {image.format} image, not PNG or JPEG")
            if image.mode in _WIDE_MODES:
                raise AevbError(
                    f"{path}: a {image.mode} image (16-bit or floating-point grey levels); save it with 8 bits"
                )
            image = image.convert("L" if image.mode in _GREY_MODES else "RGB")
            if image_size is not None and image.size != (image_size[1], image_size[0]):
                image = image.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except AevbError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:  # Pillow's decoders raise all these
        raise AevbError(f"{path}: cannot read image ({_one_line(exc)})") from None


def read_image_folder(
    folder: str | os.PathLike, image_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read every image of ``folder`` (layout, modes and order: the module docstring).

    Args:
        folder: the folder of images, or of one subfolder of images per class.
        image_size: ``(H, W)`` pixels every image is resized to (bilinear); None: the images must
            all have the size of the first.

    Returns:
        ``(images, labels, classes)``: uint8 ``(N, H, W)`` for grey images or ``(N, H, W, 3)``
        for colour; int64 labels ``(N,)`` or None without class folders; the class names.

    Raises:
        AevbError: one line naming the first file at fault: an empty folder, a file that is not a
            PNG or JPEG image, an image of another size than the first (without ``image_size``).
    """
    folder = Path(folder)
    files, labels, classes = _layout(folder)
    if not files:
        raise AevbError(f"{folder}: holds no PNG or JPEG images")
    images = []
    for path in files:
        pixels = _read_image(path, image_size)
        if images and pixels.shape[:2] != images[0].shape[:2]:
            (height, width), (first_height, first_width) = pixels.shape[:2], images[0].shape[:2]
            raise AevbError(
                f"{path}: {width}×{height} pixels, but {files[0].name} has {first_width}×{first_height} (width×height); "
                "all images must share one size, or set `image_size` to resize them"
            )
        images.append(pixels)
    if any(pixels.ndim == 3 for pixels in images):  # a colour folder: its grey images become RGB
        images = [np.repeat(p[..., None], 3, axis=2) if p.ndim == 2 else p for p in images]
    return np.stack(images), None if labels is None else np.asarray(labels, dtype=np.int64), classes
