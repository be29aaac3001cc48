"""The web UI end to end: the real `nanochat-py serve` (a small random model) driven by a real Chromium.

Skipped when Chromium (/usr/bin/chromium) or Playwright's Python package is missing. Replies are nonsense
text from random weights; temperature 0 makes them repeatable.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "tests" / "fixtures" / "parity" / "g_92d63d4" / "model"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
# Short, greedy replies: set before the page's own script runs, unless a test already changed them.
SETTINGS = {"temperature": 0, "top_k": 50, "max_tokens": 24, "seed": "", "system": "", "api_key": ""}
INIT_SETTINGS = (
    "if (!localStorage.getItem('nanochat.settings'))"
    f" localStorage.setItem('nanochat.settings', {json.dumps(json.dumps(SETTINGS))});"
)
TIMEOUT_MS = 15_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [sys.executable, "-m", "nanochat_py.cli", "serve", "--source", str(MODEL), "--host", "127.0.0.1",
           "--port", str(port), "--temperature", "0"]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(base + "health", timeout=2) as r:
                    if json.load(r).get("ready"):
                        break
            except (OSError, ValueError):  # refused, 503 while loading, or not JSON yet
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server was not ready within 60 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, server, width=1280, height=800):
    context = browser.new_context(viewport={"width": width, "height": height})
    context.add_init_script(INIT_SETTINGS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    page.errors = errors
    page.goto(server)
    expect(page.locator("#status")).to_have_class("status ok", timeout=TIMEOUT_MS)
    return context, page


@pytest.fixture
def page(browser, server):
    context, page = _open(browser, server)
    yield page
    assert page.errors == []
    context.close()


def _replies(page) -> int:
    return int(page.evaluate("document.body.dataset.replies"))


def _wait_reply(page, before: int) -> None:
    page.wait_for_function(f"Number(document.body.dataset.replies) > {before}", timeout=TIMEOUT_MS)


def _send(page, text: str) -> None:
    before = _replies(page)
    page.fill("#input", text)
    page.press("#input", "Enter")
    _wait_reply(page, before)


def _texts(page, selector: str) -> list[str]:
    return page.locator(selector).all_inner_texts()


def test_send_streams_a_reply(page):
    with page.expect_response("**/chat/completions") as response:
        page.fill("#input", "Hello there")
        page.press("#input", "Enter")
    assert response.value.status == 200
    assert response.value.headers["content-type"].startswith("text/event-stream")
    request = json.loads(response.value.request.post_data)
    assert request["messages"] == [{"role": "user", "content": "Hello there"}]
    assert (request["temperature"], request["max_tokens"]) == (0, 24)
    _wait_reply(page, 0)
    assert _texts(page, ".msg.user .bubble") == ["Hello there"]
    reply = page.locator(".msg.assistant .content")
    expect(reply).to_have_count(1)
    assert reply.inner_text().strip()
    expect(page.locator("#send")).to_be_visible()
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator("#error")).to_be_hidden()
    assert page.input_value("#input") == ""


def test_regenerate_repeats_a_greedy_reply(page):
    _send(page, "Tell me a story")
    first = page.locator(".msg.assistant .content").inner_text()
    before = _replies(page)
    page.click(".msg.assistant .regenerate")
    _wait_reply(page, before)
    expect(page.locator(".msg.assistant")).to_have_count(1)
    assert page.locator(".msg.assistant .content").inner_text() == first
    assert _texts(page, ".msg.user .bubble") == ["Tell me a story"]


def test_edit_replaces_the_message_and_what_follows(page):
    _send(page, "first question")
    _send(page, "second question")
    expect(page.locator(".msg")).to_have_count(4)
    page.locator(".msg.user").first.hover()
    page.locator(".msg.user .edit").first.click()
    page.fill(".edit-input", "an edited question")
    before = _replies(page)
    page.click(".edit-save")
    _wait_reply(page, before)
    assert _texts(page, ".msg.user .bubble") == ["an edited question"]
    expect(page.locator(".msg.assistant")).to_have_count(1)
    assert page.locator(".msg.assistant .content").inner_text().strip()


def test_conversation_survives_reload_and_new_chat_clears_it(page):
    _send(page, "remember me")
    reply = page.locator(".msg.assistant .content").inner_text()
    page.reload()
    assert _texts(page, ".msg.user .bubble") == ["remember me"]
    assert page.locator(".msg.assistant .content").inner_text() == reply
    page.click("#new-chat")
    expect(page.locator(".msg")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    page.reload()
    expect(page.locator(".msg")).to_have_count(0)
    # the old chat is in the list of past chats and opens again
    page.locator(".chat-item .chat-open", has_text="remember me").click()
    assert _texts(page, ".msg.user .bubble") == ["remember me"]


def test_settings_persist_and_are_sent(page):
    page.click("#settings")
    expect(page.locator("#settings-panel")).to_be_visible()
    page.fill("#temperature", "0")
    page.fill("#top-k", "7")
    page.fill("#max-tokens", "9")
    page.fill("#system-prompt", "Be brief.")
    page.fill("#api-key", "sk-test")
    page.click("#settings-done")
    expect(page.locator("#settings-panel")).to_be_hidden()
    page.reload()
    page.click("#settings")
    assert page.input_value("#top-k") == "7"
    assert page.input_value("#max-tokens") == "9"
    assert page.input_value("#system-prompt") == "Be brief."
    assert page.input_value("#api-key") == "sk-test"
    page.fill("#top-k", "999")  # out of range: clamped
    page.click("#settings-done")
    with page.expect_request("**/chat/completions") as request:
        page.fill("#input", "hi")
        page.press("#input", "Enter")
    _wait_reply(page, 0)
    body = json.loads(request.value.post_data)
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert (body["temperature"], body["top_k"], body["max_tokens"]) == (0, 200, 9)
    assert request.value.headers["authorization"] == "Bearer sk-test"


MALICIOUS = [
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=1</script>",
    '<svg onload="window.__pwned=1"></svg><iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>',
    "[click me](javascript:window.__pwned=1) [data](data:text/html,<script>parent.__pwned=1</script>)",
    '[x](https://example.com/"onmouseover="window.__pwned=1) **<img src=x onerror=window.__pwned=1>**',
    "# <img src=x onerror=window.__pwned=1>\n\n- <img src=x onerror=window.__pwned=1>\n\n> <b onclick=x>q</b>",
    "`<img src=x onerror=window.__pwned=1>` and\n```html\n</code></pre><img src=x onerror=window.__pwned=1>\n```",
    "| <img src=x onerror=window.__pwned=1> | b |\n|---|---|\n| <script>window.__pwned=1</script> | c |",
    "https://example.com/<img/src=x/onerror=window.__pwned=1> \u0000<img src=x onerror=window.__pwned=1>\u0000",
    '[a](https://x.y/(a)"onmouseover="window.__pwned=1" "t") [b](<https://x.y/"><img src=x onerror=window.__pwned=1>>)',
    "https://x.y/(<img src=x onerror=window.__pwned=1>))) ``<script>window.__pwned=1</script>`` `` ` ``",
    # wider than MAX_PADDED_COLUMNS: the short row gets one wide empty cell
    "|" + "h|" * 70 + "\n|" + "-|" * 70 + "\n| <img src=x onerror=window.__pwned=1> |",
]


def test_renderer_never_makes_markup_from_model_text(page):
    result = page.evaluate(
        """async (inputs) => {
            const box = document.createElement('div');
            box.className = 'md';
            document.body.append(box);
            for (const text of inputs) {
                const div = document.createElement('div');
                div.innerHTML = window.renderMarkdown(text);  // as the page inserts replies
                box.append(div);
            }
            await new Promise((r) => setTimeout(r, 300));  // let any onerror/onload fire
            const tags = [...box.querySelectorAll('*')].map((e) => e.tagName.toLowerCase());
            const attrs = [...box.querySelectorAll('*')].flatMap((e) => [...e.attributes].map((a) => a.name));
            const hrefs = [...box.querySelectorAll('a')].map((a) => a.getAttribute('href'));
            return {pwned: window.__pwned, tags: [...new Set(tags)], attrs: [...new Set(attrs)], hrefs,
                    text: box.textContent};
        }""",
        MALICIOUS,
    )
    assert result["pwned"] is None
    assert not {"img", "script", "svg", "iframe", "b"} & set(result["tags"])
    assert not [a for a in result["attrs"] if a.startswith("on") or a in ("src", "srcdoc", "style")]
    assert all(h.startswith("https://") for h in result["hrefs"]), result["hrefs"]
    assert "<img src=x onerror=" in result["text"] and "<script>" in result["text"]
    assert "javascript:window.__pwned=1" in result["text"]  # shown as text, not a link


def test_renderer_markdown(page):
    html = page.evaluate(
        "window.renderMarkdown('## Title\\n\\n**b** *i* `c` [l](https://example.com)\\n\\n1. one\\n2. two\\n\\n"
        "- x\\n  - y\\n\\n```py\\nprint(1 < 2)\\n```')"
    )
    for fragment in ["<h2>Title</h2>", "<strong>b</strong>", "<em>i</em>", "<code>c</code>",
                     '<a href="https://example.com" target="_blank" rel="noopener noreferrer nofollow">l</a>',
                     "<ol><li>one</li><li>two</li></ol>", "<ul><li>x<ul><li>y</li></ul></li></ul>",
                     "<pre><code>print(1 &lt; 2)</code></pre>"]:  # fmt: skip
        assert fragment in html


def _link(url: str, label: str) -> str:
    return f'<a href="{url}" target="_blank" rel="noopener noreferrer nofollow">{label}</a>'


def _code_block(lang: str, code: str) -> str:
    return (f'<div class="code-block"><div class="code-head"><span>{lang}</span><button type="button" '
            f'class="copy-code">Copy</button></div><pre><code>{code}</code></pre></div>')  # fmt: skip


# Everyday Markdown and its exact HTML, as the renderer made it before it was rewritten to run in linear time.
NORMAL_MARKDOWN = [
    ("# Title ##\n### Sub", "<h1>Title</h1><h3>Sub</h3>"),
    ("**b**, __s__, *e*, _e_, ~~d~~ and **_both_**",
     "<p><strong>b</strong>, <strong>s</strong>, <em>e</em>, <em>e</em>, <del>d</del> and "
     "<strong><em>both</em></strong></p>"),
    ("snake_case_name, 2*3*4, a * b * c, __init__.py",
     "<p>snake_case_name, 2*3*4, a * b * c, <strong>init</strong>.py</p>"),
    ("`a < b` and ``x ` y`` and ` padded `",
     "<p><code>a &lt; b</code> and <code>x ` y</code> and <code>padded</code></p>"),
    ('[docs](https://example.com/a_(b) "Docs") and [**bold** `label`](<https://x.org>)',
     f"<p>{_link('https://example.com/a_(b)', 'docs')} and "
     f"{_link('https://x.org', '<strong>bold</strong> <code>label</code>')}</p>"),
    ("[bad](javascript:alert(1)) [rel](/local) [spaced](https://a.b c)",
     f"<p>[bad](javascript:alert(1)) [rel](/local) [spaced]({_link('https://a.b', 'https://a.b')} c)</p>"),
    ("<https://x.org/y>, https://example.com/p_(x)). see http://x)))...",
     f"<p>&lt;{_link('https://x.org/y', 'https://x.org/y')}&gt;, "
     f"{_link('https://example.com/p_(x)', 'https://example.com/p_(x)')}). see {_link('http://x', 'http://x')})))...</p>"),
    ("1. a\n2. b\n   - c\n   - d\n\n3) e",
     "<ol><li><p>a</p></li><li><p>b</p><ul><li>c</li><li>d</li></ul></li><li><p>e</p></li></ol>"),
    ("3. x\n\n4. y", '<ol start="3"><li><p>x</p></li><li><p>y</p></li></ol>'),
    ("- a\nlazy line\n- b\n\n  more of b", "<ul><li>a<br>lazy line</li><li>b<p>more of b</p></li></ul>"),
    ("> q **t**\n> > deeper\n\nafter",
     "<blockquote><p>q <strong>t</strong></p><blockquote><p>deeper</p></blockquote></blockquote><p>after</p>"),
    ("```py\nx = 1 < 2\n```\n~~~\nt\n~~~\n```\nunclosed",
     _code_block("py", "x = 1 &lt; 2") + _code_block("code", "t") + _code_block("code", "unclosed")),
    ("a\nb\n\n---\n***", "<p>a<br>b</p><hr><hr>"),
    ("| L | C | R |\n|:--|:-:|--:|\n| a & b | c \\| d | e |\n| short |",
     '<div class="table-wrap"><table><thead><tr><th style="text-align:left">L</th>'
     '<th style="text-align:center">C</th><th style="text-align:right">R</th></tr></thead><tbody><tr>'
     '<td style="text-align:left">a &amp; b</td><td style="text-align:center">c | d</td>'
     '<td style="text-align:right">e</td></tr><tr><td style="text-align:left">short</td>'
     '<td style="text-align:center"></td><td style="text-align:right"></td></tr></tbody></table></div>'),
]  # fmt: skip


def test_renderer_output_for_normal_markdown(page):
    html = page.evaluate("(inputs) => inputs.map((s) => window.renderMarkdown(s))", [md for md, _ in NORMAL_MARKDOWN])
    for (md, want), got in zip(NORMAL_MARKDOWN, html, strict=True):
        assert got == want, md


# Inputs that cost the old renderer quadratic time or worse (Debian's Chromium 150: a URL followed by 64,000 ")"
# 2 s, a wide table header over short rows 7.5 s; a linear render takes a few ms), and others that would if a
# regex could backtrack or a loop rescan. Each must render within RENDER_BUDGET_MS per 20,000 characters.
PATHOLOGICAL = {
    "URL then )": "http://x" + ")" * 64_000,
    "URL then (": "see http://x" + "(" * 20_000,
    "URL of dots": "http://" + "." * 40_000 + "a",
    "many URLs": "http://x.co/a_b " * 1_200,
    "*": "*" * 20_000,
    "**a ": "**a " * 5_000,
    "__a ": "__a " * 5_000,
    "~~a ": "~~a " * 5_000,
    "_a": "_a" * 10_000,
    "*_`[<\\": "*_`[<\\" * 3_400,
    "`": "`" * 20_000,
    "`a": "`a" * 10_000,
    "backtick runs": "".join("`" * n + "a" for n in range(1, 280)),
    "[": "[" * 20_000,
    "[a](": "[a](" * 5_000,
    "[a](http://x": "[a](http://x" * 1_700,
    "link, spaces": "[a](http://x" + " " * 20_000 + "y",
    "link, title": '[a](http://x "t"' + " " * 20_000 + "y",
    "link, groups": "[a](http://x" + "(a)" * 6_500,
    "<": "<" * 20_000,
    "\\": "\\" * 20_000,
    "&": "&" * 20_000,
    "fence, spaces": "```" + " " * 40_000 + "`",
    "unclosed fences": "```\n" * 5_000,
    "heading, spaces": "# a" + " " * 20_000 + "\u2028",
    "heading, closing #s": "# a " + "#" * 20_000 + "x",
    "rule, then x": "- " * 10_000 + "x",
    "list item, spaces": "-" + " " * 20_000 + "\u2028",
    "table rule, spaces": "a|b\n" + " " * 40_000 + "-|x",
    "table, wide header": "|" + "a|" * 1_000 + "\n|" + "-|" * 1_000 + "\n" + "|\n" * 4_000,
    "> nested": "> " * 10_000 + "x",
    "> lines": ("> " * 40 + "y\n") * 240,
    "list, 20000 items": "- item\n" * 20_000,
    "list, nesting": "".join(" " * (2 * n) + "- a\n" for n in range(140)),
    "list, blank lines": "- a\n" + "\n" * 20_000 + "- b",
    "20000 lines": "x\n" * 20_000,
}
RENDER_BUDGET_MS = 200
ALLOWED_TAGS = set(
    "p br strong em del code pre a h1 h2 h3 h4 h5 h6 ul ol li blockquote hr div span button table thead "
    "tbody tr th td".split()
)


def test_renderer_is_linear_on_pathological_input(page):
    result = page.evaluate(
        """([cases, budgetPer20k]) => {
            window.renderMarkdown('# warm *up* `the` [jit](https://x.y)\\n\\n- a\\n\\n|a|b|\\n|-|-|');
            const out = {};
            for (const [name, text] of Object.entries(cases)) {
                const budget = budgetPer20k * Math.max(1, text.length / 20000);
                let best = Infinity, html = '';
                for (let k = 0; k < 3; k++) {  // retries forgive a busy machine, not a render 10 times too slow
                    const t0 = performance.now();
                    html = window.renderMarkdown(text);
                    best = Math.min(best, performance.now() - t0);
                    if (best <= budget || best > 10 * budget) break;
                }
                const box = document.createElement('template');  // parsed, never run or loaded
                box.innerHTML = html;
                const tags = [...box.content.querySelectorAll('*')].map((e) => e.tagName.toLowerCase());
                out[name] = {ms: best, budget, tags: [...new Set(tags)]};
            }
            return out;
        }""",
        [PATHOLOGICAL, RENDER_BUDGET_MS],
    )
    slow = [f"{name}: {r['ms']:.0f} ms > {r['budget']:.0f} ms" for name, r in result.items() if r["ms"] > r["budget"]]
    assert not slow, "; ".join(slow)
    for name, r in result.items():
        assert set(r["tags"]) <= ALLOWED_TAGS, name


def test_renderer_output_for_the_reproduced_input(page):
    html = page.evaluate("(t) => window.renderMarkdown(t)", "http://x" + ")" * 16_000)
    assert html == "<p>" + _link("http://x", "http://x") + ")" * 16_000 + "</p>"


def _sse(*events) -> str:
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events)


def test_streamed_html_and_tool_calls(page):
    """A reply with injection attempts and a calculator call, streamed through the page's real code path."""
    body = _sse(
        {"token": "Let me compute ", "kind": "text", "worker": 0},
        {"token": "12*34", "kind": "python", "worker": 0},
        {"token": "408", "kind": "python_output", "worker": 0},
        {"token": ' so <img src=x onerror="window.__pwned=1"> and <script>window.__pwned=1</script>', "kind": "text"},
        {"token": "\n\n[go](javascript:window.__pwned=1) **done**", "kind": "text", "worker": 0},
        {"done": True},
    )
    page.route("**/chat/completions", lambda r: r.fulfill(status=200, content_type="text/event-stream", body=body))
    _send(page, "compute")
    tool = page.locator(".msg.assistant .tool-call")
    expect(tool).to_have_count(1)
    assert "12*34" in tool.inner_text() and "408" in tool.inner_text()
    content = page.locator(".msg.assistant .content")
    assert '<img src=x onerror="window.__pwned=1">' in content.inner_text()
    assert page.locator("#messages img, #messages script, #messages a").count() == 0
    expect(content.locator("strong")).to_have_text("done")
    page.wait_for_timeout(200)
    assert page.evaluate("window.__pwned") is None
    # the tool call goes back to the server as parts, not mixed into the prose
    before = _replies(page)
    with page.expect_request("**/chat/completions") as request:
        page.fill("#input", "and?")
        page.press("#input", "Enter")
    _wait_reply(page, before)
    history = json.loads(request.value.post_data)["messages"]
    assert history[1]["role"] == "assistant"
    assert history[1]["content"][:3] == [{"type": "text", "text": "Let me compute "},
                                         {"type": "python", "text": "12*34"},
                                         {"type": "python_output", "text": "408"}]  # fmt: skip


def test_server_down_shows_an_error_and_retry_recovers(page):
    _send(page, "before the outage")
    page.route("**/chat/completions", lambda r: r.abort())
    _send(page, "during the outage")
    error = page.locator("#error")
    expect(error).to_be_visible()
    assert "Could not reach the server" in error.inner_text()
    assert _texts(page, ".msg.user .bubble") == ["before the outage", "during the outage"]
    expect(page.locator(".msg.assistant")).to_have_count(1)  # the failed reply left nothing behind
    page.unroute("**/chat/completions")
    before = _replies(page)
    page.click("#retry")
    _wait_reply(page, before)
    expect(error).to_be_hidden()
    expect(page.locator(".msg.assistant")).to_have_count(2)


def test_http_and_stream_errors_are_shown(page):
    message = {"error": {"message": "temperature: must be at most 2", "type": "invalid_request_error", "param": None}}
    page.route("**/chat/completions", lambda r: r.fulfill(status=400, json=message))
    _send(page, "bad request")
    expect(page.locator("#error")).to_contain_text("400")
    expect(page.locator("#error")).to_contain_text("temperature: must be at most 2")
    page.unroute("**/chat/completions")
    body = _sse({"token": "partial", "kind": "text", "worker": 0}, {"error": "the worker failed"}, {"done": True})
    page.route("**/chat/completions", lambda r: r.fulfill(status=200, content_type="text/event-stream", body=body))
    before = _replies(page)
    page.click("#retry")
    _wait_reply(page, before)
    expect(page.locator("#error")).to_contain_text("the worker failed")
    expect(page.locator(".msg.assistant .content")).to_contain_text("partial")  # the partial reply stays
    assert _texts(page, ".msg.user .bubble") == ["bad request"]


HOLD_STREAM = """
window.__hold = true;
const realFetch = window.fetch.bind(window);
window.fetch = async (url, options) => {
    const res = await realFetch(url, options);
    if (!window.__hold || !String(url).includes('chat/completions')) return res;
    // pass the first event on, then hold the stream open: a short reply can arrive whole in the first chunk,
    // and passing all of it would end the reply before Stop could be pressed
    const first = await res.body.getReader().read();
    const text = first.done ? '' : new TextDecoder().decode(first.value);
    const end = text.indexOf('\\n\\n');
    const head = end < 0 ? first.value : new TextEncoder().encode(text.slice(0, end + 2));
    const body = new ReadableStream({start(c) {
        if (!first.done) c.enqueue(head);
        options.signal.addEventListener('abort', () => c.error(new DOMException('aborted', 'AbortError')));
    }});
    return new Response(body, {status: res.status, headers: res.headers});
};
"""


def test_stop_keeps_the_partial_reply(page):
    page.evaluate(HOLD_STREAM)  # the real server's reply, held after its first event so that Stop is in time
    before = _replies(page)
    page.fill("#input", "go on and on")
    page.press("#input", "Enter")
    expect(page.locator("#stop")).to_be_visible()
    expect(page.locator("#send")).to_be_hidden()
    expect(page.locator(".msg.assistant .md")).not_to_have_count(0, timeout=TIMEOUT_MS)
    page.click("#stop")
    _wait_reply(page, before)
    expect(page.locator("#send")).to_be_visible()
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator(".msg.assistant .note")).to_have_text("Stopped")
    assert page.locator(".msg.assistant .md").inner_text().strip()
    expect(page.locator("#error")).to_be_hidden()
    # the aborted request freed the server: the next message gets a full reply
    page.evaluate("window.__hold = false")
    _send(page, "next")
    expect(page.locator(".msg.assistant")).to_have_count(2)
    expect(page.locator("#error")).to_be_hidden()


def test_phone_width(browser, server):
    context, page = _open(browser, server, width=375, height=740)
    try:
        _send(page, "a long unbroken word " + "x" * 300)
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        # nothing is cut off either (the message list clips sideways; code and tables scroll inside themselves)
        widest = page.evaluate(
            "Math.max(...[...document.querySelectorAll('header *, #messages *, #composer-wrap *')]"
            ".filter((e) => !e.closest('pre, .table-wrap')).map((e) => e.getBoundingClientRect().right))"
        )
        assert widest <= 375
        box = page.locator("#input").bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= 740 and box["x"] + box["width"] <= 375
        expect(page.locator("#input")).to_be_visible()
        expect(page.locator("#send")).to_be_in_viewport()
        page.click("#settings")
        expect(page.locator("#max-tokens")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        assert page.errors == []
    finally:
        context.close()
