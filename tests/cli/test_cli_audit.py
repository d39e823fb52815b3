"""``swift-ext audit``: every number of the ``--json`` summary recomputed here with ``swift_ext.encode``.

Each dataset row is written next to the Hugging Face messages it stands for (the input, spelled out by hand), so
the expected summary comes from the core alone, not from the audit code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import swift_ext
from swift_ext.diagnostics.rows import iter_rows, to_conversation

from .cli_helpers import example_conversation, load_tokenizer, write_jsonl

HI = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help you today?"}]
CONVERSATION = example_conversation()

# (row as written in the file, the HF messages + tools it means, or the rule it must fail with)
ROWS: list[tuple[Any, Any]] = [
    ({"messages": CONVERSATION["messages"], "tools": CONVERSATION["tools"]},
     (CONVERSATION["messages"], CONVERSATION["tools"])),
    ({"messages": HI}, (HI, None)),
    ({"query": "And 2+2?", "response": "4.", "history": [["Hi", "Hello!"]], "system": "Be brief."},
     ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
       {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "And 2+2?"},
       {"role": "assistant", "content": "4."}], None)),
    ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hey there."}]},
     ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey there."}], None)),
    ("{this is not json", "input-bad-json"),
    ({"note": "no conversation here"}, "input-missing-messages"),
    ({"messages": [HI[0], {**HI[1], "loss": False}]}, ([HI[0], {**HI[1], "loss": False}], None)),
    ({"messages": [HI[0], {"role": "wizard", "content": "Abracadabra."}]},
     ([HI[0], {"role": "wizard", "content": "Abracadabra."}], None)),
    ({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "reasoning_content": "R"}]},
     ([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "reasoning_content": "R"}], None)),
    ("", None),  # blank lines are not rows
    ({"messages": HI}, (HI, None)),
]


def expected_summary(name: str, max_length: int | None = None, policy: str = "error") -> dict[str, Any]:
    """The audit summary, computed row by row with the core."""
    tokenizer = load_tokenizer(name)
    stats = swift_ext.EncodeStats()
    out: dict[str, Any] = {"rows": 0, "rows_failed": 0, "rows_zero_trained": 0, "rows_truncated": 0,
                           "samples_dropped": 0, "trained_tokens_cut": 0, "rows_reasoning_dropped": 0, "failures": {}}
    line = 0
    for written, meaning in ROWS:
        line += 1
        if written == "":
            continue
        index = out["rows"]
        out["rows"] += 1
        rule = meaning if isinstance(meaning, str) else None
        if rule is None:
            messages, tools = meaning
            assistants = [m for m in messages if m["role"] == "assistant"]
            if assistants and all(m.get("loss") is False for m in assistants):
                out["rows_zero_trained"] += 1
                continue
            row_stats = swift_ext.EncodeStats()
            try:
                samples = swift_ext.encode(tokenizer, messages, tools, reasoning_policy=policy, stats=row_stats)
            except swift_ext.ParityError as exc:
                rule = exc.rule
            else:
                stats.merge(row_stats)
                out["rows_reasoning_dropped"] += row_stats.reasoning_dropped > 0
                _count_truncation(out, samples, max_length)
        if rule is not None:
            out["rows_failed"] += 1
            group = out["failures"].setdefault(rule, {"count": 0, "first_row": index, "first_line": line})
            group["count"] += 1
    out.update(samples=stats.samples, emitted_tokens=stats.emitted_tokens, full_render_tokens=stats.full_render_tokens,
               trained_tokens=stats.trained_tokens, reasoning_dropped_turns=stats.reasoning_dropped,
               samples_emitted=stats.samples - out["samples_dropped"],
               emitted_token_ratio=stats.emitted_tokens / stats.full_render_tokens,
               trained_token_share=stats.trained_tokens / stats.emitted_tokens)
    return out


def _count_truncation(out: dict[str, Any], samples: list[swift_ext.Sample], max_length: int | None) -> None:
    if max_length is None:
        return
    long = [s for s in samples if len(s) > max_length]
    kept = [sum(label != swift_ext.IGNORE_INDEX for label in s.labels[:max_length]) for s in long]
    out["rows_truncated"] += bool(long)
    out["samples_dropped"] += sum(k == 0 for k in kept)
    out["trained_tokens_cut"] += sum(s.num_labels - k for s, k in zip(long, kept))
    if samples and sum(k == 0 for k in kept) == len(samples):
        out["rows_zero_trained"] += 1


def assert_matches(summary: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        if key == "failures":
            got = {rule: {k: g[k] for k in ("count", "first_row", "first_line")} for rule, g in summary[key].items()}
            assert got == value
        elif isinstance(value, float):
            assert summary[key] == pytest.approx(value), key
        else:
            assert summary[key] == value, key


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "data.jsonl", [written for written, _ in ROWS])


def _audit(cli, tmp_path: Path, *args: Any) -> tuple[Any, dict[str, Any]]:
    report = tmp_path / f"summary-{len(list(tmp_path.glob('summary-*')))}.json"
    result = cli("audit", *args, "--json", report)
    return result, json.loads(report.read_text())


def test_audit_numbers_match_the_core(cli, dataset: Path, tmp_path: Path) -> None:
    expected = expected_summary("qwen3", max_length=128)
    result, summary = _audit(cli, tmp_path, "fixture:qwen3", dataset, "--workers", "1", "--max-length", "128")
    assert result.code == 1  # rows failed
    assert_matches(summary, expected)
    assert expected["rows_truncated"] and expected["samples_dropped"] and expected["failures"]
    for rule in expected["failures"]:
        assert rule in result.out
    assert summary["rows_per_second"] > 0 and summary["tokens_per_second"] > 0


def test_audit_in_parallel_gives_the_same_summary(cli, dataset: Path, tmp_path: Path) -> None:
    _, serial = _audit(cli, tmp_path, "fixture:qwen3", dataset, "--workers", "1", "--no-progress")
    result, parallel = _audit(cli, tmp_path, "fixture:qwen3", dataset, "--workers", "2", "--no-progress")
    timing = {"seconds", "rows_per_second", "tokens_per_second"}
    for key in serial.keys() - timing:
        assert parallel[key] == serial[key], key
    assert_matches(parallel, expected_summary("qwen3"))


def test_audit_reasoning_dropped(cli, dataset: Path, tmp_path: Path) -> None:
    """Llama renders no reasoning: rows carrying it fail, or with --reasoning-policy drop are counted."""
    _, strict = _audit(cli, tmp_path, "fixture:llama3", dataset, "--workers", "1")
    assert_matches(strict, expected_summary("llama3"))
    assert "reasoning-dropped" in strict["failures"]
    _, dropped = _audit(cli, tmp_path, "fixture:llama3", dataset, "--workers", "1", "--reasoning-policy", "drop")
    expected = expected_summary("llama3", policy="drop")
    assert_matches(dropped, expected)
    assert expected["reasoning_dropped_turns"] >= 3 and expected["rows_reasoning_dropped"] == 2


def test_audit_exit_codes_and_progress(cli, dataset: Path, tmp_path: Path) -> None:
    assert cli("audit", "fixture:qwen3", dataset, "--workers", "1", "--allow-failures").code == 0
    clean = write_jsonl(tmp_path / "clean.jsonl", [{"messages": HI}] * 40)
    result = cli("audit", "fixture:qwen3", clean, "--workers", "1")
    assert result.code == 0 and "40/40" in result.err  # the progress bar's final state
    assert cli("audit", "fixture:qwen3", tmp_path / "missing.jsonl").code == 2


def test_row_formats() -> None:
    for written, meaning in ROWS:
        if isinstance(written, dict) and isinstance(meaning, tuple):
            assert to_conversation(written) == (meaning[0], meaning[1])
    swift = {"messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "Checking."},
                          {"role": "tool_call", "content": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
                          {"role": "tool_response", "content": "sunny"}, {"role": "assistant", "content": "Sunny."}],
             "tools": json.dumps(CONVERSATION["tools"])}
    messages, tools = to_conversation(swift)
    assert messages[1] == {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
    assert messages[2] == {"role": "tool", "content": "sunny"} and tools == CONVERSATION["tools"]
    alpaca = {"instruction": "Translate", "input": "chat", "output": "cat"}
    assert to_conversation(alpaca)[0] == [{"role": "user", "content": "Translate\nchat"},
                                          {"role": "assistant", "content": "cat"}]


def test_json_array_and_parquet_files(tmp_path: Path) -> None:
    rows = [{"messages": HI}, {"messages": CONVERSATION["messages"], "tools": CONVERSATION["tools"]}]
    array = tmp_path / "data.json"
    array.write_text(json.dumps(rows), encoding="utf-8")
    assert [(r.messages, r.tools) for r in iter_rows(array)] == [(HI, None),
                                                                 (CONVERSATION["messages"], CONVERSATION["tools"])]
    pyarrow = pytest.importorskip("pyarrow", reason="parquet support is optional (pip install pyarrow)")
    import pyarrow.parquet as pq

    table = pyarrow.Table.from_pylist([{"messages": HI}, {"messages": HI}])
    pq.write_table(table, tmp_path / "data.parquet")
    assert [r.messages for r in iter_rows(tmp_path / "data.parquet")] == [HI, HI]


def _chat(queries: int) -> list[dict[str, Any]]:
    """``queries`` user queries, each answered with reasoning: Qwen3 drops past reasoning at every new query."""
    messages: list[dict[str, Any]] = []
    for i in range(queries):
        messages += [{"role": "user", "content": f"Q{i}"},
                     {"role": "assistant", "content": f"A{i}", "reasoning_content": f"R{i}"}]
    return messages


@pytest.mark.parametrize("name, keep", [("qwen3", None), ("qwen3_6", "preserve_thinking=True")])
def test_audit_reports_what_history_rewriting_costs(cli, tmp_path: Path, name: str, keep: str | None) -> None:
    """A 200-query chat with reasoning on every turn: 200 samples, the emitted tokens against one render, the
    heaviest row, and the options that emit fewer (the keep-history switch only where the template has one)."""
    chat = _chat(200)
    data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": HI}, {"messages": chat}])
    tokenizer = load_tokenizer(name)
    stats = swift_ext.EncodeStats()
    samples = swift_ext.encode(tokenizer, chat, stats=stats)
    assert len(samples) == 200 and stats.emitted_tokens == sum(len(s) for s in samples)
    result, summary = _audit(cli, tmp_path, f"fixture:{name}", data, "--workers", "1", "--no-progress")
    assert result.code == 0
    assert summary["rows_several_samples"] == 1
    assert summary["heaviest_row"] == {"row": 1, "line": 2, "samples": 200, "emitted_tokens": stats.emitted_tokens,
                                       "full_render_tokens": stats.full_render_tokens,
                                       "extra_tokens": stats.emitted_tokens - stats.full_render_tokens}
    out = " ".join(result.out.split())  # unwrapped
    assert (f"Heaviest: row 1 (line 2), 200 samples, {stats.emitted_tokens:,} tokens "
            f"({stats.emitted_tokens / stats.full_render_tokens:.1f}x its render)") in out
    assert "--train-turns last" in out and "--loss_scale last_round" in out
    if keep is None:
        assert "--history-reasoning keep is not available (qwen3: the template has no keep-history switch)" in out
        return
    assert f"--history-reasoning keep (the template's {keep}" in out
    kept = swift_ext.encode(tokenizer, chat, history_reasoning="keep")
    result, summary = _audit(cli, tmp_path, f"fixture:{name}", data, "--workers", "1", "--no-progress",
                             "--history-reasoning", "keep")
    assert len(kept) == 1 and summary["rows_several_samples"] == 0 and summary["heaviest_row"] is None
    assert summary["emitted_tokens"] == len(kept[0]) + len(swift_ext.encode(tokenizer, HI)[0])
    assert "history rewriting" not in result.out
