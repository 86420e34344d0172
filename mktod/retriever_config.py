"""Typed configuration of retriever training (`mktod train-retriever --config FILE`).

Training runs its `stages` in order, each with its own section: `warmup` (distant supervision,
METHOD.md §2) and `mml` (maximal marginal likelihood against a frozen, trained generator, §3). A stage
continues from the weights the previous one left, or from `init`. The device is not config: it is a
property of the machine a run happens on (`--device`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mktod.encoder import EncoderConfig

STAGES = ("warmup", "mml")


@dataclass(frozen=True)
class RetrieverDataConfig:
    dataset: Literal["smd", "camrest", "mwoz"] = "mwoz"
    setting: Literal["condensed", "large"] = "large"
    train_split: str = "train"
    eval_split: str | None = "dev"  # Recall@K logged at eval_every and at the end; None: no evaluation
    limit_dialogues: int | None = None  # first N training dialogues only (smoke runs)


@dataclass(frozen=True)
class StageConfig:
    """Optimisation settings every stage has; each stage's section adds its own."""

    epochs: int = 2
    max_steps: int | None = None  # caps the step count that `epochs` implies
    batch_size: int = 32
    lr: float = 3e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 42
    save_every: int = 100  # steps between resumable checkpoints (the last step is always saved)
    keep_checkpoints: int = 2  # older step checkpoints are deleted
    eval_every: int = 0  # 0: evaluate only at the end
    log_every: int = 10
    # bf16 autocast (fp32 master weights): about 2x faster on CPUs with AVX512-BF16 and on recent GPUs.
    precision: Literal["fp32", "bf16"] = "fp32"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.epochs < 1 or (self.max_steps is not None and self.max_steps < 1):
            raise ValueError("epochs and max_steps must be positive")
        if self.lr <= 0:
            raise ValueError("lr must be positive")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("warmup_ratio must be in [0, 1)")
        if self.save_every < 1 or self.keep_checkpoints < 1 or self.log_every < 1 or self.eval_every < 0:
            raise ValueError("save_every, keep_checkpoints and log_every must be positive, eval_every >= 0")


@dataclass(frozen=True)
class WarmupConfig(StageConfig):
    """Distant supervision: in-batch contrastive loss against pseudo-positive records."""

    temperature: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2: in-batch negatives need other turns")
        if self.temperature <= 0:
            raise ValueError("temperature must be positive")


@dataclass(frozen=True)
class MMLStageConfig(StageConfig):
    """MML against a frozen generator (METHOD.md §3 with the generator's gradient stopped).

    The retriever learns q(e|c) ∝ exp(s/τ) towards the records under which the generator of
    ``generator`` finds the gold response likely: L = −log Σ_i q_i p(r|c,e_i) over the top-k. Use it
    to align a retriever to a trained generator without training the generator again, e.g. before
    serving a chat LLM that cannot be trained.
    """

    # A pipeline whose generator (and meta-knowledge settings) score responses: a checkpoint folder of
    # `mktod train` (runs/NAME/best), an exported pipeline, or a pipeline file (configs/pipelines/*.yaml).
    generator: str = ""
    k: int | None = None  # records per turn; None: the pipeline's k
    temperature: float = 0.05  # cosine scores of a normalised encoder need a small τ (see the warm-up)
    refresh_every: int = 100  # large-scale: steps between re-embeddings of the KB index
    score_batch_size: int = 16  # (turn, record) pairs per generator forward
    epochs: int = 1
    batch_size: int = 16
    lr: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature <= 0:
            raise ValueError("temperature must be positive")
        if (self.k is not None and self.k < 1) or self.refresh_every < 1 or self.score_batch_size < 1:
            raise ValueError("k, refresh_every and score_batch_size must be at least 1")


@dataclass(frozen=True)
class RetrieverTrainConfig:
    output_dir: str = "runs/retriever"
    data: RetrieverDataConfig = field(default_factory=RetrieverDataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    # A retriever checkpoint to start from instead of `encoder` (e.g. a warm-up run, for stages: [mml]).
    init: str | None = None
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    mml: MMLStageConfig = field(default_factory=MMLStageConfig)
    stages: tuple[str, ...] = ("warmup",)

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages or len(set(self.stages)) != len(self.stages):
            raise ValueError(
                f"stages must be a non-empty list of distinct {', '.join(STAGES)}; got {list(self.stages)}"
            )
        if "mml" in self.stages and not self.mml.generator:
            raise ValueError(
                "the mml stage needs mml.generator: a trained pipeline (runs/NAME/best, an exported "
                "pipeline folder or a configs/pipelines/*.yaml file) whose generator scores responses"
            )
        if self.data.setting == "large" and self.data.dataset == "smd":
            raise ValueError("SMD has no dataset-level KB; use data.setting: condensed")
