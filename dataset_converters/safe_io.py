"""Safe reading of raw files and atomic writing of an output directory.

Object ``.npy`` files hold pickles, and unpickling an untrusted file can run
code.  :func:`load_npy` reads such files with :class:`RestrictedUnpickler`,
which admits only built-in containers, ints and numpy array reconstruction;
``.pt`` files go through ``torch.load(weights_only=True)``.  Every failure is
raised as one :class:`ConversionError` naming the file and the problem.
"""

import contextlib
import io
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np


class ConversionError(Exception):
    """A raw input the converter cannot accept; the message names file and problem."""


# Globals a pickled dict / list / numpy array may legitimately reference.
# Anything else (os.system, builtins.eval, a class of some package) is refused.
# numpy moved these between numpy.core, numpy._core and their _multiarray_umath.
_ALLOWED_GLOBALS = {
    (f"numpy.{core}.{module}", name)
    for core in ("core", "_core")
    for module in ("multiarray", "_multiarray_umath")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")}


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """Stand-in for ``_codecs.encode``, which protocol-2 pickles use to rebuild bytes."""
    if encoding.replace("-", "") != "latin1":
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1", errors)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array/scalar reconstruction globals."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def restricted_loads(data):
    """Unpickle ``data`` (bytes) with :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def require_file(path, what="file"):
    """Return ``path`` as a Path, raising ConversionError if it is not a file."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: missing {what}")
    return path


def load_npy(path):
    """Load a ``.npy`` file; object arrays are unpickled with the restricted unpickler.

    Returns a numpy array (a 0-d object array for a pickled dict).
    """
    path = require_file(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}[version]
            _shape, _fortran, dtype = read_header(f)
            if not dtype.hasobject:
                f.seek(0)
                return np.load(f, allow_pickle=False)
            obj = RestrictedUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise ConversionError(f"{path}: unsafe or corrupt pickle ({e}); only lists, dicts, "
                              "ints and numpy arrays are accepted") from None
    except Exception as e:  # bad magic, truncated header, ...
        raise ConversionError(f"{path}: not a valid .npy file ({e})") from None
    if not isinstance(obj, np.ndarray):
        raise ConversionError(f"{path}: pickled payload is {type(obj).__name__}, not a numpy array")
    return obj


def load_pt(path):
    """Load a ``.pt`` tensor with ``torch.load(weights_only=True)`` and return it as numpy."""
    import torch  # imported lazily: only the .pt layouts need it

    path = require_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"{path}: not a loadable tensor file ({first})") from None
    if not isinstance(obj, torch.Tensor):
        raise ConversionError(f"{path}: holds a {type(obj).__name__}, expected a tensor")
    return obj.numpy()


def load_array(path):
    """Load a ``.npy`` or ``.pt`` file by suffix."""
    path = Path(path)
    if path.suffix == ".pt":
        return load_pt(path)
    return load_npy(path)


@contextlib.contextmanager
def atomic_dir(target):
    """Yield a temporary directory that replaces ``target`` when the block succeeds.

    The temporary directory lives beside ``target`` (same file system, so the
    final rename is atomic).  On any exception it is removed, and so is the
    parent directory if this call created it, so a failed conversion leaves
    nothing behind.  An existing ``target`` is replaced only on success.
    """
    target = Path(target)
    parent = target.parent
    created_parent = not parent.exists()
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the dataset should look like any directory
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_parent:
            with contextlib.suppress(OSError):
                parent.rmdir()  # only succeeds if still empty
        raise
