"""Retrieve the top-K KB records for a dialogue context: the dense retriever and two baselines.

Every retriever ranks the records of the KB it is given, so the setting is the caller's choice of KB:
a dialogue's own rows (condensed) or the dataset-level KB (large-scale). `build_index(kb)` prepares a
KB that will be searched many times (the dense retriever embeds it once into a FAISS index; BM25 builds
its term statistics once); a KB without an index is scored directly, with the same ranking. faiss is
imported only when an index is built, so condensed-KB training and evaluation run where it is not
installed (a GPU machine that carries only the project's pure-Python dependencies, say).

Ties keep KB order (stable sort), so rankings are deterministic.
"""

from __future__ import annotations

import json
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import torch
from rank_bm25 import BM25Okapi
from torch import Tensor

from mktod.encoder import DenseEncoder
from mktod.errors import ConfigError
from mktod.kb import linearise, value_text
from mktod.types import KB, Hit, Record

if TYPE_CHECKING:
    from mktod.index import VectorIndex

_RETRIEVER_FILE = "retriever.json"
_TOKEN = re.compile(r"[a-z0-9]+")
# Condensed KBs change every dialogue; keeping a few per-KB structures covers one dialogue's turns.
_CACHE_SIZE = 8

V = TypeVar("V")


class RetrieverProtocol(Protocol):
    """What the pipeline, the evaluation and the trainer need from any retriever."""

    name: str

    def build_index(self, kb: KB) -> None:
        """Prepare `kb` for many searches (optional: unprepared KBs are scored directly)."""
        ...

    def retrieve(self, context: str, kb: KB, k: int) -> tuple[Hit, ...]:
        """The top-`k` records of `kb` for one formatted context, best first."""
        ...

    def retrieve_many(self, contexts: Sequence[str], kbs: Sequence[KB], k: int) -> list[tuple[Hit, ...]]:
        """`retrieve` for a batch: contexts[i] searches kbs[i]."""
        ...


def tokens(text: str) -> list[str]:
    """Lower-case alphanumeric word tokens, the same for dialogue text and (``_``-joined) KB values."""
    return _TOKEN.findall(value_text(text))


def rank(kb: KB, scores: Sequence[float] | npt.NDArray[np.floating], k: int) -> tuple[Hit, ...]:
    """Hits for the `k` best-scored records; ties keep KB order."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    values = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-values, kind="stable")[:k]
    return tuple(Hit(kb.records[i], float(values[i]), r) for r, i in enumerate(order.tolist(), start=1))


def _check_batch(contexts: Sequence[str], kbs: Sequence[KB]) -> None:
    if isinstance(contexts, str):
        raise TypeError("retrieve_many takes a sequence of contexts, got a single string")
    if len(contexts) != len(kbs):
        raise ValueError(f"{len(contexts)} contexts but {len(kbs)} KBs; pass one KB per context")


class _PerKBCache(Generic[V]):
    """A small LRU map from a KB (by identity, kept alive by the cache) to something built from it.

    Entries made by `pin` (KBs prepared with `build_index`) are never evicted.
    """

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[int, tuple[KB, V]] = OrderedDict()
        self._pinned: dict[int, tuple[KB, V]] = {}

    def get(self, kb: KB, build: Callable[[KB], V]) -> V:
        key = id(kb)
        for store in (self._pinned, self._items):
            hit = store.get(key)
            if hit is not None and hit[0] is kb:
                return hit[1]
        value = build(kb)
        self._items[key] = (kb, value)
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return value

    def pin(self, kb: KB, value: V) -> None:
        self._pinned[id(kb)] = (kb, value)


# --------------------------------------------------------------------------------- dense retriever


class Retriever:
    """Dual-encoder retriever: score = dot product of context and record embeddings (METHOD.md §2)."""

    name = "dense"

    def __init__(self, encoder: DenseEncoder, *, batch_size: int = 64, index_spec: str = "Flat") -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        self.index_spec = index_spec
        self._index: tuple[KB, VectorIndex] | None = None
        # Record text -> its embedding, from the last build: what update_index reuses.
        self._vectors: dict[str, npt.NDArray[np.float32]] = {}

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path | str, delta_bits: int | None = None) -> None:
        """The encoder (full weights, or with ``delta_bits`` a quantised delta over its base) + kind."""
        directory = Path(directory)
        self.encoder.save(directory, delta_bits)
        meta = {"kind": "dense", "format_version": 1, "index_spec": self.index_spec}
        (directory / _RETRIEVER_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path | str, device: str | torch.device = "cpu") -> Retriever:
        directory = Path(directory)
        meta_path = directory / _RETRIEVER_FILE
        if not meta_path.is_file():
            raise ConfigError(f"{directory}: not a retriever checkpoint (no {_RETRIEVER_FILE})")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("kind") != "dense":
            raise ConfigError(f"{meta_path}: unknown retriever kind {meta.get('kind')!r}")
        return cls(DenseEncoder.load(directory, device), index_spec=str(meta.get("index_spec", "Flat")))

    # ------------------------------------------------------------------ retrieval
    def build_index(self, kb: KB) -> None:
        """Embed every record of `kb` once into a FAISS inner-product index."""
        self._build(kb, reuse=False)

    def update_index(self, kb: KB) -> int:
        """Index `kb` (an edited version of the last one), embedding only records whose text is new.

        For a frozen encoder (the service): a KB edit costs one embedding per changed record, not a
        pass over the whole KB. Training calls :meth:`build_index`, since its encoder moves. Returns
        how many records were embedded.
        """
        return self._build(kb, reuse=True)

    def saved_vectors(self) -> tuple[list[str], npt.NDArray[np.float32]]:
        """The record texts of the last build and their embeddings [n, d], to persist."""
        texts = list(self._vectors)
        matrix = np.stack([self._vectors[t] for t in texts]) if texts else np.zeros((0, self.encoder.dim))
        return texts, matrix.astype(np.float32)

    def adopt_vectors(self, texts: Sequence[str], vectors: npt.NDArray[np.float32], check: int = 2) -> bool:
        """Take embeddings saved by an earlier process for :meth:`update_index` to reuse.

        Only if they fit this encoder: re-embedding ``check`` of them must give the same vectors (a
        different or retrained encoder, or a damaged file, is refused and the index is built afresh).
        """
        if len(texts) != len(vectors) or (len(texts) and vectors.shape[1] != self.encoder.dim):
            return False
        sample = list(texts[:check])
        if sample:
            fresh = self.encoder.embed_records(sample, self.batch_size)
            if not np.allclose(fresh, vectors[: len(sample)], atol=1e-4):
                return False
        self._vectors = {**dict(zip(texts, vectors, strict=True)), **self._vectors}
        return True

    def _build(self, kb: KB, reuse: bool) -> int:
        texts = [linearise(r) for r in kb]
        known = self._vectors if reuse else {}
        new = list(dict.fromkeys(t for t in texts if t not in known))
        embedded = self.encoder.embed_records(new, self.batch_size) if new else None
        vectors: dict[str, npt.NDArray[np.float32]] = {
            t: known[t] for t in texts if t in known
        }  # kept only for records still in the KB, so memory follows the KB's size
        if embedded is not None:
            vectors.update(zip(new, embedded, strict=True))
        from mktod.index import VectorIndex  # faiss, only where an index is built (module docstring)

        index = VectorIndex(self.encoder.dim, self.index_spec)
        if texts:
            # Positional ids: record ids need not be unique across a hand-made KB; positions are.
            index.add([str(i) for i in range(len(kb))], np.stack([vectors[t] for t in texts]))
        self._index, self._vectors = (kb, index), vectors
        return len(new)

    def retrieve(self, context: str, kb: KB, k: int) -> tuple[Hit, ...]:
        return self.retrieve_many([context], [kb], k)[0]

    def retrieve_many(self, contexts: Sequence[str], kbs: Sequence[KB], k: int) -> list[tuple[Hit, ...]]:
        _check_batch(contexts, kbs)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        out: list[tuple[Hit, ...]] = [() for _ in contexts]
        if not contexts:
            return out
        queries = self.encoder.embed_contexts(contexts, self.batch_size)
        groups: dict[int, list[int]] = {}
        for i, kb in enumerate(kbs):
            groups.setdefault(id(kb), []).append(i)
        for rows in groups.values():
            kb = kbs[rows[0]]
            if len(kb) == 0:
                continue
            index = self._index_for(kb)
            if index is not None:
                found = index.search(queries[rows], k)
                for row, ids, scores in zip(rows, found.ids, found.scores.tolist(), strict=True):
                    out[row] = tuple(
                        Hit(kb.records[int(key)], float(s), r)
                        for r, (key, s) in enumerate(zip(ids, scores, strict=False), start=1)
                    )
            else:
                records = self.encoder.embed_records([linearise(r) for r in kb], self.batch_size)
                for row, scores in zip(rows, queries[rows] @ records.T, strict=True):
                    out[row] = rank(kb, scores, k)
        return out

    def scores(self, contexts: Sequence[str], records: Sequence[Record]) -> Tensor:
        """Differentiable scores [B, M] of every context against every record (for training)."""
        ctx, rec = self.encoder(contexts, [linearise(r) for r in records])
        scores: Tensor = ctx @ rec.T
        return scores

    def _index_for(self, kb: KB) -> VectorIndex | None:
        if self._index is None:
            return None
        indexed, index = self._index
        # Identity is the common case; equality lets a re-loaded copy of the same KB use the index too.
        if kb is indexed or (len(kb) == len(indexed) and kb.name == indexed.name and kb == indexed):
            return index
        return None


# --------------------------------------------------------------------------------------- baselines


class BM25Retriever:
    """BM25 (Okapi) over linearised records; the query is the context text."""

    name = "bm25"

    def __init__(self) -> None:
        self._cache: _PerKBCache[BM25Okapi] = _PerKBCache()

    def build_index(self, kb: KB) -> None:
        if len(kb):
            self._cache.pin(kb, _bm25(kb))

    def retrieve(self, context: str, kb: KB, k: int) -> tuple[Hit, ...]:
        if len(kb) == 0:
            return ()
        bm25 = self._cache.get(kb, _bm25)
        return rank(kb, bm25.get_scores(tokens(context)), k)

    def retrieve_many(self, contexts: Sequence[str], kbs: Sequence[KB], k: int) -> list[tuple[Hit, ...]]:
        _check_batch(contexts, kbs)
        return [self.retrieve(c, kb, k) for c, kb in zip(contexts, kbs, strict=True)]


def _bm25(kb: KB) -> BM25Okapi:
    return BM25Okapi([tokens(linearise(r)) for r in kb])


class FrequencyRetriever:
    """Scores a record by how often its attribute values occur in the context (MAKER's baseline)."""

    name = "frequency"

    def __init__(self) -> None:
        self._cache: _PerKBCache[list[list[str]]] = _PerKBCache()

    def build_index(self, kb: KB) -> None:
        self._cache.pin(kb, _value_phrases(kb))

    def retrieve(self, context: str, kb: KB, k: int) -> tuple[Hit, ...]:
        if len(kb) == 0:
            return ()
        return rank(kb, value_counts(kb, context, self._cache.get(kb, _value_phrases)), k)

    def retrieve_many(self, contexts: Sequence[str], kbs: Sequence[KB], k: int) -> list[tuple[Hit, ...]]:
        _check_batch(contexts, kbs)
        return [self.retrieve(c, kb, k) for c, kb in zip(contexts, kbs, strict=True)]


def _value_phrases(kb: KB) -> list[list[str]]:
    """Each record's distinct values as space-joined token phrases (empty values dropped)."""
    out = []
    for record in kb:
        phrases = dict.fromkeys(" ".join(tokens(v)) for v in record.values)
        out.append([p for p in phrases if p])
    return out


def value_counts(kb: KB, text: str, phrases: list[list[str]] | None = None) -> list[int]:
    """Per record of `kb`: total occurrences in `text` of the record's distinct values, as whole words.

    Counting occurrences (not just presence) favours the entity the dialogue keeps talking about. Text
    and values are compared as token sequences, so ``01223_812660`` matches "01223 812660".
    """
    phrases = phrases if phrases is not None else _value_phrases(kb)
    words = tokens(text)
    longest = max((p.count(" ") + 1 for ps in phrases for p in ps), default=1)
    grams: Counter[str] = Counter()
    for n in range(1, longest + 1):
        grams.update(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    return [sum(grams[p] for p in ps) for ps in phrases]


# ---------------------------------------------------------------------------------------- registry

ENCODER_PREFIX = "encoder:"

_REGISTRY: dict[str, Callable[[], RetrieverProtocol]] = {
    "bm25": BM25Retriever,
    "frequency": FrequencyRetriever,
}


def register_retriever(name: str, factory: Callable[[], RetrieverProtocol]) -> None:
    _REGISTRY[name] = factory


def retriever_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def build_retriever(spec: str, device: str | torch.device = "cpu", batch_size: int = 64) -> RetrieverProtocol:
    """A registered baseline by name (``bm25``, ``frequency``), a trained retriever checkpoint folder, or
    ``encoder:MODEL``: a dense retriever on an encoder as it comes (e.g. ``encoder:all-MiniLM-L6-v2``,
    the bundled sentence encoder, no retrieval training).

    A training output folder is accepted too: its ``final/`` checkpoint is used.
    """
    if spec in _REGISTRY:
        return _REGISTRY[spec]()
    if spec.startswith(ENCODER_PREFIX):
        from mktod.encoder import EncoderConfig

        model = spec.removeprefix(ENCODER_PREFIX)
        if not model:
            raise ConfigError(f"retriever {spec!r}: name the encoder, e.g. encoder:all-MiniLM-L6-v2")
        return Retriever(
            DenseEncoder.from_pretrained(EncoderConfig(model=model), device), batch_size=batch_size
        )
    path = Path(spec)
    if not (path / _RETRIEVER_FILE).is_file() and (path / "final" / _RETRIEVER_FILE).is_file():
        path = path / "final"
    if (path / _RETRIEVER_FILE).is_file():
        retriever = Retriever.load(path, device)
        retriever.batch_size = batch_size
        return retriever
    names = ", ".join(retriever_names())
    hint = "it has no retriever.json" if path.is_dir() else "no such folder"
    raise ConfigError(f"retriever {spec!r}: not one of {names}, and not a retriever checkpoint ({hint})")
