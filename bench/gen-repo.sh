#!/usr/bin/env bash
# Makes a git "environment repo" with N stacks for the benchmarks:
#   bench/gen-repo.sh DIR N
# Each stack services/bench-NNN/ holds one service running the local busybox image
# (`init: true`, so it stops at once on SIGTERM and no side waits out a stop timeout) and its own
# .env, which sets VERSION. The benchmark changes one stack by bumping VERSION in its .env.
# All stacks join one external network (BENCH_NETWORK, default stackhook-bench; run.sh makes it):
# Docker's default address pools hold about 30 bridge networks, so a network per stack stops at
# N≈30 with "could not find an available, non-overlapping IPv4 address pool".
# DIR is made anew; its branch is main.
set -euo pipefail
dir=${1:?usage: gen-repo.sh DIR N}
n=${2:?usage: gen-repo.sh DIR N}
image=${BENCH_IMAGE:-stackhook-bench/busybox:latest}
network=${BENCH_NETWORK:-stackhook-bench}

rm -rf "$dir"
mkdir -p "$dir/services"
git -C "$dir" init -q -b main
git -C "$dir" config user.email bench@stackhook.invalid
git -C "$dir" config user.name bench
printf '# stackhook benchmark environment repo (%s stacks)\n' "$n" >"$dir/README.md"
for i in $(seq 1 "$n"); do
    name=$(printf 'bench-%03d' "$i")
    mkdir -p "$dir/services/$name"
    cat >"$dir/services/$name/compose.yaml" <<YAML
services:
  app:
    image: $image
    init: true
    command: ["sleep", "infinity"]
    environment:
      VERSION: \${VERSION}
      STACK: $name
networks:
  default:
    name: $network
    external: true
YAML
    printf 'VERSION=1\n' >"$dir/services/$name/.env"
done
git -C "$dir" add -A
git -C "$dir" commit -q -m "$n stacks"
