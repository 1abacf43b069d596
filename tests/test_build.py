"""Refusals of `plan` / `ship --until pushed` against the real sandbox (registry with auth, swarm, dockerd).

One fork per module: these tests change git and the registry, never the fork's running stack. Each test
ships its own hotfix version so that none sees another's tags.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from stackpatch import config as config_mod
from stackpatch.images import registry as registry_mod

CLI = str(Path(sys.executable).with_name("stackpatch"))


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def run(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)


def assert_one_line_refusal(res: subprocess.CompletedProcess, code: int, pattern: str) -> str:
    assert res.returncode == code, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("stackpatch: error: ")]
    assert len(errors) == 1, res.stderr[-3000:]
    assert re.search(pattern, errors[0]), errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def mfork(sandbox, tmp_path_factory):
    from stackpatch.sandbox import api
    stack = f"b{uuid.uuid4().hex[:8]}-prod"
    try:
        yield api.fork(sandbox, tmp_path_factory.mktemp("buildfork"), stack)
    finally:
        api.remove_stack(stack)


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "STACKPATCH_CACHE_DIR": str(tmp_path / "cache")}


def hotfix(fork, version: str, path: str = "app/server.py", line: str | None = None) -> str:
    """hotfix/<version> from 26.11.1 with one appended line in `path`, pushed. Returns its sha."""
    app = fork.app_dir
    git("checkout", "-q", "-f", "develop", cwd=app)
    git("checkout", "-q", "-b", f"hotfix/{version}", "26.11.1", cwd=app)
    p = app / path
    p.write_text(p.read_text() + (line or f"# hotfix {version}\n"))
    git("commit", "-q", "-am", f"fix for {version}", cwd=app)
    git("push", "-q", "-u", "origin", f"hotfix/{version}", cwd=app)
    return git("rev-parse", "HEAD", cwd=app)


@contextmanager
def edited_config(fork, *subs: tuple[str, str], append: str = ""):
    """Change the fork's stackpatch.toml (skip-worktree: git status stays clean) and restore it after."""
    p = Path(fork.config_path)
    orig = p.read_text()
    text = orig
    for pat, repl in subs:
        text, n = re.subn(pat, repl, text, count=1, flags=re.M)
        assert n == 1, pat
    p.write_text(text + append)
    try:
        yield
    finally:
        p.write_text(orig)


def registry_tags(fork, image: str) -> list[str]:
    cfg = config_mod.load(fork.config_path)
    reg = registry_mod.for_config(cfg)
    return reg.tags(registry_mod.split_repository(cfg.image_ref(image))[1])


def verify_stack_gone(res: subprocess.CompletedProcess) -> None:
    m = re.search(r"throwaway stack (spverify-[0-9a-f]+)", res.stderr)
    assert m, res.stderr[-2000:]
    stack = m.group(1)
    services = subprocess.run(["docker", "service", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={stack}"],
                              capture_output=True, text=True).stdout.split()
    volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={stack}"],
                             capture_output=True, text=True).stdout.split()
    assert services == [] and volumes == [], (stack, services, volumes)


def test_ship_pause_without_a_terminal_refuses_before_anything(tmp_path):
    res = subprocess.run([CLI, "ship", "--pause"], cwd=tmp_path, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    assert_one_line_refusal(res, 2, r"--pause asks a person.*no terminal.*--yes")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.docker
def test_ship_refuses_without_yes_when_stdin_is_not_a_terminal(mfork, env):
    hotfix(mfork, "26.11.1c")
    res = run("ship", "--until", "pushed", cwd=mfork.app_dir, env=env)
    assert_one_line_refusal(res, 2, r"stdin is not a terminal, so pass --yes")
    assert "26.11.1c" not in registry_tags(mfork, "app")


@pytest.mark.docker
def test_a_wrong_registry_password_is_refused_before_building(mfork, env):
    sha = hotfix(mfork, "26.11.1d")
    bad = {**env, "SANDBOX_REGISTRY_PASSWORD": "wrong-" + secrets.token_hex(4)}
    res = run("ship", "--until", "pushed", "--yes", cwd=mfork.app_dir, env=bad)
    line = assert_one_line_refusal(res, 2, r"registry 127\.0\.0\.1:\d+ refused the login for user '.+' \(401\)")
    assert bad["SANDBOX_REGISTRY_PASSWORD"] not in res.stderr + res.stdout + line
    assert "build" not in res.stderr.lower().replace("build log", "")
    assert f"git-commit-{sha[:7]}" not in registry_tags(mfork, "app")
    res = run("plan", cwd=mfork.app_dir, env=bad)
    assert_one_line_refusal(res, 2, r"refused the login")


@pytest.mark.docker
def test_a_push_refused_inside_the_stream_is_a_failure(mfork, sandbox):
    """docker-py reports a refused push as an errorDetail record in an HTTP 200 stream: it must fail.

    The sandbox registry authenticates with htpasswd, which authorizes every valid user for every
    namespace: it cannot answer 403. What it really does for bad credentials mid-push is this.
    """
    import docker

    from stackpatch.images.push import PushError, push_image
    from stackpatch.images.registry import Credentials, Registry
    cfg = config_mod.load(mfork.config_path)
    client = docker.from_env()
    repo = f"{cfg.registry.host}/{cfg.registry.namespace}/denied"
    tag = f"t{uuid.uuid4().hex[:8]}"
    img = client.images.get(sandbox.base_image)
    img.tag(repo, tag)
    try:
        user, _ = config_mod.registry_credentials(cfg)
        bad = Credentials(user or "x", "not-the-password", "test")
        with pytest.raises(PushError, match=rf"refused the push of {tag} \(unauthorized"):
            import time
            from stackpatch.reporter import Recorder
            push_image(client, Registry(cfg.registry.host, bad), bad, "denied", repo, (tag,), img.id,
                       time.monotonic() + 120, Recorder())
        assert registry_mod.for_config(cfg).tags(f"{cfg.registry.namespace}/denied") == []
    finally:
        client.images.remove(f"{repo}:{tag}")


@pytest.mark.docker
def test_a_failing_dockerfile_shows_the_log_tail_stops_the_other_build_and_pushes_nothing(mfork, env):
    """The two images are built side by side: app's Dockerfile fails while front's is still in a long
    step, and that build is stopped, not waited for: front never gets its new tag."""
    app = mfork.app_dir
    git("checkout", "-q", "-f", "develop", cwd=app)
    git("checkout", "-q", "-b", "hotfix/26.11.1e", "26.11.1", cwd=app)
    for path, line in (("docker/app/Dockerfile", "RUN sleep 10 && echo broken-step-output && exit 3\n"),
                       ("docker/front/Dockerfile", "RUN echo front-long-step && sleep 600\n")):
        (app / path).write_text((app / path).read_text() + line)
    git("commit", "-q", "-am", "fix for 26.11.1e", cwd=app)
    git("push", "-q", "-u", "origin", "hotfix/26.11.1e", cwd=app)
    sha = git("rev-parse", "HEAD", cwd=app)
    res = run("ship", "--until", "pushed", "--yes", cwd=app, env=env)
    line = assert_one_line_refusal(res, 2, r"image 'app' failed to build \(exit 1\): .*; log: /")
    log = Path(line.rsplit("log: ", 1)[1])
    text = log.read_text()
    assert log.is_file() and "app | " in text and "broken-step-output" in text
    assert "front | " in text and "front-long-step" in text  # both were under way at once
    assert "build of app failed; last lines of" in res.stderr and "broken-step-output" in res.stderr
    assert "build of front failed" not in res.stderr
    assert "side by side" in res.stderr
    assert "docker/app/Dockerfile" in res.stdout  # flagged as risky by the plan
    cfg = config_mod.load(mfork.config_path)
    front = cfg.image_ref("front")
    # front's build was stopped mid-step: had the ship waited for it, its new tag would be there
    assert subprocess.run(["docker", "image", "inspect", f"{front}:git-commit-{sha[:7]}"],
                          capture_output=True).returncode != 0
    assert f"git-commit-{sha[:7]}" not in registry_tags(mfork, "app")
    assert f"git-commit-{sha[:7]}" not in registry_tags(mfork, "front")


@pytest.mark.docker
def test_a_missing_build_context_is_refused(mfork, env):
    hotfix(mfork, "26.11.1f")
    with edited_config(mfork, (r'^context = "\."$', 'context = "no-such-dir"')):
        res = run("ship", "--until", "pushed", "--yes", cwd=mfork.app_dir, env=env)
    assert_one_line_refusal(res, 2, r"image 'app': build context 'no-such-dir' does not exist at [0-9a-f]{7}")
    assert "26.11.1f" not in registry_tags(mfork, "app")


@pytest.mark.docker
def test_a_failing_verify_check_pushes_nothing_and_tears_down(mfork, env):
    sha = hotfix(mfork, "26.11.1g")
    extra = ('\n[[verify.checks]]\nname = "migrations apply"\nservice = "phpha"\n'
             'command = ["python3", "/app/migrate.py"]\n'
             '\n[[verify.checks]]\nname = "serves the impossible"\nurl = "{front_url}/version"\n'
             'body_contains = "no-such-text-{revision}"\n\n[timeouts]\ncheck = 2\n')
    with edited_config(mfork, append=extra):
        res = run("ship", "--until", "pushed", "--yes", cwd=mfork.app_dir, env=env)
    assert_one_line_refusal(res, 2, rf"verify check 'serves the impossible' failed: GET http://127\.0\.0\.1:\d+/version "
                                    rf"body does not contain 'no-such-text-{sha}'; no release tag was pushed, nothing was deployed "
                                    rf"\(the layers went up as :stackpatch-prepush-{sha[:7]} while verify ran, untagged "
                                    r"for release\)")
    assert "verify: check migrations apply passed" in res.stderr  # a command check, exec'd in a task of phpha
    verify_stack_gone(res)
    assert f"git-commit-{sha[:7]}" not in registry_tags(mfork, "app")
    assert f"git-commit-{sha[:7]}" not in registry_tags(mfork, "front")
    # the bytes went up while verify ran, under a tag no plan reads: the next ship builds and verifies again
    assert f"stackpatch-prepush-{sha[:7]}" in registry_tags(mfork, "app")
    assert "26.11.1g" not in registry_tags(mfork, "app")


@pytest.mark.docker
def test_a_failing_verify_command_pushes_nothing(mfork, env):
    sha = hotfix(mfork, "26.11.1l")
    extra = ('\n[[verify.checks]]\nname = "revision in the image"\nservice = "phpha"\n'
             'command = ["sh", "-c", "echo checking {revision}; test \\"$APP_REVISION\\" = nope"]\n'
             '\n[timeouts]\ncheck = 2\n')
    with edited_config(mfork, append=extra):
        res = run("ship", "--until", "pushed", "--yes", cwd=mfork.app_dir, env=env)
    assert_one_line_refusal(res, 2, r"verify check 'revision in the image' failed: `sh -c echo checking "
                                    rf"{sha}; .*` in phpha exited 1: checking {sha}; no release tag was pushed, nothing was deployed")
    verify_stack_gone(res)
    assert f"git-commit-{sha[:7]}" not in registry_tags(mfork, "app")


@pytest.mark.docker
def test_a_verify_stack_never_healthy_times_out_and_tears_down(mfork, env):
    sha = hotfix(mfork, "26.11.1h")
    with edited_config(mfork, (r'^stack_file = "deploy/verify.yml"$', 'stack_file = "deploy/verify.yml"\ntimeout = 2')):
        res = run("ship", "--until", "pushed", "--yes", cwd=mfork.app_dir, env=env)
    assert_one_line_refusal(res, 2, r"verify stack never became healthy within 2s \(.*healthy.*\); no release tag was pushed, "
                                    r"nothing was deployed")
    verify_stack_gone(res)
    assert f"git-commit-{sha[:7]}" not in registry_tags(mfork, "app")


@pytest.mark.docker
def test_plan_refuses_an_unreachable_target(mfork, env, tmp_path):
    hotfix(mfork, "26.11.1i")
    dead = f"unix://{tmp_path}/dead.sock"
    with edited_config(mfork, (r'^docker_host = ".*"$', f'docker_host = "{dead}"')):
        res = run("plan", cwd=mfork.app_dir, env=env)
    assert_one_line_refusal(res, 2, rf"the Docker engine at {re.escape(dead)} does not answer \(.*\): start it")
    # without target.docker_host in the file, DOCKER_HOST names the engine
    with edited_config(mfork, (r'^docker_host = ".*"\n', '')):
        res = run("plan", cwd=mfork.app_dir, env={**env, "DOCKER_HOST": dead})
    assert_one_line_refusal(res, 2, rf"the Docker engine at {re.escape(dead)} does not answer")


@pytest.mark.docker
def test_the_password_never_appears_and_a_pushed_version_is_never_retagged(mfork, env, tmp_path):
    sha = hotfix(mfork, "26.11.1j")
    cfg = config_mod.load(mfork.config_path)
    _, password = config_mod.registry_credentials(cfg)
    assert password and len(password) >= 8
    # the legacy builder this time (BuildKit is covered by test_ship_build): same labels, same result
    res = run("ship", "--until", "pushed", "--yes", "--json", cwd=mfork.app_dir, env={**env, "STACKPATCH_BUILDKIT": "0"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "with the legacy builder" in res.stderr
    assert password not in res.stdout and password not in res.stderr
    written = [p for p in Path(env["STACKPATCH_CACHE_DIR"]).rglob("*") if p.is_file()]
    assert any(p.suffix == ".log" for p in written)
    for p in written + [p for p in Path(mfork.app_dir).rglob("*") if p.is_file()]:
        assert password.encode() not in p.read_bytes(), p
    for image in ("app", "front"):
        ref = f"{cfg.image_ref(image)}:git-commit-{sha[:7]}"
        inspect = subprocess.run(["docker", "image", "inspect", ref], capture_output=True, text=True).stdout
        history = subprocess.run(["docker", "history", "--no-trunc", ref], capture_output=True, text=True).stdout
        assert sha in inspect and password not in inspect and password not in history

    # the version tag now holds sha: a different commit on a re-made hotfix/26.11.1j must not reuse it
    app = mfork.app_dir
    git("checkout", "-q", "-f", "develop", cwd=app)
    git("branch", "-q", "-D", "hotfix/26.11.1j", cwd=app)
    git("push", "-q", "origin", "--delete", "hotfix/26.11.1j", cwd=app)
    other = hotfix(mfork, "26.11.1j", line="# another fix, same version\n")
    tags_before = registry_tags(mfork, "app")
    res = run("plan", cwd=app, env=env)
    assert_one_line_refusal(res, 2, rf"tag {re.escape(cfg.image_ref('app'))}:26\.11\.1j already exists in the "
                                    rf"registry at sha256:.* built from {sha[:7]}, not {other[:7]}: tags are never reused")
    assert registry_tags(mfork, "app") == tags_before


@pytest.mark.docker
def test_a_full_disk_while_syncing_is_one_line_and_pushes_nothing(mfork, env, tmp_path):
    """A real full disk: the cache dir is a tiny tmpfs (needs root; skipped otherwise)."""
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        sha = hotfix(mfork, "26.11.1k")
        res = run("ship", "--until", "pushed", "--yes", cwd=mfork.app_dir, env={**env, "STACKPATCH_CACHE_DIR": str(small)})
        assert_one_line_refusal(res, 1, r"disk full while syncing the build directory .*nothing was pushed")
        assert f"git-commit-{sha[:7]}" not in registry_tags(mfork, "app")
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


@pytest.mark.docker
def test_a_full_disk_under_the_build_log_is_one_line_and_pushes_nothing(mfork, env, tmp_path):
    """The build log's directory is a tiny tmpfs, filled up first: the first log write hits ENOSPC."""
    cache = Path(env["STACKPATCH_CACHE_DIR"])
    logs = cache / "logs"
    logs.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(logs)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        fd = os.open(logs / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        sha = hotfix(mfork, "26.11.1m")
        res = run("ship", "--until", "pushed", "--yes", cwd=mfork.app_dir, env=env)
        assert_one_line_refusal(res, 1, rf"disk full writing {re.escape(str(logs))}/.*\.log: free space .*nothing was pushed")
        assert f"git-commit-{sha[:7]}" not in registry_tags(mfork, "app")
    finally:
        subprocess.run(["umount", str(logs)], capture_output=True)
