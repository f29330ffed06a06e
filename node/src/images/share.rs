//! Images between nodes: one node streams an image out of its engine into a peer's engine.
//!
//! Role: the `/shoal/image/1` stream protocol, over the cluster's admitted, authenticated
//! connections (libp2p streams; see `crate::net`). The asker writes one JSON line naming the
//! image; the holder answers one JSON line (the image's id and size, or why not) and then the
//! image as a `docker save` tarball until it closes the stream. The asker pipes the stream into
//! its engine's `docker load` as it arrives, so no image is ever all in memory; the engine
//! checks every layer against the image's config as it loads (a truncated or altered stream
//! loads nothing), and the asker then checks that the id it loaded is the one announced.
//!
//! [`serve`] answers peers, at most [`MAX_SENDS`] at a time (a busy holder says so and the
//! asker tries another). [`NetFetch`] is the asking side the image service uses through the
//! [`Fetch`] trait, so that its tests can move images between simulated engines instead.
//!
//! A transfer that stalls for [`IDLE_LIMIT`] (its holder powered off, cut off) fails, and the
//! image service goes on from another holder or the registry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use futures_util::{StreamExt, TryStreamExt};
use libp2p::{PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

use crate::net::NetHandle;
use crate::runtime::{ByteStream, Engine, Runtime, RuntimeError};

/// The protocol's name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/image/1");

/// Images a node sends at once; more askers are told it is busy.
pub const MAX_SENDS: usize = 2;

/// A transfer that brings no byte for this long has failed.
pub const IDLE_LIMIT: Duration = Duration::from_secs(10);

/// Longest request or answer line.
const MAX_LINE: u64 = 4096;

/// How long the holder may take to answer (its engine starts the export).
const ANSWER_LIMIT: Duration = Duration::from_secs(20);

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    image: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default)]
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The holder sends as many images as it may now: the asker tries again soon.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    busy: bool,
}

/// Why a fetch brought nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The holder sends as many images as it may now ([`MAX_SENDS`]): not a failure of the
    /// holder, which is asked again soon.
    #[error("the holder is busy: {0}")]
    Busy(String),
    #[error("{0}")]
    Failed(String),
}

impl From<String> for FetchError {
    fn from(message: String) -> FetchError {
        FetchError::Failed(message)
    }
}

/// What a fetch brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The image's id, as the holder announced it and this engine loaded it.
    pub id: String,
    /// Bytes streamed.
    pub bytes: u64,
}

/// Fetching an image from a peer into this node's engine.
#[async_trait]
pub trait Fetch: Send + Sync + 'static {
    /// Streams `image` (a reference or an id) from the node whose peer id is `peer` into
    /// `rt`; fails with a message for people.
    async fn fetch(
        &self,
        peer: &str,
        image: &str,
        rt: Arc<dyn Runtime>,
    ) -> Result<Fetched, FetchError>;
}

/// The production [`Fetch`]: over the cluster's network.
#[derive(Clone)]
pub struct NetFetch {
    pub net: NetHandle,
}

#[async_trait]
impl Fetch for NetFetch {
    async fn fetch(
        &self,
        peer: &str,
        image: &str,
        rt: Arc<dyn Runtime>,
    ) -> Result<Fetched, FetchError> {
        let peer: PeerId = peer
            .parse()
            .map_err(|e| format!("bad peer id {peer}: {e}"))?;
        fetch(&self.net, peer, image, rt).await
    }
}

/// Asks `peer` for `image` and loads what it sends into `rt`.
async fn fetch(
    net: &NetHandle,
    peer: PeerId,
    image: &str,
    rt: Arc<dyn Runtime>,
) -> Result<Fetched, FetchError> {
    let stream = net
        .open_stream(peer, PROTOCOL)
        .await
        .map_err(|e| e.to_string())?;
    let (read, mut write) = stream.split();
    let mut line = serde_json::to_vec(&Request {
        image: image.to_string(),
    })
    .map_err(|e| e.to_string())?;
    line.push(b'\n');
    write.write_all(&line).await.map_err(|e| e.to_string())?;
    write.flush().await.map_err(|e| e.to_string())?;
    let mut read = BufReader::new(read);
    let answer: Answer = tokio::time::timeout(ANSWER_LIMIT, read_line(&mut read))
        .await
        .map_err(|_| format!("no answer within {}s", ANSWER_LIMIT.as_secs()))??;
    if let Some(error) = answer.error {
        return Err(if answer.busy {
            FetchError::Busy(error)
        } else {
            FetchError::Failed(error)
        });
    }
    let Some(id) = answer.id else {
        return Err(FetchError::Failed("the holder named no image id".into()));
    };
    let counted = Arc::new(AtomicU64::new(0));
    let body = idle_limited(
        ReaderStream::new(read.compat())
            .map_err(|e| RuntimeError::Other {
                message: format!("the transfer broke: {e}"),
            })
            .boxed(),
        IDLE_LIMIT,
        counted.clone(),
    );
    let loaded = rt.load_image(body).await.map_err(|e| e.to_string())?;
    // Close our half; the holder has closed its own.
    let _ = write.close().await;
    // The engine checked the layers against the config whose digest is the id: the image is
    // the one announced exactly when the loaded reference has that id.
    let name = loaded.first().cloned().unwrap_or_else(|| image.to_string());
    let info = rt.image_info(image).await.map_err(|e| e.to_string())?;
    if info.id != id {
        return Err(FetchError::Failed(format!(
            "loaded {name} with id {}, but the holder announced {id}",
            info.id
        )));
    }
    Ok(Fetched {
        id,
        bytes: counted.load(Ordering::Relaxed),
    })
}

/// Reads one JSON line of at most [`MAX_LINE`] bytes.
async fn read_line<R, T>(read: &mut R) -> Result<T, String>
where
    R: futures_util::io::AsyncBufRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    let mut buf = Vec::new();
    let mut limited = read.take(MAX_LINE);
    limited
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| e.to_string())?;
    if buf.last() != Some(&b'\n') {
        return Err("the peer closed the stream or sent a line too long".into());
    }
    serde_json::from_slice(&buf).map_err(|e| format!("unreadable line from the peer: {e}"))
}

/// A byte stream that fails when no chunk arrives for `idle`, counting what passes.
fn idle_limited(stream: ByteStream, idle: Duration, counted: Arc<AtomicU64>) -> ByteStream {
    futures_util::stream::unfold(Some(stream), move |state| {
        let counted = counted.clone();
        async move {
            let mut stream = state?;
            match tokio::time::timeout(idle, stream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    counted.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    Some((Ok(chunk), Some(stream)))
                }
                Ok(Some(Err(e))) => Some((Err(e), None)),
                Ok(None) => None,
                Err(_) => Some((
                    Err(RuntimeError::Other {
                        message: format!("the transfer stalled for {}s", idle.as_secs()),
                    }),
                    None,
                )),
            }
        }
    })
    .boxed()
}

/// How this node answers peers asking for images.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeConfig {
    /// Bytes per second each send is held to; `None`: as fast as it goes. A test hook
    /// (`SHOAL_TEST_IMAGE_SEND_BYTES_PER_SEC`), so that a fault can land mid-transfer.
    pub rate: Option<u64>,
}

impl ServeConfig {
    /// The settings from the environment (the test hook).
    pub fn from_env() -> ServeConfig {
        ServeConfig {
            rate: std::env::var("SHOAL_TEST_IMAGE_SEND_BYTES_PER_SEC")
                .ok()
                .and_then(|v| v.parse().ok()),
        }
    }
}

/// Answers peers' image requests until `shutdown`.
pub async fn serve(
    net: NetHandle,
    engine: Engine,
    config: ServeConfig,
    shutdown: CancellationToken,
) {
    let Some(mut incoming) = net.accept_streams(PROTOCOL) else {
        tracing::warn!("image transfers are served elsewhere already");
        return;
    };
    let sends = Arc::new(Semaphore::new(MAX_SENDS));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            next = incoming.next() => {
                let Some((peer, stream)) = next else { break };
                if !net.is_admitted(&peer) {
                    tracing::debug!(%peer, "image request from a peer not admitted: dropped");
                    continue;
                }
                let permit = sends.clone().try_acquire_owned().ok();
                let engine = engine.clone();
                tasks.spawn(async move {
                    if let Err(e) = answer(stream, engine, permit, config).await {
                        tracing::info!(%peer, error = %e, "image send ended early");
                    }
                });
            }
        }
    }
    tasks.abort_all();
}

/// Answers one request: the image, or why not.
async fn answer(
    stream: libp2p::Stream,
    engine: Engine,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    config: ServeConfig,
) -> Result<(), String> {
    let (read, mut write) = stream.split();
    let mut read = BufReader::new(read);
    let request: Request = tokio::time::timeout(ANSWER_LIMIT, read_line(&mut read))
        .await
        .map_err(|_| "no request".to_string())??;
    let busy = permit.is_none();
    let export = async {
        if busy {
            return Err(format!("it sends {MAX_SENDS} images already"));
        }
        let rt = engine.get().map_err(|e| e.to_string())?;
        let info = rt.image_info(&request.image).await.map_err(|e| match e {
            RuntimeError::NotFound { .. } => format!("{} is not on this node", request.image),
            e => e.to_string(),
        })?;
        let body = rt
            .export_image(&request.image)
            .await
            .map_err(|e| e.to_string())?;
        Ok((info, body))
    };
    let (info, mut body) = match export.await {
        Ok(x) => x,
        Err(error) => {
            write_line(
                &mut write,
                &Answer {
                    error: Some(error.clone()),
                    busy,
                    ..Answer::default()
                },
            )
            .await?;
            let _ = write.close().await;
            return Err(error);
        }
    };
    tracing::info!(image = %request.image, size = info.size, "sending image to a peer");
    write_line(
        &mut write,
        &Answer {
            id: Some(info.id.clone()),
            size: info.size,
            ..Answer::default()
        },
    )
    .await?;
    let started = tokio::time::Instant::now();
    let mut sent: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk: Bytes = chunk.map_err(|e| e.to_string())?;
        if let Some(rate) = config.rate.filter(|r| *r > 0) {
            // Small pieces, each sent when the rate allows it.
            for piece in chunk.chunks(4096) {
                sent += piece.len() as u64;
                let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
                tokio::time::sleep_until(due).await;
                write.write_all(piece).await.map_err(|e| e.to_string())?;
            }
        } else {
            sent += chunk.len() as u64;
            write.write_all(&chunk).await.map_err(|e| e.to_string())?;
        }
    }
    write.close().await.map_err(|e| e.to_string())?;
    drop(permit);
    tracing::info!(image = %request.image, bytes = sent,
        took_ms = started.elapsed().as_millis() as u64, "sent image to a peer");
    Ok(())
}

async fn write_line<W: futures_util::io::AsyncWrite + Unpin>(
    write: &mut W,
    answer: &Answer,
) -> Result<(), String> {
    let mut line = serde_json::to_vec(answer).map_err(|e| e.to_string())?;
    line.push(b'\n');
    write.write_all(&line).await.map_err(|e| e.to_string())?;
    write.flush().await.map_err(|e| e.to_string())
}
