"""What a faiss index is made of and what it can do, read from the index itself.

`faiss.index_factory` returns layered objects (pre-transforms, id maps, refinement, HNSW storage around
an IVF or flat core) behind the generic `faiss.Index` type, and faiss has no capability flags. These
functions walk those layers and probe them: the parts an index wraps, its IVF and HNSW parts, whether it
keeps caller ids natively, which labels it stores, whether it implements removal, and how many vectors
training needs. `mktod.index.VectorIndex` uses them to decide how to label, remove and train, and to
check a loaded index against its file's header; keeping them here leaves that class with its own state.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np


def components(index: Any) -> list[Any]:
    """The index and what it wraps (pre-transform, refinement, HNSW storage), downcast to concrete types."""
    parts = []
    while index is not None:
        index = faiss.downcast_index(index)
        parts.append(index)
        index = next(
            (getattr(index, name) for name in ("index", "base_index", "storage") if hasattr(index, name)),
            None,
        )
    return parts


def min_train_size(index: Any) -> int:
    """Fewest training vectors faiss accepts: the IVF list count and the PQ codebook size."""
    need = 1
    for part in components(index):
        if hasattr(part, "nlist"):
            need = max(need, int(part.nlist))
        if hasattr(part, "pq"):
            need = max(need, int(part.pq.ksub))
    return need


def native_ids(index: Any) -> bool:
    """Whether the index keeps caller ids itself: an IVF, possibly behind pre-transforms."""
    *wrappers, core = components(index)
    return isinstance(core, faiss.IndexIVF) and all(isinstance(w, faiss.IndexPreTransform) for w in wrappers)


def stored_labels(index: Any) -> set[int]:
    """Every label the index holds: the id map of an `IndexIDMap2`, else the ids in its IVF lists."""
    if isinstance(index, faiss.IndexIDMap2):
        return set(faiss.vector_to_array(index.id_map).tolist())
    invlists: Any = faiss.extract_index_ivf(index).invlists
    labels: set[int] = set()
    for lst in range(invlists.nlist):
        if size := invlists.list_size(lst):
            ptr = invlists.get_ids(lst)
            labels.update(faiss.rev_swig_ptr(ptr, size).tolist())
            invlists.release_ids(lst, ptr)
    return labels


def supports_remove(index: Any) -> bool:
    """Whether faiss implements `remove_ids` for this index."""
    # faiss has no capability flag; an empty removal succeeds exactly where removal is implemented.
    try:
        index.remove_ids(np.zeros(0, dtype=np.int64))
    except RuntimeError:
        return False
    return True


def ivf_of(index: Any) -> Any:
    """The index's IVF part, or None when it has none."""
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def hnsw_of(index: Any) -> Any:
    """The index's HNSW part, or None when it has none."""
    return next((part for part in components(index) if hasattr(part, "hnsw")), None)


def first_line(err: BaseException) -> str:
    """The reason in a faiss error message, without its C++ signature and source position."""
    # faiss messages start with a C++ signature and file position; the reason is after "Error: ".
    text = str(err).strip()
    return text.split("Error: ", 1)[-1].splitlines()[0] if text else type(err).__name__
