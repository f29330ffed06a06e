//! A node whose vital task fails gives up its leader role: three real `shoald` processes on
//! loopback; the test hook `SHOAL_TEST_FAIL_TASK` fails the state store of the node that holds
//! the controller role, and the role moves to another node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use shoal_testnet::{Node, NodeOptions, listing, wait_until};

#[test]
fn a_node_whose_state_store_fails_gives_up_the_controller_role() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = Node::start(NodeOptions::new("n1", &dir.path().join("n1"))).unwrap();
    let join = |name: &str| {
        Node::start(
            NodeOptions::new(name, &dir.path().join(name))
                .joining(&n1)
                .unwrap(),
        )
        .unwrap()
    };
    let (n2, n3) = (join("n2"), join("n3"));
    let mut nodes = vec![n1, n2, n3];
    let logs = |nodes: &[Node]| {
        nodes
            .iter()
            .map(|n| format!("--- {}\n{}", n.opts.name, n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Every node agrees on one holder.
    let first = wait_until(Duration::from_secs(30), "one holder everywhere", || {
        let seen: Vec<Option<String>> = nodes
            .iter()
            .map(listing::role_holder)
            .collect::<Result<_, _>>()?;
        Ok(match &seen[0] {
            Some(h) if seen.iter().all(|s| s.as_ref() == Some(h)) => Some(h.clone()),
            _ => None,
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&nodes)));
    // The holder starts again with the hook: its state store fails 10 s after its start. (It
    // may or may not hold the role again by then: a restarted node claims its name, and so its
    // role, only after a sync.) Once degraded, it never holds the role.
    let at = nodes.iter().position(|n| n.opts.name == first).unwrap();
    nodes[at].opts.env = vec![("SHOAL_TEST_FAIL_TASK".to_string(), "state:10".to_string())];
    nodes[at].restart().unwrap();
    // Its store fails: it is degraded (the role may have moved already: a restarted node
    // claims its name and role again only after it has synced), and another node holds the
    // role.
    wait_until(
        Duration::from_secs(30),
        "the node to say it is degraded",
        || {
            Ok(nodes[at]
                .log()
                .contains("this node is degraded")
                .then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&nodes)));
    let log = nodes[at].log();
    assert!(log.contains("test hook"), "{log}");
    assert!(log.contains("this node is degraded"), "{log}");
    // The survivors agree on a new holder (while views settle the role may pass between
    // them for a moment, so the first holder seen is not necessarily the one they agree on),
    // and it stays: the degraded node does not take it back.
    let survivors: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at)
        .map(|(_, n)| n)
        .collect();
    // A node that membership picks takes the role from one that took it less than a second
    // ago only after that second (`nodes::CLAIM_HOLD`): the agreement must last 2 s.
    let mut agreed: Option<(String, Instant)> = None;
    let next = wait_until(
        Duration::from_secs(30),
        "the survivors to agree on a new holder for 2 s",
        || {
            let seen: Vec<Option<String>> = survivors
                .iter()
                .map(|n| listing::role_holder(n))
                .collect::<Result<_, _>>()?;
            let now = match &seen[0] {
                Some(h) if *h != first && seen.iter().all(|s| s.as_ref() == Some(h)) => {
                    Some(h.clone())
                }
                _ => None,
            };
            agreed = match (now, agreed.take()) {
                (Some(h), Some((a, t))) if h == a => Some((a, t)),
                (Some(h), _) => Some((h, Instant::now())),
                (None, _) => None,
            };
            Ok(agreed
                .as_ref()
                .filter(|(_, t)| t.elapsed() >= Duration::from_secs(2))
                .map(|(h, _)| h.clone()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&nodes)));
    assert_ne!(next, first);
    std::thread::sleep(Duration::from_secs(3));
    for n in &survivors {
        assert_eq!(
            listing::role_holder(n).unwrap().as_deref(),
            Some(next.as_str())
        );
    }
}
