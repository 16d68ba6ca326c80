"""scripts/run.sh: installs once, not again while nothing changed, and says what to do
on a Python older than 3.11. Run on a copy of the checkout whose .venv has stand-ins
for python (recording pip installs) and gar-proxy, so no package index is needed."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from testkit.doccommands import documented

ROOT = Path(__file__).resolve().parent.parent


def _checkout(tmp_path: Path) -> Path:
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "proxy", copy / "proxy", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "run.sh", copy / "scripts" / "run.sh")
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    bin_dir = copy / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    fakes = {
        "python": f'#!/bin/sh\necho "$@" >> {copy}/installs\n',
        "gar-proxy": '#!/bin/sh\necho "gar-proxy ran: $@"\n',
    }
    for name, text in fakes.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return copy


def _run(copy: Path, path: str) -> subprocess.CompletedProcess[str]:
    # The README's command, as written, in the copy of the checkout.
    command = shlex.split(documented("README.md", "bash scripts/run.sh"))
    return subprocess.run(
        [*command, "--version"], cwd=copy,
        capture_output=True, text=True, timeout=60, check=False, env={"PATH": path},
    )  # fmt: skip


def test_installs_once_and_again_only_after_a_change(tmp_path: Path) -> None:
    copy = _checkout(tmp_path)
    installs = copy / "installs"
    first = _run(copy, "/usr/bin:/bin")
    assert first.returncode == 0, first.stderr
    assert "gar-proxy ran: --version" in first.stdout
    assert installs.read_text().count("pip install") == 1
    second = _run(copy, "/usr/bin:/bin")
    assert second.returncode == 0 and "installing" not in second.stderr
    assert installs.read_text().count("pip install") == 1  # nothing changed: no install
    # Editable, like scripts/test.sh's install in the same .venv: a source change needs
    # no install (and a plain one would leave the tests' subprocesses on a stale copy).
    assert "install --quiet --disable-pip-version-check -e ." in installs.read_text()
    (copy / "proxy" / "version.py").write_text("VERSION = 'edited'\n")
    assert _run(copy, "/usr/bin:/bin").returncode == 0
    assert installs.read_text().count("pip install") == 1
    (copy / "pyproject.toml").write_text((copy / "pyproject.toml").read_text() + "\n# edited\n")
    assert _run(copy, "/usr/bin:/bin").returncode == 0
    assert installs.read_text().count("pip install") == 2


def test_an_old_python_gets_told_what_to_do(tmp_path: Path) -> None:
    copy = _checkout(tmp_path)
    old = tmp_path / "old-python"
    old.mkdir()
    (old / "python3").write_text(
        '#!/bin/sh\ncase "$1" in --version) echo "Python 3.9.2";; *) exit 1;; esac\n'
    )
    (old / "python3").chmod(0o755)
    result = _run(copy, f"{old}:/usr/bin:/bin")
    assert result.returncode == 1
    assert "needs Python 3.11 or newer; this machine has: Python 3.9.2" in result.stderr
    assert "apt-get install python3 python3-venv" in result.stderr
    assert not (copy / "installs").exists()
