//! Kubernetes' back-off, shared by container restarts (`CrashLoopBackOff`) and image pulls
//! (`ImagePullBackOff`): 10 s after the first failure, doubling with each further one, at most
//! 5 min. Pure.

use std::time::Duration;

/// The delay after the first failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The longest delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The delay before the next attempt after `streak` consecutive failures: 0, 10 s, 20 s,
/// 40 s, ... up to 5 min.
pub fn backoff(streak: u32) -> Duration {
    if streak == 0 {
        return Duration::ZERO;
    }
    let factor = 1u64 << (streak - 1).min(16);
    BACKOFF_BASE
        .checked_mul(u32::try_from(factor).unwrap_or(u32::MAX))
        .unwrap_or(BACKOFF_MAX)
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_kubelets() {
        let secs: Vec<u64> = (0..8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
