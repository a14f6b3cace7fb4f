//! HTTP/1.x heads, sans-IO: parses a request or response head (httparse), decides its body
//! framing and whether the connection stays open, and writes the head that goes on:
//! hop-by-hop headers dropped, policy edits applied, `X-Forwarded-For`, `X-Forwarded-Proto`
//! and `Forwarded` added. Bytes in, bytes and decisions out; tested without sockets.

use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::ops::Range;

use super::fields::{HopByHop, fixed_hop_by_hop, lower_eq, scan};
use super::framing::Framing;
use crate::plugin::HeaderEdit;

/// Most header fields in one head, and the longest head accepted.
pub const MAX_FIELDS: usize = 100;
pub const MAX_HEAD: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("head larger than {MAX_HEAD} bytes or more than {MAX_FIELDS} fields")]
    TooLarge,
    #[error("malformed head: {0}")]
    Malformed(&'static str),
}

/// One header field, as byte ranges of the head it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Range<usize>,
    pub value: Range<usize>,
}

/// A parsed head: its bytes and fields (kept by the caller, reused across messages).
#[derive(Clone, Copy)]
pub struct Head<'a> {
    pub bytes: &'a [u8],
    pub fields: &'a [Field],
}

impl<'a> Head<'a> {
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let bytes = self.bytes;
        self.fields
            .iter()
            .map(move |f| (&bytes[f.name.clone()], &bytes[f.value.clone()]))
    }

    /// Values of the fields named `name`.
    pub fn all(&self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    pub fn get(&self, name: &'a str) -> Option<&'a [u8]> {
        self.all(name).next()
    }

    pub fn span(&self, r: &Range<usize>) -> &'a [u8] {
        &self.bytes[r.clone()]
    }
}

/// What the proxy needs to know of a request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub len: usize,
    pub method: Range<usize>,
    /// Origin-form path and query (an absolute-form target's authority moves to `authority`).
    pub path: Range<usize>,
    pub authority: Option<Range<usize>>,
    /// HTTP/1.`minor`.
    pub minor: u8,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// The `Upgrade` value when `Connection` asks for one (never `h2c`).
    pub upgrade: Option<Range<usize>>,
    /// `Connection` names fields beyond the fixed hop-by-hop ones.
    pub names_fields: bool,
}

impl Request {
    pub fn is_head(&self, h: &Head<'_>) -> bool {
        h.span(&self.method) == b"HEAD"
    }

    /// May be sent again after a pooled connection failed with no response: a safe method
    /// (RFC 9110 §9.2.1) with no body.
    pub fn replayable(&self, h: &Head<'_>) -> bool {
        self.framing == Framing::Empty
            && matches!(
                h.span(&self.method),
                b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE"
            )
    }
}

/// What the proxy needs to know of a response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub len: usize,
    pub code: u16,
    pub reason: Range<usize>,
    pub framing: Framing,
    /// The upstream connection may carry another request after this response.
    pub reusable: bool,
    /// `Connection` names fields beyond the fixed hop-by-hop ones.
    pub names_fields: bool,
}

fn offset(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

fn fields_of(buf: &[u8], parsed: &[httparse::Header<'_>], out: &mut Vec<Field>) {
    out.clear();
    out.extend(parsed.iter().map(|h| Field {
        name: offset(buf, h.name.as_bytes()),
        value: offset(buf, h.value),
    }));
}

/// The head's length once httparse has all of it; `None` while more may come.
fn complete(parsed: httparse::Result<usize>, buffered: usize) -> Result<Option<usize>, HeadError> {
    match parsed.map_err(map_err)? {
        httparse::Status::Complete(n) => Ok(Some(n)),
        httparse::Status::Partial if buffered >= MAX_HEAD => Err(HeadError::TooLarge),
        httparse::Status::Partial => Ok(None),
    }
}

fn map_err(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        httparse::Error::Version => HeadError::Malformed("unsupported HTTP version"),
        _ => HeadError::Malformed("not an HTTP/1.x head"),
    }
}

/// Parses the request head at the front of `buf`; `Ok(None)`: not complete yet.
pub fn parse_request(buf: &[u8], fields: &mut Vec<Field>) -> Result<Option<Request>, HeadError> {
    let mut storage = [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let Some(len) = complete(req.parse_with_uninit_headers(buf, &mut storage), buf.len())? else {
        return Ok(None);
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    fields_of(buf, req.headers, fields);
    let h = Head { bytes: buf, fields };
    let target = offset(buf, target.as_bytes());
    let (authority, path) = split_target(buf, target)?;
    let s = scan(&h);
    let framing = match (s.chunked, s.length?) {
        (Some(_), Some(_)) => {
            return Err(HeadError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        (Some(true), None) => Framing::Chunked,
        (Some(false), None) => {
            return Err(HeadError::Malformed(
                "Transfer-Encoding without chunked last",
            ));
        }
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::Empty,
    };
    let upgrade = s.upgrade.clone().filter(|u| {
        minor == 1 && s.upgrade_token && !buf[u.clone()].trim_ascii().eq_ignore_ascii_case(b"h2c")
    });
    Ok(Some(Request {
        len,
        method: offset(buf, method.as_bytes()),
        path,
        authority,
        minor,
        framing,
        keep_alive: s.persistent(minor),
        expect_continue: s.expect_continue,
        upgrade,
        names_fields: s.names_fields,
    }))
}

/// Splits an absolute-form target (`http://host/path`) into authority and path.
fn split_target(
    buf: &[u8],
    target: Range<usize>,
) -> Result<(Option<Range<usize>>, Range<usize>), HeadError> {
    let t = &buf[target.clone()];
    if t.first() == Some(&b'/') || t == b"*" {
        return Ok((None, target));
    }
    let rest = [&b"http://"[..], b"https://"]
        .iter()
        .find(|p| t.len() >= p.len() && t[..p.len()].eq_ignore_ascii_case(p))
        .map(|p| target.start + p.len())
        .ok_or(HeadError::Malformed(
            "request target is not origin or absolute form",
        ))?;
    let slash = buf[rest..target.end]
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .map_or(target.end, |p| rest + p);
    Ok((Some(rest..slash), slash..target.end))
}

/// Parses the response head at the front of `buf` (answering a `HEAD` request when
/// `head_request`); `Ok(None)`: not complete yet.
pub fn parse_response(
    buf: &[u8],
    head_request: bool,
    fields: &mut Vec<Field>,
) -> Result<Option<Response>, HeadError> {
    let mut storage = [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut storage,
    );
    let Some(len) = complete(parsed, buf.len())? else {
        return Ok(None);
    };
    let (Some(code), Some(minor)) = (resp.code, resp.version) else {
        return Err(HeadError::Malformed("incomplete status line"));
    };
    let reason = offset(buf, resp.reason.unwrap_or("").as_bytes());
    fields_of(buf, resp.headers, fields);
    let h = Head { bytes: buf, fields };
    let s = scan(&h);
    let framing = if head_request || (100..200).contains(&code) || code == 204 || code == 304 {
        Framing::Empty
    } else {
        match s.chunked {
            Some(true) => Framing::Chunked,
            Some(false) => Framing::UntilClose,
            None => match s.length? {
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            },
        }
    };
    Ok(Some(Response {
        len,
        code,
        reason,
        framing,
        reusable: s.persistent(minor) && framing != Framing::UntilClose,
        names_fields: s.names_fields,
    }))
}

/// Writes `n` in decimal (no formatting machinery: this runs for every response).
fn number(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The kept field lines of a head, copied as they came in, a run of consecutive ones with
/// one copy. A line with anything between its value and CRLF (trailing whitespace) or
/// ending in a bare LF is written out normalised instead.
struct Lines<'h> {
    bytes: &'h [u8],
    run: Range<usize>,
}

impl<'h> Lines<'h> {
    fn new(bytes: &'h [u8]) -> Self {
        Lines { bytes, run: 0..0 }
    }

    #[inline]
    fn keep(&mut self, out: &mut Vec<u8>, f: &Field) {
        let end = f.value.end + 2;
        if self.bytes.get(f.value.end..end) != Some(&b"\r\n"[..]) {
            self.flush(out);
            field(
                out,
                &self.bytes[f.name.clone()],
                &self.bytes[f.value.clone()],
            );
            return;
        }
        if self.run.is_empty() || self.run.end != f.name.start {
            self.flush(out);
            self.run.start = f.name.start;
        }
        self.run.end = end;
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes[self.run.clone()]);
        self.run = 0..0;
    }
}

/// Who the request came from, for the forwarding fields: the address is formatted once per
/// connection, not per request.
pub struct Client {
    ip: IpAddr,
    https: bool,
    text: [u8; 39],
    text_len: u8,
}

impl Client {
    pub fn new(ip: IpAddr, https: bool) -> Self {
        use std::io::Write;
        // The longest IPv6 text is 39 bytes; an IPv4-mapped one in dotted form is shorter.
        let mut text = [0u8; 39];
        let mut w = &mut text[..];
        let _ = write!(w, "{ip}");
        let text_len = (39 - w.len()) as u8;
        Client {
            ip,
            https,
            text,
            text_len,
        }
    }

    fn ip_text(&self) -> &[u8] {
        &self.text[..self.text_len as usize]
    }
}

/// Writes the head of `r` as it goes upstream, into `out`.
pub fn write_request(
    out: &mut Vec<u8>,
    h: &Head<'_>,
    r: &Request,
    edits: &[HeaderEdit],
    c: &Client,
) {
    out.clear();
    out.extend_from_slice(h.span(&r.method));
    out.push(b' ');
    match &r.path {
        p if p.is_empty() => out.push(b'/'),
        p => out.extend_from_slice(h.span(p)),
    }
    out.extend_from_slice(if r.minor == 1 {
        b" HTTP/1.1\r\n"
    } else {
        b" HTTP/1.0\r\n"
    });
    let edited = |name: &[u8]| {
        edits
            .iter()
            .any(|e| name.eq_ignore_ascii_case(e.name.as_bytes()))
    };
    let mut host = None;
    let mut xff: Vec<&[u8]> = Vec::new();
    let hop = HopByHop::new(h, r.names_fields);
    let mut lines = Lines::new(h.bytes);
    for f in h.fields {
        let name = h.span(&f.name);
        if lower_eq(name, b"host") {
            host = Some(h.span(&f.value));
        }
        if lower_eq(name, b"x-forwarded-for") {
            xff.push(h.span(&f.value));
            continue;
        }
        if hop.is(name)
            || edited(name)
            || lower_eq(name, b"expect")
            || lower_eq(name, b"x-forwarded-proto")
        {
            continue;
        }
        lines.keep(out, f);
    }
    lines.flush(out);
    let authority = r.authority.as_ref().map(|a| h.span(a));
    if host.is_none()
        && let Some(a) = authority
    {
        field(out, b"host", a);
        host = Some(a);
    }
    for e in edits {
        if let Some(v) = &e.value {
            field(out, e.name.as_bytes(), v.as_bytes());
        }
    }
    let ip = c.ip_text();
    out.extend_from_slice(b"x-forwarded-for: ");
    for v in xff {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(ip);
    out.extend_from_slice(b"\r\n");
    let proto: &[u8] = if c.https { b"https" } else { b"http" };
    field(out, b"x-forwarded-proto", proto);
    out.extend_from_slice(b"forwarded: for=");
    if c.ip.is_ipv6() {
        out.extend_from_slice(b"\"[");
        out.extend_from_slice(ip);
        out.extend_from_slice(b"]\"");
    } else {
        out.extend_from_slice(ip);
    }
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(proto);
    if let Some(host) = host.or(authority) {
        out.extend_from_slice(b";host=\"");
        out.extend_from_slice(host);
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
    if let Some(u) = &r.upgrade {
        field(out, b"connection", b"upgrade");
        field(out, b"upgrade", h.span(u));
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the head of `r` as it goes back to the client, into `out`; `keep`: the client
/// connection stays open after it (else it says `Connection: close`).
pub fn write_response(out: &mut Vec<u8>, h: &Head<'_>, r: &Response, client_minor: u8, keep: bool) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    number(out, r.code as usize);
    out.push(b' ');
    out.extend_from_slice(h.span(&r.reason));
    out.extend_from_slice(b"\r\n");
    let hop = HopByHop::new(h, r.names_fields);
    let mut lines = Lines::new(h.bytes);
    for f in h.fields {
        let name = h.span(&f.name);
        // With chunked framing a Content-Length is wrong (RFC 9112 §6.3): not passed on.
        let stale_length = r.framing == Framing::Chunked && lower_eq(name, b"content-length");
        if !hop.is(name) && !stale_length {
            lines.keep(out, f);
        }
    }
    lines.flush(out);
    if r.code == 101 {
        field(out, b"connection", b"upgrade");
        if let Some(u) = h.get("upgrade") {
            field(out, b"upgrade", u);
        }
    } else if r.code >= 200 {
        if !keep {
            field(out, b"connection", b"close");
        } else if client_minor == 0 {
            field(out, b"connection", b"keep-alive");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a response of our own (errors, a policy's answer) with `body`.
pub fn write_local(out: &mut Vec<u8>, code: u16, fields: &[(&str, &str)], body: &[u8], keep: bool) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    number(out, code as usize);
    out.push(b' ');
    let reason = hyper::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (n, v) in fields {
        let hop = fixed_hop_by_hop(n.as_bytes())
            || n.eq_ignore_ascii_case("content-length")
            || n.eq_ignore_ascii_case("transfer-encoding");
        if !hop && !n.contains(['\r', '\n', ':']) && !v.contains(['\r', '\n']) {
            field(out, n.as_bytes(), v.as_bytes());
        }
    }
    out.extend_from_slice(b"content-length: ");
    number(out, body.len());
    out.extend_from_slice(b"\r\n");
    if !keep {
        field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
