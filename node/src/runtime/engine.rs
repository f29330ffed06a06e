//! [`Engine`]: the container runtime once it is reachable. At boot the Docker engine may come
//! up after `shoald`, so a task connects in the background and retries; until then every
//! caller gets [`RuntimeError::Unavailable`] with the reason, and the node serves its API.

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
}

impl Engine {
    /// An engine that is already connected (tests, the simulator).
    pub fn ready(runtime: Arc<dyn Runtime>) -> Engine {
        let engine = Engine::pending();
        let _ = engine.inner.runtime.set(runtime);
        engine
    }

    /// An engine not connected yet.
    pub fn pending() -> Engine {
        Engine {
            inner: Arc::new(Inner {
                runtime: OnceLock::new(),
                last_error: Mutex::new("the container engine is not connected yet".into()),
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

    /// Connects to Docker, retrying every `retry` until it answers or `shutdown` fires.
    pub async fn connect_docker(
        self,
        host: Option<String>,
        retry: Duration,
        shutdown: CancellationToken,
    ) {
        let mut warned = false;
        loop {
            match DockerRuntime::connect_to(host.as_deref()).await {
                Ok(docker) => {
                    let _ = self.inner.runtime.set(Arc::new(docker));
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
        let r = Engine::ready(Arc::new(SimRuntime::new(["img"])));
        assert!(r.get().is_ok());
    }
}
