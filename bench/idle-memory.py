#!/usr/bin/env python3
"""Memory per idle proxied TCP connection (issue #4's figure), or per idle keep-alive HTTP
connection with `--http` (one request answered on each, then idle; the HTTP/1 path).
`--exchanges K` makes K exchanges on each connection before it idles (default 1): a TCP
connection that has made five or more has moved from its worker's relay task to the worker's
relay thread (host/src/proxy/relay/), so `--exchanges 5` measures a lasting connection.

Starts an echo backend and the gateway (bench/proxy-candidate.sh, one worker, the Wasm
round-robin balancer), opens N connections through the proxy, sends one byte on each and
waits for its echo (so the upstream leg is connected and both copy loops wait), then reads the
gateway's resident memory. Prints the growth per connection, over all N and over the second
half alone (the cost of one more connection, without what the first ones brought once). All
traffic on 127.0.0.1; every wait is bounded.

    python3 bench/idle-memory.py [N]          # default 5000
    python3 bench/idle-memory.py --http [N]
    python3 bench/idle-memory.py --exchanges 5 [N]
"""
import argparse, ctypes, os, resource, signal, socket, subprocess, sys, time

cli = argparse.ArgumentParser(description="memory per idle proxied connection")
cli.add_argument("n", nargs="?", type=int, default=5000, help="connections (default 5000)")
cli.add_argument("--http", action="store_true", help="the HTTP/1 path, one request on each")
cli.add_argument("--exchanges", type=int, default=1, help="exchanges before idling (default 1)")
opts = cli.parse_args()
HTTP, EXCHANGES, N = opts.http, opts.exchanges, opts.n
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = ("127.0.0.1", 24480)
LISTEN = ("127.0.0.1", 24491) if HTTP else ("127.0.0.1", 24490)
REQUEST = b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n"

# Transparent huge pages make resident memory grow in 2 MiB steps (420 bytes a connection at
# 5,000): the gateway, started from here, inherits their being off (PR_SET_THP_DISABLE), so
# the figure counts 4 KiB pages.
ctypes.CDLL(None, use_errno=True).prctl(41, 1, 0, 0, 0)

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


def relay_threads(pid):
    """The gateway's relay threads (a worker starts one when its first connection moves)."""
    tasks = os.listdir(f"/proc/{pid}/task")
    return sum(open(f"/proc/{pid}/task/{t}/comm").read().startswith("sy-relay") for t in tasks)


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
    half = None
    for i in range(N):
        if i == N // 2:
            time.sleep(1)
            half = rss_kib(pid)
        s = socket.create_connection(LISTEN, timeout=10)
        for _ in range(EXCHANGES):
            ping(s)
        conns.append(s)
    time.sleep(1)
    after = rss_kib(pid)
    per = (after - before) * 1024 / N
    # The second half's growth leaves out what the first connections brought once (a relay
    # thread's malloc arena and buffers, tables grown to their size): the cost of one more.
    marginal = (after - half) * 1024 / (N - N // 2)
    what = "idle keep-alive HTTP connection" if HTTP else "idle proxied connection"
    what += f" after {EXCHANGES} exchange{'s' if EXCHANGES > 1 else ''}"
    print(f"connections {N}  gateway RSS before {before} KiB  half-way {half} KiB  after {after} KiB  "
          f"per {what} {per / 1024:.1f} KiB ({per:.0f} bytes), the second half's "
          f"{marginal / 1024:.1f} KiB ({marginal:.0f} bytes)  relay threads {relay_threads(pid)}")
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
