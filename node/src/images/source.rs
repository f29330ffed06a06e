//! Where a node gets an image its engine lacks: from a peer that holds it, or from the
//! registry, once for the whole cluster where it can.
//!
//! Pure: [`next_step`] reads the peers' inventories (see `crate::observed::inventory`) and
//! says what to do next; the image service's pull task does it and asks again.
//!
//! - A live peer holds the image: fetch it from the peers that do, one after the other.
//! - Otherwise one node pulls from the registry and the others wait for it: a node announces
//!   in its inventory that it pulls, waits [`SETTLE`] for other announcements to arrive, and
//!   pulls only if no live peer with a smaller name announced too. The others see the puller,
//!   wait, and fetch from it once it holds the image. A puller that dies or gives up stops
//!   being one; after [`WAIT_LIMIT`] a node pulls itself whatever the others do.
//! - A node alone pulls at once.
//! - With `Always`, the registry names the manifest it serves now (its digest): only a peer
//!   holding the image at that digest is a holder (an image keeps its repo digest only where
//!   it was pulled, so that is the node that pulled it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::reference::ImageRef;
use crate::observed::Inventory;

/// How long a node that announced a pull waits for other announcements.
pub const SETTLE: Duration = Duration::from_secs(1);

/// The longest a node waits for a peer's pull before it pulls itself.
pub const WAIT_LIMIT: Duration = Duration::from_secs(600);

/// A peer holding the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub node: String,
    pub peer_id: String,
    /// The holder's own name for the image (a repo tag of its engine).
    pub reference: String,
    /// The image's id there.
    pub id: String,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Fetch from these holders, in this order.
    Fetch(Vec<Holder>),
    /// Announce the pull, then ask again.
    Announce,
    /// Wait (for announcements, or for a peer's pull), then ask again.
    Wait,
    /// Pull from the registry.
    Pull,
}

/// What [`next_step`] knows of this pull.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Whether this node may pull from the image's registry (setting `allowed-registries`):
    /// a node that may not never announces a pull, but still fetches from peers and waits for
    /// a peer's pull.
    pub may_pull: bool,
    /// When this pull task began.
    pub began: Instant,
    /// When this node announced its pull, if it has.
    pub announced: Option<Instant>,
}

/// The next step for `image` on node `me`. `digest`: the manifest digest a holder must hold
/// it at (`Always`), if any; `alive`: the peers alive now; `tried`: holders (node names) whose
/// fetch failed in this pull. Pure.
#[allow(clippy::too_many_arguments)]
pub fn next_step(
    image: &ImageRef,
    digest: Option<&str>,
    me: &str,
    inventories: &BTreeMap<String, Inventory>,
    alive: &BTreeSet<String>,
    tried: &BTreeSet<String>,
    progress: Progress,
    now: Instant,
) -> Step {
    // Digest references are pulled: a fetched image keeps no repo digest, so it would not be
    // found by its digest afterwards.
    if image.digest.is_some() {
        return Step::Pull;
    }
    let peers = || {
        inventories
            .iter()
            .filter(|(name, _)| name.as_str() != me && alive.contains(name.as_str()))
    };
    let mut holders: Vec<Holder> = peers()
        .filter(|(name, _)| !tried.contains(name.as_str()))
        .filter_map(|(name, inv)| {
            let entry = inv.images.iter().find(|e| {
                e.repo_tags
                    .iter()
                    .any(|t| ImageRef::parse(t).is_ok_and(|r| same_tag(&r, image)))
                    && digest.is_none_or(|d| {
                        e.repo_digests.iter().any(|rd| {
                            ImageRef::parse(rd).is_ok_and(|r| {
                                r.registry == image.registry
                                    && r.repository == image.repository
                                    && r.digest.as_deref() == Some(d)
                            })
                        })
                    })
            })?;
            let reference = entry
                .repo_tags
                .iter()
                .find(|t| ImageRef::parse(t).is_ok_and(|r| same_tag(&r, image)))?;
            Some(Holder {
                node: name.clone(),
                peer_id: inv.peer_id.clone(),
                reference: reference.clone(),
                id: entry.id.clone(),
            })
        })
        .collect();
    if !holders.is_empty() {
        // Every asker starts at a different holder, so that the load spreads.
        let start = spread(me, holders.len());
        holders.rotate_left(start);
        return Step::Fetch(holders);
    }
    // Alone: no live peer, whether or not its inventory has arrived (an empty engine's
    // inventory may never be sent).
    let alone = alive.iter().all(|n| n == me);
    if alone || now.saturating_duration_since(progress.began) >= WAIT_LIMIT {
        return Step::Pull;
    }
    let pullers: Vec<&str> = peers()
        .filter(|(_, inv)| {
            inv.pulling
                .iter()
                .any(|p| ImageRef::parse(p).is_ok_and(|r| same_tag(&r, image)))
        })
        .map(|(name, _)| name.as_str())
        .collect();
    match progress.announced {
        None if pullers.is_empty() && progress.may_pull => Step::Announce,
        // The pull fails at once, saying why.
        None if pullers.is_empty() => Step::Pull,
        None => Step::Wait,
        Some(at) if now.saturating_duration_since(at) < SETTLE => Step::Wait,
        Some(_) if pullers.iter().any(|p| *p < me) => Step::Wait,
        Some(_) => Step::Pull,
    }
}

/// Whether two references name the same repository and tag (the digest aside).
pub fn same_tag(a: &ImageRef, b: &ImageRef) -> bool {
    a.registry == b.registry
        && a.repository == b.repository
        && a.tag.as_deref().unwrap_or("latest") == b.tag.as_deref().unwrap_or("latest")
}

/// Where in a list of `n` holders node `me` starts.
fn spread(me: &str, n: usize) -> usize {
    let h = me.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    usize::try_from(h).unwrap_or(0) % n.max(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::type_complexity)]
mod tests {
    use super::*;
    use crate::observed::ImageEntry;

    fn inv(peer: &str, tags: &[&str], pulling: &[&str]) -> Inventory {
        Inventory {
            version: 1,
            peer_id: peer.into(),
            images: tags
                .iter()
                .map(|t| ImageEntry {
                    id: format!("sha256:{t}"),
                    repo_tags: vec![(*t).into()],
                    ..ImageEntry::default()
                })
                .collect(),
            pulling: pulling.iter().map(|p| (*p).into()).collect(),
            spread: Vec::new(),
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_string()).collect()
    }

    fn image(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn steps() {
        let t0 = Instant::now();
        let secs = |s| t0 + Duration::from_secs(s);
        let fresh = Progress {
            may_pull: true,
            began: t0,
            announced: None,
        };
        let barred = Progress {
            may_pull: false,
            ..fresh
        };
        let announced = |at| Progress {
            may_pull: true,
            began: t0,
            announced: Some(at),
        };
        let holding = BTreeMap::from([
            ("a".to_string(), inv("pa", &[], &[])),
            ("b".to_string(), inv("pb", &["nginx:1.27"], &[])),
            ("c".to_string(), inv("pc", &[], &[])),
        ]);
        let pulling_b = BTreeMap::from([
            ("a".to_string(), inv("pa", &[], &[])),
            (
                "b".to_string(),
                inv("pb", &[], &["docker.io/library/nginx:1.27"]),
            ),
            ("c".to_string(), inv("pc", &[], &[])),
        ]);
        let nobody = BTreeMap::from([
            ("a".to_string(), inv("pa", &[], &[])),
            ("b".to_string(), inv("pb", &[], &[])),
        ]);
        let no_inventories = BTreeMap::new();
        let nginx = image("docker.io/library/nginx:1.27");
        let all = set(&["a", "b", "c"]);
        let none = set(&[]);
        let a_and_c = set(&["a", "c"]);
        let only_a = set(&["a"]);
        let nginx_128 = image("nginx:1.28");
        let by_digest =
            image("nginx@sha256:0123456789012345678901234567890123456789012345678901234567890123");
        let cases: Vec<(
            &str,
            &ImageRef,
            &str,
            &BTreeMap<String, Inventory>,
            &BTreeSet<String>,
            BTreeSet<String>,
            Progress,
            Instant,
            Step,
        )> = vec![
            (
                "a peer holds it (its tag normalizes equal)",
                &nginx,
                "a",
                &holding,
                &all,
                none.clone(),
                fresh,
                t0,
                Step::Fetch(vec![Holder {
                    node: "b".into(),
                    peer_id: "pb".into(),
                    reference: "nginx:1.27".into(),
                    id: "sha256:nginx:1.27".into(),
                }]),
            ),
            (
                "the holder is dead",
                &nginx,
                "a",
                &holding,
                &a_and_c,
                none.clone(),
                fresh,
                t0,
                Step::Announce,
            ),
            (
                "the holder was tried",
                &nginx,
                "a",
                &holding,
                &all,
                set(&["b"]),
                fresh,
                t0,
                Step::Announce,
            ),
            (
                "another tag",
                &nginx_128,
                "a",
                &holding,
                &all,
                none.clone(),
                fresh,
                t0,
                Step::Announce,
            ),
            (
                "digests are pulled",
                &by_digest,
                "a",
                &holding,
                &all,
                none.clone(),
                fresh,
                t0,
                Step::Pull,
            ),
            (
                "alone",
                &nginx,
                "a",
                &nobody,
                &only_a,
                none.clone(),
                fresh,
                t0,
                Step::Pull,
            ),
            (
                "peers alive, no inventory known yet",
                &nginx,
                "a",
                &no_inventories,
                &all,
                none.clone(),
                fresh,
                t0,
                Step::Announce,
            ),
            (
                "a peer pulls: wait",
                &nginx,
                "c",
                &pulling_b,
                &all,
                none.clone(),
                fresh,
                t0,
                Step::Wait,
            ),
            (
                "barred from the registry, a peer holds it",
                &nginx,
                "a",
                &holding,
                &all,
                none.clone(),
                barred,
                t0,
                Step::Fetch(vec![Holder {
                    node: "b".into(),
                    peer_id: "pb".into(),
                    reference: "nginx:1.27".into(),
                    id: "sha256:nginx:1.27".into(),
                }]),
            ),
            (
                "barred from the registry, a peer pulls: wait",
                &nginx,
                "c",
                &pulling_b,
                &all,
                none.clone(),
                barred,
                t0,
                Step::Wait,
            ),
            (
                "barred from the registry, nobody has it: fail",
                &nginx,
                "a",
                &nobody,
                &all,
                none.clone(),
                barred,
                t0,
                Step::Pull,
            ),
            (
                "announced, settling",
                &nginx,
                "a",
                &nobody,
                &all,
                none.clone(),
                announced(t0),
                secs(0),
                Step::Wait,
            ),
            (
                "announced, settled, nobody else",
                &nginx,
                "a",
                &nobody,
                &all,
                none.clone(),
                announced(t0),
                secs(1),
                Step::Pull,
            ),
            (
                "announced with a smaller puller",
                &nginx,
                "c",
                &pulling_b,
                &all,
                none.clone(),
                announced(t0),
                secs(2),
                Step::Wait,
            ),
            (
                "announced with a larger puller",
                &nginx,
                "a",
                &pulling_b,
                &all,
                none.clone(),
                announced(t0),
                secs(2),
                Step::Pull,
            ),
            (
                "the puller died",
                &nginx,
                "c",
                &pulling_b,
                &a_and_c,
                none.clone(),
                announced(t0),
                secs(2),
                Step::Pull,
            ),
            (
                "waited too long",
                &nginx,
                "c",
                &pulling_b,
                &all,
                none.clone(),
                announced(t0),
                secs(600),
                Step::Pull,
            ),
        ];
        for (what, img, me, invs, alive, tried, progress, now, want) in cases {
            assert_eq!(
                next_step(img, None, me, invs, alive, &tried, progress, now),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn askers_spread_over_holders() {
        let invs = BTreeMap::from([
            ("a".to_string(), inv("pa", &["app:1"], &[])),
            ("b".to_string(), inv("pb", &["app:1"], &[])),
            ("c".to_string(), inv("pc", &["app:1"], &[])),
        ]);
        let alive = set(&["a", "b", "c", "d", "e", "f", "g"]);
        let firsts: BTreeSet<String> = ["d", "e", "f", "g", "h", "i"]
            .iter()
            .filter_map(|me| {
                let progress = Progress {
                    may_pull: true,
                    began: Instant::now(),
                    announced: None,
                };
                match next_step(
                    &image("app:1"),
                    None,
                    me,
                    &invs,
                    &alive,
                    &BTreeSet::new(),
                    progress,
                    Instant::now(),
                ) {
                    Step::Fetch(h) => Some(h[0].node.clone()),
                    _ => None,
                }
            })
            .collect();
        assert!(firsts.len() > 1, "{firsts:?}");
    }

    #[test]
    fn with_always_only_a_holder_at_the_registrys_digest_counts() {
        let d_new = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let d_old = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
        let holding_at = |d: &str| {
            let mut i = inv("pb", &["reg.lan/app:latest"], &[]);
            i.images[0].repo_digests = vec![format!("reg.lan/app@{d}")];
            i
        };
        let fresh = Progress {
            may_pull: true,
            began: Instant::now(),
            announced: None,
        };
        let alive = set(&["a", "b"]);
        let wanted = image("reg.lan/app");
        let at = |i: Inventory| BTreeMap::from([("b".to_string(), i)]);
        let now = Instant::now();
        let step = |invs: &BTreeMap<String, Inventory>, d: Option<&str>| {
            next_step(&wanted, d, "a", invs, &alive, &BTreeSet::new(), fresh, now)
        };
        assert!(matches!(
            step(&at(holding_at(d_new)), Some(d_new)),
            Step::Fetch(_)
        ));
        assert_eq!(
            step(&at(holding_at(d_old)), Some(d_new)),
            Step::Announce,
            "an old version"
        );
        assert_eq!(
            step(&at(inv("pb", &["reg.lan/app:latest"], &[])), Some(d_new)),
            Step::Announce,
            "a copy fetched from elsewhere keeps no digest"
        );
        assert!(
            matches!(step(&at(holding_at(d_old)), None), Step::Fetch(_)),
            "by tag"
        );
    }
}
