//! The egress guard: which addresses destinations may reach.
//!
//! Loopback, private, shared (CGNAT), link-local (which holds cloud metadata endpoints),
//! unique-local, multicast and unspecified addresses are refused unless an operator CIDR
//! allows them, so a producer cannot aim the gateway at its own network. Ingest checks IP
//! literals and `localhost`; the delivery client checks every address a host name resolves
//! to, at connect time, so DNS cannot be used to slip past the check.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Default)]
pub struct EgressGuard {
    allow_all: bool,
    allowed: Vec<IpNet>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("egress to {ip} is not allowed ({kind} address); allow it with HOOKGATE_EGRESS_ALLOW")]
pub struct EgressDenied {
    pub ip: IpAddr,
    pub kind: &'static str,
}

impl EgressGuard {
    /// From operator entries: CIDRs (`10.0.0.0/8`), single addresses, or `*` for anything.
    pub fn new(entries: &[String]) -> Result<Self, String> {
        let mut guard = EgressGuard::default();
        for entry in entries {
            let entry = entry.trim();
            if entry == "*" {
                guard.allow_all = true;
            } else if let Ok(net) = entry.parse::<IpNet>() {
                guard.allowed.push(net);
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                guard.allowed.push(IpNet::from(ip));
            } else {
                return Err(format!(
                    "egress allow entry {entry:?} is not a CIDR, an IP address or *"
                ));
            }
        }
        Ok(guard)
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), EgressDenied> {
        if self.allow_all {
            return Ok(());
        }
        let ip = canonical(ip);
        match restricted_kind(ip) {
            Some(kind) if !self.allowed.iter().any(|net| net.contains(&ip)) => {
                Err(EgressDenied { ip, kind })
            }
            _ => Ok(()),
        }
    }

    /// The check possible without DNS: IP-literal hosts and `localhost` names.
    pub fn check_host(&self, host: &url::Host<&str>) -> Result<(), EgressDenied> {
        match host {
            url::Host::Ipv4(ip) => self.check_ip(IpAddr::V4(*ip)),
            url::Host::Ipv6(ip) => self.check_ip(IpAddr::V6(*ip)),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    self.check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn restricted_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => restricted_v6(v6),
    }
}

fn restricted_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local/metadata")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (CGNAT)")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("multicast/reserved")
    } else {
        None
    }
}

fn restricted_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if first & 0xfe00 == 0xfc00 {
        Some("unique-local")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if first == 0xfd00 && ip.segments()[1..7].iter().all(|s| *s == 0) {
        Some("metadata")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn refuses_internal_ranges_by_default() {
        let guard = EgressGuard::new(&[]).unwrap();
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(guard.check_ip(ip(internal)).is_err(), "{internal} allowed");
        }
        assert!(guard.check_ip(ip("93.184.216.34")).is_ok());
        assert!(guard.check_ip(ip("2606:4700::1111")).is_ok());
    }

    #[test]
    fn operator_cidrs_and_star_open_the_guard() {
        let guard = EgressGuard::new(&["127.0.0.0/8".into(), "::1".into()]).unwrap();
        assert!(guard.check_ip(ip("127.0.0.2")).is_ok());
        assert!(guard.check_ip(ip("::1")).is_ok());
        assert!(guard.check_ip(ip("10.0.0.1")).is_err());
        let open = EgressGuard::new(&["*".into()]).unwrap();
        assert!(open.check_ip(ip("169.254.169.254")).is_ok());
        assert!(EgressGuard::new(&["not-a-net".into()]).is_err());
    }
}
