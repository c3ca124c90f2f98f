//! `IpNetwork`: an address block such as `127.0.0.0/8` or `::1/128`, as written in the config.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network in CIDR notation. A bare address means that one address (`/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

/// Why a network was refused; the message shows the form to use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{value:?} is not a network: write an address and a prefix length, such as 127.0.0.0/8, 192.168.1.0/24 or ::1/128"
)]
pub struct InvalidNetwork {
    value: String,
}

impl IpNetwork {
    /// `127.0.0.0/8`.
    pub const LOOPBACK_V4: IpNetwork = IpNetwork {
        addr: IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)),
        prefix: 8,
    };
    /// `::1/128`.
    pub const LOOPBACK_V6: IpNetwork = IpNetwork {
        addr: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        prefix: 128,
    };

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`, which
    /// is how a dual-stack listener sees an IPv4 client) counts as the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// Whether every address of this network is a loopback address.
    pub fn is_loopback(&self) -> bool {
        match self.addr {
            IpAddr::V4(a) => a.is_loopback() && self.prefix >= 8,
            IpAddr::V6(a) => a.is_loopback() && self.prefix == 128,
        }
    }
}

impl FromStr for IpNetwork {
    type Err = InvalidNetwork;
    fn from_str(s: &str) -> Result<Self, InvalidNetwork> {
        let invalid = || InvalidNetwork {
            value: s.chars().take(80).collect(),
        };
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            // Digits only: `u8::from_str` would take `+8`.
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| invalid())?
            }
            Some(_) => return Err(invalid()),
            None => max,
        };
        if prefix > max {
            return Err(invalid());
        }
        Ok(IpNetwork { addr, prefix })
    }
}

impl TryFrom<String> for IpNetwork {
    type Error = InvalidNetwork;
    fn try_from(s: String) -> Result<Self, InvalidNetwork> {
        s.parse()
    }
}

impl From<IpNetwork> for String {
    fn from(n: IpNetwork) -> String {
        n.to_string()
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_networks_hold_loopback_and_nothing_else() {
        let v4 = IpNetwork::LOOPBACK_V4;
        let v6 = IpNetwork::LOOPBACK_V6;
        assert_eq!(v4, net("127.0.0.0/8"));
        assert_eq!(v6, net("::1/128"));
        for local in ["127.0.0.1", "127.200.3.4", "::ffff:127.0.0.1"] {
            assert!(v4.contains(ip(local)), "{local}");
        }
        assert!(v6.contains(ip("::1")));
        for remote in [
            "128.0.0.1",
            "10.0.0.1",
            "::2",
            "::ffff:10.0.0.1",
            "fe80::1",
            "0.0.0.0",
        ] {
            assert!(
                !v4.contains(ip(remote)) && !v6.contains(ip(remote)),
                "{remote}"
            );
        }
        assert!(v4.is_loopback() && v6.is_loopback());
        assert!(!net("0.0.0.0/0").is_loopback() && !net("::/0").is_loopback());
    }

    #[test]
    fn prefixes_bound_the_network() {
        let lan = net("192.168.1.0/24");
        assert!(lan.contains(ip("192.168.1.77")));
        assert!(!lan.contains(ip("192.168.2.1")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::1")));
        assert_eq!(net("10.1.2.3"), net("10.1.2.3/32"));
        assert!(!net("10.1.2.3").contains(ip("10.1.2.4")));
    }

    #[test]
    fn bad_networks_are_refused_with_the_form_to_use() {
        for bad in [
            "",
            "localhost",
            "127.0.0.0/33",
            "::1/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/x",
        ] {
            let e = bad.parse::<IpNetwork>().unwrap_err().to_string();
            assert!(e.contains("127.0.0.0/8"), "{bad}: {e}");
        }
    }

    #[test]
    fn it_reads_and_writes_as_a_string() {
        let n = net("192.168.0.0/16");
        assert_eq!(n.to_string(), "192.168.0.0/16");
        assert_eq!(String::from(n).parse::<IpNetwork>(), Ok(n));
    }
}
