"""Push the verified images with docker-py, read errors from inside the stream, record the digest.

docker-py reports push failures as `error`/`errorDetail` records in an HTTP 200 stream, never as an
exception: every record is inspected. The digest comes from the final `aux` record and is
cross-checked against the registry's `Docker-Content-Digest` for each tag.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import docker
import docker.errors

from stackpatch.images.registry import Credentials, Registry, RegistryError, split_repository
from stackpatch.errors import FaultError
from stackpatch.release.model import PushedImage
from stackpatch.reporter import Reporter


class PushError(RegistryError):
    """The registry refused the push (auth, namespace) — nothing was deployed."""


@dataclass
class LayerProgress:
    total: int = 0
    current: int = 0
    state: str = ""          # Preparing, Waiting, Pushing, Pushed, Layer already exists, Mounted from …


@dataclass
class PushResult:
    tag: str
    digest: str
    size: int
    layers: dict[str, LayerProgress] = field(default_factory=dict)

    @property
    def bytes_pushed(self) -> int:
        return sum(l.total or l.current for l in self.layers.values() if l.state == "Pushed")

    @property
    def layers_pushed(self) -> int:
        return sum(1 for l in self.layers.values() if l.state == "Pushed")

    @property
    def layers_skipped(self) -> int:
        return sum(1 for l in self.layers.values() if l.state != "Pushed")


DIGEST_LINE = re.compile(r"digest: (sha256:[0-9a-f]{64}) size: (\d+)")


def read_stream(records: Iterable[dict], tag: str, on_progress: Callable[[str, LayerProgress], None]) -> PushResult:
    """Fold the push stream into a result; the first error record raises PushError (one line)."""
    layers: dict[str, LayerProgress] = {}
    digest, size = "", 0
    for rec in records:
        if "errorDetail" in rec or "error" in rec:
            detail = rec.get("errorDetail") or {}
            msg = " ".join(str(detail.get("message") or rec.get("error") or "").split())
            raise PushError(_explain(msg, tag))
        if "aux" in rec and isinstance(rec["aux"], dict) and rec["aux"].get("Digest"):
            digest = rec["aux"]["Digest"]
            size = int(rec["aux"].get("Size") or 0)
            continue
        status = rec.get("status", "")
        m = DIGEST_LINE.search(status)
        if m and not digest:
            digest, size = m.group(1), int(m.group(2))
        lid = rec.get("id")
        if not lid or lid == tag or m:
            continue
        lp = layers.setdefault(lid, LayerProgress())
        pd = rec.get("progressDetail") or {}
        if status == "Pushing":
            lp.total = int(pd.get("total") or lp.total or 0)
            lp.current = max(lp.current, int(pd.get("current") or 0))
        if status in ("Pushing", "Pushed", "Layer already exists", "Preparing", "Waiting") or \
                status.startswith("Mounted from"):
            lp.state = status
        on_progress(lid, lp)
    if not digest:
        raise FaultError(f"the push of tag {tag} ended without a digest (no aux record): check the registry, "
                         "then ship again")
    return PushResult(tag, digest, size, layers)


def _explain(msg: str, tag: str) -> str:
    low = msg.lower()
    if "unauthorized" in low or "authentication required" in low or "401" in low:
        return f"the registry refused the push of {tag} (unauthorized: {msg[:160]}): check the credentials"
    if "denied" in low or "forbidden" in low or "403" in low:
        return f"the registry denied the push of {tag} ({msg[:160]}): ask for push access to the namespace"
    if "not found" in low or "404" in low or "name unknown" in low:
        return f"the registry has no such repository for {tag} ({msg[:160]}): check registry.namespace"
    return f"the push of {tag} failed: {msg[:200]}"


def push_image(client: docker.DockerClient, reg: Registry, creds: Credentials | None, name: str,
               repository: str, tags: tuple[str, ...], image_id: str, deadline: float,
               reporter: Reporter) -> PushedImage:
    """Push every tag of one image; check the local tags still are `image_id` (the verified image)."""
    for t in tags:
        try:
            got = client.api.inspect_image(f"{repository}:{t}")["Id"]
        except docker.errors.DockerException:
            got = None
        if got != image_id:
            raise FaultError(f"{repository}:{t} is no longer the verified image {image_id[:19]} (now "
                             f"{(got or 'missing')[:19]}): something re-tagged it; ship again")
    total = 0
    digest = ""
    _, rname = split_repository(repository)
    for t in tags:
        transfer = reporter.transfer(f"{name}:{t}")
        try:
            stream = client.api.push(repository, tag=t, stream=True, decode=True,
                                     auth_config=creds.auth_config() if creds else None)
            res = read_stream(_until(stream, deadline, t), t,
                              lambda lid, lp: transfer.update(lid, lp.state, lp.current, lp.total))
        except docker.errors.DockerException as e:
            raise FaultError(f"the push of {repository}:{t} failed: {' '.join(str(e).split())[:200]}") from None
        finally:
            transfer.close()
        if digest and res.digest != digest:
            raise FaultError(f"{repository}:{t} was pushed as {res.digest}, but {tags[0]} as {digest}: "
                             "the tags must hold one image; ship again")
        digest = res.digest
        total += res.bytes_pushed
        reg_digest = reg.head_digest(rname, t)
        if reg_digest != res.digest:
            raise FaultError(f"registry {reg.host} reports {rname}:{t} at {reg_digest or 'nothing'}, but the push "
                             f"stream said {res.digest}: re-run `stackpatch ship`")
        reporter.ok(f"pushed {repository}:{t} {res.digest} ({res.layers_pushed} layer(s), {res.bytes_pushed} bytes moved, "
              f"{res.layers_skipped} already there)")
    return PushedImage(name=name, repository=repository, tags=tuple(tags), digest=digest, bytes_pushed=total)


def push_staged(client: docker.DockerClient, reg: Registry, creds: Credentials | None, name: str,
                repository: str, tag: str, image_id: str, deadline: float, reporter: Reporter) -> PushedImage:
    """Push the image's layers and manifest under `tag` (`release.model.prepush_tag`): the slow part of a
    push, done while verify runs. `promote_staged` puts the release tags on the manifest once verify passed."""
    try:
        client.api.tag(image_id, repository, tag)
    except docker.errors.DockerException as e:
        raise FaultError(f"could not tag {repository}:{tag}: {' '.join(str(e).split())[:200]}") from None
    try:
        return push_image(client, reg, creds, name, repository, (tag,), image_id, deadline, reporter)
    finally:
        try:
            client.api.remove_image(f"{repository}:{tag}", noprune=True)  # the local tag only
        except docker.errors.DockerException:
            pass


def promote_staged(reg: Registry, staged: PushedImage, tags: tuple[str, ...], reporter: Reporter) -> PushedImage:
    """The release tags onto the manifest `push_staged` pushed (a manifest PUT each, no layer moves),
    each checked to hold its digest."""
    import dataclasses
    done = complete_tags(reg, staged.name, staged.repository, tags, tags, staged.digest, reporter)
    return dataclasses.replace(done, bytes_pushed=staged.bytes_pushed)


def _until(stream: Iterable[dict], deadline: float, tag: str) -> Iterable[dict]:
    for rec in stream:
        if time.monotonic() > deadline:
            raise FaultError(f"the push of {tag} exceeded timeouts.push: check the registry, then ship again")
        yield rec


def pull_by_digest(client: docker.DockerClient, creds: Credentials | None, repository: str, digest: str,
                   tags: tuple[str, ...]) -> str:
    """Pull `repository@digest` (an image an earlier, interrupted ship pushed) and tag it locally with
    `tags`, so that verify runs exactly what the registry holds. Returns the local image id."""
    ref = f"{repository}@{digest}"
    try:
        for rec in client.api.pull(ref, stream=True, decode=True,
                                   auth_config=creds.auth_config() if creds else None):
            if "errorDetail" in rec or "error" in rec:
                msg = " ".join(str((rec.get("errorDetail") or {}).get("message") or rec.get("error")).split())
                raise FaultError(f"could not pull {ref[:120]} to verify it: {msg[:200]}")
        image_id = client.api.inspect_image(ref)["Id"]
        for t in tags:
            client.api.tag(image_id, repository, t)
    except docker.errors.DockerException as e:
        raise FaultError(f"could not pull {ref[:120]} to verify it: {' '.join(str(e).split())[:200]}") from None
    return image_id


def complete_tags(reg: Registry, name: str, repository: str, tags: tuple[str, ...], missing: tuple[str, ...],
                  digest: str, reporter: Reporter) -> PushedImage:
    """An image pushed with some of its tags (an interrupted push): put the missing tags on the same
    manifest through the registry API, then check that every tag holds `digest`."""
    _, rname = split_repository(repository)
    for t in missing:
        reg.copy_tag(rname, digest, t)
        reporter.ok(f"tagged {repository}:{t} {digest} through the registry API (no layer pushed)")
    for t in tags:
        got = reg.head_digest(rname, t)
        if got != digest:
            raise FaultError(f"registry {reg.host} reports {rname}:{t} at {got or 'nothing'}, expected {digest}: "
                             "re-run `stackpatch ship`")
    return PushedImage(name=name, repository=repository, tags=tuple(tags), digest=digest, bytes_pushed=0)
