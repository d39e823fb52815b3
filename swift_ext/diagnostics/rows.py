"""Read training rows from the dataset formats ms-swift accepts, plus Hugging Face messages datasets.

Every row comes out as HF/OpenAI ``messages`` (+ ``tools``) or as a counted
error with its row index and line number: a malformed line never stops a pass
over a large file.

Formats (per row): ``messages`` (ms-swift / OpenAI, including ms-swift's
``tool_call`` / ``tool_response`` roles and a top-level ``system``);
``query`` / ``response`` / ``history`` (+ ``system``); ShareGPT
``conversations`` with ``from`` / ``value``; Alpaca ``instruction`` /
``input`` / ``output``. Files: ``.jsonl``, ``.json`` (an array, or JSON lines),
``.parquet`` (needs ``pyarrow``), or a folder written by ``datasets``'
``save_to_disk`` (needs ``datasets``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
    "bot": "assistant", "system": "system", "observation": "tool", "tool": "tool", "function_call": "tool_call",
}


class RowFormatError(ValueError):
    """A row that is not a conversation in any known format; ``rule`` names why."""

    def __init__(self, detail: str, rule: str) -> None:
        super().__init__(f"[{rule}] {detail}")
        self.rule = rule


@dataclass
class Row:
    """One dataset row, converted, or the reason it could not be."""

    index: int
    line: int | None = None
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    rule: str | None = None
    detail: str = ""

    @property
    def where(self) -> str:
        return f"row {self.index}" + (f" (line {self.line})" if self.line is not None else "")


# ------------------------------------------------------------------ formats
def to_conversation(obj: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """``(messages, tools)`` of one row in any supported format; raises ``RowFormatError``."""
    if not isinstance(obj, dict):
        raise RowFormatError(f"a row must be a JSON object, got {type(obj).__name__}", "input-not-an-object")
    tools = _tools(obj.get("tools"))
    if obj.get("messages") is not None:
        messages = _from_swift_messages(_list(obj["messages"], "messages"))
    elif obj.get("conversations") is not None:
        messages = _from_sharegpt(_list(obj["conversations"], "conversations"))
    elif obj.get("query") is not None or obj.get("response") is not None:
        messages = _from_query_response(obj)
    elif obj.get("instruction") is not None and obj.get("output") is not None:
        prompt = obj["instruction"] + (f"\n{obj['input']}" if obj.get("input") else "")
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": obj["output"]}]
    else:
        raise RowFormatError("the row has none of messages / conversations / query+response / instruction+output "
                             f"(keys: {', '.join(sorted(obj)) or 'none'})", "input-missing-messages")
    system = obj.get("system")
    if system and not (messages and messages[0].get("role") == "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages, tools


def _list(value: Any, name: str) -> list[Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowFormatError(f"'{name}' is a string that is not JSON", f"input-bad-{name}") from None
    if not isinstance(value, list):
        raise RowFormatError(f"'{name}' must be a list, got {type(value).__name__}", f"input-bad-{name}")
    return value


def _tools(value: Any) -> list[dict[str, Any]] | None:
    if value is None or value == "" or value == []:
        return None
    tools = _list(value, "tools")
    return [t if "function" in t or "type" in t else {"type": "function", "function": t} for t in tools]


def _without_nulls(message: Any) -> Any:
    """Columnar formats (parquet) give every message every field, absent ones as None."""
    if not isinstance(message, dict):
        return message
    return {k: v for k, v in message.items() if v is not None or k == "content"}


def _from_swift_messages(raw: list[Any]) -> list[dict[str, Any]]:
    """OpenAI messages, with ms-swift's ``tool_call`` messages folded back into the assistant turn."""
    out: list[dict[str, Any]] = []
    for message in map(_without_nulls, raw):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "tool_call":
            _append_call(out, message.get("content"))
        elif role == "tool_response":
            out.append({**message, "role": "tool"})
        else:
            out.append(message)
    return out


def _append_call(out: list[dict[str, Any]], content: Any) -> None:
    try:
        call = json.loads(content) if isinstance(content, str) else content
    except json.JSONDecodeError:
        raise RowFormatError(f"a tool_call message is not JSON: {str(content)[:60]!r}", "input-tool-call") from None
    if not isinstance(call, dict) or "name" not in call:
        raise RowFormatError("a tool_call message has no 'name'", "input-tool-call")
    function = {"name": call["name"], "arguments": call.get("arguments", call.get("parameters", {}))}
    last = out[-1] if out else None
    if last is None or last.get("role") != "assistant":
        last = {"role": "assistant", "content": ""}
        out.append(last)
    last.setdefault("tool_calls", []).append({"type": "function", "function": function})


def _from_sharegpt(raw: list[Any]) -> list[dict[str, Any]]:
    messages = []
    for turn in raw:
        if not isinstance(turn, dict):
            raise RowFormatError("a conversations entry is not an object", "input-bad-conversations")
        speaker = turn.get("from", turn.get("role"))
        role = SHAREGPT_ROLES.get(str(speaker).lower())
        if role is None:
            raise RowFormatError(f"unknown ShareGPT speaker {speaker!r}", "input-unknown-role")
        messages.append({"role": role, "content": turn.get("value", turn.get("content"))})
    return _from_swift_messages(messages)


def _from_query_response(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj.get("query") is None or obj.get("response") is None:
        raise RowFormatError("a query/response row needs both 'query' and 'response'", "input-missing-messages")
    messages: list[dict[str, Any]] = []
    for pair in _list(obj.get("history") or [], "history"):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise RowFormatError("each history entry must be a [query, response] pair", "input-bad-history")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    return messages + [{"role": "user", "content": obj["query"]}, {"role": "assistant", "content": obj["response"]}]


def convert(index: int, line: int | None, obj: Any) -> Row:
    try:
        messages, tools = to_conversation(obj)
    except RowFormatError as exc:
        return Row(index, line, rule=exc.rule, detail=str(exc))
    return Row(index, line, messages, tools)


# ------------------------------------------------------------------ files
def iter_rows(path: str | Path) -> Iterator[Row]:
    """Every row of a dataset file or folder, converted or marked as failed."""
    path = Path(path)
    if path.is_dir():
        yield from _iter_objects(_hf_dataset(path))
    elif path.suffix == ".parquet":
        yield from _iter_objects(_parquet_rows(path))
    elif path.suffix == ".json" and _is_json_array(path):
        yield from _iter_objects(iter(json.loads(path.read_text(encoding="utf-8"))))
    else:
        yield from _iter_jsonl(path)


def _iter_objects(objects: Iterator[Any]) -> Iterator[Row]:
    for index, obj in enumerate(objects):
        yield convert(index, None, obj)


def _iter_jsonl(path: Path) -> Iterator[Row]:
    index = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                detail = f"[input-bad-json] line {number}: {exc.msg} at column {exc.colno}"
                yield Row(index, number, rule="input-bad-json", detail=detail)
            else:
                yield convert(index, number, obj)
            index += 1


def _is_json_array(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as fh:
        head = fh.read(4096).lstrip()
    return head.startswith("[")


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise RowFormatError("reading parquet needs pyarrow: pip install pyarrow", "reader-missing") from None
    for batch in pq.ParquetFile(str(path)).iter_batches(batch_size=1024):
        yield from batch.to_pylist()


def _hf_dataset(path: Path) -> Iterator[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise RowFormatError("reading a saved Hugging Face dataset needs `datasets`: pip install datasets",
                             "reader-missing") from None
    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        data = data["train"] if "train" in data else next(iter(data.values()))
    yield from data


def count_rows(path: str | Path) -> int | None:
    """Row count for a progress bar, when it is cheap to know."""
    path = Path(path)
    if path.is_file() and path.suffix not in (".parquet", ".json"):
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            return None
        return pq.ParquetFile(str(path)).metadata.num_rows
    return None


def read_row(path: str | Path, index: int) -> Row:
    """Row ``index`` (0-based) of a dataset; raises ``IndexError`` past the end."""
    for row in iter_rows(path):
        if row.index == index:
            return row
    raise IndexError(f"{path} has no row {index}")
