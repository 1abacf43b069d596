"""The realistic benchmark app (issue 13): the sandbox's example app grown to the seed's size and costs.

`grow(app_dir, spec)` is the `app_hook` that `benchmarks/run.py --app realistic` hands to
`stackpatch.sandbox.api.up`: it runs on the example repo's develop branch, after the app's own commits and
before the release 26.11.1 is cut, and adds

- a history of `spec.commits` commits (default 2,000) through `git fast-import`: the first ones add
  `spec.files` files (default 20,000: generated Python modules under `vendor/acme/` that the app image
  byte-compiles, and JavaScript/CSS sources under `assets/` that the front image bundles), the rest each
  rewrite a dozen of them, so the history packs to at least `spec.history_mb` MB (default 200): content
  that does not compress away, as real history does not;
- a local package index: the wheels of `requirements.txt` (a few dozen, numpy, pandas, Django, boto3, …)
  under `vendor/wheels/`, downloaded once from PyPI into a cache (`wheels()`), then installed offline by
  the image build with `pip --no-index`;
- the example app's Dockerfiles given the work a real app's do (`app.steps`, `front.steps`, inserted after
  FROM), ordered so that a one-line change of `app/` rebuilds only its own layers: dependencies, then the
  vendored code (compiled), then the app.

The manual routine builds these with `--no-cache` (1–4 min on 2 cores); stackpatch and the competent script
build with BuildKit's cache. Nothing here runs in `make test` or `make demo`.
"""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from stackpatch import git

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("STACKPATCH_BENCH_CACHE", Path.home() / ".cache" / "stackpatch" / "bench-wheels"))
# the base image's python3 (Debian bookworm): markers like python_full_version < "3.11.3" depend on it
PYTHON_VERSION = "3.11.2"
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
PIP = "pip==24.3.1"
AUTHOR = "acme developer <dev@acme.invalid>"


@dataclass(frozen=True)
class Spec:
    files: int = 20_000
    commits: int = 2_000
    history_mb: int = 200
    seed: int = 1603


def requirements() -> list[str]:
    return [ln.strip() for ln in (HERE / "requirements.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]


def wheels(cache: Path = CACHE) -> list[Path]:
    """The wheels of requirements.txt (and their dependencies) for the base image's Python, plus pip's own
    (the base image has no pip: the build runs pip from its wheel). Downloaded once, from PyPI."""
    cache.mkdir(parents=True, exist_ok=True)
    stamp = cache / ".complete"
    want = "\n".join(requirements() + [PIP])
    if not (stamp.is_file() and stamp.read_text() == want):
        argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp",
                "--dest", str(cache), *[a for p in PLATFORMS for a in ("--platform", p)],
                "-r", str(HERE / "requirements.txt"), PIP]
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError("could not download the benchmark app's wheels from PyPI into "
                               f"{cache} (pip download: {proc.stderr.strip().splitlines()[-1:]}); "
                               "connect to PyPI once, or fill the cache from another machine")
        stamp.write_text(want)
    return sorted(cache.glob("*.whl"))


# ---------------------------------------------------------------- generated content

def _payload(rng: random.Random, n: int) -> str:
    """n bytes of base64 text: what compresses no further than real source with its data does."""
    return base64.b64encode(rng.randbytes(n * 3 // 4)).decode()


def _module(rng: random.Random, name: str, size: int) -> bytes:
    chunks = [_payload(rng, 64) for _ in range(max(1, size // 80))]
    funcs = "\n\n".join(
        f"def {name}_f{i}(x, y={rng.randrange(1, 9999)}):\n"
        f"    return (x * {rng.randrange(3, 99991)} + y) % {rng.randrange(1000, 65521)}"
        for i in range(8))
    table = ",\n    ".join(f'"{c}"' for c in chunks)
    return f'"""{name}: generated module of the benchmark app"""\n\nTABLE = (\n    {table},\n)\n\n{funcs}\n'.encode()


def _asset(rng: random.Random, path: str, size: int) -> bytes:
    if path.endswith(".css"):
        rules = "\n".join(f".c{rng.randrange(1 << 30):x} {{ color: #{rng.randrange(1 << 24):06x}; "
                          f"background: url(data:image/png;base64,{_payload(rng, 48)}); }}"
                          for _ in range(max(1, size // 110)))
        return rules.encode() + b"\n"
    lines = "\n".join(f'export const k{rng.randrange(1 << 30):x} = "{_payload(rng, 60)}";'
                      for _ in range(max(1, size // 85)))
    return lines.encode() + b"\n"


def paths(spec: Spec) -> list[str]:
    """The generated files: 60 % Python modules (vendor/acme/pNNN/mNNN.py), 40 % assets."""
    n_py = spec.files * 3 // 5
    out = [f"vendor/acme/p{i // 100:03d}/m{i % 100:02d}.py" for i in range(n_py)]
    out += [f"vendor/acme/p{i:03d}/__init__.py" for i in range((n_py + 99) // 100)]
    out += ["vendor/acme/__init__.py"]
    n_assets = spec.files - len(out)
    out += [f"assets/{'css' if i % 4 == 0 else 'js'}/g{i // 200:03d}/a{i % 200:03d}.{'css' if i % 4 == 0 else 'js'}"
            for i in range(n_assets)]
    return out


def _content(rng: random.Random, path: str, size: int) -> bytes:
    if path.endswith("__init__.py"):
        return b""
    if path.endswith(".py"):
        return _module(rng, Path(path).stem, size)
    return _asset(rng, path, size)


def _stream(spec: Spec, branch: str, parent: str, t0: int):
    """fast-import commands: the files added over the first commits, then rewrites until `commits`."""
    rng = random.Random(spec.seed)
    files = paths(spec)
    add_commits = max(1, min(spec.commits // 10, len(files)))
    per_add = -(-len(files) // add_commits)
    rewrites = spec.commits - add_commits
    # what the rewrites must add for the history to reach history_mb (measured: ~62 % of it stays after zlib)
    first_mb = len(files) * 2.2 / 1024
    per_rewrite_bytes = max(0.0, spec.history_mb - first_mb) * 1024 * 1024 / 0.62 / max(1, rewrites)
    touched = 12
    size_rw = int(per_rewrite_bytes / touched) + 1
    for k in range(spec.commits):
        when = t0 + k * 3600
        if k < add_commits:
            batch = files[k * per_add:(k + 1) * per_add]
            msg = f"vendor, assets: part {k + 1} of {add_commits}\n"
            changes = [(p, _content(rng, p, 3000)) for p in batch]
        else:
            batch = [p for p in rng.sample(files, touched) if not p.endswith("__init__.py")]
            msg = f"Rework {', '.join(Path(p).stem for p in batch[:3])} and {len(batch) - 3} more\n"
            changes = [(p, _content(rng, p, size_rw)) for p in batch]
        out = [f"commit refs/heads/{branch}\n", f"author {AUTHOR} {when} +0000\n",
               f"committer {AUTHOR} {when} +0000\n", f"data {len(msg.encode())}\n{msg}"]
        if k == 0:
            out.append(f"from {parent}\n")
        head = "".join(out).encode()
        body = b"".join(b"M 100644 inline " + p.encode() + b"\ndata " + str(len(c)).encode() + b"\n" + c + b"\n"
                        for p, c in changes)
        yield head + body + b"\n"


def import_history(repo: Path, spec: Spec, branch: str = "develop") -> dict:
    """Append spec.commits generated commits to `branch` (checked out in `repo`) and check the work tree
    out. Returns what was made: files, commits, the pack's size in MB."""
    parent = git.out("rev-parse", f"refs/heads/{branch}", cwd=repo)
    t0 = int(git.out("log", "-1", "--format=%ct", parent, cwd=repo)) - spec.commits * 3600
    proc = subprocess.Popen(["git", "fast-import", "--quiet", "--done"], cwd=repo, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for chunk in _stream(spec, branch, parent, t0):
            proc.stdin.write(chunk)
        proc.stdin.write(b"done\n")
        proc.stdin.close()
    except BrokenPipeError:
        pass
    err = proc.stderr.read().decode()
    if proc.wait() != 0:
        raise RuntimeError(f"git fast-import failed: {err.strip()[-500:]}")
    git.run("reset", "--quiet", "--hard", branch, cwd=repo)
    count = int(git.out("rev-list", "--count", branch, cwd=repo))
    pack_kb = sum(int(ln.split()[1]) for ln in git.out("count-objects", "-v", cwd=repo).splitlines()
                  if ln.startswith(("size-pack", "size:")))
    files = len(git.out("ls-files", "--", "vendor", "assets", cwd=repo).splitlines())
    return {"commits": count, "generated_files": files, "history_mb": round(pack_kb / 1024, 1)}


def with_steps(dockerfile: str, steps: str) -> str:
    """The example app's Dockerfile with `steps` inserted right after its FROM line."""
    lines = dockerfile.splitlines(keepends=True)
    at = next((i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")), None)
    if at is None:
        raise RuntimeError("the example app's Dockerfile has no FROM line")
    return "".join(lines[:at + 1]) + steps + "".join(lines[at + 1:])


def write_build(repo: Path, wheel_files: list[Path]) -> None:
    """requirements.txt, the wheels under vendor/wheels/, the asset bundler, and the example app's own
    Dockerfiles (docker/app, docker/front) given the heavy steps of app.steps and front.steps."""
    (repo / "requirements.txt").write_text((HERE / "requirements.txt").read_text())
    dst = repo / "vendor" / "wheels"
    dst.mkdir(parents=True, exist_ok=True)
    for w in wheel_files:
        (dst / w.name).write_bytes(w.read_bytes())
    pip_wheel = next((w.name for w in wheel_files if w.name.startswith("pip-")), None)
    if pip_wheel is None:
        raise RuntimeError("the wheel cache has no pip wheel: remove it and run again")
    (repo / "assets").mkdir(exist_ok=True)
    (repo / "assets" / "bundle.py").write_text((HERE / "bundle.py").read_text())
    for name in ("app", "front"):
        dockerfile = repo / "docker" / name / "Dockerfile"
        steps = (HERE / f"{name}.steps").read_text().replace("@PIP_WHEEL@", pip_wheel)
        dockerfile.write_text(with_steps(dockerfile.read_text(), steps))


def grow(app_dir: Path, spec: Spec | None = None, wheel_files: list[Path] | None = None) -> dict:
    """The app_hook: history, wheels, Dockerfiles, committed on the checked-out develop branch."""
    spec = spec or Spec()
    made = import_history(app_dir, spec)
    write_build(app_dir, wheel_files if wheel_files is not None else wheels())
    git.run("add", "--", "requirements.txt", "vendor/wheels", "assets/bundle.py", "docker", cwd=app_dir)
    git.run("commit", "--quiet", "-m", "Dependencies from a local package index, vendored code compiled, "
            "assets bundled: the real build", cwd=app_dir)
    return made
