//! Real backend processes for data-plane tests: Python HTTP servers and UDP echo servers on
//! loopback addresses, each answering with its name so a test sees which one served it.
//! Every process exits by itself after 15 minutes (`alarm`), and is killed when its handle
//! drops.

use std::net::{TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::wait_for;

/// Answers every GET with `NAME CLIENT-IP X-FORWARDED-FOR PATH`, HTTP/1.1 keep-alive.
const HTTP: &str = r#"
import sys, signal, http.server, socketserver
signal.alarm(900)
ip, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("%s %s %s %s\n" % (name, self.client_address[0], self.headers.get("X-Forwarded-For", "-"), self.path)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
S((ip, port), H).serve_forever()
"#;

/// What the UDP servers share: arguments, the bound socket `s`, the receive loop's head.
const UDP_HEAD: &str = r#"
import sys, signal, socket, struct
signal.alarm(900)
ip, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((ip, port))
while True:
    d, a = s.recvfrom(65535)
"#;

/// Echoes every datagram back prefixed with `NAME `.
const UDP_ECHO: &str = r#"
    s.sendto(name.encode() + b" " + d, a)
"#;

/// Expects every datagram to start with a PROXY protocol v2 header (datagram, IPv4); answers
/// `NAME src=IP:PORT dst=IP:PORT PAYLOAD` from it, or `NAME no header`.
const UDP_PROXY_V2: &str = r#"
    if d[:12] != b"\r\n\r\n\x00\r\nQUIT\n" or d[12] != 0x21 or d[13] != 0x12:
        s.sendto(name.encode() + b" no header", a)
        continue
    n = struct.unpack("!H", d[14:16])[0]
    src, dst = socket.inet_ntoa(d[16:20]), socket.inet_ntoa(d[20:24])
    sp, dp = struct.unpack("!HH", d[24:28])
    out = "%s src=%s:%d dst=%s:%d " % (name, src, sp, dst, dp)
    s.sendto(out.encode() + d[16 + n:], a)
"#;

/// What the thread-per-connection servers share: arguments, `exact(c, n)` reads n bytes.
const THREADED_HEAD: &str = r#"
import sys, signal, socket, struct, threading
signal.alarm(900)
ip, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def exact(c, n):
    b = b""
    while len(b) < n:
        k = c.recv(n - len(b))
        if not k:
            raise EOFError
        b += k
    return b
"#;

/// ... and the accept loop that runs `handle(c)` on a thread per connection.
const THREADED_LOOP: &str = r#"
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port))
s.listen(128)
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"#;

/// Expects a PROXY protocol v2 header, then an HTTP request; answers
/// `NAME src=IP:PORT dst=IP:PORT` from the header (or 400 without one).
const PROXY_V2: &str = r#"
def handle(c):
    try:
        h = exact(c, 16)
        if h[:12] != b"\r\n\r\n\x00\r\nQUIT\n" or h[12] != 0x21:
            msg = b"no PROXY v2 header\n"
            c.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % len(msg) + msg)
            return
        a = exact(c, struct.unpack("!H", h[14:16])[0])
        if h[13] == 0x11:
            src, dst = socket.inet_ntop(socket.AF_INET, a[0:4]), socket.inet_ntop(socket.AF_INET, a[4:8])
            sp, dp = struct.unpack("!HH", a[8:12])
        else:
            src, dst = socket.inet_ntop(socket.AF_INET6, a[0:16]), socket.inet_ntop(socket.AF_INET6, a[16:32])
            sp, dp = struct.unpack("!HH", a[32:36])
        req = b""
        while b"\r\n\r\n" not in req:
            k = c.recv(4096)
            if not k:
                break
            req += k
        msg = ("%s src=%s:%d dst=%s:%d\n" % (name, src, sp, dst, dp)).encode()
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(msg) + msg)
    except EOFError:
        pass
    finally:
        c.close()
"#;

/// A WebSocket server (RFC 6455, text frames): answers the upgrade with `101` and echoes each
/// frame as `NAME: TEXT`; a plain request gets `400`.
const WEBSOCKET: &str = r#"
import hashlib, base64
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def handle(c):
    try:
        head = b""
        while b"\r\n\r\n" not in head:
            k = c.recv(4096)
            if not k:
                return
            head += k
        lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
        h = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        if h.get("upgrade", "").lower() != "websocket" or "upgrade" not in h.get("connection", "").lower():
            msg = b"not a WebSocket upgrade\n"
            c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(msg) + msg)
            return
        accept = base64.b64encode(hashlib.sha1(h["sec-websocket-key"].encode() + GUID).digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        while True:
            b0, b1 = exact(c, 2)
            op, n = b0 & 15, b1 & 127
            if n == 126:
                n = struct.unpack("!H", exact(c, 2))[0]
            elif n == 127:
                n = struct.unpack("!Q", exact(c, 8))[0]
            mask = exact(c, 4) if b1 & 128 else b"\0\0\0\0"
            data = bytes(x ^ mask[i % 4] for i, x in enumerate(exact(c, n)))
            if op == 8:
                c.sendall(b"\x88\x00")
                return
            out = name.encode() + b": " + data
            hdr = bytes([0x81, len(out)]) if len(out) < 126 else bytes([0x81, 126]) + struct.pack("!H", len(out))
            c.sendall(hdr + out)
    except (EOFError, OSError):
        pass
    finally:
        c.close()
"#;

/// HTTP/1.x on raw sockets, for framing tests: `POST` answers `NAME LENGTH SUM` of the body
/// it read (Content-Length or chunked); `HEAD` says Content-Length 1234 and sends none;
/// `/chunked` answers chunked (50 lines and a trailer), or until close to an HTTP/1.0
/// request; `/close` answers until close; `/early` sends `103 Early Hints` first; anything
/// else answers `NAME PATH X-FORWARDED-FOR`. Keep-alive unless asked to close.
const HTTP_WIRE: &str = r#"
def line(c, buf):
    while b"\n" not in buf[0]:
        k = c.recv(65536)
        if not k:
            raise EOFError
        buf[0] += k
    l, buf[0] = buf[0].split(b"\n", 1)
    return l.rstrip(b"\r")
def take(c, buf, n):
    while len(buf[0]) < n:
        k = c.recv(65536)
        if not k:
            raise EOFError
        buf[0] += k
    d, buf[0] = buf[0][:n], buf[0][n:]
    return d
def handle(c):
    buf = [b""]
    try:
        while True:
            method, path, version = line(c, buf).decode().split(" ")
            h = {}
            while True:
                l = line(c, buf)
                if not l:
                    break
                k, v = l.decode().split(":", 1)
                h[k.strip().lower()] = v.strip()
            body = b""
            if h.get("transfer-encoding", "").lower().endswith("chunked"):
                while True:
                    n = int(line(c, buf).split(b";")[0], 16)
                    if n == 0:
                        while line(c, buf):
                            pass
                        break
                    body += take(c, buf, n)
                    take(c, buf, 2)
            elif "content-length" in h:
                body = take(c, buf, int(h["content-length"]))
            close = h.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            conn = b"Connection: close\r\n" if close else b""
            if method == "HEAD":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n" + conn + b"\r\n")
            elif method in ("POST", "PUT"):
                out = ("%s %d %d\n" % (name, len(body), sum(body) % 4294967296)).encode()
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(out), conn, out))
            elif path == "/chunked" and version == "HTTP/1.0":
                c.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + "".join("line %d\n" % i for i in range(50)).encode())
                return
            elif path == "/chunked":
                c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Done\r\n" + conn + b"\r\n")
                for i in range(50):
                    d = ("line %d\n" % i).encode()
                    c.sendall(b"%x\r\n%s\r\n" % (len(d), d))
                c.sendall(b"0\r\nX-Done: yes\r\n\r\n")
            elif path == "/close":
                c.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + name.encode() + b" until close\n")
                return
            else:
                if path == "/early":
                    c.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
                out = ("%s %s %s\n" % (name, path, h.get("x-forwarded-for", "-"))).encode()
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(out), conn, out))
            if close:
                return
    except (EOFError, OSError, ValueError):
        pass
    finally:
        c.close()
"#;

pub struct Backend {
    child: Option<Child>,
    pub name: String,
    pub addr: String,
}

impl Backend {
    fn spawn(script: &str, ip: &str, port: u16, name: &str) -> Result<Self> {
        let child = Command::new("python3")
            .args(["-c", script, ip, &port.to_string(), name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting python3")?;
        Ok(Backend {
            child: Some(child),
            name: name.to_string(),
            addr: format!("{ip}:{port}"),
        })
    }

    /// Starts `script` and waits until it accepts TCP connections.
    fn tcp(script: &str, ip: &str, port: u16, name: &str) -> Result<Self> {
        let b = Self::spawn(script, ip, port, name)?;
        let addr = b.addr.clone();
        wait_for(
            Duration::from_secs(10),
            &format!("backend {name} on {addr}"),
            || TcpStream::connect(&addr).ok(),
        )?;
        Ok(b)
    }

    /// An HTTP backend on `ip:port`, ready when this returns.
    pub fn http(ip: &str, port: u16, name: &str) -> Result<Self> {
        Self::tcp(HTTP, ip, port, name)
    }

    /// An HTTP backend behind PROXY protocol v2 on `ip:port`, ready when this returns.
    pub fn proxy_v2(ip: &str, port: u16, name: &str) -> Result<Self> {
        Self::tcp(
            &format!("{THREADED_HEAD}{PROXY_V2}{THREADED_LOOP}"),
            ip,
            port,
            name,
        )
    }

    /// An HTTP/1.x framing backend on `ip:port` (see `HTTP_WIRE`), ready when this returns.
    pub fn http_wire(ip: &str, port: u16, name: &str) -> Result<Self> {
        Self::tcp(
            &format!("{THREADED_HEAD}{HTTP_WIRE}{THREADED_LOOP}"),
            ip,
            port,
            name,
        )
    }

    /// A WebSocket echo backend on `ip:port`, ready when this returns.
    pub fn websocket(ip: &str, port: u16, name: &str) -> Result<Self> {
        Self::tcp(
            &format!("{THREADED_HEAD}{WEBSOCKET}{THREADED_LOOP}"),
            ip,
            port,
            name,
        )
    }

    /// A UDP echo backend on `ip:port`, ready when this returns.
    pub fn udp_echo(ip: &str, port: u16, name: &str) -> Result<Self> {
        Self::udp(UDP_ECHO, ip, port, name)
    }

    /// A UDP backend that reads a PROXY v2 header in front of every datagram (see
    /// `UDP_PROXY_V2`), ready when this returns.
    pub fn udp_proxy_v2(ip: &str, port: u16, name: &str) -> Result<Self> {
        Self::udp(UDP_PROXY_V2, ip, port, name)
    }

    /// Starts `script` and waits until it answers a datagram.
    fn udp(body: &str, ip: &str, port: u16, name: &str) -> Result<Self> {
        let b = Self::spawn(&format!("{UDP_HEAD}{body}"), ip, port, name)?;
        let probe = UdpSocket::bind("127.0.0.1:0")?;
        probe.set_read_timeout(Some(Duration::from_millis(100)))?;
        let addr = b.addr.clone();
        wait_for(Duration::from_secs(10), "a UDP backend", || {
            probe.send_to(b"probe", &addr).ok()?;
            let mut buf = [0u8; 64];
            probe.recv_from(&mut buf).ok()
        })?;
        Ok(b)
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}
