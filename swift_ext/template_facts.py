"""Facts read from a chat template's syntax tree, the way serving engines read them.

vLLM's chat endpoint (``_detect_content_format`` in ``vllm/entrypoints/chat_utils.py``) decides per template how
message content reaches it: a template that loops over a message's ``content`` gets OpenAI content parts as a list
(the "openai" format); any other template gets the text parts joined by a newline (the "string" format). The same
decision here keeps training renders identical to what the server renders.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import jinja2
import jinja2.ext
import jinja2.nodes

from .render import _GenerationTag


def _parse(template: str) -> jinja2.nodes.Template | None:
    env = jinja2.Environment(extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    try:
        return env.parse(template)
    except jinja2.TemplateSyntaxError:
        return None


def _reads(node: jinja2.nodes.Node, name: str, key: str | None = None) -> bool:
    """``node`` reads variable ``name`` (or its item / attribute ``key``), through filters, tests and slices."""
    if isinstance(node, (jinja2.nodes.Filter, jinja2.nodes.Test)):
        return node.node is not None and _reads(node.node, name, key)
    if isinstance(node, jinja2.nodes.Getitem) and isinstance(node.arg, jinja2.nodes.Slice):
        return _reads(node.node, name, key)
    if key is None:
        return isinstance(node, jinja2.nodes.Name) and node.ctx == "load" and node.name == name
    if isinstance(node, jinja2.nodes.Getitem):
        return _reads(node.node, name) and isinstance(node.arg, jinja2.nodes.Const) and node.arg.value == key
    if isinstance(node, jinja2.nodes.Getattr):
        return _reads(node.node, name) and node.attr == key
    return False


def _aliases(root: jinja2.nodes.Template, name: str) -> list[str]:
    """``name`` and every variable assigned from it (``{% set msgs = messages[1:] %}``), transitively."""
    names, queue = [name], [name]
    while queue:
        current = queue.pop()
        for assign in root.find_all(jinja2.nodes.Assign):
            target = assign.target
            if isinstance(target, jinja2.nodes.Name) and target.name not in names and _reads(assign.node, current):
                names.append(target.name)
                queue.append(target.name)
    return names


def _loop_targets(root: jinja2.nodes.Template, names: list[str], key: str | None = None) -> Iterator[str]:
    for loop in root.find_all(jinja2.nodes.For):
        if isinstance(loop.target, jinja2.nodes.Name) and any(_reads(loop.iter, n, key) for n in names):
            yield loop.target.name


@lru_cache(maxsize=64)
def reads_content_parts(template: str) -> bool:
    """True when the template loops over a message's ``content`` (it renders OpenAI content parts itself)."""
    root = _parse(template)
    if root is None:
        return False
    message_names = list(_loop_targets(root, _aliases(root, "messages")))
    return next(_loop_targets(root, message_names, "content"), None) is not None
