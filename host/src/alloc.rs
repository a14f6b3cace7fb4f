//! Allocators for cluster IPs, NodePorts and LoadBalancer addresses, as the API server keeps
//! them: a bitmap per range, first-free scanning from a rotating cursor. In memory only; the
//! API layer rebuilds them from the stored Services at start, so they always agree with the store.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// A set of `size` slots, each free or taken.
#[derive(Clone, Debug)]
struct Bitmap {
    words: Vec<u64>,
    size: usize,
    next: usize,
    used: usize,
}

impl Bitmap {
    fn new(size: usize) -> Self {
        Bitmap {
            words: vec![0; size.div_ceil(64)],
            size,
            next: 0,
            used: 0,
        }
    }
    fn is_set(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }
    fn claim(&mut self, i: usize) -> bool {
        if i >= self.size || self.is_set(i) {
            return false;
        }
        self.words[i / 64] |= 1 << (i % 64);
        self.used += 1;
        true
    }
    fn release(&mut self, i: usize) {
        if i < self.size && self.is_set(i) {
            self.words[i / 64] &= !(1 << (i % 64));
            self.used -= 1;
        }
    }
    fn allocate(&mut self) -> Option<usize> {
        if self.used >= self.size {
            return None;
        }
        for k in 0..self.size {
            let i = (self.next + k) % self.size;
            if !self.is_set(i) {
                self.claim(i);
                self.next = (i + 1) % self.size;
                return Some(i);
            }
        }
        None
    }
}

/// Why a specific request could not be granted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    OutOfRange,
    Taken,
}

/// Host addresses of an IPv4 CIDR (network and broadcast excluded when the prefix allows).
#[derive(Clone, Debug)]
pub struct IpPool {
    net: Ipv4Net,
    first: u32,
    bits: Bitmap,
}

impl IpPool {
    pub fn new(net: Ipv4Net) -> Self {
        let (first, last) = if net.prefix_len() >= 31 {
            (u32::from(net.network()), u32::from(net.broadcast()))
        } else {
            (u32::from(net.network()) + 1, u32::from(net.broadcast()) - 1)
        };
        IpPool {
            net,
            first,
            bits: Bitmap::new((last - first + 1) as usize),
        }
    }
    pub fn net(&self) -> Ipv4Net {
        self.net
    }
    fn offset(&self, ip: Ipv4Addr) -> Option<usize> {
        let v = u32::from(ip);
        (v >= self.first && ((v - self.first) as usize) < self.bits.size)
            .then(|| (v - self.first) as usize)
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.offset(ip).is_some()
    }
    pub fn is_taken(&self, ip: Ipv4Addr) -> bool {
        self.offset(ip).is_some_and(|o| self.bits.is_set(o))
    }
    pub fn claim(&mut self, ip: Ipv4Addr) -> Result<(), Refusal> {
        let o = self.offset(ip).ok_or(Refusal::OutOfRange)?;
        if self.bits.claim(o) {
            Ok(())
        } else {
            Err(Refusal::Taken)
        }
    }
    pub fn release(&mut self, ip: Ipv4Addr) {
        if let Some(o) = self.offset(ip) {
            self.bits.release(o);
        }
    }
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        self.bits
            .allocate()
            .map(|o| Ipv4Addr::from(self.first + o as u32))
    }
    pub fn used(&self) -> usize {
        self.bits.used
    }
}

/// An inclusive port range.
#[derive(Clone, Debug)]
pub struct PortPool {
    lo: u16,
    hi: u16,
    bits: Bitmap,
}

impl PortPool {
    pub fn new(lo: u16, hi: u16) -> Self {
        PortPool {
            lo,
            hi,
            bits: Bitmap::new((hi - lo) as usize + 1),
        }
    }
    pub fn range(&self) -> (u16, u16) {
        (self.lo, self.hi)
    }
    pub fn contains(&self, p: i32) -> bool {
        p >= self.lo as i32 && p <= self.hi as i32
    }
    pub fn is_taken(&self, p: i32) -> bool {
        self.contains(p) && self.bits.is_set((p - self.lo as i32) as usize)
    }
    pub fn claim(&mut self, p: i32) -> Result<(), Refusal> {
        if !self.contains(p) {
            return Err(Refusal::OutOfRange);
        }
        if self.bits.claim((p - self.lo as i32) as usize) {
            Ok(())
        } else {
            Err(Refusal::Taken)
        }
    }
    pub fn release(&mut self, p: i32) {
        if self.contains(p) {
            self.bits.release((p - self.lo as i32) as usize);
        }
    }
    pub fn allocate(&mut self) -> Option<i32> {
        self.bits.allocate().map(|o| self.lo as i32 + o as i32)
    }
    pub fn used(&self) -> usize {
        self.bits.used
    }
}

/// The three pools the Service registry allocates from.
#[derive(Clone, Debug)]
pub struct Allocators {
    pub cluster_ips: IpPool,
    pub node_ports: PortPool,
    pub lb_ips: IpPool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_pool_skips_network_and_broadcast_and_reuses_released() {
        let mut p = IpPool::new("127.96.0.0/30".parse().unwrap());
        assert_eq!(p.allocate(), Some("127.96.0.1".parse().unwrap()));
        assert_eq!(p.allocate(), Some("127.96.0.2".parse().unwrap()));
        assert_eq!(p.allocate(), None, "a /30 has two hosts");
        p.release("127.96.0.1".parse().unwrap());
        assert_eq!(p.allocate(), Some("127.96.0.1".parse().unwrap()));
        assert_eq!(
            p.claim("127.96.0.3".parse().unwrap()),
            Err(Refusal::OutOfRange)
        );
        assert_eq!(p.claim("127.96.0.2".parse().unwrap()), Err(Refusal::Taken));
    }

    #[test]
    fn port_pool_bounds_and_exhaustion() {
        let mut p = PortPool::new(30000, 30002);
        assert_eq!(p.claim(30001), Ok(()));
        assert_eq!(p.claim(30001), Err(Refusal::Taken));
        assert_eq!(p.claim(29999), Err(Refusal::OutOfRange));
        assert_eq!(p.claim(30003), Err(Refusal::OutOfRange));
        let mut got = vec![p.allocate().unwrap(), p.allocate().unwrap()];
        got.sort();
        assert_eq!(got, [30000, 30002]);
        assert_eq!(p.allocate(), None);
        assert_eq!(p.used(), 3);
        p.release(30000);
        assert_eq!(p.allocate(), Some(30000));
    }
}
