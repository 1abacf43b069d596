#!/usr/bin/env bash
# The manual hotfix routine (ROUTINE.md steps 2, 3, 5-8), as a script, for the benchmark of issue 6.
# It does what a person does by hand, in the same order and with the same commands:
#   lookup    read the deployed image of phpfiles (step 2)
#   clone     a fresh clone of the pushed code into a new directory (step 3)
#   build:*   `docker build --no-cache` per image, tagged git-commit-<sha7> (step 5)
#   push:*    `docker push` per image (step 6)
#   deploy:*  `docker service update --force --update-order stop-first --image ... --with-registry-auth`,
#             phpfiles first, then phpha and web: what Docker Cloud's "redeploy" did (step 7)
#   migrations  `docker exec` of the migration command in the phpfiles task (step 8)
# Phase timestamps go to stdout as JSON lines {"phase", "event": "start"|"end", "ts"}; everything the
# tools print goes to stderr.
#
# usage: manual_routine.sh --repo URL --ref REF --version V --registry HOST[:PORT]/NAMESPACE --stack NAME
#                          --base-image IMAGE [--workdir DIR] [--swarm-host HOST]
#                          [--node-host NODE=HOST ...] [-- MIGRATION COMMAND...]
#        --swarm-host  the swarm manager's engine (`docker -H HOST`) for the service commands; builds and
#                      pushes stay on this machine's engine (as with a remote swarm). Default: the same engine
#        --node-host   the engine of node NODE (its hostname in `docker node ls`): the migration's `docker exec`
#                      goes to the node its task runs on, as a person would ssh there. Default: the swarm host
# env:   REGISTRY_USER, REGISTRY_PASSWORD   registry login (read from the environment, never printed)
#        IMAGES     "name=dockerfile ..."             default "app=docker/app/Dockerfile front=docker/front/Dockerfile"
#        SERVICES   "service=image ..." in order      default "phpfiles=app phpha=app web=front"
#        MIGRATE_SERVICE                              default phpfiles
#        BUILD_DOCKER   docker CLI for builds         default /usr/bin/docker when present (BuildKit), else docker
set -euo pipefail

usage() { sed -n '/^# usage:/,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { printf 'manual_routine: error: %s\n' "$1" >&2; exit 2; }

repo="" ref="" version="" registry="" stack="" base_image="" workdir="" swarm_host=""
node_hosts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --repo) repo="${2-}"; shift 2 ;;
    --ref) ref="${2-}"; shift 2 ;;
    --version) version="${2-}"; shift 2 ;;
    --registry) registry="${2-}"; shift 2 ;;
    --stack) stack="${2-}"; shift 2 ;;
    --base-image) base_image="${2-}"; shift 2 ;;
    --workdir) workdir="${2-}"; shift 2 ;;
    --swarm-host) swarm_host="${2-}"; [ -n "$swarm_host" ] || die "--swarm-host needs a docker host"; shift 2 ;;
    --node-host) node_hosts+=("${2-}"); shift 2 ;;
    -h|--help) usage ;;
    --) shift; break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
migrate_cmd=("$@")
for spec in ${node_hosts[@]+"${node_hosts[@]}"}; do
  [ "${spec%%=*}" != "$spec" ] && [ -n "${spec%%=*}" ] && [ -n "${spec#*=}" ] \
    || die "--node-host '$spec': expected NODE=HOST"
done
[ ${#migrate_cmd[@]} -gt 0 ] || migrate_cmd=(python3 /app/migrate.py)
for v in repo ref version registry stack base_image; do
  [ -n "${!v}" ] || die "--${v//_/-} is required (see --help)"
done
[ -n "${REGISTRY_USER:-}" ] && [ -n "${REGISTRY_PASSWORD:-}" ] || die "set REGISTRY_USER and REGISTRY_PASSWORD"
read -r -a images <<< "${IMAGES:-app=docker/app/Dockerfile front=docker/front/Dockerfile}"
read -r -a services <<< "${SERVICES:-phpfiles=app phpha=app web=front}"
migrate_service="${MIGRATE_SERVICE:-phpfiles}"

swarm=()   # flags of the service commands: the manager given by --swarm-host, else this engine
[ -z "$swarm_host" ] || swarm=(-H "$swarm_host")
if [ -z "${BUILD_DOCKER:-}" ] && [ -x /usr/bin/docker ]; then
  build_docker=/usr/bin/docker; export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-1}"
else
  build_docker="${BUILD_DOCKER:-docker}"
fi

now() { date +%s.%N; }
phase_start() { printf '{"phase": "%s", "event": "start", "ts": %s}\n' "$1" "$(now)"; }
phase_end() { printf '{"phase": "%s", "event": "end", "ts": %s}\n' "$1" "$(now)"; }

# a private docker config: the login does not touch the user's, and is gone afterwards
DOCKER_CONFIG="$(mktemp -d)"; export DOCKER_CONFIG
made_workdir=""
if [ -z "$workdir" ]; then workdir="$(mktemp -d)"; made_workdir=1; fi
cleanup() {
  rm -rf -- "$DOCKER_CONFIG"
  if [ -n "$made_workdir" ]; then rm -rf -- "$workdir"; fi
}
trap cleanup EXIT

registry_host="${registry%%/*}"
printf '%s' "$REGISTRY_PASSWORD" | docker login --username "$REGISTRY_USER" --password-stdin "$registry_host" >&2

# step 2: the deployed commit, by hand, from the running image name
phase_start lookup
deployed="$(docker ${swarm[@]+"${swarm[@]}"} service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "${stack}_${migrate_service}")"
printf 'deployed: %s\n' "$deployed" >&2
phase_end lookup

# step 3: a clean build directory holding only pushed code: a fresh clone
phase_start clone
src="$workdir/src"
[ ! -e "$src" ] || die "$src exists: give an empty --workdir"
git clone --quiet --branch "$ref" -- "$repo" "$src" >&2 2>/dev/null || {
  git clone --quiet -- "$repo" "$src" >&2
  git -C "$src" checkout --quiet --detach "$ref" >&2
}
sha="$(git -C "$src" rev-parse HEAD)"
tag="git-commit-${sha:0:7}"
phase_end clone

# step 5: build every image, no cache, tagged git-commit-<sha7>
for spec in "${images[@]}"; do
  name="${spec%%=*}"; dockerfile="${spec#*=}"
  phase_start "build:$name"
  "$build_docker" build --no-cache --quiet \
    --build-arg "BASE_IMAGE=$base_image" --build-arg "REVISION=$sha" --build-arg "VERSION=$version" \
    --file "$src/$dockerfile" --tag "$registry/$name:$tag" -- "$src" >&2
  phase_end "build:$name"
done

# step 6: push them
for spec in "${images[@]}"; do
  name="${spec%%=*}"
  phase_start "push:$name"
  docker push --quiet "$registry/$name:$tag" >&2
  phase_end "push:$name"
done

# step 7: redeploy, phpfiles first, then the rest, stop-first as Docker Cloud's redeploy did
for spec in "${services[@]}"; do
  svc="${spec%%=*}"; name="${spec#*=}"
  phase_start "deploy:$svc"
  docker ${swarm[@]+"${swarm[@]}"} service update --detach=false --quiet --force --update-order stop-first \
    --image "$registry/$name:$tag" --with-registry-auth -- "${stack}_${svc}" >&2
  phase_end "deploy:$svc"
done

# step 8: migrations, live, by exec in the phpfiles task
phase_start migrations
read -r task node < <(docker ${swarm[@]+"${swarm[@]}"} service ps --no-trunc --filter desired-state=running \
  --format '{{.ID}} {{.Node}}' -- "${stack}_${migrate_service}" | head -n 1) || true
[ -n "${task:-}" ] || die "no running task of ${stack}_${migrate_service}"
container="$(docker ${swarm[@]+"${swarm[@]}"} inspect --format '{{.Status.ContainerStatus.ContainerID}}' -- "$task")"
on=(${swarm[@]+"${swarm[@]}"})   # flags for the engine of the node the task runs on
for spec in ${node_hosts[@]+"${node_hosts[@]}"}; do
  [ "${spec%%=*}" != "$node" ] || on=(-H "${spec#*=}")
done
printf 'migrations: task %s on node %s\n' "${task:0:12}" "$node" >&2
docker ${on[@]+"${on[@]}"} exec -- "$container" "${migrate_cmd[@]}" >&2
phase_end migrations

printf '{"phase": "done", "event": "end", "ts": %s, "revision": "%s", "tag": "%s"}\n' "$(now)" "$sha" "$tag"
