//! Who the DNS server answers, and how much (pure, `now` passed in): only sources on the
//! networks it serves (the `dns-allow` setting; by default the private, link-local and
//! loopback ranges, where a home LAN and the pod networks live, so that a node with a public
//! address is no open resolver), and at most [`RATE`] queries per second per source with
//! bursts of [`BURST`] (a client over it is dropped, as response rate limiting does, and
//! retries). Loopback sources, the node's own host, are not limited.

use std::collections::HashMap;
use std::net::IpAddr;

use tokio::time::Instant;

use crate::runtime::Subnet;

/// Queries per second one source may send, sustained.
pub const RATE: f64 = 200.0;
/// Queries one source may send at once.
pub const BURST: f64 = 400.0;
/// Sources tracked at once; when full, the table starts over (every source gets a full
/// bucket: a flood of spoofed sources only resets it).
const MAX_SOURCES: usize = 4096;

/// The networks answered when the `dns-allow` setting is unset.
pub const DEFAULT_ALLOW: [&str; 9] = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

/// What to do with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Answer,
    /// From outside the networks served: REFUSED.
    Refuse,
    /// Over its source's rate: no answer.
    Drop,
}

/// The allowed networks and each source's bucket.
#[derive(Debug, Clone)]
pub struct Guard {
    allow: Vec<Subnet>,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl Guard {
    /// Answers sources on `allow` (see [`DEFAULT_ALLOW`]).
    pub fn new(allow: Vec<Subnet>) -> Guard {
        Guard {
            allow,
            buckets: HashMap::new(),
        }
    }

    /// The default networks.
    pub fn default_allow() -> Vec<Subnet> {
        DEFAULT_ALLOW
            .iter()
            .filter_map(|s| Subnet::parse(s))
            .collect()
    }

    /// The verdict on a query from `source` at `now`, which counts it against the source.
    pub fn check(&mut self, source: IpAddr, now: Instant) -> Verdict {
        let source = source.to_canonical();
        if !self.allow.iter().any(|n| contains(n, source)) {
            return Verdict::Refuse;
        }
        if source.is_loopback() {
            return Verdict::Answer;
        }
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&source) {
            self.buckets.clear();
        }
        let (tokens, last) = self.buckets.entry(source).or_insert((BURST, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * RATE;
        *tokens = (*tokens + refill).min(BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Verdict::Answer
        } else {
            Verdict::Drop
        }
    }
}

/// Whether `ip` lies in `net`. Pure.
pub fn contains(net: &Subnet, ip: IpAddr) -> bool {
    match (net.addr, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let bits = u32::from(net.prefix.min(32));
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let bits = u32::from(net.prefix.min(128));
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Reads one entry of `dns-allow`: a network (`192.168.1.0/24`) or one address.
pub fn parse_network(s: &str) -> Result<Subnet, String> {
    if let Ok(ip) = s.trim().parse::<IpAddr>() {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        return Ok(Subnet { addr: ip, prefix });
    }
    Subnet::parse(s)
        .ok_or_else(|| format!("{s:?} is neither an address nor a network such as 192.168.1.0/24"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_the_served_networks_are_answered() {
        let mut g = Guard::new(Guard::default_allow());
        let now = Instant::now();
        for (ip, want) in [
            ("192.168.1.20", Verdict::Answer),
            ("10.42.3.7", Verdict::Answer),
            ("127.0.0.1", Verdict::Answer),
            ("::ffff:192.168.1.20", Verdict::Answer),
            ("fd00::5", Verdict::Answer),
            ("8.8.8.8", Verdict::Refuse),
            ("172.32.0.1", Verdict::Refuse),
            ("2001:db8::1", Verdict::Refuse),
        ] {
            assert_eq!(g.check(ip.parse().unwrap(), now), want, "{ip}");
        }
        let mut only = Guard::new(vec![parse_network("192.168.7.0/24").unwrap()]);
        assert_eq!(
            only.check("192.168.7.9".parse().unwrap(), now),
            Verdict::Answer
        );
        assert_eq!(
            only.check("192.168.8.9".parse().unwrap(), now),
            Verdict::Refuse
        );
        assert!(parse_network("nope").is_err());
        assert_eq!(parse_network("10.1.2.3").unwrap().prefix, 32);
    }

    #[test]
    fn a_source_over_its_rate_is_dropped_and_recovers() {
        let mut g = Guard::new(Guard::default_allow());
        let t0 = Instant::now();
        let ip: IpAddr = "192.168.1.20".parse().unwrap();
        let answered = (0..1000)
            .filter(|_| g.check(ip, t0) == Verdict::Answer)
            .count();
        assert_eq!(answered, BURST as usize);
        assert_eq!(g.check(ip, t0), Verdict::Drop);
        // Another source is not held back by it, and the node's own host is not limited.
        assert_eq!(
            g.check("192.168.1.21".parse().unwrap(), t0),
            Verdict::Answer
        );
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!((0..1000).all(|_| g.check(local, t0) == Verdict::Answer));
        // A tenth of a second later: RATE / 10 more.
        let later = t0 + Duration::from_millis(100);
        let again = (0..1000)
            .filter(|_| g.check(ip, later) == Verdict::Answer)
            .count();
        assert_eq!(again, (RATE / 10.0) as usize);
    }
}
