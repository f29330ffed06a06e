//! What container tests set up around their nodes: a [`Testnet`] (a [`Cluster`] whose Docker
//! leftovers go with it), a [`SingleNode`] (the same for one node) and [`apply`], which applies a manifest through the CLI as a user
//! would and panics with the node's log when that fails.

use anyhow::Context;

use crate::{Cluster, DockerCleanup, Node, NodeOptions};

/// A [`Cluster`] that removes what its nodes left in the Docker engine when it is dropped.
///
/// The fields drop in the order they are declared: `cluster` first, so every `shoald` is dead
/// before `cleanup` removes the containers, pod networks and volumes of the cluster id, and no
/// agent starts a removed container again. Tests borrow `cluster` and keep the `Testnet`
/// itself alive to the end.
pub struct Testnet {
    pub cluster: Cluster,
    cleanup: DockerCleanup,
}

impl Testnet {
    /// [`Cluster::up`] of `n` nodes in `dir`, with its cleanup.
    pub fn up(n: usize, dir: &std::path::Path) -> anyhow::Result<Testnet> {
        Testnet::new(Cluster::up(n, dir)?)
    }

    /// Takes over a started `cluster`; its cleanup is for the cluster id of its first node.
    pub fn new(cluster: Cluster) -> anyhow::Result<Testnet> {
        let cluster_id = cluster
            .nodes()
            .first()
            .context("the cluster has no nodes")?
            .cluster_id()?;
        Ok(Testnet {
            cleanup: DockerCleanup::new(&cluster_id),
            cluster,
        })
    }

    /// The id of the cluster the nodes formed (the `shoal.cluster` label of its containers).
    pub fn cluster_id(&self) -> &str {
        self.cleanup.cluster_id()
    }
}

/// One [`Node`] that removes what it left in the Docker engine when it is dropped: `node`
/// drops before `cleanup`, as in [`Testnet`]. `cleanup` is public for the tests that count the
/// cluster's containers or add volumes to remove; it stays in the struct.
pub struct SingleNode {
    pub node: Node,
    pub cleanup: DockerCleanup,
}

impl SingleNode {
    /// [`Node::start`] of a node that makes its own cluster, with its cleanup.
    pub fn start(opts: NodeOptions) -> anyhow::Result<SingleNode> {
        let node = Node::start(opts)?;
        let cleanup = DockerCleanup::new(&node.cluster_id()?);
        Ok(SingleNode { node, cleanup })
    }
}

/// `shoal apply -f -` of `manifest` on `node`; panics with the error and the node's log when
/// the command cannot run or fails.
pub fn apply(node: &Node, manifest: &str) {
    node.cli_with_input(&["apply", "-f", "-"], Some(manifest))
        .and_then(crate::CliOutput::success)
        .unwrap_or_else(|e| panic!("apply on {}: {e:#}\n{}", node.opts.name, node.log()));
}
