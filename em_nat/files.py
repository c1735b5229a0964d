"""Files that are replaced whole: JSON written aside, flushed, then renamed over the old one, so that a kill leaves
the old or the new content, never half of one; and the folder syncs that make such renames durable."""

import json
import os


def write_json_atomic(path: str, obj, indent=None):
    """Write `obj` as JSON to `path` so that `path` always holds either its old or its new complete content: written
    to `path.tmp`, flushed to disk, then renamed over `path` (a rename within one folder is atomic)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(obj, handle, indent=indent)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


def read_json_state(path: str, recovery: str):
    """The JSON in `path`; a file that does not parse (truncated, garbage) raises a `ValueError` that names the file
    and says how to recover (`recovery`)."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is unreadable ({type(error).__name__}: {error}). {recovery}") from error


def fsync_dir(path: str):
    """Make the renames inside folder `path` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
