//! The boot rule: when a node that has just started may start containers.
//!
//! A host that was off while its pods moved away (a power cut: its containers exited and stay
//! so, shoal sets no restart policy) boots with the desired state it persisted, which still
//! assigns it those pods until it hears from a peer. Starting them from that stale state
//! would bring them back, for a moment, next to their replacements. So after `shoald` starts,
//! the agent stops the containers of slots that are not its own (that needs no news), and it
//! starts (creates or restarts) none until one of:
//! - its desired state has been brought up to date with a peer (an anti-entropy round that
//!   went quiet, see `replication`): from then on it plans from current state;
//! - it knows of no other node (a cluster of one): there is nobody to hear from;
//! - `wait` has passed (the dead timeout plus a margin) without any peer answering: it goes on
//!   alone. Then Deployments' (and bare) pods may start, StatefulSet pods only while this node
//!   sees a majority of the known nodes alive, as the fencing rule wants (`plan.rs`,
//!   "StatefulSets: at most one copy"): the majority may have moved them.
//!
//! Once allowed, always allowed for this process: the rule is about booting. StatefulSet pods
//! are further held by the fence and its hold-off, as at any time.
//!
//! A whole cluster that boots at once comes back: its nodes sync with each other within a
//! round of anti-entropy, so each plans from the same (merged) state, where each slot has
//! one node, and no StatefulSet ordinal starts on two nodes.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::nodes::Quorum;

/// What the boot rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootInputs {
    /// How long ago the agent started.
    pub uptime: Duration,
    /// How long it waits for a peer before it goes on alone.
    pub wait: Duration,
    /// Whether its desired state has been brought up to date with a peer since it started.
    pub synced: bool,
    /// The known nodes and how many it hears alive; None until counted.
    pub quorum: Option<Quorum>,
}

/// What may start now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MayStart {
    /// Pods of Deployments (ReplicaSets) and bare pods.
    pub pods: bool,
    /// StatefulSet pods (then still subject to the fence).
    pub stateful: bool,
}

impl MayStart {
    pub const ALL: MayStart = MayStart {
        pods: true,
        stateful: true,
    };

    /// Whether a pod of a slot owned by `owner_kind` may start.
    pub fn allows(self, owner_kind: &str) -> bool {
        if super::plan::is_stateful(owner_kind) {
            self.stateful
        } else {
            self.pods
        }
    }
}

/// The boot rule (see the module documentation). Pure.
pub fn may_start(b: &BootInputs) -> MayStart {
    if b.synced {
        return MayStart::ALL;
    }
    // A cluster of one hears from nobody, and is its own majority.
    if b.quorum.is_some_and(|q| q.known == 1) {
        return MayStart::ALL;
    }
    if b.uptime < b.wait {
        return MayStart::default();
    }
    MayStart {
        pods: true,
        stateful: b.quorum.is_some_and(|q| q.sees_majority()),
    }
}

/// The margin over the dead timeout that a booting node waits for a peer before it goes on
/// alone: time for its peers to be dialled and admitted and for one sync round.
pub const BOOT_MARGIN: Duration = Duration::from_secs(5);

/// The agent's side of the boot rule: its inputs, and what it has allowed so far.
#[derive(Debug)]
pub struct Boot {
    /// Fed by replication: true once the desired state has been synced with a peer.
    pub synced: watch::Receiver<bool>,
    /// How long to wait for a peer: the dead timeout plus [`BOOT_MARGIN`].
    pub wait: Duration,
    started: Instant,
    allowed: MayStart,
}

impl Boot {
    /// The rule from now on, with `synced` from replication and `wait` for a peer.
    pub fn new(synced: watch::Receiver<bool>, wait: Duration) -> Boot {
        Boot {
            synced,
            wait,
            started: Instant::now(),
            allowed: MayStart::default(),
        }
    }

    /// What may start at `now`, given the quorum if counted; logs when that widens.
    pub fn check(&mut self, now: Instant, quorum: Option<Quorum>) -> MayStart {
        if self.allowed == MayStart::ALL {
            return self.allowed;
        }
        let inputs = BootInputs {
            uptime: now.saturating_duration_since(self.started),
            wait: self.wait,
            synced: *self.synced.borrow(),
            quorum,
        };
        let may = may_start(&inputs);
        let widened = MayStart {
            pods: self.allowed.pods || may.pods,
            stateful: self.allowed.stateful || may.stateful,
        };
        if widened != self.allowed {
            if inputs.synced {
                tracing::info!("desired state synced with a peer: pods may start");
            } else if inputs.quorum.is_some_and(|q| q.known == 1) {
                tracing::info!("no other node is known: pods may start");
            } else {
                tracing::warn!(waited = ?self.wait, stateful = widened.stateful,
                    "no peer synced the desired state in time: going on alone (StatefulSet \
                     pods only with a majority)");
            }
            self.allowed = widened;
        }
        self.allowed
    }

    /// Why a pod of a slot owned by `owner_kind` may not start yet, or None.
    pub fn held(&self, owner_kind: &str) -> Option<String> {
        if self.allowed.allows(owner_kind) {
            return None;
        }
        Some(if self.allowed.pods {
            "no peer has brought this node's desired state up to date and no majority of the \
             nodes is heard: StatefulSet pods wait"
                .to_string()
        } else {
            "this node has just started: its pods wait until its desired state is brought up \
             to date with a peer (the pods may have moved while it was away)"
                .to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn q(known: usize, alive: usize) -> Option<Quorum> {
        Some(Quorum {
            known,
            alive,
            heard: alive,
        })
    }

    #[test]
    fn the_boot_rule() {
        let wait = Duration::from_secs(8);
        let s = Duration::from_secs;
        let none = MayStart::default();
        let pods = MayStart {
            pods: true,
            stateful: false,
        };
        let all = MayStart::ALL;
        // (uptime, synced, quorum) → may start
        let table = [
            // Synced with a peer: everything, at once.
            (s(0), true, None, all),
            (s(1), true, q(3, 1), all),
            // Alone in the cluster: nobody to wait for.
            (s(0), false, q(1, 1), all),
            // Waiting for a peer: nothing, even with a majority heard (its state may be stale).
            (s(0), false, None, none),
            (s(7), false, q(3, 1), none),
            (s(7), false, q(3, 3), none),
            // No peer answered in time: pods alone, StatefulSet pods only with a majority.
            (s(8), false, q(3, 1), pods),
            (s(8), false, q(2, 1), pods),
            (s(9), false, q(3, 2), all),
            (s(9), false, None, pods),
        ];
        for (uptime, synced, quorum, want) in table {
            let b = BootInputs {
                uptime,
                wait,
                synced,
                quorum,
            };
            assert_eq!(may_start(&b), want, "{b:?}");
        }
    }

    #[test]
    fn allows_by_owner_kind() {
        let pods = MayStart {
            pods: true,
            stateful: false,
        };
        assert!(pods.allows("ReplicaSet"));
        assert!(pods.allows("Pod"));
        assert!(!pods.allows("StatefulSet"));
        assert!(!MayStart::default().allows("ReplicaSet"));
        assert!(MayStart::ALL.allows("StatefulSet"));
    }

    #[tokio::test(start_paused = true)]
    async fn once_allowed_always_allowed() {
        let (tx, rx) = watch::channel(false);
        let mut b = Boot::new(rx, Duration::from_secs(8));
        let t0 = Instant::now();
        assert_eq!(b.check(t0, q(3, 1)), MayStart::default());
        assert!(b.held("ReplicaSet").unwrap().contains("just started"));
        let later = t0 + Duration::from_secs(8);
        assert!(b.check(later, q(3, 1)).pods);
        assert!(b.held("StatefulSet").unwrap().contains("majority"));
        assert_eq!(b.held("ReplicaSet"), None);
        tx.send(true).unwrap();
        assert_eq!(b.check(later, q(3, 1)), MayStart::ALL);
        // A lost majority later is the fence's business, not the boot rule's.
        tx.send(false).unwrap();
        assert_eq!(b.check(later, q(3, 0)), MayStart::ALL);
        assert_eq!(b.held("StatefulSet"), None);
    }
}
