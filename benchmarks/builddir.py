"""Clean build dir: cold clone vs incremental sync on a 20,000-file repo (run: python benchmarks/builddir.py).

Not a test: prints the measured times. Uses temp dirs only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def g(*a: str, cwd: Path) -> str:
    return subprocess.run(["git", *a], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def main(files: int = 20000) -> None:
    with tempfile.TemporaryDirectory(prefix="stackpatch-bench-") as tmp:
        root = Path(tmp)
        os.environ["STACKPATCH_CACHE_DIR"] = str(root / "cache")
        from stackpatch.images import workdir
        origin, repo = root / "origin.git", root / "repo"
        g("init", "-q", "--bare", str(origin), cwd=root)
        g("init", "-q", str(repo), cwd=root)
        g("config", "user.email", "bench@example.com", cwd=repo)
        g("config", "user.name", "bench", cwd=repo)
        for i in range(files):
            d = repo / f"src/m{i % 200}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i}.py").write_text(f"x = {i}\n" * 200)
        g("add", ".", cwd=repo)
        g("commit", "-qm", "big", cwd=repo)
        g("remote", "add", "origin", str(origin), cwd=repo)
        g("push", "-q", "origin", "HEAD:refs/heads/master", cwd=repo)
        w = workdir.sync(repo, "origin", g("rev-parse", "HEAD", cwd=repo))
        print(f"cold clone, {files} files: {w.seconds:.2f}s")
        (repo / "src/m0/f0.py").write_text("x = 'fixed'\n")
        g("commit", "-qam", "one line", cwd=repo)
        g("push", "-q", "origin", "HEAD:refs/heads/master", cwd=repo)
        w = workdir.sync(repo, "origin", g("rev-parse", "HEAD", cwd=repo))
        print(f"incremental, one file changed: {w.seconds:.2f}s")
        w = workdir.sync(repo, "origin", g("rev-parse", "HEAD", cwd=repo))
        print(f"incremental, nothing changed: {w.seconds:.2f}s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
