"""Identity metrics: ID distance, re-ID, CSIM, failure counting, embedding distribution distances."""

from __future__ import annotations

import numpy as np
import pytest

from facerig.eval import identity as idm


def test_id_distance_known_vectors_and_failures() -> None:
    a = np.zeros((3, 128))
    b = np.zeros((3, 128))
    b[0, 0] = 0.3
    b[1, :4] = 0.5  # L2 1.0
    b[2] = np.nan  # a face that was not found
    r = idm.id_distance(a, b)
    assert r["metric"] == "id_distance" and "dlib" in r["estimator"]
    assert r["per_item"][:2] == pytest.approx([0.3, 1.0]) and r["per_item"][2] is None
    assert r["value"] == pytest.approx(0.65) and r["num_failed"] == 1
    assert r["same_person_rate"] == pytest.approx(0.5)


def test_reid_and_csim() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 128))
    gallery = centers
    query = np.concatenate([centers + 0.01 * rng.normal(size=(4, 128)), centers[:1] + 0.01])
    query[2] = np.nan
    r = idm.reid_accuracy(query, gallery, labels=[0, 1, 2, 3, 1])
    assert r["value"] == pytest.approx(3 / 5) and r["num_failed"] == 1
    r2 = idm.reid_accuracy(query, gallery, labels=["a", "b", "c", "d", "a"], gallery_labels=["a", "b", "c", "d"],
                           metric="cosine")
    assert r2["value"] == pytest.approx(4 / 5)
    c = idm.csim(np.array([[1.0, 0], [1, 1]]), np.array([[1.0, 0], [-1, 1]]), estimator="stub")
    assert c["per_item"] == pytest.approx([1.0, 0.0]) and c["estimator"] == "stub"


def test_embedding_fid_kid() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 128)) * 0.05
    assert idm.fid_dlib_embeddings(x, x)["value"] == pytest.approx(0.0, abs=1e-6)
    y = x + 0.1
    r = idm.fid_dlib_embeddings(x, y)
    assert r["metric"] == "fid_dlib_embeddings" and r["value"] == pytest.approx(128 * 0.01, rel=1e-3)
    k = idm.kid_dlib_embeddings(x, y, subsets=5, subset_size=100)
    assert k["value"] > idm.kid_dlib_embeddings(x, x, subsets=5, subset_size=100)["value"]


def test_dlib_embed_pipeline(astronaut: np.ndarray, grace_hopper: np.ndarray) -> None:
    pytest.importorskip("dlib")
    blank = np.full((200, 200, 3), 128, np.uint8)
    flipped = np.ascontiguousarray(astronaut[:, ::-1][::2, ::2].repeat(2, 0).repeat(2, 1))
    r = idm.dlib_embed([astronaut, grace_hopper, blank, flipped])
    assert r.found.tolist() == [True, True, False, True] and r.num_failed == 1
    assert np.isnan(r.embeddings[2]).all()
    d = idm.id_distance(r.embeddings[[0, 0]], r.embeddings[[1, 3]])
    assert d["per_item"][0] > 0.6  # different people
    assert d["per_item"][1] < 0.6  # same person (mirrored, resampled)
    # the port backend on the same chips agrees with dlib
    rp = idm.dlib_embed([astronaut, blank], backend="port")
    assert rp.num_failed == 1 and "port" in rp.estimator
    assert np.linalg.norm(rp.embeddings[0] - r.embeddings[0]) < 1e-3


def test_mediapipe_points_give_close_embeddings(astronaut: np.ndarray) -> None:
    pytest.importorskip("dlib")
    import torch

    from facerig.detect import FaceDetector

    lm = FaceDetector().detect_one(astronaut)
    p5 = idm.mediapipe_to_dlib5(lm)
    ref = idm.dlib_embed([astronaut]).embeddings[0]
    x = torch.from_numpy(astronaut.copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        e = idm.port_embed(x, torch.from_numpy(p5)[None])[0].double().numpy()
    assert np.linalg.norm(e - ref) < 0.2  # far below the 0.6 threshold
