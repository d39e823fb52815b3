"""The catalogue of rule ids: every ``rule`` swift-ext raises, what it means, and where it comes from.

Every ``ParityError`` (and the CLI's row and model-argument errors) carries a ``rule``: a short id printed first in
its message (``[input-empty] the conversation is empty``), by which ``swift-ext audit`` groups failed rows and
callers branch (``exc.rule == Rule.I5_ZERO_LABEL``). The ids are stable public identifiers: never rename one.
``Rule`` members are ``str``s equal to their id, so they compare equal to ``exc.rule``.

``python -m swift_ext.rules > docs/rules.md`` writes the reference page; ``tests/architecture/test_rules.py`` scans
the package's source and fails when a rule is raised that is not listed here (printing the entry to add), when an
entry is raised nowhere, when ``raised_by`` is out of date, or when ``docs/rules.md`` is not this text.
"""

from __future__ import annotations

import sys
from enum import Enum


class Group(str, Enum):
    """What kind of thing a rule is about; one table each in ``docs/rules.md``, in this order."""

    heading: str
    intro: str

    def __new__(cls, value: str, heading: str, intro: str) -> Group:
        member = str.__new__(cls, value)
        member._value_ = value
        member.heading = heading
        member.intro = intro
        return member

    INPUT = ("input", "Input", "The conversation, a dataset row or a tool schema is malformed; the row must be fixed "
             "(or dropped). Raised before anything is rendered.")
    TEMPLATE = ("template", "Template", "The chat template (or the tokenizer carrying it) cannot render this "
                "conversation as inference would, or no family description fits it.")
    REASONING = ("reasoning", "Reasoning", "A turn's reasoning cannot be trained as the model would generate it; "
                 "`reasoning_policy='drop'` trains the turn without it (counted) where that is acceptable.")
    INVARIANTS = ("invariants", "Invariants I1-I5", "A sample would break, or breaks, one of the invariants of "
                  "the README (I1 prefix, I2 labels, I3 nothing else, I4 fewest samples, I5 no empty or all-label "
                  "sample). `swift_ext.verify` raises the ones marked *verify*; `encode` raises the others before "
                  "a wrong sample exists.")
    POLICY = ("policy", "Policies", "An option has a value it does not take, or asks for something this template "
              "cannot do.")
    ROLLOUT = ("rollout", "Rollouts", "A rollout record (sampled ids and logprobs) does not line up with the "
               "training tokens (`swift_ext.rollout`, `swift_ext.rollout_swift`). The error's `cause` names the "
               "likely reason: see [rollout.md](rollout.md#what-is-checked-and-the-causes-named).")
    ADAPTERS = ("adapters", "Framework adapters", "Checks of the LLaMA-Factory adapter (`swift_ext.llamafactory`).")
    CLI = ("cli", "Command line", "Errors of the `swift-ext` commands that are not about one conversation's "
           "encoding: the MODEL argument, and the audit's worker processes.")
    GENERAL = ("general", "General", "Defaults and the catch-all.")


class Rule(str, Enum):
    """Every rule id swift-ext raises: ``(id, group, meaning, raised_by)``; a member equals its id."""

    group: Group
    meaning: str
    raised_by: tuple[str, ...]

    def __new__(cls, value: str, group: Group, meaning: str, raised_by: tuple[str, ...]) -> Rule:
        member = str.__new__(cls, value)
        member._value_ = value
        member.group = group
        member.meaning = meaning
        member.raised_by = raised_by
        return member

    def __str__(self) -> str:
        return self.value

    # ------------------------------------------------------------------ input
    INPUT = ("input", Group.INPUT, "Default of `InputError`; every raise in the package names a more specific rule.",
             ("swift_ext.errors",))
    INPUT_NOT_A_LIST = ("input-not-a-list", Group.INPUT,
                        "`messages` (or the ms-swift `swift_ext_messages` column) is not a list of message dicts.",
                        ("swift_ext.messages", "swift_ext.ms_swift.conversion"))
    INPUT_EMPTY = ("input-empty", Group.INPUT, "The conversation has no messages: drop the row.",
                   ("swift_ext.messages",))
    INPUT_NOT_A_DICT = ("input-not-a-dict", Group.INPUT, "A message is not a dict (an object with a `role`).",
                        ("swift_ext.messages",))
    INPUT_MISSING_ROLE = ("input-missing-role", Group.INPUT,
                          "A message has no `role`: give it system, user, assistant or tool.", ("swift_ext.messages",))
    INPUT_UNKNOWN_ROLE = ("input-unknown-role", Group.INPUT,
                          "A role is not system/user/assistant/tool, nor an ms-swift or LLaMA-Factory role the "
                          "adapters map to one: rename it.",
                          ("swift_ext.llamafactory.template", "swift_ext.messages", "swift_ext.ms_swift.conversion"))
    INPUT_CONTENT_TYPE = ("input-content-type", Group.INPUT,
                          "`content` is not a string, null or a list of typed parts, or a text part has no string "
                          "`text`.", ("swift_ext.messages",))
    INPUT_REASONING_ROLE = ("input-reasoning-role", Group.INPUT,
                            "A non-assistant message carries reasoning; only assistant turns can: move or remove it.",
                            ("swift_ext.messages",))
    INPUT_REASONING_TYPE = ("input-reasoning-type", Group.INPUT,
                            "`reasoning_content` / `thinking` / `reasoning` is not a string.", ("swift_ext.messages",))
    INPUT_REASONING_TWICE = ("input-reasoning-twice", Group.INPUT,
                             "A turn has a reasoning field and `<think>` tags in its content: give the reasoning once.",
                             ("swift_ext.messages",))
    INPUT_REASONING_MARKUP = ("input-reasoning-markup", Group.INPUT,
                              "The content holds `<think>`/`</think>` other than one leading block, or the reasoning "
                              "holds them itself: write one leading block, or use `reasoning_content`.",
                              ("swift_ext.messages",))
    INPUT_ASSISTANT_MEDIA = ("input-assistant-media", Group.INPUT,
                             "An assistant turn holds image/audio/video parts, which a model does not generate: move "
                             "the media to a user or tool message.", ("swift_ext.messages",))
    INPUT_TOOL_CALLS_ROLE = ("input-tool-calls-role", Group.INPUT,
                             "A non-assistant message carries `tool_calls`; only assistant turns call tools.",
                             ("swift_ext.messages",))
    INPUT_TOOL_CALLS_TYPE = ("input-tool-calls-type", Group.INPUT, "`tool_calls` is not a list of dicts.",
                             ("swift_ext.messages",))
    INPUT_TOOL_CALL_NAME = ("input-tool-call-name", Group.INPUT,
                            "A tool call (or a call in a LLaMA-Factory function turn) has no function name.",
                            ("swift_ext.llamafactory.template", "swift_ext.messages"))
    INPUT_BAD_ARGUMENTS = ("input-bad-arguments", Group.INPUT,
                           "Tool-call arguments are not a strict-JSON object (malformed JSON, NaN/Infinity, nested "
                           "deeper than 64 levels), or a LLaMA-Factory function turn holds no tool-call JSON.",
                           ("swift_ext.llamafactory.template", "swift_ext.messages"))
    INPUT_BAD_LOSS = ("input-bad-loss", Group.INPUT, "`loss` is not true, false or null.", ("swift_ext.messages",))
    INPUT_BAD_VALUE = ("input-bad-value", Group.INPUT,
                       "An extra message key holds a structure that is not strict JSON or nests deeper than 64 "
                       "levels: fix or remove it.", ("swift_ext.messages",))
    INPUT_INVALID_TEXT = ("input-invalid-text", Group.INPUT,
                          "Text holds a lone surrogate (a broken JSON escape) that no tokenizer encodes: fix the "
                          "data's encoding.", ("swift_ext.messages",))
    INPUT_BAD_TOOLS = ("input-bad-tools", Group.INPUT,
                       "The tool schemas are not a list of objects each naming a function, are not strict JSON, or "
                       "(a dataset row's `tools`) are a string that is not JSON.",
                       ("swift_ext.diagnostics.rows", "swift_ext.messages"))
    INPUT_TOOLS = ("input-tools", Group.INPUT,
                   "LLaMA-Factory's `tools` column is not JSON, or not a list of tool schemas.",
                   ("swift_ext.llamafactory.template",))
    INPUT_NO_TURNS = ("input-no-turns", Group.INPUT, "The conversation has only system messages: drop the row.",
                      ("swift_ext.messages",))
    INPUT_ASSISTANT_FIRST = ("input-assistant-first", Group.INPUT,
                             "The first non-system message is an assistant turn, so it answers no prompt: start with "
                             "a user message.", ("swift_ext.messages",))
    INPUT_ORPHAN_TOOL_RESULT = ("input-orphan-tool-result", Group.INPUT,
                                "A tool message answers no pending tool call (more results than calls, or no call).",
                                ("swift_ext.messages",))
    INPUT_EMPTY_TURN = ("input-empty-turn", Group.INPUT,
                        "A trained assistant turn has no content, reasoning or tool calls: give it content (\"\" for "
                        "an empty answer) or mark it `loss: false`.", ("swift_ext.core",))
    INPUT_KWARGS_TYPE = ("input-kwargs-type", Group.INPUT,
                         "`chat_template_kwargs` is not a mapping: pass e.g. `{\"enable_thinking\": false}`.",
                         ("swift_ext.core",))
    INPUT_TOOL_CALL = ("input-tool-call", Group.INPUT,
                       "An ms-swift `tool_call` message is not JSON, or has no `name`.",
                       ("swift_ext.diagnostics.rows", "swift_ext.ms_swift.conversion"))
    INPUT_SIDE_CHANNEL = ("input-side-channel", Group.INPUT,
                          "The row's `swift_ext_messages` column does not match its messages (user turns differ): "
                          "the dataset was changed after loading; rebuild it.", ("swift_ext.ms_swift.conversion",))
    INPUT_MEDIA_COUNT = ("input-media-count", Group.INPUT,
                         "A multimodal row's `<image>` / `<video>` / `<audio>` tags (or media content parts) and the "
                         "items of its `images` / `videos` / `audios` column differ in number: put exactly one tag "
                         "where each item goes.", ("swift_ext.ms_swift.conversion",))
    INPUT_MEDIA_UNREADABLE = ("input-media-unreadable", Group.INPUT,
                              "A video of the row cannot be read (a missing or broken file, or no video reader: "
                              "qwen_vl_utils reads files with decord or torchcodec, `pip install decord`).",
                              ("swift_ext.ms_swift.video",))
    INPUT_NOT_AN_OBJECT = ("input-not-an-object", Group.INPUT, "A dataset row is not a JSON object.",
                           ("swift_ext.diagnostics.rows",))
    INPUT_MISSING_MESSAGES = ("input-missing-messages", Group.INPUT,
                              "A dataset row holds no conversation (messages empty or missing, no query/response); "
                              "ms-swift drops such a row without a word.", ("swift_ext.diagnostics.rows",))
    INPUT_BAD_MESSAGES = ("input-bad-messages", Group.INPUT,
                          "A row's messages are not a list of objects, are a string that is neither JSON nor a "
                          "Python literal, or hold a ShareGPT entry without user/assistant keys.",
                          ("swift_ext.diagnostics.rows",))
    INPUT_BAD_HISTORY = ("input-bad-history", Group.INPUT,
                         "A row's `history` is not a list of [query, response] pairs.", ("swift_ext.diagnostics.rows",))
    INPUT_BAD_JSON = ("input-bad-json", Group.INPUT, "A dataset line is not JSON.", ("swift_ext.diagnostics.rows",))
    INPUT_INVALID_UTF8 = ("input-invalid-utf8", Group.INPUT, "A dataset line is not UTF-8: re-encode the file.",
                          ("swift_ext.diagnostics.rows",))
    INPUT_TOO_DEEP = ("input-too-deep", Group.INPUT,
                      "A row nests deeper than Python's JSON reader (or the encoder's recursion) can follow.",
                      ("swift_ext.diagnostics.auditing", "swift_ext.diagnostics.rows"))

    # --------------------------------------------------------------- template
    TEMPLATE_RENDER = ("template-render", Group.TEMPLATE,
                       "The chat template raised (`raise_exception`) or failed while rendering; the message says "
                       "which render. Usually the row holds something the template refuses.", ("swift_ext.render",))
    TEMPLATE_SYNTAX = ("template-syntax", Group.TEMPLATE, "The chat template does not compile.", ("swift_ext.render",))
    TEMPLATE_TIMEOUT = ("template-timeout", Group.TEMPLATE,
                        "One render used more CPU time than `timeout` (60 s; `SWIFT_EXT_RENDER_TIMEOUT`): the "
                        "template never finishes on this row, or the row is far larger than real data. See "
                        "docs/sandbox.md.", ("swift_ext.sandbox.filters", "swift_ext.sandbox.limits"))
    TEMPLATE_OUTPUT_TOO_LARGE = ("template-output-too-large", Group.TEMPLATE,
                                 "One render printed or built more than `max_chars` characters (16 M; "
                                 "`SWIFT_EXT_RENDER_MAX_CHARS`), e.g. `'x' * n` with a huge n. See docs/sandbox.md.",
                                 ("swift_ext.sandbox.limits", "swift_ext.sandbox.operators", "swift_ext.sandbox.sizes"))
    TEMPLATE_MEMORY = ("template-memory", Group.TEMPLATE,
                       "The process grew by more than `max_memory_mb` (2048; `SWIFT_EXT_RENDER_MAX_MEMORY_MB`) while "
                       "one render ran. See docs/sandbox.md.", ("swift_ext.sandbox.limits",))
    TEMPLATE_SANDBOX = ("template-sandbox", Group.TEMPLATE,
                        "The template reached outside the sandbox (an attribute starting with `_`, a method that "
                        "mutates its input, Python internals): its samples cannot be trusted.", ("swift_ext.render",))
    TEMPLATE_MISSING = ("template-missing", Group.TEMPLATE,
                        "The tokenizer has no chat template: pass `chat_template=...`.", ("swift_ext.render",))
    TEMPLATE_DROPS_TOOL_CALLS = ("template-drops-tool-calls", Group.TEMPLATE,
                                 "The template does not render a turn's tool call inside its completion (gpt-oss "
                                 "renders one call per message: split the turn; Kimi-K2 renders call ids).",
                                 ("swift_ext.core", "swift_ext.invariants"))
    GENERATION_PROMPT_NOT_SUFFIX = ("generation-prompt-not-suffix", Group.TEMPLATE,
                                    "The generation prompt of `messages[:i]` does not start with the rendering of "
                                    "`messages[:i]`, so the turn has no place after it; the message shows the first "
                                    "difference.", ("swift_ext.core",))
    FAMILY_PREFIX_MISMATCH = ("family-prefix-mismatch", Group.TEMPLATE,
                              "The family's description states a prefix property of its template (`[prefix]`, "
                              "the fast path of long conversations) that this conversation breaks: encoding it per "
                              "turn gives other samples (checked on a sample of conversations, and wherever the "
                              "fast path raises). Report it; meanwhile the generic family `hf` (`--family hf` on the "
                              "command line) encodes every turn on its own.",
                              ("swift_ext.core",))
    TURN_NOT_LOCATED = ("turn-not-located", Group.TEMPLATE,
                        "The template rewrote history and the turn's text cannot be found in its rendering.",
                        ("swift_ext.core",))
    TEMPLATE_MEDIA_PLACEHOLDERS = ("template-media-placeholders", Group.TEMPLATE,
                                   "A sample of a multimodal row holds a different number of image / video "
                                   "placeholder tokens than its messages hold media (the template dropped or "
                                   "repeated media, or `--max_length` cut through it), or the template writes an "
                                   "item otherwise than its family's `[media]` says: no list of items matches its "
                                   "tokens.", ("swift_ext.ms_swift.vision",))
    TEMPLATE_MEDIA_UNSUPPORTED = ("template-media-unsupported", Group.TEMPLATE,
                                  "A row holds a media kind its family's `[media]` (templates/*.toml) does not list "
                                  "(Gemma-4 video, any audio), or a video whose model has a video processor of "
                                  "unknown sizing: the parity templates place only what tests/multimodal proves "
                                  "against the model's processor. Train such rows with ms-swift's own template, or "
                                  "leave them out.", ("swift_ext.ms_swift.vision", "swift_ext.ms_swift.video"))
    UNKNOWN_FAMILY = ("unknown-family", Group.TEMPLATE,
                      "No family has the name given, or `strict=True` and no family recognises the template: name a "
                      "family (`swift-ext families`) or drop `strict`.", ("swift_ext.families",))
    NO_STOP_STRINGS = ("no-stop-strings", Group.TEMPLATE,
                       "The template matches no family and the tokenizer has no eos token: pass "
                       "`stop_strings=[...]`.", ("swift_ext.core",))
    NO_CHAT_TEMPLATE = ("no-chat-template", Group.TEMPLATE,
                        "An ms-swift parity template got a tokenizer without a chat template, so there is no "
                        "inference rendering to match.", ("swift_ext.ms_swift.family",))

    # -------------------------------------------------------------- reasoning
    REASONING_DROPPED = ("reasoning-dropped", Group.REASONING,
                         "A turn's reasoning is not rendered by the template and the family gives no format for it "
                         "(or no place after this prompt): pass `reasoning_policy='drop'` to train without it.",
                         ("swift_ext.core",))
    REASONING_THINKING_OFF = ("reasoning-thinking-off", Group.REASONING,
                              "A turn carries reasoning while thinking is off for this render: turn thinking on, "
                              "remove the reasoning, or pass `reasoning_policy='drop'`.", ("swift_ext.core",))
    REASONING_BLOCK_OPEN = ("reasoning-block-open", Group.REASONING,
                            "The generation prompt leaves a reasoning block open that the turn never closes, and the "
                            "family gives no format to close it: give the turn its reasoning, or describe the family.",
                            ("swift_ext.core",))

    # ------------------------------------------------------------- invariants
    I1_INFERENCE_PREFIX = ("I1-inference-prefix", Group.INVARIANTS,
                           "*verify*: the tokens before a turn's labels are not its tokenized generation prompt.",
                           ("swift_ext.verify",))
    I2_GENERATED_TOKENS = ("I2-generated-tokens", Group.INVARIANTS,
                           "*verify*: a turn's labels are not the tokens of its completion.", ("swift_ext.verify",))
    I2_LABELS = ("I2-labels", Group.INVARIANTS, "*verify*: a label is not the input id at its position.",
                 ("swift_ext.verify",))
    I2_STOP = ("I2-stop", Group.INVARIANTS,
               "*verify*: a turn's completion does not end with a stop string, or holds one before its end.",
               ("swift_ext.invariants",))
    I2_NO_STOP_STRING = ("I2-no-stop-string", Group.INVARIANTS,
                         "The turn's rendering holds none of the stop strings: pass `stop_strings=[...]` with what "
                         "the model generates to end a turn.", ("swift_ext.core",))
    I2_CONTENT_NOT_RENDERED = ("I2-content-not-rendered", Group.INVARIANTS,
                               "The template does not render the turn's content, so training would teach the model "
                               "to say nothing.", ("swift_ext.invariants",))
    I2_REASONING_BLOCK = ("I2-reasoning-block", Group.INVARIANTS,
                          "*verify*: prompt + completion leave a reasoning block malformed (re-opened, closed when "
                          "not open, or the answer left inside an open block).", ("swift_ext.invariants",))
    I3_NOTHING_ELSE_LABELLED = ("I3-nothing-else-labelled", Group.INVARIANTS,
                                "*verify*: labelled positions are not exactly the turns' completions.",
                                ("swift_ext.verify",))
    I3_TURNS = ("I3-turns", Group.INVARIANTS,
                "*verify*: a sample claims a message that is not an assistant turn, or a turn twice.",
                ("swift_ext.verify",))
    I3_FOREIGN_TEXT = ("I3-foreign-text", Group.INVARIANTS,
                       "The text found for a turn holds another message's text (Gemma-4 renders a tool-call turn's "
                       "content after the tool results), so no completion is what the model generated.",
                       ("swift_ext.invariants",))
    I4_FEWEST_SAMPLES = ("I4-fewest-samples", Group.INVARIANTS,
                         "*verify*: a sample starts although the turn's prompt extends the previous sample.",
                         ("swift_ext.verify",))
    I5_ZERO_LABEL = ("I5-zero-label", Group.INVARIANTS,
                     "Nothing would be trained: every assistant turn has `loss: false`, or (*verify*) there are no "
                     "samples or a sample has no label.", ("swift_ext.core", "swift_ext.verify"))
    I5_ALL_LABEL = ("I5-all-label", Group.INVARIANTS,
                    "A turn's generation prompt is empty, or (*verify*) a sample labels every token.",
                    ("swift_ext.core", "swift_ext.verify"))
    I5_EMPTY_COMPLETION = ("I5-empty-completion", Group.INVARIANTS, "A turn's completion tokenizes to nothing.",
                           ("swift_ext.core",))
    I5_NO_ASSISTANT_TURN = ("I5-no-assistant-turn", Group.INVARIANTS,
                            "The conversation has no assistant turn to train: drop the row.", ("swift_ext.messages",))
    SHAPE = ("shape", Group.INVARIANTS,
             "*verify*: a sample's `input_ids` and `labels` differ in length (a sample built or edited elsewhere).",
             ("swift_ext.verify",))
    VERIFY = ("verify", Group.INVARIANTS,
              "Default of `VerificationError`; every raise in the package names a more specific rule.",
              ("swift_ext.errors",))

    # ----------------------------------------------------------------- policy
    POLICY = ("policy", Group.POLICY,
              "Default of `PolicyError`; every raise in the package names a more specific rule.",
              ("swift_ext.errors",))
    POLICY_KEEP_HISTORY = ("policy-keep-history", Group.POLICY,
                           "`history_reasoning='keep'` on a family whose template has no switch that keeps past "
                           "reasoning: use `'template'`, or a model with one (Qwen3.6, GLM-4.7).", ("swift_ext.core",))
    POLICY_TOKEN_CACHE = ("policy-token-cache", Group.POLICY,
                          "`SWIFT_EXT_TOKEN_CACHE_MB` is not a positive number of megabytes (the piece cache's "
                          "bound per encoder, default 256).", ("swift_ext.tokens",))
    POLICY_SPAN_WEIGHTS = ("policy-span-weights", Group.POLICY,
                           "Span weights (`$SWIFT_EXT_SPAN_WEIGHTS`, LLaMA-Factory's `swift_ext.span_weights`, "
                           "`inspect --span-weights`) are not a JSON object of part kind to a number >= 0, or "
                           "name a kind that does not exist.", ("swift_ext.weights",))
    POLICY_LOSS_SCALE = ("policy-loss-scale", Group.POLICY,
                         "`--loss_scale` names a strategy ms-swift does not know, a strategy's split does not add up "
                         "to the completion it was given, or the tokenizer gives no character offsets to weigh "
                         "tokens by.", ("swift_ext.ms_swift.loss_scale", "swift_ext.weights"))
    POLICY_REASONING_POLICY = ("policy-reasoning_policy", Group.POLICY,
                               "`reasoning_policy` is not `'error'` or `'drop'`.", ("swift_ext.options",))
    POLICY_HISTORY_REASONING = ("policy-history_reasoning", Group.POLICY,
                                "`history_reasoning` is not `'template'` or `'keep'`.", ("swift_ext.options",))
    POLICY_TRAIN_TURNS = ("policy-train_turns", Group.POLICY, "`train_turns` is not `'all'` or `'last'`.",
                          ("swift_ext.options",))
    POLICY_ARGUMENTS_POLICY = ("policy-arguments_policy", Group.POLICY,
                               "`arguments_policy` is not `'parse'` or `'verbatim'`.", ("swift_ext.options",))

    # ---------------------------------------------------------------- rollout
    ROLLOUT_ALIGNMENT = ("rollout-alignment", Group.ROLLOUT,
                         "Default of `RolloutAlignmentError`; every raise names a more specific rule.",
                         ("swift_ext.rollout.diagnose",))
    ROLLOUT_INPUT = ("rollout-input", Group.ROLLOUT,
                     "The rollout record (or ms-swift token-id content) is malformed: no messages, ids that are not "
                     "ints, logprobs that cannot be read, ids on a non-assistant message, `loss_scale` of another "
                     "length.", ("swift_ext.ms_swift.grpo", "swift_ext.rollout.record"))
    ROLLOUT_NO_GENERATED_TURN = ("rollout-no-generated-turn", Group.ROLLOUT,
                                 "No message of the record carries `token_ids`: nothing was sampled to train on.",
                                 ("swift_ext.rollout.record",))
    ROLLOUT_POLICY = ("rollout-policy", Group.ROLLOUT,
                      "`history_reasoning` is not `keep`, `strip` or `auto` (`engine_prompts` needs `keep` or "
                      "`strip`).", ("swift_ext.rollout.build", "swift_ext.rollout.prompts"))
    ROLLOUT_POLICY_AMBIGUOUS = ("rollout-policy-ambiguous", Group.ROLLOUT,
                                "The history policy cannot be told from the record: pass `history_reasoning='keep'` "
                                "or `'strip'`.", ("swift_ext.rollout.build",))
    ROLLOUT_LOGPROB_COUNT = ("rollout-logprob-count", Group.ROLLOUT,
                             "A turn has not as many logprobs as ids (or trained tokens): store ids and logprobs "
                             "exactly as the engine returned them.",
                             ("swift_ext.ms_swift.grpo", "swift_ext.rollout.build"))
    ROLLOUT_LOGPROB_IDS = ("rollout-logprob-ids", Group.ROLLOUT,
                           "The logprob entries carry ids that are not the turn's `token_ids`.",
                           ("swift_ext.rollout.build",))
    ROLLOUT_LOGPROBS_MISSING = ("rollout-logprobs-missing", Group.ROLLOUT,
                                "Some generated turns have logprobs and others not: give every trained turn its "
                                "logprobs, or none.", ("swift_ext.rollout.build",))
    ROLLOUT_TURN_TEXT = ("rollout-turn-text", Group.ROLLOUT,
                         "The sampled ids are not the turn's text in the record (`check_text=False` relies on the "
                         "ids alone).", ("swift_ext.rollout.build",))
    ROLLOUT_ENGINE_PROMPT = ("rollout-engine-prompt", Group.ROLLOUT,
                             "The prompt the engine reports (`prompt_token_ids` / `prompt_tokens`) is not the one "
                             "rebuilt under the history policy: pass the engine's template, kwargs and policy.",
                             ("swift_ext.rollout.build",))
    ROLLOUT_SINGLE_SEQUENCE = ("rollout-single-sequence", Group.ROLLOUT,
                               "With `single_sequence=True`, a turn's engine prompt does not extend the trajectory "
                               "built so far.", ("swift_ext.rollout.build",))
    ROLLOUT_TURN_END = ("rollout-turn-end", Group.ROLLOUT,
                        "The template does not render a generated turn in the history, or shows no stop string or "
                        "special token where it ends.", ("swift_ext.rollout.prompts",))
    ROLLOUT_TURN_COUNT = ("rollout-turn-count", Group.ROLLOUT,
                          "`verify_rollout`: the samples' labelled runs are not one per trained generated turn.",
                          ("swift_ext.rollout.build",))
    ROLLOUT_TURN_TOKENS = ("rollout-turn-tokens", Group.ROLLOUT,
                           "`verify_rollout`: a labelled run is not the turn's sampled ids.",
                           ("swift_ext.rollout.build",))
    ROLLOUT_PREFIX = ("rollout-prefix", Group.ROLLOUT,
                      "`verify_rollout`: the tokens before a turn are not the engine's prompt for it.",
                      ("swift_ext.rollout.build",))
    ROLLOUT_LOGPROBS = ("rollout-logprobs", Group.ROLLOUT,
                        "`verify_rollout`: a sample's logprobs are not the rollout's, or not one per labelled "
                        "position.", ("swift_ext.rollout.build",))
    ROLLOUT_IS_DISABLED = ("rollout-is-disabled", Group.ROLLOUT,
                           "ms-swift GRPO would silently turn off importance-sampling correction (logprobs do not "
                           "match the completion tokens one for one); `SWIFT_EXT_LOGPROB_GUARD=warn` or `off` allows "
                           "it.",
                           ("swift_ext.ms_swift.logprob_guard",))

    # --------------------------------------------------------------- adapters
    LF_CUTOFF_LEN = ("lf-cutoff-len", Group.ADAPTERS,
                     "A sample is longer than `cutoff_len` and `swift_ext.truncation` is `error`: raise `cutoff_len`, "
                     "or use `turns` or `drop`.", ("swift_ext.llamafactory.processor",))
    LF_SEVERAL_SAMPLES = ("lf-several-samples", Group.ADAPTERS,
                          "LLaMA-Factory's stock processor got a conversation that needs several samples: call "
                          "`swift_ext.llamafactory.register()` first (`swift-ext lf train` does).",
                          ("swift_ext.llamafactory.template",))
    LF_LABEL_SHIFT = ("lf-label-shift", Group.ADAPTERS,
                      "A sample's label differs from its input id, so it is no (prompt, response) sample (internal "
                      "check: please report it).", ("swift_ext.llamafactory.template",))
    LF_PAIRS = ("lf-pairs", Group.ADAPTERS,
                "The (prompt, response) pairs do not rebuild the sample (internal check: please report it).",
                ("swift_ext.llamafactory.processor",))

    # -------------------------------------------------------------------- cli
    SOURCE = ("source", Group.CLI, "Default of `SourceError`; every raise names a more specific rule.",
              ("swift_ext.diagnostics.source",))
    SOURCE_NOT_FOUND = ("source-not-found", Group.CLI,
                        "MODEL is not a folder, a readable `.jinja` file, a reachable Hub id or a known "
                        "`fixture:NAME`; the message says how to get one.", ("swift_ext.diagnostics.source",))
    SOURCE_TOKENIZER = ("source-tokenizer", Group.CLI, "transformers cannot load the tokenizer in the MODEL folder.",
                        ("swift_ext.diagnostics.source",))
    AUDIT_WORKER_DIED = ("audit-worker-died", Group.CLI,
                         "The worker encoding this row died, and died again with the row alone (killed, out of "
                         "memory, a native crash): the row was not encoded.", ("swift_ext.diagnostics.auditing",))
    AUDIT_WORKER_ERROR = ("audit-worker-error", Group.CLI,
                          "The row's result could not come back from its worker process (please report it).",
                          ("swift_ext.diagnostics.auditing",))

    # ---------------------------------------------------------------- general
    PARITY = ("parity", Group.GENERAL,
              "Default of `ParityError`, the base class; every raise in the package names a more specific rule.",
              ("swift_ext.errors",))
    INTERNAL_ERROR = ("internal-error", Group.GENERAL,
                      "An exception no rule foresaw, while encoding or verifying one conversation: a bug or an "
                      "unforeseen input. The original is chained (`__cause__`); please report it with the row.",
                      ("swift_ext.errors",))


DYNAMIC_PREFIXES: dict[str, str] = {
    "crash-": "`crash-<ExceptionType>` (e.g. `crash-KeyError`): `doctor` or `audit` caught an exception that is not "
              "a `ParityError` while checking one case or row; the pass goes on. Please report it.",
}
"""Rule ids built at run time from a value no list can hold (an exception's type name), by prefix."""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """The text of ``docs/rules.md``."""
    lines = [
        "# Rule ids",
        "",
        "<!-- Generated by `python -m swift_ext.rules > docs/rules.md` from swift_ext/rules.py; do not edit. -->",
        "",
        "Every error swift-ext raises for a conversation (a `ParityError`), and every failed row of `swift-ext "
        "audit`, carries a `rule`: a stable id, printed first in its message (`[input-empty] the conversation is "
        "empty`), by which `audit` groups failed rows and code can branch (`exc.rule == Rule.I5_ZERO_LABEL`, "
        "`from swift_ext.rules import Rule`). Ids are never renamed. A rule is raised with the row "
        "(`conversation N`) and message (`message M`) it applies to, where known.",
        "",
        f"{len(Rule)} rules. *Raised by* names the modules that raise each one "
        "([architecture.md](architecture.md) says what each module does).",
    ]
    for group in Group:
        members = [rule for rule in Rule if rule.group is group]
        if not members:
            continue
        lines += ["", f"## {group.heading}", "", group.intro, "", "| rule | meaning | raised by |", "|---|---|---|"]
        for rule in members:
            modules = ", ".join(f"`{m}`" for m in rule.raised_by)
            lines.append(f"| `{rule.value}` | {_cell(rule.meaning)} | {modules} |")
    lines += ["", "## Built at run time", "", "| rule | meaning |", "|---|---|"]
    lines += [f"| `{prefix}...` | {_cell(meaning)} |" for prefix, meaning in DYNAMIC_PREFIXES.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    sys.stdout.write(markdown())


if __name__ == "__main__":
    main()
