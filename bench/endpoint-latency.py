#!/usr/bin/env python3
"""Endpoint change -> first connection that reaches the new endpoint, with many Services
(issue #4's figure: p99 under 50 ms with 10,000 Services).

Starts the gateway (one worker, embedded API), creates SERVICES ClusterIP Services each with
an Endpoints object, then flips one Service's only endpoint between two backends ROUNDS times
(merge-patch of the Endpoints through the API) and after each change connects to the cluster
IP until the new backend answers. A backend answers a connection with its own address and
closes. All traffic on 127.0.0.0/8; every wait is bounded.

    python3 bench/endpoint-latency.py [SERVICES] [ROUNDS]    # default 10000 100
"""
import concurrent.futures, json, os, resource, signal, socket, statistics, subprocess, sys, tempfile, time
import urllib.request

SERVICES = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 100
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SWITCHYARD_BIN", os.path.join(ROOT, "target/release/switchyard"))
API = "127.0.0.1:24690"
ADMIN = "127.0.0.1:24691"
BACKENDS = ["127.0.0.31", "127.0.0.32"]
PORT = 24680

hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

NAMER = """
import asyncio, sys
async def answer(r, w):
    w.write(w.get_extra_info("sockname")[0].encode())
    await w.drain()
    w.close()
async def main():
    servers = [await asyncio.start_server(answer, ip, %d, backlog=1024) for ip in sys.argv[1:]]
    await asyncio.gather(*(s.serve_forever() for s in servers))
asyncio.run(main())
""" % PORT


def call(method, path, body=None, ctype="application/json"):
    req = urllib.request.Request(f"http://{API}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def create(i):
    name = f"s-{i}"
    svc = call("POST", "/api/v1/namespaces/default/services",
               {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"ports": [{"port": 80, "targetPort": PORT}]}})
    call("POST", "/api/v1/namespaces/default/endpoints",
         {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
          "subsets": [{"addresses": [{"ip": BACKENDS[0]}], "ports": [{"port": PORT}]}]})
    return svc["spec"]["clusterIP"]


def probe(ip):
    with socket.create_connection((ip, 80), timeout=2) as s:
        return s.recv(64).decode()


def wait(what, f, limit, every=0.05):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            v = f()
            if v:
                return v
        except OSError:
            pass
        time.sleep(every)
    sys.exit(f"timed out waiting for {what}")


data = tempfile.mkdtemp()
namer = subprocess.Popen([sys.executable, "-c", NAMER, *BACKENDS], start_new_session=True)
gw = subprocess.Popen([BIN, "serve", "--data-dir", data, "--api-listen", API, "--admin-listen", ADMIN,
                       "--dns-listen", "127.0.0.1:24692", "--workers", "1",
                       "--service-cidr", "127.230.0.0/16", "--lb-pool", "127.231.0.0/24",
                       "--node-ip", "127.232.0.1",
                       "--plugin-cache", os.path.join(ROOT, "target/test-plugin-cache")],
                      stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "log"), "w"),
                      start_new_session=True)
try:
    wait("the gateway", lambda: urllib.request.urlopen(f"http://{ADMIN}/readyz", timeout=1).status == 200, 60)
    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        ips = list(pool.map(create, range(SERVICES)))
    created = time.time() - started
    target = SERVICES // 2
    ip = ips[target]
    wait("all listeners", lambda: probe(ips[-1]) == BACKENDS[0] and probe(ip) == BACKENDS[0], 300)
    ready = time.time() - started
    lat = []
    for r in range(ROUNDS):
        new = BACKENDS[(r + 1) % 2]
        call("PATCH", f"/api/v1/namespaces/default/endpoints/s-{target}",
             {"subsets": [{"addresses": [{"ip": new}], "ports": [{"port": PORT}]}]},
             ctype="application/merge-patch+json")
        t0 = time.perf_counter()
        wait("the new endpoint", lambda: probe(ip) == new, 10, every=0.0005)
        lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    rss = next(int(l.split()[1]) for l in open(f"/proc/{gw.pid}/status") if l.startswith("VmRSS:"))
    print(f"services {SERVICES}: created in {created:.1f} s, all listening after {ready:.1f} s, gateway RSS {rss / 1024:.0f} MiB")
    print(f"endpoint change -> first connection to the new endpoint, {ROUNDS} changes: "
          f"p50 {p(0.5):.1f} ms  p99 {p(0.99):.1f} ms  max {lat[-1]:.1f} ms  mean {statistics.mean(lat):.1f} ms")
finally:
    for p_ in (gw, namer):
        try:
            os.killpg(p_.pid, signal.SIGTERM)
            p_.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
