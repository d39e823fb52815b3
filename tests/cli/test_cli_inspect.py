"""``swift-ext inspect``: terminal output and the HTML page, the latter checked in headless Chromium.

The browser test loads the page ``inspect --html`` writes, plus a small script that reads, from the rendered DOM,
every token's id and whether the browser actually paints it highlighted (computed background colour). Those must
equal ``input_ids`` and the labelled positions of ``swift_ext.encode`` run here. A screenshot is kept in
``artifacts/``. Chromium is required: without it the test fails and says how to install it.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import swift_ext
from swift_ext.diagnostics.inspection import build_view
from swift_ext.diagnostics.options import CommandOptions
from swift_ext.diagnostics.rows import read_row
from swift_ext.diagnostics.source import load_source

from .cli_helpers import ARTIFACTS, REPO_ROOT, example_conversation, load_tokenizer, write_jsonl

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
INSTALL_HINT = "install it with: apt-get update && apt-get install -y chromium   (Debian/Ubuntu, as root)"

CHECK_SCRIPT = """
<script>
(() => {
  const painted = el => { const bg = getComputedStyle(el).backgroundColor;
                          return bg !== 'rgba(0, 0, 0, 0)' && bg !== 'transparent'; };
  const read = div => { const toks = [...div.querySelectorAll('.tok')];
    return { ids: toks.map(t => Number(t.querySelector('sub').textContent)),
             highlighted: toks.map((t, k) => painted(t) ? k : -1).filter(k => k >= 0),
             visible: div.getBoundingClientRect().height > 0 }; };
  const samples = [...document.querySelectorAll('.tokens[data-sample]')].map(read);
  const pick = document.getElementById('turn'), pairs = {};
  for (const option of pick.options) {
    pick.value = option.value; pick.dispatchEvent(new Event('change'));
    const shown = [...document.querySelectorAll('.pairbox')].filter(b => !b.hidden);
    pairs[option.value] = { shown: shown.map(b => b.dataset.turn),
      training: read(shown[0].querySelector('[data-role=training]')),
      inference: read(shown[0].querySelector('[data-role=inference]')) };
  }
  const pre = document.createElement('pre'); pre.id = 'swift-ext-check';
  pre.textContent = JSON.stringify({ samples, pairs }); document.body.appendChild(pre);
})();
</script>
"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(f"headless Chromium is needed to check the inspect HTML page but was not found; {INSTALL_HINT}",
                    pytrace=False)
    return path


def run_chromium(page: Path, profile: Path, *extra: str) -> str:
    command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def browser_check(page: Path, tmp_path: Path) -> dict[str, Any]:
    """Open the page with the check script appended; return what the script read from the rendered DOM."""
    checked = tmp_path / "checked.html"
    checked.write_text(page.read_text(encoding="utf-8").replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    dom = run_chromium(checked, tmp_path / "profile-check", "--dump-dom")
    found = re.search(r'<pre id="swift-ext-check">(.*?)</pre>', dom, re.S)
    assert found, f"the check script did not run: {dom[-500:]}"
    return json.loads(html.unescape(found.group(1)))


def labelled(sample: swift_ext.Sample) -> list[int]:
    return [k for k, label in enumerate(sample.labels) if label != swift_ext.IGNORE_INDEX]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    conversation = example_conversation()
    rows = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
        {"messages": conversation["messages"], "tools": conversation["tools"]},
        "{not json",
    ]
    return write_jsonl(tmp_path / "data.jsonl", rows)


# ------------------------------------------------------------------ terminal
def test_inspect_terminal_matches_core(cli, dataset: Path) -> None:
    result = cli("inspect", "fixture:qwen3", dataset, "--row", "1")
    assert result.code == 0, result
    conversation = example_conversation()
    samples = swift_ext.encode(load_tokenizer("qwen3"), conversation["messages"], conversation["tools"])
    for n, sample in enumerate(samples):
        assert f"sample {n}: {len(sample)} tokens, {sample.num_labels} trained" in result.out
    assert "✓ identical" in result.out


def test_inspect_view_is_the_core_samples(dataset: Path) -> None:
    conversation = example_conversation()
    tokenizer = load_tokenizer("qwen3")
    samples = swift_ext.encode(tokenizer, conversation["messages"], conversation["tools"])
    view = build_view(load_source("fixture:qwen3"), read_row(dataset, 1), CommandOptions())
    assert [[t.id for t in s.tokens] for s in view.samples] == [s.input_ids for s in samples]
    assert [[t.position for t in s.tokens if t.trained] for s in view.samples] == [labelled(s) for s in samples]
    assert all(p.matches_sample for p in view.prompts)
    assert view.chosen_turn == samples[-1].turns[-1].message_index


def test_inspect_errors(cli, dataset: Path) -> None:
    bad = cli("inspect", "fixture:qwen3", dataset, "--row", "2")
    assert bad.code == 1 and "line 3" in bad.err and "input-bad-json" in bad.err
    assert cli("inspect", "fixture:qwen3", dataset, "--row", "9").code == 2
    not_trained = cli("inspect", "fixture:qwen3", dataset, "--row", "1", "--turn", "1")
    assert not_trained.code == 2 and "not a trained turn" in not_trained.err
    refused = cli("inspect", "fixture:llama3", dataset, "--row", "1")  # Llama renders no reasoning
    assert refused.code == 1 and "reasoning-dropped" in refused.err


# ------------------------------------------------------------------ loss weights
WEATHER = REPO_ROOT / "examples" / "weather.jsonl"
"""The README's loss-weights example."""


def _qwen3_6_weights(tokenizer, sample: swift_ext.Sample, reasoning: float, tool_call: float) -> list[float]:
    """Expected weights, from Qwen3.6's completion text alone: up to '</think>\n\n' is reasoning, the
    <tool_call>...</tool_call> block a tool call; a token gets the largest weight of its characters (its offsets
    from the tokenizer); prompt tokens 0."""
    expected = [0.0] * len(sample)
    for turn in sample.turns:
        text = turn.completion_text
        end = text.index("</think>\n\n") + len("</think>\n\n")
        chars = [reasoning] * end + [1.0] * (len(text) - end)
        call = re.search(r"<tool_call>.*</tool_call>", text, re.S)
        if call:
            chars[call.start():call.end()] = [tool_call] * (call.end() - call.start())
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        assert len(offsets) == turn.label_end - turn.label_start
        for k, (a, b) in zip(range(turn.label_start, turn.label_end), offsets):
            expected[k] = max(chars[a:b])
    return expected


def test_inspect_shows_span_weights_in_terminal_and_html(cli, tmp_path: Path) -> None:
    row = json.loads(WEATHER.read_text(encoding="utf-8"))
    page = tmp_path / "weights.html"
    result = cli("inspect", "fixture:qwen3_6", WEATHER, "--span-weights", '{"reasoning": 0.5, "tool_call": 2}',
                 "--html", page)
    assert result.code == 0, result
    tokenizer = load_tokenizer("qwen3_6")
    (sample,) = swift_ext.encode(tokenizer, row["messages"], row["tools"])
    expected = _qwen3_6_weights(tokenizer, sample, 0.5, 2.0)
    assert {0.5, 2.0, 1.0} <= set(expected)  # the example has every weight
    assert "loss weights" in result.out and f"total weight {sum(expected):g}" in result.out  # 65 in the README
    assert "×0.5" in result.out and "×2" in result.out
    div = re.search(r'<div class="tokens" data-sample="0".*?</div>', page.read_text(encoding="utf-8"), re.S).group(0)
    assert [float(w) for w in re.findall(r'data-weight="([^"]+)"', div)] == expected
    assert len(re.findall(r"<sup>×", div)) == sum(1 for w in expected if w not in (0.0, 1.0))
    # and the browser draws them: every weight mark of sample 0 has a size on the rendered page
    checked = tmp_path / "checked.html"
    script = ("<script>const s = [...document.querySelectorAll('.tokens[data-sample=\"0\"] .tok.weighted sup')];"
              "const p = document.createElement('pre'); p.id = 'drawn';"
              "p.textContent = JSON.stringify(s.map(e => [e.textContent, e.getBoundingClientRect().width > 0]));"
              "document.body.appendChild(p);</script>")
    checked.write_text(page.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    dom = run_chromium(checked, tmp_path / "profile-weights", "--dump-dom")
    drawn = json.loads(html.unescape(re.search(r'<pre id="drawn">(.*?)</pre>', dom, re.S).group(1)))
    assert drawn == [[f"×{w:g}", True] for w in expected if w not in (0.0, 1.0)]


def test_inspect_span_weights_errors(cli, dataset: Path) -> None:
    bad = cli("inspect", "fixture:qwen3", dataset, "--row", "1", "--span-weights", '{"thinking": 0}')
    assert bad.code == 2 and "unknown kinds ['thinking']" in bad.err and "--span-weights" in bad.err


# ------------------------------------------------------------------ browser
@pytest.mark.parametrize("name, kwargs", [("qwen3", {}), ("gemma4", {"enable_thinking": True})])
def test_inspect_html_in_chromium(cli, dataset: Path, tmp_path: Path, name: str, kwargs: dict) -> None:
    page = tmp_path / "inspect.html"
    result = cli("inspect", f"fixture:{name}", dataset, "--row", "1", "--html", page,
                 "--chat-template-kwargs", json.dumps(kwargs))
    assert result.code == 0, result
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text) and "@import" not in text  # self-contained
    conversation = example_conversation()
    samples = swift_ext.encode(load_tokenizer(name), conversation["messages"], conversation["tools"], kwargs)
    seen = browser_check(page, tmp_path)
    assert [s["ids"] for s in seen["samples"]] == [s.input_ids for s in samples]
    assert [s["highlighted"] for s in seen["samples"]] == [labelled(s) for s in samples]
    assert all(s["visible"] for s in seen["samples"])
    spans = {span.message_index: (sample, span) for sample in samples for span in sample.turns}
    assert sorted(seen["pairs"], key=int) == [str(i) for i in sorted(spans)]
    for turn, pair in seen["pairs"].items():
        sample, span = spans[int(turn)]
        assert pair["shown"] == [turn]
        assert pair["training"]["ids"] == pair["inference"]["ids"] == sample.input_ids[: span.label_end]
        expected = list(range(span.label_start, span.label_end))
        assert pair["training"]["highlighted"] == pair["inference"]["highlighted"] == expected
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"inspect-{name}.png"
    run_chromium(page, tmp_path / "profile-shot", "--window-size=1280,1600", "--hide-scrollbars",
                 f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000


# ------------------------------------------------------------------ media markers
def _image_row() -> dict[str, Any]:
    def user(text: str, url: str) -> dict[str, Any]:
        return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                            {"type": "text", "text": text}]}
    return {"messages": [user("What colour?", "a.png"), {"role": "assistant", "content": "Red."},
                         user("And this?", "b.png"), {"role": "assistant", "content": "Green."}]}


def test_inspect_marks_each_image_once_in_terminal_and_html(cli, tmp_path: Path) -> None:
    """One marker per image (the placeholder the model's processor expands), in every sample and prompt; no
    processor here (a fixture tokenizer), so the markers carry no token count."""
    data = write_jsonl(tmp_path / "images.jsonl", [_image_row()])
    page = tmp_path / "images.html"
    result = cli("inspect", "fixture:qwen3_6", data, "--html", page, "--no-ids")
    assert result.code == 0, result
    assert "<|image_pad|>" not in result.out
    assert result.out.count("[image 1]") >= 2 and "[image 2]" in result.out  # the two sample panels at least
    # sample 0 holds image 1, sample 1 images 1 and 2, and so do the inference prompts of their turns
    view = build_view(load_source("fixture:qwen3_6"), read_row(data, 0), CommandOptions())
    assert [[t.media for t in s.tokens if t.media] for s in view.samples] == [["image 1"], ["image 1", "image 2"]]
    assert [[t.media for t in p.prompt if t.media] for p in view.prompts] == [["image 1"], ["image 1", "image 2"]]
    text = page.read_text(encoding="utf-8")
    samples = re.findall(r'<div class="tokens" data-sample="\d+".*?</div>', text, re.S)
    assert [re.findall(r'data-media="([^"]+)"', div) for div in samples] == [["image 1"], ["image 1", "image 2"]]
    pad = load_tokenizer("qwen3_6").convert_tokens_to_ids("<|image_pad|>")
    assert all(f'data-id="{pad}"' in m for m in re.findall(r'<span class="tok[^"]* media"[^>]*>', text))
    # and the browser draws each marker as its text
    checked = tmp_path / "checked.html"
    script = ("<script>const s = [...document.querySelectorAll('.tokens[data-sample=\"1\"] .tok.media .txt')];"
              "const p = document.createElement('pre'); p.id = 'drawn';"
              "p.textContent = JSON.stringify(s.map(e => [e.textContent, e.getBoundingClientRect().width > 0]));"
              "document.body.appendChild(p);</script>")
    checked.write_text(text.replace("</body>", script + "</body>"), encoding="utf-8")
    dom = run_chromium(checked, tmp_path / "profile-media", "--dump-dom")
    drawn = json.loads(html.unescape(re.search(r'<pre id="drawn">(.*?)</pre>', dom, re.S).group(1)))
    assert drawn == [["[image 1]", True], ["[image 2]", True]]
