"""One conversation, prepared for one encoder: the recipe every part of swift-ext renders through.

    conversation = encoder.conversation(messages, tools, chat_template_kwargs, options)
    conversation.generation_prompt(i)   # render(messages[:i], add_generation_prompt=True): what a server feeds
    conversation.rendering(i)           # render(messages[:i + 1]): the template's own text with turn i last
    conversation.prompt_ids(i)          # the generation prompt's tokens

It holds the parsed messages (``Message``), the dicts the template sees (family field names, content and tool-call
arguments as a server hands them over), the validated tools and the template kwargs of the history policy, and
memoises every render and prompt tokenization: the core, ``verify``, both framework adapters, the diagnostics and
the rollout code ask it instead of repeating the parse / template_message / template_kwargs / render / tokenize
steps themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .messages import parse_messages, parse_tools
from .options import EncodeOptions
from .types import Message

if TYPE_CHECKING:
    from .core import Encoder


class Conversation:
    """Parsed messages, template dicts, tools and kwargs of one conversation, with memoised renders."""

    def __init__(self, encoder: Encoder, messages: list[Message], dicts: list[dict[str, Any]],
                 tools: list[dict[str, Any]] | None, kwargs: dict[str, Any], options: EncodeOptions) -> None:
        self.encoder = encoder
        self.messages = messages
        self.dicts = dicts
        self.tools = tools
        self.kwargs = kwargs
        self.options = options
        self._renders: dict[tuple[int, bool], str] = {}
        self._marked: dict[int, tuple[str, dict[int, int]]] = {}
        self._prompt_ids: dict[int, list[int]] = {}

    @classmethod
    def build(cls, encoder: Encoder, raw_messages: Sequence[Mapping[str, Any]], tools: Any = None,
              chat_template_kwargs: Mapping[str, Any] | None = None, options: EncodeOptions | None = None, *,
              require_assistant: bool = True, check_tool_order: bool = True) -> Conversation:
        """Validate and prepare a conversation. ``require_assistant=False``: an inference prompt (no turn to
        train yet); ``check_tool_order=False``: a rollout, whose turns known only by ids carry no ``tool_calls``."""
        options = options if options is not None else EncodeOptions()
        messages = parse_messages(raw_messages, require_assistant=require_assistant,
                                  check_tool_order=check_tool_order)
        tools = parse_tools(tools)
        kwargs = encoder.template_kwargs(chat_template_kwargs, options.history_reasoning)
        dicts = [encoder.template_message(m, arguments_policy=options.arguments_policy) for m in messages]
        return cls(encoder, messages, dicts, tools, kwargs, options)

    # ------------------------------------------------------------------ renders
    def render(self, upto: int, *, add_generation_prompt: bool) -> str:
        """The template's text for ``messages[:upto]`` (memoised)."""
        key = (upto, add_generation_prompt)
        text = self._renders.get(key)
        if text is None:
            text = self._renders[key] = self.encoder.render(self.dicts, self.tools, self.kwargs,
                                                            add_generation_prompt=add_generation_prompt, upto=upto)
        return text

    def render_marked(self, upto: int) -> tuple[str, dict[int, int]]:
        """``history(upto)``, and where each message's step of the template's message loop starts in it
        (``ChatRenderer.render_marked``; memoised)."""
        marked = self._marked.get(upto)
        if marked is None:
            marked = self._marked[upto] = self.encoder.render_marked(self.dicts, self.tools, self.kwargs, upto=upto)
            self._renders.setdefault((upto, False), marked[0])
        return marked

    def generation_prompt(self, i: int) -> str:
        """What an inference server feeds the model before turn ``i``."""
        return self.render(i, add_generation_prompt=True)

    def history(self, i: int) -> str:
        """The rendering of ``messages[:i]`` without a generation prompt."""
        return self.render(i, add_generation_prompt=False)

    def rendering(self, i: int) -> str:
        """The template's own rendering with turn ``i`` last."""
        return self.render(i + 1, add_generation_prompt=False)

    def full(self) -> str:
        """One render of the whole conversation (the floor's render)."""
        return self.render(len(self.dicts), add_generation_prompt=False)

    def prompt_ids(self, i: int) -> list[int]:
        """Tokens of the generation prompt of turn ``i`` (memoised)."""
        ids = self._prompt_ids.get(i)
        if ids is None:
            ids = self._prompt_ids[i] = self.encoder.tokens.encode(self.generation_prompt(i))
        return ids

    def inference_prompt(self) -> str:
        """What a server renders for the conversation as it stands: the generation prompt after a user or tool
        message, the conversation itself when it ends with an assistant turn (a continuation)."""
        ends_with_assistant = bool(self.dicts) and self.dicts[-1]["role"] == "assistant"
        return self.render(len(self.dicts), add_generation_prompt=not ends_with_assistant)

    # ---------------------------------------------------------------- variants
    def with_message(self, i: int, message: dict[str, Any]) -> Conversation:
        """The same conversation with the template dict of message ``i`` replaced (its own renders)."""
        dicts = list(self.dicts)
        dicts[i] = message
        return Conversation(self.encoder, self.messages, dicts, self.tools, self.kwargs, self.options)

    def with_kwargs(self, kwargs: Mapping[str, Any]) -> Conversation:
        """The same conversation rendered with other template kwargs (its own renders)."""
        return Conversation(self.encoder, self.messages, self.dicts, self.tools, dict(kwargs), self.options)

    def without_reasoning(self, i: int) -> Conversation:
        """Message ``i`` as the template sees it when its reasoning is dropped."""
        message = self.encoder.template_message(self.messages[i], drop_reasoning=True,
                                                arguments_policy=self.options.arguments_policy)
        return self.with_message(i, message)

    # ------------------------------------------------------------------- turns
    def trained_turns(self) -> list[int]:
        """Assistant turns to train under the options (``loss: false`` turns are context)."""
        return self.encoder.trained_turns(self.messages, self.options.train_turns)

    def last_assistant(self) -> int | None:
        return max((i for i, m in enumerate(self.messages) if m.role == "assistant"), default=None)


__all__ = ["Conversation"]
