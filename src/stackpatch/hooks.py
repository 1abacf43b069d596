"""Hooks: the team's own executables, run at fixed points of ship, deploy, rollback and finish.

A hook is an executable file named after its point in the hooks directory (`[hooks] dir`, default
`.stackpatch/hooks/`); a missing file is no hook. It runs with the repo as its working directory,
stdin closed, stdout and stderr streamed line by line through the Reporter, and `[hooks] timeout`
seconds to finish (then its process group is killed).

  pre-ship       before anything is built                 `ship`
  pre-deploy     after the push, before the lock           `ship`, `deploy`
  post-deploy    after the purge                           `ship`, `deploy`, `resume`
  post-rollback  after any rollback (automatic, `abort`, `rollback`)
  pre-finish     before the merges                         `finish`
  post-finish    after the push of the merges and tag      `finish`

A `pre-*` hook that exits non-zero (or times out) stops the command before it changes anything: a
UserError (exit 2) naming the hook and its last line of output. A `post-*` hook's failure is reported
and journaled (record kind `hook`) and changes no outcome. Always an argv, never a shell string.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stackpatch.errors import UserError
from stackpatch.reporter import Reporter

PRE = ("pre-ship", "pre-deploy", "pre-finish")
POST = ("post-deploy", "post-rollback", "post-finish")
NAMES = PRE + POST


@dataclass
class HookResult:
    name: str
    path: str
    exit_code: int | None      # None: killed after the timeout, interrupted, or could not start
    last_line: str
    seconds: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        if self.timed_out:
            how = "did not finish in time and was killed"
        elif self.exit_code is None:
            how = "could not run"
        else:
            how = f"exited {self.exit_code}"
        return f"hook {self.name} ({self.path}) {how}: {self.last_line or '(no output)'}"


def settings_for(root: Path, cfg: Any = None):
    """The `[hooks]` settings: from a loaded Config, else only that table of the repo's file."""
    from stackpatch import config as config_mod
    if cfg is not None:
        return cfg.hooks
    return config_mod.load_section(root, "hooks", config_mod.HooksConfig) or config_mod.HooksConfig()


def hooks_dir(root: Path, settings) -> Path:
    d = Path(settings.dir)
    return d if d.is_absolute() else Path(root) / d


def find(root: Path, settings, name: str, reporter: Reporter | None = None) -> Path | None:
    """The hook's file when it can run; a file that is there but not executable is ignored, with a warning
    (as git does)."""
    assert name in NAMES, name
    p = hooks_dir(root, settings) / name
    if not p.is_file():
        return None
    if not os.access(p, os.X_OK):
        if reporter is not None:
            reporter.warn(f"hook {p} is not executable and was ignored: `chmod +x {p}` to run it")
        return None
    return p


def variables(cfg: Any = None, *, version: str | None, revision: str | None, previous_version: str | None,
              run_id: str | None, operation: str, result: str | None = None,
              extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a hook gets. `cfg` may be None (finish with an incomplete config): the target's
    variables are then empty."""
    from stackpatch.release.journal import owner_host_pid
    target = getattr(cfg, "target", None)
    out = {
        "STACKPATCH_VERSION": version or "",
        "STACKPATCH_REVISION": revision or "",
        "STACKPATCH_PREVIOUS_VERSION": previous_version or "",
        "STACKPATCH_TARGET": (getattr(cfg, "target_name", None) or "default") if target is not None else "",
        "STACKPATCH_STACK": target.stack if target is not None else "",
        "STACKPATCH_RUN_ID": run_id or "",
        "STACKPATCH_PERFORMER": owner_host_pid()[0],
        "STACKPATCH_SERVICES": ",".join(target.services) if target is not None else "",
        "STACKPATCH_OPERATION": operation,
    }
    if result is not None:
        out["STACKPATCH_RESULT"] = result
    hooks = getattr(cfg, "hooks", None)
    if hooks is not None and hooks.ci_status_command:
        import json
        out["STACKPATCH_CI_STATUS_COMMAND"] = json.dumps(hooks.ci_status_command)
    out.update(extra or {})
    return out


def run(root: Path, settings, name: str, env_vars: dict[str, str], reporter: Reporter) -> HookResult | None:
    """Run hook `name` if there is one; stream its output; None when there is no hook."""
    path = find(root, settings, name, reporter)
    if path is None:
        return None
    reporter.step(f"hook {name}")
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen([str(path)], cwd=str(root), env={**os.environ, **env_vars},
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as e:
        return HookResult(name, str(path), None, f"{type(e).__name__}: {e.strerror or e}", 0.0)
    last = ""
    timed_out = False
    deadline = t0 + settings.timeout
    buf = b""
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)

    def emit(raw: bytes) -> None:
        nonlocal last
        line = raw.decode(errors="replace").rstrip("\r")
        if line.strip():
            last = line.strip()
        reporter.info(f"{name} │ {line}")

    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if not sel.select(min(left, 1.0)):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for ln in lines:
                emit(ln)
        if buf:
            emit(buf)
        if not timed_out:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
    except KeyboardInterrupt:
        _kill(proc)
        return HookResult(name, str(path), None, "interrupted", time.monotonic() - t0)
    finally:
        sel.close()
        proc.stdout.close()
    if timed_out:
        _kill(proc)
        return HookResult(name, str(path), None, f"killed after {settings.timeout:.0f}s ([hooks] timeout)"
                          + (f"; last output: {last}" if last else ""), time.monotonic() - t0, timed_out=True)
    return HookResult(name, str(path), proc.returncode, last, time.monotonic() - t0)


def _kill(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def pre(root: Path, settings, name: str, env_vars: dict[str, str], reporter: Reporter, *, unchanged: str) -> None:
    """Run a `pre-*` hook; a failure stops the command: UserError (exit 2). `unchanged` says what the
    refusal left as it was (e.g. "nothing was built")."""
    assert name in PRE, name
    res = run(root, settings, name, env_vars, reporter)
    if res is None:
        return
    if not res.ok:
        raise UserError(f"{res.describe()} — stopped: {unchanged}")
    reporter.ok(f"hook {name}: ok ({res.seconds:.1f}s)")


def post(root: Path, settings, name: str, env_vars: dict[str, str], reporter: Reporter,
         journal=None) -> HookResult | None:
    """Run a `post-*` hook; a failure is reported (a warning) and journaled, never raised."""
    assert name in POST, name
    try:
        res = run(root, settings, name, env_vars, reporter)
    except Exception as e:  # noqa: BLE001 - a post hook never changes the outcome
        res = HookResult(name, str(hooks_dir(root, settings) / name), None, f"{type(e).__name__}: {e}", 0.0)
    if res is None:
        return None
    if journal is not None:
        try:
            journal.append("hook", hook=name, ok=res.ok, exit_code=res.exit_code, timed_out=res.timed_out,
                           seconds=round(res.seconds, 3), detail=None if res.ok else res.last_line)
        except OSError as e:
            reporter.warn(f"could not journal hook {name}: {e}")
    if res.ok:
        reporter.ok(f"hook {name}: ok ({res.seconds:.1f}s)")
    else:
        reporter.warn(f"{res.describe()} (the outcome stands)")
    return res
