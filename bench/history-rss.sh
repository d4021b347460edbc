#!/usr/bin/env bash
# Idle memory with N stacks and a full history (issue 8): `stackhook serve` deploys N stacks on
# the local Docker engine, the history is filled to STACKHOOK_HISTORY deployments (copies of the
# first one, each naming all N stacks, under new ids), then the read API, the status page and
# /metrics are each asked 20 times, as a dashboard and a browser would. Prints VmRSS after a
# pause, and VmHWM.
#   bench/history-rss.sh [N=50] [DEPLOYMENTS=200]
# Settings: STACKHOOK_BIN (default target/release/stackhook, built if missing), BENCH_LISTEN
# (default 127.0.0.1:18090). All traffic stays on loopback; containers and the network it makes
# are removed at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-50}
kept=${2:-200}
bin=${STACKHOOK_BIN:-$root/target/release/stackhook}
listen=${BENCH_LISTEN:-127.0.0.1:18090}
image=stackhook-bench/busybox:latest
export BENCH_NETWORK=stackhook-bench-history
work=$(mktemp -d /tmp/stackhook-history-rss.XXXXXX)
token=bench-token
pid=

cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    docker ps -aq --filter label=com.docker.compose.project | while read -r id; do
        case "$(docker inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' "$id")" in
        bench-*) docker rm -f "$id" >/dev/null ;;
        esac
    done
    docker network rm "$BENCH_NETWORK" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

docker info >/dev/null 2>&1 || { echo "no Docker engine answers (scripts/engines.sh docker)" >&2; exit 1; }
# Its stacks are named as bench/run.sh's (bench-NNN): never beside it.
if docker ps -q --filter name=bench- | grep -q .; then
    echo "containers named bench-* run (bench/run.sh?); run this alone" >&2
    exit 1
fi
[ -x "$bin" ] || (cd "$root" && cargo build --release --quiet)
"$root/scripts/busybox-image.sh" "$image" docker
docker network inspect "$BENCH_NETWORK" >/dev/null 2>&1 ||
    docker network create --subnet 10.214.0.0/16 "$BENCH_NETWORK" >/dev/null
"$root/bench/gen-repo.sh" "$work/repo" "$n" >/dev/null

export STACKHOOK_REPO=$work/repo STACKHOOK_STATE_DIR=$work/state STACKHOOK_LISTEN=$listen
export STACKHOOK_API_TOKEN=$token STACKHOOK_HISTORY=$kept STACKHOOK_LOG=warn
"$bin" serve >"$work/serve.log" 2>&1 &
pid=$!
get() { curl -fsS -o /dev/null -H "Authorization: Bearer $token" "http://$listen$1"; }
for _ in $(seq 1 600); do
    [ "$(curl -fsS "http://$listen/health" 2>/dev/null | grep -c '"deploying":false')" = 1 ] &&
        [ -n "$(ls "$work/state/history" 2>/dev/null)" ] && break
    sleep 0.5
done
first=$(ls "$work/state/history" | grep '\.json$' | head -1)
[ -n "$first" ] || { echo "no deployment recorded" >&2; cat "$work/serve.log" >&2; exit 1; }
running=$(docker ps -q --filter "label=com.docker.compose.project" --filter "name=bench-" | wc -l)
# Copies under older ids, so that the real one stays the newest.
for i in $(seq 1 $((kept - 1))); do
    id="1000000000-$i"
    sed "s/\"deployment\":\"[^\"]*\"/\"deployment\":\"$id\"/" "$work/state/history/$first" \
        >"$work/state/history/$id.json"
    cp "$work/state/history/${first%.json}.log" "$work/state/history/$id.log"
done
for _ in $(seq 1 20); do
    get "/api/deployments?limit=$kept"
    get /api/stacks
    get /
    get /metrics
    get "/deployments/${first%.json}"
done
sleep 2
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
records=$(ls "$work/state/history" | grep -c '\.json$')
bytes=$(du -sk "$work/state/history" | cut -f1)
printf 'N=%s stacks (%s running), history of %s deployments (%s KiB on disk)\n' "$n" "$running" "$records" "$bytes"
printf 'idle VmRSS after 20 rounds of reads: %.1f MiB; VmHWM: %.1f MiB\n' \
    "$(echo "$rss / 1024" | bc -l)" "$(echo "$hwm / 1024" | bc -l)"
