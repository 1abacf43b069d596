"""The example application repo: rendered from template/, with git-flow history and a bare origin.

History (like a real git-flow repo): master "Initial commit"; develop with the app; a release branch
bumping VERSION, merged into master (--no-ff) and tagged 26.11.1 (annotated), merged back into
develop (so develop is one merge commit ahead). All pushed to the bare origin.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Callable

from stackpatch import git
from stackpatch.errors import FaultError

TEMPLATE = Path(__file__).resolve().parent / "template"
RELEASE = "26.11.1"
AUTHOR = ("stackpatch sandbox", "sandbox@stackpatch.invalid")
GITFLOW = {
    "gitflow.branch.master": "master",
    "gitflow.branch.develop": "develop",
    "gitflow.prefix.feature": "feature/",
    "gitflow.prefix.bugfix": "bugfix/",
    "gitflow.prefix.release": "release/",
    "gitflow.prefix.hotfix": "hotfix/",
    "gitflow.prefix.support": "support/",
    "gitflow.prefix.versiontag": "",
}


def configure(repo: Path) -> None:
    """Local config every sandbox clone needs: an identity, no signing, the git-flow keys."""
    for k, v in {"user.name": AUTHOR[0], "user.email": AUTHOR[1], "commit.gpgsign": "false",
                 "tag.gpgsign": "false", **GITFLOW}.items():
        git.run("config", k, v, cwd=repo)


def is_valid(app_dir: Path, origin_dir: Path) -> bool:
    if not (app_dir / ".git").is_dir() or not (origin_dir / "HEAD").is_file():
        return False
    tag_sha = git.rev(f"refs/tags/{RELEASE}", cwd=origin_dir)
    return bool(tag_sha) and git.rev(f"refs/tags/{RELEASE}", cwd=app_dir) == tag_sha


def render(text: str, values: dict[str, str]) -> str:
    for k, v in values.items():
        text = text.replace(f"@@{k}@@", v)
    left = re.findall(r"@@[A-Z_]+@@", text)
    if left:
        raise FaultError(f"template placeholders left unrendered: {', '.join(sorted(set(left)))}")
    return text


def _copy(rel: str, dst: Path, values: dict[str, str]) -> None:
    src = TEMPLATE / rel
    out = dst / rel
    if src.is_dir():
        for p in sorted(src.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                _copy(str(p.relative_to(TEMPLATE)), dst, values)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    if rel == "stackpatch.toml":
        out.write_text(render(src.read_text(), values))
    else:
        shutil.copyfile(src, out)


def _commit(repo: Path, msg: str, *paths: str) -> None:
    git.run("add", "--", *paths, cwd=repo)
    git.run("commit", "--quiet", "-m", msg, cwd=repo)


def create(app_dir: Path, origin_dir: Path, values: dict[str, str],
           grow: Callable[[Path], Any] | None = None) -> str:
    """Create the repo and its origin (removing half-made leftovers). Returns the full sha of the tag's commit.
    `grow(app_dir)` runs on develop before the release is cut (it may commit there)."""
    for d in (app_dir, origin_dir):
        if d.exists():
            shutil.rmtree(d)
    git.run("init", "--quiet", "--bare", "-b", "master", str(origin_dir))
    git.run("init", "--quiet", "-b", "master", str(app_dir))
    configure(app_dir)
    git.run("remote", "add", "origin", str(origin_dir), cwd=app_dir)

    _copy("README.md", app_dir, values)
    _copy(".gitignore", app_dir, values)
    _commit(app_dir, "Initial commit", "README.md", ".gitignore")

    git.run("checkout", "--quiet", "-b", "develop", cwd=app_dir)
    for rel in ("app", "migrations/001_create_files.sql", "docker/app"):
        _copy(rel, app_dir, values)
    _commit(app_dir, "App server with /health and /version, first migration, app image",
            "app", "migrations", "docker")
    for rel in ("front", "docker/front"):
        _copy(rel, app_dir, values)
    _commit(app_dir, "Front: nginx serving fingerprinted static assets, proxying to the app's tasks",
            "front", "docker")
    for rel in ("migrations/002_add_files_size.sql", "migrations/003_create_notes.sql", "deploy",
                "stackpatch.toml"):
        _copy(rel, app_dir, values)
    (app_dir / "VERSION").write_text(f"{RELEASE}-dev\n")
    _commit(app_dir, "Production stack with an HAProxy edge, verification stack, stackpatch config, "
            "files.size and notes migrations", "migrations", "deploy", "stackpatch.toml", "VERSION")
    if grow is not None:
        grow(app_dir)

    branch = f"release/{RELEASE}"
    git.run("checkout", "--quiet", "-b", branch, "develop", cwd=app_dir)
    (app_dir / "VERSION").write_text(f"{RELEASE}\n")
    _commit(app_dir, f"Bump version to {RELEASE}", "VERSION")
    git.run("checkout", "--quiet", "master", cwd=app_dir)
    git.run("merge", "--quiet", "--no-ff", "-m", f"Merge branch '{branch}'", branch, cwd=app_dir)
    git.run("tag", "-a", RELEASE, "-m", f"Release {RELEASE}", cwd=app_dir)
    git.run("checkout", "--quiet", "develop", cwd=app_dir)
    git.run("merge", "--quiet", "--no-ff", "-m", f"Merge tag '{RELEASE}' into develop", RELEASE, cwd=app_dir)
    git.run("branch", "--quiet", "-d", branch, cwd=app_dir)

    git.run("push", "--quiet", "-u", "origin", "master", "develop", cwd=app_dir)
    git.run("push", "--quiet", "origin", f"refs/tags/{RELEASE}", cwd=app_dir)
    sha = git.rev(RELEASE, cwd=app_dir)
    if not sha:
        raise FaultError(f"the example repo has no tag {RELEASE} after creating it")
    return sha


def clone(origin_src: Path, dst: Path) -> tuple[Path, Path]:
    """An independent copy: a new bare origin (same branches and tags) and a working clone on develop."""
    origin = dst / "origin.git"
    app = dst / "app"
    git.run("clone", "--quiet", "--bare", str(origin_src), str(origin))
    git.run("clone", "--quiet", "--branch", "develop", str(origin), str(app))
    git.run("fetch", "--quiet", "--tags", "origin", cwd=app)
    git.run("branch", "--quiet", "--track", "master", "origin/master", cwd=app)
    configure(app)
    return app, origin
