//! [`Engine`]: the container runtime once it is reachable. At boot the Docker engine may come
//! up after `shoald`, so a task connects in the background and retries; until then every
//! caller gets [`RuntimeError::Unavailable`] with the reason, and the node serves its API.
//!
//! Once connected, the handle stays: when the engine stops later (and its socket goes), calls
//! fail with `Unavailable` and work again as soon as it is back, with no reconnection, because
//! the bollard client opens a new connection to the socket for each call once the old ones
//! are closed (checked by `docker::tests::the_client_works_again_once_the_socket_is_back`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{DockerRuntime, Runtime, RuntimeError};

/// A cheap, cloneable handle on the runtime, connected or not yet.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: OnceLock<Arc<dyn Runtime>>,
    /// Why the engine is not connected yet. A std Mutex: held only to copy a string.
    last_error: Mutex<String>,
    /// Where the engine is (its socket), for messages. A std Mutex as above.
    endpoint: Mutex<String>,
    /// Whether a connection has been tried yet: before, the engine is not known to be away.
    tried: AtomicBool,
}

impl Engine {
    /// An engine that is already connected (tests, the simulator).
    pub fn ready(runtime: Arc<dyn Runtime>) -> Engine {
        let engine = Engine::pending();
        let _ = engine.inner.runtime.set(runtime);
        engine.inner.tried.store(true, Ordering::Relaxed);
        engine
    }

    /// An engine not connected yet.
    pub fn pending() -> Engine {
        Engine {
            inner: Arc::new(Inner {
                runtime: OnceLock::new(),
                last_error: Mutex::new("the container engine is not connected yet".into()),
                endpoint: Mutex::new("the container engine".into()),
                tried: AtomicBool::new(false),
            }),
        }
    }

    /// The runtime, or why there is none.
    pub fn get(&self) -> Result<Arc<dyn Runtime>, RuntimeError> {
        match self.inner.runtime.get() {
            Some(r) => Ok(r.clone()),
            None => Err(RuntimeError::Unavailable {
                message: self
                    .inner
                    .last_error
                    .lock()
                    .map(|m| m.clone())
                    .unwrap_or_default(),
            }),
        }
    }

    /// Whether a connection has been tried (or the engine was given ready): until then a
    /// missing runtime only means that `shoald` is starting.
    pub fn tried(&self) -> bool {
        self.inner.tried.load(Ordering::Relaxed)
    }

    /// Where the engine is: its socket (`unix:///var/run/docker.sock`) once
    /// [`Engine::connect_docker`] runs, else `the container engine`.
    pub fn endpoint(&self) -> String {
        self.inner
            .endpoint
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Names where the engine is, for messages (tests, the simulator).
    pub fn with_endpoint(self, endpoint: &str) -> Engine {
        if let Ok(mut m) = self.inner.endpoint.lock() {
            *m = endpoint.to_string();
        }
        self
    }

    /// Connects to Docker, retrying every `retry` until it answers or `shutdown` fires.
    pub async fn connect_docker(
        self,
        host: Option<String>,
        retry: Duration,
        shutdown: CancellationToken,
    ) {
        let mut warned = false;
        if let Ok(mut m) = self.inner.endpoint.lock() {
            *m = super::docker::address(host.as_deref());
        }
        loop {
            match DockerRuntime::connect_to(host.as_deref()).await {
                Ok(docker) => {
                    let _ = self.inner.runtime.set(Arc::new(docker));
                    self.inner.tried.store(true, Ordering::Relaxed);
                    if warned {
                        tracing::info!("connected to the container engine");
                    }
                    return;
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "no container engine yet: pods cannot run \
                            on this node until it answers; retrying");
                        warned = true;
                    }
                    if let Ok(mut m) = self.inner.last_error.lock() {
                        *m = e.to_string();
                    }
                    self.inner.tried.store(true, Ordering::Relaxed);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(retry) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::runtime::SimRuntime;

    #[test]
    fn pending_then_ready() {
        let e = Engine::pending();
        assert!(matches!(e.get(), Err(RuntimeError::Unavailable { .. })));
        assert!(!e.tried());
        let r = Engine::ready(Arc::new(SimRuntime::new(["img"])));
        assert!(r.get().is_ok());
        assert!(r.tried());
        assert_eq!(r.endpoint(), "the container engine");
        assert_eq!(
            r.with_endpoint("unix:///x.sock").endpoint(),
            "unix:///x.sock"
        );
    }
}
