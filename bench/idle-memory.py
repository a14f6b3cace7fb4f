#!/usr/bin/env python3
"""Memory per idle proxied TCP connection (issue #4's figure), or per idle keep-alive HTTP
connection with `--http` (one request answered on each, then idle; the HTTP/1 path).

Starts an echo backend and the gateway (bench/proxy-candidate.sh, one worker, the Wasm
round-robin balancer), opens N connections through the proxy, sends one byte on each and
waits for its echo (so the upstream leg is connected and both copy loops wait), then reads the
gateway's resident memory. Prints the growth per connection. All traffic on 127.0.0.1;
every wait is bounded.

    python3 bench/idle-memory.py [N]          # default 5000
    python3 bench/idle-memory.py --http [N]
"""
import os, resource, signal, socket, subprocess, sys, time

HTTP = "--http" in sys.argv[1:]
ARGS = [a for a in sys.argv[1:] if a != "--http"]
N = int(ARGS[0]) if ARGS else 5000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = ("127.0.0.1", 24480)
LISTEN = ("127.0.0.1", 24491) if HTTP else ("127.0.0.1", 24490)
REQUEST = b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n"

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

ECHO = """
import asyncio, resource
h = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))
async def echo(r, w):
    while data := await r.read(4096):
        if data.startswith(b"GET "):
            data = b"HTTP/1.1 200 OK\\r\\nContent-Length: 1\\r\\n\\r\\nx"
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
env = dict(os.environ, BENCH_LISTEN_ADDR="127.0.0.1:24490", BENCH_BACKEND_ADDR="%s:%d" % BACKEND, PROXY_THREADS="1")
if HTTP:
    env["BENCH_L7_ADDR"] = "%s:%d" % LISTEN


def ping(s):
    """One exchange on `s`: a byte echoed (TCP) or a request answered (HTTP)."""
    s.settimeout(10)
    if HTTP:
        s.sendall(REQUEST)
        got = b""
        while not got.endswith(b"\r\n\r\nx"):
            k = s.recv(4096)
            if not k:
                sys.exit("no answer")
            got += k
    else:
        s.sendall(b"x")
        if s.recv(1) != b"x":
            sys.exit("no echo")

cand = subprocess.Popen([os.path.join(ROOT, "bench/proxy-candidate.sh")], env=env, start_new_session=True)
try:
    wait_port(BACKEND)
    pid = gateway_pid(cand.pid)
    wait_port(LISTEN)
    time.sleep(1)
    # Warm up: a few connections so lazily built state (plugin instance, pools) exists.
    warm = [socket.create_connection(LISTEN) for _ in range(10)]
    for s in warm:
        ping(s)
        s.close()
    time.sleep(0.5)
    before = rss_kib(pid)
    conns = []
    for i in range(N):
        s = socket.create_connection(LISTEN, timeout=10)
        ping(s)
        conns.append(s)
    time.sleep(1)
    after = rss_kib(pid)
    per = (after - before) * 1024 / N
    what = "idle keep-alive HTTP connection" if HTTP else "idle proxied connection"
    print(f"connections {N}  gateway RSS before {before} KiB  after {after} KiB  "
          f"per {what} {per / 1024:.1f} KiB ({per:.0f} bytes)")
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
