//! `shoal-testnet`: local shoal nodes by hand. Cluster commands (up, down, kill, partition)
//! arrive with the cluster itself.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shoal_testnet::{Node, NodeOptions};

#[derive(Parser)]
#[command(
    name = "shoal-testnet",
    version,
    about = "Local shoal nodes for tests and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Starts one node in DIR in the foreground (on 127.0.0.1, a free port) and prints how to
    /// reach it; Ctrl-C stops it.
    Node {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "node-1")]
        name: String,
    },
    /// Benchmarks with real processes and the real engine.
    Bench {
        #[command(subcommand)]
        command: BenchCmd,
    },
    /// The test container image.
    Image {
        #[command(subcommand)]
        command: ImageCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Apply of a Deployment until every replica serves HTTP, against raw engine
    /// create + start of the same image until each serves.
    ApplyToServing {
        #[arg(long, default_value_t = 3)]
        replicas: u32,
        #[arg(long, default_value_t = 5)]
        runs: u32,
    },
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Builds `shoal-test/echo:latest` from this workspace's `shoal-echo`, loads it into the
    /// local Docker engine and prints its tag.
    Build,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Node { dir, name } => {
            let mut node = Node::start(NodeOptions::new(&name, &dir.join(&name)))
                .context("cannot start the node")?;
            println!("export SHOAL_NODE={}", node.url());
            println!("export SHOAL_TOKEN={}", node.token()?);
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            {
                let stop = stop.clone();
                ctrlc_like(move || stop.store(true, std::sync::atomic::Ordering::SeqCst));
            }
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
            }
            node.stop()?;
            Ok(())
        }
        Cmd::Bench {
            command: BenchCmd::ApplyToServing { replicas, runs },
        } => shoal_testnet::bench::apply_to_serving(replicas, runs),
        Cmd::Image {
            command: ImageCmd::Build,
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start an async runtime")?;
            let tag = runtime.block_on(shoal_testnet::image::build_echo_image())?;
            println!("{tag}");
            Ok(())
        }
    }
}

/// Runs `f` when stdin closes or a line is read: a portable stand-in for a signal handler that
/// needs no extra crate (Ctrl-C kills the whole process group anyway, and the node's Drop
/// kills the child).
fn ctrlc_like(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        f();
    });
}
