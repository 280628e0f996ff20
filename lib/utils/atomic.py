"""Atomic file writes: temp file in the same folder, fsync, os.replace. A crash never leaves a half file."""
import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """Yield a file object whose content replaces `path` only if the block finishes without error."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)


def write_json(path, obj, indent=None):
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=indent)


def write_text(path, text):
    with atomic_open(path, "w") as f:
        f.write(text)
