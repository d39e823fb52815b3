"""``audit`` reads data as ms-swift 4.6's loader does, its ``--write-clean`` file is one that loader reads, and an
error the parity templates raise inside ``swift sft`` names the dataset row and line.

Run against ms-swift's own ``load_dataset`` (``swift.dataset``), never a copy of its logic. Skipped, saying why,
where ms-swift is not importable (the LLaMA-Factory environment); CI installs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

try:
    import swift.dataset  # noqa: F401
    import swift.template  # noqa: F401
except Exception as exc:  # ImportError, or a broken optional dependency inside ms-swift
    pytest.skip(f"ms-swift is not importable ({exc!r}); these tests compare with its dataset loader",
                allow_module_level=True)

from swift.dataset import load_dataset  # noqa: E402

import swift_ext.ms_swift as ms  # noqa: E402
from swift_ext.dev import tiny  # noqa: E402
from swift_ext.diagnostics.rows import iter_rows, to_conversation  # noqa: E402
from swift_ext.errors import InputError  # noqa: E402
from swift_ext.messages import parse_messages  # noqa: E402
from swift_ext.ms_swift import state as parity_state  # noqa: E402

from .cli_helpers import REPO_ROOT, write_jsonl  # noqa: E402

HI = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]

# Row forms ms-swift trains on, one file each (ms-swift picks its preprocessor per file).
FORMS: dict[str, dict[str, Any]] = {
    "sharegpt from/value": {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
                                              {"from": "human", "value": "Again?"}, {"from": "bot", "value": "Yes."}]},
    "messages with bot": {"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello!"}]},
    "messages with human/gpt": {"messages": [{"role": "system", "content": "Be brief."},
                                             {"role": "human", "content": "Hi"}, {"role": "gpt", "content": "Yo."}]},
    "conversation key, system column": {"conversation": [{"from": "human", "value": "Hi"},
                                                         {"from": "gpt", "value": "Hello!"}], "system": "Be brief."},
    "from/value under messages": {"messages": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                                               {"from": "gpt", "value": "A"}]},
    "sharegpt pairs": {"conversations": [{"human": "Hi", "assistant": "Hello!"}, {"user": "More?", "bot": "No."}]},
    "system_prompt column": {"messages": HI, "system_prompt": "Be nice."},
    "function_call / observation": {"conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
        {"from": "observation", "value": "sunny"}, {"from": "gpt", "value": "Sunny."}]},
    "alpaca": {"instruction": "Translate", "input": "chat", "output": "cat"},
    "prompt/completion": {"prompt": "2+2?", "completion": "4."},
    "question/answer + system": {"question": "2+2?", "answer": "4.", "system": "Be exact."},
    "query/response/history": {"query": "And 3+3?", "response": "6.", "history": [["2+2?", "4."]]},
}


@pytest.fixture
def no_parity_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """ms-swift's loader exactly as it is: no parity template in train mode left by another test."""
    monkeypatch.setattr(parity_state, "_ACTIVE", [])


def swift_load(path: Path) -> list[dict[str, Any]]:
    train, _ = load_dataset([str(path)], split_dataset_ratio=0.0, load_from_cache_file=False)
    return [dict(row) for row in train]


def without_nulls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Arrow pads every message with every key of the column: drop the ``None`` ones."""
    return [{k: v for k, v in m.items() if v is not None} for m in messages]


@pytest.mark.parametrize("form", sorted(FORMS))
def test_audit_reads_rows_as_ms_swift(no_parity_training, tmp_path: Path, form: str) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", [FORMS[form]])
    [loaded] = swift_load(path)
    [row] = list(iter_rows(path))
    assert row.rule is None, row.detail
    # ms-swift's canonical messages (tool_call / tool_response roles), folded back to OpenAI form the same way
    theirs, _ = to_conversation({"messages": without_nulls(loaded["messages"])})
    assert row.messages == theirs
    assert {m["role"] for m in row.messages} <= {"system", "user", "assistant", "tool"}


def test_roles_ms_swift_does_not_know_fail_in_both(no_parity_training, tmp_path: Path) -> None:
    """ms-swift maps roles case-sensitively and knows no 'model': it drops such a row; audit fails it."""
    for speaker in ("Human", "model"):
        path = write_jsonl(tmp_path / f"{speaker}.jsonl", [
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": speaker, "value": "Hello"}]},
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}])
        assert len(swift_load(path)) == 1  # the first row is dropped
        row = next(iter_rows(path))
        assert row.rule is None and row.messages[1]["role"] == speaker  # the core then refuses it:
        with pytest.raises(InputError) as error:
            parse_messages(row.messages)
        assert error.value.rule == "input-unknown-role"


# ------------------------------------------------------------------ bad lines and --write-clean
def test_ms_swift_loader_on_blank_and_invalid_lines(no_parity_training, tmp_path: Path) -> None:
    """What the README says next to audit: blank lines and a BOM load; one invalid JSON or UTF-8 line fails the
    whole file before training."""
    good = json.dumps({"messages": HI}).encode()
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\xef\xbb\xbf" + good + b"\n\n   \n" + good + b"\n")
    assert len(swift_load(blank)) == 2
    for name, bad in (("invalid.jsonl", b"{not json"), ("latin1.jsonl", good.replace(b"Hello", b"Hel\xfflo"))):
        path = tmp_path / name
        path.write_bytes(good + b"\n" + bad + b"\n" + good + b"\n")
        with pytest.raises(Exception) as error:
            swift_load(path)
        assert type(error.value).__name__ in ("DatasetGenerationError", "UnicodeDecodeError"), error.value


def test_write_clean_is_a_file_ms_swift_loads(cli, no_parity_training, tmp_path: Path) -> None:
    good = [json.dumps({"messages": HI}).encode(), json.dumps({"messages": HI[:1] + [{"role": "bot", "content": "Yo"}]},
                                                              ensure_ascii=False).encode()]
    lines = [good[0], b"{not json", b"", good[1], json.dumps({"messages": [HI[1]]}).encode(),
             good[0].replace(b"Hello", b"Hel\xfflo"), good[1]]
    data = tmp_path / "data.jsonl"
    data.write_bytes(b"".join(line + b"\n" for line in lines))
    clean = tmp_path / "clean.jsonl"
    result = cli("audit", "fixture:qwen3", data, "--workers", "1", "--no-progress", "--write-clean", clean)
    assert result.code == 1
    assert result.err.splitlines()[-1] == f"wrote 3 rows that passed to {clean}"
    assert clean.read_bytes() == good[0] + b"\n" + good[1] + b"\n" + good[1] + b"\n"  # as written, in order
    with pytest.raises(Exception) as error:  # noqa: B017 - datasets' DatasetGenerationError
        swift_load(data)
    assert type(error.value).__name__ == "DatasetGenerationError"
    assert len(swift_load(clean)) == 3


def test_mixed_formats_warned(cli, no_parity_training, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ms-swift reads a file with one preprocessor: the rows of the other format are lost, so audit says so."""
    rows = [{"messages": HI}, FORMS["sharegpt from/value"], {"messages": HI}]
    data = write_jsonl(tmp_path / "mixed.jsonl", rows)
    assert len(swift_load(data)) == 2  # the conversations row is dropped without a word
    monkeypatch.setenv("COLUMNS", "1000")
    result = cli("audit", "fixture:qwen3", data, "--workers", "1", "--no-progress")
    assert result.code == 0
    assert result.out.splitlines()[1] == (
        "warning: the rows mix formats (conversations: 1, messages: 2); ms-swift reads a file with the preprocessor "
        "of one format (rows of the others are dropped or misread): split the file by format")


# ------------------------------------------------------------------ errors inside swift sft name the row
@pytest.fixture
def parity_template_training(tmp_path: Path):
    ms.register()
    from swift.model import get_model_processor
    from swift.template import get_template

    model_dir = tiny.build_tokenizer_dir("Qwen__Qwen3.6-35B-A3B", tmp_path / "tok", "qwen3")
    processor = get_model_processor(str(model_dir), load_model=False, model_type="qwen3")[1]
    template = get_template(processor, template_type="qwen3_6_parity", template_backend="jinja")
    template.set_mode("train")  # as swift sft does before loading the dataset: the data hook is on
    yield template
    template.set_mode("pt")


LOAD_WITH_PARITY_TEMPLATE = """
import sys
import swift_ext.ms_swift as ms
ms.register()
from swift.dataset import load_dataset
from swift.model import get_model_processor
from swift.template import get_template
processor = get_model_processor(sys.argv[1], load_model=False, model_type="qwen3")[1]
template = get_template(processor, template_type="qwen3_6_parity", template_backend="jinja")
template.set_mode("train")
train, _ = load_dataset([sys.argv[2]], split_dataset_ratio=0.0, load_from_cache_file=False)
print("rows", len(train))
"""


def test_error_in_the_data_hook_names_row_and_line(parity_template_training, tmp_path: Path) -> None:
    bad = {"messages": [{"role": "user", "content": "Hi", "reasoning_content": "x"}, HI[1]]}
    path = write_jsonl(tmp_path / "train.jsonl", [{"messages": HI}, "", bad, {"messages": HI}])
    expected = (f"row 1 (line 3 of {path}): [input-reasoning-role] message 0: a user message carries reasoning; "
                "only assistant turns can")
    with pytest.raises(Exception) as error:  # noqa: B017 - --strict true: ms-swift stops at the row
        load_dataset([str(path)], split_dataset_ratio=0.0, load_from_cache_file=False, strict=True)
    assert expected in str(error.value)
    # default, as swift sft runs it: ms-swift logs the row's traceback and drops the row
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", LOAD_WITH_PARITY_TEMPLATE, str(tmp_path / "tok"), str(path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "rows 2"
    assert f"swift_ext.errors.InputError: {expected}\n" in done.stderr


def test_error_at_template_encode_names_row_and_line(parity_template_training, tmp_path: Path) -> None:
    """A query/response file does not pass the data hook: the error comes from Template.encode, naming the row."""
    path = write_jsonl(tmp_path / "qr.jsonl", [{"query": "Hi", "response": "Hello"},
                                               {"query": "Hi", "response": "Hello", "system": 5}])
    train, _ = load_dataset([str(path)], split_dataset_ratio=0.0, load_from_cache_file=False)
    parity_template_training.encode(train[0])
    with pytest.raises(Exception) as error:
        parity_template_training.encode(train[1])
    assert str(error.value).startswith(f"row 1 (line 2 of {path}): [input-content-type] message 0: ")
