"""Issue 6 section 4: the clean build directory, incremental sync against a fresh clone.

Generates a repo of N files (default 10,000) with a bare "origin", warms stackpatch's build directory
once, then changes ONE file, commits and pushes it, and times
- the incremental sync with stackpatch's real build-dir code (`stackpatch.images.workdir.sync`),
- a fresh clone of the same remote (what the manual routine does every time; `file://`, so git uses its
  pack protocol and not hard links, as it would over the network).

    python benchmarks/builddir_bench.py [--files 10000] [--scaling 1000,30000] [--repeat 3] [--out result.json]

`--scaling` repeats the measure at several repo sizes: the incremental sync should grow with the change,
not with the repo. Exit 3 when stackpatch's build-dir module is not available (nothing is faked).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from stackpatch import git  # noqa: E402

IDENTITY = ("-c", "user.name=stackpatch bench", "-c", "user.email=bench@stackpatch.invalid")


class Pending(RuntimeError):
    """stackpatch's build-dir code is not there: the incremental figure cannot be measured."""


def check_available() -> None:
    try:
        import stackpatch.images.workdir  # noqa: F401
    except ImportError as e:
        raise Pending(f"stackpatch.images.workdir is not available ({e})") from None


def incremental_sync(repo: Path, remote: str, sha: str, dest: Path) -> None:
    """The one boundary to stackpatch: make `dest` a clean checkout of `sha` from `repo`'s `remote`."""
    try:
        from stackpatch.images.workdir import sync
    except ImportError as e:
        raise Pending(f"stackpatch.images.workdir is not available ({e})") from None
    sync(repo, remote, sha, dest=dest)


def generate(root: Path, files: int) -> tuple[Path, Path]:
    """A working repo `dev` with `files` files over 100-file folders, pushed to a bare `origin.git`."""
    origin, dev = root / "origin.git", root / "dev"
    git.run("init", "--quiet", "--bare", "--initial-branch=master", str(origin))
    git.run("init", "--quiet", "--initial-branch=master", str(dev))
    for i in range(files):
        d = dev / f"pkg{i // 100:03d}"
        if i % 100 == 0:
            d.mkdir()
        (d / f"mod{i % 100:02d}.py").write_text(
            f'"""module {i}"""\n\n' + "".join(f"def f{j}(x):\n    return x * {i} + {j}\n\n" for j in range(8)))
    git.run("add", "--all", cwd=dev, timeout=600)
    git.run(*IDENTITY, "commit", "--quiet", "-m", f"{files} files", cwd=dev, timeout=600)
    git.run("remote", "add", "origin", origin.as_uri(), cwd=dev)
    git.run("push", "--quiet", "origin", "master", cwd=dev, timeout=600)
    return origin, dev


def change_one_file(dev: Path) -> str:
    f = dev / "pkg000" / "mod00.py"
    f.write_text(f.read_text() + f"# hotfix {time.time_ns()}\n")
    git.run("add", str(f), cwd=dev)
    git.run(*IDENTITY, "commit", "--quiet", "-m", "one-line hotfix", cwd=dev)
    git.run("push", "--quiet", "origin", "master", cwd=dev)
    return git.out("rev-parse", "HEAD", cwd=dev)


def measure(files: int, workroot: Path | None = None, repeat: int = 3) -> dict[str, Any]:
    """Medians over `repeat` rounds of: change one file, push, sync the build dir; fresh clone."""
    root = Path(tempfile.mkdtemp(prefix="stackpatch-builddir-bench-", dir=workroot))
    try:
        t = time.perf_counter()
        origin, dev = generate(root, files)
        generate_s = time.perf_counter() - t
        dest = root / "builddir"
        base = git.out("rev-parse", "HEAD", cwd=dev)
        t = time.perf_counter()
        incremental_sync(dev, "origin", base, dest)          # the first, cold sync (a clone)
        cold_s = time.perf_counter() - t
        incremental, fresh = [], []
        for i in range(repeat):
            # a real build dir was synced minutes before the hotfix; without this pause every file written
            # by the previous sync is "racily clean" (same second as the index) and git re-reads them all
            time.sleep(1.1)
            sha = change_one_file(dev)
            t = time.perf_counter()
            incremental_sync(dev, "origin", sha, dest)       # the measured one: one file changed
            incremental.append(time.perf_counter() - t)
            if git.out("rev-parse", "HEAD", cwd=dest) != sha:
                raise RuntimeError("the build directory is not at the pushed commit after the sync")
            t = time.perf_counter()
            git.run("clone", "--quiet", origin.as_uri(), str(root / f"fresh{i}"), timeout=1800)
            fresh.append(time.perf_counter() - t)
            shutil.rmtree(root / f"fresh{i}")
        return {"files": files, "incremental_s": round(statistics.median(incremental), 4),
                "fresh_clone_s": round(statistics.median(fresh), 4), "cold_sync_s": round(cold_s, 4),
                "changed_files": 1, "repeat": repeat, "incremental_runs_s": [round(x, 4) for x in incremental],
                "fresh_clone_runs_s": [round(x, 4) for x in fresh], "generate_s": round(generate_s, 2)}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10_000, help="files in the generated repo (default 10000)")
    ap.add_argument("--scaling", help="also measure at these sizes, e.g. 1000,10000")
    ap.add_argument("--repeat", type=int, default=3, help="rounds per size; medians are reported (default 3)")
    ap.add_argument("--tmp", help="where to generate the repos (default: the system temp dir)")
    ap.add_argument("--out", help="write the JSON result here too")
    args = ap.parse_args(argv)
    tmp = Path(args.tmp) if args.tmp else None
    try:
        check_available()
        result = measure(args.files, tmp, args.repeat)
        if args.scaling:
            result["scaling"] = [measure(int(n), tmp, args.repeat) for n in args.scaling.split(",") if n.strip()]
    except Pending as e:
        print(f"builddir_bench: PENDING: {e}; the incremental figure is not measured", file=sys.stderr)
        return 3
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
