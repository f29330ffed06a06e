//! The embedded DNS server: the cluster's names and ingress.
//!
//! - [`zone`]: the snapshot of the cluster zone the server answers from;
//! - `records`: builds that snapshot from Services, pods and membership (pure);
//! - `feed`: the task that rebuilds the zone after every change;
//! - `server`: UDP and TCP (hickory-proto's wire format), answering the zone and forwarding
//!   other names through `forward` (upstream resolvers, with a cache), to the sources `guard`
//!   lets in.

pub mod feed;
pub mod forward;
pub mod guard;
pub mod records;
pub mod server;
pub mod zone;
