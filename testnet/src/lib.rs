//! Real local shoal nodes for tests, fault injection and benchmarks.
//!
//! A [`Node`] is a `shoald` process with its own data directory and loopback address, started
//! from the binaries of this workspace. Tests talk to it as users do: over HTTP ([`Node::api`])
//! and through the `shoal` binary ([`Node::cli`]). Every address used is on loopback.
//! [`image`] builds the test container image `shoal-test/echo:latest` that tests run.

pub mod image;
mod process;

pub use process::{Api, CliOutput, Node, NodeOptions, bin_path, free_port};
