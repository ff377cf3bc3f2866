#!/usr/bin/env bash
# CI on a real Docker engine (issue 12; docs/containers.md "CI"): build the project image, then run a
# publisher + 5 nodes from a host-network compose file, kill one node and start it again, and check
# that every honest node ends on the same head.
#
#   scripts/ci-docker.sh image     # engine, base image, project image, smoke checks inside it
#   scripts/ci-docker.sh tests     # the engine tests (pytest -m docker tests/engine) against the image
#   scripts/ci-docker.sh network   # the network scenario (builds the image first if it is missing)
#   scripts/ci-docker.sh [all]     # image, tests, network
#
# Safe on machines without a bridge (notes/docker.md): dockerd is started only as
# `dockerd --bridge=none --iptables=false --ip-masq=false --ip-forward=false`, every build and
# container uses host networking or none, nothing is pulled from a registry (the base image comes
# from debootstrap + docker import), and only loopback addresses are used. It stops what it
# started: its compose project, its wheel server, and dockerd if no engine answered before.
#
# Settings (environment): QBFL_IMAGE (project image tag), QBFL_BASE_IMAGE (base image tag, built
# when missing), QBFL_DEBIAN_MIRROR, QBFL_WHEEL_DIR (local wheels served on loopback during the
# build; default /opt/wheels when it holds wheels) and QBFL_WHEEL_PORT (39847), QBFL_TORCH_INDEX_URL (default: none when local
# wheels are served, else PyTorch's CPU index), QBFL_EXTRA_CA_DIR (*.crt copied into extra-ca/ for a
# TLS-inspecting proxy; default /usr/local/share/ca-certificates), QBFL_CI_WORK (work folder),
# QBFL_CI_NODES (5), QBFL_CI_ROUNDS (60), QBFL_CI_BLOCKS (3, blocks before the kill),
# QBFL_CI_TIMEOUT (seconds per wait, 900), QBFL_CI_STALL (seconds without progress = stalled, 300).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

STAGE=${1:-all}
case "$STAGE" in image | tests | network | all) ;; *)
  echo "usage: $0 [image|tests|network|all]" >&2
  exit 2
  ;;
esac

WORK=${QBFL_CI_WORK:-$ROOT/.ci-docker}
IMAGE=${QBFL_IMAGE:-qbfl-ci:latest}
BASE_IMAGE=${QBFL_BASE_IMAGE:-qbfl-base:bookworm}
MIRROR=${QBFL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
EXTRA_CA_DIR=${QBFL_EXTRA_CA_DIR-/usr/local/share/ca-certificates}
NODES=${QBFL_CI_NODES:-5}
ROUNDS=${QBFL_CI_ROUNDS:-60}  # rounds take ~1 s at 5 nodes: the kill must land mid-run
BLOCKS=${QBFL_CI_BLOCKS:-3}
TIMEOUT=${QBFL_CI_TIMEOUT:-900}
STALL=${QBFL_CI_STALL:-300}
PROJECT=${QBFL_CI_PROJECT:-qbfl-ci-$$}
mkdir -p "$WORK"

log() { printf '[ci-docker %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "FAILED: $*"
  exit 1
}

# --- cleanup: only what this run started ----------------------------------------------------------
STARTED_DOCKERD=""
WHEEL_SERVER_PID=""
COMPOSE_FILE=""
COPIED_CAS=()
cleanup() {
  local rc=$?
  set +e
  if [ -n "$COMPOSE_FILE" ]; then
    if [ "$rc" -ne 0 ]; then
      log "logs of project $PROJECT (last 40 lines per service):"
      compose logs --no-color --tail 40 >&2
    fi
    log "tearing down compose project $PROJECT"
    compose down --volumes --remove-orphans --timeout 20 >/dev/null 2>&1
    [ "$rc" -ne 0 ] || rm -f "$COMPOSE_FILE"  # kept after a failure, for a look
  fi
  [ -z "$WHEEL_SERVER_PID" ] || { kill "$WHEEL_SERVER_PID" 2>/dev/null && wait "$WHEEL_SERVER_PID" 2>/dev/null; }
  for ca in "${COPIED_CAS[@]}"; do rm -f "$ca"; done
  if [ -n "$STARTED_DOCKERD" ]; then
    log "stopping the dockerd this run started (pid $STARTED_DOCKERD)"
    kill -TERM "$STARTED_DOCKERD" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 0.5; done
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- engine -----------------------------------------------------------------------------------------
ensure_engine() {
  if docker info >/dev/null 2>&1; then
    log "using the Docker engine that already answers ($(docker info --format '{{.ServerVersion}}'))"
    return
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null 2>&1 || {
      apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null
    }
  fi
  if [ -S /var/run/docker.sock ] && pgrep -x dockerd >/dev/null 2>&1; then
    die "a dockerd runs but does not answer 'docker info'; not starting a second one"
  fi
  log "starting dockerd without a bridge (log: $WORK/dockerd.log)"
  # No bridge, no iptables, no forwarding: a container without host networking gets only lo.
  setsid nohup dockerd --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
    >"$WORK/dockerd.log" 2>&1 </dev/null &
  STARTED_DOCKERD=$!
  for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && return
    kill -0 "$STARTED_DOCKERD" 2>/dev/null || die "dockerd exited; see $WORK/dockerd.log"
    sleep 0.5
  done
  die "dockerd did not answer within 60 s; see $WORK/dockerd.log"
}

# Compose v2: the plugin if present, else Debian trixie's docker-compose .deb unpacked into a
# private DOCKER_CONFIG (the system's apt sources stay untouched).
ensure_compose() {
  if docker compose version 2>/dev/null | grep -q 'version v\?2'; then return; fi
  export DOCKER_CONFIG="$WORK/docker-config"
  if docker compose version 2>/dev/null | grep -q 'version v\?2'; then return; fi
  log "fetching Compose v2 from Debian trixie into $DOCKER_CONFIG/cli-plugins"
  local apt="$WORK/apt-trixie"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/x" "$DOCKER_CONFIG/cli-plugins"
  printf 'deb %s trixie main\n' "$MIRROR" >"$apt/trixie.list"
  local opts=(-o "Dir::Etc::SourceList=$apt/trixie.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
  apt-get "${opts[@]}" update -q >/dev/null
  (cd "$apt" && apt-get "${opts[@]}" download docker-compose >/dev/null)
  dpkg-deb -x "$apt"/docker-compose_*.deb "$apt/x"
  cp "$apt/x/usr/libexec/docker/cli-plugins/docker-compose" "$DOCKER_CONFIG/cli-plugins/"
  docker compose version | grep -q 'version v\?2' || die "Compose v2 did not install"
}

compose() { docker compose --ansi never -p "$PROJECT" -f "$COMPOSE_FILE" "$@"; }

# --- images -----------------------------------------------------------------------------------------
ensure_base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "reusing base image $BASE_IMAGE"
    return
  fi
  command -v debootstrap >/dev/null 2>&1 || {
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
  }
  local rootfs="$WORK/rootfs"
  rm -rf "$rootfs"
  log "debootstrap --variant=minbase bookworm (no registry can be reached: the base is built here)"
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    die "debootstrap failed; see $WORK/debootstrap.log"
  # apt's package cache and lists would stay in the base layer for good (~80 MB).
  rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  log "base image $BASE_IMAGE imported"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_wheel_server() {
  local dir=${QBFL_WHEEL_DIR:-/opt/wheels}
  if [ ! -d "$dir" ] || ! compgen -G "$dir/*.whl" >/dev/null; then return; fi
  # A fixed port when it is free: the URL is a build argument, and a new value each run would
  # invalidate the layer cache from the first RUN that sees it.
  local port=${QBFL_WHEEL_PORT:-39847}
  # SO_REUSEADDR as http.server sets it: a port in TIME_WAIT after the last build is free.
  if ! python3 -c "import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', int(sys.argv[1])))" "$port" 2>/dev/null; then
    port=$(free_port)
    log "port ${QBFL_WHEEL_PORT:-39847} is taken: serving wheels on $port (the build cache will miss)"
  fi
  python3 -m http.server "$port" --bind 127.0.0.1 --directory "$dir" >"$WORK/wheels.log" 2>&1 &
  WHEEL_SERVER_PID=$!
  for _ in $(seq 50); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=1)" 2>/dev/null && break
    sleep 0.1
  done
  WHEELS_URL="http://127.0.0.1:$port/"
  log "serving $dir on $WHEELS_URL for the build (the wheels never enter a layer)"
}

build_image() {
  WHEELS_URL=""
  start_wheel_server
  local torch_index=${QBFL_TORCH_INDEX_URL-}
  if [ -z "${QBFL_TORCH_INDEX_URL+set}" ] && [ -z "$WHEELS_URL" ]; then
    torch_index=https://download.pytorch.org/whl/cpu
  fi
  if [ -n "$EXTRA_CA_DIR" ] && compgen -G "$EXTRA_CA_DIR/*.crt" >/dev/null; then
    for ca in "$EXTRA_CA_DIR"/*.crt; do
      if [ ! -e "extra-ca/$(basename "$ca")" ]; then
        cp "$ca" extra-ca/
        COPIED_CAS+=("extra-ca/$(basename "$ca")")
      fi
    done
    log "trusting $EXTRA_CA_DIR/*.crt during the build (TLS-inspecting proxy)"
  fi
  log "building $IMAGE from $BASE_IMAGE"
  local start=$SECONDS
  docker build --network host \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --build-arg "WHEELS_URL=$WHEELS_URL" \
    --build-arg "TORCH_INDEX_URL=$torch_index" \
    -t "$IMAGE" . >"$WORK/build.log" 2>&1 || {
    tail -40 "$WORK/build.log" >&2
    die "docker build failed; see $WORK/build.log"
  }
  log "built $IMAGE in $((SECONDS - start)) s, $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
  [ -z "$WHEEL_SERVER_PID" ] || { kill "$WHEEL_SERVER_PID" && wait "$WHEEL_SERVER_PID" 2>/dev/null; WHEEL_SERVER_PID=""; } || true
}

smoke_image() {
  log "smoke checks inside $IMAGE (no network)"
  docker run --rm --network none "$IMAGE" sh -ec '
    test "$(id -u)" != 0 || { echo "runs as root" >&2; exit 1; }
    touch /var/lib/qbfl/.writable && rm /var/lib/qbfl/.writable
    if ls /opt/qbfl/extra-ca /usr/local/share/ca-certificates/qbfl-extra 2>/dev/null; then echo "build CAs in the image" >&2; exit 1; fi
    qbfl-node --help >/dev/null
    qbfl-publisher --help >/dev/null
    qbfl-orchestrator --help >/dev/null
    if qbfl-node health --address 127.0.0.1:9 --timeout 2; then echo "health said SERVING to nothing" >&2; exit 1; fi
    python -c "
from qbfl.learning.data import load_dataset
for name in (\"mnist\", \"fashion-mnist\"):
    for split in (\"train\", \"test\"):
        print(name, split, len(load_dataset(name, split)))
import torch
print(\"torch\", torch.__version__, \"cuda\", torch.cuda.is_available())
"' >&2 || die "smoke checks failed in $IMAGE"
}

# --- engine tests: SDK primitives, compose config, a health-gated host-network compose run --------
run_engine_tests() {
  ensure_compose
  docker image inspect "$IMAGE" >/dev/null 2>&1 || { ensure_base_image; build_image; }
  local python=${QBFL_PYTHON:-.venv/bin/python}
  [ -x "$python" ] || die "no $python: run 'make setup' first (or set QBFL_PYTHON)"
  log "engine tests against $IMAGE"
  QBFL_TEST_IMAGE="$IMAGE" "$python" -m pytest -q -m docker tests/engine -p no:cacheprovider ||
    die "engine tests failed"
}

# --- the network scenario ---------------------------------------------------------------------------
# Status of one node through `qbfl-node status --json` inside its own container (host network).
node_status() {
  local id=$1
  docker exec "${CONTAINER[$id]}" qbfl-node status --address "${ADDRESS[$id]}" --json 2>/dev/null
}

# Prints "H HASH CATCHING_UP" for every honest node, one line each ("- - -" when it does not answer).
honest_heads() {
  local id out
  for id in "${HONEST[@]}"; do
    if out=$(node_status "$id"); then
      # a node still starting (genesis not verified) has no head yet: it counts as not answering
      python3 -c 'import json, sys; s = json.loads(sys.argv[1]); print(*((s["height"], s["head_hash"], str(s.get("catching_up", True)).lower()) if s.get("head_hash") else ("-", "-", "-")))' "$out"
    else
      echo "- - -"
    fi
  done
}

# Waits until every honest node has at least $1 blocks; fails on a fork, a stall or the timeout.
wait_heights() {
  local want=$1 deadline=$((SECONDS + TIMEOUT)) best=-1 progress=$SECONDS
  while :; do
    local heads low=999999999 high=-1 h hash _ line
    heads=$(honest_heads)
    check_fork "$heads"
    while read -r h hash _; do
      [ "$h" = "-" ] && h=-1
      [ "$h" -lt "$low" ] && low=$h
      [ "$h" -gt "$high" ] && high=$h
    done <<<"$heads"
    if [ "$high" -gt "$best" ]; then best=$high progress=$SECONDS; fi
    log "honest heights: $(awk '{printf "%s ", $1}' <<<"$heads")(want >= $want)"
    [ "$low" -ge "$want" ] && return
    [ $((SECONDS - progress)) -lt "$STALL" ] || die "chain stalled at height $best for $STALL s"
    [ "$SECONDS" -lt "$deadline" ] || die "honest nodes did not reach height $want in $TIMEOUT s"
    sleep 5
  done
}

# Two honest nodes at the same height with different hashes: a fork, fail at once.
check_fork() {
  local fork
  fork=$(awk '$1 != "-" { if (($1 in seen) && seen[$1] != $2) print $1; seen[$1] = $2 }' <<<"$1")
  [ -z "$fork" ] || die "fork: honest nodes hold different blocks at height $(head -1 <<<"$fork")"
}

# Waits until every honest node reports the same height and head hash, not catching up.
wait_agreement() {
  local min_height=$1 deadline=$((SECONDS + TIMEOUT))
  while :; do
    local heads
    heads=$(honest_heads)
    check_fork "$heads"
    if [ "$(awk '{print $1, $2, $3}' <<<"$heads" | sort -u | wc -l)" -eq 1 ]; then
      local h hash catching
      read -r h hash catching <<<"$(head -1 <<<"$heads")"
      if [ "$h" != "-" ] && [ "$h" -ge "$min_height" ] && [ "$catching" = "false" ]; then
        log "agreement: all ${#HONEST[@]} honest nodes at height $h, head $hash"
        return
      fi
    fi
    log "honest heads: $(awk '{printf "%s:%.12s ", $1, $2}' <<<"$heads")"
    [ "$SECONDS" -lt "$deadline" ] || die "honest nodes did not agree on one head in $TIMEOUT s"
    sleep 5
  done
}

run_network() {
  ensure_compose
  docker image inspect "$IMAGE" >/dev/null 2>&1 || { ensure_base_image; build_image; }
  local base_port
  # A block of free loopback ports: the publisher on base_port, node i on base_port + 1 + i.
  base_port=$(python3 - "$NODES" <<'EOF'
import socket, sys
n = int(sys.argv[1])
# below the kernel's ephemeral range: an outgoing connection cannot take a port before a node binds it
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
for base in range(21000, max(low - n - 1, 21100), 100):
    try:
        socks = []
        for port in range(base, base + n + 1):
            s = socket.socket(); s.bind(("127.0.0.1", port)); socks.append(s)
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base); break
EOF
)
  COMPOSE_FILE="$WORK/compose-$PROJECT.yml"
  # One model attacker; everything else honest. Generated inside the image: no host venv needed.
  docker run --rm --network none "$IMAGE" qbfl-orchestrator compose \
    --nodes "$NODES" --malicious 1:labelflip --network host --base-port "$base_port" \
    --image "$IMAGE" --no-build --task mnist --rounds "$ROUNDS" --out - >"$COMPOSE_FILE" ||
    die "qbfl-orchestrator compose failed"
  compose config --quiet || die "docker compose config rejects $COMPOSE_FILE"
  log "starting project $PROJECT: publisher on 127.0.0.1:$base_port, $NODES nodes (host network)"
  local start=$SECONDS
  compose up -d --no-build >"$WORK/up.log" 2>&1 || {
    cat "$WORK/up.log" >&2
    die "docker compose up failed"
  }

  declare -gA CONTAINER=() ADDRESS=()
  HONEST=()
  local cid id roles address
  for cid in $(compose ps -q); do
    id=$(docker inspect -f '{{index .Config.Labels "qbfl.node-id"}}' "$cid")
    [ -n "$id" ] || continue
    roles=$(docker inspect -f '{{index .Config.Labels "qbfl.roles"}}' "$cid")
    address=$(docker inspect -f '{{index .Config.Labels "qbfl.address"}}' "$cid")
    CONTAINER[$id]=$cid
    ADDRESS[$id]=$address
    [ "$roles" = "honest" ] && HONEST+=("$id")
  done
  [ "${#CONTAINER[@]}" -eq "$NODES" ] || die "expected $NODES node containers, found ${#CONTAINER[@]}"
  log "honest nodes: ${HONEST[*]}"

  wait_heights "$BLOCKS"
  log "first $BLOCKS blocks after $((SECONDS - start)) s"
  # Kill an honest node that is not node 0 (SIGKILL, no clean shutdown), then start the same
  # container again: same volume, so it resumes from its ledger and catches up from peers.
  local victim=${HONEST[1]}
  local before
  before=$(node_status "$victim" | python3 -c 'import json, sys; print(json.load(sys.stdin)["height"])')
  log "docker kill node $victim at height $before"
  docker kill "${CONTAINER[$victim]}" >/dev/null
  sleep 5
  docker start "${CONTAINER[$victim]}" >/dev/null
  log "node $victim started again"
  # Heights count blocks after genesis (height 0), one per round: the last is $ROUNDS.
  local want=$((before + 1))
  [ "$want" -le "$ROUNDS" ] || want=$ROUNDS
  wait_heights "$want"
  wait_agreement "$want"
  log "network scenario passed in $((SECONDS - start)) s"
  compose logs --no-color --tail 5 publisher >&2 || true
}

ensure_engine
case "$STAGE" in
  image)
    ensure_base_image
    build_image
    smoke_image
    ;;
  tests) run_engine_tests ;;
  network) run_network ;;
  all)
    ensure_base_image
    build_image
    smoke_image
    run_engine_tests
    run_network
    ;;
esac
log "stage '$STAGE' done"
