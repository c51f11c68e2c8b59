"""Atomic file output and checked model input.

Outputs go to a temporary file in the destination folder and are renamed into
place, so a failure never leaves a half-written file; inputs are only read.
"""
import os
import shutil
import tempfile

from tinyvision.errors import TinyVisionError

TFLITE_IDENTIFIER = b"TFL3"


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically; raise TinyVisionError if the folder is unwritable."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    except OSError as e:
        raise TinyVisionError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise TinyVisionError(f"cannot write {path}: {e.strerror or e}") from None


def replace_folder(tmp, target):
    """Rename the finished folder ``tmp`` to ``target`` (beside it), replacing a previous folder there;
    the previous one is put back if the rename fails (OSError propagates)."""
    old = None
    try:
        if os.path.exists(target):
            old = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=f".{os.path.basename(target)}.old-")
            os.replace(target, os.path.join(old, "previous"))
        os.replace(tmp, target)
    except OSError:
        if old is not None and not os.path.exists(target):
            os.replace(os.path.join(old, "previous"), target)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def ensure_output_dir(path):
    """Create ``path`` if needed and check it is a writable folder."""
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise TinyVisionError(f"cannot create output folder {path}: {e.strerror or e}") from None
    if not os.access(path, os.W_OK):
        raise TinyVisionError(f"output folder {path} is not writable")
    return path


def read_bytes(path, what=None):
    """The bytes of file ``path``; TinyVisionError "cannot read [what ]path: cause" otherwise."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TinyVisionError(f"cannot read {what + ' ' if what else ''}{path}: {e.strerror or e}") from None


def read_tflite_bytes(path):
    """Read a .tflite file, checking it exists and carries the TFLite flatbuffer identifier."""
    data = read_bytes(path)
    check_tflite_bytes(data, os.fspath(path))
    return data


def check_tflite_bytes(data, name="model"):
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise TinyVisionError(f"{name} is not a TFLite flatbuffer (no 'TFL3' identifier)")
