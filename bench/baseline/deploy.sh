#!/usr/bin/env bash
# The approach stackhook replaces: pull the environment repo, hash each stack directory, and for
# each one whose hash changed run `docker compose down` and `docker compose up -d`, one at a time.
#   BASE_REPO=<git url or path> BASE_DIR=<work dir> [BASE_PREFIX=base-] deploy.sh
# The clone lives in $BASE_DIR/repo and the stored hashes in $BASE_DIR/hashes/<stack>.
# Projects are named $BASE_PREFIX<stack> so they never meet stackhook's in the same engine.
set -euo pipefail
repo=${BASE_REPO:?BASE_REPO is not set}
dir=${BASE_DIR:?BASE_DIR is not set}
prefix=${BASE_PREFIX:-base-}
compose=${BASE_COMPOSE:-docker-compose}

mkdir -p "$dir/hashes"
exec 9>"$dir/lock"
flock 9

if [ -d "$dir/repo/.git" ]; then
    git -C "$dir/repo" pull -q --ff-only
else
    git clone -q "$repo" "$dir/repo"
fi

changed=0
for stack_dir in "$dir"/repo/services/*/; do
    stack=$(basename "$stack_dir")
    hash=$(cd "$stack_dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$dir/hashes/$stack" 2>/dev/null)" = "$hash" ]; then
        continue
    fi
    echo "deploying $stack"
    (cd "$stack_dir" && "$compose" -p "$prefix$stack" down && "$compose" -p "$prefix$stack" up -d) 2>&1
    echo "$hash" >"$dir/hashes/$stack"
    changed=$((changed + 1))
done
echo "done: $changed stack(s) deployed"
