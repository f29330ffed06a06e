//! When to pull an image, and what a failed pull means. Pure.
//!
//! Kubernetes' `imagePullPolicy`:
//! - `Never`: the image must be on the node.
//! - `IfNotPresent`: pull only when it is not.
//! - `Always`: every container made asks its registry again; a pull that started after the
//!   container was first wanted answers for it (Docker downloads only layers it lacks, so an
//!   unchanged image costs a manifest request). When the registry cannot be reached at all and
//!   the image is on the node, the local copy is used and the pod's events say so: a home lab
//!   whose uplink is down keeps running what it has. So does a node that may not pull from
//!   that registry (setting `allowed-registries`). A registry that answers with a refusal
//!   (not found, unauthorized) fails the pull as kubelet does.
//!
//! One record per image (and credentials) on a node: pods of one image share its pull and its
//! back-off (kubelet's: 10 s doubling to 5 min).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use shoal_protocol::kinds::PullPolicy;
use tokio::time::Instant;

use super::reference::ImageRef;

/// How long the image service waits after a failure before pulling again: the same back-off
/// as container restarts.
pub use crate::backoff::backoff;

/// Why a pull failed, as a person would want it named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The registry has no such repository, tag or digest.
    NotFound,
    /// The registry wants credentials, or refused the ones given.
    Unauthorized,
    /// The registry could not be reached (refused, no route, no such host, timed out).
    Unreachable,
    /// This node may not pull from that registry (setting `allowed-registries`).
    NotAllowed,
    /// The image reference cannot be read.
    BadReference,
    Other,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::NotFound => "not found",
            FailureKind::Unauthorized => "unauthorized",
            FailureKind::Unreachable => "registry unreachable",
            FailureKind::NotAllowed => "registry not allowed",
            FailureKind::BadReference => "invalid image reference",
            FailureKind::Other => "pull failed",
        })
    }
}

/// Sorts an engine's pull error by its words (Docker gives no codes for these).
pub fn classify(message: &str) -> FailureKind {
    let m = message.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if any(&[
        "unauthorized",
        "no basic auth credentials",
        "authentication required",
        "access denied",
        "denied: ",
        "incorrect username or password",
    ]) {
        FailureKind::Unauthorized
    } else if any(&[
        "manifest unknown",
        "not found",
        "name unknown",
        "does not exist",
    ]) {
        FailureKind::NotFound
    } else if any(&[
        "connection refused",
        "no such host",
        "no route to host",
        "network is unreachable",
        "i/o timeout",
        "dial tcp",
        "tls handshake timeout",
        "context deadline exceeded",
        "server gave http response to https client",
        "temporary failure in name resolution",
    ]) {
        FailureKind::Unreachable
    } else {
        FailureKind::Other
    }
}

/// A pull that worked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub started: Instant,
    pub took: Duration,
    /// The image's size as the engine reports it.
    pub size: u64,
    /// The node it was fetched from; `None`: its registry.
    pub from: Option<String>,
}

/// The last pull that failed, and until when no other is tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Failures in a row.
    pub failures: u32,
    pub started: Instant,
    pub retry_at: Instant,
    pub kind: FailureKind,
    /// Says what was pulled, from where, and what the registry or the engine said.
    pub message: String,
}

/// What a node knows about pulling one image with one set of credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// When the pull under way started.
    pub in_flight: Option<Instant>,
    pub last_ok: Option<Pulled>,
    pub failure: Option<Failure>,
}

impl Record {
    /// Records the end of the pull in flight.
    pub fn finish(&mut self, result: Result<Pulled, (FailureKind, String)>, now: Instant) {
        let started = self.in_flight.take().unwrap_or(now);
        match result {
            Ok(p) => {
                self.last_ok = Some(p);
                self.failure = None;
            }
            Err((kind, message)) => {
                let failures = self
                    .failure
                    .as_ref()
                    .map_or(0, |f| f.failures)
                    .saturating_add(1);
                self.failure = Some(Failure {
                    failures,
                    started,
                    retry_at: now + backoff(failures),
                    kind,
                    message,
                });
            }
        }
    }
}

/// What to do about a container's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Make the container with the image on the node. `pulled`: the pull that brought it
    /// for this container, if one did. `stale`: why the registry was not asked after all.
    Use {
        pulled: Option<Pulled>,
        stale: Option<String>,
    },
    /// A pull is under way; ask again when it ends.
    Wait,
    /// Start a pull now (the caller then waits).
    Start,
    /// The last pull failed and its back-off has not run out.
    Failed(Failure),
    /// `Never`, and the image is not on the node.
    NeverPull,
}

/// The decision for one container whose image is `present` (or not) on the node, first
/// wanted at `since`.
pub fn decide(
    policy: PullPolicy,
    present: bool,
    since: Instant,
    record: Option<&Record>,
    now: Instant,
) -> Verdict {
    let fresh = record
        .and_then(|r| r.last_ok.clone())
        .filter(|p| p.started >= since);
    match policy {
        PullPolicy::Never if present => {
            return Verdict::Use {
                pulled: None,
                stale: None,
            };
        }
        PullPolicy::Never => return Verdict::NeverPull,
        PullPolicy::IfNotPresent if present => {
            return Verdict::Use {
                pulled: fresh,
                stale: None,
            };
        }
        PullPolicy::Always if present && fresh.is_some() => {
            return Verdict::Use {
                pulled: fresh,
                stale: None,
            };
        }
        _ => {}
    }
    let Some(record) = record else {
        return Verdict::Start;
    };
    if record.in_flight.is_some() {
        return Verdict::Wait;
    }
    match &record.failure {
        Some(f) if now < f.retry_at => {
            if present && matches!(f.kind, FailureKind::Unreachable | FailureKind::NotAllowed) {
                Verdict::Use {
                    pulled: None,
                    stale: Some(f.message.clone()),
                }
            } else {
                Verdict::Failed(f.clone())
            }
        }
        _ => Verdict::Start,
    }
}

/// Which registries a node may pull from (setting `allowed-registries`): `None` is any.
/// An entry is a host (any port), `host:port`, a `*.` suffix pattern, or an IP network in
/// CIDR form (`127.0.0.0/8`), matched against the image's registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed(pub Option<Vec<String>>);

impl Allowed {
    pub fn permits(&self, registry: &str) -> bool {
        let Some(list) = &self.0 else {
            return true;
        };
        let registry = registry.to_ascii_lowercase();
        let (host, _) = split_host_port(&registry);
        list.iter().any(|entry| {
            let entry = entry.trim().to_ascii_lowercase();
            if entry == registry || entry == host {
                return true;
            }
            if let Some(suffix) = entry.strip_prefix("*.") {
                return host.ends_with(&format!(".{suffix}"));
            }
            match (entry.split_once('/'), host.parse::<IpAddr>()) {
                (Some((net, bits)), Ok(ip)) => in_network(ip, net, bits),
                _ => false,
            }
        })
    }

    /// Checks the entries, naming a bad one.
    pub fn validate(&self) -> Result<(), String> {
        for entry in self.0.iter().flatten() {
            if let Some((net, bits)) = entry.split_once('/') {
                let ok = match net.parse::<IpAddr>() {
                    Ok(IpAddr::V4(_)) => bits.parse::<u8>().is_ok_and(|b| b <= 32),
                    Ok(IpAddr::V6(_)) => bits.parse::<u8>().is_ok_and(|b| b <= 128),
                    Err(_) => false,
                };
                if !ok {
                    return Err(format!(
                        "{entry:?} is not a host, host:port, *.domain or an IP network such as 127.0.0.0/8"
                    ));
                }
            } else if entry.trim().is_empty() {
                return Err("an entry is empty".into());
            }
        }
        Ok(())
    }
}

fn split_host_port(registry: &str) -> (&str, Option<&str>) {
    match registry.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => (h, Some(p)),
        _ => (registry, None),
    }
}

fn in_network(ip: IpAddr, net: &str, bits: &str) -> bool {
    let Ok(bits) = bits.parse::<u32>() else {
        return false;
    };
    match (ip, net.parse::<IpAddr>()) {
        (IpAddr::V4(ip), Ok(IpAddr::V4(net))) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), Ok(IpAddr::V6(net))) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// The message of a failed pull: what, from where, why, and the engine's own words.
pub fn failure_message(image: &ImageRef, kind: FailureKind, engine_said: &str) -> String {
    let hint = match kind {
        FailureKind::Unauthorized => {
            " (give the pod imagePullSecrets naming a Secret made with `shoal create secret docker-registry`)"
        }
        _ => "",
    };
    format!(
        "failed to pull image \"{image}\" from registry {}: {kind}{hint}: {engine_said}",
        image.registry
    )
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_are_sorted() {
        let cases = [
            (
                "manifest for 127.0.0.1:5000/team/echo:v9 not found: manifest unknown: manifest unknown (HTTP 404)",
                FailureKind::NotFound,
            ),
            (
                "Head \"http://127.0.0.1:5000/v2/team/echo/manifests/v1\": no basic auth credentials",
                FailureKind::Unauthorized,
            ),
            (
                "pull access denied for x, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
                FailureKind::Unauthorized,
            ),
            (
                "Get \"https://127.0.0.1:5999/v2/\": dial tcp 127.0.0.1:5999: connect: connection refused",
                FailureKind::Unreachable,
            ),
            (
                "Get \"https://reg.lan/v2/\": dial tcp: lookup reg.lan: no such host",
                FailureKind::Unreachable,
            ),
            ("something else", FailureKind::Other),
        ];
        for (message, want) in cases {
            assert_eq!(classify(message), want, "{message}");
        }
    }

    fn at(base: Instant, secs: u64) -> Instant {
        base + Duration::from_secs(secs)
    }

    #[test]
    fn decisions_follow_the_policy() {
        let t0 = Instant::now();
        let ok_at = |s| Record {
            last_ok: Some(Pulled {
                started: at(t0, s),
                took: Duration::from_secs(1),
                size: 1,
                from: None,
            }),
            ..Record::default()
        };
        let failed = |kind| Record {
            failure: Some(Failure {
                failures: 1,
                started: t0,
                retry_at: at(t0, 10),
                kind,
                message: "m".into(),
            }),
            ..Record::default()
        };
        let flying = Record {
            in_flight: Some(t0),
            ..Record::default()
        };
        let use_ = |pulled: bool| Verdict::Use {
            pulled: pulled.then_some(Pulled {
                started: at(t0, 5),
                took: Duration::from_secs(1),
                size: 1,
                from: None,
            }),
            stale: None,
        };
        use PullPolicy::*;
        let cases: Vec<(&str, PullPolicy, bool, u64, Option<Record>, u64, Verdict)> = vec![
            ("never, present", Never, true, 0, None, 0, use_(false)),
            (
                "never, absent",
                Never,
                false,
                0,
                None,
                0,
                Verdict::NeverPull,
            ),
            (
                "if-not-present, present",
                IfNotPresent,
                true,
                0,
                None,
                0,
                use_(false),
            ),
            (
                "if-not-present, absent",
                IfNotPresent,
                false,
                0,
                None,
                0,
                Verdict::Start,
            ),
            (
                "pulled for it",
                IfNotPresent,
                true,
                1,
                Some(ok_at(5)),
                6,
                use_(true),
            ),
            (
                "always, never pulled",
                Always,
                true,
                0,
                None,
                0,
                Verdict::Start,
            ),
            (
                "always, pulled before it was wanted",
                Always,
                true,
                6,
                Some(ok_at(5)),
                7,
                Verdict::Start,
            ),
            (
                "always, pulled since",
                Always,
                true,
                5,
                Some(ok_at(5)),
                7,
                use_(true),
            ),
            (
                "a pull in flight",
                Always,
                true,
                1,
                Some(flying.clone()),
                2,
                Verdict::Wait,
            ),
            (
                "absent, in flight",
                IfNotPresent,
                false,
                1,
                Some(flying),
                2,
                Verdict::Wait,
            ),
            (
                "backing off",
                IfNotPresent,
                false,
                0,
                Some(failed(FailureKind::NotFound)),
                5,
                Verdict::Failed(failed(FailureKind::NotFound).failure.unwrap()),
            ),
            (
                "back-off over",
                IfNotPresent,
                false,
                0,
                Some(failed(FailureKind::NotFound)),
                10,
                Verdict::Start,
            ),
            (
                "unreachable, image on the node",
                Always,
                true,
                0,
                Some(failed(FailureKind::Unreachable)),
                5,
                Verdict::Use {
                    pulled: None,
                    stale: Some("m".into()),
                },
            ),
            (
                "not allowed, image on the node",
                Always,
                true,
                0,
                Some(failed(FailureKind::NotAllowed)),
                5,
                Verdict::Use {
                    pulled: None,
                    stale: Some("m".into()),
                },
            ),
            (
                "unauthorized, image on the node",
                Always,
                true,
                0,
                Some(failed(FailureKind::Unauthorized)),
                5,
                Verdict::Failed(failed(FailureKind::Unauthorized).failure.unwrap()),
            ),
        ];
        for (name, policy, present, since, record, now, want) in cases {
            let got = decide(policy, present, at(t0, since), record.as_ref(), at(t0, now));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_record_counts_failures_in_a_row_and_forgets_them_on_success() {
        let t0 = Instant::now();
        let mut r = Record {
            in_flight: Some(t0),
            ..Record::default()
        };
        r.finish(Err((FailureKind::NotFound, "a".into())), at(t0, 1));
        r.in_flight = Some(at(t0, 20));
        r.finish(Err((FailureKind::NotFound, "b".into())), at(t0, 21));
        let f = r.failure.clone().unwrap();
        assert_eq!(
            (f.failures, f.started, f.retry_at),
            (2, at(t0, 20), at(t0, 41))
        );
        r.in_flight = Some(at(t0, 50));
        let p = Pulled {
            started: at(t0, 50),
            took: Duration::from_secs(2),
            size: 9,
            from: None,
        };
        r.finish(Ok(p.clone()), at(t0, 52));
        assert_eq!((r.failure, r.last_ok, r.in_flight), (None, Some(p), None));
    }

    #[test]
    fn allowed_registries() {
        let allowed = Allowed(Some(vec![
            "127.0.0.0/8".into(),
            "reg.lan".into(),
            "other.lan:5000".into(),
            "*.home".into(),
        ]));
        let cases = [
            ("127.0.0.1:5000", true),
            ("127.9.9.9", true),
            ("10.0.0.1:5000", false),
            ("reg.lan:443", true),
            ("other.lan:5000", true),
            ("other.lan:5001", false),
            ("pi.home", true),
            ("home", false),
            ("docker.io", false),
        ];
        for (registry, want) in cases {
            assert_eq!(allowed.permits(registry), want, "{registry}");
        }
        assert!(Allowed(None).permits("docker.io"));
        assert!(!Allowed(Some(vec![])).permits("docker.io"));
        assert!(
            Allowed(Some(vec!["10.0.0.0/33".into()]))
                .validate()
                .is_err()
        );
        assert!(Allowed(Some(vec!["x/y".into()])).validate().is_err());
        assert!(allowed.validate().is_ok());
    }
}
