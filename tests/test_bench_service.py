"""The pure parts of the service load test (bench/service/loadstats.py) on hand-made inputs; no server."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from bench_helpers import load_bench_script

from service.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    return load_bench_script("service/loadstats.py")


ls = _load()

BEFORE = """\
# HELP mktod_http_requests_total HTTP requests by route and status
# TYPE mktod_http_requests_total counter
mktod_http_requests_total{method="GET",route="/metrics",status="200"} 3
mktod_http_requests_total{method="POST",route="/v1/chat",status="200"} 4
mktod_http_request_duration_seconds_bucket{method="POST",route="/v1/chat",le="+Inf"} 4
mktod_http_request_duration_seconds_sum{method="POST",route="/v1/chat"} 2.0
mktod_http_request_duration_seconds_count{method="POST",route="/v1/chat"} 4
mktod_retrieval_seconds_sum 0.5
mktod_retrieval_seconds_count 4
mktod_generation_seconds_sum 1.25
mktod_generation_seconds_count 4
"""
AFTER = """\
mktod_http_requests_total{method="GET",route="/metrics",status="200"} 4
mktod_http_requests_total{method="POST",route="/v1/chat",status="200"} 12
mktod_http_requests_total{method="POST",route="/v1/chat",status="503"} 2
mktod_http_request_duration_seconds_sum{method="POST",route="/v1/chat"} 12.0
mktod_http_request_duration_seconds_count{method="POST",route="/v1/chat"} 14
mktod_http_request_duration_seconds_sum{method="GET",route="/metrics"} 0.5
mktod_retrieval_seconds_sum 1.5
mktod_retrieval_seconds_count 14
mktod_generation_seconds_sum 6.25
mktod_generation_seconds_count 10
"""


def test_percentile_interpolates_between_ranks() -> None:
    assert ls.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5  # unsorted input
    assert ls.percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert ls.percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert ls.percentile([float(i) for i in range(1, 11)], 90) == pytest.approx(9.1)
    assert ls.percentile([float(i) for i in range(1, 101)], 99) == pytest.approx(99.01)
    assert ls.percentile([7.0], 99) == 7.0


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no values"):
        ls.percentile([], 50)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        ls.percentile([1.0], 101)


def test_summarise_in_milliseconds() -> None:
    lat = ls.summarise([0.4, 0.1, 0.3, 0.2])
    assert lat.p50_ms == pytest.approx(250.0)
    assert lat.p90_ms == pytest.approx(370.0)
    assert lat.mean_ms == pytest.approx(250.0)
    assert lat.max_ms == pytest.approx(400.0)
    assert math.isnan(ls.summarise([]).p99_ms)


def test_parse_metrics_labels_comments_and_escapes() -> None:
    text = (
        "# HELP x help\n"
        "# TYPE x counter\n"
        "plain 3\n"
        'h_bucket{le="+Inf",route="/a"} 7 1712345678\n'  # a timestamp is allowed and dropped
        'esc{path="a\\"b\\\\n\\nz"} 1.5\n'
        "\n"
    )
    samples = ls.parse_metrics(text)
    assert samples[("plain", ())] == 3.0
    assert samples[("h_bucket", (("le", "+Inf"), ("route", "/a")))] == 7.0
    assert samples[("esc", (("path", 'a"b\\n\nz'),))] == 1.5
    assert len(samples) == 3


def test_parse_metrics_names_the_bad_line() -> None:
    with pytest.raises(ValueError, match="line 2"):
        ls.parse_metrics('ok 1\nbroken{a="b"}\n')


def test_diff_and_server_time() -> None:
    delta = ls.diff_metrics(ls.parse_metrics(BEFORE), ls.parse_metrics(AFTER))
    assert (
        delta[("mktod_http_requests_total", (("method", "POST"), ("route", "/v1/chat"), ("status", "503")))]
        == 2
    )
    assert (
        delta[("mktod_http_request_duration_seconds_sum", (("method", "GET"), ("route", "/metrics")))] == 0.5
    )
    st = ls.server_time(delta, "/v1/chat")
    assert st.request_s == pytest.approx(10.0)  # the /metrics route is not counted
    assert st.retrieval_s == pytest.approx(1.0)
    assert st.generation_s == pytest.approx(5.0)
    assert (st.retrieval_calls, st.generation_calls) == (10, 6)
    assert st.statuses == {"200": 8, "503": 2}
    assert st.share(st.retrieval_s) == pytest.approx(0.1)
    assert ls.total(delta, "mktod_http_requests_total") == 11  # all routes and statuses


def test_server_time_reads_the_service_metric_names() -> None:
    # The names the service exports (service/metrics.py, service/routes_deps.py), rendered by its own code.
    m = Metrics()
    labels = (("method", "POST"), ("route", "/v1/chat"))
    m.inc("mktod_http_requests_total", "h", (*labels, ("status", "200")), 2)
    m.observe("mktod_http_request_duration_seconds", "h", 0.75, labels)
    m.observe("mktod_http_request_duration_seconds", "h", 0.25, labels)
    m.observe("mktod_retrieval_seconds", "h", 0.125)
    m.observe("mktod_generation_seconds", "h", 0.5)
    st = ls.server_time(ls.diff_metrics({}, ls.parse_metrics(m.render())), "/v1/chat")
    assert (st.request_s, st.retrieval_s, st.generation_s) == (1.0, 0.125, 0.5)
    assert (st.retrieval_calls, st.generation_calls, st.statuses) == (1, 1, {"200": 2})


def _level(errors: tuple[Any, ...] = (), statuses: dict[str, int] | None = None) -> Any:
    server = ls.ServerTime(10.0, 1.0, 5.0, 10, 5, {"200": 8} if statuses is None else statuses)
    lat = ls.Latency(100.0, 200.0, 300.04, 120.0, 310.0)
    return ls.Level("chat", 32, 8, sum(e.count for e in errors), 4.0, 2.0, lat, server, errors, 1.5)


MACHINE = {"cpu": "Test CPU", "cores": 2, "gpu": "no GPU", "python": "3.11.7", "os": "Linux"}
RUN = {
    "commit": "abc123",
    "command": "python bench/service/run.py",
    "server_command": "mktod serve --state-dir TMP --port PORT",
    "server_env": {"MKTOD_RATE_LIMIT_PER_MINUTE": "0"},
}


def test_render_markdown_table() -> None:
    text = ls.render_markdown(MACHINE, RUN, [_level()])
    # 1 s retrieval over 10 calls, 5 s generation over 5; of 10 s server time; 6 s busy of 4 s wall.
    row = "| chat | 32 | 8 | 0 | 2.00 | 100.0 | 200.0 | 300.0 | 100.0 | 1000.0 | 10.0 | 50.0 | 40.0 | 150.0 |"
    assert row in text.splitlines()
    assert "`MKTOD_RATE_LIMIT_PER_MINUTE=0 mktod serve --state-dir TMP --port PORT`" in text
    assert "Test CPU, 2 cores" in text
    assert "fewer requests (8) than clients" in text
    assert text.endswith("## Errors\n\nNone.\n")


def test_render_markdown_lists_errors_and_server_statuses() -> None:
    errors = (ls.ErrorSample("503", '{"error": "busy"}', 2), ls.ErrorSample("ReadTimeout", "", 1))
    level = _level(errors, {"200": 5, "503": 2})
    text = ls.render_markdown(MACHINE, RUN, [level])
    assert "| chat | 32 | 8 | 3 |" in text
    assert '- chat x32: 2 x `503` \'{"error": "busy"}\'' in text
    assert "- chat x32: 1 x `ReadTimeout` ''" in text
    assert "the server counted 5 x 200, 2 x 503 for 8 requests sent" in text
    assert "None." not in text


def test_render_markdown_without_server_time() -> None:
    level = ls.Level(
        "chat", 1, 4, 4, 1.0, 4.0, ls.summarise([]), ls.ServerTime(0.0, 0.0, 0.0, 0, 0, {}), (), 0.0
    )
    row = next(line for line in ls.render_markdown(MACHINE, RUN, [level]).splitlines() if "| chat" in line)
    assert row == "| chat | 1 | 4 | 4 | 4.00 | - | - | - | - | - | - | - | - | 0.0 |"


def test_finite_turns_nan_into_null() -> None:
    assert ls.finite({"a": [1.0, math.nan], "b": (math.nan,), "c": "x"}) == {
        "a": [1.0, None],
        "b": [None],
        "c": "x",
    }


def test_parse_dialogues() -> None:
    turns = ("user", "hi"), ("assistant", "yes"), ("user", "ok")
    text = json.dumps([[{"role": r, "content": c} for r, c in turns]])
    assert ls.parse_dialogues(text, "d.json") == (turns,)
    for bad in (
        "{}",
        "[]",
        '[[{"role": "assistant", "content": "a"}]]',
        '[[{"role": "user", "content": " "}]]',
    ):
        with pytest.raises(ValueError, match=r"^d\.json: "):
            ls.parse_dialogues(bad, "d.json")


def test_shipped_dialogues_are_about_the_demo_kb() -> None:
    path = ROOT / "bench" / "service" / "dialogues.json"
    dialogues = ls.parse_dialogues(path.read_text(encoding="utf-8"), str(path))
    assert len(dialogues) >= 8
    assert any(len(d) > 1 for d in dialogues)  # follow-up turns too, not only first questions
    kb = (ROOT / "kb" / "demo.jsonl").read_text(encoding="utf-8")
    named = [t for d in dialogues for _, t in d if "pepperwood grill" in t or "seagull inn" in t]
    assert named and "pepperwood grill" in kb and "seagull inn" in kb
