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

/// Echoes every datagram back prefixed with `NAME `.
const UDP_ECHO: &str = r#"
import sys, signal, socket
signal.alarm(900)
ip, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((ip, port))
while True:
    d, a = s.recvfrom(65535)
    s.sendto(name.encode() + b" " + d, a)
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

    /// An HTTP backend on `ip:port`, ready when this returns.
    pub fn http(ip: &str, port: u16, name: &str) -> Result<Self> {
        let b = Self::spawn(HTTP, ip, port, name)?;
        let addr = b.addr.clone();
        wait_for(Duration::from_secs(10), "an HTTP backend", || {
            TcpStream::connect(&addr).ok()
        })?;
        Ok(b)
    }

    /// A UDP echo backend on `ip:port`, ready when this returns.
    pub fn udp_echo(ip: &str, port: u16, name: &str) -> Result<Self> {
        let b = Self::spawn(UDP_ECHO, ip, port, name)?;
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
