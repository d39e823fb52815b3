"""What history rewriting costs in emitted tokens, and what each option that reduces it costs in supervision.

    python benchmarks/history_rewriting.py [--turns 200] [--families qwen3 qwen3_6 glm4_7] [--no-swift]

The conversation: ``--turns`` user queries, each answered with reasoning (``Q{i}`` / ``R{i}`` / ``A{i}``). Qwen3's
template drops the reasoning of every turn before the last user query, so each query's prompt is no extension of
the previous sample and every turn needs its own sample: the emitted tokens grow with the square of the turns while
one render of the conversation grows linearly. For each family, each option is encoded as a user runs it:

- ``template``: ``swift_ext.encode`` with the defaults (exact: every turn trained after its inference prompt);
- ``history_reasoning="keep"``: the template's own keep-history switch (Qwen3.6 ``preserve_thinking``, GLM-4.7
  ``clear_thinking=False``); a template without one (Qwen3-8B) raises, and the rule is printed;
- ``train_turns="last"``: only the last assistant turn is trained;
- ms-swift ``--loss_scale last_round`` (where ms-swift is installed): the ``<family>_parity`` template's
  ``Template.encode`` of the row, as ``swift sft`` calls it.

Printed per option: samples, emitted tokens, the factor over one render of the whole conversation (with the
template's own history), trained turns and tokens, and the encode time (process CPU, one call).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import swift_ext  # noqa: E402
from swift_ext.dev.fixtures import load_tokenizer  # noqa: E402

FIXTURES = {"qwen3": "qwen3", "qwen3_6": "qwen3_6", "glm4_7": "glm4_7"}
LABELS = {"qwen3": "Qwen3-8B", "qwen3_6": "Qwen3.6", "glm4_7": "GLM-4.7"}


def conversation(turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for i in range(turns):
        messages += [{"role": "user", "content": f"Q{i}"},
                     {"role": "assistant", "content": f"A{i}", "reasoning_content": f"R{i}"}]
    return messages


def full_render_tokens(tok: Any, messages: list[dict[str, Any]]) -> int:
    """One render of the whole conversation with the template's own history, tokenized (what one sample of a
    prefix-stable template would hold)."""
    stats = swift_ext.EncodeStats()
    swift_ext.encode(tok, messages, train_turns="last", stats=stats)
    return stats.full_render_tokens


def run_core(tok: Any, messages: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    stats = swift_ext.EncodeStats()
    start = time.process_time()
    try:
        samples = swift_ext.encode(tok, messages, stats=stats, **options)
    except swift_ext.ParityError as exc:
        return {"error": exc.rule, "message": str(exc)}
    return {"samples": len(samples), "emitted": sum(len(s) for s in samples), "trained_turns": stats.trained_turns,
            "trained": sum(s.num_labels for s in samples), "seconds": time.process_time() - start}


def run_swift_last_round(family: str, messages: list[dict[str, Any]], workdir: Path) -> dict[str, Any]:
    """``--loss_scale last_round`` through ms-swift's ``Template.encode`` of the parity template."""
    from swift.model import get_model_processor
    from swift.template import get_template

    import swift_ext.ms_swift as ms
    from swift_ext.dev import tiny

    ms.register()
    folder = tiny.build_tokenizer_dir(FIXTURES[family], workdir / family, "qwen3")
    processor = get_model_processor(str(folder), load_model=False, model_type="qwen3")[1]
    template = get_template(processor, template_type=f"{family}_parity", loss_scale="last_round",
                            template_backend="jinja")
    template.set_mode("train")
    start = time.process_time()
    encoded = template.encode({"messages": [dict(m) for m in messages]})
    seconds = time.process_time() - start
    rows = encoded if isinstance(encoded, list) else [encoded]
    trained = sum(sum(label != -100 for label in row["labels"]) for row in rows)
    runs = sum(sum(1 for i, label in enumerate(row["labels"]) if label != -100 and (i == 0 or row["labels"][i - 1]
                                                                                      == -100)) for row in rows)
    return {"samples": len(rows), "emitted": sum(len(row["input_ids"]) for row in rows), "trained_turns": runs,
            "trained": trained, "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--families", nargs="+", default=list(FIXTURES), choices=list(FIXTURES))
    parser.add_argument("--no-swift", action="store_true", help="skip the ms-swift --loss_scale last_round column")
    args = parser.parse_args()
    messages = conversation(args.turns)
    print(f"{args.turns} user queries, each answered with reasoning ({len(messages)} messages)\n")
    print("| model | option | samples | emitted tokens | x one render | trained turns | trained tokens | encode s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            tok = load_tokenizer(FIXTURES[family])
            one = full_render_tokens(tok, messages)
            options = {"template (default)": {}, 'history_reasoning="keep"': {"history_reasoning": "keep"},
                       'train_turns="last"': {"train_turns": "last"}}
            results = {name: run_core(tok, messages, **kw) for name, kw in options.items()}
            if not args.no_swift:
                try:
                    results["ms-swift --loss_scale last_round"] = run_swift_last_round(family, messages, Path(tmp))
                except ImportError as exc:
                    print(f"(ms-swift not importable, no last_round column: {exc})", file=sys.stderr)
            for name, r in results.items():
                if "error" in r:
                    print(f"| {LABELS[family]} | {name} | error `{r['error']}`: no keep-history switch | | | | | |")
                    continue
                print(f"| {LABELS[family]} | {name} | {r['samples']:,} | {r['emitted']:,} | "
                      f"{r['emitted'] / one:,.1f}x | {r['trained_turns']:,} | {r['trained']:,} | {r['seconds']:.2f} |")
            print(f"| {LABELS[family]} | one render of the conversation | | {one:,} | 1.0x | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
