"""A restricted unpickler for untrusted pickles (FLAME ``generic_model.pkl``, DECA/smirk aux files).

``pickle.load`` runs whatever callable a file names; a FLAME model or landmark file downloaded from
anywhere must not be able to do that. :func:`restricted_load` resolves every global the pickle names
through an explicit allow-list and refuses everything else with :class:`~facerig.errors.InvalidInput`
(naming the file and the forbidden global) *before* anything is called.

Allowed:

* numpy array reconstruction: ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray.
  _reconstruct``, ``numpy.ndarray``, ``numpy.dtype``, ``numpy.core.multiarray.scalar`` (and the
  ``numpy._core`` spellings);
* scipy sparse matrices (``csc``/``csr``/``coo`` under ``scipy.sparse``, ``scipy.sparse.csc``,
  ``scipy.sparse._csc``, ...), rebuilt through their constructor from the pickled state (old
  Python 2 scipy pickles store ``_shape``/``data``/``indices``/``indptr`` in ``__dict__``);
* inert builtins (``set``, ``frozenset``, ``slice``, ``complex``, ``list``, ``dict``, ``tuple``,
  ``int``, ``float``, ``bool``, ``str``, ``bytes``, ``bytearray``, ``range``, ``object``),
  ``collections.OrderedDict``, ``_codecs.encode`` (latin-1 only: how Python 3 writes bytes at
  protocol 2), and ``copyreg._reconstructor`` / ``copyreg.__newobj__`` when the class they build is
  itself allowed;
* chumpy classes (``chumpy.ch.Ch``, ``chumpy.ch_ops.*``, ``chumpy.reordering.*``, ``chumpy.utils.*``,
  ``chumpy.linalg.*``, ...), mapped to :class:`ChumpyArray`, a stand-in that keeps the pickled state;
  chumpy itself is never imported. ``numpy.asarray(obj)`` gives the array (``Ch.x``; the simple
  arithmetic ops of ``chumpy.ch_ops`` are evaluated from their operands);
* with ``allow_torch=True``: ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor`` /
  ``_rebuild_parameter``, ``torch.Size``, ``collections.OrderedDict`` and
  ``torch.storage._load_from_bytes``, which is replaced by a function that reads the embedded
  storage with ``torch.load(..., weights_only=True)`` (torch's own restricted unpickler) instead of
  the unrestricted ``torch.load`` the original calls. Storage classes are not needed for this path
  (they only appear inside that embedded blob, which torch checks itself) and are not allowed.

Python 2 pickles load (``encoding="latin1"`` by default). ``.npy`` files that hold a pickled object
array (numpy writes them with ``pickle``; DECA's ``landmark_embedding.npy`` is one) are detected by
their magic string and their payload goes through the same allow-list; the result is what
``np.load(..., allow_pickle=True)`` would return (a 0-d object array: use ``.item()``).
"""

from __future__ import annotations

import _compat_pickle
import collections
import copyreg
import io
import os
import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np

from facerig.errors import InvalidInput

__all__ = ["ChumpyArray", "restricted_load", "restricted_loads", "to_numpy"]


# ---- stand-ins ---------------------------------------------------------------------------------
class ChumpyArray:
    """Stand-in for a pickled chumpy object (``chumpy.ch.Ch`` and its operator subclasses).

    The pickle's state (the object's ``__dict__``: ``x`` holds the array of a plain ``Ch``; operator
    nodes such as ``chumpy.ch_ops.add`` hold their operands in ``a``/``b``) is kept in
    :attr:`state`; :attr:`chumpy_class` is the original ``"module.Name"``.
    ``numpy.asarray(obj)`` returns the value as a float array.
    """

    chumpy_class = "chumpy.ch.Ch"

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # REDUCE path: Ch(array)
        self.state: dict[str, Any] = {}
        if args:
            self.state["x"] = np.asarray(args[0], dtype=np.float64)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict | type(None)):
            merged = dict(state[0] or {})
            merged.update(state[1] or {})
            state = merged
        if not isinstance(state, dict):
            state = {"x": state}
        self.state = dict(state)

    @property
    def r(self) -> np.ndarray:
        return _chumpy_value(self)

    @property
    def x(self) -> np.ndarray:
        return self.r

    @property
    def shape(self) -> tuple[int, ...]:
        return self.r.shape

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self.r
        return a.astype(dtype) if dtype is not None else a

    def __repr__(self) -> str:
        return f"ChumpyArray({self.chumpy_class}, keys={sorted(getattr(self, 'state', {}))})"


_CH_BINARY = {
    "add": np.add,
    "subtract": np.subtract,
    "multiply": np.multiply,
    "divide": np.divide,
    "true_divide": np.divide,
    "power": np.power,
}


def _chumpy_value(obj: ChumpyArray) -> np.ndarray:
    st = getattr(obj, "state", {})
    name = obj.chumpy_class.rsplit(".", 1)[-1]
    if "x" in st and obj.chumpy_class.endswith(".Ch"):
        return _as_float_array(st["x"])
    if name in _CH_BINARY and "a" in st and "b" in st:
        return _CH_BINARY[name](_as_float_array(st["a"]), _as_float_array(st["b"]))
    if name == "negative" and "a" in st:
        return -_as_float_array(st["a"])
    if "x" in st:
        return _as_float_array(st["x"])
    raise InvalidInput(
        "chumpy object",
        "a plain chumpy.ch.Ch array (state 'x') or a simple arithmetic node",
        f"{obj.chumpy_class} with fields {sorted(st)}",
        hint="convert the file to npz with chumpy installed, in an isolated environment",
    )


def _as_float_array(v: Any) -> np.ndarray:
    if isinstance(v, ChumpyArray):
        return v.r
    a = np.asarray(v)
    return a if a.dtype.kind in "fc" else a.astype(np.float64)


def to_numpy(obj: Any, dtype: Any = None) -> np.ndarray:
    """Array from a loaded field: ndarray, :class:`ChumpyArray`, scipy sparse (densified) or tensor."""
    if hasattr(obj, "toarray") and hasattr(obj, "tocsr"):  # scipy sparse
        a = obj.toarray()
    elif type(obj).__module__.startswith("torch"):
        a = obj.detach().cpu().numpy()
    else:
        a = np.asarray(obj)
    return a.astype(dtype) if dtype is not None else a


def _sparse_standin(base: type) -> type:
    """A subclass of a scipy sparse class that rebuilds itself from any version's pickled state."""

    def __setstate__(self, state):  # noqa: N807
        if isinstance(state, tuple) and len(state) == 2:
            merged = dict(state[0] or {})
            merged.update(state[1] or {})
            state = merged
        if not isinstance(state, dict):
            raise InvalidInput("sparse matrix state", "a dict", type(state).__name__)
        shape = state.get("_shape", state.get("shape"))
        fmt = base.__name__[:3]
        if fmt == "coo":
            row = state.get("row", state.get("coords", (None, None))[0])
            col = state.get("col", state.get("coords", (None, None))[1])
            base.__init__(self, (state["data"], (row, col)), shape=shape)
        else:
            base.__init__(self, (state["data"], state["indices"], state["indptr"]), shape=shape)

    return type(base.__name__, (base,), {"__setstate__": __setstate__, "__module__": __name__})


_SPARSE_CACHE: dict[str, type] = {}


def _sparse(name: str) -> type:
    if name not in _SPARSE_CACHE:
        import scipy.sparse as sp

        _SPARSE_CACHE[name] = _sparse_standin(getattr(sp, name))
    return _SPARSE_CACHE[name]


def _chumpy_class(module: str, name: str) -> type:
    return type(name, (ChumpyArray,), {"chumpy_class": f"{module}.{name}", "__module__": __name__})


def _safe_codecs_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return obj.encode("latin1", errors)


# ---- the unpickler -----------------------------------------------------------------------------
_NUMPY_NAMES = {
    ("multiarray", "_reconstruct"),
    ("multiarray", "scalar"),
}
_BUILTINS = {
    "set", "frozenset", "slice", "complex", "list", "dict", "tuple", "int", "float", "bool",
    "str", "bytes", "bytearray", "range", "object",
}
_SPARSE_MODULES = {"scipy.sparse"} | {
    f"scipy.sparse.{p}{fmt}" for p in ("", "_") for fmt in ("csc", "csr", "coo", "compressed", "base")
}
_SPARSE_NAMES = {"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array"}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], source: str, allow_torch: bool, encoding: str):
        super().__init__(file, encoding=encoding, fix_imports=True)
        self._source = source
        self._allow_torch = allow_torch
        self._memo_cls: dict[tuple[str, str], Any] = {}
        self._allowed_classes: set[type] = set()

    # persistent ids only appear in torch zip checkpoints: use torch.load(weights_only=True) there
    def persistent_load(self, pid: Any) -> Any:
        raise self._refuse(f"persistent id {pid!r}")

    def _refuse(self, what: str) -> InvalidInput:
        hint = "the file was not loaded; nothing in it was run"
        if what.startswith("torch") and not self._allow_torch:
            hint += "; it holds torch tensors: pass allow_torch=True if you expect that"
        return InvalidInput(
            f"pickle {self._source}",
            "only arrays, sparse matrices, chumpy arrays and plain containers",
            f"forbidden global {what}",
            hint=hint,
        )

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in self._memo_cls:
            return self._memo_cls[key]
        obj = self._resolve(module, name)
        if isinstance(obj, type):
            self._allowed_classes.add(obj)
        self._memo_cls[key] = obj
        return obj

    def _resolve(self, module: str, name: str) -> Any:
        orig = f"{module}.{name}"
        # Python 2 names (__builtin__, copy_reg, ...) -> Python 3, as the default find_class does
        # for protocols < 3 (the Python 2 spellings never occur in Python 3 pickles)
        if True:
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]

        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and (
            "multiarray",
            name,
        ) in _NUMPY_NAMES:
            from numpy._core import multiarray

            return getattr(multiarray, name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in ("numpy", "numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
            from numpy._core import numeric

            return numeric._frombuffer  # type: ignore[attr-defined]  # private numpy helper, not in the stubs
        if module == "numpy.dtypes" and name.endswith("DType"):
            import numpy.dtypes

            cls = getattr(numpy.dtypes, name, None)
            if isinstance(cls, type):
                return cls
        if module == "builtins" and name in _BUILTINS:
            import builtins

            return getattr(builtins, name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "_codecs" and name == "encode":
            return _safe_codecs_encode
        if module == "copyreg" and name == "_reconstructor":
            return self._safe_reconstructor
        if module == "copyreg" and name == "__newobj__":
            return self._safe_newobj
        if module in _SPARSE_MODULES and name in _SPARSE_NAMES:
            return _sparse(name)
        if module == "chumpy" or module.startswith("chumpy."):
            return _chumpy_class(module, name)
        if self._allow_torch and module.startswith("torch"):
            fn = _torch_global(module, name)
            if fn is not None:
                return fn
        raise self._refuse(orig)

    def _safe_reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        if cls not in self._allowed_classes or (base is not object and base not in self._allowed_classes):
            raise self._refuse(f"copyreg._reconstructor({cls!r}, {base!r})")
        return copyreg._reconstructor(cls, base, state)  # type: ignore[attr-defined]  # private, not in typeshed

    def _safe_newobj(self, cls: Any, *args: Any) -> Any:
        if cls not in self._allowed_classes:
            raise self._refuse(f"copyreg.__newobj__({cls!r})")
        return cls.__new__(cls, *args)


def _torch_global(module: str, name: str) -> Any:
    import torch

    if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor", "_rebuild_parameter"):
        return getattr(torch._utils, name)
    if module == "torch" and name == "Size":
        return torch.Size
    if module == "torch.storage" and name == "_load_from_bytes":
        return _torch_load_storage_bytes
    return None


def _torch_load_storage_bytes(b: bytes) -> Any:
    import torch

    return torch.load(io.BytesIO(b), weights_only=True, map_location="cpu")


# ---- public API --------------------------------------------------------------------------------
def restricted_load(path_or_file: str | os.PathLike | IO[bytes], allow_torch: bool = False,
                    encoding: str = "latin1") -> Any:
    """Unpickle a file through the allow-list (see the module docstring).

    ``path_or_file``: a path or a binary file object. ``.npy`` files holding a pickled object array
    are recognised by their magic string. Raises :class:`~facerig.errors.InvalidInput` naming the
    file and the forbidden global when the pickle names anything outside the allow-list, and for
    files that are not pickles at all.
    """
    if isinstance(path_or_file, str | os.PathLike):
        source = str(path_or_file)
        with open(Path(path_or_file), "rb") as fh:
            return _load(fh, source, allow_torch, encoding)
    source = str(getattr(path_or_file, "name", "<file object>"))
    return _load(path_or_file, source, allow_torch, encoding)


def restricted_loads(data: bytes, allow_torch: bool = False, encoding: str = "latin1",
                     source: str = "<bytes>") -> Any:
    """:func:`restricted_load` for bytes in memory."""
    return _load(io.BytesIO(data), source, allow_torch, encoding)


def _load(fh: IO[bytes], source: str, allow_torch: bool, encoding: str) -> Any:
    head = fh.read(6)
    if head == b"\x93NUMPY":
        fh.seek(0)
        return _load_npy(fh, source, allow_torch, encoding)
    fh.seek(-len(head), io.SEEK_CUR)
    try:
        return _RestrictedUnpickler(fh, source, allow_torch, encoding).load()
    except InvalidInput:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError,
            IndexError, UnicodeDecodeError) as e:
        raise InvalidInput(f"pickle {source}", "a readable pickle", f"{type(e).__name__}: {e}") from e


def _load_npy(fh: IO[bytes], source: str, allow_torch: bool, encoding: str) -> Any:
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = fmt.read_array_header_2_0(fh)
    if not dtype.hasobject:
        count = int(np.prod(shape)) if shape else 1
        arr = np.frombuffer(fh.read(count * dtype.itemsize), dtype=dtype, count=count)
        if fortran:
            return arr.reshape(shape[::-1]).transpose().copy()
        return arr.reshape(shape).copy()
    try:
        arr = _RestrictedUnpickler(fh, source, allow_torch, encoding).load()
    except InvalidInput:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError,
            IndexError, UnicodeDecodeError) as e:
        raise InvalidInput(f"npy {source}", "a readable pickled object array", f"{type(e).__name__}: {e}") from e
    return arr
