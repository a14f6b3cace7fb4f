//! The DNS hook (`interface dns`): reorder, filter or trim the answers cluster DNS built.

use crate::Ip;

/// Record types as numbers (RFC 1035 and successors).
pub mod rtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Canonical name (ExternalName Services).
    pub const CNAME: u16 = 5;
    /// Reverse lookup.
    pub const PTR: u16 = 12;
    /// Text.
    pub const TXT: u16 = 16;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
    /// Service location (named ports).
    pub const SRV: u16 = 33;
}

/// The question being answered.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Question {
    /// The name asked for, fully qualified with the trailing dot.
    pub name: String,
    /// The record type asked for (see [`rtype`]).
    pub qtype: u16,
}

/// One resource record; `rdata` in DNS wire format (4 bytes for A, 16 for AAAA).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Answer {
    /// Owner name of the record.
    pub name: String,
    /// Record type (see [`rtype`]).
    pub rtype: u16,
    /// Time to live in seconds.
    pub ttl: u32,
    /// Record data in DNS wire format.
    pub rdata: Vec<u8>,
}

impl Answer {
    /// The address of an A or AAAA record.
    pub fn address(&self) -> Option<std::net::IpAddr> {
        match (self.rtype, self.rdata.len()) {
            (rtype::A, 4) => {
                let b: [u8; 4] = self.rdata[..].try_into().ok()?;
                Some(std::net::IpAddr::from(b))
            }
            (rtype::AAAA, 16) => {
                let b: [u8; 16] = self.rdata[..].try_into().ok()?;
                Some(std::net::IpAddr::from(b))
            }
            _ => None,
        }
    }
}

/// The DNS hook. One instance serves one Service's names.
pub trait DnsShaper {
    /// Called with the Service's `switchyard.io/dns-config` JSON (empty if unset).
    fn configure(&mut self, config: &str) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// The answers to send for `question`, given the ones cluster DNS built. The host keeps
    /// only answers whose owner name and type match the question's.
    fn shape(&mut self, question: &Question, client: Ip, answers: Vec<Answer>) -> Vec<Answer>;

    /// State to carry over to the next version of this plugin on a hot swap.
    fn snapshot(&mut self) -> Vec<u8> {
        Vec::new()
    }

    /// Takes back what the previous version's `snapshot` returned.
    fn restore(&mut self, data: &[u8]) {
        let _ = data;
    }
}
