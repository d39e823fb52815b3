"""Hostile chat templates: each one is a clear ``ParityError`` with a rule id, fast, and without a memory blow-up.

Chat templates are downloaded code (issue 10: no silent wrong sample, no raw crash, no hang). Every case is
rendered the way a user meets it, ``swift_ext.encode(tok, messages, chat_template=HOSTILE)`` with the Qwen3
fixture tokenizer, under lowered render bounds (``render_limits(timeout=1, max_memory_mb=512)``), and must:

- raise a ``ParityError`` whose rule is the one named in the case (the bound that stops it, ``template-sandbox``
  for a reach into Python internals, ``template-render`` for what the template raises itself);
- finish within 5 s;
- not grow the process's resident memory by 1 GB or more (sampled every 2 ms while it runs).

Each hostile template ends with a plain chat loop, so a bomb that were ignored would render: that is the
"silent" outcome. The outcomes are tallied (tried / clear errors / raw exceptions / silent renders / hangs) and
the tally is printed in pytest's summary.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import oracle_render, tokenizer

import swift_ext
from swift_ext.render import ChatRenderer, compile_template, current_render_limits, render_limits

MESSAGES = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
]
CHAT = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WALL_LIMIT = 5.0
MEMORY_LIMIT = 1 << 30
TEST_LIMITS = {"timeout": 1.0, "max_memory_mb": 512}

TIMEOUT, TOO_LARGE, SANDBOX, RAISED, SYNTAX = (
    "template-timeout", "template-output-too-large", "template-sandbox", "template-render", "template-syntax",
)


@dataclass(frozen=True)
class Hostile:
    kind: str
    name: str
    template: str
    rule: str

    def __str__(self) -> str:
        return f"{self.kind}-{self.name}"


HOSTILE = [
    # reaching Python internals (the sandbox returns an undefined that prints as '' for some: refused here)
    Hostile("escape", "str-class-mro", "{{ ''.__class__.__mro__ }}", SANDBOX),
    Hostile("escape", "subclasses", "{{ ''.__class__.__mro__[1].__subclasses__() }}", SANDBOX),
    Hostile("escape", "cycler-globals", "{{ cycler.__init__.__globals__ }}", SANDBOX),
    Hostile("escape", "template-context", "{{ self._TemplateReference__context }}", SANDBOX),
    Hostile("escape", "lipsum-globals", "{{ lipsum.__globals__['os'] }}", SANDBOX),
    Hostile("escape", "namespace-init", "{{ namespace.__init__.__globals__ }}", SANDBOX),
    Hostile("escape", "format-field", "{{ '{0.__class__.__base__}'.format(1) }}", SANDBOX),
    Hostile("escape", "mutate-messages", "{{ messages.append({'role': 'system', 'content': 'x'}) }}", SANDBOX),
    Hostile("escape", "namespace-dunder", "{% set ns = namespace() %}{% set ns.__class__ = 1 %}", SANDBOX),
    Hostile("escape", "namespace-private", "{% set ns = namespace(_cache=1) %}", SANDBOX),
    Hostile("escape", "loop-internals", "{% for m in messages %}{{ loop.__class__ }}{% endfor %}", SANDBOX),
    # CPU bombs
    Hostile("cpu", "nested-ranges",
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", TIMEOUT),
    Hostile("cpu", "macro-fan-out",
            "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}", TIMEOUT),
    Hostile("cpu", "loop-over-joined-list",
            "{% for c in (range(100000)|join(','))|list %}{% for d in range(100000) %}{% endfor %}{% endfor %}",
            TIMEOUT),
    Hostile("cpu", "sum-in-loop", "{% for i in range(100000) %}{{ range(100000)|sum }}{% endfor %}", TIMEOUT),
    Hostile("cpu", "wordwrap-long-word", "{{ ('x' * 1000000)|wordwrap(1) }}", TIMEOUT),
    Hostile("cpu", "urlize-long-text", "{{ ('see http://a.b ' * 600000)|urlize }}", TIMEOUT),
    # memory bombs: building a huge value
    Hostile("memory", "string-times", "{{ 'x' * 10**10 }}", TOO_LARGE),
    Hostile("memory", "list-times", "{{ [1] * 10**9 }}", TOO_LARGE),
    Hostile("memory", "center", "{{ 'a'|center(10**10) }}", TOO_LARGE),
    Hostile("memory", "indent", "{{ 'a\nb'|indent(10**9) }}", TOO_LARGE),
    Hostile("memory", "format-filter-width", "{{ '%0999999999d'|format(1) }}", TOO_LARGE),
    Hostile("memory", "percent-width", "{{ '%.999999999f' % 1.5 }}", TOO_LARGE),
    Hostile("memory", "str-format-width", "{{ '{:>9999999999}'.format(1) }}", TOO_LARGE),
    Hostile("memory", "ljust-method", "{{ 'a'.ljust(10**10) }}", TOO_LARGE),
    Hostile("memory", "wordwrap-wrapstring", "{{ ('x ' * 1000)|wordwrap(1, wrapstring='y' * 1000000) }}", TOO_LARGE),
    Hostile("memory", "replace-empty", "{{ ('x' * 1000)|replace('', 'y' * 100000) }}", TOO_LARGE),
    Hostile("memory", "join-separator", "{{ range(100000)|join('x' * 1000) }}", TOO_LARGE),
    Hostile("memory", "batch-fill", "{{ [1]|batch(10**9, fill_with=0)|list }}", TOO_LARGE),
    Hostile("memory", "to-bytes", "{{ (1).to_bytes(10**10, 'big') }}", TOO_LARGE),
    Hostile("memory", "expandtabs", "{{ ('\t' * 100000).expandtabs(100000) }}", TOO_LARGE),
    Hostile("memory", "tojson-indent", "{{ messages|tojson(indent=10**9) }}", TOO_LARGE),
    Hostile("memory", "lipsum", "{{ lipsum(10**6) }}", TOO_LARGE),
    Hostile("memory", "double-with-plus",
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
            TOO_LARGE),
    Hostile("memory", "double-with-tilde",
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            TOO_LARGE),
    Hostile("memory", "double-a-list",
            "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
            TOO_LARGE),
    Hostile("memory", "shared-halves",  # [x, x] nested 64 times: tiny in memory, 2**64 x's as text
            "{% set ns = namespace(l='x') %}{% for i in range(64) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}"
            "{{ ns.l }}", TOO_LARGE),
    Hostile("memory", "map-default-repeats",  # one big string, referenced 100000 times, written out as JSON
            "{{ range(100000)|map(attribute='none', default='x' * 1000000)|list|tojson }}", TOO_LARGE),
    Hostile("memory", "fromkeys-repeats", "{{ {}.fromkeys(range(100000), 'x' * 1000000)|tojson }}", TOO_LARGE),
    Hostile("memory", "slice-count", "{{ [1]|slice(10**9)|list }}", TOO_LARGE),
    Hostile("memory", "print-in-a-loop",
            "{% set s = 'x' * 1000000 %}{% for i in range(100000) %}{{ s }}{% endfor %}", TOO_LARGE),
    Hostile("memory", "huge-power", "{{ 7 ** (10**9) }}", TOO_LARGE),  # jinja's ** is left-associative
    # recursion bombs
    Hostile("recursion", "recursive-macro", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", RAISED),
    Hostile("recursion", "recursive-loop", "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", RAISED),
    Hostile("recursion", "nested-lists",
            "{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}"
            "{{ ns.x }}", TOO_LARGE),
    Hostile("recursion", "nested-tuples-hashed",  # hashing a 10**6-deep tuple crashes CPython
            "{% set ns = namespace(t=()) %}{% for i in range(1000) %}{% for j in range(1000) %}"
            "{% set ns.t = (ns.t,) %}{% endfor %}{% endfor %}{{ ns.t in {} }}", TOO_LARGE),
    # compile-time bombs: jinja folds constants while compiling
    Hostile("compile", "constant-power", "{{ 10**(10**9) }}", TOO_LARGE),
    Hostile("compile", "constant-filter", "{{ 'a'|center(10**9) }}", TOO_LARGE),
    Hostile("compile", "constant-repeat", "{% set x = 'ab' * 10**9 %}{{ x }}", TOO_LARGE),
    Hostile("compile", "nested-parentheses", "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", SYNTAX),
    # templates raising
    Hostile("raises", "zero-division", "{{ 1 // 0 }}", RAISED),
    Hostile("raises", "float-overflow", "{{ 2.0 ** 100000 }}", RAISED),
    Hostile("raises", "range-overflow", "{{ range(10**20)|list }}", RAISED),
    Hostile("raises", "type-error", "{{ 'a' + 1 }}", RAISED),
    Hostile("raises", "undefined", "{{ nothing.at.all }}", RAISED),
    Hostile("raises", "include-without-loader", "{% include 'other.jinja' %}", RAISED),
    Hostile("raises", "raise-exception", "{{ raise_exception('refused') }}", RAISED),
]
assert len(HOSTILE) >= 20 and len({str(case) for case in HOSTILE}) == len(HOSTILE)

TALLY: Counter = Counter()


class _TallyReport:
    """Prints the tally at the end of the session (``pytest_terminal_summary``)."""

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if TALLY["tried"]:
            terminalreporter.write_line(
                f"hostile chat templates: {TALLY['tried']} tried, {TALLY['clear']} clear errors, "
                f"{TALLY['raw']} raw exceptions, {TALLY['silent']} silent renders, {TALLY['hang']} hangs"
            )


@pytest.fixture(scope="module", autouse=True)
def _report_tally(request: pytest.FixtureRequest):
    report = _TallyReport()
    request.config.pluginmanager.register(report, "swift_ext_hostile_tally")
    yield


def _rss() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak is all there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


class PeakGrowth:
    """The largest resident-memory growth seen while the block runs (sampled every 2 ms)."""

    def __enter__(self) -> PeakGrowth:
        self.start = _rss()
        self.peak = self.start
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


@pytest.fixture(scope="module")
def qwen3():
    return tokenizer("qwen3")


def _outcome(tok, template: str) -> tuple[str, BaseException | None, float, int]:
    """(clear | raw | silent | hang, exception, seconds, memory growth) of encoding MESSAGES with ``template``."""
    error: BaseException | None = None
    with render_limits(**TEST_LIMITS), PeakGrowth() as memory:
        start = time.monotonic()
        try:
            swift_ext.encode(tok, MESSAGES, chat_template=template)
        except Exception as exc:  # noqa: BLE001 (the point is to see what escapes)
            error = exc
        elapsed = time.monotonic() - start
    if elapsed >= WALL_LIMIT:
        kind = "hang"
    elif error is None:
        kind = "silent"
    elif isinstance(error, swift_ext.ParityError) and error.rule:
        kind = "clear"
    else:
        kind = "raw"
    return kind, error, elapsed, memory.growth


@pytest.mark.parametrize("case", HOSTILE, ids=str)
def test_hostile_template_is_a_clear_error(qwen3, case: Hostile) -> None:
    kind, error, elapsed, growth = _outcome(qwen3, case.template + CHAT)
    TALLY["tried"] += 1
    TALLY[kind] += 1
    assert kind == "clear", f"{case}: {kind} after {elapsed:.2f} s: {error!r}"
    assert error.rule == case.rule, f"{case}: {error}"
    assert elapsed < WALL_LIMIT
    assert growth < MEMORY_LIMIT, f"{case}: the process grew by {growth >> 20} MB"


# ------------------------------------------------------------------------------------------ the bounds' messages
def _encode_error(tok, template: str, **limits) -> swift_ext.TemplateRenderError:
    with render_limits(**limits), pytest.raises(swift_ext.TemplateRenderError) as info:
        swift_ext.encode(tok, MESSAGES, chat_template=template + CHAT, conversation_index=7)
    return info.value


def test_timeout_names_its_bound_and_how_to_raise_it(qwen3) -> None:
    error = _encode_error(qwen3, "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                          timeout=0.5)
    assert error.rule == TIMEOUT and error.conversation_index == 7
    assert "0.5 s" in str(error) and "SWIFT_EXT_RENDER_TIMEOUT" in str(error) and "set_render_limits" in str(error)


def test_output_too_large_names_its_bound_and_how_to_raise_it(qwen3) -> None:
    error = _encode_error(qwen3, "{% for i in range(1000) %}{{ 'x' * 100000 }}{% endfor %}", max_chars=1_000_000)
    assert error.rule == TOO_LARGE
    assert "max_chars=1,000,000" in str(error) and "SWIFT_EXT_RENDER_MAX_CHARS" in str(error)


def test_memory_bound_stops_a_template_that_keeps_what_it_builds(qwen3) -> None:
    """Each step is small and within max_chars; what grows is what the template keeps (a linked list of lists)."""
    hoard = ("{% set ns = namespace(keep=[]) %}{% for i in range(100000) %}"
             "{% set ns.keep = [ns.keep, range(100000)|list] %}{% endfor %}")
    with PeakGrowth() as memory:
        error = _encode_error(qwen3, hoard, max_chars=10**12, max_memory_mb=200, timeout=60)
    assert error.rule == "template-memory", error
    assert "max_memory_mb=200" in str(error) and "SWIFT_EXT_RENDER_MAX_MEMORY_MB" in str(error)
    assert memory.growth < MEMORY_LIMIT


def test_sandbox_error_names_the_attribute(qwen3) -> None:
    error = _encode_error(qwen3, "{{ cycler.__init__.__globals__ }}")
    assert error.rule == SANDBOX and "'__init__'" in str(error)


# --------------------------------------------------------------------------------------------- compile and render
def test_compiling_a_constant_bomb_is_immediate() -> None:
    """jinja folds constant expressions while compiling: '10**(10**9)' used to hang compile_template itself."""
    for template in ("{{ 10**(10**9) }}", "{{ 'a'|center(10**9) }}", "{{ 'ab' * 10**9 }}", "{{ '%0999999999d' % 1 }}"):
        start = time.monotonic()
        compile_template(template)
        assert time.monotonic() - start < 1.0, template


def test_a_legitimately_long_conversation_stays_within_the_default_bounds(qwen3) -> None:
    """A 2 MB agent conversation through the real Qwen3 template, with the default bounds: exact and encodable."""
    rng_words = [f"word{i} " for i in range(5000)]
    chunk = "".join(rng_words) * 6  # ~250 kB of text
    messages = [{"role": "system", "content": "You are a careful agent."}]
    for turn in range(4):
        messages += [{"role": "user", "content": f"Task {turn}: " + chunk},
                     {"role": "assistant", "content": f"Result {turn}: " + chunk}]
    assert sum(len(m["content"]) for m in messages) > 2_000_000
    limits = current_render_limits()
    assert (limits.timeout, limits.max_chars) == (60.0, 16_000_000)
    renderer = ChatRenderer(qwen3.chat_template)
    start = time.monotonic()
    text = renderer.render(messages)
    seconds = time.monotonic() - start
    assert text == oracle_render(qwen3, messages)
    assert seconds < 1.0, f"a 2 MB render took {seconds:.2f} s"
    samples = swift_ext.encode(qwen3, messages)
    assert len(samples) >= 1


def test_the_deadline_is_per_render_and_per_thread(qwen3) -> None:
    """A hostile render timing out in one thread does not touch a legitimate render running beside it."""
    results: dict[str, object] = {}
    bomb = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}" + CHAT

    def hostile() -> None:
        with render_limits(timeout=1.0):
            try:
                swift_ext.encode(qwen3, MESSAGES, chat_template=bomb)
            except swift_ext.ParityError as exc:
                results["hostile"] = exc.rule

    def legitimate() -> None:
        time.sleep(0.2)
        results["legitimate"] = [swift_ext.encode(qwen3, MESSAGES) for _ in range(20)]

    threads = [threading.Thread(target=hostile), threading.Thread(target=legitimate)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results.get("hostile") == TIMEOUT
    assert len(results.get("legitimate", [])) == 20


def test_bounds_come_from_the_environment(project_root: Path) -> None:
    code = ("from swift_ext.render import current_render_limits as c; l = c(); "
            "print(l.timeout, l.max_chars, l.max_memory_mb)")
    env = {**os.environ, "SWIFT_EXT_RENDER_TIMEOUT": "2.5", "SWIFT_EXT_RENDER_MAX_CHARS": "123456789",
           "SWIFT_EXT_RENDER_MAX_MEMORY_MB": "64", "PYTHONPATH": str(project_root)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2.5", "123456789", "64"]
    env["SWIFT_EXT_RENDER_TIMEOUT"] = "ten"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "SWIFT_EXT_RENDER_TIMEOUT='ten'" in bad.stderr
