//! Pod subnets: the cluster's pod range (default `10.42.0.0/16`) split into `/24`s, one per
//! node, claimed in the desired state without a master.
//!
//! The claims are a map in the document from subnet index to node name. Two nodes that claim
//! one index at once both write its key; automerge keeps one value for it on every node alike,
//! so after they sync one node holds the index and the other sees that it does not, and claims
//! another before it starts pods ([`decide`]). Each node starts its search at an index derived
//! from its name, so nodes joining together rarely pick the same one at all.
//!
//! Pure.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// The cluster's pod range when none is set.
pub const DEFAULT_RANGE: &str = "10.42.0.0/16";

/// A cluster's pod range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodRange {
    base: u32,
    prefix: u8,
}

/// A range that cannot serve as a pod range, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pod range {range:?}: {why} (write it as ADDRESS/PREFIX, e.g. {DEFAULT_RANGE})")]
pub struct BadRange {
    pub range: String,
    pub why: &'static str,
}

impl PodRange {
    /// Reads `A.B.C.D/P`: an IPv4 network of prefix 8 to 23 (room for at least two `/24`s),
    /// its address the network's first.
    pub fn parse(range: &str) -> Result<PodRange, BadRange> {
        let bad = |why| BadRange {
            range: range.to_string(),
            why,
        };
        let (addr, prefix) = range.split_once('/').ok_or_else(|| bad("no /PREFIX"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| bad("the prefix is not a number"))?;
        if !(8..=23).contains(&prefix) {
            return Err(bad("the prefix must be 8 to 23, to hold a /24 per node"));
        }
        let base = u32::from(addr);
        let mask = u32::MAX << (32 - u32::from(prefix));
        if base & !mask != 0 {
            return Err(bad("the address is not the first of its network"));
        }
        Ok(PodRange { base, prefix })
    }

    /// How many `/24`s the range holds: how many nodes it serves.
    pub fn len(&self) -> u32 {
        1 << (24 - u32::from(self.prefix))
    }

    /// Whether the range holds no `/24` (never, for a parsed range).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `index`-th `/24` of the range.
    pub fn subnet(&self, index: u32) -> Option<Subnet24> {
        (index < self.len()).then(|| Subnet24(Ipv4Addr::from(self.base + (index << 8))))
    }

    /// The index of the `/24` that holds `addr`, if the range holds it.
    pub fn index_of(&self, addr: Ipv4Addr) -> Option<u32> {
        let offset = u32::from(addr).checked_sub(self.base)?;
        let index = offset >> 8;
        (index < self.len()).then_some(index)
    }
}

impl fmt::Display for PodRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// One node's pod subnet, `A.B.C.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet24(Ipv4Addr);

impl Subnet24 {
    /// The network's address, `A.B.C.0`.
    pub fn network(&self) -> Ipv4Addr {
        self.0
    }

    /// The bridge's address on it, `A.B.C.1` (the pods' gateway).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.0) + 1)
    }
}

impl fmt::Display for Subnet24 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/24", self.0)
    }
}

/// What a node does about its pod subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It holds this index: use it. `release`: other indexes it holds too (a claim it made
    /// again after losing one, then won as well), to give back.
    Keep { index: u32, release: Vec<u32> },
    /// It holds none: claim this free index, then decide again once the claim has synced.
    Claim(u32),
    /// Every index is held by another node: the range is too small for the cluster.
    Exhausted,
}

/// The decision of node `me`, given the claims of the desired state (index → node). Pure.
pub fn decide(range: &PodRange, claims: &BTreeMap<u32, String>, me: &str) -> Decision {
    let mut mine = claims
        .iter()
        .filter(|(i, n)| n.as_str() == me && **i < range.len())
        .map(|(i, _)| *i);
    if let Some(index) = mine.next() {
        return Decision::Keep {
            index,
            release: mine.collect(),
        };
    }
    let len = range.len();
    let start = start_index(me, len);
    (0..len)
        .map(|k| (start + k) % len)
        .find(|i| !claims.contains_key(i))
        .map_or(Decision::Exhausted, Decision::Claim)
}

/// Where node `me` starts looking for a free index: FNV-1a of its name.
pub fn start_index(me: &str, len: u32) -> u32 {
    let h = me.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    h % len.max(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn claims(pairs: &[(u32, &str)]) -> BTreeMap<u32, String> {
        pairs.iter().map(|(i, n)| (*i, (*n).to_string())).collect()
    }

    #[test]
    fn ranges_parse_and_split_into_24s() {
        let r = PodRange::parse(DEFAULT_RANGE).unwrap();
        assert_eq!(r.len(), 256);
        assert_eq!(r.to_string(), "10.42.0.0/16");
        assert_eq!(r.subnet(0).unwrap().to_string(), "10.42.0.0/24");
        assert_eq!(r.subnet(7).unwrap().gateway(), Ipv4Addr::new(10, 42, 7, 1));
        assert_eq!(r.subnet(256), None);
        assert_eq!(r.index_of(Ipv4Addr::new(10, 42, 9, 200)), Some(9));
        assert_eq!(r.index_of(Ipv4Addr::new(10, 43, 0, 1)), None);
        assert_eq!(r.index_of(Ipv4Addr::new(10, 41, 255, 1)), None);
        assert_eq!(PodRange::parse("10.0.0.0/23").unwrap().len(), 2);
        for (bad, why) in [
            ("10.42.0.0", "no /PREFIX"),
            ("10.42.0.1/16", "not the first"),
            ("10.42.0.0/24", "8 to 23"),
            ("10.42.0.0/7", "8 to 23"),
            ("fd00::/64", "not an IPv4"),
            ("10.42.0.0/x", "not a number"),
        ] {
            let e = PodRange::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(DEFAULT_RANGE), "{bad}: {e}");
        }
    }

    #[test]
    fn decisions() {
        let r = PodRange::parse("10.0.0.0/22").unwrap(); // 4 subnets
        let start = start_index("a", 4);
        let cases = [
            (
                claims(&[]),
                "a",
                Decision::Claim(start),
                "nothing claimed: its own start",
            ),
            (
                claims(&[(2, "a")]),
                "a",
                Decision::Keep {
                    index: 2,
                    release: vec![],
                },
                "it holds one",
            ),
            (
                claims(&[(1, "a"), (3, "a")]),
                "a",
                Decision::Keep {
                    index: 1,
                    release: vec![3],
                },
                "it won two claims: keeps the lowest",
            ),
            (
                claims(&[(0, "b"), (1, "c"), (2, "d"), (3, "e")]),
                "a",
                Decision::Exhausted,
                "every subnet held",
            ),
        ];
        for (claims, me, want, what) in cases {
            assert_eq!(decide(&r, &claims, me), want, "{what}");
        }
        // Its start taken: the next free one, wrapping around.
        let taken = claims(&[(start, "b")]);
        assert_eq!(decide(&r, &taken, "a"), Decision::Claim((start + 1) % 4));
    }

    /// Two nodes claim one index at once; the document keeps one value for it. The loser sees
    /// that, claims another, and the two never share a subnet.
    #[test]
    fn of_two_concurrent_claims_one_keeps_the_subnet_and_the_other_moves() {
        let r = PodRange::parse(DEFAULT_RANGE).unwrap();
        // Both start from an empty view and pick their index; say they collide on `i`.
        let i = match decide(&r, &claims(&[]), "a") {
            Decision::Claim(i) => i,
            other => panic!("{other:?}"),
        };
        // The merge keeps b's value for the key (whichever automerge picks, the same everywhere).
        let merged = claims(&[(i, "b")]);
        assert_eq!(
            decide(&r, &merged, "b"),
            Decision::Keep {
                index: i,
                release: vec![]
            }
        );
        let Decision::Claim(j) = decide(&r, &merged, "a") else {
            panic!("the loser must claim again");
        };
        assert_ne!(i, j);
        let settled = claims(&[(i, "b"), (j, "a")]);
        assert_eq!(
            decide(&r, &settled, "a"),
            Decision::Keep {
                index: j,
                release: vec![]
            }
        );
    }

    #[test]
    fn nodes_start_their_search_in_different_places() {
        let starts: std::collections::BTreeSet<u32> = (0..20)
            .map(|k| start_index(&format!("node-{k}"), 256))
            .collect();
        assert!(starts.len() >= 15, "{starts:?}");
    }
}
