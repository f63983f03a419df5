"""``fileio.sha256_file``: every file hashed once per process (per version of the file)."""

from __future__ import annotations

import hashlib
import os
from collections import Counter

import pytest

from dualpatch import fileio


@pytest.fixture
def hashed(monkeypatch) -> Counter:
    """Which files were actually read and hashed (by name), from an empty cache."""
    counts: Counter = Counter()
    real = hashlib.file_digest

    def counting(f, digest):
        counts[os.path.realpath(f.name)] += 1
        return real(f, digest)

    fileio._sha256.cache_clear()
    monkeypatch.setattr(hashlib, "file_digest", counting)
    yield counts
    fileio._sha256.cache_clear()


def test_a_file_is_hashed_once(tmp_path, hashed):
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 1000)
    want = hashlib.sha256(b"x" * 1000).hexdigest()
    assert [fileio.sha256_file(path) for _ in range(3)] == [want] * 3
    assert fileio.sha256_file(str(path)) == want
    assert hashed[os.path.realpath(path)] == 1


def test_a_changed_file_is_hashed_again_even_with_its_old_size_and_mtime(tmp_path, hashed):
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 1000)
    first = fileio.sha256_file(path)
    st = path.stat()
    path.write_bytes(b"y" * 1000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # what a careful forger would do
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    assert fileio.sha256_file(path) == hashlib.sha256(b"y" * 1000).hexdigest() != first


def test_save_and_load_hash_the_weights_file_once(fitted_single, tmp_path, hashed):
    """The review counted the weights file hashed three times per save."""
    from dualpatch import PatchCore
    from dualpatch.features.backbones import default_weights_file

    weights = default_weights_file(fitted_single.backbone)
    assert weights is not None
    for name in ("a", "b"):
        fitted_single.save(tmp_path / name)
        PatchCore.load(tmp_path / name)
    assert hashed[os.path.realpath(weights)] == 1
