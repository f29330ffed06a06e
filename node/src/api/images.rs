//! Images pushed from a workstation: `POST /shoal/v1/images/load`.
//!
//! The body is a `docker save` tarball, streamed into this node's engine as it arrives (never
//! whole in memory, and with no body limit: images are large). The engine checks each layer
//! against the image's config while it loads, so a cut or altered upload loads nothing. The
//! answer names the references loaded: `{"node": NAME, "loaded": ["app:v1"]}`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use super::{ApiError, ApiState};
use crate::runtime::{ByteStream, RuntimeError};

/// Where `shoal image push` sends the tarball.
pub const LOAD_PATH: &str = "/shoal/v1/images/load";

/// `POST /shoal/v1/images/load`.
pub async fn load(State(api): State<ApiState>, body: Body) -> Result<Json<Value>, ApiError> {
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
