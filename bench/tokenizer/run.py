"""How well each from-scratch tokenizer covers what a T5 generator reads and writes, per dataset.

For every dataset and tokenizer variant it runs ``mktod build-backbone --kind t5-scratch`` (a tiny T5:
the tokenizer does not depend on the model size, and ``--size small`` trains the same one) and
measures on the test split, which the tokenizer never saw:

- pieces per word of the gold responses (what the decoder must write), the share of their words
  that are one piece, and the share of responses longer than the configs' 48 target tokens;
- the share of ``<unk>`` pieces over the responses and the linearised records;
- ``mktod record-budget`` on the dataset's from-scratch T5 config (CamRest and SMD:
  ``configs/{dataset}-condensed-prompt-t5-cpu.yaml``, 48 record tokens; MultiWOZ has none, so its
  paper config, 100) with the built tokenizer: the longest prompt-rendered record and the share cut.

    python bench/tokenizer/run.py            # 3 datasets x 3 tokenizers: ~90 s on 2 cores

Writes ``tokenizer.json`` and ``tokenizer.md`` in ``--out`` (default bench/results/tokenizer/).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mktod.cli_common import data_paths
from mktod.datasets import get_loader
from mktod.types import Split

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for mktod_cli
from mktod_cli import MktodError, run_mktod

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "bench" / "results" / "tokenizer"
DATASETS = ("camrest", "smd", "mwoz")
# (--tokenizer, --tokenizer-texts): the reported T5 rows' tokenizer, the same algorithm on the
# generator's inputs, and the default since the BPE change.
VARIANTS = (("unigram", "dialogues"), ("unigram", "inputs"), ("bpe", "inputs"))
BUDGET_CONFIGS = {
    "camrest": "configs/camrest-condensed-prompt-t5-cpu.yaml",
    "smd": "configs/smd-condensed-prompt-t5-cpu.yaml",
    "mwoz": "configs/mwoz-condensed-prompt.yaml",
}
MAX_TARGET_TOKENS = 48  # every seq2seq config's generator.max_target_tokens


def mktod(args: Sequence[str]) -> str:
    """``mktod ARGS``' stdout, or SystemExit naming the command and its last error line."""
    try:
        return run_mktod(args)
    except MktodError as error:
        raise SystemExit(f"mktod {' '.join(args)}: {error}") from None


def coverage(folder: Path, split: Split) -> dict[str, float]:
    """Pieces per word, one-piece words, long responses and <unk> on ``split`` (a test split)."""
    from transformers import AutoTokenizer

    from mktod.kb import linearise

    tok = AutoTokenizer.from_pretrained(folder)
    responses = [turn.response for d in split.dialogues for turn in d.turns]
    records = {linearise(r) for d in split.dialogues for r in d.kb}
    words = [w for r in responses for w in r.split()]
    word_pieces = [len(tok.tokenize(w)) for w in words]
    response_ids = [tok.encode(r, add_special_tokens=False) for r in responses]
    ids = [i for seq in response_ids for i in seq] + [
        i for r in sorted(records) for i in tok.encode(r, add_special_tokens=False)
    ]
    return {
        "pieces_per_word": round(sum(len(s) for s in response_ids) / len(words), 3),
        "one_piece_words": round(100.0 * sum(n == 1 for n in word_pieces) / len(words), 2),
        "responses_over_target": round(
            100.0 * sum(len(s) + 1 > MAX_TARGET_TOKENS for s in response_ids) / len(responses), 2
        ),  # + 1: the eos the generator appends
        "unk": round(100.0 * sum(i == tok.unk_token_id for i in ids) / len(ids), 3),
    }


def measure(
    dataset: str, test: Split, model: str, texts: str, work: Path, where: Sequence[str]
) -> dict[str, Any]:
    """Build ``model`` trained on ``texts`` of ``dataset`` and measure it on ``test``; ``where``: the
    data and cache options every ``mktod`` command gets."""
    folder = work / f"{dataset}-{model}-{texts}"
    build = ["build-backbone", "--kind", "t5-scratch", "--dataset", dataset, "--size", "tiny"]
    built = json.loads(
        mktod([*build, "--tokenizer", model, "--tokenizer-texts", texts, "--out", str(folder), *where])
    )
    budget = json.loads(
        mktod(
            [
                "record-budget",
                "--config",
                BUDGET_CONFIGS[dataset],
                "--set",
                f"generator.model={folder}",
                "--split",
                "test",
                "--json",
                *where,
            ]
        )
    )["splits"][0]
    return {
        "dataset": dataset,
        "tokenizer": model,
        "tokenizer_texts": texts,
        "vocab_size": built["vocab_size"],
        **coverage(folder, test),
        "budget_config": BUDGET_CONFIGS[dataset],
        "max_record_tokens": budget["max_record_tokens"],
        "record_tokens_p50": budget["tokens_p50"],
        "longest_record_tokens": budget["longest_record_tokens"],
        "records_cut": budget["records_cut"],
    }


def table(results: Sequence[dict[str, Any]]) -> str:
    head = [
        "| dataset | tokenizer | trained on | pieces | pieces / word | one-piece words | "
        f"responses > {MAX_TARGET_TOKENS} | unk | record p50 | longest record | records cut (budget) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [
        f"| {r['dataset']} | {r['tokenizer']} | {r['tokenizer_texts']} | {r['vocab_size']} | "
        f"{r['pieces_per_word']:.2f} | {r['one_piece_words']:.1f}% | {r['responses_over_target']:.1f}% | "
        f"{r['unk']:.2f}% | {r['record_tokens_p50']} | {r['longest_record_tokens']} | "
        f"{r['records_cut']:.1f}% ({r['max_record_tokens']}) |"
        for r in results
    ]
    text = [
        "# From-scratch tokenizers",
        "",
        "`python bench/tokenizer/run.py`: each row is `mktod build-backbone --kind t5-scratch --tokenizer "
        "T --tokenizer-texts X` trained on the dataset's training split and measured on its test split. "
        "*pieces*: vocabulary size with the meta-knowledge tokens; *pieces / word*, *one-piece words*: "
        f"over the gold test responses; *responses > {MAX_TARGET_TOKENS}*: the share the configs' "
        "target budget cuts (with eos); *unk*: `<unk>` share over the responses and the linearised "
        "records; *record p50*, *longest record*, *records cut*: `mktod record-budget` over the test "
        "KBs with prompt meta knowledge on the config named in tokenizer.json (CamRest, SMD: their "
        "from-scratch T5 configs; MultiWOZ: its paper config). The reported T5 rows of "
        "bench/results/quality.md used `unigram` on `dialogues`.",
        "",
        *head,
        *rows,
    ]
    return "\n".join(text) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    ap.add_argument("--data-dir", help="as for mktod (default: $MKTOD_DATA_DIR, else ../shared/datasets)")
    ap.add_argument("--cache-dir", help="as for mktod (default: data/cache)")
    args = ap.parse_args(argv)
    where = [*(["--data-dir", args.data_dir] if args.data_dir else [])]
    where += ["--cache-dir", args.cache_dir] if args.cache_dir else []
    paths = data_paths(args)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            test = get_loader(dataset).load_split("test", paths)  # once: every variant reads it
            for model, texts in VARIANTS:
                print(f"{dataset}: {model} on {texts}", file=sys.stderr, flush=True)
                results.append(measure(dataset, test, model, texts, Path(tmp), where))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tokenizer.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (args.out / "tokenizer.md").write_text(table(results), encoding="utf-8")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
