"""``config.example.toml`` is exact: what ``gar-proxy config example`` writes from the
declarations, every setting named with its true default, and its commented examples
valid settings."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from proxy.config import SPECS, load_settings
from proxy.config.example import DERIVED, EXAMPLES, render
from proxy.config.loader import _default_paths
from proxy.config.renamed import spelling
from proxy.config.values import Choice

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def _sections(text: str) -> dict[str, list[str]]:
    """The lines under each ``[section]`` header."""
    found: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in text.splitlines():
        header = re.fullmatch(r"\[([a-z_]+)\]", line)
        if header:
            lines = found.setdefault(header.group(1), [])
        else:
            lines.append(line)
    return found


def test_the_file_is_what_config_example_writes() -> None:
    assert EXAMPLE.read_text() == render(), "run: gar-proxy config example > config.example.toml"
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "config", "example"],
        capture_output=True, text=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXAMPLE.read_text()


def test_loading_it_gives_the_defaults(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert load_settings(EXAMPLE, env=env) == load_settings(None, env=env)


def test_it_names_every_setting_in_its_section_with_its_environment_names() -> None:
    sections = _sections(EXAMPLE.read_text())
    for spec in SPECS.values():
        lines = "\n".join(sections[spec.group])
        if spec.key in EXAMPLES:
            written = f"e.g. {spelling(spec.key)}:\n# {EXAMPLES[spec.key].splitlines()[0]}"
        elif spec.key in DERIVED:
            written = f"# {spec.name} = "
        else:
            written = f"\n{spec.name} = "
        assert written in "\n" + lines, spec.key
        assert all(name in lines for name in spec.env), spec.key
        if isinstance(spec.parse, Choice):
            assert " | ".join(spec.parse.options) in lines, spec.key


def test_each_active_line_is_its_setting_s_default(tmp_path: Path) -> None:
    """Line by line, so a wrong default names its key (the whole-file load above says
    only that something differs)."""
    sections = _sections(EXAMPLE.read_text())
    checked = set()
    for spec in SPECS.values():
        for line in sections[spec.group]:
            if line.startswith(f"{spec.name} = "):
                document = tomllib.loads(f"[{spec.group}]\n{line}\n")
                assert spec.parse(document[spec.group][spec.name]) == spec.default, spec.key
                checked.add(spec.key)
    assert checked == set(SPECS) - set(EXAMPLES) - set(DERIVED)


def test_the_environment_dependent_defaults_are_shown_as_a_user_writes_them() -> None:
    derived = _default_paths({"HOME": "/home/u"})
    for key, shown in DERIVED.items():
        assert str(derived[key]) == shown.replace("~", "/home/u"), key


@pytest.mark.parametrize("key", sorted(EXAMPLES))
def test_each_commented_example_is_a_valid_setting(tmp_path: Path, key: str) -> None:
    section = key.split(".")[0]
    text = EXAMPLES[key]
    if not text.startswith(("[[mirrors]]", "[[warm]]", "[[tag_policies]]", f"[{section}.")):
        text = f"[{section}]\n{text}"
    config = tmp_path / "example.toml"
    config.write_text(text)
    settings = load_settings(config, env={"HOME": str(tmp_path)})
    assert getattr(getattr(settings, section), key.split(".")[1]), key


def test_the_old_example_s_mistakes_stay_fixed() -> None:
    """What the hand-written file got wrong (issue 21): log_format, bearer, the keys
    added after it was written."""
    sections = _sections(EXAMPLE.read_text())
    assert 'log_format = "auto"' in sections["server"]
    assert any("bearer" in line for line in sections["upstream"])
    for key in ("upstream.password_file", "upstream.token_file", "upstream.tier",
                "server.shutdown_grace", "cache.min_free"):  # fmt: skip
        section, name = key.split(".")
        assert any(line.startswith(f"{name} = ") for line in sections[section]), key
