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
} | {("numpy", "ndarray"), ("numpy", "dtype")} | {
    # protocol-5 pickles rebuild arrays from an in-band buffer
    (f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")
}

# The class paths under which scipy has pickled a COO matrix: ``scipy.sparse.coo``
# (scipy < 1.8, the DiffMM files) and ``scipy.sparse._coo`` (today). They are never
# imported: the pickle rebuilds a plain :class:`PickledCOO` holding the state dict.
_COO_CLASSES = {("scipy.sparse.coo", "coo_matrix"), ("scipy.sparse._coo", "coo_matrix"),
                ("scipy.sparse._coo", "coo_array")}


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


class PickledCOO:
    """Stand-in for scipy's COO class inside a pickle: it only stores the state dict."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("COO matrix state is not a dict")
        self.state = state


class COOUnpickler(RestrictedUnpickler):
    """:class:`RestrictedUnpickler` that also admits scipy's COO class, as :class:`PickledCOO`."""

    def find_class(self, module, name):
        if (module, name) in _COO_CLASSES:
            return PickledCOO
        return super().find_class(module, name)


def load_coo_pickle(path):
    """A pickled ``scipy.sparse.coo_matrix`` -> ``(row, col, data, (n_rows, n_cols))``.

    Only a COO matrix of numpy arrays is accepted (by either of scipy's class paths);
    no scipy code runs while reading, and anything else in the pickle is refused with
    one :class:`ConversionError` naming the file.
    """
    path = require_file(path)
    with _unpickling(path, "a pickled scipy.sparse.coo_matrix of numpy arrays is accepted",
                     lambda e: f"not a readable pickle ({type(e).__name__}: {e})"):
        with open(path, "rb") as f:
            obj = COOUnpickler(f).load()
    if not isinstance(obj, PickledCOO) or not hasattr(obj, "state"):
        raise ConversionError(f"{path}: holds a {type(obj).__name__}, expected a pickled "
                              "scipy.sparse.coo_matrix")
    state = obj.state
    if "coords" in state:  # scipy >= 1.13 keeps (row, col) as one tuple
        coords = state["coords"]
        row, col = coords if isinstance(coords, tuple) and len(coords) == 2 else (None, None)
    else:
        row, col = state.get("row"), state.get("col")
    data, shape = state.get("data"), state.get("_shape", state.get("shape"))
    arrays_ok = all(isinstance(a, np.ndarray) and a.ndim == 1 for a in (row, col, data))
    if not arrays_ok or not (len(row) == len(col) == len(data)):
        raise ConversionError(f"{path}: the COO matrix has no row / col / data arrays of equal "
                              "length")
    if not (isinstance(shape, tuple) and len(shape) == 2
            and all(isinstance(v, (int, np.integer)) and v >= 0 for v in shape)):
        raise ConversionError(f"{path}: the COO matrix has no valid 2-d shape ({shape!r})")
    if not (np.issubdtype(row.dtype, np.integer) and np.issubdtype(col.dtype, np.integer)):
        raise ConversionError(f"{path}: row / col indices are not integers "
                              f"({row.dtype}, {col.dtype})")
    if not np.issubdtype(data.dtype, np.number):
        raise ConversionError(f"{path}: values are not numeric ({data.dtype})")
    return row.astype(np.int64), col.astype(np.int64), data, (int(shape[0]), int(shape[1]))


def restricted_loads(data):
    """Unpickle ``data`` (bytes) with :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


@contextlib.contextmanager
def _unpickling(path, accepted: str, unreadable):
    """Reading ``path`` inside: a refused or corrupt pickle becomes one ConversionError naming the file and
    saying what is accepted (``accepted``); any other failure (truncated file, bad header, ...) one with ``unreadable(error)``."""
    try:
        yield
    except pickle.UnpicklingError as e:
        raise ConversionError(f"{path}: unsafe or corrupt pickle ({e}); only {accepted}") from None
    except Exception as e:
        raise ConversionError(f"{path}: {unreadable(e)}") from None


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
    with _unpickling(path, "lists, dicts, ints and numpy arrays are accepted", lambda e: f"not a valid .npy file ({e})"):
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}[version]
            _shape, _fortran, dtype = read_header(f)
            if not dtype.hasobject:
                f.seek(0)
                return np.load(f, allow_pickle=False)
            obj = RestrictedUnpickler(f).load()
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
