"""Typed configuration of joint training (`mktod train --config FILE`, METHOD.md §2-6).

One section per part of the run: data, retriever, generator, meta knowledge, loss and optimisation. The
device and the number of processes are not config: they belong to the machine a run happens on
(`--device`, the launcher).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mktod.encoder import EncoderConfig
from mktod.generators.base import GeneratorConfig
from mktod.meta import MetaConfig
from mktod.pipeline import KBSetting


@dataclass(frozen=True)
class DataConfig:
    dataset: Literal["smd", "camrest", "mwoz"] = "mwoz"
    setting: KBSetting = "condensed"
    train_split: str = "train"
    dev_split: str | None = "dev"  # None: no evaluation, no best/ checkpoint
    limit_dialogues: int | None = None  # first N training dialogues only (smoke runs)


@dataclass(frozen=True)
class RetrieverSection:
    init: str | None = None  # a warm-up checkpoint (runs/retriever-mwoz or .../final); None: `encoder`
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    k: int = 7  # METHOD.md §2: condensed 6 / 6 / 8 (MWOZ / CamRest / SMD), large-scale 7
    refresh_every: int = 100  # large-scale: steps between re-embeddings of the KB index
    lr: float = 1e-4
    freeze: bool = False  # True: the retriever is fixed (no scores with gradient are computed)
    batch_size: int = 64  # embedding batch of no-grad retrieval


@dataclass(frozen=True)
class LossConfig:
    alpha: float = 1.0  # NLL: mean over turns of −log p(r|c,E), a sequence log-prob like MML's
    beta: float = 1.0  # MML
    gamma: float = 1.0  # CTR (only with use_ctr)
    use_mml: bool = True
    use_ctr: bool = False
    detach_generator: bool = False  # MML trains the retriever only
    # METHOD.md §4: the easy negative is added "to the generator input and to the set MML sums over";
    # false: MML and CTR range over the retrieved records only (the negative is generator input alone).
    mml_negative: bool = True
    # q = softmax(s/τ). METHOD.md has τ = 1 for BERT inner products; cosine scores in [-1, 1] (the
    # normalised MiniLM encoder) need a small τ (0.05, as in the warm-up) or q is nearly uniform.
    mml_temperature: float = 1.0
    # Dropout in the single-record likelihoods that MML (and CTR) compare. Off by default: in train
    # mode every record's sequence log-likelihood carries noise of its own (T5-small on CamRest: a
    # spread of 7.4 nats across a turn's records, against 0.19 without dropout), the posterior then
    # follows the noise and MML drags the retriever to chance. The NLL term keeps its dropout (FiD's
    # encoder and the parallel causal layout share their pass with the singles and lose it).
    mml_dropout: bool = False
    ctr_top_n: int = 1
    ctr_margin: float = 0.01


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4  # generator; the retriever's is retriever.lr
    weight_decay: float = 0.01
    warmup_ratio: float = 0.0  # share of max_steps with a linear warm-up; then linear decay to 0
    grad_clip: float = 1.0
    batch_size: int = 8  # turns per micro-batch
    grad_accum: int = 8  # micro-batches per optimizer step: 8 × 8 = the paper's 64 turns
    max_steps: int = 1500
    eval_every: int = 100  # steps between dev evaluations (and the last step)
    eval_limit: int | None = None  # first N dev turns only, to keep evaluation cheap
    eval_batch_size: int = 16
    save_every: int = 100  # steps between resumable checkpoints (and the last step)
    log_every: int = 10
    seed: int = 42
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast, fp32 master weights


@dataclass(frozen=True)
class TrainConfig:
    output_dir: str = "runs/mktod"
    data: DataConfig = field(default_factory=DataConfig)
    retriever: RetrieverSection = field(default_factory=RetrieverSection)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        if self.data.setting == "large" and self.data.dataset == "smd":
            raise ValueError("SMD has no dataset-level KB; use data.setting: condensed")
        if self.retriever.k < 1 or self.retriever.refresh_every < 1:
            raise ValueError("retriever.k and retriever.refresh_every must be at least 1")
        o = self.optim
        if min(o.batch_size, o.grad_accum, o.max_steps, o.eval_every, o.save_every, o.log_every) < 1:
            raise ValueError("optim batch_size, grad_accum, max_steps and the *_every intervals must be >= 1")
        if not (self.loss.use_mml or self.loss.use_ctr or self.loss.alpha > 0):
            raise ValueError("no loss left: set loss.alpha > 0 or enable use_mml / use_ctr")
