"""Encode cost of long agent trajectories against the floor, per number of tool rounds.

    python benchmarks/trajectory.py [--rounds 1 4 16 64 128 256] [--families qwen3_6 qwen3 glm4_7 gpt_oss]
                                    [--reps 3] [--plot docs/trajectory.svg]

A trajectory is one user task, then N rounds of reasoning + one ``shell`` tool call + a 20-line, ~1 KB tool
output, then a final answer: N + 1 trained turns. For each family and N it reports:

- the ratio of ``swift_ext.encode``'s time to the floor's, one ``apply_chat_template`` of the whole conversation
  plus one tokenization (``benchmarks/encode_speed.py``'s floor);
- encode's time per trained turn (milliseconds), whose growth with N is what makes a method quadratic;
- peak memory of one call of each, measured with ``tracemalloc`` in a separate, untimed call (the Python heap:
  strings, id lists, the encoder's piece cache; the Rust tokenizer's own buffers are not seen, for either).

Every call gets a conversation never seen before (fresh random text), because encode memoises the tokenization of
text pieces across conversations: a second pass over the same data runs ~2.7x faster and would flatter it. The
encoder itself is kept across calls, as when a dataset is encoded; untimed warm-up calls per family build it and
pass the first conversations its run-time structure check always encodes twice (afterwards one conversation in
``Encoder.PREFIX_CHECK_EVERY`` = 256 is; see README "Speed"). Method and floor alternate, call by call, and
each is timed in process CPU time, so load from other processes shifts both alike; the ratio is the sum of the
method's times over the sum of the floor's.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
import tracemalloc

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import swift_ext  # noqa: E402
from swift_ext.dev.fixtures import load_tokenizer  # noqa: E402

FAMILIES = {"qwen3_6": "Qwen3.6", "qwen3": "Qwen3-8B", "glm4_7": "GLM-4.7", "gpt_oss": "gpt-oss"}
TOOLS = [{
    "type": "function",
    "function": {
        "name": "shell", "description": "Run a shell command in the task's sandbox and return its output",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
    },
}]
WORDS = ("build test error file line module import value return config path output check result warning "
         "function class object list string number parse fail pass retry cache index update source").split()


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) + (str(rng.randint(0, 999)) if rng.random() < 0.2 else "") for _ in range(n))


def trajectory(rng: random.Random, rounds: int) -> list[dict]:
    """One task, ``rounds`` tool rounds (reasoning, a shell call, a 20-line ~1 KB output), a final answer."""
    messages = [{"role": "system", "content": "You are a coding agent. Use the shell tool to inspect and fix code."},
                {"role": "user", "content": "Fix the failing tests in the repository: " + _words(rng, 30)}]
    for _ in range(rounds):
        command = f"grep -rn {rng.choice(WORDS)}{rng.randint(0, 99)} src/ | head -20"
        messages.append({"role": "assistant", "content": "", "reasoning_content": _words(rng, 40),
                         "tool_calls": [{"type": "function", "function": {"name": "shell",
                                                                           "arguments": {"command": command}}}]})
        output = "\n".join(f"src/{rng.choice(WORDS)}.py:{rng.randint(1, 999)}: {_words(rng, 6)}" for _ in range(20))
        messages.append({"role": "tool", "content": output})
    messages.append({"role": "assistant", "content": "Done: " + _words(rng, 30), "reasoning_content": _words(rng, 20)})
    return messages


def floor(tok, messages, kwargs) -> int:
    text = tok.apply_chat_template(messages, tools=TOOLS, tokenize=False, **kwargs)
    return len(tok(text, add_special_tokens=False)["input_ids"])


def method(tok, messages, kwargs) -> int:
    return sum(len(s) for s in swift_ext.encode(tok, messages, tools=TOOLS, chat_template_kwargs=kwargs))


def timed(fn, *args) -> float:
    gc.collect()
    start = time.process_time()
    fn(*args)
    return time.process_time() - start


def peak(fn, *args) -> int:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fn(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measure(name: str, rounds: list[int], reps: int, seed: int) -> list[dict]:
    tok = load_tokenizer(name)
    family = swift_ext.get_encoder(tok).family
    kwargs = {family.thinking_kwarg: True} if family.thinking_kwarg else {}
    rng = random.Random(seed)
    # Not timed: builds the encoder and compiles transformers' template; the encoder's first conversations are the
    # ones its run-time structure check always encodes twice (then one in Encoder.PREFIX_CHECK_EVERY is).
    for _ in range(swift_ext.Encoder.PREFIX_CHECK_FIRST + 1):
        for fn in (method, floor):
            fn(tok, trajectory(rng, 4), kwargs)
    rows = []
    for n in rounds:
        times = {"method": 0.0, "floor": 0.0}
        for _ in range(reps):
            for label, fn in (("method", method), ("floor", floor)):
                times[label] += timed(fn, tok, trajectory(rng, n), kwargs)
        memory = {label: peak(fn, tok, trajectory(rng, n), kwargs) for label, fn in (("method", method),
                                                                                       ("floor", floor))}
        rows.append({"family": name, "rounds": n, "ratio": times["method"] / times["floor"],
                     "turn_ms": 1000 * times["method"] / reps / (n + 1), "floor_ms": 1000 * times["floor"] / reps,
                     "method_ms": 1000 * times["method"] / reps,
                     "memory_ratio": memory["method"] / memory["floor"], "method_mb": memory["method"] / 2**20,
                     "floor_mb": memory["floor"] / 2**20})
        print(f"  {name} {n:>4} rounds: {rows[-1]['ratio']:.2f}x floor, {rows[-1]['turn_ms']:.2f} ms/turn, "
              f"memory {rows[-1]['memory_ratio']:.2f}x", file=sys.stderr, flush=True)
    return rows


def plot(rows: list[dict], path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no plot written to {path}", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == name]
        axes[0].plot([r["rounds"] for r in mine], [r["ratio"] for r in mine], marker="o", label=FAMILIES[name])
        axes[1].plot([r["rounds"] for r in mine], [r["turn_ms"] for r in mine], marker="o", label=FAMILIES[name])
    axes[0].set(xscale="log", xlabel="tool rounds", ylabel="encode time / floor", title="time over the floor")
    axes[1].set(xscale="log", xlabel="tool rounds", ylabel="ms per trained turn", title="time per trained turn")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot written to {path}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, nargs="+", default=[1, 4, 16, 64, 128, 256])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--reps", type=int, default=3, help="calls of each method per length (fresh data each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", help="write the curve to this file (needs matplotlib, if installed)")
    args = parser.parse_args()
    rows = [row for name in args.families for row in measure(name, args.rounds, args.reps, args.seed)]
    print(f"{args.reps} fresh conversations per method and length, interleaved; process CPU time; "
          "memory: tracemalloc peak of one call")
    print("| family | rounds | floor ms | encode ms | time / floor | ms per trained turn | memory / floor |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {FAMILIES[r['family']]} | {r['rounds']} | {r['floor_ms']:.1f} | {r['method_ms']:.1f} | "
              f"{r['ratio']:.2f}x | {r['turn_ms']:.2f} | {r['memory_ratio']:.2f}x "
              f"({r['method_mb']:.1f} / {r['floor_mb']:.1f} MB) |")
    for name in dict.fromkeys(r["family"] for r in rows):
        mine = {r["rounds"]: r["turn_ms"] for r in rows if r["family"] == name}
        if 16 in mine and max(mine) > 16:
            print(f"{FAMILIES[name]}: time per trained turn at {max(mine)} rounds / at 16 rounds: "
                  f"{mine[max(mine)] / mine[16]:.2f}x")
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
