from __future__ import annotations

from pathlib import Path

import pytest

from mktod.datasets.textfmt import check_split, parse_file, parse_gold, parse_lines, turns_of
from mktod.errors import DataError

SAMPLE = (
    "#navigate#\n"
    "0 2_miles\tno_traffic\tgas_station\t91_el_camino_real\tvalero\n"
    "0 4_miles\theavy_traffic\thome\t5671_barringer_street\thome\n"
    "1 where is the gas_station ?\tvalero is 2_miles away\t['valero', '2_miles']\n"
    "2 thanks\tyou re welcome !\t[]\n"
    "\n"
    "#schedule#\n"
    '1 when is my "dentist" appointment ?\tit is at 5pm\t["5pm", "christ_\'_s_college"]\n'
)


def _write(tmp_path: Path, text: str, name: str = "dev.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_parses_domains_kb_rows_and_turns(tmp_path: Path) -> None:
    first, second = parse_file(_write(tmp_path, SAMPLE))
    assert (first.index, first.domain, first.line) == (0, "navigate", 1)
    assert [r.tokens for r in first.kb_rows] == [
        ("2_miles", "no_traffic", "gas_station", "91_el_camino_real", "valero"),
        ("4_miles", "heavy_traffic", "home", "5671_barringer_street", "home"),
    ]
    assert [r.line for r in first.kb_rows] == [2, 3]
    assert [(t.number, t.line, t.gold) for t in first.turns] == [(1, 4, ("valero", "2_miles")), (2, 5, ())]
    assert first.turns[0].user == "where is the gas_station ?"
    assert first.turns[0].system == "valero is 2_miles away"
    # A dialogue may have no KB; double-quoted gold entities (values holding an apostrophe) parse too.
    assert (second.index, second.domain, second.kb_rows) == (1, "schedule", ())
    assert second.turns[0].gold == ("5pm", "christ_'_s_college")
    assert turns_of(second)[0].response == "it is at 5pm"


def test_no_header_crlf_and_missing_final_blank_line(tmp_path: Path) -> None:
    text = "0 a b\r\n1 hi\thello\t['a']\r\n\r\n\r\n0 c d\r\n1 yo\tyes\t[]"
    dialogues = parse_file(_write(tmp_path, text))
    assert [(d.domain, len(d.kb_rows), d.turns[0].gold) for d in dialogues] == [
        (None, 1, ("a",)),
        (None, 1, ()),
    ]
    assert dialogues[1].line == 5


def test_dialogue_without_turns_is_kept(tmp_path: Path) -> None:
    # SMD's train file has such dialogues, and the canonical counts include them.
    dialogues = parse_file(
        _write(tmp_path, "#schedule#\n\n#weather#\n0 monday x\n\n#navigate#\n1 a\tb\t[]\n")
    )
    assert [(d.domain, len(d.kb_rows), len(d.turns)) for d in dialogues] == [
        ("schedule", 0, 0),
        ("weather", 1, 0),
        ("navigate", 0, 1),
    ]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("#a#\n1 hi\thello\t['x'\n", 2, "python list literal"),
        ("#a#\n1 hi\thello\t'x'\n", 2, "list of strings"),
        ("#a#\n1 hi\thello\t[1, 2]\n", 2, "list of strings"),
        ("#a#\n1 hi\thello\t__import__('os').getcwd()\n", 2, "python list literal"),
        ("#a#\n1 hi\thello\n", 2, "3 tab-separated fields (user, system, [entities]), found 2"),
        ("#a#\n1 hi\thello\tx\t[]\n", 2, "found 4"),
        ("#a#\n1 a\tb\t[]\n3 c\td\t[]\n", 3, "turn number 3, expected 2"),
        ("#a#\n2 a\tb\t[]\n", 2, "turn number 2, expected 1"),
        ("#a#\n1 a\tb\t[]\n0 kb row\n", 3, "KB row after a turn"),
        ("#a#\n0 x\n#b#\n", 3, "inside a dialogue"),
        ("#a#\n0 \n", 2, "empty KB row"),
        ("#a#\n0 x\nhello there\n", 3, "expected '#domain#'"),
        ("\n\n#a#\n1 a\tb\t[]\n\nuser without number\tb\t[]\n", 6, "expected '#domain#'"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = _write(tmp_path, text, "broken.txt")
    with pytest.raises(DataError) as info:
        parse_file(path)
    assert info.value.line == line
    assert info.value.path == path
    message = str(info.value)
    assert f"{path}:{line}:" in message
    assert fragment.lower() in message.lower()


def test_empty_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no dialogues"):
        parse_file(_write(tmp_path, "\n\n", "empty.txt"))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"#a#\n1 \xff\xfe\tb\t[]\n")
    with pytest.raises(DataError, match="not UTF-8"):
        parse_file(binary)


def test_parse_gold_and_parse_lines_directly() -> None:
    where = Path("x.txt")
    assert parse_gold(" ['a_b', \"c'd\"] ", where, 1) == ("a_b", "c'd")
    assert parse_gold("[]", where, 1) == ()
    assert [d.domain for d in parse_lines(["#hotel#", "1 a\tb\t[]"], where)] == ["hotel"]


def test_check_split_names_valid_splits() -> None:
    check_split("dev", ("train", "dev"), "smd")
    with pytest.raises(DataError, match="unknown split 'val'; valid splits: train, dev"):
        check_split("val", ("train", "dev"), "smd")
