"""Where the named datasets come from, and a checksum-verified, atomic downloader.

Nothing here touches the network unless asked: :func:`aevb.data.load_dataset` calls
:func:`fetch_file` only with ``download=True`` and only for files it cannot find locally.

Each file of each dataset is listed in :data:`REMOTE_FILES` with its mirrors (tried in order)
and its pinned SHA-256:

- ``mnist``: the four IDX ``.gz`` files (byte-identical to Yann LeCun's originals), from the
  PyTorch S3 mirror, then yann.lecun.com.
- ``binarized-mnist``: Larochelle & Murray's ``binarized_mnist_{train,valid,test}.amat``, served
  uncompressed from Hugo Larochelle's storage (the hashes are of the uncompressed text).
- ``frey``: ``frey_rawface.mat`` from Sam Roweis' data page (MD5 5aeb024d42b8a6091f30e5eb18c8a48d).

Every download is capped in size, so a broken or hostile server cannot fill the disk with an
endless body: a pinned file may not exceed its known size, anything else :data:`MAX_DOWNLOAD_BYTES`.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aevb.errors import AevbError

from .formats import FREY_SHA256

__all__ = ["RemoteFile", "REMOTE_FILES", "DATASET_SUBDIRS", "MAX_DOWNLOAD_BYTES", "fetch_file", "sha256_file"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: its name on disk, its SHA-256, the URLs to try in order and its size
    in bytes (the download cap; ``None`` when unknown)."""

    filename: str
    sha256: str
    urls: tuple[str, ...]
    size: int | None = None


_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_BINARIZED_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
_FREY_URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"


def _mnist(filename: str, sha256: str, size: int) -> RemoteFile:
    return RemoteFile(filename, sha256, tuple(m + filename for m in _MNIST_MIRRORS), size)


def _binarized(split: str, sha256: str, size: int) -> RemoteFile:
    name = f"binarized_mnist_{split}.amat"
    return RemoteFile(name, sha256, (_BINARIZED_URL + name,), size)


REMOTE_FILES: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": (
        _mnist(
            "train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9_912_422
        ),
        _mnist(
            "train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28_881
        ),
        _mnist(
            "t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1_648_877
        ),
        _mnist("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4_542),
    ),
    "binarized-mnist": (  # 784 digits and 783 spaces and a newline per image
        _binarized("train", "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d", 50_000 * 1568),
        _binarized("valid", "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2", 10_000 * 1568),
        _binarized("test", "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c", 10_000 * 1568),
    ),
    "frey": (RemoteFile("frey_rawface.mat", FREY_SHA256, (_FREY_URL,), 1_100_584),),
}

# Sub-folder of the data directory that holds each dataset's files.
DATASET_SUBDIRS = {"mnist": "mnist", "binarized-mnist": "binarized_mnist", "frey": "frey"}

# The cap on a download whose size is not known: above the largest dataset file
# (binarized_mnist_train.amat, 78.4 MB), far below what would trouble a disk.
MAX_DOWNLOAD_BYTES = 100_000_000

_CHUNK_BYTES = 1 << 20


def _download(url: str, dest: Path, sha256: str, cap: int, cap_reason: str, opener, timeout: float) -> str | None:
    """One try: stream ``url`` into a temporary file beside ``dest`` while hashing, and move it into
    place only with the right checksum. Returns None on success, else why it failed."""
    log.info("downloading %s -> %s", url, dest)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise AevbError(f"{dest.parent}: cannot write a file there ({_describe(exc)})") from None
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, opener(url, timeout=timeout) as response:
            _copy_capped(response, out, h, cap, cap_reason)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if digest != sha256:
            return f"SHA-256 mismatch (got {digest}, expected {sha256})"
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        return None
    except _TooLarge as exc:
        return str(exc)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # URLError/HTTPError, timeouts and connection resets (OSError), bad URLs (ValueError)
        return _describe(exc)
    finally:
        tmp.unlink(missing_ok=True)


def _pinned_size(sha256: str) -> int | None:
    """The size of the file of :data:`REMOTE_FILES` with this checksum, if any: the checksum pins
    the bytes, so their number is known too."""
    for remotes in REMOTE_FILES.values():
        for remote in remotes:
            if remote.sha256 == sha256 and remote.size is not None:
                return remote.size
    return None


class _TooLarge(Exception):
    """One URL's body exceeds the size cap (another mirror may still serve the right file)."""


def _declared_length(response: object) -> int | None:
    """The Content-Length a response announces, if it announces a usable one."""
    headers = getattr(response, "headers", None)
    try:
        return int(headers.get("Content-Length")) if headers is not None else None
    except (TypeError, ValueError):  # absent or garbled: the streaming cap still holds
        return None


def _copy_capped(response, out, digest, cap: int, cap_reason: str) -> None:
    """Stream ``response`` into ``out`` and ``digest``, refusing more than ``cap`` bytes."""
    declared = _declared_length(response)
    if declared is not None and declared > cap:
        raise _TooLarge(f"announces {declared:,} bytes, more than the {cap:,}-byte cap ({cap_reason}); not downloaded")
    received = 0
    # Never ask for more than one byte past the cap, so an endless body costs at most cap + 1 bytes.
    while chunk := response.read(min(_CHUNK_BYTES, cap + 1 - received)):
        received += len(chunk)
        if received > cap:
            raise _TooLarge(f"sent more than the {cap:,}-byte cap ({cap_reason}); download stopped")
        digest.update(chunk)
        out.write(chunk)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def _describe(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def fetch_file(
    urls: Sequence[str],
    dest: str | os.PathLike,
    sha256: str,
    *,
    size: int | None = None,
    timeout: float = 60.0,
    opener: Callable[..., object] | None = None,
) -> Path:
    """Make sure ``dest`` holds the file with SHA-256 ``sha256``, downloading it if needed.

    If ``dest`` already exists with the right checksum it is returned at once (no network).
    Otherwise each URL is tried in order: the body is streamed into a temporary file in
    ``dest``'s folder while hashing, and only a file with the right checksum is moved into
    place with :func:`os.replace` (atomic), so ``dest`` is never left half-written. A bad
    temporary file is always removed. A body longer than the file's size (or than
    :data:`MAX_DOWNLOAD_BYTES` when its size is unknown) is cut off as soon as it exceeds it, and
    one whose Content-Length already does is not read at all; the next URL is then tried.

    Args:
        urls: mirrors, tried in order.
        dest: where the file goes; its folder is created if needed.
        sha256: expected hex digest (lowercase).
        size: expected size in bytes; by default that of the file of :data:`REMOTE_FILES` with
            this checksum, if there is one.
        timeout: seconds for each connection.
        opener: ``urllib.request.urlopen``-like callable ``(url, timeout=...)`` returning a
            context manager with ``read(n)`` (and optionally ``headers``); by default
            ``urllib.request.urlopen``, looked up at each call so that tests can replace it.

    Raises:
        AevbError: when no URL yields the file with the right checksum, or the folder cannot be
            written.
    """
    dest = Path(dest)
    sha256 = sha256.lower()
    if dest.is_file():
        if sha256_file(dest) == sha256:
            return dest
        log.warning("%s exists but its SHA-256 does not match; downloading it again", dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AevbError(f"{dest.parent}: cannot create folder ({_describe(exc)})") from None
    if not urls:
        raise AevbError(f"{dest}: missing and no download URL is known for it")
    opener = opener or urllib.request.urlopen
    if size is None:
        size = _pinned_size(sha256)
    if size is not None:
        cap, cap_reason = size, f"the size of {dest.name}"
    else:
        cap, cap_reason = MAX_DOWNLOAD_BYTES, f"the limit for {dest.name}, whose size is not known"
    failures: list[str] = []
    for url in urls:
        failure = _download(url, dest, sha256, cap, cap_reason, opener, timeout)
        if failure is None:
            return dest
        failures.append(f"{url}: {failure}")
    raise AevbError(f"could not download {dest.name} into {dest.parent}: " + "; ".join(failures))
