"""Files written whole and read with one-line errors: the primitives every file aevb writes or
reads goes through (model files, runs, their logs).

Writes go to a temporary name and are renamed into place, so a crash leaves the old file or the
new one, never half; nothing is written through a symbolic link planted in a file's place; JSON
is strict (no NaN); a read of a missing, malformed or special file is a one-line AevbError.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import tempfile
from pathlib import Path

from .errors import AevbError


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux ≥ 4.7);
    elsewhere set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike, directory: bool = False) -> None:
    """Give ``path`` the permissions a plain ``open`` (or ``mkdir``) would have: mkstemp and
    mkdtemp create private files, but a run's files are meant to be read like any other."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def named_os_error(error: OSError, path: str | os.PathLike) -> OSError:
    """``error`` with ``path`` as its file name when it has none (a full disk reports none on write)."""
    if getattr(error, "filename", None) or error.errno is None:
        return error
    return type(error)(error.errno, error.strerror, str(path))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename;
    the file gets the umask's permissions, and an OS error names ``path``."""
    path = Path(path)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise named_os_error(error, path) from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        apply_umask(temporary)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise named_os_error(error, path) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=False) + "\n").encode())


def refuse_link(path: Path) -> None:
    """A one-line error when ``path`` is a symbolic link, dangling or not. A run's files are written
    where they stand: through a link that anyone sharing the directory planted, a write would
    truncate the link's target (any file of the user's) or create a file outside the run."""
    if Path(path).is_symlink():
        raise AevbError(
            f"{path} is a symbolic link; aevb writes a run's files only inside the run directory: remove the link"
        )


_OPEN_FLAGS = {"a": os.O_WRONLY | os.O_APPEND | os.O_CREAT, "a+": os.O_RDWR | os.O_APPEND | os.O_CREAT}


def open_no_follow(path: str | os.PathLike, mode: str):
    """``open(path, mode)`` (``mode`` "a" or "a+"; a missing file is created with the umask's
    permissions) that never follows a symbolic link in ``path``'s place, also one planted after
    :func:`refuse_link` looked (O_NOFOLLOW): the error is :func:`refuse_link`'s."""
    try:
        descriptor = os.open(
            path, _OPEN_FLAGS[mode] | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o666
        )
    except OSError as error:
        if error.errno == errno.ELOOP:
            refuse_link(Path(path))
        raise named_os_error(error, path) from None
    return os.fdopen(descriptor, mode)


def strict_json(value):
    """NaN and ±inf (e.g. the bound of an algorithm that has none) as null: JSON has no NaN."""
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def parse_json(text: str, where: str | os.PathLike):
    """``text`` as JSON, with a one-line error naming ``where`` for malformed text, also for
    what Python's parser gives up on: nesting beyond its recursion limit, integers of thousands
    of digits."""
    try:
        return json.loads(text)
    except RecursionError:
        raise AevbError(f"{where} is not valid JSON (nested too deeply)") from None
    except json.JSONDecodeError as error:
        raise AevbError(f"{where} is not valid JSON ({error})") from None
    except ValueError:  # Python's limit on an integer's digits (sys.get_int_max_str_digits)
        raise AevbError(f"{where} holds a number of thousands of digits; no setting takes one") from None


def read_text_file(path: str | os.PathLike) -> str:
    """The text of the regular file ``path``, with one-line errors; a FIFO or a device is refused
    rather than read (it could block for ever), and opening it does not block either."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise AevbError(f"{path} not found") from None
    except OSError as error:
        raise AevbError(f"cannot read {path}: {error.strerror}") from None
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise AevbError(f"{path} is not a regular file")
        try:
            return stream.read().decode()
        except OSError as error:
            raise AevbError(f"cannot read {path}: {error.strerror}") from None
        except UnicodeDecodeError as error:
            raise AevbError(f"{path} is not text ({error})") from None


def read_json(path: Path) -> dict:
    """Read a JSON object, with a one-line error for a missing or malformed file."""
    value = parse_json(read_text_file(path), path)
    if not isinstance(value, dict):
        raise AevbError(f"{path} does not hold a JSON object")
    return value


def check_format_version(values: dict, expected: int, path: str | os.PathLike) -> None:
    """A one-line error unless ``values["format_version"]`` is the number ``expected``."""
    version = values.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise AevbError(f"{path}: format_version must be the number {expected}, found {version!r}")
    if version != expected:
        raise AevbError(f"{path} has format version {version}; this aevb reads format version {expected}")
