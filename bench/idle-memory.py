#!/usr/bin/env python3
"""Memory per idle proxied TCP connection (issue #4's figure).

Starts an echo backend and the gateway (bench/proxy-candidate.sh, one worker, the Wasm
round-robin balancer), opens N connections through the proxy, sends one byte on each and
waits for its echo (so the upstream leg is connected and both copy loops wait), then reads the
gateway's resident memory. Prints the growth per connection. All traffic on 127.0.0.1;
every wait is bounded.

    python3 bench/idle-memory.py [N]      # default 5000
"""
import os, resource, selectors, signal, socket, subprocess, sys, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = ("127.0.0.1", 24480)
LISTEN = ("127.0.0.1", 24490)

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

ECHO = """
import asyncio, resource
h = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))
async def echo(r, w):
    while data := await r.read(4096):
        w.write(data)
        await w.drain()
    w.close()
async def main():
    s = await asyncio.start_server(echo, "127.0.0.1", 24480, backlog=4096)
    await s.serve_forever()
asyncio.run(main())
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def gateway_pid(parent):
    deadline = time.time() + 30
    while time.time() < deadline:
        out = subprocess.run(["pgrep", "-P", str(parent), "switchyard"], capture_output=True, text=True).stdout.split()
        if out:
            return int(out[0])
        time.sleep(0.1)
    sys.exit("the gateway did not start")


def wait_port(addr, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(addr, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on {addr}")


backend = subprocess.Popen([sys.executable, "-c", ECHO], start_new_session=True)
env = dict(os.environ, BENCH_LISTEN_ADDR="%s:%d" % LISTEN, BENCH_BACKEND_ADDR="%s:%d" % BACKEND, PROXY_THREADS="1")
cand = subprocess.Popen([os.path.join(ROOT, "bench/proxy-candidate.sh")], env=env, start_new_session=True)
try:
    wait_port(BACKEND)
    pid = gateway_pid(cand.pid)
    wait_port(LISTEN)
    time.sleep(1)
    # Warm up: a few connections so lazily built state (plugin instance, pools) exists.
    warm = [socket.create_connection(LISTEN) for _ in range(10)]
    for s in warm:
        s.sendall(b"w")
        s.recv(1)
        s.close()
    time.sleep(0.5)
    before = rss_kib(pid)
    conns = []
    sel = selectors.DefaultSelector()
    for i in range(N):
        s = socket.create_connection(LISTEN, timeout=10)
        s.sendall(b"x")
        conns.append(s)
        if len(conns) % 200 == 0:  # keep the accept queue short
            for c in conns[-200:]:
                c.settimeout(10)
                if c.recv(1) != b"x":
                    sys.exit("no echo")
    for c in conns[len(conns) - len(conns) % 200:]:
        c.settimeout(10)
        if c.recv(1) != b"x":
            sys.exit("no echo")
    time.sleep(1)
    after = rss_kib(pid)
    per = (after - before) * 1024 / N
    print(f"connections {N}  gateway RSS before {before} KiB  after {after} KiB  "
          f"per idle proxied connection {per / 1024:.1f} KiB ({per:.0f} bytes)")
    for c in conns:
        c.close()
finally:
    for p in (cand, backend):
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
