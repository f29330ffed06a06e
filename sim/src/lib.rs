//! `shoal-sim`: shoal's control plane under a simulator. N nodes (3 to 7) run in one process,
//! on a current-thread runtime in paused (virtual) time, each with the real state store on its
//! own directory, real replication and membership over a simulated network, and production's
//! control plane ([`shoal_node::plane`]) on the simulated container engine. A seed decides the
//! schedule ([`plan`]): partitions, lossy, slow, duplicating and reordering links, power cuts
//! (with torn logs) and restarts (with clocks set back), engines that stop or hang, and
//! concurrent applies of one object on different nodes. The invariants of [`check`] are
//! checked as it runs.
//!
//! A failing seed prints its trace and the command that replays it:
//! `cargo run -p shoal-sim -- --seed N --trace`. The schedule and every network decision come
//! from the seed; the interleaving of tasks within one instant of virtual time is tokio's, so a
//! replay follows the same schedule but may interleave differently (see `docs/simulator.md`).
//!
//! The product never depends on this crate.

pub mod check;
pub mod net;
pub mod node;
pub mod plan;
pub mod rng;
pub mod world;

pub use world::{Failure, Summary, run_plan_now, run_seed};

/// What a batch of seeds did.
#[derive(Debug, Default)]
pub struct Report {
    /// The simulated time of every passing seed, summed.
    pub simulated: std::time::Duration,
    pub passed: u64,
    pub failures: Vec<Failure>,
}

/// Runs seeds `from..from + count` on `threads` threads (each seed on its own runtime).
pub fn many(from: u64, count: u64, threads: usize) -> Report {
    let next = std::sync::atomic::AtomicU64::new(from);
    let end = from + count;
    let report = std::sync::Mutex::new(Report::default());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    let result = run_seed(seed, false);
                    let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                    match result {
                        Ok(s) => {
                            r.simulated += s.simulated;
                            r.passed += 1;
                        }
                        Err(f) => r.failures.push(f),
                    }
                }
            });
        }
    });
    let mut r = report.into_inner().unwrap_or_else(|e| e.into_inner());
    r.failures.sort_by_key(|f| f.seed);
    r
}
