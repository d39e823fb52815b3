"""``<family>_parity`` agent templates for ms-swift, built from the data in ``agent_templates/``.

ms-swift uses an agent template in three places: the ``swift`` backend renders tools, tool calls and tool
responses with it; ``swift infer``/``deploy`` parse tool calls out of a model response with ``get_toolcall``;
and ``Template._preprocess_tools`` normalises a row's tools with ``wrap_tool``. The parity agent templates
render each piece with the family's own Jinja fragments (compiled in swift-ext's sandboxed environment, which
mirrors the one ``apply_chat_template`` uses), so their output is byte-identical to the model's chat template,
and parse back exactly what they render.
"""

from __future__ import annotations

import json
import re
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from swift.agent_template import agent_template_map
from swift.agent_template.base import BaseAgentTemplate
from swift.infer_engine import Function

from ..families import parity_name
from ..render import compile_template

PARSERS = ("hermes", "xml", "glm", "deepseek_v3_1", "gpt_oss")


def agent_templates_dir() -> Path:
    packaged = resources.files("swift_ext") / "agent_templates"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "agent_templates"


@lru_cache(maxsize=1)
def load_specs() -> dict[str, dict[str, Any]]:
    """Every ``agent_templates/*.toml``, with ``extends`` resolved."""
    raw = {}
    for path in sorted(agent_templates_dir().glob("*.toml")):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        data.setdefault("family", path.stem)
        data["source"] = str(path)
        raw[data["family"]] = data

    def resolve(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
        if name in seen:
            raise ValueError(f"agent template {name!r}: 'extends' cycle {seen}")
        spec = dict(raw[name])
        base_name = spec.pop("extends", None)
        if base_name is None:
            return spec
        base = resolve(base_name, (*seen, name))
        render = {**base.get("render", {}), **spec.get("render", {})}
        merged = {**base, **spec}
        merged["render"] = render
        return merged

    specs = {name: resolve(name) for name in raw}
    for name, spec in specs.items():
        if "swift_agent_template" not in spec and spec.get("parser") not in PARSERS:
            raise ValueError(f"agent template {name!r}: parser must be one of {PARSERS}")
    return specs


def _compile(source: str):
    # The core's sandboxed environment: the same filters and globals apply_chat_template gives a template.
    return compile_template(source)


def _render(source: str, **kwargs: Any) -> str:
    return _compile(source).render(**kwargs)


def _loads(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None


def _schema_types(tools: Any) -> dict[str, dict[str, str]]:
    """{function name: {parameter: JSON-schema type}} for typing XML/GLM values on the way back."""
    out: dict[str, dict[str, str]] = {}
    if isinstance(tools, str):
        tools = _loads(tools)
    for tool in tools or []:
        tool = _loads(tool) if isinstance(tool, str) else tool
        if not isinstance(tool, dict):
            continue
        fn = tool.get("function", tool) if "function" in tool else tool
        params = fn.get("parameters") if isinstance(fn, dict) else None
        props = params.get("properties") if isinstance(params, dict) else None
        if isinstance(props, dict):
            out[fn.get("name")] = {k: (v or {}).get("type") for k, v in props.items() if isinstance(v, dict)}
    return out


def _typed_value(raw: str, declared: str | None) -> Any:
    if declared == "string":
        return raw
    value = _loads(raw)
    if value is None and raw.strip() != "null":
        return raw
    return value


class ParityAgentTemplate(BaseAgentTemplate):
    """Agent template driven by one ``agent_templates/<family>.toml``."""

    spec: dict[str, Any] = {}
    supports_tool_schema = True

    # -- rendering -------------------------------------------------------------------------------------
    def _format_tools(self, tools, system: str | None = None, user_message=None) -> str:
        tools = [self.wrap_tool(self._parse_json(t) if isinstance(t, str) else t) for t in tools]
        return _render(self.spec["render"]["tools"], tools=tools, system=system)

    @staticmethod
    def _call_from_message(content: Any) -> dict[str, Any]:
        obj = _loads(content) if isinstance(content, str) else content
        if not isinstance(obj, dict) or "name" not in obj:
            raise ValueError(f"tool_call message is not {{name, arguments}}: {content!r}")
        arguments = obj.get("arguments", obj.get("parameters", {}))
        return {"name": obj["name"], "arguments": {} if arguments is None else arguments}

    def render_tool_calls(self, tool_calls: list[dict[str, Any]]) -> str:
        calls = []
        for call in tool_calls:
            call = call.get("function", call)
            arguments = call.get("arguments", {})
            if self.spec["parser"] != "deepseek_v3_1" and isinstance(arguments, str):
                parsed = _loads(arguments)
                # Templates that iterate arguments (XML, GLM) or apply tojson need the mapping; hermes with
                # a string test keeps the text.
                wants_dict = self.spec["parser"] != "hermes" or self.spec.get("arguments") == "dict"
                if wants_dict and isinstance(parsed, dict):
                    arguments = parsed
            calls.append({"name": call["name"], "arguments": arguments})
        return _render(self.spec["render"]["tool_calls"], tool_calls=calls)

    def _format_tool_calls(self, tool_call_messages) -> str:
        return self.render_tool_calls([self._call_from_message(m["content"]) for m in tool_call_messages])

    def _add_tool_call_prefix(self, tool_content: str, pre_message=None) -> str:
        content = ""
        if pre_message is not None and pre_message.get("role") == "assistant":
            content = pre_message.get("content") or ""
            if isinstance(content, list):
                content = "".join(c for c in content if isinstance(c, str))
        return _render(self.spec["render"]["tool_call_prefix"], content=content) + tool_content

    def render_tool_responses(self, tool_messages, tool_calls: list[dict[str, Any]] | None = None) -> str:
        msgs = [{"content": m.get("content") or "", "name": m.get("name")} for m in tool_messages]
        return _render(self.spec["render"]["tool_responses"], tool_messages=msgs, tool_calls=tool_calls or [])

    def rendered_tool_calls(self, assistant_content: Any) -> list[dict[str, Any]]:
        """The calls in an assistant turn this template rendered, as ``{name, arguments}`` (arguments JSON text).

        Extension for templates whose tool outputs name the call they answer (gpt-oss addresses each output
        from ``functions.NAME``): the ``tool_responses`` fragment gets them as ``tool_calls``; ms-swift hands the
        agent template only the tool messages and the assistant turn's text.
        """
        if not isinstance(assistant_content, str):
            return []
        parser = getattr(self, f"_parse_{self.spec['parser']}")
        return [{"name": name, "arguments": arguments} for name, arguments in parser(assistant_content, {})]

    def _format_tool_responses(self, assistant_content, tool_messages):
        if isinstance(assistant_content, list):
            last, res = self._format_tool_responses(assistant_content[-1], tool_messages)
            return assistant_content[:-1] + [last], res
        calls = self.rendered_tool_calls(assistant_content)
        return assistant_content, [self.render_tool_responses(tool_messages, calls)]

    # -- parsing ---------------------------------------------------------------------------------------
    def get_toolcall(self, response: str, tools=None) -> list[Function]:
        parser = getattr(self, f"_parse_{self.spec['parser']}")
        calls = parser(response, _schema_types(tools))
        if not calls:
            return super().get_toolcall(response)  # ReAct compatibility, as ms-swift's own templates do
        return [Function(name=name, arguments=arguments) for name, arguments in calls]

    @staticmethod
    def _parse_hermes(response: str, schema) -> list[tuple[str, Any]]:
        out = []
        for body in re.findall(r"<tool_call>\s*(.*?)\s*</tool_call>", response, re.DOTALL):
            obj = _loads(body)
            if isinstance(obj, dict) and "name" in obj:
                out.append((obj["name"], obj.get("arguments", {})))
        return out

    @staticmethod
    def _parse_xml(response: str, schema) -> list[tuple[str, Any]]:
        out = []
        pattern = r"<tool_call>\s*<function=([^>\n]+)>\n?(.*?)</function>\s*</tool_call>"
        for name, body in re.findall(pattern, response, re.DOTALL):
            types = schema.get(name, {})
            args = {}
            for key, raw in re.findall(r"<parameter=([^>\n]+)>\n(.*?)\n</parameter>", body, re.DOTALL):
                args[key] = _typed_value(raw, types.get(key))
            out.append((name, args))
        return out

    @staticmethod
    def _parse_glm(response: str, schema) -> list[tuple[str, Any]]:
        out = []
        for body in re.findall(r"<tool_call>(.*?)</tool_call>", response, re.DOTALL):
            name, _, rest = body.partition("<arg_key>")
            name = name.strip()
            types = schema.get(name, {})
            args = {}
            pairs = re.findall(r"(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>\s*(?:<arg_key>|$)", rest, re.DOTALL)
            for key, raw in pairs:
                args[key.strip()] = _typed_value(raw, types.get(key.strip()))
            out.append((name, args))
        return out

    @staticmethod
    def _parse_deepseek_v3_1(response: str, schema) -> list[tuple[str, Any]]:
        pattern = r"<｜tool▁call▁begin｜>(.*?)<｜tool▁sep｜>(.*?)<｜tool▁call▁end｜>"
        return [(name, args) for name, args in re.findall(pattern, response, re.DOTALL)]

    @staticmethod
    def _parse_gpt_oss(response: str, schema) -> list[tuple[str, Any]]:
        # ` to=functions.NAME<|channel|>commentary json<|message|>` as the template renders it, or the recipient
        # inside the channel header with a constraint, as the model often writes it:
        # `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>`.
        pattern = (r"to=functions\.([^\s<]+)[^<]*(?:<\|channel\|>[^<]*)?(?:<\|constrain\|>[^<]*)?<\|message\|>"
                   r"(.*?)(?:<\|call\|>|<\|end\|>|$)")
        return [(name, args) for name, args in re.findall(pattern, response, re.DOTALL)]


def parity_agent_template_name(family: str) -> str:
    return parity_name(family)


def make_agent_template_class(family: str) -> type | None:
    spec = load_specs().get(family)
    if spec is None:
        return None
    delegate = spec.get("swift_agent_template")
    if delegate is not None:
        base = agent_template_map.get(delegate)
        if base is None:
            return None
        return type(f"{family.title().replace('_', '')}ParityAgentTemplate", (base,), {"parity_spec": spec})
    return type(f"{family.title().replace('_', '')}ParityAgentTemplate", (ParityAgentTemplate,), {"spec": spec})


def register_agent_templates() -> list[str]:
    """Add ``<family>_parity`` to ms-swift's ``agent_template_map`` for every file in ``agent_templates/``."""
    names = []
    for family in load_specs():
        cls = make_agent_template_class(family)
        if cls is None:
            continue
        name = parity_agent_template_name(family)
        agent_template_map[name] = cls
        names.append(name)
    return names
