"""Landmark index sets: they reproduce the mediapipe wheel's edge lists, are mirror-consistent, and
'LEFT' is the subject's left (image right) on real photos."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from facerig.detect import landmark_sets as L
from facerig.io.assets import shared_path


def test_importing_does_not_import_mediapipe():
    code = (
        "import sys, facerig.detect, facerig.detect.landmark_sets, facerig.detect.crops;"
        "assert 'mediapipe' not in sys.modules, 'mediapipe imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _wheel():
    return pytest.importorskip("mediapipe.python.solutions.face_mesh_connections")


@pytest.mark.parametrize(
    "name, loops",
    [
        ("FACEMESH_FACE_OVAL", [L.FACE_OVAL]),
        ("FACEMESH_LIPS", [L.LIPS_OUTER, L.LIPS_INNER]),
        ("FACEMESH_LEFT_EYE", [L.LEFT_EYE]),
        ("FACEMESH_RIGHT_EYE", [L.RIGHT_EYE]),
        ("FACEMESH_LEFT_IRIS", [L.LEFT_IRIS]),
        ("FACEMESH_RIGHT_IRIS", [L.RIGHT_IRIS]),
    ],
)
def test_loops_reproduce_wheel_edges(name, loops):
    wheel = {(min(a, b), max(a, b)) for a, b in getattr(_wheel(), name)}
    ours = set().union(*(L.loop_edges(lp) for lp in loops))
    assert ours == wheel


@pytest.mark.parametrize("name, loop", [("FACEMESH_LEFT_EYEBROW", L.LEFT_BROW), ("FACEMESH_RIGHT_EYEBROW", L.RIGHT_BROW)])
def test_brow_loops_close_the_wheels_two_chains(name, loop):
    wheel = {(min(a, b), max(a, b)) for a, b in getattr(_wheel(), name)}
    ours = L.loop_edges(loop)
    assert wheel <= ours and len(ours - wheel) == 2  # the two end links added to close the outline


def test_nose_sets_reproduce_wheel_edges():
    wheel = {(min(a, b), max(a, b)) for a, b in _wheel().FACEMESH_NOSE}
    assert L.loop_edges(L.NOSE) | L.loop_edges(L.NOSE_MIDLINE, closed=False) == wheel


def test_ibug68_table():
    assert len(L.IBUG68) == 68 and len(set(L.IBUG68)) == 68
    assert all(0 <= i < L.NUM_MESH_LANDMARKS for i in L.IBUG68)
    assert sorted(L.IBUG68_MIRROR) == list(range(68))
    assert all(L.IBUG68_MIRROR[L.IBUG68_MIRROR[i]] == i for i in range(68))
    assert L.IBUG68[8] == L.CHIN and L.IBUG68[30] == 4
    assert (L.IBUG68[36], L.IBUG68[39], L.IBUG68[42], L.IBUG68[45]) == (33, 133, 362, 263)
    assert (L.IBUG68[48], L.IBUG68[54]) == (L.MOUTH_RIGHT, L.MOUTH_LEFT)
    assert sum(s.stop - s.start for s in L.IBUG68_SLICES.values()) == 68


def _canonical_vertices() -> np.ndarray:
    p = shared_path("assets", "mediapipe", "face_model_with_iris.obj")
    if p is None:
        pytest.skip("../shared/assets/mediapipe absent")
    v = [[float(t) for t in line.split()[1:4]] for line in p.read_text().splitlines() if line.startswith("v ")]
    return np.asarray(v)


@pytest.mark.shared_data
def test_mirror_symmetry_on_canonical_model():
    v = _canonical_vertices()
    assert v.shape == (478, 3)
    m = v * np.array([-1.0, 1.0, 1.0])
    mirror = ((v[:, None] - m[None]) ** 2).sum(-1).argmin(1)
    for i in range(68):
        assert mirror[L.IBUG68[i]] == L.IBUG68[L.IBUG68_MIRROR[i]], i
    for left, right in [(L.LEFT_EYE, L.RIGHT_EYE), (L.LEFT_BROW, L.RIGHT_BROW), (L.LEFT_IRIS, L.RIGHT_IRIS)]:
        assert [int(mirror[i]) for i in left] == list(right)
    assert mirror[L.LEFT_IRIS_CENTER] == L.RIGHT_IRIS_CENTER
    # the canonical model's +x is the subject's left, like facerig's model space
    assert v[L.LEFT_EYE_OUTER, 0] > 0 > v[L.RIGHT_EYE_OUTER, 0]


@pytest.mark.parametrize("which", ["astronaut_face", "grace_face"])
def test_left_is_subjects_left_on_real_photos(which, request):
    f = request.getfixturevalue(which)
    p = f.xy
    assert p[list(L.LEFT_EYE), 0].mean() > p[list(L.RIGHT_EYE), 0].mean()
    assert p[L.RIGHT_EYE_OUTER, 0] < p[L.RIGHT_EYE_INNER, 0] < p[L.LEFT_EYE_INNER, 0] < p[L.LEFT_EYE_OUTER, 0]
    assert p[L.MOUTH_RIGHT, 0] < p[L.MOUTH_LEFT, 0]
    assert p[list(L.LEFT_BROW), 0].mean() > p[list(L.RIGHT_BROW), 0].mean()
    # vertical order: brows above eyes above nose tip above mouth above chin
    y = lambda idx: p[list(idx), 1].mean()  # noqa: E731
    assert y(L.RIGHT_BROW) < y(L.RIGHT_EYE) < p[L.NOSE_TIP, 1] < y(L.LIPS_OUTER) < p[L.CHIN, 1]
    # iris centres inside their eye's box
    for centre, eye in [(L.LEFT_IRIS_CENTER, L.LEFT_EYE), (L.RIGHT_IRIS_CENTER, L.RIGHT_EYE)]:
        e = p[list(eye)]
        assert (e.min(0) <= p[centre]).all() and (p[centre] <= e.max(0)).all()
    # the 68-point jaw runs from image left to image right through the chin
    jaw = p[list(L.IBUG68_JAW)]
    assert jaw[0, 0] < jaw[8, 0] < jaw[16, 0] and jaw[8, 1] == jaw[:, 1].max()
