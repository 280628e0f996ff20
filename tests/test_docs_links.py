"""Every relative link in README.md, docs/**/*.md and benchmarks/results/README.md points at a file of the checkout,
and every `#anchor` into a Markdown page names one of its headings (GitHub's heading ids). External links
(http, https, mailto) are not fetched. Links inside code (fenced blocks, `inline code`) are not links."""
import glob
import os
import re
from urllib.parse import unquote

import pytest

from conftest import ROOT

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")  # [label]: target
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def pages():
    found = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "benchmarks", "results", "README.md")]
    found += sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
    return [p for p in found if os.path.isfile(p)]


def prose_lines(text, blank_code=True):
    """(line number, line) outside fenced code blocks, with inline code spans blanked (blank_code)."""
    fence = None
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s{0,3}(`{3,}|~{3,})", line)
        if m:
            if fence is None:
                fence = m.group(1)[0] * len(m.group(1))
            elif m.group(1).startswith(fence):
                fence = None
            continue
        if fence is None and not blank_code:
            yield n, line
        elif fence is None:
            yield n, re.sub(r"(`+)(?:(?!\1).)+?\1", lambda c: " " * len(c.group(0)), line)


def links(text):
    for n, line in prose_lines(text):
        for m in LINK.finditer(line):
            yield n, m.group(1)
        m = REFERENCE.match(line)
        if m:
            yield n, m.group(1)


def slug(heading):
    """GitHub's id for a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path, cache={}):
    """The ids a Markdown page defines: its headings (duplicates get -1, -2, ...) and explicit id / name attributes."""
    if path not in cache:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        ids, seen = set(), {}
        for _, line in prose_lines(text, blank_code=False):
            m = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
            if m:
                base = slug(m.group(1))
                k = seen.get(base, 0)
                ids.add(base if k == 0 else f"{base}-{k}")
                seen[base] = k + 1
        ids.update(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", text))
        cache[path] = ids
    return cache[path]


def broken_links(page):
    with open(page, encoding="utf-8") as f:
        text = f.read()
    rel_page = os.path.relpath(page, ROOT)
    problems = []
    for n, target in links(text):
        if EXTERNAL.match(target):
            continue
        path, _, anchor = target.partition("#")
        path = unquote(path)
        if os.path.isabs(path):
            problems.append(f"{rel_page}:{n}: {target} (an absolute path)")
            continue
        full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(full):
            problems.append(f"{rel_page}:{n}: {target} (no such file)")
        elif not os.path.realpath(full).startswith(os.path.realpath(ROOT) + os.sep):
            problems.append(f"{rel_page}:{n}: {target} (outside the checkout)")
        elif anchor and full.endswith(".md") and unquote(anchor).lower() not in anchors(full):
            problems.append(f"{rel_page}:{n}: {target} (no heading with that anchor in {os.path.relpath(full, ROOT)})")
    return problems


@pytest.mark.parametrize("page", pages(), ids=lambda p: os.path.relpath(p, ROOT))
def test_every_relative_link_resolves(page):
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_link_checker_sees_links_and_skips_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title\n\n## Losses (`LOSS.LOSS_TYPE`)\n\n"
                    "[ok](#a-title) [ok](#losses-lossloss_type) [bad](#nope) ![img](missing.png) "
                    "[web](https://example.org/x) `[code](gone.md)`\n\n```\n[fenced](gone.md)\n```\n[ref]: other.md\n")
    found = [t for _, t in links(page.read_text())]
    assert found == ["#a-title", "#losses-lossloss_type", "#nope", "missing.png", "https://example.org/x", "other.md"]
    assert slug("Decoupled classifier re-balancing (cRT, LWS, tau-norm)") == \
        "decoupled-classifier-re-balancing-crt-lws-tau-norm"
    assert slug("ViT backbones") == "vit-backbones"
    assert {"a-title", "losses-lossloss_type"} <= anchors(str(page))
