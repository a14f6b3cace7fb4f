//! Moving one exchange's bytes: the request head and body to the endpoint, the response
//! (after any `1xx`) back to the client, each body passed through as its framing says.
//! Touches only the two connections and the buffers it is given.

use std::io::IoSlice;

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::framing::{Body, Framing};
use super::head::Head;
use super::{Conn, READ_CHUNK, head, upstream};
use crate::proxy::select::Target;

pub(super) enum Fail {
    Client,
    Upstream(String),
}

/// Writes `c.out` (the request head) with the body bytes already read, then the rest of the
/// body as the client sends it. Bytes after the body stay in `c.buf` (the next request).
pub(super) async fn send<S: AsyncRead + Unpin>(
    io: &mut S,
    c: &mut Conn,
    up: &mut TcpStream,
    r: &head::Request,
) -> Result<(), Fail> {
    let mut body = Body::new(r.framing);
    let n = body.advance(&c.buf).map_err(|_| Fail::Client)?;
    write_two(up, &c.out, &c.buf[..n])
        .await
        .map_err(|e| Fail::Upstream(e.to_string()))?;
    c.buf.advance(n);
    while !body.is_done() {
        c.buf.reserve(READ_CHUNK);
        match io.read_buf(&mut c.buf).await {
            Ok(0) | Err(_) => return Err(Fail::Client),
            Ok(_) => {}
        }
        let n = body.advance(&c.buf).map_err(|_| Fail::Client)?;
        up.write_all(&c.buf[..n])
            .await
            .map_err(|e| Fail::Upstream(e.to_string()))?;
        c.buf.advance(n);
    }
    Ok(())
}

pub(super) enum Relayed {
    /// The response went back whole.
    Done {
        code: u16,
        reusable: bool,
        keep: bool,
    },
    /// `101`: both sides are now a tunnel.
    Upgraded,
    /// The endpoint closed or failed before a response head.
    NoResponse(String),
    /// The endpoint or the client failed mid-response.
    Cut,
}

/// Reads the response (after any `1xx` interim ones, passed on) and sends it back.
pub(super) async fn relay<S: AsyncWrite + Unpin>(
    io: &mut S,
    c: &mut Conn,
    up: &mut TcpStream,
    r: &head::Request,
    head_request: bool,
    t: &Target,
) -> Relayed {
    let mut ub = upstream::Scratch::take();
    loop {
        let resp = loop {
            match head::parse_response(&ub, head_request, &mut c.up_fields) {
                Ok(Some(resp)) => break resp,
                Ok(None) => {}
                Err(e) => return Relayed::NoResponse(e.to_string()),
            }
            ub.reserve(READ_CHUNK);
            match up.read_buf(&mut *ub).await {
                Ok(0) => return Relayed::NoResponse("closed before a response".into()),
                Err(e) => return Relayed::NoResponse(e.to_string()),
                Ok(_) => {}
            }
        };
        let keep = r.keep_alive && resp.framing != Framing::UntilClose;
        let h = Head {
            bytes: &ub[..resp.len],
            fields: &c.up_fields,
        };
        head::write_response(&mut c.out, &h, &resp, r.minor, keep);
        let upgraded = resp.code == 101 && r.upgrade.is_some();
        if (100..200).contains(&resp.code) && !upgraded {
            // Interim (103 Early Hints and the like): on to the client, then the real one.
            if io.write_all(&c.out).await.is_err() {
                return Relayed::Cut;
            }
            ub.advance(resp.len);
            continue;
        }
        ub.advance(resp.len);
        t.metrics.status(resp.code);
        if upgraded {
            // Bytes the endpoint sent after its 101 go first, then the tunnel.
            if write_two(io, &c.out, &ub).await.is_err() || up.write_all(&c.buf).await.is_err() {
                return Relayed::Cut;
            }
            c.buf.clear();
            return Relayed::Upgraded;
        }
        let mut body = Body::new(resp.framing);
        let Ok(n) = body.advance(&ub) else {
            return Relayed::Cut;
        };
        if write_two(io, &c.out, &ub[..n]).await.is_err() {
            return Relayed::Cut;
        }
        let mut extra = ub.len() > n;
        ub.clear();
        while !body.is_done() {
            ub.reserve(READ_CHUNK);
            match up.read_buf(&mut *ub).await {
                Ok(0) if body.ends_at_close() => break,
                Ok(0) | Err(_) => return Relayed::Cut,
                Ok(_) => {}
            }
            let Ok(n) = body.advance(&ub) else {
                return Relayed::Cut;
            };
            if io.write_all(&ub[..n]).await.is_err() {
                return Relayed::Cut;
            }
            extra |= ub.len() > n;
            ub.clear();
        }
        return Relayed::Done {
            code: resp.code,
            reusable: resp.reusable && !extra && r.upgrade.is_none(),
            keep,
        };
    }
}

/// Writes `a` then `b` with as few syscalls as the socket allows (one when it takes both).
pub(super) async fn write_two<W: AsyncWrite + Unpin>(
    w: &mut W,
    a: &[u8],
    b: &[u8],
) -> std::io::Result<()> {
    if b.is_empty() {
        return w.write_all(a).await;
    }
    let n = w
        .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
        .await?;
    if n == 0 {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    if n < a.len() {
        w.write_all(&a[n..]).await?;
        w.write_all(b).await
    } else {
        w.write_all(&b[n - a.len()..]).await
    }
}
