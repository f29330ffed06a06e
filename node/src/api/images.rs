//! Images: pushed from a workstation (`POST /shoal/v1/images/load`), and listed across the
//! cluster (`GET /shoal/v1/images`).
//!
//! The body is a `docker save` tarball, streamed into this node's engine as it arrives (never
//! whole in memory, and with no body limit: images are large). The engine checks each layer
//! against the image's config while it loads, so a cut or altered upload loads nothing. The
//! answer names the references loaded: `{"node": NAME, "loaded": ["app:v1"]}`.
//!
//! The list comes from the image inventories the nodes gossip (see
//! `crate::observed::inventory`): one row per image name, with the nodes holding it and the
//! pods using it ([`rows`], pure).

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use std::collections::{BTreeMap, BTreeSet};

use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use shoal_protocol::status::PodStatus;

use crate::images::reference::ImageRef;
use crate::images::source::same_tag;
use crate::observed::{Inventory, Liveness};

use super::{ApiError, ApiState};
use crate::runtime::{ByteStream, RuntimeError};

/// Where `shoal image push` sends the tarball.
pub const LOAD_PATH: &str = "/shoal/v1/images/load";

/// Where `shoal get images` reads the list.
pub const LIST_PATH: &str = "/shoal/v1/images";

/// One image name as `shoal get images` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRow {
    /// A repo tag (`<none>` for an image without one).
    pub name: String,
    pub id: String,
    pub size: u64,
    /// The live nodes whose engines hold it.
    pub nodes: Vec<String>,
    /// The pods (`namespace/name`) on those nodes whose containers use it.
    pub pods: Vec<String>,
}

/// The rows for the inventories of the live nodes, with each node's pods. Pure.
pub fn rows(
    inventories: &BTreeMap<String, Inventory>,
    live: &BTreeSet<String>,
    pods: &BTreeMap<String, BTreeMap<String, PodStatus>>,
) -> Vec<ImageRow> {
    let mut out: BTreeMap<(String, String), ImageRow> = BTreeMap::new();
    for (node, inventory) in inventories.iter().filter(|(n, _)| live.contains(*n)) {
        for image in &inventory.images {
            let names: Vec<String> = if image.repo_tags.is_empty() {
                vec!["<none>".to_string()]
            } else {
                image.repo_tags.clone()
            };
            for name in names {
                let wanted = ImageRef::parse(&name).ok();
                let row = out
                    .entry((name.clone(), image.id.clone()))
                    .or_insert_with(|| ImageRow {
                        name: name.clone(),
                        id: image.id.clone(),
                        size: image.size,
                        nodes: Vec::new(),
                        pods: Vec::new(),
                    });
                row.nodes.push(node.clone());
                let Some(wanted) = wanted else { continue };
                for (key, status) in pods.get(node).into_iter().flatten() {
                    let uses = status
                        .container_statuses
                        .iter()
                        .any(|c| ImageRef::parse(&c.image).is_ok_and(|r| same_tag(&r, &wanted)));
                    if uses && !row.pods.contains(key) {
                        row.pods.push(key.clone());
                    }
                }
            }
        }
    }
    out.into_values()
        .map(|mut r| {
            r.pods.sort();
            r
        })
        .collect()
}

/// `GET /shoal/v1/images`: `{"items": [ImageRow...]}`.
pub async fn list(State(api): State<ApiState>) -> Json<Value> {
    let observed = api.observed.snapshot();
    let live: BTreeSet<String> = observed
        .values()
        .filter(|r| {
            matches!(
                api.observed.liveness(r),
                Liveness::Alive | Liveness::Suspect
            )
        })
        .map(|r| r.name.clone())
        .collect();
    let pods: BTreeMap<String, BTreeMap<String, PodStatus>> = observed
        .values()
        .map(|r| (r.name.clone(), r.pods.clone()))
        .collect();
    let items = rows(&api.observed.inventories(), &live, &pods);
    Json(json!({ "items": items }))
}

/// `POST /shoal/v1/images/load`.
/// The query of a load: `all=true` asks every other node to fetch what was loaded.
#[derive(Debug, Default, serde::Deserialize)]
pub struct LoadQuery {
    #[serde(default)]
    all: bool,
}

pub async fn load(
    State(api): State<ApiState>,
    Query(query): Query<LoadQuery>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let runtime = api.engine.get().map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!(
                "the container engine of node {} is unavailable: {e}",
                api.node_name
            ),
        )
    })?;
    let stream: ByteStream = body
        .into_data_stream()
        .map_err(|e| RuntimeError::Other {
            message: format!("the upload broke off: {e}"),
        })
        .boxed();
    match runtime.load_image(stream).await {
        Ok(loaded) => {
            tracing::info!(images = ?loaded, "images loaded from an upload");
            if let Some(images) = &api.images {
                if query.all {
                    images.spread(loaded.clone());
                }
                images.refresh();
            }
            Ok(Json(
                json!({"node": api.node_name.as_ref(), "loaded": loaded}),
            ))
        }
        Err(RuntimeError::Unavailable { message }) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "node {} could not load the upload as a docker save tarball: {e}",
            api.node_name
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::observed::ImageEntry;
    use shoal_protocol::status::ContainerStatus;

    #[test]
    fn rows_name_the_nodes_and_the_pods() {
        let entry = |id: &str, tags: &[&str]| ImageEntry {
            id: id.into(),
            repo_tags: tags.iter().map(|t| (*t).into()).collect(),
            repo_digests: Vec::new(),
            size: 5,
        };
        let inv = |images: Vec<ImageEntry>| Inventory {
            version: 1,
            peer_id: "p".into(),
            images,
            pulling: Vec::new(),
            spread: Vec::new(),
        };
        let inventories = BTreeMap::from([
            (
                "a".to_string(),
                inv(vec![entry("sha256:1", &["app:v1"]), entry("sha256:2", &[])]),
            ),
            ("b".to_string(), inv(vec![entry("sha256:1", &["app:v1"])])),
            (
                "dead".to_string(),
                inv(vec![entry("sha256:1", &["app:v1"])]),
            ),
        ]);
        let live: BTreeSet<String> = ["a", "b"].iter().map(|s| (*s).to_string()).collect();
        let pod = |image: &str| PodStatus {
            container_statuses: vec![ContainerStatus {
                image: image.into(),
                ..ContainerStatus::default()
            }],
            ..PodStatus::default()
        };
        let pods = BTreeMap::from([
            (
                "a".to_string(),
                BTreeMap::from([("default/web-1".to_string(), pod("docker.io/library/app:v1"))]),
            ),
            (
                "b".to_string(),
                BTreeMap::from([
                    ("default/web-2".to_string(), pod("app:v1")),
                    ("default/db-0".to_string(), pod("db:1")),
                ]),
            ),
        ]);
        let rows = rows(&inventories, &live, &pods);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].name, "<none>");
        assert_eq!(rows[0].nodes, vec!["a"]);
        assert_eq!(rows[1].name, "app:v1");
        assert_eq!(rows[1].nodes, vec!["a", "b"]);
        assert_eq!(rows[1].pods, vec!["default/web-1", "default/web-2"]);
    }
}
