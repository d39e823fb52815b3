"""``swift-ext doctor`` on every real fixture, checked against the core and against transformers.

The seed findings (Gemma-4 26B missing thought wrapper, Qwen3 history rewriting) are asserted from the report the
command writes, using only the strings the field reports quote; nothing here pins output the doctor produced.
"""

from __future__ import annotations

import contextlib
import io
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import swift_ext
from swift_ext.cli import main
from swift_ext.dev import fixtures
from swift_ext.diagnostics.battery import build_battery
from swift_ext.messages import parse_messages

from .cli_helpers import load_tokenizer, require_fixture

CASES = {case.name: case for case in build_battery()}

# Strings quoted by the field reports in ../shared/seeds (002: Gemma-4, 000/001: Qwen3).
GEMMA4_WRAPPER = "<|channel>thought\n<channel|>"
QWEN3_EMPTY_THINK = "<think>\n\n</think>\n\n"


@cache
def doctor(name: str) -> tuple[int, dict[str, Any]]:
    """Exit code and ``--json`` report of ``swift-ext doctor NAME`` (run once per fixture)."""
    require_fixture(name)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["doctor", f"fixture:{name}", "--json"])
    return code, json.loads(out.getvalue())


def prop(report: dict[str, Any], prop_id: str, mode: str) -> dict[str, Any]:
    return next(p for p in report["properties"] if p["id"] == prop_id and p["mode"] == mode)


def modes(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m["kwargs"] for m in report["modes"]}


# ------------------------------------------------------------------ every fixture
NOT_TRAINABLE = {
    # llama.cpp's R1-Distill-Qwen copy: with thinking on its prompt opens <think> and its rendering never closes it,
    # and no family describes it: the generic path refuses rather than guess how the block closes.
    "deepseek_r1_distill_qwen_llamacpp": "reasoning-block-open",
}


@pytest.mark.parametrize("name", sorted(fixtures.FIXTURES))
def test_doctor_on_fixture(name: str) -> None:
    code, report = doctor(name)
    expected_family = swift_ext.detect_family(fixtures.load_template(name))
    assert (expected_family.name if expected_family else "hf") == fixtures.expected_family(name)
    if expected_family is None:  # a template no family describes: the generic path
        assert report["family_display"] == "generic" and report["parity_template"] == "hf_parity"
    else:
        assert report["family"] == expected_family.name and report["family_match"] == "sha256"
        assert report["parity_template"] == f"{expected_family.name}_parity"
    assert code == (0 if report["trainable"] else 1)
    if name in NOT_TRAINABLE:
        failed = {o["rule"] for o in report["outcomes"] if o["status"] == "failed"}
        assert not report["trainable"] and failed == {NOT_TRAINABLE[name]}, (report["verdict"], failed)
    else:
        assert report["trainable"], report["verdict"]
    ids = {p["id"] for p in report["properties"]}
    for mode in modes(report):
        assert {p["id"] for p in report["properties"] if p["mode"] == mode} == ids


@pytest.mark.parametrize("name", sorted(fixtures.FIXTURES))
def test_doctor_outcomes_match_the_core(name: str) -> None:
    """Each battery conversation the doctor calls verified encodes, in the test, to the same number of samples."""
    _, report = doctor(name)
    tokenizer = load_tokenizer(name)
    for outcome in report["outcomes"]:
        case, kwargs = CASES[outcome["case"]], modes(report)[outcome["mode"]]
        policy = outcome["reasoning_policy"]
        if outcome["status"] in ("unsupported", "failed"):
            with pytest.raises(swift_ext.ParityError) as error:
                swift_ext.encode(tokenizer, case.messages, case.tools, kwargs, reasoning_policy=policy)
            assert error.value.rule == outcome["rule"]
            continue
        samples = swift_ext.encode(tokenizer, case.messages, case.tools, kwargs, reasoning_policy=policy)
        swift_ext.verify(tokenizer, case.messages, samples, case.tools, kwargs)
        assert len(samples) == outcome["samples"], (outcome["case"], outcome["mode"])


def _transformers_render(tokenizer: Any, dicts: list, tools: Any, generation: bool, kwargs: dict) -> str | None:
    try:
        return tokenizer.apply_chat_template(dicts, tools=tools, add_generation_prompt=generation, tokenize=False,
                                             **kwargs)
    except Exception:  # the template refuses this conversation; the doctor skips it too
        return None


def _independent_statuses(name: str, kwargs: dict[str, Any]) -> dict[str, str]:
    """Prefix and history properties recomputed with transformers' own apply_chat_template."""
    tokenizer = load_tokenizer(name)
    encoder = swift_ext.get_encoder(tokenizer)
    prefix, history = [], []
    for case in CASES.values():
        dicts = [encoder.template_message(m) for m in parse_messages(case.messages)]
        full = _transformers_render(tokenizer, dicts, case.tools, False, kwargs)
        for i, message in enumerate(case.messages):
            if message["role"] != "assistant":
                continue
            texts = [_transformers_render(tokenizer, dicts[:n], case.tools, g, kwargs)
                     for n, g in ((i, False), (i, True), (i + 1, False))]
            if None in texts:
                continue
            prefix.append(texts[2].startswith(texts[1]))
            if i + 1 < len(dicts) and full is not None:
                history.append(full.startswith(texts[2]))
    return {"generation-prompt-prefix": "pass" if all(prefix) else "fail",
            "history-stable": "pass" if all(history) else "fail"}


@pytest.mark.parametrize("name", sorted(fixtures.FIXTURES))
def test_doctor_properties_agree_with_transformers(name: str) -> None:
    _, report = doctor(name)
    for mode, kwargs in modes(report).items():
        expected = _independent_statuses(name, kwargs)
        for prop_id, status in expected.items():
            assert prop(report, prop_id, mode)["status"] == status, (prop_id, mode)


def test_examples_are_the_smallest_failing_case() -> None:
    for name in ("qwen3", "gemma4", "gpt_oss", "kimi_k2"):
        _, report = doctor(name)
        for result in report["properties"]:
            failing = result["data"].get("failing_cases")
            if result["status"] == "fail" and failing:
                smallest = min(failing, key=lambda case: CASES[case].size)
                assert CASES[result["example"]["case"]].size == CASES[smallest].size, (name, result["id"])


# ------------------------------------------------------------------ the seeds
def test_gemma4_26b_missing_thought_wrapper_matches_seed() -> None:
    """Seed 002: non-thinking generation prompt holds the empty thought channel; rendered turns lack it."""
    _, report = doctor("gemma4")
    assert report["family"] == "gemma4"
    prefix = prop(report, "generation-prompt-prefix", "thinking off")
    assert prefix["status"] == "fail"
    assert prefix["data"]["missing"] == GEMMA4_WRAPPER
    assert {"single", "multi"} <= set(prefix["data"]["failing_cases"])
    wrapper = prop(report, "thought-wrapper", "thinking off")
    assert wrapper["status"] == "fail"
    assert wrapper["data"]["wrapper"] == GEMMA4_WRAPPER
    assert wrapper["data"]["locations"] == ["generation prompt"]
    # "Does NOT affect thinking mode (enable_thinking=True)"
    assert prop(report, "thought-wrapper", "thinking on")["status"] == "pass"
    # The template is still trainable exactly: swift_ext splices the wrapper back in.
    assert prop(report, "encode-verified", "thinking off")["status"] == "pass"


def test_gemma4_seed_conversation_shows_the_reported_wrapper() -> None:
    """The seed's own multi-turn example, rendered directly, has exactly the wrapper the doctor names."""
    _, report = doctor("gemma4")
    wrapper = prop(report, "thought-wrapper", "thinking off")["data"]["wrapper"]
    encoder = swift_ext.get_encoder(load_tokenizer("gemma4"))
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "what is LLM?"}]
    prompt = encoder.renderer.render(messages, add_generation_prompt=True, kwargs={"enable_thinking": False})
    assert prompt.endswith("<|turn>model\n" + wrapper)
    assert "<|turn>model\nHello!<turn|>" in prompt


def test_gemma4_e2b_has_no_wrapper() -> None:
    """Seed 002: E2B/E4B templates have no channel logic at all."""
    _, report = doctor("gemma4_e2b")
    for mode in modes(report):
        assert prop(report, "thought-wrapper", mode)["status"] == "pass"
    assert prop(report, "generation-prompt-prefix", "thinking off")["status"] == "pass"


def test_qwen3_history_rewriting_matches_seeds() -> None:
    """Seeds 000/001: Qwen3 strips reasoning from earlier turns and writes the empty think only on the last turn."""
    _, report = doctor("qwen3")
    for mode in ("thinking on", "thinking off"):
        history = prop(report, "history-stable", mode)
        assert history["status"] == "fail"
        assert "reasoning-past" in history["data"]["failing_cases"]
        past = prop(report, "reasoning-past", mode)
        assert past["status"] == "fail" and past["data"]["rendered_when_last"]
        example = past["example"]
        assert example["expected"] not in example["actual"]
        assert prop(report, "reasoning-last", mode)["status"] == "pass"
        wrapper = prop(report, "thought-wrapper", mode)
        assert wrapper["data"]["wrapper"] == QWEN3_EMPTY_THINK
        assert "last turn" in wrapper["data"]["locations"] and "past turns" not in wrapper["data"]["locations"]
    # Seed 001 (default mode = thinking on): the empty think block is rewritten away from the earlier turn.
    assert prop(report, "history-stable", "thinking on")["data"]["removed"] == QWEN3_EMPTY_THINK
    assert prop(report, "thought-wrapper", "thinking off")["data"]["locations"] == ["generation prompt", "last turn"]
    assert report["trainable"]


# ------------------------------------------------------------------ inputs and exit codes
CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
NO_STOP = ("{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
           "{% if add_generation_prompt %}[assistant] {% endif %}")


def test_generic_template_is_named_generic(cli, tmp_path: Path) -> None:
    template = tmp_path / "chat_template.jinja"
    template.write_text(CHATML, encoding="utf-8")
    result = cli("doctor", template, "--tokenizer", require_fixture("qwen3"), "--json", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["family_display"] == "generic" and report["parity_template"] == "hf_parity"
    assert result.code == 0 and report["trainable"]
    assert "generic" in result.out and "hf_parity" in result.out
    support = {s["feature"]: s["status"] for s in report["support"]}
    assert support["chat"] == "yes" and support["tools"] == "no"  # the template ignores tool calls


def test_untrainable_template_exits_nonzero(cli, tmp_path: Path) -> None:
    template = tmp_path / "broken.jinja"
    template.write_text(NO_STOP, encoding="utf-8")
    result = cli("doctor", template, "--tokenizer", "fixture:qwen3", "--json", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert result.code == 1 and not report["trainable"]
    assert "NOT trainable" in result.out
    failed = {o["case"]: o["rule"] for o in report["outcomes"] if o["status"] == "failed"}
    assert "single" in failed
    with pytest.raises(swift_ext.ParityError) as error:  # the core agrees
        swift_ext.encode(load_tokenizer("qwen3"), CASES["single"].messages, chat_template=NO_STOP)
    assert error.value.rule == failed["single"]


def test_folder_and_template_file_inputs(cli, tmp_path: Path) -> None:
    folder = require_fixture("llama3")
    by_folder = cli("doctor", folder, "--json", tmp_path / "a.json")
    assert by_folder.code == 0
    assert json.loads((tmp_path / "a.json").read_text())["family"] == "llama3"
    jinja = require_fixture("gemma4") / "chat_template.jinja"
    by_file = cli("doctor", jinja, "--json", tmp_path / "b.json", "--html", tmp_path / "b.html")
    report = json.loads((tmp_path / "b.json").read_text())
    assert by_file.code == 0 and report["family"] == "gemma4" and report["derived_tokenizer"]
    page = (tmp_path / "b.html").read_text()
    assert "gemma4_parity" in page and "http://" not in page and "https://" not in page


def test_unknown_model_exits_2(cli) -> None:
    result = cli("doctor", "no-such-model-or-fixture")
    assert result.code == 2 and "fixture:" in result.err
