//! Scripted twins of the testnet's partition, failover and StatefulSet scenarios
//! (`testnet/tests/partition.rs`, `failover.rs`, `stateful.rs`, `hosts.rs`), run in the
//! simulator with every invariant checked at every step. Each ends as a seed's run does:
//! every fault healed, then the liveness invariants and a quiet document.

use std::time::Duration;

use shoal_sim::plan::{Event, Plan, Write};

fn web(replicas: u32) -> Write {
    Write::Web {
        replicas,
        image: "app:1",
        surge: 1,
        unavailable: 0,
    }
}

/// A plan of `nodes` nodes: `initial` applied at 4 s, then `events` at their second.
fn scripted(nodes: usize, initial: Vec<Write>, events: Vec<(f64, Event)>) -> Plan {
    let last = events.iter().map(|(t, _)| *t).fold(0.0, f64::max);
    Plan {
        seed: 0,
        nodes,
        initial,
        events: events
            .into_iter()
            .map(|(t, e)| (Duration::from_secs_f64(t), e))
            .collect(),
        heal_at: Duration::from_secs_f64(last + 5.0),
    }
}

fn run(plan: Plan) {
    if let Err(f) = shoal_sim::run_plan_now(plan, false) {
        panic!("{f}");
    }
}

/// Twin of `partition_2_1_apply_different_objects_on_each_side_heal_identical_state_everywhere`.
#[test]
fn partition_2_1_writes_on_each_side_heal_to_one_state() {
    run(scripted(
        3,
        vec![Write::Config { value: 0 }],
        vec![
            (8.0, Event::Partition(vec![vec![0, 1], vec![2]])),
            (
                9.0,
                Event::Apply {
                    node: 0,
                    write: web(2),
                },
            ),
            (
                9.0,
                Event::Apply {
                    node: 2,
                    write: Write::Config { value: 5 },
                },
            ),
            (20.0, Event::Heal),
            (21.0, Event::Settle),
        ],
    ));
}

/// Twin of `stop_and_start_the_whole_cluster_the_state_is_back_on_every_node`, as power cuts.
#[test]
fn a_power_cut_of_the_whole_cluster_comes_back_with_its_state() {
    let crash = |node| Event::Crash {
        node,
        torn: node == 1,
    };
    let restart = |node| Event::Restart {
        node,
        clock_back: node == 2,
    };
    run(scripted(
        3,
        vec![
            web(3),
            Write::Db { replicas: 3 },
            Write::Config { value: 1 },
        ],
        vec![
            (12.0, crash(0)),
            (12.0, crash(1)),
            (12.0, crash(2)),
            (15.0, restart(0)),
            (15.0, restart(1)),
            (15.0, restart(2)),
            (16.0, Event::Settle),
        ],
    ));
}

/// Twin of `replicas_of_a_killed_node_come_back_elsewhere_and_the_others_are_untouched`.
#[test]
fn replicas_of_a_lost_node_come_back_elsewhere() {
    run(scripted(
        3,
        vec![web(4)],
        vec![
            (
                12.0,
                Event::Crash {
                    node: 1,
                    torn: false,
                },
            ),
            (13.0, Event::Settle),
        ],
    ));
}

/// Twin of `after_a_3_2_partition_heals_exactly_the_declared_replicas_run`.
#[test]
fn after_a_3_2_partition_heals_exactly_the_declared_replicas_run() {
    run(scripted(
        5,
        vec![web(4)],
        vec![
            (12.0, Event::Partition(vec![vec![0, 1, 2], vec![3, 4]])),
            (40.0, Event::Heal),
            (41.0, Event::Settle),
        ],
    ));
}

/// Twin of `a_statefulset_never_runs_two_copies_of_an_ordinal_across_a_partition`.
#[test]
fn a_statefulset_never_runs_two_copies_of_an_ordinal_across_a_partition() {
    run(scripted(
        3,
        vec![Write::Db { replicas: 3 }],
        vec![
            (12.0, Event::Partition(vec![vec![0], vec![1, 2]])),
            (40.0, Event::Heal),
            (41.0, Event::Settle),
        ],
    ));
}

/// Twin of `a_statefulset_never_runs_an_ordinal_twice_across_a_partition_and_a_power_cut`.
#[test]
fn a_statefulset_never_runs_an_ordinal_twice_across_a_partition_and_a_power_cut() {
    run(scripted(
        3,
        vec![Write::Db { replicas: 3 }],
        vec![
            (12.0, Event::Partition(vec![vec![0], vec![1, 2]])),
            (
                25.0,
                Event::Crash {
                    node: 0,
                    torn: false,
                },
            ),
            (30.0, Event::Heal),
            (31.0, Event::Settle),
            (
                45.0,
                Event::Restart {
                    node: 0,
                    clock_back: false,
                },
            ),
            (46.0, Event::Settle),
        ],
    ));
}
