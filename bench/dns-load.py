#!/usr/bin/env python3
"""Load the Services of ../shared/bench/dns-gen.py's services.json into a running switchyard
through its embedded Kubernetes API (plain HTTP, one keep-alive connection), the way a user's
manifests would arrive: namespaces, Services with their cluster IPs, ExternalName Services,
and for headless Services a selector-less Endpoints object with each endpoint's hostname.

usage: dns-load.py SERVICES_JSON API_HOST:PORT
"""
import http.client
import json
import sys
import time


def main():
    desc = json.load(open(sys.argv[1]))
    host, port = sys.argv[2].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def post(path, obj):
        body = json.dumps(obj)
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status not in (200, 201, 409):
            sys.exit("POST %s: %d %s" % (path, r.status, data[:300]))

    started = time.time()
    for ns in desc["namespaces"]:
        post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for s in desc["services"]:
        ns, name = s["namespace"], s["name"]
        ports = [{"name": p["name"], "protocol": p["protocol"], "port": p["port"]} for p in s["ports"]]
        if s["type"] == "ExternalName":
            spec = {"type": "ExternalName", "externalName": s["external_name"]}
        elif s["type"] == "Headless":
            spec = {"clusterIP": "None", "ports": ports}
        else:
            spec = {"clusterIP": s["cluster_ip"], "ports": ports}
        post("/api/v1/namespaces/%s/services" % ns,
             {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec})
        if s["type"] == "Headless":
            post("/api/v1/namespaces/%s/endpoints" % ns, {
                "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns},
                "subsets": [{"addresses": [{"ip": e["ip"], "hostname": e["hostname"]} for e in s["endpoints"]],
                             "ports": ports}]})
    print("loaded %d services in %.1f s" % (len(desc["services"]), time.time() - started), file=sys.stderr)


if __name__ == "__main__":
    main()
