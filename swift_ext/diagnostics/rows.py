"""Read training rows the way ms-swift 4.6's dataset loader reads them, plus Hugging Face messages datasets.

Every row comes out as HF/OpenAI ``messages`` (+ ``tools``) or as a counted
error with its row index and line number: a malformed line never stops a pass
over a large file.

Reading is split in two so that a pass over a large file parallelises and no
row can stop it: ``iter_raw`` (in the main process) cuts the file into rows of
JSON text, cheaply, never parsing; ``parse_raw`` (in a worker) decodes, parses
and converts one row, turning every way that can fail (invalid UTF-8, bad JSON,
nesting deeper than Python's parser goes, no conversation) into the row's rule.

The conversion follows ms-swift's ``AutoPreprocessor`` (``swift/dataset/preprocessor/core.py``), per row:

- a row with ``messages``, ``conversation`` or ``conversations`` is read as ``MessagesPreprocessor`` reads it:
  per message ``from`` -> ``role`` and ``value`` -> ``content``; roles ``human`` -> ``user``, ``gpt`` / ``bot``
  -> ``assistant``, ``function_call`` -> ``tool_call``, ``function_response`` / ``observation(s)`` ->
  ``tool_response`` (case-sensitive, as ms-swift: ``Human`` or ``model`` stay unknown roles); ShareGPT pairs
  (``{"human": ..., "gpt": ...}`` entries); ``system`` / ``system_prompt`` inserted unless the first message is
  a system message; a string of messages parsed as JSON (or a Python literal);
- else, with ``instruction`` and ``input``: ``AlpacaPreprocessor`` (``instruction\\ninput`` as the query);
- else ``ResponsePreprocessor``: query from ``query`` / ``prompt`` / ``input`` / ``instruction`` / ``question`` /
  ``problem``, response from ``response`` / ``answer`` / ``output`` / ... / ``text`` / ``completion`` /
  ``content``, plus ``history`` and ``system``.

Column names match case-insensitively and a column two names compete for is not renamed, as in ms-swift's
``safe_rename_columns``. ms-swift decides the preprocessor once per file from the columns of all its rows; here it
is decided per row, so a file mixing formats can read differently there (ms-swift then drops the rows of the other
format; ``Row.form`` names each row's, and ``audit`` warns about a file that mixes them). ms-swift's ``tool_call``
/ ``tool_response`` messages are folded back into OpenAI form for the core.

Files: ``.jsonl`` (any other suffix too), ``.json`` (an array, or JSON lines), ``.parquet`` (needs ``pyarrow``),
or a folder written by ``datasets``' ``save_to_disk`` (needs ``datasets``). In JSON lines a UTF-8 byte-order mark
is accepted, blank lines are not rows (as in ms-swift), and line numbers are the file's.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BOM = b"\xef\xbb\xbf"

# ms-swift 4.6 MessagesPreprocessor / ResponsePreprocessor column and role names
MESSAGE_COLUMNS = ("messages", "conversation", "conversations")
SYSTEM_COLUMNS = ("system", "system_prompt")
QUERY_COLUMNS = ("query", "prompt", "input", "instruction", "question", "problem")
RESPONSE_COLUMNS = ("response", "answer", "output", "targets", "target", "answer_key", "answers", "solution", "text",
                    "completion", "content")
ROLE_KEYS = ("role", "from")
CONTENT_KEYS = ("content", "value")
ROLE_NAMES = {"human": "user", "gpt": "assistant", "bot": "assistant", "function_call": "tool_call",
              "function_response": "tool_response", "observation": "tool_response",
              "observations": "tool_response"}
"""Roles ms-swift renames (``user`` / ``assistant`` are already standard); tool roles after ``-`` -> ``_``."""

READ_ERRORS = (RecursionError, MemoryError)
"""A row nested deeper than Python's JSON reader (or pickle) goes: one failed row, never an aborted pass."""


class RowFormatError(ValueError):
    """A row that is not a conversation in any known format; ``rule`` names why."""

    def __init__(self, detail: str, rule: str) -> None:
        super().__init__(f"[{rule}] {detail}")
        self.rule = rule
        self.detail = detail


class DatasetError(ValueError):
    """The DATA argument is not a dataset that can be read (one line for the user)."""


@dataclass
class RawRow:
    """One row as cut from the file: JSON text, not parsed yet (cheap to send to a worker), or why not."""

    index: int
    line: int | None
    text: bytes | str | None
    rule: str | None = None
    detail: str = ""


@dataclass
class Row:
    """One dataset row, converted, or the reason it could not be."""

    index: int
    line: int | None = None
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    rule: str | None = None
    detail: str = ""
    form: str | None = None
    """The columns the row was read from (``messages``, ``conversations``, ``instruction/input``, ``query/response``);
    ms-swift reads a whole file with the preprocessor of one form."""

    @property
    def where(self) -> str:
        return f"row {self.index}" + (f" (line {self.line})" if self.line is not None else "")


# ------------------------------------------------------------------ formats
def to_conversation(obj: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """``(messages, tools)`` of one row in any supported format; raises ``RowFormatError``."""
    if not isinstance(obj, dict):
        raise RowFormatError(f"a row must be a JSON object, got {type(obj).__name__}", "input-not-an-object")
    tools = _tools(obj.get("tools"))
    form = row_form(obj)
    if form in MESSAGE_COLUMNS:
        messages = _from_messages_row(_rename(obj, {**{k: "messages" for k in MESSAGE_COLUMNS}, **_SYSTEM}))
    elif form == "instruction/input":
        messages = _from_alpaca_row(obj)
    else:
        messages = _from_response_row(_rename(obj, _RESPONSE))
    return _with_media_parts(_from_swift_messages(messages), obj), tools


_MEDIA_TAGS = {"<image>": "images", "<video>": "videos"}
"""ms-swift's media tags and the columns that hold their items, in order of appearance."""


def _with_media_parts(messages: list[dict[str, Any]], obj: dict[str, Any]) -> list[dict[str, Any]]:
    """``<image>`` / ``<video>`` tags of a row with an ``images`` / ``videos`` column as content parts holding
    their items (the n-th tag of a kind takes the column's n-th item), as ms-swift reads them; rows without such a
    column keep their text (a tag there is text)."""
    columns = {tag: obj.get(column) for tag, column in _MEDIA_TAGS.items() if isinstance(obj.get(column), list)}
    if not columns:
        return messages
    split = re.compile("(" + "|".join(map(re.escape, columns)) + ")").split
    taken = dict.fromkeys(columns, 0)
    for message in messages:
        content = message.get("content")
        if not isinstance(content, str) or not any(tag in content for tag in columns):
            continue
        parts: list[dict[str, Any]] = []
        for piece in split(content):
            if piece in columns:
                kind, items = piece[1:-1], columns[piece]
                value = items[taken[piece]] if taken[piece] < len(items) else None
                taken[piece] += 1
                parts.append({"type": kind, kind: value})
            elif piece:
                parts.append({"type": "text", "text": piece})
        message["content"] = parts
    return messages


def row_form(obj: dict[str, Any]) -> str:
    """Which of ms-swift's preprocessors reads this row (``AutoPreprocessor._get_preprocessor``, on its columns)."""
    present = [key for key in MESSAGE_COLUMNS if key in obj]
    if present:
        return "+".join(present)
    return "instruction/input" if "instruction" in obj and "input" in obj else "query/response"


_SYSTEM = {k: "system" for k in SYSTEM_COLUMNS}
_RESPONSE = {**_SYSTEM, **{k: "query" for k in QUERY_COLUMNS}, **{k: "response" for k in RESPONSE_COLUMNS}}


def _rename(obj: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """ms-swift's ``safe_rename_columns`` on one row: case-insensitive names; a target two columns map to is
    renamed from neither (a column already named as the target keeps its value)."""
    actual = {key.lower(): key for key in obj}
    safe = {actual[k.lower()]: v for k, v in columns.items() if k.lower() in actual}
    counts = Counter(safe.values())
    renames = {k: v for k, v in safe.items() if counts[v] == 1 and k != v}
    return {renames.get(k, k): v for k, v in obj.items()}


def _from_messages_row(row: dict[str, Any]) -> list[dict[str, Any]]:
    messages = _repair(row.get("messages"))
    if not messages:  # ms-swift returns None for the row: dropped without a word
        raise RowFormatError("the row's messages are empty or missing (ms-swift drops such a row)",
                             "input-missing-messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise RowFormatError("messages must be a list of objects", "input-bad-messages")
    messages = [_std_keys(m) for m in messages]
    system = row.get("system")
    if "role" not in messages[0] and "content" not in messages[0]:  # ShareGPT pairs: {"human": ..., "gpt": ...}
        return _from_pairs(messages, system)
    if messages[0].get("role") != "system" and system is not None:
        messages.insert(0, {"role": "system", "content": system})
    for message in messages:
        role = message.get("role")
        if isinstance(role, str):
            message["role"] = ROLE_NAMES.get(role, ROLE_NAMES.get(role.replace("-", "_"), role))
    return messages


def _repair(value: Any) -> Any:
    """ms-swift's ``default_repair_messages``: a string of messages is JSON, or failing that a Python literal."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError):
        raise RowFormatError("'messages' is a string that is neither JSON nor a Python literal",
                             "input-bad-messages") from None


def _std_keys(message: dict[str, Any]) -> dict[str, Any]:
    """``from`` -> ``role`` and ``value`` -> ``content``, in ms-swift's order (a later key wins)."""
    message = {k: v for k, v in message.items() if v is not None or k == "content"}  # parquet pads with None
    for std, keys in (("role", ROLE_KEYS), ("content", CONTENT_KEYS)):
        for key in keys:
            if key in message:
                message[std] = message.pop(key)
    return message


def _from_pairs(pairs: list[dict[str, Any]], system: Any) -> list[dict[str, Any]]:
    messages = [{"role": "system", "content": system}] if system is not None else []
    for pair in pairs:
        user = next((pair[k] for k in ("user", "human") if k in pair), None)
        assistant = next((pair[k] for k in ("assistant", "gpt", "bot") if k in pair), None)
        if user is None and assistant is None:
            raise RowFormatError("a ShareGPT entry has neither role/content nor user/assistant keys "
                                 f"(keys: {', '.join(sorted(pair)) or 'none'})", "input-bad-messages")
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages


def _from_alpaca_row(obj: dict[str, Any]) -> list[dict[str, Any]]:
    row = _rename({k: v for k, v in obj.items() if k not in ("instruction", "input")}, _RESPONSE)
    instruction, input_ = obj.get("instruction"), obj.get("input")
    query = f"{instruction}\n{input_}" if instruction and input_ else instruction or input_
    return _from_response_row({**row, "query": query})


def _from_response_row(row: dict[str, Any]) -> list[dict[str, Any]]:
    query, response, system = row.get("query"), row.get("response"), row.get("system")
    if query is None and response is None:
        raise RowFormatError("the row has none of messages / conversations / query+response / instruction+output "
                             f"(keys: {', '.join(sorted(row)) or 'none'})", "input-missing-messages")
    if isinstance(response, (list, tuple)):  # ms-swift takes the first of several responses
        response = response[0] if response else None
    history = row.get("history") or []
    if isinstance(history, str):
        try:
            history = ast.literal_eval(history)
        except (ValueError, SyntaxError, TypeError):
            raise RowFormatError("'history' is a string that is not a list literal", "input-bad-history") from None
    messages = [{"role": "system", "content": system}] if system is not None else []
    for pair in [*history, [query, response]]:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise RowFormatError("each history entry must be a [query, response] pair", "input-bad-history")
        messages += [{"role": role, "content": text} for role, text in zip(("user", "assistant"), pair)
                     if text is not None]
    return messages


def _tools(value: Any) -> list[dict[str, Any]] | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowFormatError("'tools' is a string that is not JSON", "input-bad-tools") from None
    if not isinstance(value, list):
        raise RowFormatError(f"'tools' must be a list, got {type(value).__name__}", "input-bad-tools")
    return [t if not isinstance(t, dict) or "function" in t or "type" in t else {"type": "function", "function": t}
            for t in value]


def _from_swift_messages(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages, with ms-swift's ``tool_call`` messages folded back into the assistant turn."""
    out: list[dict[str, Any]] = []
    for message in raw:
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


def convert(index: int, line: int | None, obj: Any) -> Row:
    form = row_form(obj) if isinstance(obj, dict) else None
    try:
        messages, tools = to_conversation(obj)
    except RowFormatError as exc:
        return Row(index, line, rule=exc.rule, detail=str(exc), form=form)
    except READ_ERRORS:
        return Row(index, line, rule="input-too-deep", detail=_too_deep(line), form=form)
    return Row(index, line, messages, tools, form=form)


def _where(line: int | None) -> str:
    return f"line {line}: " if line is not None else ""


def _too_deep(line: int | None) -> str:
    return f"[input-too-deep] {_where(line)}the row is nested deeper than Python's JSON reader can follow"


def parse_raw(raw: RawRow) -> Row:
    """Decode, parse and convert one row; every failure is the row's rule (safe to call in a worker)."""
    if raw.rule is not None:
        return Row(raw.index, raw.line, rule=raw.rule, detail=raw.detail)
    text = raw.text
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            detail = f"[input-invalid-utf8] {_where(raw.line)}invalid UTF-8 at byte {exc.start} of the line"
            return Row(raw.index, raw.line, rule="input-invalid-utf8", detail=detail)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        detail = f"[input-bad-json] {_where(raw.line)}{exc.msg} at column {exc.colno}"
        return Row(raw.index, raw.line, rule="input-bad-json", detail=detail)
    except ValueError as exc:  # e.g. an integer longer than Python's int-to-str limit
        return Row(raw.index, raw.line, rule="input-bad-json", detail=f"[input-bad-json] {_where(raw.line)}{exc}")
    except READ_ERRORS:
        return Row(raw.index, raw.line, rule="input-too-deep", detail=_too_deep(raw.line))
    return convert(raw.index, raw.line, obj)


# ------------------------------------------------------------------ files
def check_dataset(path: str | Path) -> None:
    """Raise ``DatasetError`` (one line) unless ``path`` is something ``iter_raw`` can read."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    if path.is_dir():
        markers = ("dataset_info.json", "state.json", "dataset_dict.json")
        if not any((path / name).is_file() for name in markers):
            raise DatasetError(f"{path} is a folder but not a dataset (expected a .jsonl / .json / .parquet file, or "
                               "a folder written by datasets' save_to_disk, with dataset_info.json or "
                               "dataset_dict.json)")
        return
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None


def iter_raw(path: str | Path, counts: Counter | None = None) -> Iterator[RawRow]:
    """Every row of a dataset as JSON text, in order, without parsing; ``counts["blank_lines"]`` counts the blank
    lines of a JSON-lines file (not rows)."""
    path = Path(path)
    if path.is_dir():
        yield from _raw_objects(_hf_dataset(path))
    elif path.suffix == ".parquet":
        yield from _raw_objects(_parquet_rows(path))
    elif path.suffix == ".json" and _is_json_array(path):
        yield from _raw_objects(_json_array(path))
    else:
        yield from _raw_lines(path, counts if counts is not None else Counter())


def _raw_lines(path: Path, counts: Counter) -> Iterator[RawRow]:
    index = 0
    with open(path, "rb") as fh:
        for number, data in enumerate(fh, start=1):
            if number == 1 and data.startswith(BOM):
                data = data[len(BOM):]
            if not data.strip():
                counts["blank_lines"] += 1
                continue
            yield RawRow(index, number, data)
            index += 1


def _raw_objects(objects: Iterator[Any]) -> Iterator[RawRow]:
    for index, obj in enumerate(objects):
        try:
            yield RawRow(index, None, json.dumps(obj, ensure_ascii=False, default=str))
        except READ_ERRORS:
            yield RawRow(index, None, None, rule="input-too-deep", detail=_too_deep(None))


def iter_rows(path: str | Path) -> Iterator[Row]:
    """Every row of a dataset file or folder, converted or marked as failed."""
    for raw in iter_raw(path):
        yield parse_raw(raw)


def _is_json_array(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4096).removeprefix(BOM).lstrip()
    return head.startswith(b"[")


def _json_array(path: Path) -> Iterator[Any]:
    try:
        data = json.loads(path.read_bytes().removeprefix(BOM).decode("utf-8"))
    except (ValueError, *READ_ERRORS) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DatasetError(f"{path} starts like a JSON array but cannot be read as one: "
                           f"{type(exc).__name__}: {str(exc)[:120]}") from None
    yield from data


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError("reading parquet needs pyarrow: pip install pyarrow") from None
    for batch in pq.ParquetFile(str(path)).iter_batches(batch_size=1024):
        yield from batch.to_pylist()


def _hf_dataset(path: Path) -> Iterator[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise DatasetError("reading a saved Hugging Face dataset needs `datasets`: pip install datasets") from None
    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        data = data["train"] if "train" in data else next(iter(data.values()))
    yield from data


def count_rows(path: str | Path) -> int | None:
    """Row count for a progress bar, when it is cheap to know."""
    path = Path(path)
    if path.is_file() and path.suffix not in (".parquet", ".json"):
        with open(path, "rb") as fh:
            return sum(1 for number, line in enumerate(fh, 1) if line.strip() and line.strip() != BOM)
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            return None
        return pq.ParquetFile(str(path)).metadata.num_rows
    return None


def read_row(path: str | Path, index: int) -> Row:
    """Row ``index`` (0-based) of a dataset; raises ``IndexError`` past the end."""
    for raw in iter_raw(path):
        if raw.index == index:
            return parse_raw(raw)
    raise IndexError(f"{path} has no row {index}")


def original_lines(path: str | Path) -> Iterator[tuple[int, bytes | str]]:
    """``(row index, the row as written)`` for ``--write-clean``: a JSON-lines row's bytes unchanged (the first
    line without its byte-order mark), any other format's row as one line of JSON."""
    for raw in iter_raw(path):
        if raw.text is not None:
            yield raw.index, raw.text
