//! The fast path: replies precomputed in wire format whenever a name's records change, so a plain query
//! (one question, class IN, at most an OPT record without a version bump) is answered by
//! copying bytes: the header, the client's own question (its letter case kept), the
//! precomputed answer or SOA section, and an OPT record when the query had one. Anything
//! else, names whose Service names a shaping plugin, pod names, names outside the zone and
//! replies that would need truncation, return `None` and go to [`answer`](super::answer),
//! which is the reference behaviour; the tests check both agree. Sans-IO.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use super::answer::EDNS_PAYLOAD;

/// One precomputed section: its records, each owned by the question's name (pointer 0xC00C).
#[derive(Clone, Debug, Default)]
struct Section {
    count: u16,
    bytes: Box<[u8]>,
}

/// The precomputed answers of one name.
#[derive(Clone, Debug, Default)]
pub struct Answers {
    /// Answers by query type.
    by_type: Vec<(u16, Section)>,
    /// The name's CNAME, answered for any other type.
    cname: Option<Section>,
    /// Its Service names a shaping plugin (or a record could not be encoded): always the
    /// slow path.
    shaped: bool,
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
    let mut count = 0u16;
    for r in records {
        bytes.extend_from_slice(&[0xC0, 0x0C]);
        push_rr_tail(&mut bytes, r)?;
        count += 1;
    }
    Some(Section {
        count,
        bytes: bytes.into(),
    })
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
                bytes: s.into(),
            },
        }
    }
}

impl Answers {
    /// The answers of a name with `records` (none for an empty non-terminal).
    pub fn new<'a>(records: impl Iterator<Item = &'a Record> + Clone, shaped: bool) -> Self {
        let mut node = Answers {
            shaped,
            ..Answers::default()
        };
        let mut types: Vec<RecordType> = records.clone().map(|r| r.record_type()).collect();
        types.sort_unstable_by_key(|t| u16::from(*t));
        types.dedup();
        for t in types {
            let Some(s) = section(records.clone().filter(|r| r.record_type() == t)) else {
                node.shaped = true; // cannot encode: leave it to the slow path
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
/// name up in the zone. `forwarding` sets RA.
pub fn answer<'z>(
    meta: &Meta,
    find: impl Fn(&[u8]) -> Option<&'z Answers>,
    q: &[u8],
    udp: bool,
    forwarding: bool,
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
    let (rcode, answers, authority) = match find(name) {
        Some(node) if node.shaped => return None,
        Some(node) => match node.by_type.iter().find(|(t, _)| *t == qtype) {
            Some((_, s)) => (ResponseCode::NoError, Some(s), None),
            None => match &node.cname {
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
    out.clear();
    out.extend_from_slice(&q[..2]);
    out.push(0x84 | (q[2] & 0x01)); // QR, AA, RD copied
    out.push(if forwarding { 0x80 } else { 0 } | (q[3] & 0x10) | rcode.low());
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&answers.map_or(0, |s| s.count).to_be_bytes());
    out.extend_from_slice(&authority.map_or(0, |s| s.count).to_be_bytes());
    out.extend_from_slice(&[0, q[11]]);
    out.extend_from_slice(&q[12..question_end]);
    for s in answers.into_iter().chain(authority) {
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
