"""The layers stay where docs/architecture.md puts them (checked on the source, no Docker needed):
the Docker SDK only under targets/, images/ and sandbox/; click, rich and ui never under release/,
targets/ or images/ (they get a Reporter); release/ never names a Swarm service `{stack}_{service}`."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "stackpatch"


def imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def files_importing(pred) -> list[str]:
    return sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                  if "template" not in p.parts and any(pred(m) for m in imports(p)))


def test_the_docker_sdk_is_used_only_by_targets_images_and_sandbox():
    users = files_importing(lambda m: m == "docker" or m.startswith("docker."))
    assert users, "the check must see the SDK's users"
    assert [u for u in users if u.split("/")[0] not in ("targets", "images", "sandbox")] == []
    assert [u for u in users if u.startswith("targets/")] == ["targets/swarm/client.py", "targets/swarm/target.py"]


def test_the_engine_renders_nothing_itself():
    ui = lambda m: m.split(".")[0] in ("click", "rich") or m in ("stackpatch.ui",)  # noqa: E731
    users = files_importing(ui)
    assert "cli.py" in users and "commands/ship_cmd.py" in users  # the check sees the layers that may render
    assert [u for u in users if u.split("/")[0] in ("release", "targets", "images")] == []


def test_release_steps_name_services_not_swarm_objects():
    for p in (SRC / "release").glob("*.py"):
        text = p.read_text()
        assert "stack}_{" not in text and "service.name=" not in text, p
