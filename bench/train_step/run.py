"""Time of one NLL + MML training step over one NLL-only step (METHOD.md §3, last bullet).

Three step kinds, each forward + backward + clip + AdamW step, on a randomly initialised T5 built from a
config (no download), K records per turn, synthetic text of fixed token lengths:

- ``nll``:        L_NLL only (the FiD pass over all K passages).
- ``mml_reuse``:  L_NLL + L_MML with :meth:`Seq2SeqGenerator.joint_and_single_logprobs`: one encoder call,
                  the K one-record likelihoods from one extra batched decoder call.
- ``mml_naive``:  L_NLL + L_MML with the one-record likelihoods from K separate full forward passes
                  (encoder included), what a generator without the reuse has to do.

The step kinds are interleaved within every repetition so that background load hits them alike; the
report gives medians and the ratios to ``nll`` measured in the same run. The retriever is a [B, K] score
parameter: its cost is the same in every kind and is left out.

    python bench/train_step/run.py --device cpu --size mini
    python bench/train_step/run.py --device cuda --size t5-small --batch 8
"""

from __future__ import annotations

import argparse
import json
import platform

import torch
from harness import add_step_arguments, ratio_table, summary, timed_steps
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from mktod.generators.base import GeneratorConfig, GeneratorInput
from mktod.generators.seq2seq import Seq2SeqGenerator
from mktod.losses import mml_loss, nll_loss, sequence_logprob
from mktod.meta import MetaTags, TaggedRecord
from mktod.types import Record

SIZES = {
    # d_model, d_ff, layers (encoder and decoder each), heads
    "t5-small": (512, 2048, 6, 8),
    "mini": (256, 1024, 4, 4),
    "t5-base": (768, 3072, 12, 12),
}
DEFAULT_SIZE = "t5-small"
VOCAB = 32128  # T5's: the LM head over it is a large part of the extra decoder work


def synthetic_tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    words = ["<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(vocab - 3 - 11)]  # 11 meta tokens come later
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def words(gen: torch.Generator, n: int, vocab: int) -> str:
    return " ".join(f"w{i}" for i in torch.randint(0, vocab - 100, (n,), generator=gen).tolist())


def make_batch(args: argparse.Namespace) -> tuple[list[GeneratorInput], list[str]]:
    gen = torch.Generator().manual_seed(0)
    tags = MetaTags("<new-entity>", "<mid-confidence>", "<1th-entity>")
    batch, responses = [], []
    for b in range(args.batch):
        # Record text is linearised "attr value ; ..." -> its token count is set by the words below.
        records = tuple(
            TaggedRecord(
                Record(f"{b}-{i}", {"x": words(gen, args.record_tokens - 5, VOCAB)}), tags, i + 1, 0.0, 0.0
            )
            for i in range(args.k)
        )
        batch.append(GeneratorInput(words(gen, args.context_tokens, VOCAB), records))
        responses.append(words(gen, args.target_tokens - 1, VOCAB))
    return batch, responses


def naive_single_logprobs(
    g: Seq2SeqGenerator, batch: list[GeneratorInput], responses: list[str]
) -> torch.Tensor:
    """[B, K] by K full forward passes, record i of every turn in pass i (encoder re-run each time)."""
    ids, attention, _, k = g.passages(batch)
    labels = g.labels(responses)
    out = []
    for i in range(k):
        rows = torch.arange(len(batch), device=ids.device) * k + i
        logits = g.model(input_ids=ids[rows], attention_mask=attention[rows], labels=labels).logits
        out.append(sequence_logprob(logits, labels))
    return torch.stack(out, dim=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default=DEFAULT_SIZE)
    add_step_arguments(ap, reps=7)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    d_model, d_ff, layers, heads = SIZES[args.size]
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=VOCAB,
        d_model=d_model,
        d_ff=d_ff,
        d_kv=d_model // heads,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=heads,
        pad_token_id=0,
        eos_token_id=1,
    )
    config.decoder_start_token_id = 0  # an attribute: T5Config's typed signature does not take it
    cfg = GeneratorConfig(
        model=args.size, max_context_tokens=200, max_record_tokens=100, max_target_tokens=64
    )
    g = Seq2SeqGenerator(
        T5ForConditionalGeneration(config), synthetic_tokenizer(VOCAB), cfg, "prefix", device
    )
    g.model.train()
    batch, responses = make_batch(args)
    ids, _, _, _ = g.passages(batch)
    scores = torch.nn.Parameter(torch.randn(args.batch, args.k, device=device))  # stands in for the retriever
    params = [*g.model.parameters(), scores]

    def nll() -> torch.Tensor:
        return nll_loss(g.joint_logprobs(batch, responses))

    def mml_reuse() -> torch.Tensor:
        out = g.joint_and_single_logprobs(batch, responses)
        return nll_loss(out.joint) + mml_loss(scores, out.single, mask=out.mask)

    def mml_naive() -> torch.Tensor:
        joint = g.joint_logprobs(batch, responses)
        return nll_loss(joint) + mml_loss(scores, naive_single_logprobs(g, batch, responses))

    kinds = {"nll": nll, "mml_reuse": mml_reuse, "mml_naive": mml_naive}
    times = timed_steps(kinds, params, device, args.reps, args.warmup)
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
        },
        "setup": {
            "size": args.size,
            "d_model": d_model,
            "d_ff": d_ff,
            "layers": layers,
            "heads": heads,
            "vocab": VOCAB,
            "params_m": round(sum(p.numel() for p in g.model.parameters()) / 1e6, 1),
            "batch_turns": args.batch,
            "k": args.k,
            "passage_tokens": ids.shape[1],
            "target_tokens": args.target_tokens,
            "reps": args.reps,
            "warmup": args.warmup,
        },
        **summary(times, lambda _: "nll"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    # train_step.json is the default CPU run; other devices and sizes get their own files beside it.
    tag = ("" if device.type == "cpu" else f"_{device.type}") + (
        "" if args.size == DEFAULT_SIZE else f"_{args.size}"
    )
    (args.out / f"train_step{tag}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.out / f"train_step{tag}.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


def markdown(r: dict) -> str:  # type: ignore[type-arg]
    m, s = r["machine"], r["setup"]
    lines = [
        f"# Training step: NLL + MML over NLL-only ({m['device']})",
        "",
        f"Machine: {m['platform']}, {m['processor']}, {m['cpu_threads']} torch threads, torch {m['torch']}.",
        f"Model: T5 random init, {s['size']} shape (d_model {s['d_model']}, d_ff {s['d_ff']}, "
        f"{s['layers']}+{s['layers']} layers, {s['heads']} heads, vocab {s['vocab']}, "
        f"{s['params_m']}M params).",
        f"Batch: {s['batch_turns']} turns x K = {s['k']} passages of {s['passage_tokens']} tokens, "
        f"targets of {s['target_tokens']} tokens. Step = forward + backward + clip + AdamW. "
        f"Median of {s['reps']} interleaved repetitions after {s['warmup']} warm-up.",
        "",
    ]
    labels = {
        "nll": "NLL only",
        "mml_reuse": "NLL + MML, encoder output reused (mktod)",
        "mml_naive": "NLL + MML, K separate full forwards (naive)",
    }
    lines += ratio_table(r, labels, lambda _: "nll")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
