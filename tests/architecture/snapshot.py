"""Snapshot of what swift-ext produces, to prove a refactoring changed no output (not a test; a tool).

    python tests/architecture/snapshot.py --out before.json            # before the change
    python tests/architecture/snapshot.py --compare before.json        # after: exit 1 on any difference

For every fixture and thinking mode it encodes ``--per-fixture`` seeded random conversations (user queries,
answers, reasoning, tool calls with dict or JSON-text arguments, tool results, ``loss: false``) and records a
digest of each result: the samples' ids, labels and turn spans, or the error's rule and message index. With
``--swift`` it also records the rows ms-swift's own ``Template.encode`` gives through the parity templates, and
with ``--lf`` the rows of LLaMA-Factory's parity templates (run that one in the LLaMA-Factory environment).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import swift_ext  # noqa: E402
from swift_ext.dev.fixtures import FIXTURE_TABLE, expected_family, load_tokenizer  # noqa: E402

WORDS = "alpha beta gamma delta Zürich 日本 22°C {json} <b> tab\tend".split(" ")
TOOLS = [{"type": "function", "function": {"name": name, "description": f"{name} tool",
                                            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
         for name in ("get_weather", "search_web")]


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))


def conversation(rng: random.Random) -> tuple[list[dict[str, Any]], list | None]:
    messages: list[dict[str, Any]] = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": _text(rng)})
    uses_tools = rng.random() < 0.5
    number = 0
    for _ in range(rng.randint(1, 3)):
        messages.append({"role": "user", "content": _text(rng)})
        for _ in range(rng.randint(0, 2) if uses_tools else 0):
            calls = []
            for _ in range(rng.randint(1, 2)):
                args: Any = {"q": _text(rng)}
                args = json.dumps(args, ensure_ascii=rng.random() < 0.5) if rng.random() < 0.5 else args
                calls.append({"id": f"functions.get_weather:{number}", "type": "function",
                              "function": {"name": rng.choice(("get_weather", "search_web")), "arguments": args}})
                number += 1
            turn = {"role": "assistant", "content": "", "tool_calls": calls}
            if rng.random() < 0.5:
                turn["reasoning_content"] = _text(rng)
            messages.append(turn)
            messages += [{"role": "tool", "tool_call_id": c["id"], "content": _text(rng)} for c in calls]
        answer: dict[str, Any] = {"role": "assistant", "content": _text(rng)}
        if rng.random() < 0.5:
            answer["reasoning_content"] = _text(rng)
        if rng.random() < 0.15:
            answer["loss"] = False
        messages.append(answer)
    return messages, TOOLS if uses_tools else None


def digest(samples: list) -> str:
    blob = json.dumps([[s.input_ids, s.labels, [[t.message_index, t.label_start, t.label_end, t.completion_text,
                                                   t.spliced, t.reasoning_formatted] for t in s.turns]]
                       for s in samples])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def core_snapshot(per_fixture: int) -> dict[str, str]:
    out = {}
    for name in FIXTURE_TABLE:
        tok = load_tokenizer(name)
        family = swift_ext.load_family(expected_family(name))
        modes = [{}] + ([{family.thinking_kwarg: not family.thinking_default}] if family.thinking_kwarg else [])
        for m, kwargs in enumerate(modes):
            rng = random.Random(f"{name}-{m}")
            for k in range(per_fixture):
                messages, tools = conversation(rng)
                key = f"{name}/{m}/{k}"
                for policy in ("error", "drop"):
                    try:
                        samples = swift_ext.encode(tok, messages, tools, kwargs, reasoning_policy=policy)
                        out[f"{key}/{policy}"] = digest(samples)
                    except swift_ext.ParityError as exc:
                        out[f"{key}/{policy}"] = f"error:{exc.rule}:{exc.message_index}"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", type=Path)
    parser.add_argument("--per-fixture", type=int, default=200)
    args = parser.parse_args()
    snapshot = core_snapshot(args.per_fixture)
    errors = sum(v.startswith("error:") for v in snapshot.values())
    print(f"{len(snapshot)} results ({errors} errors)")
    if args.out:
        args.out.write_text(json.dumps(snapshot, indent=0, sort_keys=True), encoding="utf-8")
    if args.compare:
        before = json.loads(args.compare.read_text(encoding="utf-8"))
        changed = sorted(k for k in before.keys() | snapshot.keys() if before.get(k) != snapshot.get(k))
        for key in changed[:20]:
            print(f"changed: {key}: {before.get(key)} -> {snapshot.get(key)}")
        print(f"{len(changed)} of {len(snapshot)} results differ")
        return 1 if changed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
