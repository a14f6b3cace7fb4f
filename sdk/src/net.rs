//! Addresses as the contract passes them (two `u64`s and a flag, no strings) and CIDR blocks.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 address as numbers (`types.ip`): IPv4 in the low 32 bits of `lo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Ip {
    /// IPv6: the most significant 64 bits; IPv4: 0.
    pub hi: u64,
    /// IPv6: the least significant 64 bits; IPv4: the address in the low 32 bits.
    pub lo: u64,
    /// Whether this is an IPv6 address.
    pub v6: bool,
}

impl From<IpAddr> for Ip {
    fn from(a: IpAddr) -> Self {
        match a {
            IpAddr::V4(v4) => Ip {
                hi: 0,
                lo: u32::from(v4) as u64,
                v6: false,
            },
            IpAddr::V6(v6) => {
                let n = u128::from(v6);
                Ip {
                    hi: (n >> 64) as u64,
                    lo: n as u64,
                    v6: true,
                }
            }
        }
    }
}

impl From<Ip> for IpAddr {
    fn from(ip: Ip) -> Self {
        if ip.v6 {
            IpAddr::V6(Ipv6Addr::from(((ip.hi as u128) << 64) | ip.lo as u128))
        } else {
            IpAddr::V4(Ipv4Addr::from(ip.lo as u32))
        }
    }
}

impl FromStr for Ip {
    type Err = std::net::AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<IpAddr>().map(Ip::from)
    }
}

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        IpAddr::from(*self).fmt(f)
    }
}

impl Ip {
    fn bits(&self) -> u128 {
        ((self.hi as u128) << 64) | self.lo as u128
    }
}

/// A CIDR block such as `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    base: Ip,
    prefix: u8,
}

/// Why a CIDR did not parse.
#[derive(Debug, PartialEq, Eq)]
pub struct CidrError(pub String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid CIDR: {}", self.0)
    }
}

impl std::error::Error for CidrError {}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (addr, len) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| CidrError(format!("{s:?} has no /prefix")))?;
        let ip: Ip = addr
            .parse()
            .map_err(|_| CidrError(format!("{addr:?} is not an address")))?;
        let max = if ip.v6 { 128 } else { 32 };
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| CidrError(format!("{len:?} is not a prefix length up to {max}")))?;
        Ok(Cidr { base: ip, prefix })
    }
}

impl Cidr {
    /// Whether `ip` lies inside this block (never across address families).
    pub fn contains(&self, ip: Ip) -> bool {
        if ip.v6 != self.base.v6 {
            return false;
        }
        let width = if ip.v6 { 128 } else { 32 };
        if self.prefix == 0 {
            return true;
        }
        let shift = width - self.prefix as u32;
        (ip.bits() >> shift) == (self.base.bits() >> shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_round_trip_through_numbers() {
        for s in ["127.0.0.1", "10.1.2.3", "::1", "2001:db8::ff00:42:8329"] {
            let ip: Ip = s.parse().unwrap();
            assert_eq!(ip.to_string(), s);
        }
        assert_eq!(
            "10.0.0.1".parse::<Ip>().unwrap(),
            Ip {
                hi: 0,
                lo: 0x0a00_0001,
                v6: false
            }
        );
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.255.1.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(
            !c.contains("::ffff:10.0.0.1".parse().unwrap()),
            "families never mix"
        );
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let host: Cidr = "127.0.0.1/32".parse().unwrap();
        assert!(
            host.contains("127.0.0.1".parse().unwrap())
                && !host.contains("127.0.0.2".parse().unwrap())
        );
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
