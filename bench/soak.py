#!/usr/bin/env python3
"""Soak test of `stackhook serve` (issue 9, "Done means"): a storm of signed pushes while stacks
deploy, plus slow connections that trickle their headers, all on loopback.

    bench/soak.py [--pushes 500] [--seconds 10] [--stacks 5] [--slow 100]

It makes a repository of busybox stacks (bench/gen-repo.sh), starts the release binary on it,
and then, for `--seconds`: commits a new VERSION to a random stack every 100 ms and sends
`--pushes` signed push webhooks spread over the period, while `--slow` connections send one
header byte a second. Afterwards it asks for one last deployment, waits for it, and checks that
the newest commit is deployed and that every stack runs the VERSION it last committed.

Prints p50/p99/max answer times of the pushes, how many answered 202, how many passes ran, the
server's peak RSS (VmHWM), and whether nothing was lost. Not part of the test suite: a
measurement, like bench/run.sh. Only the Python standard library; nothing leaves loopback.
"""

import argparse
import hashlib
import hmac
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "stackhook-bench/busybox:latest"
NETWORK = "stackhook-soak"


def run(*args, **kwargs):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)


def git(repo, *args):
    return run("git", "-C", repo, *args).stdout.strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, headers, timeout=120):
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    except OSError as error:
        status, text = 0, str(error).encode()
    return status, time.monotonic() - started, text


def signed_push(url, secret, delivery):
    body = json.dumps({"ref": "refs/heads/main", "after": "0" * 40}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": signature,
    }
    return post(url, body, headers)


def slow_connection(port, stop):
    """Sends a request line and then one header byte a second until told to stop."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"POST /hooks/github HTTP/1.1\r\nHost: x\r\n")
            while not stop.is_set():
                s.sendall(b"X")
                stop.wait(1)
    except OSError:
        pass  # the server closing a slow connection is the point


def rss_peak(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pushes", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--stacks", type=int, default=5)
    parser.add_argument("--slow", type=int, default=100)
    args = parser.parse_args()

    binary = os.environ.get("STACKHOOK_BIN", os.path.join(ROOT, "target/release/stackhook"))
    if not os.path.exists(binary):
        run("cargo", "build", "--release", "--quiet", cwd=ROOT)
    run(os.path.join(ROOT, "scripts/busybox-image.sh"), IMAGE)
    subprocess.run(["docker", "network", "create", NETWORK], capture_output=True)

    work = tempfile.mkdtemp(prefix="stackhook-soak.")
    repo = os.path.join(work, "env")
    environment = dict(os.environ, BENCH_NETWORK=NETWORK, BENCH_IMAGE=IMAGE)
    run(os.path.join(ROOT, "bench/gen-repo.sh"), repo, str(args.stacks), env=environment)
    stacks = sorted(os.listdir(os.path.join(repo, "services")))
    secret = os.urandom(16).hex()
    port = free_port()
    log_path = os.path.join(work, "stackhook.log")
    server_env = dict(
        os.environ,
        STACKHOOK_REPO=repo,
        STACKHOOK_STATE_DIR=os.path.join(work, "state"),
        STACKHOOK_LISTEN=f"127.0.0.1:{port}",
        STACKHOOK_WEBHOOK_SECRET=secret,
        STACKHOOK_LOG="info",
    )
    with open(log_path, "w") as log:
        server = subprocess.Popen([binary, "serve"], env=server_env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    health = json.loads(response.read())
                if health.get("last_deployment") and not health.get("deploying"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit("soak: the server's first pass did not finish within 120 s")
            time.sleep(0.2)

        stop = threading.Event()
        slow = [threading.Thread(target=slow_connection, args=(port, stop)) for _ in range(args.slow)]
        for thread in slow:
            thread.start()

        versions = {stack: 1 for stack in stacks}
        lock = threading.Lock()

        def committer():
            version = 1
            while not stop.is_set():
                version += 1
                stack = random.choice(stacks)
                with open(os.path.join(repo, "services", stack, ".env"), "w") as env:
                    env.write(f"VERSION={version}\n")
                with lock:
                    git(repo, "commit", "-qam", f"{stack} at {version}")
                    versions[stack] = version
                stop.wait(0.1)

        committing = threading.Thread(target=committer)
        committing.start()

        answers = []
        answers_lock = threading.Lock()

        def pusher(count, offset):
            for i in range(count):
                due = started + (offset + i * workers) * args.seconds / args.pushes
                time.sleep(max(0.0, due - time.monotonic()))
                status, seconds, _ = signed_push(base + "/hooks/github", secret, f"soak-{offset}-{i}")
                with answers_lock:
                    answers.append((status, seconds))

        workers = 20
        started = time.monotonic()
        pushers = []
        for offset in range(workers):
            count = len(range(offset, args.pushes, workers))
            pushers.append(threading.Thread(target=pusher, args=(count, offset)))
        for thread in pushers:
            thread.start()
        for thread in pushers:
            thread.join()
        storm = time.monotonic() - started
        stop.set()
        committing.join()
        for thread in slow:
            thread.join()

        # The last word: one more push, waited for.
        head = git(repo, "rev-parse", "HEAD")
        status, seconds, text = post(
            base + "/hooks/github?wait=true",
            json.dumps({"ref": "refs/heads/main", "after": head}).encode(),
            {
                "Content-Type": "application/json",
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": "soak-last",
                "X-Hub-Signature-256": "sha256="
                + hmac.new(
                    secret.encode(),
                    json.dumps({"ref": "refs/heads/main", "after": head}).encode(),
                    hashlib.sha256,
                ).hexdigest(),
            },
            timeout=300,
        )
        with urllib.request.urlopen(base + "/health", timeout=5) as response:
            health = json.loads(response.read())
        deployed = (health.get("last_deployment") or {}).get("commit")
        running = {}
        for stack in stacks:
            name = f"{stack}-app-1"
            env = run("docker", "inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", name).stdout
            version = [line.split("=", 1)[1] for line in env.splitlines() if line.startswith("VERSION=")]
            running[stack] = int(version[0]) if version else None
        lost = {s: (versions[s], running[s]) for s in stacks if versions[s] != running[s]}
        peak = rss_peak(server.pid)
        with open(log_path) as log:
            passes = sum(1 for line in log if "deployment finished" in line)
    finally:
        server.terminate()
        try:
            server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()
        for stack in stacks:
            subprocess.run(["docker", "rm", "-f", f"{stack}-app-1"], capture_output=True)
        subprocess.run(["docker", "network", "rm", NETWORK], capture_output=True)

    times = sorted(seconds for _, seconds in answers)
    accepted = sum(1 for status, _ in answers if status == 202)

    def percentile(p):
        return times[min(len(times) - 1, int(p * len(times)))] * 1000

    print(f"| pushes | in | answered 202 | p50 | p99 | max | slow connections | passes | peak RSS | newest commit deployed | stacks at their last VERSION |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {len(answers)} | {storm:.1f} s | {accepted} | {percentile(0.5):.1f} ms | {percentile(0.99):.1f} ms "
        f"| {times[-1] * 1000:.1f} ms | {args.slow} | {passes} | {peak:.1f} MiB "
        f"| {'yes' if deployed == head and status == 200 else f'no ({deployed} vs {head}, {status})'} "
        f"| {'all ' + str(len(stacks)) if not lost else 'lost: ' + json.dumps(lost)} |"
    )
    print(f"median answer {statistics.median(times) * 1000:.1f} ms; last push answered {status} in {seconds:.2f} s; log: {log_path}")
    if lost or deployed != head:
        sys.exit(1)


if __name__ == "__main__":
    main()
