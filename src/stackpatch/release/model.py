"""What the build half hands to the deploy half: the exact images that were verified and pushed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class PushedImage:
    name: str                  # image name in [images], e.g. "app"
    repository: str            # "127.0.0.1:5000/acme/app"
    tags: tuple[str, ...]      # ("git-commit-ab12cd3", "26.11.1b"); the first is the canonical one
    digest: str                # "sha256:…", from the push stream, cross-checked with the registry API
    bytes_pushed: int = 0

    @property
    def ref(self) -> str:
        """Digest-pinned reference the services are updated to: repo:tag@sha256:…"""
        return f"{self.repository}:{self.tags[0]}@{self.digest}"

    @classmethod
    def from_json(cls, d: dict) -> "PushedImage":
        return cls(d["name"], d["repository"], tuple(d["tags"]), d["digest"], d.get("bytes_pushed", 0))


@dataclass(frozen=True)
class Release:
    version: str               # "26.11.1b"
    revision: str              # full sha of the hotfix head that was built
    images: dict[str, PushedImage] = field(default_factory=dict)  # by image name

    def to_json(self) -> dict:
        return {"version": self.version, "revision": self.revision,
                "images": {k: asdict(v) for k, v in self.images.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "Release":
        return cls(d["version"], d["revision"], {k: PushedImage.from_json(v) for k, v in d["images"].items()})


def commit_tag(sha: str) -> str:
    """The routine's immutable tag: git-commit-<sha7>."""
    return f"git-commit-{sha[:7]}"


def prepush_tag(sha: str) -> str:
    """The tag an image's bytes are pushed under while verify runs: never a release tag (the plan only
    reads `git-commit-<sha7>` and the version), so an image that fails verify is never deployed and the
    next ship builds and verifies it again. One per revision; it stays in the registry."""
    return f"stackpatch-prepush-{sha[:7]}"
