"""The Markdown a user reads renders as written: README.md and every Markdown file under
deploy/ and docs/ are parsed by a CommonMark parser (markdown-it-py), and a code fence
that never closes, or fences that pair up wrongly, fail the test.

A stray fence is easy to miss in a diff and swallows the rest of the page on GitHub: an
unmatched closing fence near the ``gar-proxy push`` fragment once made everything from
"Running it" to the end of the README one code block. Three signs give it away:

- a fence that runs to the end of the file without its closing marker;
- a Markdown heading (``## Title``, or ``# Title`` in a fence without a language) inside
  a code block: shell and TOML comments use one ``#`` and lower-case prose rarely;
- an opening fence with a language (```` ```sh ````) inside a code block, which is where
  a mispaired fence puts the next block's opening line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

REPO = Path(__file__).resolve().parent.parent
HEADING = re.compile(r"^#{2,6} \S")
BARE_HEADING = re.compile(r"^# [A-Z]")
OPENING_FENCE = re.compile(r"^\s*(```+|~~~+)\s*[A-Za-z]")


def markdown_files() -> list[Path]:
    found = [REPO / "README.md"]
    for folder in ("deploy", "docs", "bench"):
        found += sorted((REPO / folder).rglob("*.md"))
    return found


def _closing_line_ok(token: Token, lines: list[str]) -> bool:
    assert token.map is not None
    last = lines[token.map[1] - 1].strip() if token.map[1] - 1 < len(lines) else ""
    marker = token.markup[0]
    return (
        token.map[1] - token.map[0] >= 2 and last.startswith(token.markup) and set(last) == {marker}
    )


def problems(text: str) -> list[str]:
    """What is wrong with the code blocks of one Markdown text, one line per problem."""
    lines = text.splitlines()
    found: list[str] = []
    for token in MarkdownIt("commonmark").parse(text):
        if token.type not in ("fence", "code_block") or token.map is None:
            continue
        start = token.map[0] + 1
        if token.type == "fence" and not _closing_line_ok(token, lines):
            found.append(
                f"line {start}: a {token.markup} fence is never closed "
                "(it runs to the end of the file)"
            )
        for line in token.content.splitlines():
            if HEADING.match(line) or (not token.info.strip() and BARE_HEADING.match(line)):
                found.append(f"line {start}: heading inside a code block: {line.strip()}")
            if token.type == "fence" and OPENING_FENCE.match(line):
                found.append(f"line {start}: an opening fence inside a code block: {line.strip()}")
    return found


BROKEN = {
    "closed": ("# Title\n\n```sh\nls   # a comment\n```\n", []),
    "never closed": (
        "Text\n\n```sh\nls\n",
        ["line 3: a ``` fence is never closed (it runs to the end of the file)"],
    ),
    # The README's old fault: a stray closing fence pairs with the next opening one.
    "mispaired": (
        "```sh\nls\n```\n\nstray\n```\n\n## Running it\n\n```toml\nk = 1\n```\n",
        [
            "line 6: heading inside a code block: ## Running it",
            "line 6: an opening fence inside a code block: ```toml",
        ],
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_the_check_tells_a_good_page_from_a_broken_one(case: str) -> None:
    text, expected = BROKEN[case]
    assert problems(text) == expected


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_markdown_renders_without_stray_fences(path: Path) -> None:
    assert problems(path.read_text()) == []


def test_the_readme_renders_every_section_as_a_heading() -> None:
    """The sections a stray fence once swallowed are headings again, not code."""
    tokens = MarkdownIt("commonmark").parse((REPO / "README.md").read_text())
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    for title in ("Running it: logs, metrics, health, status page", "Troubleshooting",
                  "In front of any registry"):  # fmt: skip
        assert title in headings
