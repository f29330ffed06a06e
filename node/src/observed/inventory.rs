//! Image inventories: which images each node's engine holds, and which it is pulling now.
//!
//! A node's inventory changes rarely (a pull, a fetch, a push, a collection), so it never
//! rides in the node's record, which goes out every few beats: it is gossiped on its own
//! ([`super::Message::Images`]) when it changes and when a peer is admitted. The record
//! carries only the inventory's version ([`super::NodeRecord::images_version`]); a peer whose
//! copy is older (it missed a message) asks the owner for it again
//! ([`super::Message::WantImages`]). The image service reads the inventories to fetch an
//! image from a peer rather than from a registry, and to let one node pull an image from a
//! registry while the others wait for it ([`crate::images`]).
//!
//! Pure: [`merge`] decides whether an inventory from the wire replaces the one held.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One image in an engine.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageEntry {
    /// The content id, `sha256:...` (the digest of the image's config: equal ids are equal
    /// images, however they arrived).
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_digests: Vec<String>,
    /// Bytes, as the engine reports it.
    #[serde(default)]
    pub size: u64,
}

/// What the image service reports about this node's engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalImages {
    /// Sorted by id.
    pub images: Vec<ImageEntry>,
    /// References being pulled from a registry now, sorted.
    pub pulling: Vec<String>,
    /// References every other node should fetch now (`shoal image push --all`), sorted.
    pub spread: Vec<String>,
}

/// A node's inventory as gossiped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// The owner's record version when the inventory last changed: it only grows, across
    /// restarts too (see [`super::NodeRecord::version`]).
    pub version: u64,
    /// The owner's peer id: where to fetch from.
    pub peer_id: String,
    #[serde(default)]
    pub images: Vec<ImageEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pulling: Vec<String>,
    /// References the owner asks every node to fetch from it now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spread: Vec<String>,
}

/// Every node's inventory this process holds, by node name (its own included).
pub type Inventories = Arc<BTreeMap<String, Inventory>>;

/// Whether `incoming`, gossiped by node `name`, replaces `held`. An inventory must come from
/// the peer that holds the node's name now (`owner`, from the node's record, when known); a
/// newer version replaces an older one, and any version of a new peer id replaces that of an
/// old one (the name moved to another machine). Pure.
pub fn merge(held: Option<&Inventory>, incoming: &Inventory, owner: Option<&str>) -> bool {
    if incoming.peer_id.is_empty() {
        return false;
    }
    if owner.is_some_and(|o| !o.is_empty() && o != incoming.peer_id) {
        return false;
    }
    match held {
        None => true,
        Some(h) if h.peer_id != incoming.peer_id => true,
        Some(h) => incoming.version > h.version,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::type_complexity)]
mod tests {
    use super::*;

    fn inv(peer: &str, version: u64) -> Inventory {
        Inventory {
            version,
            peer_id: peer.into(),
            images: vec![ImageEntry {
                id: "sha256:aa".into(),
                repo_tags: vec!["team/echo:v1".into()],
                repo_digests: vec!["reg.lan/team/echo@sha256:bb".into()],
                size: 10,
            }],
            pulling: Vec::new(),
            spread: Vec::new(),
        }
    }

    #[test]
    fn merge_rules() {
        let cases: &[(Option<Inventory>, Inventory, Option<&str>, bool, &str)] = &[
            (None, inv("p1", 1), None, true, "first seen"),
            (None, inv("p1", 1), Some("p1"), true, "from the owner"),
            (
                None,
                inv("p2", 1),
                Some("p1"),
                false,
                "not from the name's peer",
            ),
            (None, inv("", 1), None, false, "no peer id"),
            (Some(inv("p1", 5)), inv("p1", 6), None, true, "newer"),
            (
                Some(inv("p1", 5)),
                inv("p1", 5),
                None,
                false,
                "same version",
            ),
            (Some(inv("p1", 5)), inv("p1", 4), None, false, "older"),
            (
                Some(inv("p1", 5)),
                inv("p2", 1),
                Some("p2"),
                true,
                "name moved",
            ),
        ];
        for (held, incoming, owner, want, what) in cases {
            assert_eq!(merge(held.as_ref(), incoming, *owner), *want, "{what}");
        }
    }
}
