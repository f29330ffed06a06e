//! `shoal-testnet`: local shoal clusters by hand. `up` leaves its nodes running detached and
//! describes them in `DIR/cluster.json`; the other cluster commands read that file, so each
//! runs as its own process. See docs/testnet.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shoal_testnet::{Cluster, HostOptions, Node, NodeOptions};

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
    /// Starts a cluster of N nodes in DIR, each on its own loopback address (127.A.B.k),
    /// waits until every node sees every member alive, writes DIR/cluster.json and exits,
    /// leaving the nodes running (their logs: DIR/<node>/shoald.log).
    ///
    /// With --hosts N, each node is a test host instead: its own network namespace on a LAN
    /// bridge (10.213.B.0/24), its own Docker engine and its own shoald with a config file
    /// (needs root; see docs/testnet.md).
    Up {
        /// Nodes on loopback addresses, sharing this machine's engine [default: 3].
        #[arg(long, conflicts_with = "hosts")]
        nodes: Option<usize>,
        /// Hosts, each with its own network namespace and engine.
        #[arg(long)]
        hosts: Option<usize>,
        /// Hosts only: load the test image only into these hosts' engines (comma-separated
        /// host names) [default: every host].
        #[arg(long, value_delimiter = ',', requires = "hosts")]
        image_on: Option<Vec<String>>,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Hosts: pulls HOST's plug: its link goes down (it falls silent), then every process of
    /// the host (shoald, engine, containers) gets SIGKILL.
    PowerOff {
        host: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Hosts: powers HOST on: link up, engine, then shoald with its config file.
    Boot {
        host: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Hosts: adds a host to the running testnet; it joins the cluster (a partition in force
    /// that names it applies as it joins).
    AddHost {
        /// The node's name in the cluster [default: the host's name]; may repeat another's.
        #[arg(long)]
        node_name: Option<String>,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Hosts: HOST's link down; it runs on, cut off.
    Unplug {
        host: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Hosts: HOST's link up again.
    Plug {
        host: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Hosts: stops HOST's Docker engine (SIGTERM) while its shoald runs.
    EngineStop {
        host: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Hosts: starts HOST's Docker engine again.
    EngineStart {
        host: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Hosts: runs a command inside HOST as a LAN client there (curl, dig), with the host's
    /// own DNS server as its resolver; exits with the command's code.
    Exec {
        host: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Hosts: copies IMAGE from this machine's engine into HOST's.
    LoadImage {
        host: String,
        image: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Removes what killed runs left of testnets of hosts (namespaces, engines, bridges,
    /// routes): those whose owner process is gone, and with --all also those of the command
    /// line (every `up --hosts` not taken down).
    Cleanup {
        #[arg(long)]
        all: bool,
    },
    /// Stops every node of DIR's cluster (SIGTERM), removes its partition and the containers
    /// and pod networks its nodes left in Docker. Data directories stay.
    Down {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Kills NODE with SIGKILL, as a crash would.
    Kill {
        node: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Starts NODE again (stopping it first if it runs) on the same address, ports and data
    /// directory, without join flags: its known peers bring it back.
    Restart {
        node: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Stops every node (SIGTERM), keeping the cluster's description for `start`.
    Stop {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Starts every node that does not run, without join flags.
    Start {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Cuts the network between groups of nodes: each argument is one group of
    /// comma-separated node names (`partition n1,n2 n3`). Replaces an earlier partition.
    /// Needs root (nftables).
    Partition {
        #[arg(required = true, num_args = 2..)]
        groups: Vec<String>,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Removes the partition.
    Heal {
        #[arg(long)]
        dir: PathBuf,
    },
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
        /// On a test host with its own engine (both sides in that engine, served on the
        /// host's LAN address).
        #[arg(long)]
        hosts: bool,
    },
    /// Sequential small applies per second through one node's API, next to sequential puts
    /// through one etcd member's JSON gateway.
    Applies {
        #[arg(long, default_value_t = 2000)]
        count: usize,
    },
    /// Resident memory and CPU of idle shoald processes, next to an idle etcd member.
    Idle {
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// Seconds to let the nodes settle before measuring.
        #[arg(long, default_value_t = 10)]
        settle_secs: u64,
        /// Seconds over which CPU is measured.
        #[arg(long, default_value_t = 30)]
        secs: u64,
    },
    /// Time from kill -9 of the node with the most replicas of a Deployment until they all
    /// serve HTTP on the other nodes (3 nodes, 4 replicas).
    Failover {
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// On 3 test hosts with their own engines: power-off instead of kill -9, and a client
        /// on a surviving host counts failed requests through its node proxy.
        #[arg(long)]
        hosts: bool,
    },
    /// A large image onto every test host: each host pulling it from a registry on the LAN,
    /// against shoal (one host pulls, the others fetch from it); times and registry downloads.
    Images {
        #[arg(long, default_value_t = 3)]
        hosts: usize,
        /// Megabytes of random bytes added to the test image.
        #[arg(long, default_value_t = 100)]
        size_mb: u64,
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Hold what the registry sends to this many Mbit/s in all (a home lab's uplink);
        /// 0: as fast as the LAN goes.
        #[arg(long, default_value_t = 0)]
        uplink_mbit: u64,
    },
    /// Time from an apply on one node until every node shows it (p50, p99), and bytes each
    /// idle node sends per second; next to a 3-member etcd cluster when etcd is installed.
    Convergence {
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Writes measured (rotating over the nodes).
        #[arg(long, default_value_t = 200)]
        writes: usize,
        /// Seconds of quiet over which idle traffic is counted.
        #[arg(long, default_value_t = 10)]
        idle_secs: u64,
    },
    /// Queries per second and latency of one node's DNS server (dnsperf, then our own load
    /// generator for percentiles), next to unbound and dnsmasq answering the same names; needs
    /// the dnsperf, unbound and dnsmasq packages.
    Dns {
        /// Seconds each server is queried, per run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Queries per second dnsperf sends at most (-Q).
        #[arg(long, default_value_t = 200_000)]
        qps: u64,
        /// Queries the load generator keeps outstanding: one run per value, per server.
        #[arg(long, value_delimiter = ',', default_values_t = [16, 64])]
        in_flight: Vec<usize>,
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
        Cmd::Up {
            nodes,
            hosts,
            image_on,
            dir,
        } => {
            let cluster = match hosts {
                Some(hosts) => {
                    shoal_testnet::hosts::available()?;
                    if !shoal_testnet::image::image_present(shoal_testnet::image::ECHO_IMAGE) {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .context("cannot start an async runtime")?;
                        runtime.block_on(shoal_testnet::image::build_echo_image())?;
                    }
                    let opts = HostOptions {
                        image_on,
                        ..HostOptions::default()
                    };
                    Cluster::up_hosts_detached(hosts, &dir, &opts).with_context(|| {
                        format!("cannot start {hosts} hosts in {}", dir.display())
                    })?
                }
                None => {
                    let nodes = nodes.unwrap_or(3);
                    Cluster::up_detached(nodes, &dir).with_context(|| {
                        format!("cannot start a {nodes}-node cluster in {}", dir.display())
                    })?
                }
            };
            println!("{}", cluster.file_path().display());
            for n in cluster.nodes() {
                println!("{}\t{}", n.opts.name, n.url());
            }
            Ok(())
        }
        Cmd::Down { dir } => Cluster::load(&dir)?.down(),
        Cmd::Kill { node, dir } => Cluster::load(&dir)?.kill(&node),
        Cmd::Restart { node, dir } => Cluster::load(&dir)?.restart(&node),
        Cmd::Stop { dir } => Cluster::load(&dir)?.stop_all(),
        Cmd::Start { dir } => Cluster::load(&dir)?.start_all(),
        Cmd::Partition { groups, dir } => {
            let groups = parse_groups(&groups)?;
            Cluster::load(&dir)?.partition(&groups)
        }
        Cmd::Heal { dir } => Cluster::load(&dir)?.heal(),
        Cmd::PowerOff { host, dir } => Cluster::load(&dir)?.power_off(&host),
        Cmd::Boot { host, dir } => Cluster::load(&dir)?.boot(&host),
        Cmd::AddHost { node_name, dir } => {
            let name = Cluster::load(&dir)?.add_host(node_name.as_deref())?;
            println!("{name}");
            Ok(())
        }
        Cmd::Unplug { host, dir } => Cluster::load(&dir)?.unplug(&host),
        Cmd::Plug { host, dir } => Cluster::load(&dir)?.plug(&host),
        Cmd::EngineStop { host, dir } => Cluster::load(&dir)?.engine_stop(&host),
        Cmd::EngineStart { host, dir } => Cluster::load(&dir)?.engine_start(&host),
        Cmd::Exec { host, dir, command } => {
            let out = Cluster::load(&dir)?.exec(&host, &command)?;
            print!("{}", out.stdout);
            eprint!("{}", out.stderr);
            std::process::exit(out.code);
        }
        Cmd::LoadImage { host, image, dir } => Cluster::load(&dir)?.load_image(&host, &image),
        Cmd::Cleanup { all } => {
            let mut removed = shoal_testnet::hosts::reap_stale();
            if all {
                for m in shoal_testnet::hosts::markers() {
                    shoal_testnet::hosts::teardown(&m);
                    removed.push(m.id);
                }
            }
            for id in &removed {
                println!("removed testnet {id}");
            }
            Ok(())
        }
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
            command:
                BenchCmd::ApplyToServing {
                    replicas,
                    runs,
                    hosts,
                },
        } => {
            if hosts {
                shoal_testnet::bench::apply_to_serving_hosts(replicas, runs)
            } else {
                shoal_testnet::bench::apply_to_serving(replicas, runs)
            }
        }
        Cmd::Bench {
            command:
                BenchCmd::Images {
                    hosts,
                    size_mb,
                    runs,
                    uplink_mbit,
                },
        } => shoal_testnet::bench_images::images(hosts, size_mb, runs, uplink_mbit),
        Cmd::Bench {
            command: BenchCmd::Applies { count },
        } => shoal_testnet::bench_applies::applies(count).map(|_| ()),
        Cmd::Bench {
            command:
                BenchCmd::Idle {
                    nodes,
                    settle_secs,
                    secs,
                },
        } => shoal_testnet::bench_idle::idle(nodes, settle_secs, secs),
        Cmd::Bench {
            command: BenchCmd::Failover { runs, hosts },
        } => {
            if hosts {
                shoal_testnet::bench_failover::failover_hosts(runs).map(|_| ())
            } else {
                shoal_testnet::bench_failover::failover(runs).map(|_| ())
            }
        }
        Cmd::Bench {
            command:
                BenchCmd::Convergence {
                    nodes,
                    writes,
                    idle_secs,
                },
        } => shoal_testnet::bench_convergence::convergence(nodes, writes, idle_secs).map(|_| ()),
        Cmd::Bench {
            command:
                BenchCmd::Dns {
                    seconds,
                    qps,
                    in_flight,
                },
        } => shoal_testnet::bench_dns::dns(seconds, qps, &in_flight).map(|_| ()),
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

/// Groups of node names from arguments `n1,n2 n3`: one group per argument.
fn parse_groups(args: &[String]) -> anyhow::Result<Vec<Vec<String>>> {
    args.iter()
        .map(|a| {
            let names: Vec<String> = a
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect();
            if names.is_empty() {
                anyhow::bail!("the group {a:?} names no node");
            }
            Ok(names)
        })
        .collect()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn each_argument_is_one_group_of_comma_separated_names() {
        let args: Vec<String> = ["n1,n2", "n3", " n4 , n5,"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            parse_groups(&args).unwrap(),
            vec![vec!["n1", "n2"], vec!["n3"], vec!["n4", "n5"]]
        );
        let err = parse_groups(&["n1".to_string(), ",".to_string()]).unwrap_err();
        assert!(err.to_string().contains("names no node"), "{err}");
    }

    #[test]
    fn partition_takes_at_least_two_groups() {
        assert!(Cli::try_parse_from(["shoal-testnet", "partition", "n1", "--dir", "d"]).is_err());
        assert!(
            Cli::try_parse_from(["shoal-testnet", "partition", "n1", "n2", "--dir", "d"]).is_ok()
        );
    }
}
