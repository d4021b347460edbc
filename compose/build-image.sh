#!/usr/bin/env bash
# Builds a local stackhook image from this checkout's release binary, with no registry:
#   compose/build-image.sh TAG [docker|podman]
# The image is `FROM scratch` plus the binary, the shared libraries `ldd` names (with the dynamic
# loader), CA certificates, a passwd/group with a non-root user, and busybox for the HEALTHCHECK.
# Users with network access can build the multi-stage Containerfile at the checkout's root instead.
set -euo pipefail
tag=${1:?usage: compose/build-image.sh TAG [docker|podman]}
cli=${2:-docker}
cd "$(dirname "$0")/.."

cargo build --release --locked --bin stackhook
binary=${CARGO_TARGET_DIR:-target}/release/stackhook
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "build-image.sh: $busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
if ldd "$busybox" >/dev/null 2>&1; then
    echo "build-image.sh: $busybox is dynamically linked; the image needs busybox-static" >&2
    exit 1
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
root=$context/rootfs
mkdir -p "$root/bin" "$root/etc/ssl/certs" "$root/tmp" "$root/var/lib" "$context/state"
chmod 1777 "$root/tmp"
cp "$binary" "$root/bin/stackhook"
strip "$root/bin/stackhook" 2>/dev/null || true

# Every absolute path ldd prints is a library or the loader; copy each to the same path (following
# symbolic links), since the loader's built-in search path is the host distribution's. The vDSO has
# no path and lives in the kernel.
ldd "$binary" | grep -o '/[^ ]*' | while read -r library; do
    mkdir -p "$root$(dirname "$library")"
    cp -L "$library" "$root$library"
done

# git over HTTPS verifies servers against these; SSL_CERT_FILE below points OpenSSL at them,
# because the host's OpenSSL directory (/usr/lib/ssl) is not in the image.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
else
    echo "build-image.sh: no /etc/ssl/certs/ca-certificates.crt; git over HTTPS will fail in the image" >&2
fi

# A statically linked busybox only for the HEALTHCHECK's `wget`: the image has no other HTTP
# client and stackhook has no health subcommand. It costs about 2 MB (Debian's busybox-static).
cp "$busybox" "$root/bin/busybox"

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
stackhook:x:10001:10001:stackhook:/var/lib/stackhook:/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
stackhook:x:10001:
EOF

cat >"$context/Containerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
# The state directory belongs to the non-root user, so that a fresh named volume mounted there
# (which the engine fills from the image) is writable by it too. COPY gives --chown only to the
# directories it creates, so the directory is not in rootfs/.
COPY --chown=10001:10001 state /var/lib/stackhook
ENV PATH=/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    STACKHOOK_STATE_DIR=/var/lib/stackhook \
    STACKHOOK_LISTEN=0.0.0.0:1337
# The engine socket is usually owned by root:docker with mode 660, so the image runs as root by
# default. To run as the non-root user instead, give it the socket's group:
#   user: "10001:10001" and group_add: ["<gid of the socket: stat -c %g /var/run/docker.sock>"]
# (`docker run --user 10001:10001 --group-add <gid>`), or use a rootless Podman socket.
USER 0:0
VOLUME /var/lib/stackhook
EXPOSE 1337
# /ready answers 200 once the instance serves, active or standby, so that a new slot can prove
# itself healthy before it is handed over to; proxies ask /health, which only the active slot
# answers with 200. The address must follow STACKHOOK_LISTEN if that is changed.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:1337/ready"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/bin/stackhook"]
CMD ["serve"]
EOF

"$cli" build --quiet --tag "$tag" --file "$context/Containerfile" "$context" >/dev/null
size=$("$cli" image inspect --format '{{.Size}}' "$tag")
echo "build-image.sh: built $tag with $cli: $size bytes ($((size / 1024 / 1024)) MiB)" >&2
