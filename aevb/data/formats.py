"""Readers for the on-disk formats of the datasets, each returning a validated numpy array.

Every reader takes a path, checks the file thoroughly and raises :class:`aevb.errors.AevbError`
with a one-line message that starts with the path when anything is wrong. No numpy, struct,
zlib, gzip, zipfile or scipy exception escapes on bad input.

Formats
-------
IDX (MNIST)
    Big-endian binary: two zero bytes, a type code (``0x08`` = uint8, ...), the number of
    dimensions ``n``, then ``n`` big-endian uint32 sizes, then the data in C order. Images have
    magic 2051 (``00 00 08 03``, dims ``(N, 28, 28)``), labels magic 2049 (``00 00 08 01``,
    dims ``(N,)``). The file may be gzip-compressed (detected from its first bytes; a name
    ending in ``.gz`` must be gzip).
AMAT (binarized MNIST of Larochelle & Murray)
    Text, one image a line, ``D`` values ``0``/``1`` separated by single spaces. Optionally gzip.
MAT (Frey Face)
    MATLAB 5 file ``frey_rawface.mat`` with one variable ``ff``: uint8 ``(560, N)``, column ``j``
    is face ``j`` of 28 x 20 pixels in row-major order, i.e. faces are ``ff.T.reshape(-1, 28, 20)``.
NPY / NPZ (user data)
    numpy files, read with ``allow_pickle=False``; numeric, finite, non-empty arrays only.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from aevb.errors import AevbError

__all__ = [
    "read_file_bytes",
    "read_idx",
    "read_mnist_images",
    "read_mnist_labels",
    "read_amat_binary",
    "read_frey_mat",
]

GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IDX_IMAGES_MAGIC = 2051  # uint8, 3 dimensions
IDX_LABELS_MAGIC = 2049  # uint8, 1 dimension

FREY_ROWS = 28 * 20
FREY_IMAGE_SHAPE = (28, 20)


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` squeezed onto one line (library messages may span several)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def read_file_bytes(path: str | os.PathLike) -> bytes:
    """Return the contents of ``path``, gunzipped when it is a gzip file.

    A file whose first two bytes are the gzip magic is decompressed whatever its name; a file
    whose name ends in ``.gz`` but is not gzip is an error.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AevbError(f"{path}: cannot read file ({_one_line(exc)})") from None
    if raw[:2] == GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise AevbError(f"{path}: corrupt or truncated gzip data ({_one_line(exc)})") from None
    if path.suffix == ".gz":
        raise AevbError(f"{path}: not a gzip file (name ends in .gz but the gzip magic bytes are missing)")
    return raw


def read_idx(path: str | os.PathLike, *, magic: int | None = None) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array in native byte order.

    Args:
        path: the file.
        magic: when given, the expected 32-bit magic number (2051 for MNIST images, 2049 for
            labels); it fixes both the element type and the number of dimensions.

    Returns:
        An array with the dimensions stored in the header, e.g. uint8 ``(N, 28, 28)``.
    """
    path = Path(path)
    data = read_file_bytes(path)
    if len(data) < 4:
        raise AevbError(f"{path}: not an IDX file (only {len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise AevbError(f"{path}: not an IDX file (bad magic number 0x{found:08x})")
    if magic is not None and found != magic:
        raise AevbError(f"{path}: wrong IDX magic number {found} (expected {magic})")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise AevbError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) < expected:
        raise AevbError(f"{path}: truncated IDX file ({len(data)} bytes, header dims {dims} need {expected})")
    if len(data) > expected:
        raise AevbError(f"{path}: {len(data) - expected} unexpected trailing bytes after IDX data of dims {dims}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_mnist_images(path: str | os.PathLike, image_shape: tuple[int, int] = (28, 28)) -> np.ndarray:
    """Read MNIST images from an IDX file: uint8 ``(N, 28, 28)``, grey levels 0..255, N >= 1."""
    images = read_idx(path, magic=IDX_IMAGES_MAGIC)
    if images.ndim != 3 or images.shape[1:] != tuple(image_shape):
        raise AevbError(f"{path}: images have dims {images.shape}, expected (N, {image_shape[0]}, {image_shape[1]})")
    if images.shape[0] == 0:
        raise AevbError(f"{path}: contains no images")
    return images


def read_mnist_labels(path: str | os.PathLike) -> np.ndarray:
    """Read MNIST labels from an IDX file: int64 ``(N,)`` with values 0..9."""
    labels = read_idx(path, magic=IDX_LABELS_MAGIC)
    if labels.size and labels.max() > 9:
        raise AevbError(f"{path}: label value {int(labels.max())} out of range 0..9")
    return labels.astype(np.int64)


def read_amat_binary(path: str | os.PathLike, dim: int = 784) -> np.ndarray:
    """Read a binary AMAT text file (optionally gzipped): uint8 ``(N, dim)`` of 0/1.

    Every non-blank line must hold exactly ``dim`` whitespace-separated values, each the
    single character ``0`` or ``1``. Parsing works on the raw bytes with numpy, not line by line
    in Python, so the 78 MB training file of binarized MNIST is quick to read (docs/performance.md).
    """
    path = Path(path)
    buf = np.frombuffer(read_file_bytes(path), dtype=np.uint8)
    if buf.size == 0:
        raise AevbError(f"{path}: empty file")
    fast = _parse_regular_amat(buf, dim)
    if fast is not None:
        return fast
    # General path: tolerant of CRLF, tabs, blank lines; finds the first error precisely.
    # Character classes: 0 = invalid, 1 = digit 0/1, 2 = blank (space, tab, CR), 3 = newline.
    classes = np.zeros(256, dtype=np.uint8)
    classes[[ord("0"), ord("1")]] = 1
    classes[[ord(" "), ord("\t"), ord("\r")]] = 2
    classes[ord("\n")] = 3
    cls = classes[buf]
    is_digit = cls == 1
    newlines = np.flatnonzero(cls == 3)

    def line_of(pos: int) -> int:
        return int(np.searchsorted(newlines, pos, side="right")) + 1

    def token_at(pos: int) -> str:
        start = pos
        while start > 0 and cls[start - 1] < 2:
            start -= 1
        end = pos
        while end < buf.size and cls[end] < 2 and end - start < 20:
            end += 1
        return bytes(buf[start:end]).decode("latin-1")

    bad = np.flatnonzero(cls == 0)
    if bad.size:
        pos = int(bad[0])
        raise AevbError(f"{path}: line {line_of(pos)}: invalid value {token_at(pos)!r} (expected 0 or 1)")
    glued = np.flatnonzero(is_digit[1:] & is_digit[:-1])
    if glued.size:
        pos = int(glued[0])
        raise AevbError(f"{path}: line {line_of(pos)}: invalid value {token_at(pos)!r} (expected 0 or 1)")
    starts = np.concatenate(([0], newlines + 1))
    starts = starts[starts < buf.size]
    counts = np.add.reduceat(is_digit, starts, dtype=np.int64)
    wrong = np.flatnonzero((counts != dim) & (counts != 0))
    if wrong.size:
        i = int(wrong[0])
        raise AevbError(f"{path}: line {i + 1} has {int(counts[i])} values, expected {dim}")
    n_rows = int(np.count_nonzero(counts))
    if n_rows == 0:
        raise AevbError(f"{path}: contains no data lines")
    return (buf[is_digit] - ord("0")).reshape(n_rows, dim)


def _parse_regular_amat(buf: np.ndarray, dim: int) -> np.ndarray | None:
    """Fast path for the exact layout of the distributed files: every line is ``dim`` single
    characters 0/1 joined by single spaces and ended by ``\\n``. Returns None otherwise."""
    width = 2 * dim
    if buf.size % width:
        return None
    grid = buf.reshape(-1, width)
    seps = grid[:, 1::2]
    if not ((seps[:, :-1] == ord(" ")).all() and (seps[:, -1] == ord("\n")).all()):
        return None
    values = grid[:, 0::2] - np.uint8(ord("0"))
    if (values > 1).any():
        return None
    return values


#: SHA-256 of the published frey_rawface.mat (aevb.data.download pins the same file).
FREY_SHA256 = "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64"

# Run in a child process for MAT files that are not the published one: scipy's MAT reader is C
# code that a corrupt file can crash (fuzzing found a segmentation fault), which must not take the
# caller down. Exit 3: unreadable (message on stderr), 4: no variable ff, 5: ff not an array.
_LOADMAT_CHILD = """
import sys
import numpy as np
import scipy.io
try:
    ff = scipy.io.loadmat(sys.argv[1], variable_names=["ff"]).get("ff")
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}".splitlines()[0][:300], file=sys.stderr)
    sys.exit(3)
if ff is None:
    sys.exit(4)
if not isinstance(ff, np.ndarray) or ff.dtype == object:
    print(type(ff).__name__ if not isinstance(ff, np.ndarray) else "object", file=sys.stderr)
    sys.exit(5)
np.save(sys.argv[2], ff, allow_pickle=False)
"""


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _load_frey_variable(path: Path):
    """The variable ``ff`` of a MAT file (None when absent): in this process for the published
    file, in a child process for any other bytes."""
    if _sha256(path) == FREY_SHA256:
        import scipy.io  # deferred: scipy is only needed for this format

        return scipy.io.loadmat(path, variable_names=["ff"]).get("ff")
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="aevb-mat-") as scratch:
        out = Path(scratch) / "ff.npy"
        done = subprocess.run(
            [sys.executable, "-c", _LOADMAT_CHILD, str(path), str(out)], capture_output=True, text=True, timeout=600
        )
        message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        if done.returncode == 0:
            return np.load(out, allow_pickle=False)
        if done.returncode == 3:
            raise AevbError(f"{path}: cannot read MATLAB file ({message})")
        if done.returncode == 4:
            return None
        if done.returncode == 5:
            raise AevbError(f"{path}: variable 'ff' has type {message}, expected uint8")
        raise AevbError(
            f"{path}: the MATLAB reader crashed on this file (exit {done.returncode}); "
            "it is corrupt or not frey_rawface.mat"
        )


def read_frey_mat(path: str | os.PathLike) -> np.ndarray:
    """Read ``frey_rawface.mat``: uint8 faces ``(N, 28, 20)`` (N = 1965 for the real file).

    The file must be a MATLAB 5 MAT file holding a variable ``ff`` of dtype uint8 and shape
    ``(560, N)``; column ``j`` is face ``j``. Any file other than the published one is parsed in a
    child process, so that a corrupt file gives this one-line error, never a crash.
    """
    path = Path(path)
    if not path.is_file():
        raise AevbError(f"{path}: not a file")
    try:
        ff = _load_frey_variable(path)
    except AevbError:
        raise
    except Exception as exc:  # scipy raises many types (ValueError, TypeError, MatReadError, ...)
        raise AevbError(f"{path}: cannot read MATLAB file ({_one_line(exc)})") from None
    if ff is None:
        raise AevbError(f"{path}: no variable 'ff' in MATLAB file (not frey_rawface.mat?)")
    if not isinstance(ff, np.ndarray) or ff.dtype != np.uint8:
        kind = ff.dtype if isinstance(ff, np.ndarray) else type(ff).__name__
        raise AevbError(f"{path}: variable 'ff' has type {kind}, expected uint8")
    if ff.ndim != 2 or ff.shape[0] != FREY_ROWS or ff.shape[1] == 0:
        raise AevbError(f"{path}: variable 'ff' has shape {ff.shape}, expected ({FREY_ROWS}, N)")
    return np.ascontiguousarray(ff.T).reshape(-1, *FREY_IMAGE_SHAPE)
