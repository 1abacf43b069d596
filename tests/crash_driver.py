"""Run one stackpatch operation against the file-backed target and SIGKILL this process at a chosen point.

    python -m tests.crash_driver --repo DIR [--state FILE] --op deploy|resume|abort|rollback
                                 [--release FILE] [--kill record:N | call:METHOD:K]

--state FILE    the file-backed in-memory target; without it, the target of the repo's stackpatch.toml
                (the real swarm of the sandbox)

record:N        kill right after the N-th journal record THIS process writes is on disk (fsync'ed);
intent:STEP     kill right after the intent of STEP (not an undo) is on disk;
call:METHOD:K   kill right after the K-th call of the target's METHOD returned (create_lock: the lock is
                taken, nothing journaled yet; start_job: the release job exists, nothing looked at it).

The kill is a real `kill -9` of the process (no handler, no finally, no atexit), as a crash or an OOM
kill would be. The wrapping lives here, around `Journal.append` and the target, never in product code.
Without --kill the operation runs to its end; the exit status is 0 on success, 1 on a FaultError.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class Hooked:
    """A real Target whose protocol calls report to `after(method, result)` once they returned."""

    def __init__(self, target, after):
        self._t, self._after = target, after

    def __getattr__(self, name: str):
        attr = getattr(self._t, name)
        if not callable(attr) or self._after is None or name.startswith("_"):
            return attr

        def call(*a, **kw):
            result = attr(*a, **kw)
            self._after(name, result)
            return result
        return call


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--state")
    ap.add_argument("--op", required=True, choices=["deploy", "resume", "abort", "rollback"])
    ap.add_argument("--release")
    ap.add_argument("--kill", default="")
    a = ap.parse_args(argv)

    from stackpatch import config
    from stackpatch.errors import StackpatchError
    from stackpatch.release import deploy as D
    from stackpatch.release import journal as J
    from stackpatch.release.model import Release
    from stackpatch.reporter import Recorder

    from tests.fakes.file_target import FileTarget

    kind, _, rest = a.kill.partition(":")
    if kind in ("record", "intent"):
        left = int(rest) if kind == "record" else 1
        append = J.Journal.append

        def counted(self, k, **data):
            nonlocal left
            rec = append(self, k, **data)
            if kind == "record" or (k == "intent" and data.get("step") == rest and not data.get("undo")):
                left -= 1
            if left == 0:
                die()
            return rec
        J.Journal.append = counted  # type: ignore[method-assign]
        after = None
    elif kind == "call":
        method, _, n = rest.partition(":")
        calls = {"left": int(n)}

        def after(name, result):
            if name == method and result not in (None, False):
                calls["left"] -= 1
                if calls["left"] == 0:
                    die()
    else:
        after = None

    cfg = config.load(Path(a.repo))
    if a.state:
        target = FileTarget(Path(a.state), after=after)
    else:
        from stackpatch import targets
        target = Hooked(targets.for_config(cfg), after)
    rep = Recorder()
    try:
        if a.op == "deploy":
            rel = Release.from_json(json.loads(Path(a.release).read_text()))
            res = D.deploy(cfg, rel, yes=True, pause=False, reporter=rep, target=target)
        elif a.op == "resume":
            res = D.resume(cfg, reporter=rep, target=target)
        elif a.op == "abort":
            res = D.abort(cfg, reporter=rep, target=target)
        else:
            res = D.rollback(cfg, reporter=rep, target=target)
    except StackpatchError as e:
        print(json.dumps({"error": str(e)}))
        return 1
    print(json.dumps(res.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
