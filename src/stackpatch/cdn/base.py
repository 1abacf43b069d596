"""What every CDN provider offers: a `Purger` that purges a zone and says what happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol, Sequence

from stackpatch.errors import FaultError

PurgeMode = Literal["everything", "files", "hosts", "prefixes", "tags"]
MODES: tuple[str, ...] = ("everything", "files", "hosts", "prefixes", "tags")

# progress(requests_done, requests_total), called after each accepted request
Progress = Callable[[int, int], None]


@dataclass
class PurgeResult:
    """The outcome of one purge. `ok` is False only on a PurgeError's attached result."""

    ok: bool
    provider: str = "none"
    mode: str = "everything"
    requests: int = 0          # HTTP requests sent, retries included
    purged: int = 0            # items in accepted requests (0 for `everything`)
    total: int = 0             # items asked for
    retries: int = 0           # requests that were repeated after a 429, a 5xx or a network error
    errors: list[str] = field(default_factory=list)   # "code: message" from the provider's errors[]
    ids: list[str] = field(default_factory=list)      # provider ids of the accepted purges
    items: list[str] = field(default_factory=list)    # the URLs, hosts, prefixes or tags asked for

    def to_json(self) -> dict:
        return {"ok": self.ok, "provider": self.provider, "mode": self.mode, "requests": self.requests,
                "purged": self.purged, "total": self.total, "retries": self.retries,
                "errors": list(self.errors), "ids": list(self.ids), "items": list(self.items)}


class PurgeError(FaultError):
    """The CDN refused or never answered. The deploy itself stands: the run is *deployed, purge failed*
    and `stackpatch purge` retries the purge. The message is one line and never holds the token."""

    def __init__(self, message: str, result: PurgeResult) -> None:
        super().__init__(" ".join(message.split()))
        self.result = result


class Purger(Protocol):
    """A CDN provider. `purge` raises PurgeError when any part of the purge failed."""

    name: str

    def purge(self, mode: PurgeMode, items: Sequence[str] = (), progress: Progress | None = None) -> PurgeResult:
        ...


class NoPurger:
    """provider = "none": nothing to purge, always succeeds."""

    name = "none"

    def purge(self, mode: PurgeMode = "everything", items: Sequence[str] = (),
              progress: Progress | None = None) -> PurgeResult:
        return PurgeResult(ok=True, provider=self.name, mode=mode, total=len(items), items=list(items))
