# Sourced by bench/cpu-split.sh and bench/wake-probe.sh: `anchor_configs DIR BASE` writes the
# response bodies (DIR/100b, DIR/16k) and the configs of the nginx backend on BASE
# (DIR/backend.conf; sendfile as $SENDFILE, default on: the head by writev, the body by
# sendfile, as in ../shared/bench/proxy-bench.sh), haproxy with one thread (DIR/haproxy.cfg:
# tcp on BASE+1, http on BASE+2) and nginx with one worker (DIR/nginx.conf: stream on
# BASE+3, http with upstream keep-alive on BASE+4). Loopback only.
anchor_configs() {
  local dir=$1 base=$2
  head -c 100 /dev/zero | tr '\0' a >"$dir/100b"
  head -c 16384 /dev/zero | tr '\0' b >"$dir/16k"
  cat >"$dir/backend.conf" <<CONF
worker_processes 1; daemon off; master_process off; pid $dir/backend.pid;
error_log $dir/backend.err;
events { worker_connections 4096; }
http { access_log off; sendfile ${SENDFILE:-on}; open_file_cache max=16; keepalive_requests 100000000;
  server { listen 127.0.0.1:$base; root $dir; } }
CONF
  cat >"$dir/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 4096
defaults
    timeout connect 5s
    timeout client 60s
    timeout server 60s
listen tcp
    mode tcp
    bind 127.0.0.1:$((base + 1))
    server s1 127.0.0.1:$base
listen http
    mode http
    option http-keep-alive
    bind 127.0.0.1:$((base + 2))
    server s1 127.0.0.1:$base
CONF
  cat >"$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1; daemon off; master_process off; pid $dir/nginx.pid;
error_log $dir/nginx.err;
events { worker_connections 4096; }
stream { server { listen 127.0.0.1:$((base + 3)); proxy_pass 127.0.0.1:$base; } }
http { access_log off;
  upstream b { server 127.0.0.1:$base; keepalive 256; keepalive_requests 100000000; }
  server { listen 127.0.0.1:$((base + 4)); keepalive_requests 100000000;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
}
