//! Backup and restore of the desired state.
//!
//! `GET /shoal/v1/backup` answers one [`Backup`] document: every stored object but Nodes, in
//! stored form (server-set metadata kept, a Secret's data sealed by the cluster key, never in
//! clear), with the cluster id and a fingerprint of the key that sealed the Secrets.
//!
//! `POST /shoal/v1/restore` takes such a document and restores every object of it, all or
//! nothing: the format, the key fingerprint, every object's kind and fields (the validation of
//! apply) and every Secret's sealed data (it must open with this cluster's key) are checked
//! before anything is written, and a refusal names each object at fault (`items[i]`). Objects
//! that the backup does not hold are left alone.
//!
//! A backup's Secrets open only in a cluster with the cluster secret of the one that made it:
//! after losing every node, start the first new node from a join token of the old cluster
//! (`shoald --token`), which gives it the old cluster's id, secret and admin token, then
//! restore. `docs/operations.md` has the whole procedure.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::Value;
use shoal_protocol::api::{ApplyAction, ApplyResponse, BACKUP_FORMAT, Backup};
use shoal_protocol::{FieldError, Kind, Resource};

use super::ApiState;
use super::error::ApiError;
use crate::state::StateError;

/// The field of a stored Secret that holds its sealed data.
const SEALED_DATA: &str = "sealedData";

/// `GET /shoal/v1/backup`.
pub async fn backup(State(api): State<ApiState>) -> Result<Json<Backup>, ApiError> {
    let items: Vec<Value> = api
        .state
        .export()
        .await?
        .into_iter()
        .map(|o| o.value)
        .collect();
    tracing::info!(objects = items.len(), "backup taken");
    Ok(Json(Backup {
        format: BACKUP_FORMAT.to_string(),
        cluster_id: api.cluster_id.to_string(),
        created_at: crate::time::rfc3339_now(),
        node_name: api.node_name.to_string(),
        secrets_key_id: api.state.secrets_key_id().to_string(),
        items,
    }))
}

/// `POST /shoal/v1/restore`: a [`Backup`] as JSON.
pub async fn restore(
    State(api): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ApplyResponse>, ApiError> {
    let bytes = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "RequestEntityTooLarge",
                "the backup is larger than the node accepts: raise api-max-body-bytes in the \
                 node's config file and restart it, then restore again",
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {rejection}"))
        }
    })?;
    let backup = parse(&bytes)?;
    check_key(&api, &backup)?;
    let (batch, names) = check_items(backup.items)?;
    let items = match api.state.restore(batch).await {
        Ok(items) => items,
        Err(StateError::Invalid(causes)) => {
            return Err(invalid(locate(causes, &names)));
        }
        Err(e) => return Err(e.into()),
    };
    let changed = items
        .iter()
        .filter(|r| r.action != ApplyAction::Unchanged)
        .count();
    tracing::info!(
        objects = items.len(),
        changed,
        from_cluster = %backup.cluster_id,
        made_at = %backup.created_at,
        "backup restored"
    );
    Ok(Json(ApplyResponse { items }))
}

/// The document, with a message that says what it is when it is not a backup of this format.
fn parse(bytes: &[u8]) -> Result<Backup, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not JSON ({e}): send the file that `shoal backup` wrote, unchanged"
        ))
    })?;
    match value.get("format").and_then(Value::as_str) {
        Some(BACKUP_FORMAT) => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the backup has format {other:?}, while this shoald reads {BACKUP_FORMAT:?}: \
                 restore it with the shoald version that made it, or a newer one"
            )));
        }
        None => {
            return Err(ApiError::bad_request(format!(
                "this is not a shoal backup (no \"format\": {BACKUP_FORMAT:?}): send the file \
                 that `shoal backup` wrote"
            )));
        }
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("the backup is malformed: {e}")))
}

/// Refuses, before anything is written, a backup whose Secrets were sealed with another
/// cluster secret. A backup without sealed Secret data may go to any cluster.
fn check_key(api: &ApiState, backup: &Backup) -> Result<(), ApiError> {
    let own = api.state.secrets_key_id();
    let sealed = backup
        .items
        .iter()
        .filter(|v| v.get(SEALED_DATA).is_some())
        .count();
    if sealed == 0 || backup.secrets_key_id == own {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "this backup's Secrets ({sealed}) were sealed by cluster {} (key {}), but this \
             cluster {} has another cluster secret (key {own}), so they cannot be opened here; \
             nothing was restored. Restore into a cluster started from a join token of cluster \
             {}: on an empty data directory, `shoald --token <that cluster's join token>` \
             (see docs/operations.md, \"Back up and restore\")",
            backup.cluster_id, backup.secrets_key_id, api.cluster_id, backup.cluster_id
        ),
    ))
}

/// Each item's kind and the validation of apply; Secrets are checked without their sealed
/// data, which the store checks by opening it. Returns the batch and a name for each item.
#[allow(clippy::type_complexity)]
fn check_items(items: Vec<Value>) -> Result<(Vec<(Kind, Value)>, Vec<String>), ApiError> {
    let mut errors = Vec::new();
    let mut batch = Vec::with_capacity(items.len());
    let mut names = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        names.push(describe(&item));
        let api_version = item.get("apiVersion").and_then(Value::as_str);
        let kind_name = item.get("kind").and_then(Value::as_str);
        let kind = match (api_version, kind_name) {
            (Some(v), Some(k)) => Kind::from_manifest(v, k),
            _ => None,
        };
        let Some(kind) = kind else {
            errors.push(
                FieldError::new(
                    "kind",
                    format!(
                        "apiVersion {api_version:?} kind {kind_name:?} is not a kind shoal \
                         stores"
                    ),
                )
                .in_document(i),
            );
            continue;
        };
        let mut plain = item.clone();
        if let Some(map) = plain.as_object_mut() {
            map.remove(SEALED_DATA);
            map.remove("status");
        }
        match Resource::from_value(kind, plain) {
            Ok(r) => errors.extend(r.validate().into_iter().map(|e| e.in_document(i))),
            Err(es) => errors.extend(es.0.into_iter().map(|e| e.in_document(i))),
        }
        batch.push((kind, item));
    }
    if errors.is_empty() {
        Ok((batch, names))
    } else {
        Err(invalid(locate(errors, &names)))
    }
}

/// `Kind namespace/name` of an item, for messages.
fn describe(item: &Value) -> String {
    let text = |p: &str| item.pointer(p).and_then(Value::as_str).unwrap_or("?");
    match item.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!("{} {ns}/{}", text("/kind"), text("/metadata/name")),
        None => format!("{} {}", text("/kind"), text("/metadata/name")),
    }
}

/// Turns "document i" into the item's path and name: `items[3].spec.replicas`.
fn locate(errors: Vec<FieldError>, names: &[String]) -> Vec<FieldError> {
    errors
        .into_iter()
        .map(|e| match e.document {
            Some(i) => {
                let field = if e.field.is_empty() {
                    format!("items[{i}]")
                } else {
                    format!("items[{i}].{}", e.field)
                };
                let name = names.get(i).map_or("?", String::as_str);
                FieldError::new(field, format!("{name}: {}", e.message))
            }
            None => e,
        })
        .collect()
}

fn invalid(causes: Vec<FieldError>) -> ApiError {
    let message = match causes.as_slice() {
        [one] => format!("the backup cannot be restored: {one}; nothing was restored"),
        _ => format!(
            "the backup cannot be restored ({} errors); nothing was restored",
            causes.len()
        ),
    };
    ApiError::invalid(message, causes)
}
