"""The GPU side of a `VectorIndex` with device="cuda": the check that faiss can reach a GPU, and the copy.

The CPU index stays the master copy (see `mktod.index`). `GpuCopy` holds the GPU copy of it (on one GPU,
or replicated / sharded over all visible GPUs), made on the first search after a change and dropped on the
next change, together with the GPU resources that the copy and IVF training's k-means run on. Every faiss
GPU call of the index lives here, apart from the CPU logic, and none runs with device="cpu", so a
CPU-only faiss build never reaches one.
"""

from __future__ import annotations

from typing import Any, Literal

import faiss

from mktod.errors import ConfigError
from mktod.faiss_parts import first_line

MultiGpu = Literal["replicate", "shard"]


def check_gpu() -> None:
    """Raise ConfigError, saying what to install or check, unless faiss has GPU support and sees a GPU."""
    if not hasattr(faiss, "StandardGpuResources"):
        raise ConfigError(
            "device='cuda' needs a faiss build with GPU support; install the gpu extra "
            "(pip install 'mktod[gpu]', which replaces faiss-cpu with faiss-gpu) or use device='cpu'"
        )
    if faiss.get_num_gpus() == 0:
        raise ConfigError(
            "device='cuda' but faiss sees no GPU; check CUDA_VISIBLE_DEVICES and the driver, "
            "make sure the gpu extra (faiss-gpu) is installed, or use device='cpu'"
        )


class GpuCopy:
    """The GPU copy of a CPU faiss index built from `spec`, made by `build` and dropped by `drop`."""

    def __init__(self, spec: str, multi_gpu: MultiGpu) -> None:
        self._spec = spec
        self._multi_gpu: MultiGpu = multi_gpu
        self.index: Any = None  # None when absent or stale
        self._resources: Any = None

    def resources(self) -> Any:
        """The resources of GPU 0, made on first use and kept for later copies and training."""
        self._resources = self._resources or faiss.StandardGpuResources()
        return self._resources

    def drop(self) -> None:
        self.index = None

    def set_nprobe(self, nprobe: int) -> None:
        if self.index is not None:
            faiss.GpuParameterSpace().set_index_parameter(self.index, "nprobe", nprobe)

    def build(self, cpu_index: Any, nprobe: int | None) -> Any:
        """Copy cpu_index to the GPU(s), keep the copy as `index` and return it."""
        try:
            if faiss.get_num_gpus() > 1:
                options = faiss.GpuMultipleClonerOptions()
                options.shard = self._multi_gpu == "shard"
                gpu_index = faiss.index_cpu_to_all_gpus(cpu_index, co=options)
            else:
                gpu_index = faiss.index_cpu_to_gpu(self.resources(), 0, cpu_index)
        except RuntimeError as err:
            raise ConfigError(
                f"faiss cannot run index spec {self._spec!r} on the GPU ({first_line(err)}); use "
                "device='cpu' or a GPU-capable spec such as Flat, IVF<n>,Flat or IVF<n>,PQ<m>"
            ) from err
        if nprobe is not None:
            faiss.GpuParameterSpace().set_index_parameter(gpu_index, "nprobe", nprobe)
        self.index = gpu_index
        return gpu_index
