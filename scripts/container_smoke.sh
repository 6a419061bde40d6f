#!/usr/bin/env bash
# Container release check (docs/DEPLOYMENT.md): the service image built and run with podman, and the
# compose stack (service + Prometheus) brought up with podman-compose, on loopback ports that are free.
#
#   scripts/container_smoke.sh [BUNDLE_DIR]        # or: make container-smoke [SMOKE_BUNDLE=DIR]
#
# BUNDLE_DIR defaults to $R2END_HOME/bundles/smoke-tiny, trained on first use from
# tests/fixtures/recbole/movies without teacher data (tests/service_util.py's tiny bundle, a minute or two).
# Phase "container": build docker/Dockerfile (--format docker keeps its HEALTHCHECK), check the image
#   (non-root, HEALTHCHECK, no torch, size), run it with the bundle read-only and the item log on a volume,
#   wait until the HEALTHCHECK passes and /readyz is 200, POST /recommend, PUT /items without / with a wrong /
#   with the write credential, replace the container and find the item again, clean up.
# Phase "compose": podman-compose -f docker-compose.yml -f docker-compose.podman.yml up service + Prometheus,
#   the service target up in Prometheus, and scripts/check_dashboards.py: every Grafana dashboard query
#   returns data under traffic. `podman-compose down -v` at the end.
# Exit status 0 only if every check passed. Containers and volumes are removed on any exit; the images
# (r2end-service:latest, r2end-prometheus:latest) stay as the build cache.
#
# Environment: SMOKE_TIMEOUT (seconds for everything, default 1800), SMOKE_PHASES ("container compose"),
# PY (python with httpx and pyyaml, default .venv/bin/python), PODMAN_COMPOSE (default .venv/bin/podman-compose,
# >= 1.1), PODMAN / PODMAN_BUILD_FLAGS / PODMAN_RUN_FLAGS (as exported by ../shared/tools/podman-env.sh, which
# is sourced when PODMAN is unset and the file exists; PODMAN_ENV names another copy).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
START=$(date +%s)
TIMEOUT=${SMOKE_TIMEOUT:-1800}
PHASES=${SMOKE_PHASES:-container compose}
PY=${PY:-$REPO/.venv/bin/python}
export R2END_HOME=${R2END_HOME:-$REPO/.r2end} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
DEFAULT_BUNDLE=$R2END_HOME/bundles/smoke-tiny
IMAGE=r2end-service:latest
TAG=r2end-smoke-$$
WRITE_TOKEN=smoke-write-$$-$RANDOM
ADMIN_TOKEN=smoke-admin-$$-$RANDOM
ITEM=smoke-item-$$

say() { printf '[smoke %4ds] %s\n' "$(($(date +%s) - START))" "$*"; }
fail() { say "FAIL: $*"; exit 1; }
usage_error() { echo "container_smoke.sh: $*" >&2; exit 2; }
left() { local n=$((START + TIMEOUT - $(date +%s))); echo $((n > 1 ? n : 1)); }  # seconds for a `timeout`
in_time() { [ $(($(date +%s) - START)) -lt "$TIMEOUT" ] || fail "out of time (SMOKE_TIMEOUT=$TIMEOUT s)"; }

# ---- arguments first: a wrong call costs nothing ----
[ $# -le 1 ] || usage_error "usage: scripts/container_smoke.sh [BUNDLE_DIR]"
case "${1:-}" in -*) usage_error "usage: scripts/container_smoke.sh [BUNDLE_DIR] (settings are environment variables, see the header)";; esac
for phase in $PHASES; do
  case "$phase" in container|compose) ;; *) usage_error "SMOKE_PHASES: unknown phase '$phase' (container, compose)";; esac
done
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || usage_error "SMOKE_TIMEOUT: '$TIMEOUT' is not a whole number of seconds"
if [ $# -eq 1 ]; then
  [ -d "$1" ] || usage_error "bundle $1: no such directory"
  [ -f "$1/manifest.json" ] || usage_error "bundle $1: no manifest.json (not a bundle written by r2end train / r2end export)"
fi

# ---- tools ----
if [ -z "${PODMAN:-}" ]; then
  env_script=${PODMAN_ENV:-$REPO/../shared/tools/podman-env.sh}
  # shellcheck source=/dev/null
  if [ -f "$env_script" ]; then source "$env_script" >/dev/null; fi
fi
PODMAN=${PODMAN:-podman}
PODMAN_RUN_FLAGS=${PODMAN_RUN_FLAGS:---network=host}
PODMAN_BUILD_FLAGS=${PODMAN_BUILD_FLAGS:-}
case " $PODMAN_RUN_FLAGS " in *" --network=host "*|*" --network host "*|*" --net=host "*) ;; *) PODMAN_RUN_FLAGS="$PODMAN_RUN_FLAGS --network=host";; esac
read -r -a podman_argv <<<"$PODMAN"
read -r -a run_flags <<<"$PODMAN_RUN_FLAGS"
read -r -a build_flags <<<"$PODMAN_BUILD_FLAGS"
pm() { "${podman_argv[@]}" "$@"; }
command -v "${podman_argv[0]}" >/dev/null || usage_error "no podman on PATH (Debian: apt-get install podman runc; here: source ../shared/tools/podman-env.sh)"
command -v curl >/dev/null || usage_error "no curl on PATH"
[ -x "$PY" ] || usage_error "no python at $PY (make setup, or PY=/path/to/python with httpx and pyyaml)"
compose_argv=()
case " $PHASES " in *" compose "*)
  COMPOSE_BIN=${PODMAN_COMPOSE:-$REPO/.venv/bin/podman-compose}
  [ -x "$COMPOSE_BIN" ] || COMPOSE_BIN=$(command -v podman-compose) || usage_error "no podman-compose (pip install 'podman-compose>=1.1')"
  COMPOSE_VERSION=$("$COMPOSE_BIN" --version 2>/dev/null | sed -n 's/^podman-compose version *//p' | head -1)
  case "$COMPOSE_VERSION" in 0.*|1.0.*|"") usage_error "podman-compose '$COMPOSE_VERSION' at $COMPOSE_BIN is too old (>= 1.1 needed; the test extra installs one)";; esac
  compose_argv=("$COMPOSE_BIN" --podman-path "${podman_argv[0]}")
  if [ "${#podman_argv[@]}" -gt 1 ]; then compose_argv+=(--podman-args "${podman_argv[*]:1}"); fi
  compose_argv+=(--podman-build-args "--format docker $PODMAN_BUILD_FLAGS" --in-pod false -p "$TAG"
                 -f docker-compose.yml -f docker-compose.podman.yml);;
esac

# ---- from here on, everything made is removed on exit ----
WORK=$(mktemp -d "${TMPDIR:-/tmp}/r2end-smoke.XXXXXX")
CONTAINERS=() VOLUMES=() COMPOSE_UP=0 SERVICE_BUILT=0
compose() { "${compose_argv[@]}" "$@"; }
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$COMPOSE_UP" = 1 ]; then
    compose down -v -t 5 >"$WORK/compose-down.log" 2>&1 || say "podman-compose down failed (see $WORK/compose-down.log)"
  fi
  for c in "${CONTAINERS[@]}"; do pm rm -f -t 5 "$c" >/dev/null 2>&1 || true; done
  for v in "${VOLUMES[@]}"; do pm volume rm -f "$v" >/dev/null 2>&1 || true; done
  if [ "$rc" = 0 ]; then rm -rf "$WORK"; say "PASS"; else say "FAILED; logs kept in $WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
json() { "$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}))' "$@"; }

# http METHOD URL [BODY_FILE] [HEADER...]: body to $WORK/body, prints the status code (000: no answer).
http() {
  local method=$1 url=$2 data=${3:-} args=()
  shift $(($# < 3 ? $# : 3))
  for h in "$@"; do args+=(-H "$h"); done
  if [ -n "$data" ]; then args+=(-H "content-type: application/json" --data-binary "@$data"); fi
  curl -sS -m 30 -o "$WORK/body" -w '%{http_code}' -X "$method" "${args[@]}" "$url" 2>>"$WORK/curl.log" || echo 000
}
expect() {  # expect WANTED... -- METHOD URL [BODY_FILE] [HEADER...]
  local wanted=() code
  while [ "$1" != "--" ]; do wanted+=("$1"); shift; done
  shift
  code=$(http "$@")
  for w in "${wanted[@]}"; do [ "$code" = "$w" ] && { say "$1 /${2#http://*/} -> $code"; return 0; }; done
  fail "$1 $2 answered $code, wanted ${wanted[*]}: $(head -c 600 "$WORK/body" 2>/dev/null)"
}

# ---- the bundle ----
BUNDLE=${1:-$DEFAULT_BUNDLE}
if [ $# -eq 0 ] && [ ! -f "$BUNDLE/manifest.json" ]; then
  say "no bundle given: training the tiny fixture bundle into $BUNDLE"
  rm -rf "$BUNDLE.partial"
  timeout "$(left)" "$PY" -c 'import sys; sys.path.insert(0, "tests"); from pathlib import Path; from service_util import build_tiny_bundle; build_tiny_bundle(Path(sys.argv[1]))' \
    "$BUNDLE.partial" >"$WORK/bundle.log" 2>&1 || { tail -20 "$WORK/bundle.log"; fail "could not build the tiny bundle"; }
  mv "$BUNDLE.partial" "$BUNDLE"
fi
BUNDLE=$(cd "$BUNDLE" && pwd)
say "bundle $BUNDLE"

text_body=$WORK/recommend.json
echo '{"history_text": "1997-12-04: L.A. Confidential (1997); Categories: Crime, Film-Noir, Mystery, Thriller", "k": 5}' >"$text_body"
item_body=$WORK/item.json
echo '{"title": "Smoke Test Movie", "year": 2024, "categories": ["Drama"], "description": "A container is started twice."}' >"$item_body"
history_body=$WORK/history.json
echo "{\"history\": [{\"item_id\": \"$ITEM\"}], \"k\": 5}" >"$history_body"

wait_ready() {  # wait_ready CONTAINER PORT: the container's HEALTHCHECK passes and /readyz answers 200
  local name=$1 port=$2 health=""
  while :; do
    [ "$(pm inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ] || { pm logs "$name" 2>&1 | tail -30; fail "$name is not running"; }
    if [ "$health" != healthy ] && pm healthcheck run "$name" >/dev/null 2>&1; then health=healthy; fi
    if [ "$health" = healthy ] && [ "$(http GET "http://127.0.0.1:$port/readyz")" = 200 ]; then break; fi
    in_time
    sleep 1
  done
  say "$name: HEALTHCHECK healthy, /readyz 200"
}

build_service() {
  say "building $IMAGE from docker/Dockerfile (podman build --format docker)"
  timeout "$(left)" "${podman_argv[@]}" build --format docker "${build_flags[@]}" -f docker/Dockerfile -t "$IMAGE" . \
    >"$WORK/build-service.log" 2>&1 || { tail -30 "$WORK/build-service.log"; fail "image build failed"; }
  SERVICE_BUILT=1
}

check_image() {
  local user size healthcheck
  user=$(pm image inspect -f '{{.Config.User}}' "$IMAGE")
  case "${user%%:*}" in ""|0|root) fail "image runs as root (USER '$user')";; esac
  healthcheck=$(pm image inspect -f '{{json .Config.Healthcheck}}' "$IMAGE")
  case "$healthcheck" in *healthz*) ;; *) fail "image has no HEALTHCHECK (built without --format docker?): $healthcheck";; esac
  size=$(pm image inspect -f '{{.Size}}' "$IMAGE")
  # What is installed, from the image's own interpreter: the serving stack, and no torch or training code.
  pm run --rm --no-healthcheck "${run_flags[@]}" --entrypoint python "$IMAGE" -c '
import importlib.metadata as md, importlib.util as iu, sys
names = sorted({d.metadata["Name"].lower() for d in md.distributions()})
banned = [n for n in ("torch", "transformers", "sentence-transformers", "xllamacpp", "ray") if n in names]
banned += [m for m in ("torch", "training") if iu.find_spec(m)]
missing = [n for n in ("onnxruntime", "faiss-cpu", "fastapi", "tokenizers") if n not in names]
print(len(names), "distributions:", " ".join(names))
sys.exit(f"in the image but must not be: {banned}" if banned else f"missing: {missing}" if missing else 0)
' >"$WORK/packages.txt" 2>"$WORK/packages.err" || { cat "$WORK/packages.txt" "$WORK/packages.err"; fail "image packages"; }
  say "image $IMAGE: USER $user, HEALTHCHECK kept, $((size / 1000000)) MB, $(head -c 300 "$WORK/packages.txt" | cut -d: -f1), no torch/transformers/training"
}

run_service() {  # run_service NAME PORT VOLUME (podman's stderr to a log: it warns that no systemd runs the health timer)
  pm run -d --name "$1" "${run_flags[@]}" -e R2END_HOST=127.0.0.1 -e R2END_PORT="$2" -e R2END_WRITE_TOKEN="$WRITE_TOKEN" \
    -v "$BUNDLE:/bundle:ro" -v "$3:/data" "$IMAGE" >/dev/null 2>>"$WORK/podman-run.log" || { cat "$WORK/podman-run.log"; fail "podman run $1"; }
}

phase_container() {
  local port name volume
  build_service
  check_image
  port=$(free_port) name=$TAG-a volume=$TAG-items
  pm volume create "$volume" >/dev/null && VOLUMES+=("$volume")
  CONTAINERS+=("$name")
  say "run $name on 127.0.0.1:$port (bundle read-only, item log on volume $volume)"
  run_service "$name" "$port" "$volume"
  wait_ready "$name" "$port"
  [ "$(pm exec "$name" id -u)" != 0 ] || fail "the container runs as root"
  if pm exec "$name" python -c 'open("/bundle/.smoke-write", "w")' >/dev/null 2>&1; then fail "the bundle is writable in the container"; fi
  say "process uid $(pm exec "$name" id -u); /bundle read-only"
  local base=http://127.0.0.1:$port
  expect 200 -- POST "$base/recommend" "$text_body"
  [ "$(json "$WORK/body" 'len(d["items"])')" -gt 0 ] || fail "no recommendations: $(cat "$WORK/body")"
  expect 401 -- PUT "$base/items/$ITEM" "$item_body"
  expect 403 -- PUT "$base/items/$ITEM" "$item_body" "Authorization: Bearer wrong-$WRITE_TOKEN"
  expect 404 -- GET "$base/items/$ITEM"
  expect 201 -- PUT "$base/items/$ITEM" "$item_body" "Authorization: Bearer $WRITE_TOKEN"
  expect 200 -- POST "$base/recommend" "$history_body"
  say "replace the container (same volume): the item must come back from the item log"
  pm rm -f -t 10 "$name" >/dev/null 2>>"$WORK/podman-run.log"
  name=$TAG-b port=$(free_port)
  CONTAINERS+=("$name")
  run_service "$name" "$port" "$volume"
  wait_ready "$name" "$port"
  base=http://127.0.0.1:$port
  expect 200 -- GET "$base/items/$ITEM"
  [ "$(json "$WORK/body" 'd["title"]')" = "Smoke Test Movie" ] || fail "item after restart: $(cat "$WORK/body")"
  expect 200 -- POST "$base/recommend" "$history_body"
  pm rm -f -t 10 "$name" >/dev/null 2>>"$WORK/podman-run.log"
}

phase_compose() {
  local port prom_port config=$WORK/prometheus.yml
  port=$(free_port) prom_port=$(free_port)
  # The committed scrape config, with the service's free port instead of service:8000.
  sed "s/\"service:8000\"/\"127.0.0.1:$port\"/" docker/prometheus/prometheus.yml >"$config"
  grep -q "127.0.0.1:$port" "$config" || fail "docker/prometheus/prometheus.yml has no \"service:8000\" target to replace"
  export R2END_BUNDLE_DIR=$BUNDLE R2END_PORT=$port PROMETHEUS_PORT=$prom_port R2END_PROMETHEUS_CONFIG=$config
  export R2END_WRITE_TOKEN=$WRITE_TOKEN R2END_ADMIN_TOKEN=$ADMIN_TOKEN BUILDAH_FORMAT=docker
  say "podman-compose $COMPOSE_VERSION: up service (127.0.0.1:$port) and prometheus (127.0.0.1:$prom_port), project $TAG"
  COMPOSE_UP=1
  # The service image from this run's container phase is the same build: only Prometheus is built then.
  local build=(prometheus)
  [ "$SERVICE_BUILT" = 1 ] || build+=(service)
  timeout "$(left)" "${compose_argv[@]}" build "${build[@]}" >"$WORK/compose-build.log" 2>&1 \
    || { tail -30 "$WORK/compose-build.log"; fail "podman-compose build ${build[*]} failed"; }
  timeout "$(left)" "${compose_argv[@]}" up -d --no-build service prometheus >"$WORK/compose-up.log" 2>&1 \
    || { tail -30 "$WORK/compose-up.log"; fail "podman-compose up failed"; }
  wait_ready "${TAG}_service_1" "$port"
  while [ "$(http GET "http://127.0.0.1:$prom_port/-/ready")" != 200 ]; do
    [ "$(pm inspect -f '{{.State.Running}}' "${TAG}_prometheus_1" 2>/dev/null)" = true ] || { pm logs "${TAG}_prometheus_1" 2>&1 | tail -30; fail "prometheus is not running"; }
    in_time
    sleep 1
  done
  say "prometheus ready; checking every dashboard query under traffic"
  "$PY" scripts/check_dashboards.py --prometheus "http://127.0.0.1:$prom_port" --service "http://127.0.0.1:$port" \
    --write-token "$WRITE_TOKEN" --admin-token "$ADMIN_TOKEN" --timeout "$(left)" || fail "dashboard check"
}

for phase in $PHASES; do
  "phase_$phase"
done
