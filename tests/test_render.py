"""What a render leaves behind: nothing of its variables (``swift_ext.sandbox.compiler._BoundedTemplate``)."""

from __future__ import annotations

import gc
import weakref

import pytest
from conftest import tokenizer

from swift_ext.render import ChatRenderer


class Message(dict):
    """A message that can be watched with a weak reference."""


@pytest.mark.parametrize("name", ["gpt_oss", "qwen3_6"])
def test_a_render_keeps_nothing_of_its_variables_alive(name):
    """Without the garbage collector, the messages are freed once the caller drops them. Before, the render's
    jinja context kept them until the collector ran: the template's macros (gpt-oss's render_tool_namespace,
    Qwen3.6's render_content) and the context referenced each other, and encode renders a conversation several
    times."""
    renderer = ChatRenderer(tokenizer(name).chat_template)
    for memo in (False, True):
        messages = [Message(role="user", content="What is 2+2?"), Message(role="assistant", content="4.")]
        watched = weakref.ref(messages[0])
        gc.collect()
        gc.disable()
        try:
            if memo:
                with renderer.memo():
                    text = renderer.render(messages)
            else:
                text = renderer.render(messages)
            del messages
            assert watched() is None, "the render still holds its messages"
        finally:
            gc.enable()
        assert "What is 2+2?" in text and "4." in text
