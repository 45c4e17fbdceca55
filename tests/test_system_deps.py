"""scripts/system-deps.sh (what `make test` runs first): a no-op when chromium and PostgreSQL are there, apt-get as
root or through sudo when they are not, and a clear message (exit 1) when the user cannot install system packages.

The script runs for real with stub commands first on PATH (id, apt-get, sudo, chromium, initdb, pg_ctl): nothing
is installed on this machine, and the outcome does not depend on what it has."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "system-deps.sh"


def stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def run(
    tmp_path: Path, *, uid: int, have: tuple[str, ...], sudo: bool = False, apt: bool = True
) -> tuple[int, str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "ls", "env", "cat"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    calls = tmp_path / "calls.txt"
    stub(bin_dir, "id", f'[ "$1" = "-u" ] && echo {uid}')
    if apt:
        stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {calls}')
    if sudo:
        stub(
            bin_dir,
            "sudo",
            f'[ "$1" = "-n" ] && shift; [ "$1" = "true" ] && exit 0; echo "sudo $*" >> {calls}; exec "$@"',
        )
    for tool in have:
        stub(bin_dir, tool, "exit 0")
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                         env={"PATH": str(bin_dir), "HOME": str(tmp_path)})  # fmt: skip
    return out.returncode, out.stderr, calls.read_text() if calls.exists() else ""


def test_nothing_to_do_when_everything_is_there(tmp_path: Path) -> None:
    code, err, calls = run(tmp_path, uid=1000, have=("chromium", "initdb", "pg_ctl"))
    assert (code, err, calls) == (0, "", "")


def test_root_installs_what_is_missing(tmp_path: Path) -> None:
    code, _, calls = run(tmp_path, uid=0, have=("initdb", "pg_ctl"))
    assert code == 0
    assert "apt-get update" in calls and "install -y --no-install-recommends chromium" in calls
    assert "postgresql" not in calls  # already there: not installed again


def test_a_user_with_sudo_installs_through_sudo(tmp_path: Path) -> None:
    code, _, calls = run(tmp_path, uid=1000, have=("initdb", "pg_ctl"), sudo=True)
    assert code == 0 and "sudo -n" not in calls  # `sudo -n true` probed, then used
    assert "sudo env DEBIAN_FRONTEND=noninteractive apt-get install" in calls


def test_a_user_without_root_or_sudo_gets_the_command_to_ask_for(tmp_path: Path) -> None:
    code, err, calls = run(tmp_path, uid=1000, have=("initdb", "pg_ctl"))
    assert code == 1 and calls == ""
    assert "not root, no sudo" in err and "apt-get install -y --no-install-recommends chromium" in err
    assert "SYSTEM_DEPS=0" in err


def test_no_apt_get_is_a_message(tmp_path: Path) -> None:
    code, err, _ = run(tmp_path, uid=0, have=("initdb", "pg_ctl"), apt=False)
    assert code == 1 and "no apt-get" in err and "chromium" in err


def test_make_test_runs_the_script_and_ci_runs_make_test() -> None:
    makefile = (ROOT / "Makefile").read_text()
    dry = subprocess.run(["make", "-n", "test", "SYSTEM_DEPS=1"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "scripts/system-deps.sh" in dry.stdout, dry.stdout + dry.stderr
    assert "system-deps" in makefile
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "apt-get" not in ci  # one place installs system packages
