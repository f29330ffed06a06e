//! The simulator's CI run: at least 1,000 seeds (`SHOAL_SIM_SEEDS` for more, `SHOAL_SIM_FROM`
//! for another range), every invariant of `shoal_sim::check` held in each. A failing seed
//! prints its trace and the command that replays it.

use std::time::Instant;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn every_invariant_holds_for_a_thousand_seeds() {
    let count = env_u64("SHOAL_SIM_SEEDS", 1000);
    let from = env_u64("SHOAL_SIM_FROM", 0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let t0 = Instant::now();
    let report = shoal_sim::many(from, count, threads);
    let wall = t0.elapsed().as_secs_f64();
    // Straight to stderr, past the test harness's capture: CI's log keeps the figure.
    let line = format!(
        "{count} seeds from {from} on {threads} threads in {wall:.1}s: {:.0} simulated s, {:.0} simulated s per wall s\n",
        report.simulated.as_secs_f64(),
        report.simulated.as_secs_f64() / wall.max(1e-9)
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    let failures: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert_eq!(report.passed, count);
}
