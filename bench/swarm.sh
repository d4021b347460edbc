#!/usr/bin/env bash
# Measures stackhook in Swarm mode against a script that runs `docker stack deploy` for every
# stack, on a single-node swarm of the local Docker engine (issue 12):
#   bench/swarm.sh [N...]          # default: $BENCH_NS, else 10 50
# Prints a markdown table and writes it to bench/results/<date>-swarm.md.
#
# Each of the N stacks (sbench-NNN, and sbase-NNN for the script) has one replicated service on
# the local busybox image and its own overlay network. What is measured, for each N:
#   cold start      from nothing to every service converged: `stackhook serve`'s first pass
#                   (STACKHOOK_ENGINE_MODE=swarm) until /health reports it finished, against the
#                   script's `docker stack deploy` of each stack, then waiting until every service
#                   runs 1/1;
#   push→converged  one stack's VERSION changed, committed and pushed: stackhook's signed push with
#                   `?wait=true` (it answers once the changed service converged), against the script
#                   deploying every stack again and waiting until the changed service runs its new
#                   task.
# Settings: BENCH_NS, BENCH_RUNS (push samples, default 3), STACKHOOK_BIN (default
# target/release/stackhook, built if missing), BENCH_LISTEN (127.0.0.1:18090).
# The engine is made a swarm manager if it is not one. Everything it creates is removed at the end.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
if [ $# -gt 0 ]; then ns=("$@"); else read -r -a ns <<<"${BENCH_NS:-10 50}"; fi
runs=${BENCH_RUNS:-3}
image=stackhook-bench/busybox:latest
listen=${BENCH_LISTEN:-127.0.0.1:18090}
bin=${STACKHOOK_BIN:-$root/target/release/stackhook}
secret=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
work=$(mktemp -d /tmp/stackhook-swarm-bench.XXXXXX)
stamp=$(date -u +%Y-%m-%d-%H%M)
results=$here/results/$stamp-swarm.md
server_pid=

log() { printf '[swarm bench %s] %s\n' "$(date +%T)" "$*" >&2; }
now_ms() { date +%s%3N; }

# Removes every service, then network, of the stacks this script makes.
clean() {
    local services networks
    services=$(docker service ls --format '{{.Name}}' | grep -E '^(sbench|sbase)-[0-9]{3}_' || true)
    if [ -n "$services" ]; then echo "$services" | xargs -n 50 docker service rm >/dev/null; fi
    for _ in $(seq 1 120); do
        networks=$(docker network ls --format '{{.Name}}' | grep -E '^(sbench|sbase)-[0-9]{3}_' || true)
        [ -z "$networks" ] && return 0
        echo "$networks" | xargs -n 50 docker network rm >/dev/null 2>&1 || true
        sleep 0.5
    done
}

stop_server() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    server_pid=
}

trap 'stop_server; clean; rm -rf "$work"' EXIT

# A repository of $2 stacks named $3-NNN in $1.
generate() {
    local dir=$1 n=$2 prefix=$3
    rm -rf "$dir"
    mkdir -p "$dir/services"
    git -C "$dir" init -q -b main
    git -C "$dir" config user.email bench@stackhook.invalid
    git -C "$dir" config user.name bench
    for i in $(seq 1 "$n"); do
        local name
        name=$(printf '%s-%03d' "$prefix" "$i")
        mkdir -p "$dir/services/$name"
        cat >"$dir/services/$name/compose.yaml" <<YAML
services:
  app:
    image: $image
    init: true
    command: ["sleep", "infinity"]
    environment:
      VERSION: "1"
YAML
    done
    git -C "$dir" add -A
    git -C "$dir" commit -qm "$n stacks"
}

bump() { # dir stack version
    sed -i "s/VERSION: \".*\"/VERSION: \"$3\"/" "$1/services/$2/compose.yaml"
    git -C "$1" commit -qam "$2 to $3"
}

# Waits until $1 services of stacks matching $2 run all their replicas.
wait_converged() {
    local want=$1 pattern=$2 got
    for _ in $(seq 1 2400); do
        got=$(docker service ls --format '{{.Name}} {{.Replicas}}' | grep -E "^$pattern" | awk '{split($2, r, "/"); if (r[1] == r[2]) n++} END {print n + 0}')
        [ "$got" = "$want" ] && return 0
        sleep 0.05
    done
    log "error: $got of $want services converged"
    return 1
}

# Waits until the service $1 runs a task whose VERSION is $2.
wait_version() {
    for _ in $(seq 1 2400); do
        if docker service ps "$1" --filter desired-state=running --format '{{.CurrentState}}' | grep -q '^Running' &&
            [ "$(docker service inspect --format '{{range .Spec.TaskTemplate.ContainerSpec.Env}}{{.}}{{end}}' "$1")" = "VERSION=$2" ] &&
            [ "$(docker service inspect --format '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "$1")" != updating ]; then
            return 0
        fi
        sleep 0.05
    done
    log "error: $1 never ran VERSION=$2"
    return 1
}

# The script stackhook replaces, on Swarm: every stack deployed again on each push.
script_deploy() {
    local dir=$1
    for stack in "$dir"/services/*/; do
        docker stack deploy --resolve-image never -c "$stack/compose.yaml" "$(basename "$stack")" >/dev/null 2>&1
    done
}

if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
    log "making the engine a single-node swarm"
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
fi
"$root/scripts/busybox-image.sh" "$image" docker
if [ ! -x "$bin" ]; then (cd "$root" && cargo build --release --quiet); fi
clean

rows=()
for n in "${ns[@]}"; do
    log "N=$n: stackhook"
    repo=$work/repo-$n
    state=$work/state-$n
    generate "$repo" "$n" sbench
    start=$(now_ms)
    STACKHOOK_REPO="$repo" STACKHOOK_STATE_DIR="$state" STACKHOOK_LISTEN="$listen" \
        STACKHOOK_WEBHOOK_SECRET="$secret" STACKHOOK_ENGINE_MODE=swarm STACKHOOK_LOG=warn \
        "$bin" serve >"$work/server-$n.log" 2>&1 &
    server_pid=$!
    until curl -s "http://$listen/health" | grep -q '"deploying":false' &&
        curl -s "http://$listen/health" | grep -q '"last_deployment":{'; do sleep 0.05; done
    wait_converged "$n" 'sbench-[0-9]{3}_'
    cold=$(($(now_ms) - start))
    pushes=()
    for run in $(seq 1 "$runs"); do
        bump "$repo" sbench-001 $((run + 1))
        body='{"ref":"refs/heads/main","after":"0"}'
        signature=sha256=$(printf %s "$body" | openssl dgst -sha256 -hmac "$secret" | sed 's/^.*= //')
        start=$(now_ms)
        code=$(curl -s -o "$work/answer" -w '%{http_code}' -H 'Content-Type: application/json' \
            -H 'X-GitHub-Event: push' -H "X-Hub-Signature-256: $signature" --data-binary "$body" \
            "http://$listen/hooks/github?wait=true")
        pushes+=($(($(now_ms) - start)))
        [ "$code" = 200 ] || { log "error: push answered $code: $(cat "$work/answer")"; exit 1; }
        wait_version sbench-001_app $((run + 1))
    done
    stop_server
    ours_cold=$cold
    ours_push=$(printf '%s\n' "${pushes[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    clean

    log "N=$n: docker stack deploy script"
    repo=$work/base-$n
    generate "$repo" "$n" sbase
    start=$(now_ms)
    script_deploy "$repo"
    wait_converged "$n" 'sbase-[0-9]{3}_'
    base_cold=$(($(now_ms) - start))
    pushes=()
    for run in $(seq 1 "$runs"); do
        bump "$repo" sbase-001 $((run + 1))
        start=$(now_ms)
        script_deploy "$repo"
        wait_version sbase-001_app $((run + 1))
        pushes+=($(($(now_ms) - start)))
    done
    base_push=$(printf '%s\n' "${pushes[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    clean
    rows+=("| $n | $ours_cold | $base_cold | $ours_push | $base_push |")
    log "N=$n: cold ${ours_cold} vs ${base_cold} ms, push ${ours_push} vs ${base_push} ms"
done

mkdir -p "$here/results"
{
    echo "# Swarm mode: stackhook vs a docker stack deploy script ($stamp)"
    echo
    echo "\`bench/swarm.sh ${ns[*]}\`, $runs push samples (median), Docker $(docker version --format '{{.Server.Version}}'), single-node swarm, $(nproc) cores."
    echo
    echo "| N stacks | cold start, stackhook (ms) | cold start, script (ms) | push→converged, stackhook (ms) | push→converged, script (ms) |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} | tee "$results"
