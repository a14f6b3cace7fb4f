//! Harness for black-box tests: starts the real `switchyard` binary on free loopback ports with
//! a temporary data dir, and drives it with the real `kubectl` and plain HTTP. Every wait is
//! bounded; the process is killed when the handle drops.
//!
//! The binary is `$SWITCHYARD_BIN` or `target/release/switchyard`; kubectl is `$KUBECTL` or
//! `.tools/bin/kubectl` (installed by `scripts/install-test-deps.sh`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod backends;
pub mod traffic;
pub use backends::Backend;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

pub fn binary() -> PathBuf {
    std::env::var_os("SWITCHYARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/switchyard"))
}

pub fn kubectl_path() -> PathBuf {
    std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/bin/kubectl"))
}

/// A plugin component built for the tests: the built-ins (by `host/build.rs`) and the test
/// and example plugins (by `scripts/test.sh`), e.g. `wasm("maglev")`.
pub fn wasm(lib_name: &str) -> PathBuf {
    let dir = std::env::var_os("SWITCHYARD_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/wasm-plugins/wasm32-wasip2/release"));
    let p = dir.join(format!("{}.wasm", lib_name.replace('-', "_")));
    assert!(
        p.exists(),
        "{} is missing: scripts/test.sh builds the test plugins",
        p.display()
    );
    p
}

/// Compiled plugins shared by all test gateways, so each start does not recompile them.
pub fn plugin_cache() -> PathBuf {
    workspace_root().join("target/test-plugin-cache")
}

/// Runs `switchyard ARGS...` (a client command such as `plugin list`) to completion.
pub fn switchyard(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("switchyard runs")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind :0")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Minimal HTTP/1.1 client for loopback (status, body); no dependency beyond std.
pub fn http(
    method: &str,
    addr: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    // A server may answer (413) and close before the whole body is written: read regardless.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let code: u16 = text
        .split_whitespace()
        .nth(1)
        .context("status line")?
        .parse()?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One running gateway.
pub struct Gateway {
    child: Option<Child>,
    pub api: String,
    pub admin: String,
    /// Cluster DNS, UDP and TCP.
    pub dns: String,
    /// The second octet of this gateway's own part of 127.0.0.0/8: cluster IPs come from
    /// `127.N.0.0/17`, LoadBalancer addresses from `127.N.200.0/24`, NodePorts listen on
    /// `127.N.250.1`, and tests put their backends on `127.N.220.x`. Gateways running at the
    /// same time never share a listening address.
    pub net: u8,
    pub data: tempfile::TempDir,
    kube_cache: tempfile::TempDir,
    extra: Vec<String>,
    /// The open-file limit (`ulimit -n`, soft and hard) the gateway starts under, if set.
    open_files: Option<u64>,
}

impl Gateway {
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// Starts with extra `serve` flags.
    pub fn start_with(extra: &[&str]) -> Result<Self> {
        Self::start_limited(None, extra)
    }

    /// Starts with extra `serve` flags under an open-file limit of `open_files`.
    pub fn start_limited(open_files: Option<u64>, extra: &[&str]) -> Result<Self> {
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut g = Gateway {
                net: (100 + (std::process::id() + n * 7) % 120) as u8,
                child: None,
                api: format!("127.0.0.1:{}", free_port()),
                admin: format!("127.0.0.1:{}", free_port()),
                dns: format!("127.0.0.1:{}", free_port()),
                data: tempfile::tempdir()?,
                kube_cache: tempfile::tempdir()?,
                extra: extra.iter().map(|s| s.to_string()).collect(),
                open_files,
            };
            match g.spawn() {
                Ok(()) => return Ok(g),
                // A test running beside this one took a port between `free_port` and the
                // gateway's bind (DNS binds UDP and TCP on one port): new ports, a new start.
                Err(_) if attempt < 3 && g.log().contains("Address already in use") => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("switchyard.log"))?;
        // Under a limit, a shell sets it and then becomes the gateway (same pid).
        let mut command = match self.open_files {
            None => Command::new(binary()),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(binary());
                c
            }
        };
        let child = command
            .args(["serve", "--data-dir"])
            .arg(self.data.path().join("data"))
            .args([
                "--api-listen",
                &self.api,
                "--admin-listen",
                &self.admin,
                "--dns-listen",
                &self.dns,
                "--plugin-cache",
            ])
            .arg(plugin_cache())
            .args(self.own_addresses())
            .args(&self.extra)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", binary().display()))?;
        let child = self.child.insert(child);
        let admin = self.admin.clone();
        // Ready, or exited (a start-up error: no use waiting the whole limit).
        let ready = wait_for(Duration::from_secs(20), "/readyz", || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(status));
            }
            http("GET", &admin, "/readyz", "text/plain", b"")
                .ok()
                .filter(|(c, _)| *c == 200)
                .map(|_| Ok(()))
        });
        match ready {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => bail!("the gateway exited ({status}); its log:\n{}", self.log()),
            Err(e) => Err(e.context(format!("gateway log:\n{}", self.log()))),
        }
    }

    /// `--service-cidr`, `--lb-pool`, `--node-ip`, `--node-name` and `--workers` in this
    /// gateway's part of loopback, and no DNS forwarding (queries stay on loopback), unless
    /// the test set them.
    fn own_addresses(&self) -> Vec<String> {
        let n = self.net;
        [
            ("--service-cidr", format!("127.{n}.0.0/17")),
            ("--lb-pool", format!("127.{n}.200.0/24")),
            ("--node-ip", self.node_ip()),
            ("--node-name", "test-node".to_string()),
            ("--workers", "2".to_string()),
            ("--dns-upstream", "none".to_string()),
        ]
        .into_iter()
        .filter(|(flag, _)| !self.extra.iter().any(|e| e == flag))
        .flat_map(|(flag, v)| [flag.to_string(), v])
        .collect()
    }

    /// Where NodePorts listen.
    pub fn node_ip(&self) -> String {
        format!("127.{}.250.1", self.net)
    }

    /// The address `127.N.220.last` for a test backend of this gateway.
    pub fn backend_ip(&self, last: u8) -> String {
        format!("127.{}.220.{last}", self.net)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("switchyard.log")).unwrap_or_default()
    }

    /// `kill -9`, then start again on the same data dir and ports.
    pub fn kill9_and_restart(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?; // SIGKILL
            c.wait()?;
        }
        self.spawn()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Runs kubectl against this gateway.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(kubectl_path());
        cmd.arg("--server")
            .arg(format!("http://{}", self.api))
            .args(["--request-timeout", "20s"])
            .args(args);
        cmd.env("KUBECACHEDIR", self.kube_cache.path())
            .env("KUBECONFIG", "/dev/null");
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .expect("kubectl runs (scripts/install-test-deps.sh installs it)");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        child.wait_with_output().expect("kubectl finishes")
    }

    /// kubectl that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// kubectl applying a manifest from a string.
    pub fn apply(&self, verb: &str, manifest: &str) -> Output {
        self.kubectl_stdin(&[verb, "-f", "-"], Some(manifest))
    }

    pub fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        http("GET", &self.admin, path, "text/plain", b"")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `curl -sS --max-time 5 ARGS...`; returns (exit code, stdout).
pub fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl runs (scripts/install-test-deps.sh installs it)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}
