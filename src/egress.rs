//! The egress guard: which addresses destinations may reach.
//!
//! Unless an operator CIDR allows them, the guard refuses the ranges the IANA Special-Purpose
//! Address Registries mark as not globally reachable, so a producer cannot aim the gateway at its
//! own network, or at addresses no destination can hold:
//!
//! - IPv4: this network (0/8), private (10/8, 172.16/12, 192.168/16), shared CGNAT (100.64/10),
//!   loopback (127/8), link-local with the cloud metadata endpoints (169.254/16), IETF protocol
//!   assignments (192.0.0/24), documentation (192.0.2/24, 198.51.100/24, 203.0.113/24), the
//!   deprecated 6to4 relay anycast (192.88.99/24), benchmarking (198.18/15), multicast (224/4),
//!   reserved (240/4) and broadcast.
//! - IPv6: unspecified, loopback, NAT64 local-use (64:ff9b:1::/48), discard-only (100::/64), the
//!   dummy prefix (100:0:0:1::/64), IETF protocol assignments (2001::/23) but for the blocks the
//!   registry marks global, documentation (2001:db8::/32, 3fff::/20), SRv6 SIDs (5f00::/16),
//!   unique-local (fc00::/7), link-local (fe80::/10), site-local (fec0::/10), multicast, and
//!   anything else outside global unicast (2000::/3).
//! - IPv6 forms that carry an IPv4 address (mapped, compatible, translated, NAT64 64:ff9b::/96,
//!   6to4, and Teredo's server and client) are judged by the IPv4 addresses they carry: that is
//!   where a translator or tunnel takes the traffic.
//!
//! Ingest checks IP literals and `localhost`; the delivery client checks every address a host
//! name resolves to, at connect time, so DNS cannot be used to slip past the check.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Default)]
pub struct EgressGuard {
    allow_all: bool,
    allowed: Vec<IpNet>,
}

/// A refusal. For an IPv6 address that carries an IPv4 one, `ip` is the carried address that was
/// refused, so the message names the range at fault and the CIDR an operator would allow.
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
        match ip {
            IpAddr::V4(v4) => self.check_v4(v4),
            IpAddr::V6(v6) => self.check_v6(v6),
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

    fn check_v4(&self, ip: Ipv4Addr) -> Result<(), EgressDenied> {
        match restricted_v4(ip) {
            Some(kind) if !self.allows(ip.into()) => Err(EgressDenied {
                ip: ip.into(),
                kind,
            }),
            _ => Ok(()),
        }
    }

    /// Allowing the IPv6 address (`2002::/16`) opens it; so does allowing every IPv4 address it
    /// carries, so that `127.0.0.0/8` covers `::ffff:127.0.0.1` and `2002:7f00:1::` as well.
    fn check_v6(&self, ip: Ipv6Addr) -> Result<(), EgressDenied> {
        if self.allows(ip.into()) {
            return Ok(());
        }
        let carried = carried_ipv4(ip);
        if !carried.is_empty() {
            return carried.into_iter().try_for_each(|v4| self.check_v4(v4));
        }
        match restricted_v6(ip) {
            Some(kind) => Err(EgressDenied {
                ip: ip.into(),
                kind,
            }),
            None => Ok(()),
        }
    }

    fn allows(&self, ip: IpAddr) -> bool {
        self.allowed.iter().any(|net| net.contains(&ip))
    }
}

/// The network whose address starts with `leading` (the rest zero). A bad prefix length makes
/// `new_assert` panic, which in the constants below fails the build rather than a check.
const fn net4(leading: &[u8], prefix_len: u8) -> Ipv4Net {
    let mut octets = [0; 4];
    let (head, _) = octets.split_at_mut(leading.len());
    head.copy_from_slice(leading);
    Ipv4Net::new_assert(Ipv4Addr::from_octets(octets), prefix_len)
}

/// As [`net4`], with IPv6 segments.
const fn net6(leading: &[u16], prefix_len: u8) -> Ipv6Net {
    let mut segments = [0; 8];
    let (head, _) = segments.split_at_mut(leading.len());
    head.copy_from_slice(leading);
    Ipv6Net::new_assert(Ipv6Addr::from_segments(segments), prefix_len)
}

/// Not globally reachable per the registry, plus multicast. 192.0.0.0/24 is refused whole
/// although its PCP and TURN anycast addresses (.9, .10) are global: neither is a webhook
/// destination. The global AS112 (192.31.196/24, 192.175.48/24) and AMT (192.52.193/24) blocks
/// are not listed, so they are ordinary destinations.
const RESTRICTED_V4: &[(Ipv4Net, &str)] = &[
    (net4(&[0], 8), "this-network"),
    (net4(&[10], 8), "private"),
    (net4(&[100, 64], 10), "shared (CGNAT)"),
    (net4(&[127], 8), "loopback"),
    (net4(&[169, 254], 16), "link-local/metadata"),
    (net4(&[172, 16], 12), "private"),
    (net4(&[192, 0, 0], 24), "IETF protocol assignment"),
    (net4(&[192, 0, 2], 24), "documentation"),
    (net4(&[192, 88, 99], 24), "6to4 relay"),
    (net4(&[192, 168], 16), "private"),
    (net4(&[198, 18], 15), "benchmarking"),
    (net4(&[198, 51, 100], 24), "documentation"),
    (net4(&[203, 0, 113], 24), "documentation"),
    (net4(&[224], 4), "multicast"),
    (net4(&[255, 255, 255, 255], 32), "broadcast"),
    (net4(&[240], 4), "reserved"),
];

/// The blocks inside 2001::/23 that the registry marks globally reachable.
const GLOBAL_IN_IETF_PROTOCOL_ASSIGNMENTS: &[Ipv6Net] = &[
    net6(&[0x2001, 1, 0, 0, 0, 0, 0, 1], 128), // PCP anycast
    net6(&[0x2001, 1, 0, 0, 0, 0, 0, 2], 128), // TURN anycast
    net6(&[0x2001, 1, 0, 0, 0, 0, 0, 3], 128), // DNS-SD SRP anycast (RFC 9665)
    net6(&[0x2001, 3], 32),                    // AMT
    net6(&[0x2001, 4, 0x112], 48),             // AS112-v6
    net6(&[0x2001, 0x20], 28),                 // ORCHIDv2
    net6(&[0x2001, 0x30], 28),                 // drone remote ID tags
];

/// Not globally reachable per the registry, plus site-local and multicast; the first range
/// holding an address names it. The forms that carry IPv4 never get here, `::` and `::1` do.
const RESTRICTED_V6: &[(Ipv6Net, &str)] = &[
    (net6(&[], 128), "unspecified"),
    (net6(&[0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    // RFC 8215 lets each network pick a prefix length within the /48, and RFC 6052 places the
    // IPv4 bits by that length, so the address alone does not say where its IPv4 address is.
    (net6(&[0x64, 0xff9b, 1], 48), "NAT64 local-use"),
    (net6(&[0x100], 64), "discard-only"),
    (net6(&[0x100, 0, 0, 1], 64), "dummy prefix"),
    (net6(&[0x2001, 2], 48), "benchmarking"),
    (net6(&[0x2001, 0x10], 28), "deprecated ORCHID"),
    (net6(&[0x2001], 23), "IETF protocol assignment"),
    (net6(&[0x2001, 0xdb8], 32), "documentation"),
    (net6(&[0x3fff], 20), "documentation"),
    (net6(&[0x5f00], 16), "SRv6 SID"),
    // AWS's IPv6 instance metadata endpoint. Inside unique-local, so refused either way;
    // listed first so the refusal says metadata.
    (
        Ipv6Net::new_assert(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254), 128),
        "metadata",
    ),
    (net6(&[0xfc00], 7), "unique-local"),
    (net6(&[0xfe80], 10), "link-local"),
    (net6(&[0xfec0], 10), "site-local"),
    (net6(&[0xff00], 8), "multicast"),
];

/// Everything outside it is reserved by the IETF: no destination can hold such an address.
const GLOBAL_UNICAST: Ipv6Net = net6(&[0x2000], 3);

/// IPv4-compatible (but for `::` and `::1`), IPv4-mapped, IPv4-translated and NAT64 with the
/// well-known prefix: the IPv4 address is the last 32 bits.
const CARRYING_IPV4_LAST: &[Ipv6Net] = &[
    net6(&[], 96),
    net6(&[0, 0, 0, 0, 0, 0xffff], 96),
    net6(&[0, 0, 0, 0, 0xffff], 96),
    net6(&[0x64, 0xff9b], 96),
];
const SIX_TO_FOUR: Ipv6Net = net6(&[0x2002], 16);
const TEREDO: Ipv6Net = net6(&[0x2001], 32);

/// The IPv4 addresses an IPv6 address carries: one for most forms, the server and the client
/// for Teredo, none for an address of any other form.
fn carried_ipv4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let last_32_bits = ipv4_at_bit(ip, 96);
    if ip.is_unspecified() || ip.is_loopback() {
        // IPv6's own `::` and `::1`, though they sit in the IPv4-compatible block.
        Vec::new()
    } else if CARRYING_IPV4_LAST.iter().any(|net| net.contains(&ip)) {
        vec![last_32_bits]
    } else if SIX_TO_FOUR.contains(&ip) {
        vec![ipv4_at_bit(ip, 16)]
    } else if TEREDO.contains(&ip) {
        // The client address is stored inverted so that NATs do not rewrite it (RFC 4380).
        vec![ipv4_at_bit(ip, 32), !last_32_bits]
    } else {
        Vec::new()
    }
}

/// The 32 bits of `ip` from bit `start` on (0 is the most significant), as an IPv4 address.
fn ipv4_at_bit(ip: Ipv6Addr, start: u32) -> Ipv4Addr {
    // Truncating to the low 32 bits is the point: the shift put the wanted bits there.
    Ipv4Addr::from_bits((ip.to_bits() >> (96 - start)) as u32)
}

fn restricted_v4(ip: Ipv4Addr) -> Option<&'static str> {
    RESTRICTED_V4
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, kind)| *kind)
}

fn restricted_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if GLOBAL_IN_IETF_PROTOCOL_ASSIGNMENTS
        .iter()
        .any(|net| net.contains(&ip))
    {
        return None;
    }
    match RESTRICTED_V6.iter().find(|(net, _)| net.contains(&ip)) {
        Some((_, kind)) => Some(kind),
        None if GLOBAL_UNICAST.contains(&ip) => None,
        None => Some("reserved"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Expected::{Allowed, Carried, Refused};

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    enum Expected {
        Allowed,
        /// Refused as this kind of address.
        Refused(&'static str),
        /// Refused as the IPv4 address it carries would be, naming that address.
        Carried(&'static str),
    }

    fn assert_verdict(guard: &EgressGuard, address: IpAddr, expected: &Expected) {
        let wanted = match *expected {
            Allowed => Ok(()),
            Refused(kind) => Err(EgressDenied { ip: address, kind }),
            Carried(carried) => Err(guard.check_ip(ip(carried)).unwrap_err()),
        };
        assert_eq!(guard.check_ip(address), wanted, "{address}");
    }

    fn assert_verdicts(guard: &EgressGuard, rows: &[(&str, Expected)]) {
        for (sample, expected) in rows {
            assert_verdict(guard, ip(sample), expected);
        }
    }

    #[test]
    fn ipv4_special_purpose_registry() {
        assert_verdicts(
            &EgressGuard::default(),
            &[
                ("0.0.0.0", Refused("this-network")),
                ("10.1.2.3", Refused("private")),
                ("100.64.0.1", Refused("shared (CGNAT)")),
                ("127.0.0.1", Refused("loopback")),
                ("169.254.169.254", Refused("link-local/metadata")),
                ("172.16.0.1", Refused("private")),
                ("192.0.0.8", Refused("IETF protocol assignment")),
                ("192.0.0.9", Refused("IETF protocol assignment")), // PCP anycast
                ("192.0.2.1", Refused("documentation")),
                ("192.31.196.1", Allowed), // AS112-v4
                ("192.52.193.1", Allowed), // AMT
                ("192.88.99.1", Refused("6to4 relay")),
                ("192.168.1.1", Refused("private")),
                ("192.175.48.1", Allowed), // direct delegation AS112
                ("198.18.0.1", Refused("benchmarking")),
                ("198.51.100.7", Refused("documentation")),
                ("203.0.113.7", Refused("documentation")),
                ("224.0.0.1", Refused("multicast")),
                ("240.0.0.1", Refused("reserved")),
                ("255.255.255.255", Refused("broadcast")),
                ("93.184.216.34", Allowed),
            ],
        );
    }

    #[test]
    fn ipv6_special_purpose_registry() {
        assert_verdicts(
            &EgressGuard::default(),
            &[
                ("::", Refused("unspecified")),
                ("::1", Refused("loopback")),
                ("64:ff9b:1::1", Refused("NAT64 local-use")),
                ("100::1", Refused("discard-only")),
                ("100:0:0:1::1", Refused("dummy prefix")),
                ("2001:1::1", Allowed), // PCP anycast
                ("2001:1::2", Allowed), // TURN anycast
                ("2001:1::3", Allowed), // DNS-SD SRP anycast
                ("2001:1::4", Refused("IETF protocol assignment")),
                ("2001:2::1", Refused("benchmarking")),
                ("2001:3::1", Allowed),     // AMT
                ("2001:4:112::1", Allowed), // AS112-v6
                ("2001:10::1", Refused("deprecated ORCHID")),
                ("2001:20::1", Allowed), // ORCHIDv2
                ("2001:30::1", Allowed), // drone remote ID tags
                ("2001:100::1", Refused("IETF protocol assignment")),
                ("2001:db8::1", Refused("documentation")),
                ("2620:4f:8000::1", Allowed), // direct delegation AS112
                ("3fff::1", Refused("documentation")),
                ("5f00::1", Refused("SRv6 SID")),
                ("fd00::1", Refused("unique-local")),
                ("fd00:ec2::254", Refused("metadata")),
                ("fe80::1", Refused("link-local")),
                ("fec0::1", Refused("site-local")),
                ("ff02::1", Refused("multicast")),
                ("1::1", Refused("reserved")),
                ("2606:4700::1111", Allowed),
            ],
        );
    }

    /// The first and last address of each range, then the first one past it.
    #[test]
    fn range_boundaries() {
        const IETF: Expected = Refused("IETF protocol assignment");
        let guard = EgressGuard::default();
        for (range, inside, just_past) in [
            ("0.0.0.0/8", Refused("this-network"), Allowed),
            ("10.0.0.0/8", Refused("private"), Allowed),
            ("100.64.0.0/10", Refused("shared (CGNAT)"), Allowed),
            ("172.16.0.0/12", Refused("private"), Allowed),
            ("192.0.0.0/24", IETF, Allowed),
            ("198.18.0.0/15", Refused("benchmarking"), Allowed),
            ("224.0.0.0/4", Refused("multicast"), Refused("reserved")),
            ("240.0.0.0/5", Refused("reserved"), Refused("reserved")),
            ("100::/64", Refused("discard-only"), Refused("dummy prefix")),
            ("1000::/4", Refused("reserved"), Allowed),
            ("2001:2::/48", Refused("benchmarking"), IETF),
            ("2001:4:112::/48", Allowed, IETF),
            ("2001:10::/28", Refused("deprecated ORCHID"), Allowed),
            ("2001:30::/28", Allowed, IETF),
            ("2001:100::/24", IETF, Allowed), // the upper half of 2001::/23
            ("2001:db8::/32", Refused("documentation"), Allowed),
            ("3fff::/20", Refused("documentation"), Allowed),
            ("fc00::/7", Refused("unique-local"), Refused("reserved")),
            ("fe80::/10", Refused("link-local"), Refused("site-local")),
            ("fec0::/10", Refused("site-local"), Refused("multicast")),
        ] {
            let range: IpNet = range.parse().unwrap();
            let past: IpAddr = match range {
                IpNet::V4(net) => Ipv4Addr::from_bits(net.broadcast().to_bits() + 1).into(),
                IpNet::V6(net) => Ipv6Addr::from_bits(net.broadcast().to_bits() + 1).into(),
            };
            assert_verdict(&guard, range.network(), &inside);
            assert_verdict(&guard, range.broadcast(), &inside);
            assert_verdict(&guard, past, &just_past);
        }
    }

    #[test]
    fn ipv6_forms_carrying_ipv4_are_judged_by_it() {
        assert_verdicts(
            &EgressGuard::default(),
            &[
                // IPv4-mapped
                ("::ffff:127.0.0.1", Carried("127.0.0.1")),
                ("::ffff:8.8.8.8", Allowed),
                // IPv4-compatible: deprecated, but a stack may still send it as IPv4.
                ("::127.0.0.1", Carried("127.0.0.1")),
                ("::169.254.169.254", Carried("169.254.169.254")),
                ("::2", Carried("0.0.0.2")),
                ("::8.8.8.8", Allowed),
                // IPv4-translated
                ("::ffff:0:10.0.0.1", Carried("10.0.0.1")),
                ("::ffff:0:8.8.8.8", Allowed),
                // NAT64, well-known prefix
                ("64:ff9b::7f00:1", Carried("127.0.0.1")),
                ("64:ff9b::a9fe:a9fe", Carried("169.254.169.254")),
                ("64:ff9b::808:808", Allowed),
                // 6to4
                ("2002:7f00:1::", Carried("127.0.0.1")),
                ("2002:c0a8:101::1", Carried("192.168.1.1")),
                ("2002:808:808::1", Allowed),
                // Teredo, server 65.54.227.120 and client 8.8.8.8, 192.0.2.45 (RFC 4380's
                // example) or 127.0.0.1; then server 10.0.0.1 and client 8.8.8.8.
                ("2001:0:4136:e378::f7f7:f7f7", Allowed),
                ("2001:0:4136:e378::3fff:fdd2", Carried("192.0.2.45")),
                ("2001:0:4136:e378::80ff:fffe", Carried("127.0.0.1")),
                ("2001:0:a00:1::f7f7:f7f7", Carried("10.0.0.1")),
            ],
        );
    }

    #[test]
    fn operator_allows_reach_the_carried_ipv4() {
        let loopback = EgressGuard::new(&["127.0.0.0/8".into()]).unwrap();
        assert_verdicts(
            &loopback,
            &[
                ("127.0.0.2", Allowed),
                ("::ffff:127.0.0.1", Allowed),
                ("::127.0.0.1", Allowed),
                ("::ffff:0:127.0.0.1", Allowed),
                ("64:ff9b::7f00:1", Allowed),
                ("2002:7f00:1::", Allowed),
                ("2001:0:4136:e378::80ff:fffe", Allowed),
                // Teredo needs both ends allowed: this server is 10.0.0.1.
                ("2001:0:a00:1::80ff:fffe", Carried("10.0.0.1")),
                ("::10.0.0.1", Carried("10.0.0.1")),
                ("::1", Refused("loopback")),
            ],
        );
        let v6_ranges = EgressGuard::new(&["2002::/16".into(), "64:ff9b:1::/48".into()]).unwrap();
        assert_verdicts(
            &v6_ranges,
            &[
                ("2002:7f00:1::", Allowed),
                ("64:ff9b:1::7f00:1", Allowed),
                ("64:ff9b::7f00:1", Carried("127.0.0.1")),
            ],
        );
    }

    #[test]
    fn refusal_of_a_carried_address_names_it_and_its_range() {
        let refusal = EgressGuard::default().check_ip(ip("64:ff9b::7f00:1"));
        assert_eq!(
            refusal.unwrap_err().to_string(),
            "egress to 127.0.0.1 is not allowed (loopback address); \
             allow it with HOOKGATE_EGRESS_ALLOW"
        );
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
