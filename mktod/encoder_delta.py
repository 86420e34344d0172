"""A fine-tuned encoder stored as a quantised difference from the base encoder it was trained from.

Why: a jointly trained CamRest retriever is all-MiniLM-L6-v2 moved by about 0.5% (||trained - base||
/ ||base||), yet its full weights take 90 MB, too much to ship beside a 10 MB adapter (issue #4 item 9:
at most 25 MB). The base is installed with the package, so only ``trained - base`` needs shipping.
Each 2-D delta is quantised symmetrically in groups of ``group`` consecutive values with one bfloat16
scale per group; ``bits`` = 4 takes MiniLM to about 6 MB and puts the same record first as the full
weights on every CamRest test turn (``bench/retriever_delta/run.py``; README, the paragraph after the
export-pipeline example).

Rows whose delta is below ``row_tolerance`` of their base row's norm are dropped (their delta is taken
as zero). That is the word-embedding table: training moves only the rows of tokens it saw, weight decay
shrinks the other ~29k rows by about 1e-5 of their norm. 1-D parameters (biases, LayerNorm) are small
and are stored exactly. A fingerprint of the base weights is kept, so a delta is never applied to a
different base.

``delta.safetensors`` holds, per tower prefix (``context.``, ``record.``) and parameter name:
``NAME.q`` (uint8 codes, two 4-bit codes a byte at 4 bits), ``NAME.scale`` (bfloat16, one a group),
``NAME.rows`` (int64, only when some rows were dropped) and ``NAME.full`` (float32, 1-D parameters).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mktod.errors import ConfigError

DELTA_FILE = "delta.safetensors"
BITS = (4, 8)


@dataclass(frozen=True)
class DeltaInfo:
    """What ``encoder.json`` records of a delta: enough to rebuild the weights and to refuse a wrong base."""

    base_fingerprint: str
    bits: int = 4
    group: int = 64
    row_tolerance: float = 1e-4
    file: str = DELTA_FILE

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise ValueError(f"delta bits must be one of {BITS}, got {self.bits}")
        if self.group < 2 or self.group % 2:
            raise ValueError(f"delta group must be an even number of at least 2, got {self.group}")
        if not 0 <= self.row_tolerance < 1:
            raise ValueError(f"delta row_tolerance must be in [0, 1), got {self.row_tolerance}")


def fingerprint(state: Mapping[str, Tensor]) -> str:
    """SHA-256 over every parameter's name, shape and float32 bytes: the identity of a base encoder."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def quantise(values: Tensor, bits: int, group: int) -> tuple[Tensor, Tensor]:
    """Flat ``values`` -> (uint8 codes, bfloat16 scales); the last group is zero-padded."""
    flat = values.detach().to(torch.float32).reshape(-1)
    pad = (-flat.numel()) % group
    grouped = torch.nn.functional.pad(flat, (0, pad)).reshape(-1, group)
    qmax = 2 ** (bits - 1) - 1
    # bfloat16, not float16: deltas are small (a group's scale is often ~1e-6, below float16's normal
    # range), and bfloat16 keeps float32's exponent. The scale is rounded before coding, so decoding
    # multiplies by exactly the scale the codes were made with.
    scale = (grouped.abs().amax(dim=1, keepdim=True) / qmax).to(torch.bfloat16)
    safe = scale.to(torch.float32).clamp(min=torch.finfo(torch.float32).tiny)  # all-zero groups: codes 0
    codes = (torch.round(grouped / safe).clamp(-qmax, qmax) + qmax + 1).to(torch.uint8).reshape(-1)
    if bits == 4:
        codes = codes[0::2] | (codes[1::2] << 4)  # two codes a byte; group is even, so numel is too
    return codes, scale.reshape(-1)


def dequantise(codes: Tensor, scale: Tensor, bits: int, group: int, numel: int) -> Tensor:
    """The inverse of :func:`quantise`: float32 values, the first ``numel`` of them."""
    if bits == 4:
        codes = torch.stack([codes & 0x0F, codes >> 4], dim=1).reshape(-1)
    qmax = 2 ** (bits - 1) - 1
    centred: Tensor = codes.to(torch.float32) - (qmax + 1)
    values: Tensor = (centred.reshape(-1, group) * scale.to(torch.float32).reshape(-1, 1)).reshape(-1)
    return values[:numel]


def delta_tensors(
    trained: Mapping[str, Tensor], base: Mapping[str, Tensor], prefix: str, info: DeltaInfo
) -> dict[str, Tensor]:
    """The stored form of ``trained - base`` for one tower; parameters that did not move are left out."""
    missing = sorted(set(trained) ^ set(base))
    if missing:
        raise ConfigError(
            f"the trained encoder and its base differ in their parameters (e.g. {missing[0]!r}); a delta "
            "needs the same architecture"
        )
    out: dict[str, Tensor] = {}
    for name, weight in trained.items():
        before = base[name].detach().to(torch.float32)
        delta = weight.detach().to(torch.float32) - before
        if delta.shape != before.shape:
            raise ConfigError(
                f"parameter {name!r}: shape {tuple(weight.shape)} against the base's {before.shape}"
            )
        if not torch.any(delta):
            continue
        key = f"{prefix}{name}"
        if delta.dim() < 2:
            out[f"{key}.full"] = delta.contiguous()
            continue
        matrix = delta.reshape(delta.shape[0], -1)
        moved = matrix.norm(dim=1) > info.row_tolerance * before.reshape(before.shape[0], -1).norm(dim=1)
        if not bool(moved.any()):
            continue
        if not bool(moved.all()):
            rows = torch.nonzero(moved).reshape(-1)
            out[f"{key}.rows"] = rows.to(torch.int64)
            matrix = matrix[rows]
        out[f"{key}.q"], out[f"{key}.scale"] = quantise(matrix, info.bits, info.group)
    return out


def apply_delta(
    model: nn.Module, tensors: Mapping[str, Tensor], prefix: str, info: DeltaInfo, where: Path
) -> None:
    """Add the stored delta of one tower to ``model``'s weights (in place)."""
    state = model.state_dict()
    names = {k.rsplit(".", 1)[0] for k in tensors if k.startswith(prefix)}
    unknown = sorted(n for n in names if n.removeprefix(prefix) not in state)
    if unknown:
        raise ConfigError(f"{where}: the delta names {unknown[0]!r}, which the base encoder does not have")
    with torch.no_grad():
        for key in sorted(names):
            target = state[key.removeprefix(prefix)]
            if f"{key}.full" in tensors:
                target.add_(tensors[f"{key}.full"].to(target.dtype).reshape(target.shape))
                continue
            matrix = target.view(target.shape[0], -1)
            rows = tensors.get(f"{key}.rows")
            count = matrix.shape[0] if rows is None else rows.numel()
            try:
                codes, scale = tensors[f"{key}.q"], tensors[f"{key}.scale"]
                values = dequantise(codes, scale, info.bits, info.group, count * matrix.shape[1])
                values = values.reshape(count, matrix.shape[1]).to(matrix.dtype)
                if rows is None:
                    matrix.add_(values)
                else:
                    matrix.index_add_(0, rows, values)
            except (KeyError, RuntimeError, IndexError) as exc:
                raise ConfigError(f"{where}: the delta of {key!r} is damaged ({exc})") from None


def write_delta(towers: Mapping[str, tuple[nn.Module, nn.Module]], directory: Path, info: DeltaInfo) -> None:
    """Write ``delta.safetensors`` for each ``prefix -> (trained, base)`` tower."""
    tensors: dict[str, Tensor] = {}
    for prefix, (trained, base) in towers.items():
        tensors.update(delta_tensors(trained.state_dict(), base.state_dict(), prefix, info))
    save_file(tensors, str(directory / info.file), metadata={"format": "mktod-encoder-delta"})


def read_delta(directory: Path, info: DeltaInfo) -> dict[str, Tensor]:
    path = directory / info.file
    if not path.is_file():
        raise ConfigError(f"{directory}: encoder.json names a delta, but {info.file} is missing")
    return load_file(str(path))


def check_base(base: nn.Module, info: DeltaInfo, base_name: str, where: Path) -> None:
    found = fingerprint(base.state_dict())
    if found != info.base_fingerprint:
        raise ConfigError(
            f"{where}: this retriever is stored as a delta over {base_name!r}, but the copy of "
            f"{base_name!r} loaded here has other weights (fingerprint {found[:12]}, expected "
            f"{info.base_fingerprint[:12]}); "
            "install the base it was exported from, or use the full retriever checkpoint"
        )
