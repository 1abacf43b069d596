"""The Target protocol and the plain data it reads. A Kubernetes target could implement the same.

Contract shared by the build half (reads the deployed revision) and the deploy half (updates images,
waits, runs the release command, holds the lock).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

# Service labels stackpatch writes on the target (never secrets).
LABEL_VERSION = "stackpatch.version"
LABEL_REVISION = "stackpatch.revision"
LABEL_PREVIOUS = "stackpatch.previous-image"
LABEL_RUN_ID = "stackpatch.run-id"
OCI_REVISION = "org.opencontainers.image.revision"
OCI_VERSION = "org.opencontainers.image.version"


@dataclass(frozen=True)
class ImageRef:
    """`repository[:tag][@digest]` split into its parts."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, ref: str) -> "ImageRef":
        digest = None
        if "@" in ref:
            ref, digest = ref.split("@", 1)
        tag = None
        last = ref.rsplit("/", 1)[-1]
        if ":" in last:
            ref, tag = ref.rsplit(":", 1)
        return cls(ref, tag, digest)

    def __str__(self) -> str:
        s = self.repository
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


@dataclass(frozen=True)
class ServiceState:
    name: str                 # without the stack prefix: "phpha"
    full_name: str            # "acme-prod_phpha"
    id: str
    image: ImageRef           # as in the service spec (stack deploy pins a digest)
    labels: dict[str, str]    # service labels
    image_labels: dict[str, str]  # labels of the image (OCI revision/version), {} if unknown
    replicas_desired: int | None  # None for global services
    replicas_running: int
    update_state: str | None  # UpdateStatus.State: updating, completed, paused, rollback_*…

    @property
    def revision(self) -> str | None:
        return self.labels.get(LABEL_REVISION) or self.image_labels.get(OCI_REVISION)

    @property
    def version(self) -> str | None:
        return self.labels.get(LABEL_VERSION) or self.image_labels.get(OCI_VERSION)

    def to_json(self) -> dict:
        d = asdict(self)
        d["image"] = str(self.image)
        d["revision"] = self.revision
        d["version"] = self.version
        return d


@dataclass(frozen=True)
class LockInfo:
    owner: str
    host: str
    pid: int
    version: str
    run_id: str
    started_at: float         # unix time
    expires_at: float

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True)
class TargetState:
    stack: str
    services: dict[str, ServiceState] = field(default_factory=dict)
    lock: LockInfo | None = None

    def to_json(self) -> dict:
        return {"stack": self.stack,
                "services": {k: v.to_json() for k, v in self.services.items()},
                "lock": asdict(self.lock) if self.lock else None}


Progress = Callable[[str], None]


class Target(Protocol):
    """What stackpatch needs from a place that runs the stack."""

    stack: str

    def read_state(self) -> TargetState:
        """Every service of the stack with its image, digest, labels and replicas, plus the lock."""
        ...
