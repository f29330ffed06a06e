//! Supervision of the node's vital tasks: a task that ends (returns or panics) while the node
//! is not stopping has failed. One that can start afresh without harm is restarted, with a
//! growing delay and a budget ([`next`]); one that cannot (it owned state that went with it:
//! the document, the swarm, the agent's pod network), or that keeps failing, puts the node in
//! condition [`DEGRADED`], naming the tasks and how they ended. The condition travels with the
//! next heartbeat, so every peer sees it, and a degraded node holds no leader role
//! ([`crate::nodes::controller`] never picks it), so the cluster's controllers move to a
//! healthy node instead of failing round after round on this one.
//!
//! [`Supervisor`] spawns on the node's `TaskTracker`; it holds the [`Conditions`] handle and
//! the record of what failed (behind a std `Mutex`: one insert and one read per failure).
//!
//! A test hook makes a task fail on purpose: [`FAIL_TASK_ENV`] (`SHOAL_TEST_FAIL_TASK`), read
//! once at start, `<task>:<seconds>`, e.g. `state:5`: that task ends that many seconds after
//! the node started (and at once whenever it is restarted after that).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::observed::Conditions;

/// The condition of a node one of whose vital tasks failed for good.
pub const DEGRADED: &str = "Degraded";

/// The test hook's environment variable (see the module documentation). Not a setting: it
/// exists for integration tests, and names no user-facing behaviour.
pub const FAIL_TASK_ENV: &str = "SHOAL_TEST_FAIL_TASK";

/// The first delay before a restart; doubled for each restart within [`RESTART_WINDOW`].
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// The longest delay before a restart.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(10);
/// How many restarts a task gets within [`RESTART_WINDOW`]; one more failure degrades the
/// node: a task that fails that often would not serve anyway.
const MAX_RESTARTS: usize = 5;
/// The window in which restarts are counted.
const RESTART_WINDOW: Duration = Duration::from_secs(300);

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// It returned.
    Returned,
    /// It panicked, with the panic's message.
    Panicked(String),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Returned => f.write_str("ended unexpectedly"),
            Exit::Panicked(m) => write!(f, "panicked: {m}"),
        }
    }
}

/// What to do once a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The node is stopping: nothing.
    Done,
    /// Start it again after this delay.
    Restart(Duration),
    /// Set the node [`DEGRADED`].
    Degrade,
}

/// What to do after a task ended (pure): nothing while the node stops; a restart while the
/// task is restartable and has had fewer than [`MAX_RESTARTS`] restarts lately
/// (`recent_restarts`), after a delay doubling with each; else degrade.
pub fn next(stopping: bool, restartable: bool, recent_restarts: usize) -> Next {
    if stopping {
        return Next::Done;
    }
    if !restartable || recent_restarts >= MAX_RESTARTS {
        return Next::Degrade;
    }
    let factor = 1u32 << recent_restarts.min(16);
    Next::Restart(RESTART_DELAY.saturating_mul(factor).min(MAX_RESTART_DELAY))
}

/// The message of the [`DEGRADED`] condition: every failed task and how, by name (pure).
pub fn message(failed: &BTreeMap<&'static str, String>) -> String {
    let parts: Vec<String> = failed
        .iter()
        .map(|(task, how)| format!("task {task} {how}"))
        .collect();
    parts.join("; ")
}

/// The test hook: which task fails, and when after the node's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailHook {
    pub task: String,
    pub after: Duration,
}

impl FailHook {
    /// Parses `<task>:<seconds>` (pure); None for anything else.
    pub fn parse(value: &str) -> Option<FailHook> {
        let (task, secs) = value.trim().split_once(':')?;
        let secs: f64 = secs.trim().parse().ok()?;
        if task.trim().is_empty() || !secs.is_finite() || secs < 0.0 {
            return None;
        }
        Some(FailHook {
            task: task.trim().to_string(),
            after: Duration::from_secs_f64(secs),
        })
    }

    /// The hook set in the environment, if any (logged: nobody should meet it by chance).
    pub fn from_env() -> Option<FailHook> {
        let value = std::env::var(FAIL_TASK_ENV).ok()?;
        let hook = FailHook::parse(&value);
        match &hook {
            Some(h) => tracing::warn!(task = %h.task, after = ?h.after,
                "test hook {FAIL_TASK_ENV} set: that task will fail on purpose"),
            None => tracing::warn!(%value,
                "ignoring {FAIL_TASK_ENV}: expected <task>:<seconds>"),
        }
        hook
    }
}

/// Spawns the node's vital tasks and watches them (see the module documentation).
#[derive(Clone)]
pub struct Supervisor {
    tracker: TaskTracker,
    stop: CancellationToken,
    conditions: Conditions,
    failed: Arc<Mutex<BTreeMap<&'static str, String>>>,
    hook: Option<(FailHook, Instant)>,
}

impl Supervisor {
    /// Tasks go on `tracker`; the node is stopping once `stop` is cancelled; failures are
    /// reported through `conditions`.
    pub fn new(
        tracker: TaskTracker,
        stop: CancellationToken,
        conditions: Conditions,
        hook: Option<FailHook>,
    ) -> Supervisor {
        Supervisor {
            tracker,
            stop,
            conditions,
            failed: Arc::default(),
            hook: hook.map(|h| (h, Instant::now())),
        }
    }

    /// Runs `task`, which cannot be restarted: its end degrades the node.
    pub fn vital<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut once = Some(task);
        self.supervise(name, false, move || once.take());
    }

    /// Runs the task `start` makes, and a new one each time it fails, within the restart
    /// budget; then the node is degraded.
    pub fn restartable<M, F>(&self, name: &'static str, mut start: M)
    where
        M: FnMut() -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        self.supervise(name, true, move || Some(start()));
    }

    /// The tasks that failed for good so far, with how.
    pub fn failed(&self) -> BTreeMap<&'static str, String> {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn supervise<M, F>(&self, name: &'static str, restartable: bool, mut start: M)
    where
        M: FnMut() -> Option<F> + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        self.tracker.spawn(async move {
            let mut restarts: VecDeque<Instant> = VecDeque::new();
            while let Some(task) = start() {
                let handle = this.tracker.spawn(this.hooked(name, task));
                let exit = match handle.await {
                    Ok(()) => Exit::Returned,
                    Err(e) if e.is_panic() => Exit::Panicked(panic_message(e.into_panic())),
                    // Cancelled: only at runtime shutdown.
                    Err(_) => return,
                };
                let now = Instant::now();
                while restarts
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= RESTART_WINDOW)
                {
                    restarts.pop_front();
                }
                match next(this.stop.is_cancelled(), restartable, restarts.len()) {
                    Next::Done => return,
                    Next::Restart(delay) => {
                        tracing::error!(task = name, how = %exit, ?delay,
                            "a vital task failed; restarting it");
                        restarts.push_back(now);
                        tokio::select! {
                            _ = this.stop.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                    Next::Degrade => {
                        this.degrade(name, &exit, restartable);
                        return;
                    }
                }
            }
        });
    }

    fn degrade(&self, name: &'static str, exit: &Exit, restarted: bool) {
        let how = if restarted {
            format!("{exit} (after {MAX_RESTARTS} restarts)")
        } else {
            exit.to_string()
        };
        tracing::error!(task = name, how = %how,
            "a vital task failed for good: this node is degraded and gives up its roles");
        let all = {
            let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
            failed.insert(name, how);
            message(&failed)
        };
        self.conditions.set(DEGRADED, all);
    }

    /// `task`, ending at the test hook's time when the hook names it.
    fn hooked<F>(&self, name: &'static str, task: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let at = self
            .hook
            .as_ref()
            .filter(|(h, _)| h.task == name)
            .map(|(h, start)| *start + h.after);
        async move {
            match at {
                None => task.await,
                Some(at) => tokio::select! {
                    _ = task => {}
                    _ = tokio::time::sleep_until(at) => {
                        tracing::warn!(task = name, "test hook: failing the task on purpose");
                    }
                },
            }
        }
    }
}

/// Runs `f` when dropped: at the end of a task, whether it returned or panicked.
pub fn on_drop<F: FnOnce()>(f: F) -> OnDrop<F> {
    OnDrop(Some(f))
}

/// See [`on_drop`].
pub struct OnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// The message of a panic's payload.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn what_follows_a_tasks_end() {
        let s = Duration::from_secs;
        let cases = [
            // (stopping, restartable, recent restarts) -> next
            ((true, true, 0), Next::Done),
            ((true, false, 0), Next::Done),
            ((true, true, 9), Next::Done),
            ((false, false, 0), Next::Degrade),
            ((false, true, 0), Next::Restart(s(1))),
            ((false, true, 1), Next::Restart(s(2))),
            ((false, true, 3), Next::Restart(s(8))),
            ((false, true, 4), Next::Restart(s(10))),
            ((false, true, 5), Next::Degrade),
            ((false, true, 50), Next::Degrade),
        ];
        for ((stopping, restartable, recent), want) in cases {
            assert_eq!(
                next(stopping, restartable, recent),
                want,
                "stopping {stopping}, restartable {restartable}, {recent} recent restarts"
            );
        }
    }

    #[test]
    fn the_hook_parses_task_and_seconds() {
        let cases = [
            ("state:5", Some(("state", Duration::from_secs(5)))),
            (
                " controllers : 0.5 ",
                Some(("controllers", Duration::from_millis(500))),
            ),
            ("state:0", Some(("state", Duration::ZERO))),
            ("state", None),
            ("state:", None),
            (":5", None),
            ("state:-1", None),
            ("state:soon", None),
            ("state:inf", None),
        ];
        for (value, want) in cases {
            let want = want.map(|(task, after)| FailHook {
                task: task.to_string(),
                after,
            });
            assert_eq!(FailHook::parse(value), want, "{value:?}");
        }
    }

    #[test]
    fn the_message_names_every_failed_task() {
        let failed: BTreeMap<&'static str, String> = [
            ("state", "ended unexpectedly".to_string()),
            ("agent", "panicked: boom".to_string()),
        ]
        .into();
        assert_eq!(
            message(&failed),
            "task agent panicked: boom; task state ended unexpectedly"
        );
    }

    fn supervisor(hook: Option<FailHook>) -> (Supervisor, Conditions, CancellationToken) {
        let (conditions, _rx) = Conditions::new();
        let stop = CancellationToken::new();
        let s = Supervisor::new(TaskTracker::new(), stop.clone(), conditions.clone(), hook);
        (s, conditions, stop)
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_cannot_restart_degrades_the_node_and_a_stop_does_not() {
        let (s, conditions, stop) = supervisor(None);
        s.vital("state", async {
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        s.vital("agent", async { panic!("boom") });
        let stopper = stop.clone();
        s.vital("network", async move { stopper.cancelled().await });
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            conditions.current().get(DEGRADED).map(String::as_str),
            Some("task agent panicked: boom; task state ended unexpectedly")
        );
        // A task that ends because the node stops is no failure.
        stop.cancel();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!s.failed().contains_key("network"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_restartable_task_restarts_until_its_budget_is_spent() {
        let (s, conditions, stop) = supervisor(None);
        let starts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = starts.clone();
        s.restartable("controllers", move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                // The first two runs fail at once, the third keeps running.
                if n >= 2 {
                    std::future::pending::<()>().await;
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(
            conditions.current().is_empty(),
            "{:?}",
            conditions.current()
        );

        // The hook fails its task on every run from its time on: after the budget, degraded.
        let hook = FailHook::parse("proxies:5").unwrap();
        let (s, conditions, _stop2) = supervisor(Some(hook));
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = runs.clone();
        s.restartable("proxies", move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::pending::<()>()
        });
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(conditions.current().is_empty());
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            runs.load(std::sync::atomic::Ordering::SeqCst),
            MAX_RESTARTS + 1
        );
        let message = conditions.current().get(DEGRADED).cloned().unwrap();
        assert_eq!(
            message,
            "task proxies ended unexpectedly (after 5 restarts)"
        );
        stop.cancel();
    }
}
