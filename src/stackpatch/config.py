"""stackpatch.toml: typed models, loading, and one-line errors.

Every field carries a `description`; docs/config.md is generated from these models
(`python -m stackpatch.config > docs/config.md`) and a test keeps the two in step.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stackpatch.errors import ConfigError

CONFIG_NAME = "stackpatch.toml"
DEFAULT_TARGET = "default"   # the name of the unnamed [target]
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def _env_var_name(value: str | None) -> str | None:
    """A field that names an environment variable must not hold the secret itself."""
    if value is None:
        return value
    if not ENV_NAME.match(value):
        raise ValueError("must be the NAME of an environment variable (like REGISTRY_PASSWORD), "
                         "not the secret itself: move the secret into the environment")
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class GitConfig(Section):
    remote: str = Field("origin", description="The remote that holds the pushed code and receives the finish.")
    main: str = Field("master", description="The production branch (git-flow's `gitflow.branch.master`).")
    develop: str = Field("develop", description="The integration branch (git-flow's `gitflow.branch.develop`).")
    hotfix_prefix: str = Field("hotfix/", description="Prefix of hotfix branches (git-flow's `gitflow.prefix.hotfix`).")
    release_prefix: str = Field("release/", description="Prefix of release branches (git-flow's `gitflow.prefix.release`).")
    tag_prefix: str = Field("", description="Prefix of version tags (git-flow's `gitflow.prefix.versiontag`), e.g. `v`.")
    version_pattern: str = Field(
        r"^\d{2}\.\d{2}\.\d+[a-z]?$",
        description="Regular expression a release or hotfix version must match (`YY.MM.R` plus a hotfix letter).")
    risky_globs: list[str] = Field(
        default_factory=lambda: ["**/migrations/**", "**/Dockerfile*", "**/*.lock", "**/requirements*.txt",
                                 "**/package-lock.json", "**/composer.lock"],
        description="Files changed in `deployed..hotfix` that match these globs are flagged by preflight.")

    @field_validator("version_pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"is not a valid regular expression ({e})") from None
        return v


class RegistryConfig(Section):
    host: str = Field(..., description="Registry `host:port` as it appears in image names, e.g. `registry.example.com`.")
    namespace: str = Field("", description="Path under the host where the repositories live, e.g. `acme`.")
    username_env: str | None = Field(None, description="Name of the environment variable holding the registry user.")
    password_env: str | None = Field(
        None, description="Name of the environment variable holding the registry password. Never the password itself.")
    env_file: str | None = Field(
        None, description="Optional `KEY=value` file (relative to the repo) read for the two variables above "
                          "when they are not in the environment.")
    use_docker_config: bool = Field(
        True, description="Fall back to the credentials in `~/.docker/config.json` when no variables are set.")

    _u = field_validator("username_env")(classmethod(lambda cls, v: _env_var_name(v)))
    _p = field_validator("password_env")(classmethod(lambda cls, v: _env_var_name(v)))


class ImageConfig(Section):
    dockerfile: str = Field("Dockerfile", description="Path of the Dockerfile, relative to the repo root.")
    context: str = Field(".", description="Build context, relative to the repo root.")
    repository: str = Field(..., description="Repository name under `registry.host/registry.namespace`, e.g. `app`.")
    build_args: dict[str, str] = Field(default_factory=dict, description="`--build-arg` values.")
    target: str | None = Field(None, description="Multi-stage `--target`.")


class WaveConfig(Section):
    name: str = Field(..., description="A name shown in progress and the journal, e.g. `canary`.")
    services: list[str] = Field(..., min_length=1, description="Services (without the stack prefix) updated together.")
    pause: bool = Field(False, description="Ask a person to confirm after this wave (like `--pause`); "
                                           "refused without a terminal unless `--yes`.")


class HttpCheck(Section):
    name: str = Field(..., description="Shown in progress and errors.")
    url: str | None = Field(None, description="URL to GET. `{front_url}` is replaced by the front's URL.")
    status: int = Field(200, description="Expected HTTP status.")
    body_contains: str | None = Field(
        None, description="Text the body must contain. `{revision}` and `{version}` are replaced.")
    service: str | None = Field(None, description="For a command check: the service to exec into.")
    command: list[str] | None = Field(None, description="For a command check: argv run in one task of `service`; "
                                                        "it must exit 0.")

    @model_validator(mode="after")
    def _one_kind(self) -> "HttpCheck":
        if (self.url is None) == (self.command is None):
            raise ValueError("a check needs either `url` or `command` (with `service`), not both or neither")
        if self.command is not None and not self.service:
            raise ValueError("a command check needs `service`")
        return self


class TargetConfig(Section):
    kind: Literal["swarm"] = Field("swarm", description="What runs the stack: `swarm` (a Docker Swarm manager).")
    docker_host: str | None = Field(
        None,
        description="Docker engine of the swarm manager: `unix://…`, `tcp://host:2376` (TLS via `tls_*`), "
                    "or `ssh://user@host` (docker-py's SSH client: it reads `~/.ssh/config` and trusts only the "
                    "host keys in `~/.ssh/known_hosts`). Unset: `DOCKER_HOST`, else `unix:///var/run/docker.sock`; "
                    "every command uses this one engine and names it in its errors.")
    tls_verify: bool = Field(False, description="Verify the engine's TLS certificate (tcp only).")
    tls_cert_path: str | None = Field(
        None, description="Directory with `ca.pem`, `cert.pem`, `key.pem` (tcp+TLS; the `DOCKER_CERT_PATH` layout). "
                          "With `tls_verify`, its `ca.pem` is the only CA trusted for the engine, whatever "
                          "`REQUESTS_CA_BUNDLE` says.")
    stack: str = Field(..., description="Stack name as given to `docker stack deploy`.")
    services: dict[str, str] = Field(
        ..., description="Service (without the stack prefix) → image name from `[images]` it runs.")
    waves: list[WaveConfig] = Field(
        default_factory=list,
        description="Rollout order, canary first. Default: the first service, then the rest.")
    front_url: str | None = Field(None, description="Public URL of the app, used by checks and rollback checks.")
    checks: list[HttpCheck] = Field(default_factory=list, description="Checks run after each wave (the gate).")
    node_hosts: dict[str, str] = Field(
        default_factory=dict,
        description="Node hostname → Docker engine of that node (`ssh://…`, `tcp://…` with the same `tls_*`). "
                    "A gate's command check and `stackpatch shell` reach a task on another node than "
                    "`docker_host`'s through it; without one, a command check runs as a one-off job from the "
                    "task's image, networks, env and mounts on the task's node (beside the task, not in it). "
                    "`stackpatch doctor` checks that each engine answers and is its node's.")
    prepull: bool = Field(
        True, description="Before the canary, every node that may run a new task pulls the new images (one "
                          "global job per image, with the registry credentials); a node that cannot pull "
                          "fails the run before anything changed. A swarm of one node that holds the "
                          "images already (it built them) needs no job and gets none.")

    @model_validator(mode="after")
    def _waves_cover(self) -> "TargetConfig":
        known = set(self.services)
        for w in self.waves:
            for s in w.services:
                if s not in known:
                    raise ValueError(f"wave {w.name!r} names service {s!r}, which is not in target.services "
                                     f"({', '.join(sorted(known))})")
        return self

    def resolved_waves(self) -> list[WaveConfig]:
        if self.waves:
            return self.waves
        names = list(self.services)
        waves = [WaveConfig(name="canary", services=names[:1])]
        if names[1:]:
            waves.append(WaveConfig(name="rest", services=names[1:]))
        return waves


class VerifyConfig(Section):
    enabled: bool = Field(True, description="Verify the built images in a throwaway local stack before pushing.")
    stack_file: str | None = Field(
        None, description="Compose file of the verification stack, relative to the repo. Image references "
                          "`${IMAGE_<NAME>}` are replaced by the images just built.")
    docker_host: str | None = Field(None, description="Engine that runs the verification stack (default: local).")
    checks: list[HttpCheck] = Field(default_factory=list, description="Checks the verification stack must pass.")
    timeout: float = Field(180, gt=0, description="Seconds for the verification stack to become healthy.")


class MigrationsConfig(Section):
    service: str | None = Field(None, description="Service whose new image runs the release command (the canary).")
    command: list[str] = Field(default_factory=list, description="argv of the migration command, run once.")
    when: Literal["after-canary", "before-rollout", "never"] = Field(
        "after-canary", description="`after-canary`: between the canary wave and the rest (the routine's order); "
                                    "`before-rollout`: before the first wave; `never`.")
    tenant_env: str = Field("DATA", description="Environment variable that selects the tenant for one run.")
    tenants: list[str] = Field(default_factory=list, description="Run the command once per tenant value, in order.")
    timeout: float = Field(600, gt=0, description="Seconds one migration run may take.")


class CdnConfig(Section):
    provider: Literal["cloudflare", "none"] = Field("cloudflare", description="CDN whose cache is purged after success.")
    zone: str = Field(..., description="Cloudflare zone id.")
    token_env: str = Field("CLOUDFLARE_API_TOKEN", description="Name of the environment variable holding the API token.")
    purge: Literal["everything", "files", "hosts", "prefixes", "tags"] = Field(
        "everything", description="What to purge.")
    items: list[str] = Field(default_factory=list, description="URLs, hosts, prefixes or tags for the chosen mode.")
    batch_size: int = Field(30, ge=1, le=500, description="Items per purge request (Cloudflare's limit is 30).")
    api_url: str = Field("https://api.cloudflare.com/client/v4", description="API base URL.")
    retries: int = Field(5, ge=0, description="Retries on 429 and 5xx (honouring `Retry-After`).")

    _t = field_validator("token_env")(classmethod(lambda cls, v: _env_var_name(v)))

    @model_validator(mode="after")
    def _items(self) -> "CdnConfig":
        if self.purge != "everything" and not self.items:
            raise ValueError(f"purge = {self.purge!r} needs `items`")
        return self


class TimeoutsConfig(Section):
    build: float = Field(1800, gt=0, description="Seconds for all image builds.")
    push: float = Field(900, gt=0, description="Seconds for all pushes.")
    converge: float = Field(300, gt=0, description="Seconds for one wave to converge (tasks running and healthy).")
    check: float = Field(60, gt=0, description="Seconds a gate check keeps retrying before it fails.")
    lock_ttl: float = Field(3600, gt=0, description="Seconds after which a held lock counts as expired.")
    prepull: float = Field(300, gt=0, description="Seconds for every node to pull the new images (the pre-pull).")
    reconnect: float = Field(60, ge=0, description="Seconds a run waits for an engine that stopped answering "
                                                  "mid-run (a manager restarting) before it stops for `stackpatch "
                                                  "resume`; each wait is journaled. 0: stop at once.")


class HooksConfig(Section):
    dir: str = Field(".stackpatch/hooks", description="Directory of the hook executables (relative to the repo): "
                                                      "`pre-ship`, `pre-deploy`, `post-deploy`, `post-rollback`, "
                                                      "`pre-finish`, `post-finish`. A missing file is no hook.")
    timeout: float = Field(300, gt=0, description="Seconds one hook may run; then it is killed (a `pre-*` hook "
                                                  "that times out stops the command).")
    ci_status_command: list[str] = Field(
        default_factory=list,
        description="argv that prints the CI status of the hotfix branch (`{branch}` and `{revision}` are "
                    "replaced), given to hooks as `STACKPATCH_CI_STATUS_COMMAND` (JSON); the sample `pre-ship` "
                    "written by `stackpatch hooks init` refuses unless its last line is `success`.")


EVENTS = ("deployed", "rolled-back", "failed", "purge-failed", "finished")
Event = Literal["deployed", "rolled-back", "failed", "purge-failed", "finished"]


class NotifyConfig(Section):
    name: str | None = Field(None, description="Shown in warnings and the journal (default: `url_env`).")
    url_env: str = Field(..., description="Name of the environment variable holding the webhook URL "
                                          "(a webhook URL is a secret: never in the file).")
    format: Literal["slack", "json"] = Field(
        "slack", description="`slack`: `{\"text\": …}` (Slack, Mattermost, Rocket.Chat, Teams workflows); "
                             "`json`: the full run summary.")
    events: list[Event] = Field(default_factory=lambda: list(EVENTS),
                                description="Which endings to send: `deployed`, `rolled-back`, `failed`, "
                                            "`purge-failed`, `finished` (after `stackpatch finish`).")
    retries: int = Field(3, ge=0, le=10, description="Retries after a network error, 429 or 5xx, with "
                                                      "exponential backoff; a failure never changes the outcome.")
    timeout: float = Field(10, gt=0, description="Seconds one request may take.")

    _u = field_validator("url_env")(classmethod(lambda cls, v: _env_var_name(v)))

    @property
    def label(self) -> str:
        return self.name or self.url_env


class Config(Section):
    git: GitConfig = Field(default_factory=GitConfig, description="Branches, prefixes and versions.")
    registry: RegistryConfig = Field(..., description="The private registry the images are pushed to.")
    images: dict[str, ImageConfig] = Field(..., min_length=1, description="Images built from this repo, by name.")
    target: TargetConfig | None = Field(
        None, description="The running stack to patch, when there is one (its name is `default`). "
                          "Several: use `[targets.<name>]` instead, or beside it.")
    targets: dict[str, TargetConfig] = Field(
        default_factory=dict,
        description="Named targets (`[targets.staging]`, `[targets.production]`), each holding what `[target]` "
                    "holds; every command that reads or changes a stack takes `--target NAME`.")
    require_target: bool = Field(False, description="Refuse a command that reads or changes a stack unless it "
                                                    "names its target with `--target NAME`.")
    verify: VerifyConfig = Field(default_factory=VerifyConfig, description="Local verification before pushing.")
    migrations: MigrationsConfig = Field(default_factory=MigrationsConfig, description="The release phase.")
    cdn: CdnConfig | None = Field(None, description="CDN purge after a successful deploy (optional).")
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig, description="Time limits.")
    notify: list[NotifyConfig] = Field(default_factory=list, description="Webhooks told how each run ended "
                                                                      "(`[[notify]]` entries).")
    hooks: HooksConfig = Field(default_factory=HooksConfig, description="Executables run before and after "
                                                                       "ship, deploy, rollback and finish.")

    # where the file was loaded from, and the name of the target chosen by `select`; not keys
    _path: Path | None = None
    _target_name: str | None = None

    @model_validator(mode="after")
    def _images_known(self) -> "Config":
        if self.target is None and not self.targets:
            raise ValueError("no target: add a [target] table (or [targets.<name>] tables) naming the stack "
                             "and its services")
        if self.target is not None and DEFAULT_TARGET in self.targets:
            raise ValueError(f"[target] is the target named {DEFAULT_TARGET!r}: rename [targets.{DEFAULT_TARGET}]")
        for key, t in self._all_targets():
            for svc, img in t.services.items():
                if img not in self.images:
                    raise ValueError(f"{key}.services.{svc} runs image {img!r}, which is not in [images] "
                                     f"({', '.join(sorted(self.images))})")
            m = self.migrations
            if m.when != "never" and m.command and m.service and m.service not in t.services:
                raise ValueError(f"migrations.service {m.service!r} is not in {key}.services")
        return self

    def _all_targets(self) -> list[tuple[str, TargetConfig]]:
        out = [("target", self.target)] if self.target is not None else []
        return out + [(f"targets.{n}", t) for n, t in self.targets.items()]

    @property
    def target_names(self) -> list[str]:
        return ([DEFAULT_TARGET] if self.target is not None else []) + list(self.targets)

    @property
    def target_name(self) -> str | None:
        return self._target_name

    def select(self, name: str | None) -> "Config":
        """This config with `target` set to the named one (`--target NAME`); without a name, `[target]`,
        else the only `[targets.<name>]`. Refuses (ConfigError) an unknown name, a bare command under
        `require_target = true`, and a bare command with several named targets and no `[target]`."""
        where = self._path or CONFIG_NAME
        names = ", ".join(self.target_names)
        if name is None:
            if self.require_target:
                raise ConfigError(f"{where}: require_target = true: name the target with --target NAME "
                                  f"({names})")
            if self.target is not None:
                name = DEFAULT_TARGET
            elif len(self.targets) == 1:
                name = next(iter(self.targets))
            else:
                raise ConfigError(f"{where} has several targets ({names}) and no [target]: pick one with "
                                  "--target NAME")
        if name == DEFAULT_TARGET and self.target is not None:
            chosen = self.target
        elif name in self.targets:
            chosen = self.targets[name]
        else:
            raise ConfigError(f"{where} has no target {name!r}: use one of {names}")
        out = self.model_copy()
        out.target = chosen
        out._path = self._path
        out._target_name = name
        return out

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def root(self) -> Path:
        return self._path.parent if self._path else Path.cwd()

    def image_ref(self, name: str) -> str:
        """`host/namespace/repository` of image `name`, without tag."""
        img = self.images[name]
        parts = [self.registry.host.rstrip("/")]
        if self.registry.namespace:
            parts.append(self.registry.namespace.strip("/"))
        parts.append(img.repository)
        return "/".join(parts)

    def masked(self) -> dict[str, Any]:
        """The resolved config as plain data, with secrets masked (only variable names appear)."""
        data = self.model_dump(mode="json")
        reg = data["registry"]
        reg["username"] = "set" if registry_credentials(self)[0] else "unset"
        reg["password"] = "***" if registry_credentials(self)[1] else "unset"
        if data.get("cdn"):
            data["cdn"]["token"] = "***" if os.environ.get(self.cdn.token_env) else "unset"
        return data


def read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        out[k.strip().removeprefix("export ").strip()] = v.strip().strip("'\"")
    return out


def registry_credentials(cfg: Config) -> tuple[str | None, str | None]:
    """(user, password) from the environment, then the configured env file. None where unset."""
    reg = cfg.registry
    file_vals = read_env_file(cfg.root / reg.env_file) if reg.env_file else {}

    def get(name: str | None) -> str | None:
        if not name:
            return None
        return os.environ.get(name) or file_vals.get(name) or None

    return get(reg.username_env), get(reg.password_env)


# ---------------------------------------------------------------- loading and errors

def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names valid at `loc` (the parent of the bad key), walking the model tree."""
    cur: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(cur, "model_fields", None)
        if not fields or part not in fields:
            # dict[str, Model]: the part is a user key, the value type is the model
            continue
        ann = fields[part].annotation
        cur = _inner_model(ann)
    fields = getattr(cur, "model_fields", None) or {}
    return list(fields)


def _inner_model(ann: Any) -> Any:
    import typing
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        m = _inner_model(arg)
        if m is not None:
            return m
    return None


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def format_validation_error(path: Path, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = tuple(p for p in e["loc"] if p not in ("function-after",))
    where = _fmt_loc(loc)
    if e["type"] == "extra_forbidden":
        bad = str(loc[-1])
        known = _known_keys(Config, loc[:-1])
        hint = difflib.get_close_matches(bad, known, n=1, cutoff=0.5)
        secretish = any(w in bad.lower() for w in ("password", "token", "secret"))
        if secretish:
            msg = (f"unknown key {bad!r}: secrets never go in the file; set "
                   f"`{hint[0] if hint else bad + '_env'}` to the NAME of an environment variable instead")
        else:
            msg = f"unknown key {bad!r}" + (f" (did you mean {hint[0]!r}?)" if hint
                                            else f" (valid keys: {', '.join(known)})")
        return f"{path}: {where}: {msg}"
    if e["type"] == "missing":
        return f"{path}: {where}: required key is missing: add it (see docs/config.md)"
    msg = e["msg"].removeprefix("Value error, ")
    got = e.get("input")
    if e["type"].endswith("_type") or e["type"].endswith("_parsing"):
        msg = f"{msg} (got {type(got).__name__} {got!r})" if not isinstance(got, dict) else msg
    return f"{path}: {where}: {msg}"


def find_config(start: Path | None = None) -> Path | None:
    cur = (start or Path.cwd()).resolve()
    for d in (cur, *cur.parents):
        p = d / CONFIG_NAME
        if p.is_file():
            return p
        if (d / ".git").exists():
            break
    return None


def _read_toml(p: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read: {e}") from None


def load(path: str | Path | None = None, target: str | None = None, select: bool = True) -> Config:
    """Load and validate stackpatch.toml: a file path, or found from a directory (default: the cwd)
    upwards to the repo root. With `select` (every command that reads or changes a stack), `cfg.target`
    is the target named `target` (`--target`), or the default one (see `Config.select`)."""
    if path is None or Path(path).is_dir():
        start = Path(path) if path is not None else Path.cwd()
        p = find_config(start)
        if p is None:
            raise ConfigError(f"no {CONFIG_NAME} found in {start.resolve()} or a parent up to the repo root: "
                              f"create one (see docs/config.md) or pass its path")
    else:
        p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such file: create it (see docs/config.md) or pass the right path")
    raw = _read_toml(p)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(p, e)) from None
    cfg._path = p.resolve()
    return cfg.select(target) if select else cfg


def load_git_settings(repo_root: str | Path) -> GitConfig | None:
    """Only the `[git]` table of `<repo_root>/stackpatch.toml`, validated; None when there is no file.

    Commands that need nothing but git (start, finish) use this, so a file whose other sections are
    incomplete still works for them. Keys the table does not set are listed in `model_fields_set`
    being absent; callers may fill them from git-flow's own config.
    """
    return load_section(repo_root, "git", GitConfig)


def load_section(repo_root: str | Path, name: str, model: Any) -> Any:
    """Only the `[name]` table (or `[[name]]` array, for a `list[...]` model) of `<repo_root>/stackpatch.toml`,
    validated as `model`; None when there is no file (the defaults when the file does not set it)."""
    from pydantic import TypeAdapter
    p = Path(repo_root) / CONFIG_NAME
    if not p.is_file():
        return None
    raw = _read_toml(p)
    is_list = getattr(model, "__origin__", None) is list
    table = raw.get(name, [] if is_list else {})
    if not isinstance(table, list if is_list else dict):
        raise ConfigError(f"{p}: {name}: must be " + (f"an array of tables ([[{name}]])" if is_list
                                                       else f"a table ([{name}])"))
    try:
        return TypeAdapter(model).validate_python(table)
    except ValidationError as e:
        # re-root the error at `name` so the message names `name.<key>` and suggests valid keys
        e0 = e.errors()[0]
        fake = ValidationError.from_exception_data(
            "Config", [{**e0, "loc": (name, *e0["loc"])}])  # type: ignore[list-item]
        raise ConfigError(format_validation_error(p, fake)) from None


# ---------------------------------------------------------------- reference generation

def _type_name(ann: Any) -> str:
    import typing
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is Literal:
        return " \\| ".join(f"`{json.dumps(a)}`" for a in args)
    if origin in (list,):
        return f"list of {_type_name(args[0])}"
    if origin in (dict,):
        return f"table of {_type_name(args[1])}"
    if origin in (typing.Union, getattr(__import__('types'), 'UnionType', None)):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "table"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(ann, str(ann))


def reference_markdown() -> str:
    """docs/config.md, generated from the models."""
    lines = ["# stackpatch.toml reference", "",
             "Generated from `src/stackpatch/config.py` by `python -m stackpatch.config > docs/config.md`;",
             "a test fails when the two differ. Unknown keys are refused, with the closest valid name.",
             "Secrets never go in the file: keys ending in `_env` name an environment variable.", ""]

    seen: dict[type[BaseModel], str] = {}

    def walk(model: type[BaseModel], prefix: str) -> None:
        if model is TargetConfig and model in seen:   # [targets.<name>] holds what [target] holds
            lines.extend([f"## `[{prefix}]`", "", f"The same keys as `[{seen[model]}]`.", ""])
            return
        seen[model] = prefix
        rows = []
        subs = []
        for name, f in model.model_fields.items():
            key = f"{prefix}.{name}" if prefix else name
            if f.is_required():
                default = "required"
            elif f.default_factory is not None:
                value = f.default_factory()
                default = "" if isinstance(value, BaseModel) else f"`{json.dumps(value)}`"
            else:
                default = "—" if f.default is None else f"`{json.dumps(f.default)}`"
            inner = _inner_model(f.annotation)
            rows.append(f"| `{key}` | {_type_name(f.annotation)} | {default} | {f.description or ''} |")
            if inner is not None:
                import typing
                is_map = typing.get_origin(f.annotation) is dict
                is_list = typing.get_origin(f.annotation) is list
                subs.append((inner, f"{key}.<name>" if is_map else f"{key}[]" if is_list else key))
        lines.extend([f"## `[{prefix}]`" if prefix else "## Top level", "",
                      "| key | type | default | meaning |", "| --- | --- | --- | --- |", *rows, ""])
        for inner, p in subs:
            walk(inner, p)

    walk(Config, "")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(reference_markdown(), end="")
