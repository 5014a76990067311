"""The restricted unpickler: allowed content loads, anything else is refused before it runs."""

from __future__ import annotations

import collections
import os
import pickle
import pickletools
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from facerig.errors import InvalidInput
from facerig.io.assets import shared_path
from facerig.io.safe_pickle import ChumpyArray, restricted_load, restricted_loads, to_numpy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from flame_fixture import dumps_flame_pickle, synthetic_flame_arrays  # noqa: E402


class _System:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Eval:
    def __reduce__(self):
        return (eval, ("__import__('os').system('true')",))


def test_plain_containers_and_arrays_roundtrip():
    obj = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "s": {1, 2},
        "fs": frozenset("ab"),
        "c": 1 + 2j,
        "sl": slice(1, 5, 2),
        "od": collections.OrderedDict(x=1),
        "scalar": np.float64(2.5),
        "b": b"\x00\xff",
        "obj": np.array([{"k": 1}], dtype=object),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    }
    for proto in (0, 2, 4, 5):
        out = restricted_loads(pickle.dumps(obj, protocol=proto))
        assert np.array_equal(out["a"], obj["a"]) and out["a"].dtype == np.float32
        assert out["s"] == {1, 2} and out["fs"] == frozenset("ab") and out["c"] == 1 + 2j
        assert out["sl"] == slice(1, 5, 2) and out["od"] == obj["od"] and out["scalar"] == 2.5
        assert out["b"] == b"\x00\xff" and out["obj"][0] == {"k": 1}
        assert np.array_equal(out["fortran"], obj["fortran"])


@pytest.mark.parametrize("fmt", ["csc", "csr", "coo"])
def test_sparse_matrices(fmt):
    m = sp.random(6, 9, density=0.3, format=fmt, random_state=0)
    out = restricted_loads(pickle.dumps({"J": m}, protocol=2))["J"]
    assert isinstance(out, sp.spmatrix) and out.format == fmt
    assert np.array_equal(out.toarray(), m.toarray())


def test_old_scipy_state_layout():
    """A Python 2 scipy pickle stores format/maxprint beside the arrays in __dict__."""
    m = sp.csc_matrix(np.array([[0, 1.5], [2.0, 0]]))
    state = {"_shape": (2, 2), "maxprint": 50, "format": "csc", "data": m.data, "indices": m.indices,
             "indptr": m.indptr}

    class Old:
        def __reduce__(self):
            return (copyreg_reconstructor, (sp.csc_matrix, object, None), state)

    import copyreg

    copyreg_reconstructor = copyreg._reconstructor
    data = pickle.dumps(Old(), protocol=0)
    data = data.replace(b"scipy.sparse._csc", b"scipy.sparse.csc")
    out = restricted_loads(data)
    assert np.array_equal(out.toarray(), m.toarray())


def test_flame_style_pickle_with_chumpy_without_importing_chumpy():
    fields = synthetic_flame_arrays(30, use_template=False)
    data = dumps_flame_pickle(fields)
    globals_ = {a for op, a, _ in pickletools.genops(data) if op.name == "GLOBAL"}
    assert "chumpy.ch Ch" in globals_ and "numpy.core.multiarray _reconstruct" in globals_
    with pytest.raises(UnicodeDecodeError):  # Python 2 str payloads: needs latin1, like the real file
        pickle.loads(data)
    out = restricted_loads(data)
    assert "chumpy" not in sys.modules
    assert isinstance(out["shapedirs"], ChumpyArray)
    assert out["shapedirs"].chumpy_class == "chumpy.ch.Ch"
    assert "x" in out["shapedirs"].state
    assert np.array_equal(np.asarray(out["shapedirs"]), fields["shapedirs"])
    assert np.array_equal(to_numpy(out["J_regressor"]), fields["J_regressor"])
    assert out["bs_type"] == "lrotmin"


def test_chumpy_operator_node_evaluates():
    # chumpy.ch_ops.add keeps its operands in a/b; hand-written NEWOBJ + BUILD pickles
    def node(module: bytes, name: bytes, state: dict) -> bytes:
        body = pickle.dumps(state, protocol=2)[2:-1]  # the state dict without PROTO/STOP
        return b"\x80\x02c" + module + b"\n" + name + b"\n)\x81" + body + b"b."

    add = restricted_loads(node(b"chumpy.ch_ops", b"add", {"a": np.ones(3), "b": np.arange(3.0)}))
    assert add.chumpy_class == "chumpy.ch_ops.add"
    assert np.array_equal(np.asarray(add), [1, 2, 3])
    odd = restricted_loads(node(b"chumpy.reordering", b"Select", {"a": np.ones(3), "idxs": [0]}))
    with pytest.raises(InvalidInput, match="chumpy"):
        np.asarray(odd)


def test_malicious_os_system_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": np.zeros(3), "x": _System(f"touch {marker}")}, protocol=2))
    with pytest.raises(InvalidInput) as ei:
        restricted_load(path)
    msg = str(ei.value)
    assert str(path) in msg and "system" in msg and "forbidden global" in msg
    assert not marker.exists()


def test_eval_payload_is_refused():
    with pytest.raises(InvalidInput, match="eval"):
        restricted_loads(pickle.dumps(_Eval()))


@pytest.mark.parametrize(
    "module,name",
    [("builtins", "getattr"), ("subprocess", "Popen"), ("os", "system"), ("builtins", "__import__"),
     ("__builtin__", "eval"), ("numpy", "load"), ("torch", "load"), ("copyreg", "add_extension"),
     ("chumpy_evil", "x"), ("scipy.sparse", "load_npz")],
)
def test_handwritten_globals_are_refused(module, name):
    data = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n)R."
    with pytest.raises(InvalidInput, match="forbidden global"):
        restricted_loads(data, allow_torch=True)


def test_reconstructor_of_forbidden_class_is_refused():
    # copyreg._reconstructor(subprocess.Popen, object, None) names Popen: refused at the GLOBAL
    data = (b"ccopy_reg\n_reconstructor\n(csubprocess\nPopen\nc__builtin__\nobject\nNtR.")
    with pytest.raises(InvalidInput, match="Popen"):
        restricted_loads(data)


def test_codecs_encode_only_latin1():
    ok = pickle.dumps(b"\x00\xfe", protocol=2)  # Python 3 writes bytes as _codecs.encode(..., 'latin1')
    assert restricted_loads(ok) == b"\x00\xfe"
    bad = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x06\x00\x00\x00base64\x86R."
    with pytest.raises(InvalidInput):
        restricted_loads(bad)


def test_not_a_pickle(tmp_path):
    p = tmp_path / "x.pkl"
    p.write_bytes(b"\x89PNG garbage")
    with pytest.raises(InvalidInput, match="x.pkl"):
        restricted_load(p)


def test_torch_tensors_need_allow_torch():
    data = pickle.dumps({"t": torch.arange(4.0)}, protocol=2)
    with pytest.raises(InvalidInput, match="torch"):
        restricted_loads(data)
    out = restricted_loads(data, allow_torch=True)
    assert torch.equal(out["t"], torch.arange(4.0))


def test_npy_with_pickled_object(tmp_path):
    p = tmp_path / "emb.npy"
    np.save(p, np.array({"idx": np.arange(3), "t": torch.ones(2, 3)}, dtype=object), allow_pickle=True)
    out = restricted_load(p, allow_torch=True).item()
    assert np.array_equal(out["idx"], np.arange(3)) and torch.equal(out["t"], torch.ones(2, 3))
    q = tmp_path / "plain.npy"
    np.save(q, np.arange(6.0).reshape(2, 3))
    assert np.array_equal(restricted_load(q), np.arange(6.0).reshape(2, 3))


@pytest.mark.shared_data
def test_flame_aux_files_load():
    d = shared_path("assets", "flame-aux")
    if d is None:
        pytest.skip("flame-aux absent")
    masks = restricted_load(d / "FLAME_masks.pkl")
    assert {"lips", "left_eyeball", "face"} <= set(masks)
    emb = restricted_load(d / "landmark_embedding.npy", allow_torch=True).item()
    assert emb["full_lmk_faces_idx"].shape == (1, 68)
    assert tuple(emb["dynamic_lmk_faces_idx"].shape) == (79, 17)
    with pytest.raises(InvalidInput, match="torch"):
        restricted_load(d / "landmark_embedding.npy")
