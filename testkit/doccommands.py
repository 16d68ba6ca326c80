"""The commands the documentation tells a user to copy, found where a user finds them.

- Markdown (README.md, every ``*.md`` under deploy/): shell code blocks
  (```` ```sh ````, ``bash``, ``shell``, ``console``).
- Comment headers of the Dockerfile and of every file under deploy/: comment lines
  indented by two spaces or more whose first word is a program a user runs there
  (``docker``, ``sudo``, ``kubectl``, ``systemctl``, ...).

A line ending in ``\\`` continues on the next. Each command is either run by a test,
which takes its text from here (``documented(FILE, PREFIX)``, so the test runs what the
document says, not a copy), or marked, visibly, as not run:

- ``# example, not run by the tests``: as a block's first line, it marks the block; at
  the end of a line (or a header's line before the commands), that command. For
  commands that need a cluster, Google, root on the host or placeholders;
- ``# synopsis, checked against --help``: the block lists subcommands and options;
  a test checks each against ``gar-proxy SUBCOMMAND --help``.

``tests/test_documented_commands.py`` fails when a command is neither run nor marked,
and when a test asks for a command the documents no longer have.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = "example, not run by the tests"
SYNOPSIS = "synopsis, checked against --help"
SHELL_INFOS = {"sh", "bash", "shell", "console"}
PROGRAMS = {
    "bash", "ctr", "crictl", "curl", "docker", "gar-proxy", "gcloud", "haproxy", "helm",
    "htpasswd", "install", "kubectl", "nerdctl", "nginx", "podman", "promtool", "python3",
    "scripts/build-image.sh", "skopeo", "sudo", "systemctl", "systemd-analyze",
}  # fmt: skip
HEADER_FILES = ("Dockerfile",)
_HEADER_LINE = re.compile(r"^#( {2,})(\S.*)$")


@dataclass(frozen=True)
class DocCommand:
    file: str  # relative to the repository
    line: int  # 1-based, of the command's first line
    text: str  # continuation lines joined with a space
    marker: str | None  # EXAMPLE, SYNOPSIS or None (a test must run it)


def _join(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, text in lines:
        start, before = pending if pending else (number, "")
        text = f"{before} {text.strip()}".strip() if pending else text.strip()
        if text.endswith("\\"):
            pending = (start, text[:-1].rstrip())
            continue
        pending = None
        joined.append((start, text))
    if pending:
        joined.append(pending)
    return joined


def _marker(text: str, block: str | None) -> str | None:
    for mark in (EXAMPLE, SYNOPSIS):
        if mark in text:
            return mark
    return block


def _strip_comment(text: str) -> str:
    return re.sub(r"\s+#\s.*$", "", text).strip()


def markdown_commands(path: Path) -> list[DocCommand]:
    text = path.read_text()
    found = []
    for token in MarkdownIt("commonmark").parse(text):
        if token.type != "fence" or token.info.strip() not in SHELL_INFOS or token.map is None:
            continue
        lines = token.content.splitlines()
        block = _marker(lines[0], None) if lines and lines[0].startswith("#") else None
        numbered = [(token.map[0] + 2 + i, line) for i, line in enumerate(lines)]
        for number, command in _join(numbered):
            if not command or command.startswith("#"):
                continue
            marker = _marker(command, block)
            found.append(DocCommand(_name(path), number, _strip_comment(command), marker))
    return found


def header_commands(path: Path) -> list[DocCommand]:
    """Commands in a file's comment lines (a Dockerfile's or a recipe's header)."""
    found = []
    numbered: list[tuple[int, str]] = []
    marked: set[int] = set()  # lines after an EXAMPLE marker, up to the comment's end
    marking = False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        comment = line.lstrip().startswith("#")
        marking = comment and (marking or EXAMPLE in line)
        if marking:
            marked.add(number)
        matched = _HEADER_LINE.match(line.strip()) if comment else None
        if matched is not None:
            numbered.append((number, matched[2]))
    for number, command in _join(numbered):
        first = command.split()[0] if command.split() else ""
        if first not in PROGRAMS and not _continues_program(command):
            continue
        marker = EXAMPLE if EXAMPLE in command or number in marked else None
        found.append(DocCommand(_name(path), number, _strip_comment(command), marker))
    return found


def _continues_program(command: str) -> bool:
    # "A=1 docker ..." or "cmd && docker ..." start with another word.
    words = command.split()
    return bool(words) and "=" in words[0] and len(words) > 1 and words[1] in PROGRAMS


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "deploy").rglob("*.md"))]


def recipe_files() -> list[Path]:
    files = [REPO / name for name in HEADER_FILES]
    files += sorted(p for p in (REPO / "deploy").rglob("*") if p.is_file() and p.suffix != ".md")
    return files


def all_commands() -> list[DocCommand]:
    found = [c for path in documents() for c in markdown_commands(path)]
    return found + [c for path in recipe_files() for c in header_commands(path)]


def documented(file: str, prefix: str) -> str:
    """The one command in ``file`` (relative to the repository) starting with ``prefix``."""
    matches = [c.text for c in all_commands() if c.file == file and c.text.startswith(prefix)]
    assert len(matches) == 1, f"{file}: {len(matches)} commands start with {prefix!r}: {matches}"
    return matches[0]
