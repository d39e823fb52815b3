"""ms-swift 4.6 GRPO: token-id turns in, training ids whose rollout-prompt part is exactly the engine's prompt out.

The inputs are built the way ms-swift's GRPO code builds them (swift/rlhf_trainers/utils.py, swift/rl_core/data.py,
swift/rollout/multi_turn.py, swift/rollout/agent_loop.py), without vLLM:

1. turn k's prompt: ``template.encode`` of the request in inference mode -> ``encode_token_turns(is_training=False)``;
2. the engine samples ids; ``RolloutScheduler.get_response_token_data`` prepends the masked response prefix
   (``template._get_response_prefix``); logprobs cover the sampled ids only;
3. multi-turn: ``set_assistant_message_token_ids`` puts the turn back into the request as a plain id list, the
   scheduler appends the tool result / user message, and the next prompt is encoded (step 1);
4. training: ``OnPolicySample.to_template_dict`` + ``replace_assistant_response_with_ids(...,
   non_thinking_prefix_ids=get_response_prefix_ids(...))`` -> ``{'token_ids', 'loss_scale'}`` contents ->
   ``encode_token_turns(is_training=True)``; ``build_rollout_logps`` must then align every logprob (it returns
   None, silently turning off importance-sampling correction, on any count mismatch).

``test_grpo_inputs_with_ms_swift`` runs that with ms-swift's own functions (skipped only when ms-swift is not
installed). The other tests run the same flow with ``MIRROR``, a transcription of those ms-swift 4.6 functions,
so they need no ms-swift; the ms-swift test also checks the transcription against the real code.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from types import SimpleNamespace

import pytest
from rollout_support import AGENT, FAMILIES, TOOLS, fake_logprobs, generations, hf_ids, swift_rlhf_utils, tokenizer

import swift_ext
from swift_ext.ms_swift.grpo import (
    check_turn_logprob_counts,
    encode_token_turns,
    has_token_id_content,
    token_content_ids,
)
from swift_ext.ms_swift.logprob_guard import explain_logprob_mismatch
from swift_ext.rollout import RolloutAlignmentError
from swift_ext.rollout.record import parse_harmony
from swift_ext.types import IGNORE_INDEX

# ms-swift 4.6.0 TemplateMeta (thinking_prefix, non_thinking_prefix) and Template._get_response_prefix's
# default thinking (Template(None, meta).enable_thinking unset) for the families' ms-swift templates.
SWIFT_PREFIXES = {
    # template: {enable_thinking: response prefix}
    "qwen3": {None: "<think>\n\n</think>\n\n", True: "", False: "<think>\n\n</think>\n\n"},
    "qwen3_5": {None: "<think>\n\n</think>\n\n", True: "<think>\n", False: "<think>\n\n</think>\n\n"},
    "glm4_7": {None: "</think>", True: "<think>", False: "</think>"},
    "gpt_oss": {None: "", True: "", False: ""},
    "deepseek_r1": {None: "<think>\n", True: "<think>\n", False: ""},
}


# ------------------------------------------------------------------ transcription of ms-swift 4.6 (MIRROR)
def _mirror_replace_assistant_response_with_ids(messages, completion_ids, loss_mask=None,
                                                non_thinking_prefix_ids=None):
    """swift.rlhf_trainers.utils.replace_assistant_response_with_ids (4.6.0), transcribed."""
    if isinstance(completion_ids[0], int):
        completion_ids = [completion_ids]
    if loss_mask and isinstance(loss_mask[0], int):
        loss_mask = [loss_mask]
    if non_thinking_prefix_ids:
        completion_ids = list(completion_ids)
        loss_mask = list(loss_mask) if loss_mask is not None else [[1] * len(ids) for ids in completion_ids]
        n_prefix = len(non_thinking_prefix_ids)
        last_ids = list(completion_ids[-1])
        prefix_is_masked = (last_ids[:n_prefix] == list(non_thinking_prefix_ids)
                            and loss_mask[-1][:n_prefix] == [0] * n_prefix)
        if not prefix_is_masked:
            completion_ids[-1] = list(non_thinking_prefix_ids) + last_ids
            loss_mask[-1] = [0] * n_prefix + list(loss_mask[-1])
    remaining, index = len(completion_ids), 0
    for message in reversed(messages):
        if message["role"] != "assistant":
            continue
        if index >= remaining:
            break
        if loss_mask:
            message["content"] = {"loss_scale": loss_mask[-1 - index], "token_ids": completion_ids[-1 - index]}
        else:
            message["content"] = completion_ids[-1 - index]
        index += 1
    return messages


def _mirror_build_rollout_logps(rollout_logprobs_list, completion_mask, device=None):
    """swift.rlhf_trainers.utils.build_rollout_logps (4.6.0), transcribed on plain lists."""
    if not all(lp is not None and lp for lp in rollout_logprobs_list):
        return None
    out = []
    for nested, row in zip(rollout_logprobs_list, completion_mask):
        flat = [lp for turn in nested for lp in turn]
        count = sum(row)
        if len(flat) == count + 1:
            flat = flat[:count]
        if len(flat) != count:
            return None
        values = iter(flat)
        out.append([next(values) if m else 0.0 for m in row])
    return out


def _mirror_response_token_data(prefix_ids, sampled_ids):
    """RolloutScheduler.get_response_token_data (4.6.0) for a fresh (non-continuation) turn."""
    ids, mask = list(sampled_ids), [1] * len(sampled_ids)
    if prefix_ids:
        ids, mask = list(prefix_ids) + ids, [0] * len(prefix_ids) + mask
    return ids, mask


MIRROR = SimpleNamespace(
    name="mirror",
    replace_assistant_response_with_ids=_mirror_replace_assistant_response_with_ids,
    build_rollout_logps=_mirror_build_rollout_logps,
    response_prefix=lambda swift_template, ctk: SWIFT_PREFIXES[swift_template][ctk.get("enable_thinking")],
    response_token_data=lambda tok, swift_template, ctk, sampled: _mirror_response_token_data(
        hf_ids(tok, SWIFT_PREFIXES[swift_template][ctk.get("enable_thinking")]), sampled),
    set_assistant_message_token_ids=lambda messages, ids: next(
        m for m in reversed(messages) if m["role"] == "assistant").update(content=list(ids)),
    to_template_dict=lambda sample: {"messages": copy.deepcopy(sample["messages"]),
                                     "chat_template_kwargs": sample["chat_template_kwargs"]},
)


# ---------------------------------------------------------------------------------- the GRPO flow
def grpo_trajectory(helpers, name: str, ctk: dict, messages=None):
    """Roll out ``messages``'s assistant turns as ms-swift's multi-turn loop does; then encode for training.

    Returns (engine prompts, sampled ids per turn, logprobs per turn, training encoding, prefix ids)."""
    tok = tokenizer(name)
    encoder = swift_ext.get_encoder(tok)
    swift_template = encoder.family.swift_template
    conversation = copy.deepcopy(messages or AGENT)
    texts = generations(tok, conversation, TOOLS, ctk)
    prefix_ids = hf_ids(tok, helpers.response_prefix(swift_template, ctk)) or None
    # gpt-oss's template needs the harmony turn split into analysis / final / tool call to render what follows.
    parser = parse_harmony if encoder.family.name == "gpt_oss" else None
    request = [m for m in conversation[:2]]
    prompts, sampled, logprobs, response_ids, response_masks = [], [], [], [], []
    for index in sorted(texts):
        # The engine's prompt: the template encodes the request in inference mode.
        encoded = encode_token_turns(encoder, request, tools=TOOLS, chat_template_kwargs=ctk, is_training=False,
                                     response_prefix_ids=prefix_ids, message_parser=parser)
        prompts.append(encoded.input_ids)
        ids = hf_ids(tok, texts[index])  # what the model samples after that prompt
        sampled.append(ids)
        logprobs.append(fake_logprobs(len(ids), index))
        turn_ids, turn_mask = helpers.response_token_data(tok, swift_template, ctk, ids)
        response_ids.append(turn_ids)
        response_masks.append(turn_mask)
        # append_assistant_completion + step(): the completion text, then the id-backed history and the next turn.
        request.append({"role": "assistant", "content": tok.decode(ids, skip_special_tokens=False)})
        helpers.set_assistant_message_token_ids(request, turn_ids)
        following = conversation[index + 1:index + 2]
        request.extend(copy.deepcopy(following))
    request = request[: len(request) - (1 if request[-1]["role"] != "assistant" else 0)]
    sample = {"messages": request, "chat_template_kwargs": ctk, "response_token_ids": response_ids,
              "response_loss_mask": response_masks, "rollout_logprobs": logprobs}
    data = helpers.to_template_dict(sample)
    messages = helpers.replace_assistant_response_with_ids([dict(m) for m in data["messages"]], response_ids,
                                                           response_masks, non_thinking_prefix_ids=prefix_ids)
    assert has_token_id_content(messages)
    training = encode_token_turns(encoder, messages, tools=TOOLS, chat_template_kwargs=ctk, is_training=True,
                                  response_prefix_ids=prefix_ids, message_parser=parser,
                                  logprob_counts=[len(lp) for lp in logprobs])
    return prompts, sampled, logprobs, training, prefix_ids


def check_trajectory(helpers, prompts, sampled, logprobs, training) -> None:
    ids = training.input_ids
    assert len(training.turns) == len(sampled)
    for span, prompt, turn_ids in zip(training.turns, prompts, sampled):
        index, start, end = span.message_index, span.label_start, span.label_end
        assert ids[:start] == prompt, f"message {index}: the training context is not the engine's prompt"
        assert ids[start:end] == turn_ids, f"message {index}: the sampled ids are not verbatim"
    mask = [label != IGNORE_INDEX for label in training.labels]
    assert sum(mask) == sum(len(lp) for lp in logprobs)
    contexts, scales, answer_len = training.swift_contexts()
    assert [t for c in contexts for t in c] == ids and answer_len == 1
    aligned = helpers.build_rollout_logps([logprobs], _mask_tensor([mask]), "cpu")
    assert aligned is not None, "build_rollout_logps would silently turn off importance-sampling correction"
    row = aligned[0].tolist() if hasattr(aligned, "tolist") else aligned[0]
    assert pytest.approx([v for v, m in zip(row, mask) if m]) == [lp for turn in logprobs for lp in turn]


def _mask_tensor(rows):
    try:
        import torch

        return torch.tensor(rows, dtype=torch.bool)
    except ImportError:  # the transcription works on lists
        return rows


CASES = [(name, {}) for name in FAMILIES] + [(name, {"enable_thinking": False})
                                             for name in ("qwen3", "qwen3_6", "glm4_7")]


@pytest.mark.parametrize(("name", "ctk"), CASES, ids=[f"{n}-{'off' if c else 'default'}" for n, c in CASES])
def test_grpo_flow_transcribed(name, ctk):
    prompts, sampled, logprobs, training, _ = grpo_trajectory(MIRROR, name, ctk)
    check_trajectory(MIRROR, prompts, sampled, logprobs, training)


def test_token_content_forms():
    assert token_content_ids([1, 2]) == [1, 2]
    assert token_content_ids({"token_ids": [3], "loss_scale": [1]}) == [3]
    assert token_content_ids({"input_ids": [4]}) == [4]
    assert token_content_ids("text") is None and token_content_ids([{"type": "text"}]) is None
    assert token_content_ids([]) is None
    assert not has_token_id_content([{"role": "user", "content": [1, 2]}])


def test_logprob_count_mismatch_is_loud():
    tok = tokenizer("qwen3")
    encoder = swift_ext.get_encoder(tok)
    ids = hf_ids(tok, "<think>\nok\n</think>\n\nDone.<|im_end|>")
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": {"token_ids": ids, "loss_scale": [1] * len(ids)}}]
    encoded = encode_token_turns(encoder, messages, logprob_counts=[len(ids)])
    assert encoded.num_labels == len(ids)
    with pytest.raises(RolloutAlignmentError) as info:
        encode_token_turns(encoder, messages, logprob_counts=[len(ids) + 1])
    assert info.value.rule == "rollout-logprob-count" and info.value.cause == "dropped-token"
    with pytest.raises(RolloutAlignmentError):
        check_turn_logprob_counts(encoded.turns, encoded.loss_scale, [len(ids), 3])
    # What ms-swift's build_rollout_logps would silently swallow:
    assert explain_logprob_mismatch([[[0.0] * 5], [[0.0] * 3]], [5, 4]) == [
        "sample 1: 3 rollout logprobs for 4 completion tokens"]
    assert "no rollout logprobs" in explain_logprob_mismatch([[[0.0] * 5], []], [5, 4])[0]
    assert explain_logprob_mismatch([[], []], [5, 4]) == []


def test_masked_tips_inside_a_turn_stay_unlabelled():
    """MathTipsScheduler appends masked tip ids to a turn: in the sequence, never labelled, no logprobs."""
    tok = tokenizer("qwen3_6")
    encoder = swift_ext.get_encoder(tok)
    sampled = hf_ids(tok, "<think>\nHmm.\n</think>\n\nIt is 12.<|im_end|>")
    tips = hf_ids(tok, "Check again carefully.")
    content = {"token_ids": sampled + tips, "loss_scale": [1] * len(sampled) + [0] * len(tips)}
    encoded = encode_token_turns(encoder, [{"role": "user", "content": "6+6?"},
                                           {"role": "assistant", "content": content}],
                                 logprob_counts=[len(sampled)])
    (span,) = encoded.turns
    assert encoded.input_ids[span.label_start:span.label_end] == sampled + tips
    assert encoded.num_labels == len(sampled)


# ------------------------------------------------------------------------------ ms-swift's own code
def _swift_installed() -> bool:
    return importlib.util.find_spec("swift") is not None and importlib.util.find_spec("swift.template") is not None


def _real_utils_functions(names):
    """ms-swift's functions from swift/rlhf_trainers/utils.py (``rollout_support.swift_rlhf_utils``)."""
    module = swift_rlhf_utils()
    return {name: getattr(module, name) for name in names}


def _real_helpers(tok):
    from swift.rl_core.data import OnPolicySample
    from swift.rollout.multi_turn import RolloutScheduler
    from swift.template import TEMPLATE_MAPPING, StdTemplateInputs

    real = _real_utils_functions(["replace_assistant_response_with_ids", "build_rollout_logps",
                                  "get_response_prefix_ids"])
    templates = {}

    def template(swift_template):
        if swift_template not in templates:
            meta = TEMPLATE_MAPPING[swift_template]
            templates[swift_template] = meta.template_cls(None, meta, template_backend="jinja")
            templates[swift_template].processor = tok  # what get_response_prefix_ids tokenizes with
        return templates[swift_template]

    def response_prefix(swift_template, ctk):
        return template(swift_template)._get_response_prefix(StdTemplateInputs(messages=[], chat_template_kwargs=ctk))

    def response_token_data(tok_, swift_template, ctk, sampled_ids):
        scheduler = RolloutScheduler(tokenizer=tok_, template=template(swift_template))
        request = SimpleNamespace(chat_template_kwargs=dict(ctk), messages=[])
        return scheduler.get_response_token_data(request, SimpleNamespace(token_ids=list(sampled_ids)))

    def set_ids(messages, ids):
        RolloutScheduler(tokenizer=tok).set_assistant_message_token_ids(SimpleNamespace(messages=messages), ids)

    def to_template_dict(sample):
        return OnPolicySample(messages=copy.deepcopy(sample["messages"]),
                              extra={"chat_template_kwargs": sample["chat_template_kwargs"]},
                              response_token_ids=sample["response_token_ids"],
                              response_loss_mask=sample["response_loss_mask"],
                              rollout_logprobs=sample["rollout_logprobs"]).to_template_dict()

    return SimpleNamespace(name="ms-swift", response_prefix=response_prefix, response_token_data=response_token_data,
                           set_assistant_message_token_ids=set_ids, to_template_dict=to_template_dict,
                           template=template, **real)


@pytest.mark.parametrize(("name", "ctk"), CASES, ids=[f"{n}-{'off' if c else 'default'}" for n, c in CASES])
def test_grpo_inputs_with_ms_swift(name, ctk):
    if not _swift_installed():
        pytest.skip("ms-swift is not installed (pip install ms-swift==4.6.0): this test builds the GRPO inputs with "
                    "ms-swift's own functions; the transcribed flow above runs without it")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = tokenizer(name)
    helpers = _real_helpers(tok)
    swift_template = swift_ext.get_encoder(tok).family.swift_template
    # The transcription the other tests use says what ms-swift says.
    for thinking, prefix in SWIFT_PREFIXES[swift_template].items():
        kwargs = {} if thinking is None else {"enable_thinking": thinking}
        assert helpers.response_prefix(swift_template, kwargs) == prefix
        assert helpers.get_response_prefix_ids(helpers.template(swift_template), chat_template_kwargs=kwargs) == (
            hf_ids(tok, prefix) or None)
    prompts, sampled, logprobs, training, _ = grpo_trajectory(helpers, name, ctk)
    check_trajectory(helpers, prompts, sampled, logprobs, training)
    mirror = grpo_trajectory(MIRROR, name, ctk)
    assert mirror[3].input_ids == training.input_ids and mirror[3].labels == training.labels

    # The guard: a count mismatch that build_rollout_logps would swallow raises instead.
    import torch

    from swift_ext.ms_swift.logprob_guard import install_logprob_guard

    utils = swift_rlhf_utils()  # the module, or ms-swift's functions compiled from it (msgspec missing)
    uninstall = install_logprob_guard("raise", module=utils)
    try:
        mask = torch.tensor([[label != IGNORE_INDEX for label in training.labels]])
        assert utils.build_rollout_logps([logprobs], mask, "cpu") is not None
        short = [logprobs[0][:-2], *logprobs[1:]]
        with pytest.raises(RolloutAlignmentError) as info:
            utils.build_rollout_logps([short], mask, "cpu")
        assert info.value.rule == "rollout-is-disabled"
    finally:
        uninstall()
