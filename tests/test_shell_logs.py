"""`shell` and `logs` without Docker: the duration parser, the refusal without a terminal, the offer at
`--pause`, and the Target methods of the in-memory target. tests/test_workflow_swarm.py runs both
commands on the sandbox (a real pseudo-terminal for `shell`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stackpatch.commands.shell_cmd import parse_since
from stackpatch.errors import UserError
from stackpatch.release import deploy as D
from stackpatch.release import journal as J
from stackpatch.reporter import Recorder

from tests.test_runner_memory import release, world  # noqa: F401

CLI = str(Path(sys.executable).with_name("stackpatch"))


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), ("45", 45),
                                           ("1.5m", 90)])
def test_since_takes_a_duration(text, seconds):
    assert parse_since(text, now=1000000.0) == 1000000.0 - seconds
    assert parse_since(None) is None


@pytest.mark.parametrize("bad", ["10 minutes", "-5m", "m", "1w", ""])
def test_since_refuses_anything_else_saying_what_works(bad):
    with pytest.raises(UserError, match=r"is not a duration: use e.g. 30s, 10m, 2h or 1d"):
        parse_since(bad)


def test_shell_without_a_terminal_refuses_in_one_line_and_starts_nothing(tmp_path):
    r = subprocess.run([CLI, "shell", "--repo", str(tmp_path)], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert line == ("stackpatch: error: shell needs a terminal and stdin is not one: run it in a terminal, or "
                    "read the service's output with `stackpatch logs SERVICE`")
    assert list(tmp_path.iterdir()) == []


def test_the_pause_offers_stackpatch_shell(world):
    cfg, target, _ = world
    rec = Recorder(answers=[True])
    res = D.deploy(cfg, release(), yes=False, pause=True, reporter=rec, target=target)
    assert res.state == J.DEPLOYED
    [offer] = [m for k, m in rec.messages if "is live" in m]
    assert "`stackpatch shell` in another terminal opens a shell in a task of phpfiles on stack acme-prod" in offer


def test_the_memory_target_finds_a_task_opens_a_shell_and_reads_logs(world):
    _, target, _ = world
    task = target.running_task("phpfiles")
    assert (task.task, task.node, task.local) == ("acme-prod_phpfiles.1", "memory-node", True)
    assert target.open_shell(task, ["/bin/sh"]) == 0 and target.shells == [("acme-prod_phpfiles.1", ["/bin/sh"])]
    target.log_lines["phpfiles"] = [(100.0, "old"), (200.0, "new")]
    assert [ln.text for ln in target.logs("phpfiles", since=150.0, follow=False)] == ["new"]
    with pytest.raises(UserError, match="no service nope"):
        target.running_task("nope")
