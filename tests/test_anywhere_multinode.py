"""Issue 11 on the 3-node sandbox (`sandbox up --nodes 3`, the shared `nodes3` fixture): tasks on the
workers. A command check in a task on a worker runs through that worker's engine when
`target.node_hosts` names it, else as a job pinned to the worker (and says so); a ship pre-pulls the
new images on every node that may run them, its gate's command check and migration (both on a worker:
phpfiles does not run on the manager) work through the manager."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from test_multinode import sp
from test_multinode import status as _status

pytestmark = [pytest.mark.docker, pytest.mark.multinode]


def _env(st: dict) -> dict:
    env = {"DOCKER_CONFIG": st["docker_config"]}
    for line in Path(st["registry_env_file"]).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v
    return env


def _phpfiles_node(st: dict) -> str:
    [node] = {t["node"] for t in st["services"]["phpfiles"]["tasks"] if t["state"] == "running"}
    assert node != st["nodes"][0]["name"]  # phpfiles runs on a worker
    return node


def test_a_check_in_a_task_on_a_worker_runs_through_its_engine_or_as_a_job_beside_it(nodes3, monkeypatch):
    from stackpatch import config, targets
    st = _status(nodes3)
    for k, v in _env(st).items():
        monkeypatch.setenv(k, v)
    app = Path(st["app_dir"])
    node = _phpfiles_node(st)
    argv = ["sh", "-c", 'echo "host=$(hostname) rev=$APP_REVISION"']
    # no engine for the worker: a job from the task's image and env, pinned to its node
    code, out = targets.for_config(config.load(app)).exec("phpfiles", argv, 60)
    assert code == 0, out
    head, *rest = out.splitlines()
    assert head.startswith("[ran as job ") and f"on node {node}" in head, out
    assert any(ln.endswith(f"rev={st['revision']}") for ln in rest), out
    # the worker's engine named in target.node_hosts: exec in the task itself (its hostname is the task's)
    cfg = config.load(app)
    hosts = {n["name"]: n["docker_host"] for n in st["nodes"]}
    cfg = cfg.model_copy(update={"target": cfg.target.model_copy(update={"node_hosts": {node: hosts[node]}})})
    target = targets.for_config(cfg)
    code, out = target.exec("phpfiles", argv, 60)
    assert code == 0 and not out.startswith("[ran as job"), out
    task = target.running_task("phpfiles")
    assert task.node == node and not task.local
    cid = subprocess.run(["docker", "-H", hosts[node], "inspect", "--format", "{{.Config.Hostname}}",
                          task.container_id], capture_output=True, text=True, check=True).stdout.strip()
    assert out.strip() == f"host={cid} rev={st['revision']}"


def _ship_hotfix(st: dict, edit, note: str) -> subprocess.CompletedProcess:
    """`start`, a one-line fix committed and pushed, `ship --yes --json` with the app's stackpatch.toml
    changed by `edit` for this ship only (skip-worktree: the committed file stays as it is, as a fork's),
    then `finish`."""
    app = Path(st["app_dir"])
    env = _env(st)
    toml = app / "stackpatch.toml"
    original = toml.read_text()
    subprocess.run(["git", "update-index", "--skip-worktree", "stackpatch.toml"], cwd=app, check=True)
    try:
        toml.write_text(edit(original))
        proc = sp("start", cwd=app, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        server = app / "app" / "server.py"
        server.write_text(server.read_text() + f"\n# multi-node hotfix: {note}\n")
        subprocess.run(["git", "commit", "-qam", f"Fix: {note}"], cwd=app, check=True)
        subprocess.run(["git", "push", "-q", "-u", "origin", "HEAD"], cwd=app, check=True, capture_output=True)
        proc = sp("ship", "--yes", "--json", cwd=app, env=env, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        toml.write_text(original)
        subprocess.run(["git", "update-index", "--no-skip-worktree", "stackpatch.toml"], cwd=app, check=True)
    done = sp("finish", cwd=app, env=env, timeout=300)  # the routine's last step: the next `start` needs the tag
    assert done.returncode == 0, done.stderr
    return proc


def test_ship_pre_pulls_on_the_workers_and_gates_and_migrates_on_a_worker(nodes3):
    st = _status(nodes3)
    _phpfiles_node(st)  # phpfiles runs on a worker (the new task may land on another worker)
    proc = _ship_hotfix(st, lambda text: text + '\n[[target.checks]]\nname = "canary runs the release"\n'
                        'service = "phpfiles"\ncommand = ["sh", "-c", "test \\"$APP_REVISION\\" = {revision}"]\n',
                        "tasks anywhere")
    res = json.loads(proc.stdout)["run"]
    err = proc.stderr
    assert res["state"] in ("deployed", "deployed-purge-failed"), res
    timings = res["timings"]
    assert list(timings)[0] == "prepull", timings
    pulled = {ln.split("pre-pull: ", 1)[1].split(" has ", 1)[0] for ln in err.splitlines() if "pre-pull: " in ln}
    assert len(pulled) == 3, err[-3000:]  # phpha and web may run on every node: all three pulled
    where = [ln for ln in err.splitlines() if ln.startswith("check canary runs the release: ran as job ")]
    assert where, err[-3000:]  # said once per gate that runs the check
    for ln in where:  # beside the canary's task, on a worker
        assert ln.split(" on node ", 1)[1].split(",", 1)[0] in {n["name"] for n in st["nodes"][1:]}, ln
    assert "check canary runs the release: ok" in err
    assert "│ migrate:" in err  # the migration's output, from a job on a worker, through the manager
    print(f"\n3 nodes: prepull {timings['prepull']:.1f}s, canary cut-over {timings['update:phpfiles']:.1f}s, "
          f"rest {timings.get('update:phpha', 0):.1f}s")


def test_the_same_ship_without_the_pre_pull_for_the_measurement(nodes3):
    """The other half of the measurement (`target.prepull = false`): the canary's update pulls itself."""
    st = _status(nodes3)
    proc = _ship_hotfix(st, lambda text: text.replace("[target]\n", "[target]\nprepull = false\n", 1),
                        "no pre-pull")
    timings = json.loads(proc.stdout)["run"]["timings"]
    assert "prepull" not in timings and "pre-pull: " not in proc.stderr
    print(f"\n3 nodes, no pre-pull: canary cut-over {timings['update:phpfiles']:.1f}s, "
          f"rest {timings.get('update:phpha', 0):.1f}s")
