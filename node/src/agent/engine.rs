//! What the agent makes of a container engine that stops answering: when the engine counts
//! as unavailable ([`is_down`]), and how the node's `EngineUnavailable` condition carries the
//! time it began ([`condition_message`], [`split_since`]). Pure; the agent keeps an
//! [`EngineHealth`] across rounds.
//!
//! While the engine is unavailable nothing can be known about this node's containers: the
//! agent reports every pod of the node not Ready (`status::engine_unavailable`), so that DNS
//! and the proxies, which follow readiness, stop sending traffic here within a round or two,
//! and it sets the node condition, so that the controllers move its pods elsewhere after the
//! reschedule grace (`controllers::engine`). When the engine answers again the condition is
//! cleared and the next round stops the containers of slots no longer this node's, adopts the
//! rest and reconciles.

use std::time::Duration;

use tokio::time::Instant;

use crate::runtime::RuntimeError;

/// The node condition set while this node's container engine is unavailable.
pub const ENGINE_UNAVAILABLE: &str = "EngineUnavailable";

/// How long one listing of this node's containers may take before the engine counts as not
/// answering: well under the few seconds within which readiness must follow.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(4);

/// How long listings may fail with other errors (the engine answers, but with errors) before
/// the engine counts as unavailable: a single failure is retried next round without changing
/// any report.
pub const FAILING_FOR: Duration = Duration::from_secs(2);

/// Whether the engine counts as unavailable after a failed listing, given how long listings
/// have been failing. An engine that cannot be reached (no socket, connection refused, no
/// answer in time) is at once; other errors only once they have lasted [`FAILING_FOR`].
pub fn is_down(err: &RuntimeError, failing_for: Duration) -> bool {
    matches!(err, RuntimeError::Unavailable { .. }) || failing_for >= FAILING_FOR
}

/// What the engine failed with, for people, naming where it is (`endpoint`, its socket)
/// unless the error does.
pub fn describe(endpoint: &str, err: &RuntimeError) -> String {
    let text = err.to_string();
    if text.contains(endpoint) {
        text
    } else {
        format!("{endpoint}: {text}")
    }
}

/// The condition's message: `message`, then when the engine became unavailable (this node's
/// wall clock, RFC 3339), which the API shows as the condition's `lastTransitionTime`.
pub fn condition_message(message: &str, since: &str) -> String {
    format!("{message} (since {since})")
}

/// A node condition's message split into its text and the time it began, when it says one
/// (as [`condition_message`] writes it). Any other message is all text.
pub fn split_since(message: &str) -> (&str, Option<&str>) {
    message
        .strip_suffix(')')
        .and_then(|m| m.rsplit_once(" (since "))
        .filter(|(_, t)| shoal_protocol::time::parse_rfc3339(t).is_some())
        .map_or((message, None), |(m, t)| (m, Some(t)))
}

/// The engine's health as the agent saw it over the last rounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineHealth {
    /// Since when listings have been failing (None: the last one worked).
    pub failing_since: Option<Instant>,
    /// Set while the engine counts as unavailable.
    pub down: Option<Down>,
}

/// The engine counts as unavailable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    /// When it began (RFC 3339, this node's wall clock).
    pub since: String,
    /// The last error, for people.
    pub message: String,
}

/// What changed with a round's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    None,
    /// The engine became unavailable, or its message changed.
    Down,
    /// It answers again.
    Up,
}

impl EngineHealth {
    /// Records a failed listing at `now` (`wall`: the same time, RFC 3339).
    pub fn failed(
        &mut self,
        err: &RuntimeError,
        endpoint: &str,
        now: Instant,
        wall: &str,
    ) -> Change {
        let since = *self.failing_since.get_or_insert(now);
        if !is_down(err, now.saturating_duration_since(since)) {
            return Change::None;
        }
        let message = describe(endpoint, err);
        match &mut self.down {
            Some(d) if d.message == message => Change::None,
            Some(d) => {
                d.message = message;
                Change::Down
            }
            None => {
                self.down = Some(Down {
                    since: wall.to_string(),
                    message,
                });
                Change::Down
            }
        }
    }

    /// Records a listing that worked.
    pub fn answered(&mut self) -> Change {
        self.failing_since = None;
        match self.down.take() {
            Some(_) => Change::Up,
            None => Change::None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn unavailable() -> RuntimeError {
        RuntimeError::Unavailable {
            message: "cannot reach the Docker engine at unix:///run/d.sock (no such socket): \
                      is dockerd running?"
                .into(),
        }
    }

    fn other() -> RuntimeError {
        RuntimeError::Other {
            message: "boom (HTTP 500)".into(),
        }
    }

    #[test]
    fn down_at_once_when_unreachable_else_after_failing_for_a_while() {
        let s = Duration::from_secs;
        let table = [
            (unavailable(), s(0), true),
            (other(), s(0), false),
            (other(), s(1), false),
            (other(), FAILING_FOR, true),
            (RuntimeError::NotFound { id: "x".into() }, s(10), true),
        ];
        for (err, failing_for, down) in table {
            assert_eq!(is_down(&err, failing_for), down, "{err:?} {failing_for:?}");
        }
    }

    #[test]
    fn messages_name_the_socket_once() {
        assert_eq!(
            describe("unix:///run/d.sock", &unavailable()),
            unavailable().to_string()
        );
        assert_eq!(
            describe("unix:///run/d.sock", &other()),
            "unix:///run/d.sock: container engine: boom (HTTP 500)"
        );
    }

    #[test]
    fn the_condition_message_carries_its_start() {
        let m = condition_message("engine (gone)", "2026-12-07T14:40:00Z");
        assert_eq!(m, "engine (gone) (since 2026-12-07T14:40:00Z)");
        assert_eq!(
            split_since(&m),
            ("engine (gone)", Some("2026-12-07T14:40:00Z"))
        );
        for plain in [
            "a task failed",
            "x (since yesterday)",
            "",
            "(since 2026-12-07T14:40:00Z",
        ] {
            assert_eq!(split_since(plain), (plain, None), "{plain}");
        }
    }

    #[test]
    fn health_goes_down_and_up() {
        let t0 = Instant::now();
        let ep = "unix:///run/d.sock";
        let mut h = EngineHealth::default();
        assert_eq!(h.failed(&other(), ep, t0, "T0"), Change::None);
        assert_eq!(h.failed(&other(), ep, t0 + FAILING_FOR, "T2"), Change::Down);
        assert_eq!(h.down.as_ref().unwrap().since, "T2");
        // The same message again is no change; another one is, with the same start.
        assert_eq!(
            h.failed(&other(), ep, t0 + FAILING_FOR * 2, "T4"),
            Change::None
        );
        assert_eq!(
            h.failed(&unavailable(), ep, t0 + FAILING_FOR * 3, "T6"),
            Change::Down
        );
        assert_eq!(h.down.as_ref().unwrap().since, "T2");
        assert_eq!(h.answered(), Change::Up);
        assert_eq!(h, EngineHealth::default());
        assert_eq!(h.answered(), Change::None);
        assert_eq!(h.failed(&unavailable(), ep, t0, "T9"), Change::Down);
    }
}
