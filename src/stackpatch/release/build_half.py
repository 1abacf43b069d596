"""The first half of `ship`: read the world into a Snapshot, then run the plan's build-half steps
(clean build dir, build, verify, push) and hand a `Release` to the deploy half.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from stackpatch import targets
from stackpatch.images import registry as registry_mod
from stackpatch.images import workdir as workdir_mod
from stackpatch.images.registry import Registry, split_repository
from stackpatch.config import Config
from stackpatch.preflight import PreflightError, gather, version_of
from stackpatch.release.model import PushedImage, Release, commit_tag, prepush_tag
from stackpatch.release.plan import Plan, RemoteTag, Snapshot, make_plan
from stackpatch.reporter import Reporter
from stackpatch.targets.base import OCI_REVISION, ImageRef, Target, deployed_release


def read_snapshot(cfg: Config, ref: str | None = None, allow_mixed: bool = False,
                  repo: Path | None = None, target: Target | None = None) -> Snapshot:
    """Read git, the target and the registry once. Read-only (a `git fetch` updates remote-tracking refs)."""
    reg = registry_mod.for_config(cfg)

    def image_config(r: ImageRef) -> dict | None:
        host, name = split_repository(r.repository)
        if host != reg.host:
            return None
        got = reg.image_config(name, r.digest or r.tag or "latest")
        return got[1] if got else None

    target = target or targets.for_config(cfg, image_reader=image_config)
    state = target.read_state()
    _, dep_rev = deployed_release(state, cfg, allow_mixed)
    facts = gather(repo or cfg.root, cfg, ref=ref, deployed_revision=dep_rev)
    remote: dict[str, dict[str, RemoteTag | None]] = {}
    try:
        version = version_of(facts.ref, cfg)
    except PreflightError:
        version = None
    if facts.head and version:
        reg.check_login()
        for name in cfg.images:
            _, rname = split_repository(cfg.image_ref(name))
            remote[name] = {}
            for tag in (commit_tag(facts.head), version):
                got = reg.image_labels(rname, tag)
                remote[name][tag] = RemoteTag(got[0], got[1].get(OCI_REVISION)) if got else None
    return Snapshot(git=facts, target=state, registry=remote, allow_mixed=allow_mixed, engine=target.where)


@dataclass
class BuildHalfResult:
    release: Release
    log_path: str | None
    timings: dict[str, float] = field(default_factory=dict)
    workdir: str | None = None
    workdir_cold: bool | None = None
    verify_teardown: object | None = None   # images.verify.Teardown: the verify stack's removal, under way
    beside: tuple[str, ...] = ()            # the timings that ran side by side (the builds), from one start

    def wait_verify_teardown(self, reporter: Reporter) -> None:
        """Wait until the verify stack that passed is removed (it went on during the deploy)."""
        td = self.verify_teardown
        if td is None:
            return
        self.verify_teardown = None
        if not td.wait(0):
            reporter.info(f"waiting for the removal of the verify stack {td.stack}")
        td.wait()
        if td.error:
            reporter.warn(f"the verify stack {td.stack} was not removed ({td.error}): the next ship removes it")
        else:
            self.timings["verify teardown"] = td.seconds or 0.0
            reporter.ok(f"verify stack {td.stack} removed ({td.seconds:.1f}s, beside the deploy)")

    def to_json(self) -> dict:
        return {"release": self.release.to_json(), "build_log": self.log_path,
                "timings": {k: round(v, 2) for k, v in self.timings.items()},
                "workdir": self.workdir, "workdir_cold": self.workdir_cold, "side_by_side": list(self.beside)}


def run_build_half(cfg: Config, plan: Plan, snap: Snapshot, reporter: Reporter) -> BuildHalfResult:
    """Execute the build-half steps of `plan`; returns the Release the deploy half consumes."""
    sha, version = plan.revision, plan.version
    if all(i.already_pushed for i in plan.images):
        reporter.ok(f"every image of {version} ({sha[:7]}) is already in the registry: nothing to build or push")
        rel = Release(version, sha, {i.name: PushedImage(i.name, i.repository, i.tags, i.already_pushed or "", 0)
                                     for i in plan.images})
        return BuildHalfResult(rel, None)
    # an interrupted ship pushed some images, or some tags of one: those are reused by digest (a rebuild
    # would give another digest under a tag that is never reused), the rest is built and pushed
    reused = [i for i in plan.images if i.reused]
    to_build = [i for i in plan.images if not i.reused]
    for i in reused:
        reporter.ok(f"{i.name}: {i.repository}@{i.reused[:19]} is already in the registry as "
                    f":{', :'.join(i.pushed_tags)} (pushed by an interrupted ship): reused, not rebuilt")

    from stackpatch.images import image as image_mod
    from stackpatch.images import push as push_mod
    from stackpatch.images import verify as verify_mod
    from stackpatch.images.engine import local_client

    timings: dict[str, float] = {}
    creds = registry_mod.credentials(cfg)
    reg = Registry(cfg.registry.host, creds)
    reg.check_login()                               # refuse a bad login before spending minutes building

    reporter.step(f"sync the clean build directory at {sha[:7]}")
    wd = workdir_mod.sync(Path(snap.git.repo), cfg.git.remote, sha, branch=plan.preflight.branch)
    timings["workdir"] = wd.seconds
    reporter.ok(f"build directory {wd.path} at {sha[:7]} in {wd.seconds:.1f}s ({'cold clone' if wd.cold else 'incremental'})")

    client = local_client()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    log = image_mod.BuildLog(workdir_mod.cache_root() / "logs" / f"{Path(snap.git.repo).name}-{version}-{stamp}.log")
    reporter.info(f"build log: {log.path}")
    deadline = time.monotonic() + cfg.timeouts.build
    specs = [image_mod.BuildSpec(
        name=i.name, repository=i.repository, tags=i.tags, dockerfile=cfg.images[i.name].dockerfile,
        context=cfg.images[i.name].context, build_args={"REVISION": sha, "VERSION": version,
                                                        **cfg.images[i.name].build_args},
        target=cfg.images[i.name].target, cache_from=i.cache_from) for i in to_build]
    try:
        built = _build_images(client, specs, wd.path, version, sha, plan.preflight.remote_url, log, creds, deadline,
                              reporter)
    finally:
        log.close()
    for name, b in built.items():
        timings[f"build:{name}"] = b.seconds
    beside = tuple(f"build:{name}" for name in built) if len(built) > 1 else ()

    verifying = cfg.verify.enabled and cfg.verify.stack_file
    if verifying:  # verify runs the release as a whole: the reused images too, pulled by digest
        for i in reused:
            reporter.step(f"pull {i.repository}@{i.reused[:19]} to verify it with the rest")
            t0 = time.monotonic()
            image_id = push_mod.pull_by_digest(client, creds, i.repository, i.reused, i.tags)
            built[i.name] = image_mod.BuiltImage(i.name, i.repository, i.tags, image_id, time.monotonic() - t0, False)
            timings[f"pull:{i.name}"] = time.monotonic() - t0
    pushed: dict[str, PushedImage] = {}
    deadline = time.monotonic() + cfg.timeouts.push
    teardown = None
    if verifying and to_build:
        # the push of the new images' bytes runs while verify does; the release tags are put on them
        # (a manifest PUT each) only once verify passed: an image that failed verify is never deployed
        done, teardown = _verify_while_pushing(cfg, plan, wd.path, built, to_build, client, reg, creds, deadline,
                                               timings, reporter)
        pushed.update(done)
    elif verifying:
        t0 = time.monotonic()
        vclient = local_client(cfg.verify.docker_host) if cfg.verify.docker_host else client
        res = verify_mod.verify(vclient, cfg, wd.path, built, version, sha, cfg.timeouts.check, reporter,
                                background_teardown=True)
        timings["verify"] = time.monotonic() - t0
        teardown = res.teardown
        reporter.ok(f"verified in {res.seconds:.1f}s (its stack is removed in the background)")
    elif cfg.verify.enabled:
        reporter.warn("verify.stack_file is not set: the images are pushed without a local verification")

    t0 = time.monotonic()
    for i in plan.images:
        if i.name in pushed:
            continue
        if i.reused:
            reporter.step(f"tags of {i.repository}@{i.reused[:19]}")
            pushed[i.name] = push_mod.complete_tags(reg, i.name, i.repository, i.tags, i.missing_tags, i.reused,
                                                    reporter)
            continue
        reporter.step(f"push {i.repository}:{', '.join(i.tags)}")
        pushed[i.name] = push_mod.push_image(client, reg, creds, i.name, i.repository, i.tags,
                                             built[i.name].image_id, deadline, reporter)
    if "push" not in timings:
        timings["push"] = time.monotonic() - t0
    else:
        timings["tag"] = timings.get("tag", 0.0) + time.monotonic() - t0
    return BuildHalfResult(Release(version, sha, pushed), str(log.path), timings, str(wd.path), wd.cold, teardown,
                           beside)


def _build_images(client, specs: list, workdir: Path, version: str, sha: str, source: str, log, creds,
                  deadline: float, reporter: Reporter) -> dict:
    """Build the images; several at once, side by side (each a `docker build` process of its own, with
    its own engine connection), as `docker compose build` does: the ship waits for the slowest, not
    for the sum. The first failure stops the other builds and is the one raised; an interrupt stops
    them all. Returns {name: BuiltImage} in the plan's order."""
    from stackpatch.images import image as image_mod
    from stackpatch.images.engine import local_client
    from stackpatch.reporter import Locked

    def done(b) -> None:
        out.ok(f"built {b.local_ref} ({b.image_id[:19]}) in {b.seconds:.1f}s "
               f"with {'BuildKit' if b.buildkit else 'the legacy builder'}")

    out = reporter
    if len(specs) <= 1:
        built = {}
        for spec in specs:
            reporter.step(f"build {spec.repository}:{spec.tags[0]}")
            built[spec.name] = image_mod.build(client, spec, workdir, version=version, revision=sha, source=source,
                                               log=log, creds=creds, deadline=deadline, reporter=reporter)
            done(built[spec.name])
        return built

    import threading
    out = Locked(reporter)
    builds = image_mod.Builds()
    results: dict = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one(spec) -> None:
        c = None
        try:
            c = local_client()  # a connection of its own: none is shared by threads
            b = image_mod.build(c, spec, workdir, version=version, revision=sha, source=source,
                                log=log.part(spec.name), creds=creds, deadline=deadline, reporter=out,
                                side_by_side=builds)
            results[spec.name] = b
            done(b)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, raised there
            with lock:
                errors.append(e)
            builds.cancel()
        finally:
            if c is not None:
                c.close()

    out.step("build " + ", ".join(f"{s.repository}:{s.tags[0]}" for s in specs) + " side by side")
    threads = [threading.Thread(target=one, args=(s,), name=f"stackpatch-build-{s.name}", daemon=False)
               for s in specs]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except BaseException:  # an interrupt reaches the main thread only: stop the builds, then go
        builds.cancel()
        for t in threads:
            t.join()
        raise
    if errors:
        first = next((e for e in errors if not isinstance(e, image_mod.BuildCancelled)), errors[0])
        raise first
    return {s.name: results[s.name] for s in specs}


def _verify_while_pushing(cfg: Config, plan: Plan, workdir: Path, built: dict, to_build: list, client, reg: Registry,
                          creds, deadline: float, timings: dict[str, float],
                          reporter: Reporter) -> tuple[dict[str, PushedImage], object | None]:
    """Verify (in a thread, with its own engine connection) while the new images' bytes are pushed
    under `prepush_tag`; when both have finished and verify passed, the release tags go onto the
    pushed manifests. A failed verify raises its error, saying the release tags were not pushed and
    nothing was deployed."""
    import threading

    from stackpatch.images import push as push_mod
    from stackpatch.images import verify as verify_mod
    from stackpatch.images.engine import local_client
    from stackpatch.reporter import Locked

    out = Locked(reporter)
    staging = prepush_tag(plan.revision)
    box: dict = {}

    def run_verify() -> None:
        t0 = time.monotonic()
        try:
            vclient = local_client(cfg.verify.docker_host)  # a connection of its own: none is shared by threads
            box["result"] = verify_mod.verify(vclient, cfg, workdir, built, plan.version, plan.revision,
                                              cfg.timeouts.check, out, background_teardown=True)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, raised there
            box["error"] = e
        finally:
            box["seconds"] = time.monotonic() - t0

    thread = threading.Thread(target=run_verify, name="stackpatch-verify", daemon=False)
    thread.start()
    staged: dict[str, PushedImage] = {}
    t0 = time.monotonic()
    try:
        for i in to_build:
            out.step(f"push {i.repository}:{staging} while verify runs (tags :{', :'.join(i.tags)} once it passed)")
            staged[i.name] = push_mod.push_staged(client, reg, creds, i.name, i.repository, staging,
                                                  built[i.name].image_id, deadline, out)
        timings["push"] = time.monotonic() - t0
    finally:
        thread.join()  # verify has ended (a failed one removed its stack) before ship goes on or stops
    timings["verify"] = box.get("seconds", 0.0)
    err = box.get("error")
    if err is not None:
        from stackpatch.images.verify import VerifyError
        note = f" (the layers went up as :{staging} while verify ran, untagged for release)"
        if isinstance(err, VerifyError):
            raise VerifyError(str(err) + note) from None
        raise err
    res = box["result"]
    reporter.ok(f"verified in {res.seconds:.1f}s, while the push took {timings['push']:.1f}s "
                "(the verify stack is removed in the background)")
    t1 = time.monotonic()
    done: dict[str, PushedImage] = {}
    for i in to_build:
        reporter.step(f"tag {i.repository}:{', :'.join(i.tags)} (verified)")
        done[i.name] = push_mod.promote_staged(reg, staged[i.name], i.tags, reporter)
    timings["tag"] = time.monotonic() - t1
    return done, res.teardown


def plan_for(cfg: Config, ref: str | None, allow_mixed: bool) -> tuple[Snapshot, Plan]:
    snap = read_snapshot(cfg, ref=ref, allow_mixed=allow_mixed)
    return snap, make_plan(snap, cfg)
