//! The pod network across machines: every pod reaches every pod by its address, whatever
//! machine each runs on (Kubernetes' network model; see "Pod network" in
//! `../shared/ARCHITECTURE.md`).
//!
//! Each node takes a `/24` of the cluster's pod range, claimed in the desired state without a
//! master ([`subnet`]). Routes between nodes and the overlay build on it.

pub mod subnet;
