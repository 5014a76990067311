"""The fit cache: keys follow content, model and face; entries round-trip; broken entries are ignored."""

from __future__ import annotations

import numpy as np
import pytest

from facerig.io import fit_cache


class _M:
    name, n_identity, n_expression = "builtin", 100, 51


def test_key_follows_content_model_and_face(tmp_path):
    a = tmp_path / "a.jpg"
    a.write_bytes(b"one")
    b = tmp_path / "b.jpg"
    b.write_bytes(b"one")
    assert fit_cache.fit_key(a, _M(), "largest") == fit_cache.fit_key(b, _M(), "largest")  # same bytes
    b.write_bytes(b"two")
    assert fit_cache.fit_key(a, _M(), "largest") != fit_cache.fit_key(b, _M(), "largest")
    assert fit_cache.fit_key(a, _M(), "largest") != fit_cache.fit_key(a, _M(), "1")
    m2 = _M()
    m2.name = "ict"
    assert fit_cache.fit_key(a, _M(), "largest") != fit_cache.fit_key(a, m2, "largest")
    arr = np.zeros((4, 4, 3), np.uint8)
    assert fit_cache.fit_key(arr, _M(), 0) != fit_cache.fit_key(arr + 1, _M(), 0)


def test_store_load_round_trip_and_broken_entry(tmp_path, monkeypatch, astronaut):
    monkeypatch.setenv("FACERIG_CACHE", str(tmp_path))
    from facerig.edit import _fit_one
    from facerig.morphable import as_face_model

    fm = as_face_model("builtin")
    p = _fit_one(astronaut, fm, "largest", "astronaut")
    key = fit_cache.fit_key(astronaut, fm, "largest")
    assert fit_cache.load_fit(key) is None
    path = fit_cache.store_fit(key, p)
    assert path is not None and path.parent == tmp_path / "fits"
    q = fit_cache.load_fit(key)
    assert q is not None and q.meta["landmarks_px"] == p.meta["landmarks_px"]
    assert float((q.rotation - p.rotation).abs().max()) < 1e-5
    path.write_text("{broken")
    assert fit_cache.load_fit(key) is None


@pytest.mark.parametrize("env", ["FACERIG_CACHE", "XDG_CACHE_HOME"])
def test_cache_dir_from_environment(tmp_path, monkeypatch, env):
    monkeypatch.delenv("FACERIG_CACHE", raising=False)
    monkeypatch.setenv(env, str(tmp_path))
    d = fit_cache.cache_dir()
    assert d == (tmp_path / "fits" if env == "FACERIG_CACHE" else tmp_path / "facerig" / "fits")
