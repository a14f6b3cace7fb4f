//! The fast path: replies precomputed in wire format whenever a name's records change, so a
//! plain query (one question, class IN, at most an OPT record without a version bump) is
//! answered by copying bytes: the header, the client's own question (its letter case kept),
//! the precomputed answer or SOA section, and an OPT record when the query had one. Answers
//! to shape go to the plugins as the precomputed records' own fields and come back as a
//! choice among those records (with their TTLs), so shaping needs no parsing either.
//! Anything else, pod names, names outside the zone and replies that would need truncation,
//! return `None` and go to [`answer`](super::answer), which is the reference behaviour; the
//! tests check both agree. Sans-IO.

use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use super::answer::EDNS_PAYLOAD;
use crate::plugin::Answer;
use crate::snapshot::ServiceView;

/// One precomputed section: its records, each owned by the question's name (pointer 0xC00C).
#[derive(Clone, Debug, Default)]
struct Section {
    count: u16,
    bytes: Box<[u8]>,
    /// Where each record ends in `bytes`.
    ends: Box<[u16]>,
}

impl Section {
    fn records(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter())
            .map(|(a, b)| &self.bytes[usize::from(a)..usize::from(*b)])
    }
}

/// A shaping function: (the Service naming a plugin, question name, type, default answers) →
/// the answers to send.
pub type ShapeFn<'a> =
    dyn Fn(Option<&Arc<ServiceView>>, &str, u16, Vec<Answer>) -> Vec<Answer> + 'a;

/// Shaping on the fast path: the Service's plugin and the default chain, given the Service
/// (when it names a plugin), the question name (lower case, absolute), its type and the
/// default answers; returns the answers to send.
pub struct Shaping<'a> {
    /// Every answer is shaped (a default chain), not only those of Services naming a plugin.
    pub all: bool,
    pub run: &'a ShapeFn<'a>,
}

/// What a name lookup gives the fast path.
pub struct Found<'z> {
    pub answers: &'z Answers,
    /// The Service, when it names a shaping plugin.
    pub shaped_by: Option<&'z Arc<ServiceView>>,
}

/// The precomputed answers of one name.
#[derive(Clone, Debug, Default)]
pub struct Answers {
    /// Answers by query type.
    by_type: Vec<(u16, Section)>,
    /// The name's CNAME, answered for any other type.
    cname: Option<Section>,
    /// A record could not be encoded: always the slow path.
    slow: bool,
}

/// What the fast path needs besides the names: the origin, the pod subtree and the SOA.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    /// The origin in wire format, lower case (`\x07cluster\x05local\x00`).
    origin: Box<[u8]>,
    /// `pod.<origin>` in wire format: computed answers, so the slow path.
    pod: Box<[u8]>,
    /// The SOA record (owner written out in full) for negative answers.
    soa: Section,
}

/// `n` in wire format, lower case: the key names are looked up by.
pub fn wire_name(n: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(n.len() + 2);
    for label in n.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

/// RDATA in wire format with its names written out in full: compression pointers would be
/// relative to this buffer, not to the message it goes into.
pub fn rdata_bytes(data: &RData) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    data.emit(&mut enc).ok()?;
    Some(buf)
}

/// TYPE, CLASS IN, TTL, RDLENGTH and RDATA of `r`, after an owner already written.
fn push_rr_tail(out: &mut Vec<u8>, r: &Record) -> Option<()> {
    let rdata = rdata_bytes(&r.data)?;
    out.extend_from_slice(&u16::from(r.record_type()).to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&r.ttl.to_be_bytes());
    out.extend_from_slice(&u16::try_from(rdata.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&rdata);
    Some(())
}

fn section<'a>(records: impl Iterator<Item = &'a Record>) -> Option<Section> {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for r in records {
        bytes.extend_from_slice(&[0xC0, 0x0C]);
        push_rr_tail(&mut bytes, r)?;
        ends.push(u16::try_from(bytes.len()).ok()?);
    }
    Some(Section {
        count: u16::try_from(ends.len()).ok()?,
        bytes: bytes.into(),
        ends: ends.into(),
    })
}

/// `name` (lower-case wire format) as text with the trailing dot, as plugins see names.
fn text_name(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    let mut at = 0;
    while let Some(&len) = name.get(at).filter(|l| **l > 0) {
        let label = name
            .get(at + 1..at + 1 + usize::from(len))
            .unwrap_or_default();
        out.push_str(&String::from_utf8_lossy(label));
        out.push('.');
        at += 1 + usize::from(len);
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// `s` shaped: its records as plugin answers, and what comes back matched to them (type,
/// data and owner; anything else is dropped), each written with the TTL it came back with.
fn shaped(
    s: &Section,
    name: &[u8],
    qtype: u16,
    svc: Option<&Arc<ServiceView>>,
    shaping: &Shaping<'_>,
    out: &mut Vec<u8>,
) -> u16 {
    let qname = text_name(name);
    let defaults: Vec<Answer> = s
        .records()
        .map(|r| Answer {
            name: qname.clone(),
            rtype: u16::from_be_bytes([r[2], r[3]]),
            ttl: u32::from_be_bytes([r[6], r[7], r[8], r[9]]),
            rdata: r[12..].to_vec(),
        })
        .collect();
    let mut count = 0;
    for a in (shaping.run)(svc, &qname, qtype, defaults.clone()) {
        let Some((_, r)) = defaults
            .iter()
            .zip(s.records())
            .find(|(d, _)| super::shape::is_default(d, &a))
        else {
            continue;
        };
        out.extend_from_slice(&r[..6]);
        out.extend_from_slice(&a.ttl.to_be_bytes());
        out.extend_from_slice(&r[10..]);
        count += 1;
    }
    count
}

impl Meta {
    pub fn new(origin: &Name, pod: &Name, soa: &Record) -> Self {
        let mut s = wire_name(&soa.name);
        let _ = push_rr_tail(&mut s, soa);
        Meta {
            origin: wire_name(origin).into(),
            pod: wire_name(pod).into(),
            soa: Section {
                count: 1,
                ends: [u16::try_from(s.len()).unwrap_or(u16::MAX)].into(),
                bytes: s.into(),
            },
        }
    }
}

impl Answers {
    /// The answers of a name with `records` (none for an empty non-terminal).
    pub fn new<'a>(records: impl Iterator<Item = &'a Record> + Clone) -> Self {
        let mut node = Answers::default();
        let mut types: Vec<RecordType> = records.clone().map(|r| r.record_type()).collect();
        types.sort_unstable_by_key(|t| u16::from(*t));
        types.dedup();
        for t in types {
            let Some(s) = section(records.clone().filter(|r| r.record_type() == t)) else {
                node.slow = true; // cannot encode: leave it to the slow path
                continue;
            };
            if t == RecordType::CNAME {
                node.cname = Some(s.clone());
            }
            node.by_type.push((u16::from(t), s));
        }
        node
    }
}

/// The reply to `q` in `out`, or `None` for the slow path; `find` looks a lower-case wire
/// name up in the zone. `forwarding` sets RA. Answers to shape without `shaping` take the
/// slow path.
pub fn answer<'z>(
    meta: &Meta,
    find: impl Fn(&[u8]) -> Option<Found<'z>>,
    q: &[u8],
    udp: bool,
    forwarding: bool,
    shaping: Option<&Shaping<'_>>,
    out: &mut Vec<u8>,
) -> Option<ResponseCode> {
    if q.len() < 17 || q[2] & 0xF8 != 0 || q[4..12] != [0, 1, 0, 0, 0, 0, 0, q[11]] || q[11] > 1 {
        return None; // a response, another opcode, not exactly one question, or >1 extra
    }
    // The question name, lower-cased, with where each label starts.
    let mut key = [0u8; 256];
    let mut labels = [0usize; 128];
    let (mut at, mut n, mut nl) = (12, 0, 0);
    loop {
        let len = usize::from(*q.get(at)?);
        if len == 0 {
            key[n] = 0;
            n += 1;
            at += 1;
            break;
        }
        if len > 63 || n + len + 2 > 255 || nl == labels.len() {
            return None; // compression pointer, or too long
        }
        labels[nl] = n;
        nl += 1;
        key[n] = len as u8;
        for (k, b) in key[n + 1..=n + len]
            .iter_mut()
            .zip(q.get(at + 1..=at + len)?)
        {
            *k = b.to_ascii_lowercase();
        }
        n += len + 1;
        at += len + 1;
    }
    let name = &key[..n];
    let qtype = u16::from_be_bytes([*q.get(at)?, *q.get(at + 1)?]);
    if q.get(at + 2..at + 4)? != [0, 1] {
        return None; // not class IN
    }
    let question_end = at + 4;
    let limit = if q[11] == 1 {
        // The OPT record: root owner, type 41, no version bump, its options skipped.
        let opt = q.get(question_end..question_end + 11)?;
        if opt[0] != 0 || opt[1..3] != [0, 41] || opt[6] != 0 {
            return None;
        }
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        if question_end + 11 + rdlen != q.len() {
            return None;
        }
        usize::from(u16::from_be_bytes([opt[3], opt[4]]).clamp(512, EDNS_PAYLOAD))
    } else {
        if question_end != q.len() {
            return None;
        }
        512
    };
    let under = |suffix: &[u8]| labels[..nl].iter().any(|&i| &name[i..] == suffix);
    let found = find(name);
    let (rcode, answers, authority) = match &found {
        Some(f) if f.answers.slow => return None,
        Some(f) => match f.answers.by_type.iter().find(|(t, _)| *t == qtype) {
            Some((_, s)) => (ResponseCode::NoError, Some(s), None),
            None => match &f.answers.cname {
                Some(c) => (ResponseCode::NoError, Some(c), None),
                None => (ResponseCode::NoError, None, Some(&meta.soa)),
            },
        },
        None if under(&meta.pod) || name == &meta.pod[..] => return None,
        None if under(&meta.origin) => (ResponseCode::NXDomain, None, Some(&meta.soa)),
        None => return None,
    };
    if qtype == u16::from(RecordType::ANY) || qtype == u16::from(RecordType::AXFR) {
        return None;
    }
    let svc = found.as_ref().and_then(|f| f.shaped_by);
    let shape = match shaping {
        _ if answers.is_none() => None,
        Some(s) if svc.is_some() || s.all => Some(s),
        None if svc.is_some() => return None,
        _ => None,
    };
    out.clear();
    out.extend_from_slice(&q[..2]);
    out.push(0x84 | (q[2] & 0x01)); // QR, AA, RD copied
    out.push(if forwarding { 0x80 } else { 0 } | (q[3] & 0x10) | rcode.low());
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&answers.map_or(0, |s| s.count).to_be_bytes());
    out.extend_from_slice(&authority.map_or(0, |s| s.count).to_be_bytes());
    out.extend_from_slice(&[0, q[11]]);
    out.extend_from_slice(&q[12..question_end]);
    match (answers, shape) {
        (Some(s), Some(shaping)) => {
            let count = shaped(s, name, qtype, svc, shaping, out);
            out[6..8].copy_from_slice(&count.to_be_bytes());
        }
        (Some(s), None) => out.extend_from_slice(&s.bytes),
        (None, _) => {}
    }
    if let Some(s) = authority {
        out.extend_from_slice(&s.bytes);
    }
    if q[11] == 1 {
        let [hi, lo] = EDNS_PAYLOAD.to_be_bytes();
        out.extend_from_slice(&[0, 0, 41, hi, lo, 0, 0, 0, 0, 0, 0]);
    }
    if udp && out.len() > limit {
        return None; // the slow path truncates
    }
    Some(rcode)
}
