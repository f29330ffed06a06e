//! `shoal-sim`: runs seeds of the simulator.
//!
//! - `shoal-sim --seed N [--trace]`: one seed; `--trace` prints what happens as it happens.
//! - `shoal-sim --seeds COUNT [--from FIRST] [--threads T]`: many seeds, and the simulated
//!   seconds per wall second.

use std::process::ExitCode;
use std::time::Instant;

fn usage() -> ExitCode {
    eprintln!("usage: shoal-sim --seed N [--trace] | --seeds COUNT [--from FIRST] [--threads T]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| -> Option<u64> {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1)?.parse().ok()
    };
    let trace = args.iter().any(|a| a == "--trace");
    if trace {
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    if let Some(seed) = value("--seed") {
        return match shoal_sim::run_seed(seed, trace) {
            Ok(s) => {
                println!("{s:?}");
                ExitCode::SUCCESS
            }
            Err(f) => {
                eprintln!("{f}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(count) = value("--seeds") else {
        return usage();
    };
    let from = value("--from").unwrap_or(0);
    let threads = value("--threads").unwrap_or(2).max(1);
    let t0 = Instant::now();
    let report = shoal_sim::many(from, count, usize::try_from(threads).unwrap_or(1));
    let wall = t0.elapsed().as_secs_f64();
    println!(
        "{} seeds in {wall:.1}s wall: {:.0} simulated seconds, {:.0} simulated s per wall s",
        count,
        report.simulated.as_secs_f64(),
        report.simulated.as_secs_f64() / wall.max(1e-9)
    );
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for f in &report.failures {
            eprintln!("{f}\n");
        }
        eprintln!("{} of {count} seeds failed", report.failures.len());
        ExitCode::FAILURE
    }
}
