//! Where a webhook may point, and the address a push connects to.
//!
//! A webhook URL is chosen by whoever holds a unit's token, and the node POSTs to it from inside the
//! government LAN: unchecked, it would let a token holder make the node reach its own admin API,
//! other services on the LAN or a cloud metadata address. So every address a webhook's host
//! resolves to is classified, and the push is refused unless each one is allowed: public addresses
//! always, loopback with `api.webhooks_to_loopback`, private and carrier-grade NAT ranges with
//! `push.allow_private`, and anything within `push.allowed_networks`. Multicast, broadcast and
//! reserved addresses are never allowed.
//!
//! The name is resolved once per push, the addresses are checked, and the request connects to exactly
//! those addresses ([`Pinned`]): a DNS answer that changes between the check and the connection
//! (DNS rebinding) cannot redirect it.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};

use exchange_wire::UnitAddress;

use super::services::Services;
use crate::config::PushConfig;

/// Which kind of address a webhook host resolved to, when it is not simply public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// 127.0.0.0/8, ::1, and the unspecified 0.0.0.0/8 and :: (which reach this machine).
    Loopback,
    /// RFC 1918, fc00::/7 (unique local) and 100.64.0.0/10 (carrier-grade NAT).
    Private,
    /// 169.254.0.0/16 and fe80::/10 (cloud metadata services live here).
    LinkLocal,
    /// Multicast, broadcast and reserved (240.0.0.0/4) addresses: never a webhook.
    NotUnicast,
}

impl Range {
    fn describe(self) -> &'static str {
        match self {
            Range::Loopback => "a loopback address (this machine)",
            Range::Private => "a private address (RFC 1918, fc00::/7 or 100.64.0.0/10)",
            Range::LinkLocal => "a link-local address (169.254.0.0/16 or fe80::/10)",
            Range::NotUnicast => "a multicast, broadcast or reserved address",
        }
    }

    fn remedy(self) -> &'static str {
        match self {
            Range::Loopback => "api.webhooks_to_loopback = true allows it on a test bench",
            Range::Private => "the node's operator may allow it with push.allow_private = true or list the network in push.allowed_networks",
            Range::LinkLocal => "the node's operator may list the network in push.allowed_networks",
            Range::NotUnicast => "point the webhook at a unicast address of the agency's system",
        }
    }
}

/// The IPv4 address inside an IPv6 one that carries it (mapped, compatible, NAT64 or 6to4), so
/// `::ffff:10.0.0.1` or `64:ff9b::a00:1` is judged as 10.0.0.1.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        // IPv4-compatible (deprecated); `::` and `::1` stay IPv6.
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

/// The range `ip` falls in, or `None` for an ordinary public unicast address.
pub fn range_of(ip: IpAddr) -> Option<Range> {
    let v4 = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => v4,
            None => {
                let first = v6.segments()[0];
                return if v6.is_loopback() || v6.is_unspecified() {
                    Some(Range::Loopback)
                } else if v6.is_multicast() {
                    Some(Range::NotUnicast)
                } else if first & 0xfe00 == 0xfc00 {
                    Some(Range::Private)
                } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
                    // fec0::/10 (site-local, deprecated) reaches the local site as well.
                    Some(Range::LinkLocal)
                } else {
                    None
                };
            }
        },
    };
    let [a, b, ..] = v4.octets();
    if v4.is_loopback() || a == 0 {
        Some(Range::Loopback)
    } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some(Range::Private)
    } else if v4.is_link_local() {
        Some(Range::LinkLocal)
    } else if v4.is_multicast() || a >= 240 {
        Some(Range::NotUnicast)
    } else {
        None
    }
}

/// Why a webhook target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("webhook host {host} is {}: {}", .range.describe(), .range.remedy())]
    Refused { host: String, ip: IpAddr, range: Range },
    #[error("webhook host {host} does not resolve ({reason})")]
    Unresolved { host: String, reason: String },
}

/// The configured rule for webhook targets.
#[derive(Debug, Clone, Default)]
pub struct WebhookTargets {
    loopback: bool,
    private: bool,
    allowed: Vec<IpNet>,
}

impl WebhookTargets {
    /// From `api.webhooks_to_loopback` and the `[push]` section; a network that does not parse is
    /// a configuration error, reported at start-up.
    pub fn new(loopback: bool, cfg: &PushConfig) -> anyhow::Result<WebhookTargets> {
        let allowed = cfg
            .allowed_networks
            .iter()
            .map(|n| {
                n.trim()
                    .parse::<IpNet>()
                    .or_else(|_| n.trim().parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| anyhow::anyhow!("push.allowed_networks: {n:?} is not a network; write it like \"10.1.0.0/16\" or \"fd00:1::/64\""))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(WebhookTargets { loopback, private: cfg.allow_private, allowed })
    }

    /// Whether a push may connect to `ip`; the range that forbids it otherwise.
    pub fn check(&self, ip: IpAddr) -> Result<(), Range> {
        let Some(range) = range_of(ip) else { return Ok(()) };
        let listed = || {
            let plain = match ip {
                IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4).unwrap_or(ip),
                v4 => v4,
            };
            self.allowed.iter().any(|n| n.contains(&ip) || n.contains(&plain))
        };
        let allowed = match range {
            Range::NotUnicast => false,
            Range::Loopback => self.loopback || listed(),
            Range::Private => self.private || listed(),
            Range::LinkLocal => listed(),
        };
        if allowed { Ok(()) } else { Err(range) }
    }

    /// Resolves `host` once and checks every address it gives: all must be allowed, so a name with
    /// one public and one private address cannot reach the private one. `localhost` and
    /// `*.localhost` are loopback whatever the resolver says.
    pub fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, TargetError> {
        let lower = host.to_ascii_lowercase();
        let addrs: Vec<SocketAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, port)]
        } else if lower == "localhost" || lower.ends_with(".localhost") {
            vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port), SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)]
        } else {
            (host, port)
                .to_socket_addrs()
                .map_err(|e| TargetError::Unresolved { host: host.to_string(), reason: e.to_string() })?
                .collect()
        };
        if addrs.is_empty() {
            return Err(TargetError::Unresolved { host: host.to_string(), reason: "no addresses".into() });
        }
        for a in &addrs {
            self.check(a.ip()).map_err(|range| TargetError::Refused { host: host.to_string(), ip: a.ip(), range })?;
        }
        Ok(addrs)
    }
}

/// A resolver that answers with addresses already checked, whatever name it is asked for: the
/// push's agent has no proxy and follows no redirect, so the only name it meets is the webhook's.
#[derive(Debug)]
pub struct Pinned(pub Vec<SocketAddr>);

impl Resolver for Pinned {
    fn resolve(&self, _uri: &ureq::http::Uri, _config: &ureq::config::Config, _timeout: ureq::unversioned::transport::NextTimeout) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut out = self.empty();
        for a in self.0.iter().take(16) {
            out.push(*a);
        }
        if out.is_empty() { Err(ureq::Error::HostNotFound) } else { Ok(out) }
    }
}

/// The webhook part: where webhooks may point, and the units whose pusher runs (one each). Its
/// work (registration, the pushers) is in `push.rs`; it needs the shared services only, so it holds
/// them, and a clone of it is what each pusher task owns.
#[derive(Clone)]
pub struct Webhooks {
    pub(super) services: Arc<Services>,
    targets: WebhookTargets,
    pushers: Arc<Mutex<HashSet<UnitAddress>>>,
}

impl Webhooks {
    pub fn new(services: Arc<Services>, targets: WebhookTargets) -> Webhooks {
        Webhooks { services, targets, pushers: Arc::new(Mutex::new(HashSet::new())) }
    }

    /// Where webhooks may point (checked at registration and before every push).
    pub fn targets(&self) -> WebhookTargets {
        self.targets.clone()
    }

    /// Claims the pusher of `unit`; false when one runs already.
    pub(super) fn claim(&self, unit: &UnitAddress) -> bool {
        self.pushers.lock().expect("pushers lock").insert(unit.clone())
    }

    /// The pusher of `unit` ends (its webhook was removed).
    pub(super) fn release(&self, unit: &UnitAddress) {
        self.pushers.lock().expect("pushers lock").remove(unit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(loopback: bool, private: bool, allowed: &[&str]) -> WebhookTargets {
        WebhookTargets::new(loopback, &PushConfig { allow_private: private, allowed_networks: allowed.iter().map(|s| s.to_string()).collect() }).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_are_recognised_in_every_spelling() {
        for (a, r) in [
            ("127.0.0.1", Range::Loopback),
            ("0.0.0.0", Range::Loopback),
            ("::1", Range::Loopback),
            ("::", Range::Loopback),
            ("::ffff:127.0.0.1", Range::Loopback),
            ("10.1.2.3", Range::Private),
            ("172.16.0.1", Range::Private),
            ("172.31.255.255", Range::Private),
            ("192.168.1.1", Range::Private),
            ("100.64.0.1", Range::Private),
            ("100.127.255.254", Range::Private),
            ("fd12::1", Range::Private),
            ("::ffff:10.0.0.1", Range::Private),
            ("64:ff9b::a00:1", Range::Private),
            ("2002:c0a8:101::1", Range::Private),
            ("169.254.169.254", Range::LinkLocal),
            ("fe80::1", Range::LinkLocal),
            ("224.0.0.1", Range::NotUnicast),
            ("255.255.255.255", Range::NotUnicast),
            ("ff02::1", Range::NotUnicast),
        ] {
            assert_eq!(range_of(ip(a)), Some(r), "{a}");
        }
        for public in ["198.51.100.7", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:db8::1", "11.0.0.1"] {
            assert_eq!(range_of(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn only_what_is_configured_is_allowed() {
        let closed = targets(false, false, &[]);
        for a in ["10.0.0.1", "192.168.0.1", "169.254.169.254", "127.0.0.1", "fe80::1", "fc00::1", "100.64.0.1"] {
            assert!(closed.check(ip(a)).is_err(), "{a}");
        }
        assert!(closed.check(ip("198.51.100.7")).is_ok());
        let private = targets(false, true, &[]);
        assert!(private.check(ip("10.0.0.1")).is_ok());
        assert!(private.check(ip("169.254.169.254")).is_err(), "link-local needs an explicit network");
        assert!(private.check(ip("127.0.0.1")).is_err());
        let listed = targets(false, false, &["10.1.0.0/16", "169.254.10.0/24"]);
        assert!(listed.check(ip("10.1.200.3")).is_ok());
        assert!(listed.check(ip("::ffff:10.1.200.3")).is_ok());
        assert!(listed.check(ip("10.2.0.1")).is_err());
        assert!(listed.check(ip("169.254.10.9")).is_ok());
        assert!(listed.check(ip("169.254.169.254")).is_err());
        let loopback = targets(true, false, &[]);
        assert!(loopback.check(ip("127.0.0.1")).is_ok());
        assert!(loopback.check(ip("10.0.0.1")).is_err());
        assert!(targets(true, true, &["224.0.0.0/4"]).check(ip("224.0.0.1")).is_err(), "never multicast");
        assert!(WebhookTargets::new(false, &PushConfig { allow_private: false, allowed_networks: vec!["10.1.0.0/33".into()] }).is_err());
    }

    #[test]
    fn a_name_is_refused_if_any_of_its_addresses_is() {
        let closed = targets(false, false, &[]);
        assert!(matches!(closed.resolve("localhost", 80), Err(TargetError::Refused { range: Range::Loopback, .. })));
        assert!(matches!(closed.resolve("admin.localhost", 80), Err(TargetError::Refused { range: Range::Loopback, .. })));
        let err = closed.resolve("10.0.0.7", 8080).unwrap_err();
        assert!(err.to_string().contains("push.allow_private"), "{err}");
        assert_eq!(closed.resolve("198.51.100.7", 8443).unwrap(), vec!["198.51.100.7:8443".parse().unwrap()]);
        assert_eq!(targets(true, false, &[]).resolve("localhost", 9).unwrap().len(), 2);
    }
}
