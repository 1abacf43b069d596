"""Every external program the project runs or looks up is installed by `make setup` or part of a minimal
Debian with python3 (issue 10). No Docker needed: this runs in `make test-fast` too.

The scanner is tests/programs.py (`python -m tests.programs` prints the inventory)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests import programs as P

# Resolutions the scanner cannot make, each explained by hand: (where, the scanner's words) -> why it is fine.
# Each entry must still be reported (else it is stale and the test fails), so it cannot hide a new call.
EXPLAINED = {
    ("benchmarks/measure.py", "args[cut + 1:]"):
        "measure.py's own command line: it times the command its user gives after `--` (run.py's calls, "
        "stackpatch and bash, are resolved through measure())",
    ("scripts/setup-system.sh", "$prog is set by read"):
        "the `command -v` look-ups of the PROGRAMS table itself: each is the program setup installs",
    ("tests/test_ci_examples.py", "empty argv"):
        "validate() runs [*offline(), CHECK, …]: `unshare -n` (util-linux, priority required: in every Debian) "
        "when root may make a network namespace, then the venv's check-jsonschema",
    ("src/stackpatch/hooks.py", "hooks_dir(root, settings) / name"):
        "a hook is the user's own executable in .stackpatch/hooks/ (or [hooks] dir): it is their program, "
        "not one stackpatch needs installed",
    ("src/stackpatch/sandbox/nodeinit.py", "program[0]"):
        "nodeinit execs the command line it is given: nodes.py starts it with `-- dockerd …` (resolved there)",
    ("tests/test_wheel.py", "[str(a) for a in argv]"):
        "run()'s callers pass sys.executable, or the python and stackpatch of the venv the test made",
}


def _explained(line: str) -> tuple[str, str] | None:
    return next((k for k in EXPLAINED if line.startswith(k[0]) and k[1] in line), None)


@pytest.fixture(scope="module")
def inventory() -> P.Inventory:
    return P.project_inventory()


def test_every_program_the_project_runs_is_provided(inventory):
    unexplained = [u for u in inventory.unresolved if _explained(u) is None]
    assert not unexplained, "calls whose program the scanner cannot name (resolve them or explain them):\n" \
        + "\n".join(unexplained)
    stale = set(EXPLAINED) - {_explained(u) for u in inventory.unresolved}
    assert not stale, f"EXPLAINED entries nothing matches any more: {sorted(stale)}"
    missing = P.unprovided(inventory)
    assert not missing, "programs neither scripts/setup-system.sh installs nor a minimal Debian has:\n" + "\n".join(
        f"  {prog}: {', '.join(sorted({u.where for u in uses}))}" for prog, uses in missing.items())


def test_the_scan_sees_the_programs_it_must(inventory):
    """A scanner that finds nothing would pass the test above: these uses are known to exist."""
    found = {(u.program, u.where.split(":")[0]) for u in inventory.uses}
    for prog, where in [("git", "src/stackpatch/git.py"),
                        ("docker-registry", "src/stackpatch/sandbox/registry.py"),
                        ("mmdebstrap", "src/stackpatch/sandbox/baseimage.py"),
                        ("docker", "src/stackpatch/sandbox/engine.py"),    # path, _ = docker_cli()
                        ("git-flow", "tests/gitflow_fixtures.py"),         # sh("git", "flow", ...)
                        ("stackpatch", "scripts/demo.sh"),                 # step NAME "$sp" ...
                        ("dockerd", "scripts/setup-system.sh"),
                        ("awk", "scripts/demo.sh"),                        # inside "$(...)" in an array
                        ("docker", "benchmarks/manual_routine.sh")]:
        assert (prog, where) in found, (prog, where)
    assert "htpasswd" not in {u.program for u in inventory.uses}  # bcrypt in Python now (issue 10)


# ------------------------------------------------------------------ the checker checks itself

HTPASSWD_PY = '''
import shutil, subprocess

def ensure(path, user, password):
    subprocess.run(["htpasswd", "-iBc", str(path), user], input=password, text=True, check=True)

def ensure_found(path, user):
    tool = shutil.which("htpasswd")
    subprocess.run([tool, "-iBc", str(path), user])
'''


def test_adding_an_htpasswd_call_without_setup_fails():
    inv = P.scan_python({"src/stackpatch/sandbox/new.py": HTPASSWD_PY})
    assert not inv.unresolved
    assert [(u.how, u.where) for u in inv.uses] == [("runs", "src/stackpatch/sandbox/new.py:5"),
                                                     ("looks up", "src/stackpatch/sandbox/new.py:8"),
                                                     ("runs", "src/stackpatch/sandbox/new.py:9")]
    missing = P.unprovided(inv)
    assert set(missing) == {"htpasswd"} and len(missing["htpasswd"]) == 3
    # once setup installs it, it is provided
    table = P.setup_programs() | {"htpasswd": "apache2-utils"}
    assert P.unprovided(inv, table) == {}


def test_a_shell_script_running_htpasswd_without_setup_fails():
    script = '''#!/usr/bin/env bash
set -euo pipefail
# htpasswd in a comment is not a call
tool=/usr/bin/htpasswd
cat <<EOF
htpasswd inside a heredoc is text
EOF
if [ -n "${1:-}" ]; then "$tool" -Bbn user "$1" >/dev/null 2>&1; fi
line="$(printf '%s' x | sha256sum)"
'''
    inv = P.scan_shell({"scripts/new.sh": script})
    assert not inv.unresolved
    assert {u.program for u in inv.uses} == {"cat", "htpasswd", "printf", "sha256sum"} - {"printf"}
    assert set(P.unprovided(inv)) == {"htpasswd", "sha256sum"}  # sha256sum is coreutils, but not listed


def test_wrappers_variables_and_returns_are_followed():
    src = '''
import subprocess, sys
from pathlib import Path

CLI = str(Path(sys.executable).with_name("stackpatch"))

def sh(*args, cwd):
    return subprocess.run(args, cwd=cwd)

def flow(w, *args):
    return sh("git", "flow", *args, cwd=w)

def tool():
    return "/usr/sbin/exim4", True

def run(cmd):
    subprocess.Popen(cmd)

def main():
    path, _ = tool()
    subprocess.run([path, "-bp"])
    run([CLI, "status"])
    run(["curl" if sys.platform else "wget", "-s"])
'''
    inv = P.scan_python({"tests/x.py": src})
    assert not inv.unresolved, inv.unresolved
    assert {u.program for u in inv.uses} == {"git", "git-flow", "exim4", "stackpatch", "curl", "wget"}
    assert set(P.unprovided(inv)) == {"exim4", "curl", "wget"}


def test_what_cannot_be_resolved_is_reported_not_skipped():
    src = '''
import os, subprocess

def go(names):
    for n in names:
        subprocess.run([n, "--version"])
    subprocess.run("htpasswd -Bbn u p", shell=True)
    os.system("make")
    subprocess.run(os.environ["TOOL"])
'''
    inv = P.scan_python({"src/y.py": src})
    assert inv.uses == []
    why = dict(u.split(":", 2)[1:] for u in inv.unresolved)
    assert sorted(why) == ["6", "7", "8", "9"], inv.unresolved
    assert "shell string" in why["7"] and "shell string" in why["8"] and "for/with" in why["6"]


def test_setup_table_is_read_from_the_script():
    table = P.setup_programs()
    assert table["docker-registry"] == "docker-registry" and table["dockerd"] == "docker.io"
    assert "htpasswd" not in table
    with pytest.raises(ValueError):
        P.setup_programs("#!/bin/sh\necho no table\n")


# ------------------------------------------------------------------ the lists are true on this Debian

def _dpkg_owner(prog: str) -> str | None:
    """The Debian package that ships `prog` (through alternatives and /bin -> /usr/bin)."""
    path = shutil.which(prog, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        return None
    real = Path(path).resolve()
    for cand in dict.fromkeys([str(real), str(real).removeprefix("/usr"), path, path.removeprefix("/usr")]):
        r = subprocess.run(["dpkg-query", "-S", cand], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            if line.startswith("diversion "):
                continue
            pkgs, _, file = line.partition(": ")
            if file == cand:
                return pkgs.split(",")[0].split(":")[0].strip()
    return None


needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian machine")


@needs_dpkg
@pytest.mark.parametrize("prog", sorted(P.BASE))
def test_base_programs_come_from_required_packages(prog):
    pkg = P.BASE[prog]
    assert _dpkg_owner(prog) == pkg, f"{prog} is not from {pkg} here"
    prio = subprocess.run(["dpkg-query", "-W", "-f=${Priority}", pkg], capture_output=True, text=True).stdout
    assert prio == "required", f"{pkg} has priority {prio!r}: {prog} is not on a minimal Debian"


@needs_dpkg
@pytest.mark.parametrize("prog", sorted(P.setup_programs()))
def test_setup_table_names_the_package_that_ships_each_program(prog):
    owner = _dpkg_owner(prog)
    if owner is None:
        pytest.skip(f"{prog} is not installed from a Debian package here")
    assert owner == P.setup_programs()[prog]
