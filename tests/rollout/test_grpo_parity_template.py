"""ms-swift 4.6 GRPO with a ``<family>_parity`` template: the training ids' rollout-prompt part is the engine's prompt.

Everything but the model is ms-swift's own code, without vLLM:

- the dataset row becomes an ``OnPolicySample`` and its ``RolloutInferRequest`` (``to_infer_request``);
- ``MultiTurnScheduler.run`` drives the multi-turn rollout: it appends each completion, adds the masked response
  prefix (``get_response_token_data``), freezes the turn as token ids (``set_assistant_message_token_ids``) and
  asks the scheduler's ``step`` for the environment's reply (here: the tool results / user messages of a scripted
  conversation);
- the engine is a stand-in for ``VllmEngine.infer_async``: it puts the template in ``vllm`` mode and encodes the
  request with ``template.encode(infer_request, True)`` exactly as vLLM's engine does (those ids are what vLLM
  would be fed), then "samples" the scripted ids with logprobs;
- training: ``apply_rollout_output``, ``encode_sample`` (``replace_assistant_response_with_ids`` with
  ``get_response_prefix_ids``, then ``template.encode`` in ``train`` mode) and ``collate_to_grpo_micro_batch``, whose
  ``build_rollout_logps`` must align every rollout logprob (it returns None, silently turning off
  importance-sampling correction, on any count mismatch; swift-ext's guard makes that raise).

ms-swift's functions come from ``swift.rlhf_trainers.utils`` or, when that module cannot be imported for a missing
optional dependency (msgspec), are compiled from its installed source (``rollout_support.swift_rlhf_utils``).
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import re
import shutil
import warnings

import pytest
from rollout_support import AGENT, TOOLS, _round_trips, fake_logprobs, generations, hf_ids, swift_rlhf_utils

if importlib.util.find_spec("swift") is None or importlib.util.find_spec("swift.template") is None:
    pytest.skip("ms-swift is not installed (pip install ms-swift==4.6.0): these tests drive its GRPO code",
                allow_module_level=True)

import torch  # noqa: E402

import swift_ext.ms_swift as ms  # noqa: E402
from swift_ext.dev.testing import fixture_dir  # noqa: E402
from swift_ext.rollout import RolloutAlignmentError  # noqa: E402
from swift_ext.types import IGNORE_INDEX  # noqa: E402

ms.register()

from swift.infer_engine.protocol import (  # noqa: E402
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatMessage,
    RequestConfig,
    UsageInfo,
)
from swift.model import get_model_processor  # noqa: E402
from swift.rl_core.data import OnPolicySample  # noqa: E402
from swift.rollout.multi_turn import MultiTurnScheduler  # noqa: E402
from swift.template import get_template  # noqa: E402

_PROCESSORS: dict[str, object] = {}


def processor(name: str, tmp_path_factory):
    """ms-swift's processor for a fixture tokenizer (``get_model_processor(load_model=False)``: the tokenizer files
    beside a tiny config)."""
    if name not in _PROCESSORS:
        from transformers import Qwen3Config

        folder = tmp_path_factory.mktemp(name)
        for item in fixture_dir(name).iterdir():
            if item.is_file():
                shutil.copyfile(item, folder / item.name)
        Qwen3Config(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, head_dim=8).save_pretrained(str(folder))
        _PROCESSORS[name] = get_model_processor(str(folder), load_model=False, model_type="qwen3")[1]
    return _PROCESSORS[name]


# ------------------------------------------------------------------ the engine and the scheduler
class ScriptedEngine:
    """Stands in for ms-swift's vLLM engine: ``infer_async`` encodes the request as ``VllmEngine.infer_async`` does
    (template in ``vllm`` mode, ``template.encode(infer_request, True)``: the ids vLLM is fed) and returns the
    scripted turn's ids as sampled, with a logprob per id."""

    def __init__(self, template, turns: list[list[int]]):
        self.template = template
        self.tokenizer = template.tokenizer
        self.turns = [list(ids) for ids in turns]
        self.logprobs = [fake_logprobs(len(ids), k) for k, ids in enumerate(self.turns)]
        self.prompts: list[list[int]] = []

    async def infer_async(self, infer_request, request_config=None, **kwargs):
        self.template.set_mode("vllm")
        inputs = self.template.encode(infer_request, True)
        prompt = list(inputs["input_ids"])
        k = len(self.prompts)
        self.prompts.append(prompt)
        ids, logprobs = self.turns[k], self.logprobs[k]
        content = [{"token": f"token_id:{t}", "logprob": lp} for t, lp in zip(ids, logprobs)]
        choice = ChatCompletionResponseChoice(
            index=0, message=ChatMessage(role="assistant", content=self.tokenizer.decode(ids)), finish_reason="stop",
            logprobs={"content": content}, token_ids=list(ids))
        return ChatCompletionResponse(model="scripted", choices=[choice], prompt_token_ids=prompt,
                                      usage=UsageInfo(len(prompt), len(ids), len(prompt) + len(ids)))


class ScriptedScheduler(MultiTurnScheduler):
    """A multi-turn scheduler as users write one: ``step`` appends the environment's reply to the request."""

    def __init__(self, replies: list[list[dict]], **kwargs):
        super().__init__(**kwargs)
        self.replies = replies

    def step(self, infer_request, response_choice, current_turn):
        infer_request.messages.extend(copy.deepcopy(self.replies[current_turn - 1]))
        return {"infer_request": infer_request}


def non_canonical(tok, ids: list[int]) -> list[int]:
    """The same text sampled as a split the tokenizer would not make (one multi-letter token as two)."""
    for k in range(len(ids) - 1, -1, -1):
        piece = tok.decode(ids[k:k + 1])
        if len(piece.strip()) >= 4 and piece.strip().isalpha():
            split = hf_ids(tok, piece[:2]) + hf_ids(tok, piece[2:])
            if split != ids[k:k + 1] and tok.decode(split) == piece:
                out = ids[:k] + split + ids[k + 1:]
                assert tok.decode(out) == tok.decode(ids) and hf_ids(tok, tok.decode(out)) != out
                return out
    raise AssertionError("no token to split")


def rollout(template, ctk: dict, *, logprob_drop: int = 0):
    """One GRPO trajectory over ``AGENT``'s assistant turns with ms-swift's code. Returns (engine, OnPolicySample)."""
    tok = template.tokenizer
    texts = generations(tok, AGENT, TOOLS, ctk)  # what the model generates for each assistant turn
    indices = sorted(texts)
    sampled = [hf_ids(tok, texts[i]) for i in indices]
    sampled[1] = non_canonical(tok, sampled[1])  # sampled ids are kept verbatim, never re-tokenized
    engine = ScriptedEngine(template, sampled)
    if logprob_drop:
        engine.logprobs[0] = engine.logprobs[0][:-logprob_drop]
    # The environment's replies after each turn but the last: the tool result, the next user message.
    replies = [[copy.deepcopy(m) for m in AGENT[i + 1:j]] for i, j in zip(indices, indices[1:])]
    scheduler = ScriptedScheduler(replies, infer_engine=engine, max_turns=len(indices))
    row = {"messages": copy.deepcopy(AGENT[:indices[0]]), "tools": json.dumps(TOOLS), "solution": "ten"}
    if ctk:
        row["chat_template_kwargs"] = dict(ctk)
    sample = OnPolicySample.from_row(row)
    output = asyncio.run(scheduler.run(sample.to_infer_request(include_extra=True), RequestConfig()))
    sample.apply_rollout_output(rollout_output=output)
    return engine, sample


def train_batch(template, samples):
    """``encode_sample`` then ``collate_to_grpo_micro_batch`` (HF GRPO's logits_to_keep frame)."""
    utils = swift_rlhf_utils()
    template.set_mode("train")
    for s in samples:
        s.encoded = utils.encode_sample(s, template)
    return utils.collate_to_grpo_micro_batch(samples, template, device=torch.device("cpu"), use_logits_to_keep=True)


def labelled_runs(labels: list[int]) -> list[tuple[int, int]]:
    runs, start = [], None
    for t, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = t
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, t))
            start = None
    return runs


CASES = [
    ("qwen3", {}, "jinja"),
    ("qwen3", {"enable_thinking": False}, "jinja"),
    ("qwen3_6", {}, "jinja"),
    ("qwen3_6", {"enable_thinking": False}, "swift"),  # GRPO's default backend: rerouted to the parity path
    # ms-swift prepends the response prefix (masked) to every sampled turn; the engine's prompt already ends with it
    ("qwen3_6", {"response_prefix": "<think>\n"}, "jinja"),
    ("glm4_7", {}, "jinja"),
    ("gpt_oss", {}, "jinja"),
]


@pytest.mark.parametrize(("name", "ctk", "backend"), CASES,
                         ids=[f"{n}-{'-'.join(map(str, c)) or 'default'}-{b}" for n, c, b in CASES])
def test_grpo_training_ids_hold_the_engine_prompts(name, ctk, backend, tmp_path_factory):
    template = get_template(processor(name, tmp_path_factory), template_type=f"{name}_parity",
                            template_backend=backend)
    tok = template.tokenizer
    assert _round_trips(tok), f"{name}: the fixture tokenizer does not round-trip text"
    engine, sample = rollout(template, ctk)

    assert len(engine.prompts) == 3 and sample.response_token_ids and sample.rollout_logprobs
    # What ms-swift hands the template: each turn's ids behind the masked response prefix it injects (if any).
    prefix = hf_ids(tok, ctk["response_prefix"]) if "response_prefix" in ctk else []
    for ids, mask, turn in zip(sample.response_token_ids, sample.response_loss_mask, engine.turns):
        assert ids == prefix + turn and mask == [0] * len(prefix) + [1] * len(turn)
    model_inputs, batch = train_batch(template, [sample])
    encoded = sample.encoded
    ids, labels = encoded["input_ids"], encoded["labels"]
    runs = labelled_runs(labels)
    # Every sampled turn is labelled, verbatim, right after exactly the prompt the engine was fed for it.
    assert len(runs) == len(engine.turns)
    for k, ((start, end), prompt, turn) in enumerate(zip(runs, engine.prompts, engine.turns)):
        assert ids[start:end] == turn, f"turn {k}: the sampled ids are not verbatim"
        assert ids[:start] == prompt, f"turn {k}: the training context is not the engine's prompt"
    assert ids == engine.prompts[-1] + engine.turns[-1]  # nothing after the last sampled id
    # Each prompt extends the previous turn's sequence (raw token history, as ms-swift's multi-turn loop keeps it).
    for k in range(1, len(engine.prompts)):
        assert engine.prompts[k][:len(engine.prompts[k - 1]) + len(engine.turns[k - 1])] == (
            engine.prompts[k - 1] + engine.turns[k - 1])
    # The first prompt is the model's own generation prompt (what an OpenAI-compatible server would build).
    first = AGENT[:1 + AGENT.index(next(m for m in AGENT if m["role"] == "user"))]
    assert engine.prompts[0] == hf_ids(tok, tok.apply_chat_template(first, tools=TOOLS, tokenize=False,
                                                                     add_generation_prompt=True, **ctk))
    # ms-swift lines every rollout logprob up with a completion token: importance-sampling correction stays on.
    assert batch.rollout_per_token_logps is not None
    completion = batch.completion_mask[0]
    flat = [lp for turn in sample.rollout_logprobs for lp in turn]
    assert int(completion.sum()) == len(flat) == sum(len(t) for t in engine.turns)
    assert batch.rollout_per_token_logps[0][completion].tolist() == pytest.approx(flat)
    assert model_inputs["labels"].shape[-1] == len(ids)


def test_logprob_count_mismatch_raises_instead_of_disabling_is_correction(tmp_path_factory, monkeypatch):
    template = get_template(processor("qwen3_6", tmp_path_factory), template_type="qwen3_6_parity",
                            template_backend="jinja")
    utils = swift_rlhf_utils()
    good = rollout(template, {})[1]
    # The engine returns two logprobs fewer than ids for the first turn. ms-swift's multi-turn loop then empties the
    # trajectory's logprobs and apply_rollout_output falls back to the last turn's alone: a count mismatch that
    # build_rollout_logps answers with None, i.e. no importance-sampling correction for the whole batch.
    _, short = rollout(template, {}, logprob_drop=2)
    assert len(short.rollout_logprobs) == 1
    batch = [copy.deepcopy(good), copy.deepcopy(short)]
    try:
        # raise (the default of SWIFT_EXT_LOGPROB_GUARD)
        monkeypatch.delenv(ms.LOGPROB_GUARD_ENV, raising=False)
        ms.configure_logprob_guard(module=utils)
        with pytest.raises(RolloutAlignmentError) as info:
            train_batch(template, batch)
        assert info.value.rule == "rollout-is-disabled"
        assert re.search(r"sample 1: \d+ rollout logprobs for \d+ completion tokens", str(info.value))
        _, grpo = train_batch(template, [copy.deepcopy(good)])  # an aligned batch passes the guard
        assert grpo.rollout_per_token_logps is not None
        # warn: loud, then ms-swift's behaviour (correction off for the batch)
        monkeypatch.setenv(ms.LOGPROB_GUARD_ENV, "warn")
        ms.configure_logprob_guard(module=utils)
        with pytest.warns(UserWarning, match="importance-sampling correction"):
            _, grpo = train_batch(template, batch)
        assert grpo.rollout_per_token_logps is None
        # off: ms-swift's behaviour, silently
        monkeypatch.setenv(ms.LOGPROB_GUARD_ENV, "off")
        ms.configure_logprob_guard(module=utils)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _, grpo = train_batch(template, batch)
        assert grpo.rollout_per_token_logps is None
        monkeypatch.setenv(ms.LOGPROB_GUARD_ENV, "loud")
        with pytest.raises(ValueError, match="SWIFT_EXT_LOGPROB_GUARD"):
            ms.configure_logprob_guard(module=utils)
    finally:
        ms.configure_logprob_guard("off", module=utils)
