//! [`Service`]: what a bandvote service is apart from where it listens: its routes, its readiness
//! checks, the tasks that run beside them and what to finish after the last request. A service's
//! own process serves it alone on its listener; `bandvote up` merges several services onto one
//! listener and runs the same tasks, so the two cannot drift apart.

use std::{future::Future, pin::Pin, time::Duration};

use anyhow::Context;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::{health, http, shutdown::spawn_named};

/// A future a service runs.
pub type Task = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

type Start = Box<dyn FnOnce(CancellationToken) -> Task + Send>;
type Wrap = Box<dyn FnOnce(Router) -> Router + Send>;

fn both(first: health::Check, second: health::Check) -> health::Check {
    health::check(move || {
        let (first, second) = (first.clone(), second.clone());
        async move {
            first().await?;
            second().await
        }
    })
}

/// Routes, readiness checks and tasks of one or more services.
pub struct Service {
    router: Router,
    checks: Vec<(&'static str, health::Check)>,
    tasks: Vec<(&'static str, Start)>,
    after_drain: Vec<Task>,
    wraps: Vec<Wrap>,
    limits: http::Limits,
}

impl Default for Service {
    /// A service with no routes of its own (only checks or tasks).
    fn default() -> Self {
        Self::new(Router::new())
    }
}

impl Service {
    /// A service answering `router` (its own routes; the health endpoints and the JSON fallbacks
    /// are added when it is served).
    pub fn new(router: Router) -> Self {
        Self {
            router,
            checks: Vec::new(),
            tasks: Vec::new(),
            after_drain: Vec::new(),
            wraps: Vec::new(),
            limits: http::Limits::default(),
        }
    }

    /// The limits its listener applies to clients (merged services keep the first one's); the
    /// event streams declared stay.
    pub fn limits(mut self, limits: http::Limits) -> Self {
        let streams = std::mem::take(&mut self.limits.event_streams);
        self.limits = limits;
        self.limits.event_streams.extend(streams);
        self
    }

    /// Declares `path` a long-lived event stream: its `GET`s are answered without hyper's
    /// per-connection buffers ([`http::Limits::event_streams`]).
    pub fn event_stream(mut self, path: &'static str) -> Self {
        self.limits.event_streams.push(path);
        self
    }

    /// Adds a readiness check, named in `/readyz`.
    pub fn check(mut self, name: &'static str, check: health::Check) -> Self {
        self.checks.push((name, check));
        self
    }

    /// Adds readiness checks.
    pub fn checks(mut self, checks: impl IntoIterator<Item = (&'static str, health::Check)>) -> Self {
        self.checks.extend(checks);
        self
    }

    /// The readiness checks, for another listener that reports this service's readiness.
    pub fn readiness(&self) -> Vec<(&'static str, health::Check)> {
        self.checks.clone()
    }

    /// Adds a task started with the shutdown token when the service is served; a task that fails
    /// shuts the whole process down.
    pub fn task<F, Fut>(mut self, name: &'static str, start: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.tasks.push((name, Box::new(move |shutdown| Box::pin(start(shutdown)))));
        self
    }

    /// Adds work to finish once the listener has drained (a producer's flush).
    pub fn after_drain(mut self, work: impl Future<Output = anyhow::Result<()>> + Send + 'static) -> Self {
        self.after_drain.push(Box::pin(work));
        self
    }

    /// Wraps the whole router, health endpoints and fallbacks included, when served (CORS, so that
    /// preflights reach it).
    pub fn wrap(mut self, wrap: impl FnOnce(Router) -> Router + Send + 'static) -> Self {
        self.wraps.push(Box::new(wrap));
        self
    }

    /// This service and `other` on one listener: routes merged, tasks and wraps added, checks
    /// added (two checks of one name become one that needs both: `kafka` for the producer and the
    /// consumer asks different things of the same server).
    pub fn merge(mut self, other: Service) -> Self {
        self.router = self.router.merge(other.router);
        for (name, check) in other.checks {
            match self.checks.iter_mut().find(|(existing, _)| *existing == name) {
                Some((_, first)) => *first = both(first.clone(), check),
                None => self.checks.push((name, check)),
            }
        }
        self.tasks.extend(other.tasks);
        self.after_drain.extend(other.after_drain);
        self.wraps.extend(other.wraps);
        self.limits.event_streams.extend(other.limits.event_streams);
        self
    }

    /// Serves on `listener` until `shutdown`, with the tasks running beside; then drains in-flight
    /// requests (bounded by `grace`), waits for the tasks, and finishes the after-drain work.
    pub async fn serve(
        self,
        listener: impl http::Accept,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> anyhow::Result<()> {
        let mut router = http::with_fallbacks(self.router.merge(health::router(self.checks)));
        for wrap in self.wraps {
            router = wrap(router);
        }
        let tasks: Vec<_> = self
            .tasks
            .into_iter()
            .map(|(name, start)| (name, spawn_named(name, shutdown.clone(), start(shutdown.clone()))))
            .collect();
        let served = http::serve_with(listener, router, shutdown.clone(), grace, self.limits).await;
        shutdown.cancel();
        for (name, task) in tasks {
            task.await.with_context(|| format!("the {name} task panicked"))??;
        }
        for work in self.after_drain {
            work.await?;
        }
        served
    }
}

#[cfg(test)]
mod tests {
    use super::Service;
    use crate::health;

    fn fixed(answer: Result<(), &'static str>) -> health::Check {
        health::check(move || async move { answer.map_err(health::CheckError::from) })
    }

    #[tokio::test]
    async fn merged_checks_of_one_name_need_both_to_pass() {
        let merged = Service::default()
            .check("kafka", fixed(Ok(())))
            .merge(Service::default().check("kafka", fixed(Err("topic not ready"))).check("redis", fixed(Ok(()))));
        let checks = merged.readiness();
        assert_eq!(checks.iter().map(|(name, _)| *name).collect::<Vec<_>>(), ["kafka", "redis"]);
        assert_eq!((checks[0].1)().await.map_err(|e| e.to_string()), Err("topic not ready".into()));
        assert!((checks[1].1)().await.is_ok());
    }
}
