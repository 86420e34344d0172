"""Decoder-only generator: time of an NLL + MML step over an NLL-only step (issue #7, item 2).

Three step kinds, each forward + backward + clip + AdamW step, on a randomly initialised Llama of
SmolLM2-135M's shape (or a smaller one) built from a config, K records per turn, synthetic text of fixed
token lengths:

- ``nll``:         L_NLL only: one forward over instruction + context + all K records + response.
- ``mml_prefix``:  L_NLL + L_MML with :meth:`CausalGenerator.joint_and_single_logprobs`: the shared
                   prefix (instruction + context) once, its key/value cache expanded to the joint row
                   and the K single-record rows, which compute only record + response.
- ``mml_naive``:   L_NLL + L_MML with each one-record likelihood from its own full forward.
- ``nll_parallel`` / ``mml_parallel``: the same two steps with ``record_attention: parallel``, where each
                   record sees the prefix and itself only, so the one-record rows reuse the records'
                   keys/values from the joint pass and compute only tail + response.

Interleaved repetitions; medians and ratios to ``nll`` from the same run (see run.py for the seq2seq one).

    python bench/train_step/causal.py --device cpu --size mini
    python bench/train_step/causal.py --device cuda --size smollm2 --batch 8
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch
from harness import add_step_arguments, ratio_table, summary, timed_steps
from run import make_batch, synthetic_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from mktod.generators.base import GeneratorConfig, GeneratorInput
from mktod.generators.causal import CausalGenerator
from mktod.losses import mml_loss, nll_loss
from mktod.sysinfo import cpu_model

SIZES = {
    # hidden, intermediate, layers, heads, kv heads
    "smollm2": (576, 1536, 30, 9, 3),
    "mini": (256, 768, 6, 4, 2),
}
VOCAB = 49152  # SmolLM2's


def naive_single_logprobs(
    g: CausalGenerator, batch: list[GeneratorInput], responses: list[str]
) -> torch.Tensor:
    """[B, K] from B*K full forwards of one-record prompts (batched, but nothing shared)."""
    one = [GeneratorInput(item.context, (r,)) for item in batch for r in item.records]
    repeated = [resp for item, resp in zip(batch, responses, strict=True) for _ in item.records]
    return g.joint_logprobs(one, repeated).view(len(batch), -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="mini")
    add_step_arguments(ap, reps=5)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    hidden, inter, layers, heads, kv = SIZES[args.size]
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
    )
    cfg = GeneratorConfig(kind="causal", model=args.size, max_context_tokens=200, max_record_tokens=100)
    g = CausalGenerator(LlamaForCausalLM(config), synthetic_tokenizer(VOCAB), cfg, "prefix", device)
    g.model.train()
    # The same weights behind the parallel record layout.
    gp = CausalGenerator(g.model, g.tokenizer, replace(cfg, record_attention="parallel"), "prefix", device)
    batch, responses = make_batch(args)
    scores = torch.nn.Parameter(torch.randn(args.batch, args.k, device=device))
    params = [*g.model.parameters(), scores]
    prompt_tokens = len(g.prompt(batch[0]))
    prefix_tokens = len(g.turn(batch[0]).prefix)

    def nll() -> torch.Tensor:
        return nll_loss(g.joint_logprobs(batch, responses))

    def mml_prefix() -> torch.Tensor:
        out = g.joint_and_single_logprobs(batch, responses)
        return nll_loss(out.joint) + mml_loss(scores, out.single, mask=out.mask)

    def mml_naive() -> torch.Tensor:
        joint = g.joint_logprobs(batch, responses)
        return nll_loss(joint) + mml_loss(scores, naive_single_logprobs(g, batch, responses))

    def nll_parallel() -> torch.Tensor:
        return nll_loss(gp.joint_logprobs(batch, responses))

    def mml_parallel() -> torch.Tensor:
        out = gp.joint_and_single_logprobs(batch, responses)
        return nll_loss(out.joint) + mml_loss(scores, out.single, mask=out.mask)

    kinds = {
        "nll": nll,
        "mml_prefix": mml_prefix,
        "mml_naive": mml_naive,
        "nll_parallel": nll_parallel,
        "mml_parallel": mml_parallel,
    }
    times = timed_steps(kinds, params, device, args.reps, args.warmup)
    result = {
        "machine": {
            "cpu": cpu_model(),
            "cpu_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
        },
        "setup": {
            "model": f"Llama random init, {args.size} shape",
            "hidden": hidden,
            "intermediate": inter,
            "layers": layers,
            "heads": heads,
            "kv_heads": kv,
            "vocab": VOCAB,
            "params_m": round(sum(p.numel() for p in g.model.parameters()) / 1e6, 1),
            "batch_turns": args.batch,
            "k": args.k,
            "prompt_tokens": prompt_tokens,
            "prefix_tokens": prefix_tokens,
            "target_tokens": args.target_tokens,
            "reps": args.reps,
            "warmup": args.warmup,
        },
        # Each step over the NLL-only step of its own record layout.
        **summary(times, baseline),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"causal_{device.type}_{args.size}"
    (args.out / f"train_step_{tag}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.out / f"train_step_{tag}.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


def baseline(kind: str) -> str:
    return "nll_parallel" if kind.endswith("_parallel") else "nll"


def markdown(r: dict) -> str:  # type: ignore[type-arg]
    m, s = r["machine"], r["setup"]
    lines = [
        f"# Decoder-only training step: NLL + MML over NLL-only ({m['device']})",
        "",
        f"Machine: {m['cpu']}, {m['cpu_threads']} torch threads, torch {m['torch']}.",
        f"Model: {s['model']} (hidden {s['hidden']}, {s['layers']} layers, {s['heads']} heads / "
        f"{s['kv_heads']} kv, vocab {s['vocab']}, {s['params_m']}M params).",
        f"Batch: {s['batch_turns']} turns, prompt of {s['prompt_tokens']} tokens "
        f"({s['prefix_tokens']} shared prefix + K = {s['k']} records + template), "
        f"targets of {s['target_tokens']} tokens. "
        f"Median of {s['reps']} interleaved repetitions after {s['warmup']} warm-up.",
        "",
        "Ratios are to the NLL-only step of the same record layout.",
        "",
    ]
    labels = {
        "nll": "NLL only",
        "mml_prefix": "NLL + MML, shared prefix computed once (mktod)",
        "mml_naive": "NLL + MML, a full forward per record (naive)",
        "nll_parallel": "parallel layout: NLL only",
        "mml_parallel": "parallel layout: NLL + MML, records' keys/values reused (mktod)",
    }
    lines += ratio_table(r, labels, baseline)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
