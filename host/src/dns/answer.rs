//! One DNS query in, one decision out: the reply's bytes, "forward it", or "drop it".
//! Sans-IO: parses with `hickory-proto`, looks the question up in the [`Zone`], lets the
//! Service's shaping plugin reorder or trim the answers, and encodes the reply with the
//! header rules of RFC 1035/6891: ID, opcode, RD and the question echoed; AA on our names;
//! SOA in the authority section of negative answers; OPT back when the query had one;
//! truncation (TC, answers dropped) when the reply does not fit the UDP size the client
//! allows (512 without EDNS).

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Record, RecordType};

use super::zone::{Lookup, Zone};
use crate::snapshot::ServiceView;

/// The UDP payload size we advertise in EDNS (the DNS flag day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;

/// What to do with a packet.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Reply(Vec<u8>),
    /// A name outside the cluster domain, with forwarding on.
    Forward,
    /// Not a query, or too broken to answer.
    Drop,
}

/// Why a packet got a FORMERR or was dropped (the metric's label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Too short, or a response sent to us: dropped.
    Dropped,
    /// Parsed far enough to answer FORMERR.
    FormErr,
}

/// The answer shaper: given the owning Service (when it names a plugin), the question name
/// and type, and the default answers, returns the answers to send.
pub trait Shaper {
    /// Whether answers of Services without a plugin are shaped too (a default chain), so no
    /// name may take the fast path.
    fn shapes_all(&self) -> bool {
        false
    }

    fn shape(
        &self,
        svc: Option<&Arc<ServiceView>>,
        name: &LowerName,
        qtype: RecordType,
        client: IpAddr,
        answers: Vec<Record>,
    ) -> Vec<Record>;
}

/// No shaping.
pub struct Unshaped;

impl Shaper for Unshaped {
    fn shape(
        &self,
        _: Option<&Arc<ServiceView>>,
        _: &LowerName,
        _: RecordType,
        _: IpAddr,
        a: Vec<Record>,
    ) -> Vec<Record> {
        a
    }
}

/// How a query was answered, for metrics.
#[derive(Debug, PartialEq)]
pub struct Answered {
    pub outcome: Outcome,
    pub rcode: ResponseCode,
    pub malformed: Option<Malformed>,
    pub truncated: bool,
}

impl Answered {
    fn new(outcome: Outcome, rcode: ResponseCode) -> Self {
        Answered {
            outcome,
            rcode,
            malformed: None,
            truncated: false,
        }
    }
}

/// Answers `packet` from `zone`. `udp`: the reply must fit the client's UDP size.
pub fn answer(
    zone: &Zone,
    packet: &[u8],
    client: IpAddr,
    udp: bool,
    forwarding: bool,
    shaper: &dyn Shaper,
) -> Answered {
    let query = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => return formerr(packet),
    };
    if query.metadata.message_type != MessageType::Query {
        let mut a = Answered::new(Outcome::Drop, ResponseCode::FormErr);
        a.malformed = Some(Malformed::Dropped);
        return a;
    }
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.checking_disabled = query.metadata.checking_disabled;
    reply.metadata.recursion_available = forwarding;
    if let Some(e) = &query.edns {
        let mut back = Edns::new();
        back.set_max_payload(EDNS_PAYLOAD);
        reply.set_edns(back);
        if e.version() > 0 {
            // RFC 6891 §6.1.3: BADVERS, an extended rcode (16) carried in the OPT record.
            reply.metadata.response_code = ResponseCode::BADVERS;
            return finish(reply, &query, udp, ResponseCode::BADVERS);
        }
    }
    if query.metadata.op_code != OpCode::Query {
        return finish(reply, &query, udp, ResponseCode::NotImp);
    }
    let [q] = query.queries.as_slice() else {
        let mut a = finish(reply, &query, udp, ResponseCode::FormErr);
        a.malformed = Some(Malformed::FormErr);
        return a;
    };
    reply.add_query(q.clone());
    let name = LowerName::new(q.name());
    if q.query_class() != DNSClass::IN && q.query_class() != DNSClass::ANY {
        // CHAOS `version.bind` and the like: not served.
        return finish(reply, &query, udp, ResponseCode::Refused);
    }
    let rcode = match zone.lookup(&name, q.query_type()) {
        Lookup::NotOurs if forwarding => {
            return Answered::new(Outcome::Forward, ResponseCode::NoError);
        }
        Lookup::NotOurs => ResponseCode::Refused,
        Lookup::Answer(records, owner) => {
            reply.metadata.authoritative = true;
            let records = if owner.is_some() || shaper.shapes_all() {
                shaper.shape(owner.as_ref(), &name, q.query_type(), client, records)
            } else {
                records
            };
            reply.insert_answers(records);
            ResponseCode::NoError
        }
        Lookup::NoData => {
            reply.metadata.authoritative = true;
            reply.add_authority(zone.soa().clone());
            ResponseCode::NoError
        }
        Lookup::NxDomain => {
            reply.metadata.authoritative = true;
            reply.add_authority(zone.soa().clone());
            ResponseCode::NXDomain
        }
    };
    finish(reply, &query, udp, rcode)
}

/// Sets the rcode and encodes, truncating to what the client takes over UDP.
fn finish(mut reply: Message, query: &Message, udp: bool, rcode: ResponseCode) -> Answered {
    reply.metadata.response_code = rcode;
    if let Some(e) = reply.edns.as_mut() {
        e.set_rcode_high(rcode.high());
    }
    let limit = if !udp {
        usize::from(u16::MAX)
    } else {
        match &query.edns {
            Some(e) => usize::from(e.max_payload().clamp(512, EDNS_PAYLOAD)),
            None => 512,
        }
    };
    let mut a = Answered::new(Outcome::Drop, rcode);
    let Ok(mut bytes) = reply.to_vec() else {
        return a;
    };
    if bytes.len() > limit {
        reply.answers.clear();
        reply.authorities.clear();
        reply.additionals.clear();
        reply.metadata.truncation = true;
        a.truncated = true;
        match reply.to_vec() {
            Ok(b) => bytes = b,
            Err(_) => return a,
        }
    }
    a.outcome = Outcome::Reply(bytes);
    a
}

/// A packet hickory could not parse: FORMERR with its ID when the header is there and says
/// "query", else nothing.
fn formerr(packet: &[u8]) -> Answered {
    let mut a = Answered::new(Outcome::Drop, ResponseCode::FormErr);
    a.malformed = Some(Malformed::Dropped);
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return a;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let op = OpCode::from_u8((packet[2] >> 3) & 0x0f);
    let mut reply = Message::error_msg(id, op, ResponseCode::FormErr);
    reply.metadata.recursion_desired = packet[2] & 0x01 != 0;
    if let Ok(bytes) = reply.to_vec() {
        a.outcome = Outcome::Reply(bytes);
        a.malformed = Some(Malformed::FormErr);
    }
    a
}

/// SERVFAIL for `query` (its ID, opcode, RD and question): no upstream answered.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let mut reply = Message::error_msg(q.metadata.id, q.metadata.op_code, ResponseCode::ServFail);
    reply.metadata.recursion_desired = q.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_queries(q.queries);
    reply.to_vec().ok()
}
