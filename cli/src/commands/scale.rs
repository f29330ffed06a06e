//! `scale`: sets the replicas of a deployment or statefulset through its `scale` subresource.

use anyhow::Result;
use serde_json::json;
use shoal_protocol::Kind;

use super::{Session, parse_target};
use crate::args::ScaleArgs;
use crate::client;

pub fn run(s: &Session, a: &ScaleArgs) -> Result<()> {
    let (kind, name) = parse_target(&a.target, &[Kind::Deployment, Kind::StatefulSet])?;
    let path = format!(
        "{}/scale",
        client::object_path(kind, Some(&s.namespace), &name)
    );
    let body = json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": name, "namespace": s.namespace},
        "spec": {"replicas": a.replicas},
    });
    match s.client.put_json(&path, &body) {
        Ok(_) => {}
        Err(e) if e.is_not_found() => return Err(client::not_found(kind, &name).into()),
        Err(e) => return Err(e.into()),
    }
    crate::output::print(&format!("{} scaled\n", kind_name(kind, &name)))
}

/// `deployment.apps/web`.
pub fn kind_name(kind: Kind, name: &str) -> String {
    format!("{}/{name}", kind.display())
}
