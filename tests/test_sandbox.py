"""`stackpatch sandbox`: real dockerd, swarm, registry (with auth) and git. Nothing is mocked."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import docker
import pytest

from conftest import CLI, unique
from stackpatch import config as config_mod
from stackpatch import git
from stackpatch.sandbox import api, baseimage
from stackpatch.sandbox.registry import Registry

DOCKER_CLI = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=full, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, Any, bytes]:
    req = urllib.request.Request(url)
    if auth:
        import base64
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def env_file(path: Path) -> dict[str, str]:
    return dict(ln.split("=", 1) for ln in path.read_text().splitlines() if "=" in ln and not ln.startswith("#"))


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("stackpatch: error: "), lines[0]
    assert "Traceback" not in proc.stderr
    return lines[0]


# ------------------------------------------------------------------ the session sandbox

@pytest.mark.docker
def test_second_up_rebuilds_nothing(sandbox):
    c = docker.from_env()
    before_ids = {k: c.images.get(ref.split("@")[0]).id for k, ref in sandbox.images.items()}
    base_id = c.images.get(sandbox.base_image).id
    pid = sandbox.registry_pid
    proc = run_cli("sandbox", "up", "--dir", str(sandbox.dir), "--name", sandbox.name, "--json")
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert again["built"] == [], again["built"]
    reused = " ".join(again["reused"])
    for what in ("registry", "base image", "app repo", "images", "db image", "stack"):
        assert what in reused, (what, again["reused"])
    assert again["images"] == sandbox.images  # same registry digests
    assert {k: c.images.get(ref.split("@")[0]).id for k, ref in again["images"].items()} == before_ids
    assert c.images.get(sandbox.base_image).id == base_id
    assert Registry(sandbox.dir, int(sandbox.registry.split(":")[1])).pid() == pid
    assert "rebuilt nothing" not in proc.stdout  # --json: stdout is only the JSON
    assert "reused" in proc.stderr  # progress says what was reused


@pytest.mark.docker
def test_front_answers_release_and_sha_of_its_tag(sandbox):
    tag_sha = git.rev("refs/tags/26.11.1", cwd=sandbox.origin_dir)
    assert tag_sha and len(tag_sha) == 40
    status, headers, body = get(f"{sandbox.front_url}/version")
    assert status == 200
    assert json.loads(body)["release"] == "26.11.1"
    assert json.loads(body)["revision"] == tag_sha
    assert headers.get("X-App-Revision") == tag_sha and headers.get("Server") == "nginx"  # app, through nginx
    status, _, page = get(f"{sandbox.front_url}/status")
    assert status == 200 and tag_sha.encode() in page
    assert b"3 migrations applied" in page  # the canary ran migrate.py against the stack's PostgreSQL
    # the page is nginx's, revalidated on every visit, naming fingerprinted assets cached for a year
    status, headers, page = get(f"{sandbox.front_url}/")
    assert status == 200 and b"26.11.1" in page and tag_sha.encode() in page
    assert headers.get("Cache-Control") == "no-cache"
    assets = re.findall(rb'/static/([a-z]+)\.([0-9a-f]{12})\.(css|js)"', page)
    assert sorted(a[0] for a in assets) == [b"app", b"style"], page
    for stem, digest, ext in assets:
        status, headers, content = get(f"{sandbox.front_url}/static/{stem.decode()}.{digest.decode()}.{ext.decode()}")
        assert status == 200 and "X-App-Revision" not in headers  # served by web itself
        assert headers.get("Cache-Control") == "public, max-age=31536000, immutable"
        assert hashlib.sha256(content).hexdigest()[:12] == digest.decode()  # the name is the content's hash
    assert get(f"{sandbox.front_url}/static/style.css")[0] == 404  # only fingerprinted names are served
    status, _, body = get(f"{sandbox.front_url}/health")  # web's own health (nginx), not the app's
    assert (status, body) == (200, b"ok\n")
    # images carry the OCI labels and the build args the contract asks for
    img = docker.from_env().images.get(sandbox.images["app"].split("@")[0])
    labels = img.labels
    assert labels["org.opencontainers.image.revision"] == tag_sha
    assert labels["org.opencontainers.image.version"] == "26.11.1"
    assert f"APP_REVISION={tag_sha}" in img.attrs["Config"]["Env"]


@pytest.mark.docker
@pytest.mark.serial  # measures the traffic: alone, after the parallel phase
def test_edge_is_haproxy_with_dns_discovery_stats_inside_and_graceful_reload(sandbox):
    """The edge finds web through Swarm's DNS, shows its stats on 127.0.0.1 inside the container only,
    and reloads (SIGUSR2, master-worker) under load without failing a request."""
    from benchmarks import loadgen
    c = docker.from_env()
    svc = c.services.get(f"{sandbox.stack}_edge")
    spec = svc.attrs["Spec"]
    assert [p["TargetPort"] for p in spec["EndpointSpec"]["Ports"]] == [8080]  # the stats port is not published
    assert spec["TaskTemplate"]["ContainerSpec"]["Args"][0] == "haproxy"  # compose `command`
    assert [cfg["File"]["Name"] for cfg in spec["TaskTemplate"]["ContainerSpec"]["Configs"]] == ["/etc/haproxy/edge.cfg"]
    edge = c.containers.list(filters={"label": f"com.docker.swarm.service.name={sandbox.stack}_edge"})[0]
    web = c.containers.list(filters={"label": f"com.docker.swarm.service.name={sandbox.stack}_web"})[0]
    web_ip = next(iter(web.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]

    def servers() -> dict[str, str]:
        res = edge.exec_run(["curl", "-fsS", "http://127.0.0.1:8404/;csv"])
        assert res.exit_code == 0, res.output
        lines = res.output.decode().splitlines()
        hdr = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(hdr, ln.split(","))) for ln in lines[1:] if ln]
        return {r["addr"].split(":")[0]: r["status"] for r in rows if r["pxname"] == "web" and r.get("addr")}
    assert servers().get(web_ip) == "UP", servers()
    samples: list = []

    async def load_and_reload():
        async def reloads():
            for _ in range(3):
                await asyncio.sleep(1.0)
                await asyncio.to_thread(edge.kill, "SIGUSR2")
        return (await asyncio.gather(loadgen.run(f"{sandbox.front_url}/version", rate=50, duration=5, timeout=5),
                                     reloads()))[0]
    samples = asyncio.run(load_and_reload())
    failed = [s for s in samples if not s.ok]
    assert len(samples) >= 240 and not failed, [(round(s.t, 2), s.status, s.error) for s in failed[:5]]
    edge.reload()
    assert edge.status == "running"
    assert "Loading success" in edge.logs(tail=400).decode(errors="replace")  # the master reloaded the workers
    assert servers().get(web_ip) == "UP"


@pytest.mark.docker
def test_app_repo_is_a_git_flow_repo(sandbox):
    repo = sandbox.app_dir
    assert git.config_get("gitflow.branch.master", cwd=repo) == "master"
    assert git.config_get("gitflow.branch.develop", cwd=repo) == "develop"
    assert git.config_get("gitflow.prefix.hotfix", cwd=repo) == "hotfix/"
    assert git.run("config", "--get", "gitflow.prefix.versiontag", cwd=repo, check=False).stdout.strip() == ""
    assert git.out("cat-file", "-t", "26.11.1", cwd=repo) == "tag"  # annotated
    assert git.rev("master", cwd=repo) == git.rev("26.11.1", cwd=repo)
    assert git.out("rev-list", "--count", "master..develop", cwd=repo) == "1"
    for ref in ("master", "develop", "26.11.1"):
        assert git.rev(ref, cwd=sandbox.origin_dir) == git.rev(ref, cwd=repo)
    assert git.is_dirty(cwd=repo) == []
    cfg = config_mod.load(sandbox.config_path)
    assert cfg.target.stack == sandbox.stack and cfg.registry.host == sandbox.registry
    assert config_mod.registry_credentials(cfg) == tuple(env_file(sandbox.registry_env_file).values())
    proc = run_cli("config", "check", str(sandbox.config_path))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.docker
def test_unauthenticated_push_is_refused(sandbox, tmp_path):
    status, headers, _ = get(f"http://{sandbox.registry}/v2/")
    assert status == 401 and "Basic" in headers.get("WWW-Authenticate", "")
    creds = env_file(sandbox.registry_env_file)
    user = next(v for k, v in creds.items() if "USER" in k)
    password = next(v for k, v in creds.items() if "PASSWORD" in k)
    assert get(f"http://{sandbox.registry}/v2/", auth=(user, password))[0] == 200
    assert get(f"http://{sandbox.registry}/v2/", auth=(user, password + "x"))[0] == 401
    # a real push with an empty docker config (no credentials) is refused
    ref = f"{sandbox.registry}/{sandbox.name}/intruder:{unique()}"
    subprocess.run([DOCKER_CLI, "tag", sandbox.base_image, ref], check=True, capture_output=True)
    try:
        empty = tmp_path / "docker-config"
        empty.mkdir()
        proc = subprocess.run([DOCKER_CLI, "push", ref], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "DOCKER_CONFIG": str(empty)})
        assert proc.returncode != 0
        assert "no basic auth credentials" in proc.stderr or "unauthorized" in proc.stderr.lower(), proc.stderr
        reg = Registry(sandbox.dir, int(sandbox.registry.split(":")[1]))
        assert reg.manifest_digest(f"{sandbox.name}/intruder", ref.rsplit(":", 1)[1]) is None
    finally:
        subprocess.run([DOCKER_CLI, "rmi", ref], capture_output=True)


@pytest.mark.docker
def test_status_json_shows_all_services_at_full_replicas(sandbox):
    proc = run_cli("sandbox", "status", "--dir", str(sandbox.dir), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    for key in ("front_url", "registry", "registry_env_file", "app_dir", "origin_dir", "stack", "services"):
        assert key in data, key
    assert data["stack"] == f"{sandbox.name}-prod"
    assert set(data["services"]) == {"phpfiles", "phpha", "web", "edge", "db"}
    for name, s in data["services"].items():
        assert s["replicas_running"] == s["replicas_desired"] >= 1, (name, s)
        assert s["image"].startswith(f"{data['registry']}/{sandbox.name}/") and "@sha256:" in s["image"]
    assert data["services"]["phpha"]["replicas_desired"] == 2
    # one node: this engine's swarm, every task on it (`--nodes N` reports its nodes the same way)
    assert [n["role"] for n in data["nodes"]] == ["manager"] and data["nodes"][0]["state"] == "ready"
    for name, s in data["services"].items():
        assert s["tasks"] and {t["node"] for t in s["tasks"]} == {data["nodes"][0]["name"]}, (name, s["tasks"])
    assert "git-commit-" + sandbox.revision[:7] in data["services"]["phpfiles"]["image"]
    password = env_file(Path(data["registry_env_file"]))["SANDBOX_REGISTRY_PASSWORD"]
    text = run_cli("sandbox", "status", "--dir", str(sandbox.dir))
    assert password not in proc.stdout + proc.stderr + text.stdout + text.stderr
    # the stack really is configured the way the issue says
    c = docker.from_env()
    for svc in c.services.list(filters={"label": f"com.docker.stack.namespace={sandbox.stack}"}):
        spec = svc.attrs["Spec"]
        assert spec["EndpointSpec"]["Mode"] == "dnsrr"
        assert spec["TaskTemplate"]["ContainerSpec"]["Healthcheck"]["Test"][0] == "CMD"
        short = svc.name.removeprefix(sandbox.stack + "_")
        if short in ("phpfiles", "phpha", "web"):  # what stackpatch patches: two tasks may overlap
            assert spec["UpdateConfig"]["Order"] == "start-first"
            assert not spec["EndpointSpec"].get("Ports")
        if short == "edge":  # holds the public port; never patched
            assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == sandbox.images["edge"]  # the base image: HAProxy
            assert spec["EndpointSpec"]["Ports"][0]["PublishMode"] == "host"
            assert spec["EndpointSpec"]["Ports"][0]["PublishedPort"] == sandbox.front_port
            assert "stackpatch.version" not in (spec.get("Labels") or {})
        if short not in ("db", "edge"):
            assert spec["Labels"]["stackpatch.revision"] == sandbox.revision
            assert spec["Labels"]["stackpatch.version"] == "26.11.1"


@pytest.mark.docker
def test_up_restarts_a_dead_registry_with_the_same_storage(sandbox):
    reg = Registry(sandbox.dir, int(sandbox.registry.split(":")[1]))
    pid = reg.pid()
    assert pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while reg.pid() == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not reg.answers()
    info = api.up(sandbox.dir, name=sandbox.name)
    assert info.built == ["registry"], info.built  # the images were still in its storage: nothing rebuilt
    assert info.registry_running and reg.pid() not in (None, pid)
    assert info.images == sandbox.images


# ------------------------------------------------------------------ forks

@pytest.mark.docker
def test_fork_is_an_independent_copy_serving_the_release(sandbox, fork):
    assert fork.stack != sandbox.stack and fork.front_port != sandbox.front_port
    got = json.loads(get(f"{fork.front_url}/version")[2])
    assert got == {**got, "release": "26.11.1", "revision": sandbox.revision}
    cfg = config_mod.load(fork.config_path)
    assert cfg.target.stack == fork.stack and cfg.target.front_url == fork.front_url
    assert git.is_dirty(cwd=fork.app_dir) == []
    assert git.rev("26.11.1", cwd=fork.app_dir) == sandbox.revision
    assert git.rev("develop", cwd=fork.origin_dir) == git.rev("develop", cwd=sandbox.origin_dir)
    assert git.out("remote", "get-url", "origin", cwd=fork.app_dir) == str(fork.origin_dir)
    # still (or again, after a task restart on a loaded machine) at full healthy replicas
    api.stack_mod.wait_healthy(docker.from_env(), fork.stack, set(api.SERVICES), timeout=90)


@pytest.mark.docker
def test_migrate_tracks_files_honours_tenant_and_fails_loudly(fork):
    c = docker.from_env()
    ctr = c.containers.list(filters={"label": f"com.docker.swarm.service.name={fork.stack}_phpfiles"})[0]
    again = ctr.exec_run(["python3", "/app/migrate.py"])
    assert again.exit_code == 0 and b"0 applied now" in again.output
    tenant = ctr.exec_run(["python3", "/app/migrate.py"], environment={"DATA": "tenant_a"})
    assert tenant.exit_code == 0 and b"3 applied now" in tenant.output and b"schema tenant_a" in tenant.output
    ctr.exec_run(["sh", "-c", "mkdir -p /tmp/m && cp /app/migrations/*.sql /tmp/m && "
                              "echo 'ALTER TABLE nope ADD COLUMN x int;' > /tmp/m/003_broken.sql"])
    broken = ctr.exec_run(["python3", "/app/migrate.py"], environment={"MIGRATIONS_DIR": "/tmp/m"})
    assert broken.exit_code == 1 and b"003_broken.sql failed" in broken.output
    # a database not reachable yet is waited for (a fresh job task may not resolve the network's names for a
    # moment), up to CONNECT_WAIT; a database that does not exist is final at once
    t0 = time.monotonic()
    gone = ctr.exec_run(["python3", "/app/migrate.py"], environment={
        "CONNECT_WAIT": "2", "DATABASE_URL": "postgresql://acme@no-such-host.invalid/acme"})
    took = time.monotonic() - t0
    assert gone.exit_code == 1 and took >= 2, (took, gone.output)
    assert b"waiting for the database (could not translate host name" in gone.output
    assert gone.output.count(b"waiting for the database") == 1 and b"cannot connect" in gone.output
    url = ctr.exec_run(["sh", "-c", "printf %s \"$DATABASE_URL\""]).output.decode()
    assert "dbname=postgres" in url
    refused = ctr.exec_run(["python3", "/app/migrate.py"],
                           environment={"DATABASE_URL": url.replace("dbname=postgres", "dbname=no_such_db")})
    assert refused.exit_code == 1 and b'"no_such_db" does not exist' in refused.output, refused.output
    assert b"waiting for the database" not in refused.output


@pytest.mark.docker
def test_app_stops_gracefully_on_sigterm(fork):
    c = docker.from_env()
    ctr = c.containers.list(filters={"label": f"com.docker.swarm.service.name={fork.stack}_phpha"})[0]
    t0 = time.monotonic()
    ctr.kill(signal="SIGTERM")
    res = ctr.wait(timeout=15)
    assert res["StatusCode"] == 0 and time.monotonic() - t0 < 10
    assert b"acme app stopped" in ctr.logs()


# ------------------------------------------------------------------ down (its own small sandbox)

@pytest.mark.docker
def test_down_leaves_nothing_behind(sandbox):
    # `sandbox` first: its base image is cached, so this second sandbox only builds the app
    with tempfile.TemporaryDirectory(prefix="stackpatch-test-down-") as root:
        d = Path(root) / "sb"
        name = unique("dn")
        proc = run_cli("sandbox", "up", "--dir", str(d), "--name", name)
        try:
            assert proc.returncode == 0, proc.stderr
            info = api.status(d)
            assert info.healthy
            pid, port = info.registry_pid, int(info.registry.split(":")[1])
        finally:
            down = run_cli("sandbox", "down", "--dir", str(d))
        assert down.returncode == 0, down.stderr
        c = docker.from_env()
        flt = {"label": f"com.docker.stack.namespace={name}-prod"}
        assert c.services.list(filters=flt) == []
        assert c.containers.list(all=True, filters=flt) == []
        assert c.volumes.list(filters=flt) == []
        assert c.networks.list(filters=flt) == []
        assert c.api.configs(filters=flt) == []  # the edge's haproxy.cfg
        assert not Path(f"/proc/{pid}").exists() or b"docker-registry" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
        assert not d.exists()
        assert baseimage.exists(c)  # the cache stays without --all
        again = run_cli("sandbox", "status", "--dir", str(d))
        assert "no sandbox" in one_error_line(again)


# ------------------------------------------------------------------ ownership: refused up, down elsewhere

def _registry_processes_under(path: Path) -> list[int]:
    """pids of docker-registry processes whose command line names a file under path."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"docker-registry" in argv[0] and any(str(path).encode() in a for a in argv[1:]):
            out.append(int(proc.name))
    return out


def _all_tags(c) -> list[str]:
    """Every repo:tag in the engine's store, in one API call: `images.list()` inspects each image after
    listing them, and an image another test (the other xdist worker) removes in between raises
    ImageNotFound."""
    return [t for img in c.api.images() for t in (img.get("RepoTags") or []) if t != "<none>:<none>"]


def _world_of(sandbox) -> dict[str, Any]:
    """Sandbox A as the engine and the disk hold it: what a refused up or a foreign down must not change."""
    from stackpatch.sandbox import stack as stack_mod
    c = docker.from_env()
    return {
        "objects": stack_mod.objects(c, sandbox.stack),
        "files": sorted(str(p.relative_to(sandbox.dir)) for p in sandbox.dir.rglob("*")
                        if "storage" not in p.parts),  # registry blobs may be written by other tests' pushes
        "state": (sandbox.dir / "state.json").read_text(),
        "tags": sorted(t for t in _all_tags(c) if f"/{sandbox.name}/" in t),
        "registry_pid": Registry(sandbox.dir, int(sandbox.registry.split(":")[1])).pid(),
    }


def _serves(sandbox) -> None:
    status, _, body = get(f"{sandbox.front_url}/version")
    assert status == 200 and json.loads(body)["release"], (status, body)


@pytest.mark.docker
def test_up_of_the_same_name_elsewhere_is_refused_and_down_there_leaves_the_first_alone(sandbox, tmp_path):
    """Issue 10: sandbox A runs; `up` in directory B under A's name is refused and leaves nothing; `down`
    in B, even with a state file claiming A's name, leaves A's stack, registry and files untouched."""
    before = _world_of(sandbox)
    assert before["registry_pid"] and set(before["objects"]["services"]) == {
        f"{sandbox.stack}_{s}" for s in api.SERVICES}
    b = tmp_path / "b"
    line = one_error_line(run_cli("sandbox", "up", "--dir", str(b), "--name", sandbox.name))
    assert f"stack {sandbox.stack} already runs on this engine and is not this sandbox's" in line
    assert "another --name" in line
    assert not b.exists()                        # no directory
    assert _registry_processes_under(b) == []    # no process
    assert _world_of(sandbox) == before          # no network, volume, service or image tag of that name changed

    down = run_cli("sandbox", "down", "--dir", str(b))
    assert down.returncode == 0 and "nothing to remove" in down.stderr

    # what the refused `up` of issue 10 used to leave: a state for B under A's name, with its own registry port
    b.mkdir()
    st = json.loads(before["state"])
    st.update(dir=str(b.resolve()), owned={}, registry_port=int(api.free_port()), images={})
    (b / "state.json").write_text(json.dumps(st))
    down = run_cli("sandbox", "down", "--dir", str(b))
    assert down.returncode == 0, down.stderr
    assert "left alone on stack" in down.stderr and f"service {sandbox.stack}_db" in down.stderr
    assert "remove what this sandbox deployed" not in down.stderr
    assert not b.exists()

    # a copy of A's own state (same ids) proves nothing either: it names the directory it was written for
    b.mkdir()
    (b / "state.json").write_text(before["state"])
    line = one_error_line(run_cli("sandbox", "down", "--dir", str(b)))
    assert f"was written for the sandbox in {sandbox.dir}" in line and "nothing was removed" in line
    assert (b / "state.json").exists()

    assert _world_of(sandbox) == before
    _serves(sandbox)


@pytest.mark.docker
def test_up_refused_for_a_missing_tool_leaves_nothing(tmp_path):
    from stackpatch.sandbox import stack as stack_mod
    d = tmp_path / "sb"
    empty = tmp_path / "bin"
    empty.mkdir()
    c = docker.from_env()
    swarm = c.info()["Swarm"]["LocalNodeState"]
    name = unique("tl")
    # /usr/bin/docker is found without PATH; docker-registry is looked up on PATH, which holds nothing
    line = one_error_line(run_cli("sandbox", "up", "--dir", str(d), "--name", name, env={"PATH": str(empty)}))
    assert "docker-registry is not installed" in line and "make setup" in line
    assert not d.exists() and _registry_processes_under(d) == []
    assert c.info()["Swarm"]["LocalNodeState"] == swarm
    assert stack_mod.objects(c, f"{name}-prod") == {"services": {}, "volumes": {}, "networks": {}, "configs": {}}
    assert not [t for t in _all_tags(c) if f"/{name}/" in t]


# ------------------------------------------------------------------ the registry's htpasswd, without apache2-utils

@pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry is installed by make setup")
def test_registry_accepts_the_bcrypt_line_written_in_python(tmp_path):
    """Debian's docker-registry (no Docker engine needed) checks the $2b$ line Python's bcrypt wrote."""
    from stackpatch.sandbox.registry import free_port
    reg = Registry(tmp_path, free_port())
    assert reg.ensure_credentials() and not reg.ensure_credentials()  # once, then kept
    line = (reg.dir / "htpasswd").read_text()
    user, password = reg.credentials()
    assert line.startswith(f"{user}:$2b$05$") and password not in line
    assert oct((reg.dir / "htpasswd").stat().st_mode & 0o777) == "0o600"
    assert oct(reg.env_file.stat().st_mode & 0o777) == "0o600"
    try:
        reg.start()
        assert get(f"http://{reg.host}/v2/")[0] == 401
        assert get(f"http://{reg.host}/v2/", auth=(user, password + "x"))[0] == 401
        assert get(f"http://{reg.host}/v2/", auth=(user, password))[0] == 200
    finally:
        assert reg.stop()
    assert reg.pid() is None


# ------------------------------------------------------------------ bad input

def test_no_engine_one_line_exit_2(tmp_path):
    d = tmp_path / "sb"
    proc = run_cli("sandbox", "up", "--dir", str(d), env={"DOCKER_HOST": f"unix://{tmp_path}/no/docker.sock"})
    line = one_error_line(proc)
    assert "no Docker engine" in line and ("make setup" in line or "dockerd" in line)
    assert not d.exists()  # nothing changed


def test_engine_socket_refusing_is_one_line(tmp_path):
    # a socket path that exists but where no engine listens
    sock_path = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))
    s.close()  # bound, never listening: connections are refused
    proc = run_cli("sandbox", "up", "--dir", str(tmp_path / "sb"), env={"DOCKER_HOST": f"unix://{sock_path}"})
    line = one_error_line(proc)
    assert "no Docker engine answers" in line
    assert not (tmp_path / "sb").exists()


@pytest.mark.docker
def test_dir_under_a_regular_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    proc = run_cli("sandbox", "up", "--dir", str(f / "sb"))
    line = one_error_line(proc)
    assert "sandbox dir" in line and "--dir" in line


@pytest.mark.docker
def test_taken_registry_port_is_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        d = tmp_path / "sb"
        proc = run_cli("sandbox", "up", "--dir", str(d), "--name", unique("pt"), "--registry-port", str(port))
        line = one_error_line(proc)
        assert str(port) in line and "taken" in line
    assert not d.exists()


def test_bad_name_is_refused_and_down_of_nothing_is_not_an_error(tmp_path):
    line = one_error_line(run_cli("sandbox", "up", "--dir", str(tmp_path / "x"), "--name", "Bad Name!"))
    assert "sandbox name" in line
    assert not (tmp_path / "x").exists()
    down = run_cli("sandbox", "down", "--dir", str(tmp_path / "nothing-here"))
    assert down.returncode == 0 and "nothing to remove" in down.stderr
    line = one_error_line(run_cli("sandbox", "status", "--dir", str(tmp_path / "nothing-here")))
    assert "no sandbox" in line and "sandbox up" in line


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/mmdebstrap").exists(), reason="needs root and mmdebstrap")
def test_mmdebstrap_failure_is_a_one_line_user_error(tmp_path, monkeypatch):
    from stackpatch.errors import UserError
    monkeypatch.setattr(baseimage, "SUITE", "no-such-suite")  # a real mmdebstrap run that fails
    with pytest.raises(UserError) as e:
        baseimage.build(tmp_path / "work")
    msg = str(e.value)
    assert "\n" not in msg and "mmdebstrap failed" in msg and "Debian mirror" in msg
    assert list((tmp_path / "work").iterdir()) == []  # the temporary tar is gone


@pytest.mark.docker
def test_verify_stack_file_runs_the_release_images_with_its_own_db(sandbox):
    """deploy/verify.yml (what stackpatch's verification step deploys) works with the pushed images."""
    from stackpatch.sandbox import stack as stack_mod
    from stackpatch.sandbox.registry import free_port
    name = f"{unique('v')}-verify"
    port = free_port()
    c = docker.from_env()
    try:
        stack_mod.deploy(name, sandbox.app_dir / "deploy" / "verify.yml",
                         {"IMAGE_APP": sandbox.images["app"], "IMAGE_FRONT": sandbox.images["front"],
                          "FRONT_PORT": str(port)}, sandbox.docker_config)
        stack_mod.wait_healthy(c, name, {"phpha", "web", "db"}, timeout=180)
        got = stack_mod.wait_version(f"http://127.0.0.1:{port}", "26.11.1", sandbox.revision)
        assert got["revision"] == sandbox.revision
        assert get(f"http://127.0.0.1:{port}/health")[0] == 200
        assert c.volumes.list(filters={"label": f"com.docker.stack.namespace={name}"}) == []  # throwaway db
    finally:
        stack_mod.remove(c, name)
