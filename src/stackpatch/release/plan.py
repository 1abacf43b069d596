"""The plan: from a snapshot of the world (git facts, target state, registry tags, config) to ordered steps.

PURE: no I/O here. `plan` prints it, `ship` runs it. Each step is plain data with its intent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from stackpatch.config import Config
from stackpatch.preflight import GitFacts, PreflightReport, evaluate
from stackpatch.release.deploy_plan import describe, plan_deploy
from stackpatch.release.model import PushedImage, Release, commit_tag, prepush_tag
from stackpatch.targets.base import TargetState, deployed_release

# what a digest reads as in `plan`, before the push has made it
DIGEST_AFTER_PUSH = "<digest after push>"


@dataclass(frozen=True)
class RemoteTag:
    """What the registry holds for one tag (read before planning)."""

    digest: str
    revision: str | None


@dataclass(frozen=True)
class Snapshot:
    git: GitFacts
    target: TargetState
    registry: dict[str, dict[str, RemoteTag | None]] = field(default_factory=dict)  # image -> tag -> what's there
    allow_mixed: bool = False
    engine: str = ""         # the engine the target was read from (target.where)


@dataclass(frozen=True)
class Step:
    id: str                  # stable: "workdir", "build:app", "verify", "push:app", then the deploy steps'
    kind: str                # workdir | build | verify | push | update | gate | migrate | serving | purge
    intent: str              # one line a person reads
    half: str = "build"      # build (this half, runs with --until pushed) | deploy (the rest of ship)
    done: bool = False       # already true in the world: the runner skips it
    detail: dict[str, Any] = field(default_factory=dict)  # a deploy step: exactly what its journal intent holds


@dataclass(frozen=True)
class ImagePlan:
    name: str
    repository: str          # host/namespace/repo
    tags: tuple[str, ...]    # (git-commit-<sha7>, version)
    dockerfile: str
    context: str
    cache_from: str | None   # the deployed image of a service running it
    already_pushed: str | None = None   # digest when every tag already holds this revision
    partly_pushed: str | None = None    # digest when some tags hold this revision (an interrupted push)
    pushed_tags: tuple[str, ...] = ()   # the tags that already hold it

    @property
    def reused(self) -> str | None:
        """The digest in the registry that is reused instead of building (every tag or some)."""
        return self.already_pushed or self.partly_pushed

    @property
    def missing_tags(self) -> tuple[str, ...]:
        return tuple(t for t in self.tags if t not in self.pushed_tags)


@dataclass(frozen=True)
class Plan:
    preflight: PreflightReport
    images: tuple[ImagePlan, ...]
    steps: tuple[Step, ...]
    engine: str = ""
    warnings: tuple[str, ...] = ()   # the lint of the stack's update settings (stackpatch.lint)

    @property
    def version(self) -> str:
        return self.preflight.version

    @property
    def revision(self) -> str:
        return self.preflight.revision

    def to_json(self) -> dict:
        return {"version": self.version, "revision": self.revision,
                "branch": self.preflight.branch, "engine": self.engine,
                "deployed": {"version": self.preflight.deployed_version,
                             "revision": self.preflight.deployed_revision},
                "preflight": self.preflight.to_json(),
                "images": [asdict(i) for i in self.images],
                "steps": [asdict(s) for s in self.steps], "warnings": list(self.warnings)}


def _refuse(msg: str):
    from stackpatch.preflight import PreflightError
    raise PreflightError(msg)


def make_plan(snap: Snapshot, cfg: Config) -> Plan:
    """Decide. Raises a one-line UserError for every refusal; never touches the world."""
    dep_version, dep_rev = deployed_release(snap.target, cfg, snap.allow_mixed)
    report = evaluate(snap.git, dep_version, dep_rev, cfg)
    if dep_version and dep_version == report.version:
        _refuse(f"version {report.version} is already deployed (at {dep_rev[:7]}): a hotfix needs a new "
                "version; start the next hotfix (e.g. add a letter)")
    sha, version = report.revision, report.version
    tags = (commit_tag(sha), version)

    images: list[ImagePlan] = []
    for name, img in cfg.images.items():
        repo = cfg.image_ref(name)
        served = [s for s, i in cfg.target.services.items() if i == name and s in snap.target.services]
        cache_from = str(snap.target.services[served[0]].image) if served else None
        remote = snap.registry.get(name, {})
        held = {t: remote.get(t) for t in tags}
        for t, rt in held.items():
            if rt is not None and rt.revision != sha:
                _refuse(f"tag {repo}:{t} already exists in the registry at {rt.digest[:19]} built from "
                        f"{(rt.revision or 'an unknown revision')[:7]}, not {sha[:7]}: tags are never reused; "
                        "start a new hotfix version")
        present = [rt for rt in held.values() if rt is not None]
        digests = {rt.digest for rt in present}
        if len(digests) > 1:
            _refuse(f"tags {', '.join(tags)} of {repo} point to different digests for the same revision: "
                    "fix the registry by hand (delete the stray tag) and retry")
        done = next(iter(digests)) if len(present) == len(tags) else None
        partly = next(iter(digests)) if present and done is None else None
        images.append(ImagePlan(name, repo, tags, img.dockerfile, img.context, cache_from, done, partly,
                                tuple(t for t in tags if held[t] is not None)))

    all_pushed = all(i.already_pushed for i in images)
    steps: list[Step] = [
        Step("workdir", "workdir", f"sync the clean build directory to {sha[:7]} (pushed code only: "
                                   f"{snap.git.remote}/{report.branch})", done=all_pushed,
             detail={"revision": sha, "remote_url": report.remote_url}),
    ]
    for i in images:
        steps.append(Step(f"build:{i.name}", "build",
                          (f"reuse {i.repository}@{i.partly_pushed[:19]}, pushed as :{', :'.join(i.pushed_tags)} by an "
                           "interrupted ship (not rebuilt; pulled by digest if verify needs it)") if i.partly_pushed
                          else f"build {i.repository}:{i.tags[0]} and :{i.tags[1]} from {i.dockerfile} "
                          f"(cache from {i.cache_from or 'nothing deployed'})",
                          done=bool(i.reused),
                          detail={"image": i.name, "repository": i.repository, "tags": list(i.tags),
                                  "dockerfile": i.dockerfile, "context": i.context, "cache_from": i.cache_from,
                                  "build_args": {"REVISION": sha, "VERSION": version,
                                                 **cfg.images[i.name].build_args}}))
    verifying = bool(cfg.verify.enabled and cfg.verify.stack_file)
    if verifying:
        steps.append(Step("verify", "verify",
                          f"deploy {cfg.verify.stack_file} as a throwaway local stack with the built images, "
                          f"wait until healthy ({cfg.verify.timeout:.0f}s), run {len(cfg.verify.checks)} "
                          "check(s), tear it down",
                          done=all_pushed,
                          detail={"stack_file": cfg.verify.stack_file,
                                  "checks": [c.name for c in cfg.verify.checks]}))
    for i in images:
        if i.partly_pushed:
            intent = (f"tag {i.repository}:{', :'.join(i.missing_tags)} → {i.partly_pushed[:19]} through the registry "
                      "API (the manifest copied by digest, no layer moves), then check every tag's digest")
        elif verifying and not i.already_pushed:
            intent = (f"push the layers of {i.repository} as :{prepush_tag(sha)} while verify runs, then, once it "
                      f"passed, tag :{i.tags[0]} and :{i.tags[1]} (the manifest copied by digest), record the "
                      "digest, cross-check it with the registry API")
        else:
            intent = (f"push {i.repository}:{i.tags[0]} and :{i.tags[1]}, record the digest, cross-check "
                      "it with the registry API" + (f" (already there at {i.already_pushed[:19]})"
                                                   if i.already_pushed else ""))
        steps.append(Step(f"push:{i.name}", "push", intent, done=bool(i.already_pushed),
                          detail={"image": i.name, "repository": i.repository, "tags": list(i.tags),
                                  "digest": i.reused, "missing_tags": list(i.missing_tags)}))
    steps.extend(_deploy_steps(snap.target, cfg, version, sha, images))
    from stackpatch.lint import lint_state
    return Plan(report, tuple(images), tuple(steps), snap.engine,
                tuple(str(w) for w in lint_state(snap.target, cfg)))


def _deploy_steps(target: TargetState, cfg: Config, version: str, sha: str,
                  images: list[ImagePlan]) -> list[Step]:
    """The second half of ship: exactly the steps `deploy` will journal (deploy_plan.plan_deploy), with
    each digest that the push has not made yet shown as DIGEST_AFTER_PUSH."""
    release = Release(version, sha, {i.name: PushedImage(i.name, i.repository, i.tags,
                                                         i.reused or DIGEST_AFTER_PUSH)
                                     for i in images})
    return [Step(s["id"], s["kind"], describe(s), half="deploy", detail=s)
            for s in plan_deploy(cfg, release, target.services)]
