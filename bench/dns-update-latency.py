#!/usr/bin/env python3
"""Service change -> correct DNS answer, with a gateway already holding many Services.

usage: dns-update-latency.py API_HOST:PORT DNS_HOST:PORT [N]

N times (default 100): create a Service with a fixed cluster IP through the embedded API,
then ask its A record over UDP every 0.5 ms until the answer carries that IP; the time from
the API's reply to the first correct answer is one sample. Then delete it and time the
NXDOMAIN the same way. Prints p50/p99/max for both. Loopback only; every wait is bounded.
"""
import http.client
import json
import random
import socket
import struct
import sys
import time


def query(name, qid):
    out = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0)
    for label in name.split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0" + struct.pack(">HH", 1, 1)


def ask(sock, addr, name):
    qid = random.randrange(65536)
    sock.sendto(query(name, qid), addr)
    while True:
        msg, _ = sock.recvfrom(4096)
        if struct.unpack(">H", msg[:2])[0] == qid:
            rcode = msg[3] & 0xF
            an = struct.unpack(">H", msg[6:8])[0]
            return rcode, (socket.inet_ntoa(msg[-4:]) if an else None)


def wait(sock, addr, name, done, limit=5.0):
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        try:
            if done(*ask(sock, addr, name)):
                return time.perf_counter() - start
        except socket.timeout:
            pass
        time.sleep(0.0005)
    raise SystemExit("no correct answer for %s within %.0f s" % (name, limit))


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    api_host, api_port = sys.argv[1].rsplit(":", 1)
    dns_host, dns_port = sys.argv[2].rsplit(":", 1)
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    conn = http.client.HTTPConnection(api_host, int(api_port), timeout=30)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.2)
    addr = (dns_host, int(dns_port))
    add, rem = [], []
    for i in range(n):
        name, ip = "lat-%d" % i, "127.96.250.%d" % (1 + i % 250)
        body = json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                           "spec": {"clusterIP": ip, "ports": [{"port": 80}]}})
        conn.request("POST", "/api/v1/namespaces/default/services", body, {"Content-Type": "application/json"})
        r = conn.getresponse(); r.read()
        if r.status != 201:
            raise SystemExit("create %s: %d" % (name, r.status))
        fq = "%s.default.svc.cluster.local" % name
        add.append(wait(sock, addr, fq, lambda rc, a: rc == 0 and a == ip))
        conn.request("DELETE", "/api/v1/namespaces/default/services/" + name)
        r = conn.getresponse(); r.read()
        rem.append(wait(sock, addr, fq, lambda rc, a: rc == 3))
    for what, v in (("created", add), ("deleted", rem)):
        print("%s -> answered: n=%d p50=%.1f ms p99=%.1f ms max=%.1f ms" % (
            what, len(v), pct(v, 50) * 1e3, pct(v, 99) * 1e3, max(v) * 1e3))


if __name__ == "__main__":
    main()
