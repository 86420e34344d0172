"""A FAISS inner-product index over KB records, keyed by string record ids.

`VectorIndex` builds any `faiss.index_factory` spec with the inner-product metric. Faiss sees int64
labels that we hand out in increasing order and never reuse, and a Python dict maps them back to record
ids. Labels, unlike faiss's positions, survive removals: IVF lists store them natively; every other spec
is wrapped in an `IndexIDMap2` (not IVF, whose removal leaves positions as they were while the id map
shifts them down, silently mislabelling results). What a spec built (its IVF and HNSW parts, whether it
keeps ids natively or implements removal) is read off the faiss objects by `mktod.faiss_parts`.

Removal. Flat and IVF indexes delete with faiss's `remove_ids`. HNSW graphs cannot drop a node, so for
them (and any spec whose `remove_ids` is unimplemented) a removed label becomes a tombstone: it stays in
the graph, where it still helps routing, and an `IDSelector` hides it from results inside the faiss search
itself, so a query still gets k live hits without over-fetching. When tombstones outnumber live records
the index is rebuilt from the reconstructed live vectors, since searches then mostly walk dead nodes.

Device. The CPU index is the master copy. With device="cuda" a GPU copy (`mktod.index_gpu`: one GPU, or
replicated / sharded over all visible GPUs) is made on the first search after a change and serves
searches; this suits a KB that changes rarely relative to how often it is queried, and keeps removal
exact on the GPU, where faiss has neither `remove_ids` nor search-time selectors.

Persistence: `mktod.index_file` writes the MKTODIDX container (no pickle) atomically and checks its digests
and header before faiss parses anything; `load` then checks the parsed index against the header.

Concurrency: searches may run in parallel threads; add / update / remove / train need exclusive access.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from mktod.errors import ConfigError

try:
    import faiss
except ImportError as exc:  # say what needs it and what to install, not just the module name
    raise ImportError(
        "mktod's FAISS index (large-scale KBs, the dialogue service's KB) needs faiss: "
        "pip install faiss-cpu (or faiss-gpu-cu12). Condensed-KB training and evaluation run without it."
    ) from exc

from mktod.faiss_parts import (
    first_line,
    hnsw_of,
    ivf_of,
    min_train_size,
    native_ids,
    stored_labels,
    supports_remove,
)
from mktod.index_file import FORMAT_VERSION as FORMAT_VERSION
from mktod.index_file import IndexFileError as IndexFileError
from mktod.index_file import IndexHeader, read_index_file, write_index_file
from mktod.index_gpu import GpuCopy, MultiGpu, check_gpu

Device = Literal["cpu", "cuda"]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SearchResult:
    """Hits per query, best first.

    scores: [Q, k'] float32 inner products with k' = min(k, len(index)); a slot an approximate index could
        not fill (an IVF probe that found too few records, an HNSW walk that ran dry) holds -inf.
    ids: Q lists of record ids, ids[q][j] scored scores[q, j]; a list is shorter than k' exactly where
        scores[q] ends in -inf, so no placeholder ids ever reach the caller.
    """

    scores: FloatArray
    ids: list[list[str]]


class VectorIndex:
    """Inner-product index of record vectors keyed by string ids; see the module docstring for design."""

    def __init__(
        self,
        dim: int,
        spec: str = "Flat",
        *,
        device: Device = "cpu",
        ef_search: int | None = None,
        ef_construction: int | None = None,
        nprobe: int | None = None,
        multi_gpu: MultiGpu = "replicate",
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if multi_gpu not in ("replicate", "shard"):
            raise ValueError(f"multi_gpu must be 'replicate' or 'shard', got {multi_gpu!r}")
        if "IDMap" in spec:
            raise ConfigError(f"index spec {spec!r}: leave out IDMap, VectorIndex adds its own id map")
        if device == "cuda":
            check_gpu()
        self._dim = dim
        self._spec = spec
        self._device: Device = device
        self._ef_search = ef_search
        self._ef_construction = ef_construction
        self._nprobe = nprobe
        self._index: Any = self._new_faiss_index()
        self._removable = supports_remove(self._index)
        self._id_of: dict[int, str] = {}
        self._label_of: dict[str, int] = {}
        self._tombstones: set[int] = set()
        self._next_label = 0
        self._selector: Any = None  # cached IDSelector hiding tombstones; None when stale or unneeded
        self._selector_ok = True
        self._gpu_copy = GpuCopy(spec, multi_gpu)  # used only with device="cuda"

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def spec(self) -> str:
        return self._spec

    @property
    def device(self) -> Device:
        return self._device

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def min_train_size(self) -> int:
        """Fewest training vectors faiss accepts: the IVF list count and the PQ codebook size."""
        return min_train_size(self._index)

    def __len__(self) -> int:
        return len(self._label_of)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._label_of

    def __repr__(self) -> str:
        return f"VectorIndex(dim={self._dim}, spec={self._spec!r}, device={self._device!r}, n={len(self)})"

    def set_search_params(self, *, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Change HNSW efSearch / IVF nprobe without rebuilding (None keeps the current value)."""
        self._ef_search = ef_search if ef_search is not None else self._ef_search
        self._nprobe = nprobe if nprobe is not None else self._nprobe
        self._apply_search_params(self._index)
        if nprobe is not None:
            self._gpu_copy.set_nprobe(nprobe)

    # ------------------------------------------------------------------ mutation
    def train(self, vectors: npt.ArrayLike) -> None:
        """Train IVF / PQ parts on representative vectors [N, dim]; a no-op for specs that need none."""
        x = self._matrix(vectors, "training vectors")
        if self._index.ntotal > 0:
            raise ValueError("cannot retrain an index that holds vectors; build a new VectorIndex")
        need = self.min_train_size
        if len(x) < need:
            raise ConfigError(
                f"index spec {self._spec!r} needs at least {need} training vectors, got {len(x)}; "
                "train on more records or choose a spec with fewer IVF lists"
            )
        ivf = ivf_of(self._index)
        if self._device == "cuda" and ivf is not None:
            # k-means is the slow part of training and runs much faster against a GPU flat index.
            ivf.clustering_index = faiss.index_cpu_to_gpu(
                self._gpu_copy.resources(), 0, faiss.IndexFlatIP(self._dim)
            )
        try:
            self._index.train(x)
        except RuntimeError as err:
            raise ConfigError(f"faiss could not train index spec {self._spec!r}: {first_line(err)}") from err
        finally:
            if ivf is not None:
                ivf.clustering_index = None
        self._invalidate()

    def add(self, ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Add new records; an id already present is an error (use `update`).

        An untrained index (IVF, PQ) is trained on this first batch when it is large enough.
        """
        keys = _check_ids(ids)
        x = self._matrix(vectors, "vectors", rows=len(keys))
        present = [key for key in keys if key in self._label_of]
        if present:
            raise ValueError(f"{len(present)} id(s) already in the index, e.g. {present[:3]}; use update()")
        if not keys:
            return
        if not self.is_trained:
            if len(x) < self.min_train_size:
                raise ConfigError(
                    f"index spec {self._spec!r} must be trained before adding and needs at least "
                    f"{self.min_train_size} vectors, but this add() has {len(x)}; call train() with a "
                    "representative sample first or choose a spec with fewer IVF lists"
                )
            self.train(x)
        self._add(keys, x)

    def update(self, ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Replace the vectors of records already in the index."""
        keys = _check_ids(ids)
        x = self._matrix(vectors, "vectors", rows=len(keys))
        self._drop(self._labels(keys))
        self._add(keys, x)
        self._compact_if_mostly_dead()

    def remove(self, ids: Iterable[str]) -> None:
        """Remove records; every id must be present."""
        self._drop(self._labels(_check_ids(ids)))
        self._compact_if_mostly_dead()

    def compact(self) -> None:
        """Rebuild the index without tombstoned vectors (only HNSW-like specs ever have any)."""
        if not self._tombstones:
            return
        labels = np.fromiter(self._id_of, dtype=np.int64, count=len(self._id_of))
        fresh = self._new_faiss_index()
        if len(labels):
            x = np.ascontiguousarray(self._index.reconstruct_batch(labels), dtype=np.float32)
            if not fresh.is_trained:
                fresh.train(x)
            fresh.add_with_ids(x, labels)
        self._index = fresh
        self._tombstones.clear()
        self._invalidate()

    # ------------------------------------------------------------------ search
    def search(self, queries: npt.ArrayLike, k: int) -> SearchResult:
        """Top-k records by inner product for each query row of queries [Q, dim]."""
        q = self._matrix(queries, "queries")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        k = min(k, len(self))
        if k == 0 or len(q) == 0:
            return SearchResult(np.zeros((len(q), k), dtype=np.float32), [[] for _ in range(len(q))])
        if self._device == "cuda":
            distances, labels = self._gpu().search(q, k)
        else:
            distances, labels = self._cpu_search(q, k)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids: list[list[str]] = []
        id_of = self._id_of
        for row, (drow, lrow) in enumerate(zip(distances.tolist(), labels.tolist(), strict=True)):
            # -1 pads an unfilled slot; membership in the id map drops it and any over-fetched tombstone.
            hits = [(score, id_of[label]) for score, label in zip(drow, lrow, strict=True) if label in id_of]
            del hits[k:]
            scores[row, : len(hits)] = [score for score, _ in hits]
            ids.append([key for _, key in hits])
        return SearchResult(scores, ids)

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path | str) -> None:
        """Write the index atomically: a reader sees the old file or the new one, never a partial one."""
        path = Path(path)
        # The CPU master is what gets written, so a GPU index needs no copy back.
        data = faiss.serialize_index(self._index).data  # a memoryview: no second copy of a large index
        labels = sorted(self._id_of)
        header = IndexHeader(
            dim=self._dim,
            spec=self._spec,
            labels=labels,
            ids=[self._id_of[label] for label in labels],
            tombstones=sorted(self._tombstones),
            next_label=self._next_label,
            ef_search=self._ef_search,
            ef_construction=self._ef_construction,
            nprobe=self._nprobe,
        )
        write_index_file(path, header, data, faiss_version=faiss.__version__)

    @classmethod
    def load(
        cls,
        path: Path | str,
        *,
        expected_dim: int | None = None,
        device: Device = "cpu",
        ef_search: int | None = None,
        nprobe: int | None = None,
        multi_gpu: MultiGpu = "replicate",
    ) -> VectorIndex:
        """Read an index written by `save`; search parameters given here override the saved ones."""
        path = Path(path)
        header, blob = read_index_file(path)
        dim, spec = header.dim, header.spec
        if expected_dim is not None and dim != expected_dim:
            raise IndexFileError(
                path,
                f"index has dimension {dim} but {expected_dim} was expected; it was built with a different "
                "encoder, rebuild it",
            )
        try:
            index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        except RuntimeError as err:
            raise IndexFileError(path, f"faiss cannot read the index data: {first_line(err)}") from err
        labels, tombstones = header.labels, header.tombstones
        id_mapped = isinstance(index, faiss.IndexIDMap2)
        if index.d != dim or id_mapped == native_ids(index):
            raise IndexFileError(path, f"index data is not a {dim}-dimensional id-mapped {spec} index")
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexFileError(path, "index data does not use the inner-product metric")
        stored = stored_labels(index)
        if stored != set(labels) | set(tombstones) or len(stored) != index.ntotal:
            raise IndexFileError(path, "the id map in the header does not match the index data")

        loaded = cls(
            dim,
            spec,
            device=device,
            ef_search=ef_search if ef_search is not None else header.ef_search,
            ef_construction=header.ef_construction,
            nprobe=nprobe if nprobe is not None else header.nprobe,
            multi_gpu=multi_gpu,
        )
        loaded._index = index
        loaded._apply_search_params(index)
        loaded._removable = supports_remove(index)
        loaded._id_of = dict(zip(labels, header.ids, strict=True))
        loaded._label_of = {key: label for label, key in loaded._id_of.items()}
        loaded._tombstones = set(tombstones)
        loaded._next_label = header.next_label
        return loaded

    # ------------------------------------------------------------------ internals
    def _new_faiss_index(self) -> Any:
        try:
            inner = faiss.index_factory(self._dim, self._spec, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as err:
            raise ConfigError(f"faiss cannot build index spec {self._spec!r}: {first_line(err)}") from err
        if self._ef_construction is not None:
            hnsw = hnsw_of(inner)
            if hnsw is None:
                raise ConfigError(f"ef_construction applies to HNSW specs, not {self._spec!r}")
            hnsw.hnsw.efConstruction = self._ef_construction
        index = inner if native_ids(inner) else faiss.IndexIDMap2(inner)
        self._apply_search_params(index)
        return index

    def _apply_search_params(self, index: Any) -> None:
        space = faiss.ParameterSpace()
        for name, value in (("efSearch", self._ef_search), ("nprobe", self._nprobe)):
            if value is None:
                continue
            try:
                space.set_index_parameter(index, name, value)
            except RuntimeError as err:
                raise ConfigError(f"search parameter {name} does not apply to spec {self._spec!r}") from err

    def _matrix(self, vectors: npt.ArrayLike, what: str, rows: int | None = None) -> FloatArray:
        x = np.asarray(vectors)
        if x.ndim != 2:
            raise ValueError(f"{what} must be a 2-D array [n, {self._dim}], got shape {x.shape}")
        if x.shape[1] != self._dim:
            raise ValueError(f"{what} have dimension {x.shape[1]} but the index has dimension {self._dim}")
        if rows is not None and x.shape[0] != rows:
            raise ValueError(f"got {rows} ids but {x.shape[0]} {what}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            raise ValueError(
                f"{what} hold NaN or infinite values in row(s) {np.flatnonzero(bad)[:5].tolist()}"
            )
        return x

    def _labels(self, keys: list[str]) -> list[int]:
        missing = [key for key in keys if key not in self._label_of]
        if missing:
            raise KeyError(f"{len(missing)} id(s) not in the index, e.g. {missing[:3]}")
        return [self._label_of[key] for key in keys]

    def _add(self, keys: list[str], x: FloatArray) -> None:
        labels = np.arange(self._next_label, self._next_label + len(keys), dtype=np.int64)
        self._index.add_with_ids(x, labels)
        self._next_label += len(keys)
        for label, key in zip(labels.tolist(), keys, strict=True):
            self._id_of[label] = key
            self._label_of[key] = label
        self._invalidate()

    def _drop(self, labels: list[int]) -> None:
        if self._removable:
            self._index.remove_ids(np.asarray(labels, dtype=np.int64))
        else:
            self._tombstones.update(labels)
        for label in labels:
            del self._label_of[self._id_of.pop(label)]
        self._invalidate()

    def _compact_if_mostly_dead(self) -> None:
        if len(self._tombstones) > len(self):
            self.compact()

    def _invalidate(self) -> None:
        self._selector = None
        self._gpu_copy.drop()

    def _cpu_search(self, q: FloatArray, k: int) -> tuple[Any, Any]:
        """Distances and labels [Q, >= k]; tombstoned labels are hidden or left for search() to drop."""
        search = self._index.search
        if self._tombstones and self._selector_ok:
            try:
                distances, labels = search(q, k, params=self._search_params())
                return distances, labels
            except RuntimeError:
                self._selector_ok = False  # e.g. IndexRefine: this spec takes no IDSelector at search time
        if self._tombstones:
            k = min(k + len(self._tombstones), self._index.ntotal)  # over-fetch past every tombstone
        distances, labels = search(q, k)
        return distances, labels

    def _search_params(self) -> Any:
        if self._selector is None:
            dead = faiss.IDSelectorBatch(np.fromiter(self._tombstones, dtype=np.int64))
            params = faiss.SearchParameters()
            params.sel = faiss.IDSelectorNot(dead)
            self._selector = (params, dead)  # faiss holds raw pointers; keep the Python objects alive
        return self._selector[0]

    def _gpu(self) -> Any:
        if self._gpu_copy.index is None:
            self.compact()  # GPU indexes cannot filter tombstones at search time
            self._gpu_copy.build(self._index, self._nprobe)
        return self._gpu_copy.index


# ---------------------------------------------------------------------- helpers
def _check_ids(ids: Iterable[str]) -> list[str]:
    if isinstance(ids, str):
        raise TypeError("ids must be a sequence of strings, not a single string")
    keys = list(ids)
    wrong = [key for key in keys if not isinstance(key, str)]
    if wrong:
        raise TypeError(f"record ids must be strings, got {type(wrong[0]).__name__} {wrong[0]!r}")
    if len(set(keys)) != len(keys):
        dupes = sorted(key for key, n in Counter(keys).items() if n > 1)
        raise ValueError(f"ids must be unique, repeated: {dupes[:5]}")
    return keys
