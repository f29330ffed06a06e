//! Image garbage collection, as kubelet's: which pulled images to remove. Pure.
//!
//! When the filesystem holding the engine's images is fuller than the high threshold, images
//! that this node pulled and that no container uses are removed, least recently used first,
//! until the use would fall under the low threshold. An image is never removed while any
//! container of the engine (shoal's or not) uses it, nor within `min_age` of its last use, and
//! images shoal did not pull are never touched.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use crate::runtime::FsUsage;

/// When to collect, as kubelet's `imageGCHighThresholdPercent`, `imageGCLowThresholdPercent`
/// and `imageMinimumGCAge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcPolicy {
    pub high_percent: u8,
    pub low_percent: u8,
    pub min_age: Duration,
}

impl Default for GcPolicy {
    fn default() -> GcPolicy {
        GcPolicy {
            high_percent: 85,
            low_percent: 80,
            min_age: Duration::from_secs(120),
        }
    }
}

/// An image this node pulled, as the engine holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The reference it was pulled by.
    pub image: String,
    /// Its content id.
    pub id: String,
    pub size: u64,
    pub last_used: Instant,
}

/// The references to remove, in order.
pub fn plan(
    fs: FsUsage,
    policy: GcPolicy,
    mut candidates: Vec<Candidate>,
    in_use: &BTreeSet<String>,
    now: Instant,
) -> Vec<String> {
    if fs.capacity == 0 || fs.percent() < u64::from(policy.high_percent) {
        return Vec::new();
    }
    let target = fs.capacity / 100 * u64::from(policy.low_percent);
    let mut to_free = fs.used.saturating_sub(target);
    candidates.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.image.cmp(&b.image)));
    let mut out = Vec::new();
    // Two references of one id free its bytes once.
    let mut freed_ids = BTreeSet::new();
    for c in candidates {
        if to_free == 0 {
            break;
        }
        if in_use.contains(&c.id) || now.saturating_duration_since(c.last_used) < policy.min_age {
            continue;
        }
        if freed_ids.insert(c.id.clone()) {
            to_free = to_free.saturating_sub(c.size);
        }
        out.push(c.image);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn removes_the_least_recently_used_unused_images_until_under_the_low_threshold() {
        let now = Instant::now() + Duration::from_secs(3600);
        let ago = |m: u64| now - Duration::from_secs(m * 60);
        let c = |image: &str, id: &str, size: u64, used: Instant| Candidate {
            image: image.into(),
            id: id.into(),
            size,
            last_used: used,
        };
        let gb = 1u64 << 30;
        let candidates = vec![
            c("a", "sha256:a", 3 * gb, ago(50)),
            c("b", "sha256:b", 3 * gb, ago(40)),
            c("c", "sha256:c", 3 * gb, ago(30)),
            c("in-use", "sha256:u", 9 * gb, ago(60)),
            c("young", "sha256:y", 9 * gb, ago(1)),
        ];
        let in_use: BTreeSet<String> = ["sha256:u".to_string()].into();
        let policy = GcPolicy::default();
        let fs = |used_gb: u64| FsUsage {
            capacity: 100 * gb,
            used: used_gb * gb,
        };
        let cases: &[(&str, u64, &[&str])] = &[
            ("under the high threshold", 84, &[]),
            ("at it: down to 80", 85, &["a", "b"]),
            ("far over: every unused old one", 95, &["a", "b", "c"]),
        ];
        for (name, used, want) in cases {
            let got = plan(fs(*used), policy, candidates.clone(), &in_use, now);
            assert_eq!(got, *want, "{name}");
        }
        // Two names of one image free it once.
        let twins = vec![
            c("x:1", "sha256:x", 2 * gb, ago(10)),
            c("x:2", "sha256:x", 2 * gb, ago(9)),
            c("z", "sha256:z", 2 * gb, ago(8)),
        ];
        let got = plan(
            fs(83),
            GcPolicy {
                high_percent: 82,
                ..policy
            },
            twins,
            &BTreeSet::new(),
            now,
        );
        assert_eq!(got, ["x:1", "x:2", "z"]);
        assert!(plan(FsUsage::default(), policy, candidates, &in_use, now).is_empty());
    }
}
