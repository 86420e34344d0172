"""VectorIndex on tiny 8-dimensional data: exactness, mutation, persistence and file validation."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from mktod.errors import ConfigError
from mktod.index import IndexFileError, SearchResult, VectorIndex

DIM = 8


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    unit: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


def _ids(n: int, prefix: str = "r") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def _brute_force(x: np.ndarray, ids: list[str], q: np.ndarray, k: int) -> list[list[str]]:
    order = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]
    return [[ids[j] for j in row] for row in order]


# Small enough lists that 300 vectors train them, with every list probed so results are exact.
SPECS = {"Flat": {}, "HNSW32": {"ef_search": 64}, "IVF4,Flat": {"nprobe": 4}}


def _index(spec: str) -> VectorIndex:
    return VectorIndex(DIM, spec, **SPECS[spec])  # type: ignore[arg-type]


def test_flat_matches_brute_force() -> None:
    x, q = _vectors(200), _vectors(7, seed=1)
    index = VectorIndex(DIM, "Flat")
    index.add(_ids(200), x)
    result = index.search(q, 5)
    assert isinstance(result, SearchResult)
    assert result.scores.shape == (7, 5) and result.scores.dtype == np.float32
    assert result.ids == _brute_force(x, _ids(200), q, 5)
    np.testing.assert_allclose(result.scores, -np.sort(-(q @ x.T), axis=1)[:, :5], rtol=1e-5)


@pytest.mark.parametrize("spec", list(SPECS))
def test_add_update_remove_round_trip(spec: str) -> None:
    x = _vectors(300)
    ids = _ids(300)
    index = _index(spec)
    index.add(ids, x)
    assert len(index) == 300 and "r5" in index and "nope" not in index
    assert index.search(x[:20], 1).ids == [[i] for i in ids[:20]]

    # Point r0 at where r1 lives: both now answer a query at x[1].
    index.update(["r0"], x[1:2])
    assert set(index.search(x[1:2], 2).ids[0]) == {"r0", "r1"}
    assert index.search(x[:1], 1).ids != [["r0"]]

    index.remove(["r1", "r2"])
    assert len(index) == 298 and "r1" not in index
    hits = index.search(x[:20], 3).ids
    assert all("r1" not in row and "r2" not in row for row in hits)
    assert hits[1][0] == "r0"

    with pytest.raises(KeyError, match="r1"):
        index.remove(["r1"])
    with pytest.raises(KeyError, match="ghost"):
        index.update(["ghost"], x[:1])
    index.add(["r1"], x[1:2])  # a removed id can come back
    assert index.search(x[1:2], 2).ids[0][0] in {"r0", "r1"}


def test_hnsw_removal_tombstones_then_compacts() -> None:
    x = _vectors(100)
    index = VectorIndex(DIM, "HNSW32", ef_search=64)
    index.add(_ids(100), x)
    index.remove(_ids(10))
    assert index._tombstones and len(index) == 90  # graph keeps dead nodes, search hides them
    assert all(row[0] == f"r{i}" for i, row in zip(range(10, 30), index.search(x[10:30], 1).ids, strict=True))
    assert not any(i in row for row in index.search(x[:10], 10).ids for i in _ids(10))

    index.remove(_ids(60)[10:])  # now more dead than alive: rebuilt without them
    assert not index._tombstones and len(index) == 40
    assert index.search(x[60:], 1).ids == [[f"r{i}"] for i in range(60, 100)]


def test_tombstones_without_search_time_selector() -> None:
    # IndexRefine can neither remove nor take an IDSelector: removal falls back to over-fetching.
    x = _vectors(300)
    index = VectorIndex(DIM, "IVF4,Flat,RFlat", nprobe=4)
    index.add(_ids(300), x)
    index.remove(["r0", "r1"])
    result = index.search(x[:3], 5)
    assert [len(row) for row in result.ids] == [5, 5, 5] and result.ids[2][0] == "r2"
    assert not any(i in row for row in result.ids for i in ("r0", "r1"))


def test_fewer_records_than_k_drops_padding() -> None:
    index = VectorIndex(DIM, "Flat")
    empty = index.search(_vectors(2), 4)
    assert empty.ids == [[], []] and empty.scores.shape == (2, 0)
    index.add(["a", "b"], _vectors(2))
    result = index.search(_vectors(3, seed=5), 4)
    assert result.scores.shape == (3, 2) and all(sorted(row) == ["a", "b"] for row in result.ids)


def test_ivf_unfilled_slots_are_minus_inf() -> None:
    # nprobe=1 over 4 lists reaches only part of the records, so some of k=200 slots stay empty.
    index = VectorIndex(DIM, "IVF4,Flat", nprobe=1)
    index.add(_ids(300), _vectors(300))
    result = index.search(_vectors(3, seed=9), 200)
    for row, scores in zip(result.ids, result.scores, strict=True):
        assert (
            len(row) < 200 and np.isneginf(scores[len(row) :]).all() and np.isfinite(scores[: len(row)]).all()
        )


def test_ivf_pq_auto_trains_or_explains() -> None:
    index = VectorIndex(DIM, "IVF4,PQ2x4")
    assert not index.is_trained and index.min_train_size == 16
    with pytest.raises(ConfigError, match="at least 16"):
        index.add(_ids(10), _vectors(10))
    index.add(_ids(300), _vectors(300))
    assert index.is_trained and len(index) == 300
    with pytest.raises(ConfigError, match="at least 4"):
        VectorIndex(DIM, "IVF4,Flat").train(_vectors(3))


def test_save_load_round_trip(tmp_path: Path) -> None:
    x = _vectors(300)
    for spec in SPECS:
        index = _index(spec)
        index.add(_ids(300), x)
        index.remove(["r3"])
        path = tmp_path / f"{spec}.idx"
        index.save(path)
        loaded = VectorIndex.load(path, expected_dim=DIM)
        assert (loaded.spec, loaded.dim, len(loaded)) == (spec, DIM, 299) and "r3" not in loaded
        assert loaded.search(x[:30], 5).ids == index.search(x[:30], 5).ids
        loaded.add(["new"], x[3:4])  # labels continue after the saved ones
        assert loaded.search(x[3:4], 1).ids == [["new"]]
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    index = VectorIndex(DIM, "Flat")
    index.add(_ids(50), _vectors(50))
    path = tmp_path / "kb.idx"
    index.save(path)
    return path


@pytest.mark.parametrize("where", [3, 30, -1, -200])  # magic, header, index tail, index body
def test_corrupt_byte_is_reported(saved: Path, where: int) -> None:
    data = bytearray(saved.read_bytes())
    data[where] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match=r"kb\.idx.*(magic|corrupt|checksum)"):
        VectorIndex.load(saved)


@pytest.mark.parametrize("keep", [0, 10, 100, -1])
def test_truncated_file_is_reported(saved: Path, keep: int) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[:keep])
    with pytest.raises(IndexFileError, match=r"kb\.idx.*(short|truncated)"):
        VectorIndex.load(saved)


def test_wrong_dim_and_missing_file(saved: Path) -> None:
    with pytest.raises(IndexFileError, match=r"kb\.idx.*dimension 8 but 384 was expected"):
        VectorIndex.load(saved, expected_dim=384)
    with pytest.raises(IndexFileError, match="no such index file"):
        VectorIndex.load(saved.with_name("absent.idx"))
    assert len(VectorIndex.load(saved, expected_dim=DIM)) == 50  # the process survived all of the above


def test_input_validation() -> None:
    index = VectorIndex(DIM, "Flat")
    with pytest.raises(ValueError, match="ids must be unique"):
        index.add(["a", "a"], _vectors(2))
    index.add(["a"], _vectors(1))
    with pytest.raises(ValueError, match="already in the index"):
        index.add(["a"], _vectors(1))
    with pytest.raises(ValueError, match="dimension 4 but the index has dimension 8"):
        index.add(["b"], np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        index.add(["b"], np.full((1, DIM), np.nan))
    with pytest.raises(ValueError, match="2-D"):
        index.search(np.zeros(DIM), 1)
    with pytest.raises(ValueError, match="2 ids but 1"):
        index.add(["b", "c"], _vectors(1))
    with pytest.raises(TypeError):
        index.add("b", _vectors(1))  # a str is a Sequence[str]: caught at run time
    # float64, Fortran-ordered input is converted, not rejected.
    index.add(["b"], np.asfortranarray(_vectors(1, seed=3).astype(np.float64)))
    assert len(index) == 2


def test_bad_spec_and_params_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="Nonsense"):
        VectorIndex(DIM, "Nonsense")
    with pytest.raises(ConfigError, match="efSearch"):
        VectorIndex(DIM, "Flat", ef_search=10)
    with pytest.raises(ConfigError, match="ef_construction"):
        VectorIndex(DIM, "IVF4,Flat", ef_construction=40)
    with pytest.raises(ConfigError, match="IDMap"):
        VectorIndex(DIM, "IDMap2,Flat")


def test_cuda_without_gpu_says_what_to_install() -> None:
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is visible")
    with pytest.raises(ConfigError, match="gpu"):
        VectorIndex(DIM, "Flat", device="cuda")


@pytest.mark.gpu
def test_gpu_search_matches_cpu(tmp_path: Path) -> None:
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        pytest.skip("faiss has no GPU support or sees no GPU")
    x, q = _vectors(300), _vectors(9, seed=2)
    cpu, gpu = VectorIndex(DIM, "Flat"), VectorIndex(DIM, "Flat", device="cuda")
    for index in (cpu, gpu):
        index.add(_ids(300), x)
        index.remove(["r7"])
    assert gpu.search(q, 5).ids == cpu.search(q, 5).ids
    gpu.save(tmp_path / "gpu.idx")
    assert VectorIndex.load(tmp_path / "gpu.idx").search(q, 5).ids == cpu.search(q, 5).ids
