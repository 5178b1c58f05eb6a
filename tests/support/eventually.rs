//! Waiting for what happens in its own time: a controller's reconcile, a watch catching up, a
//! server becoming ready, an alert firing. Every wait has a deadline, and a wait that runs out
//! says what it waited for and what it saw last, so a failure reads as a finding, not a hang.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// A wait for `what`, up to a deadline; see [`eventually`].
#[must_use = "a wait does nothing until one of until, poll or try_poll is awaited"]
pub struct Eventually {
    what: String,
    within: Duration,
    every: Duration,
}

/// Waits up to `within` for `what` (a phrase completing "waiting for …"), looking every 100 ms.
pub fn eventually(what: impl Into<String>, within: Duration) -> Eventually {
    Eventually {
        what: what.into(),
        within,
        every: Duration::from_millis(100),
    }
}

/// A wait that ran out: what it waited for, for how long, and the last thing it saw.
#[derive(Debug)]
pub struct TimedOut<S> {
    pub what: String,
    pub within: Duration,
    pub last: S,
}

impl<S: fmt::Debug> fmt::Display for TimedOut<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}; last observed: {:#?}",
            self.within, self.what, self.last
        )
    }
}

impl Eventually {
    /// Looks every `interval` instead of every 100 ms.
    pub fn every(mut self, interval: Duration) -> Self {
        self.every = interval;
        self
    }

    /// Observes until `done` holds for what `observe` returns, and returns that observation;
    /// panics at the deadline with the last one.
    pub async fn until<S, F, Fut>(self, mut observe: F, done: impl Fn(&S) -> bool) -> S
    where
        S: fmt::Debug,
        F: FnMut() -> Fut,
        Fut: Future<Output = S>,
    {
        let done = &done;
        self.poll(|| {
            let observed = observe();
            async move {
                let seen = observed.await;
                if done(&seen) { Ok(seen) } else { Err(seen) }
            }
        })
        .await
    }

    /// Probes until `probe` returns `Ok`, and returns its value; `Err` carries what the probe
    /// saw instead. Panics at the deadline with the last `Err`.
    pub async fn poll<T, S, F, Fut>(self, probe: F) -> T
    where
        S: fmt::Debug,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, S>>,
    {
        match self.try_poll(probe).await {
            Ok(value) => value,
            Err(timed_out) => panic!("{timed_out}"),
        }
    }

    /// As [`Eventually::poll`], but returns the timeout instead of panicking, for callers that
    /// report a failed step rather than fail the test there.
    ///
    /// The probes are plain closures returning futures (`async ||` closures that only borrow
    /// are such closures), not `AsyncFnMut`: a wait inside a spawned task must be `Send`, and
    /// the compiler cannot prove that of an `AsyncFnMut`'s future borrowing the test's state.
    pub async fn try_poll<T, S, F, Fut>(self, mut probe: F) -> Result<T, TimedOut<S>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, S>>,
    {
        let started = Instant::now();
        loop {
            let last = match probe().await {
                Ok(value) => return Ok(value),
                Err(seen) => seen,
            };
            if started.elapsed() >= self.within {
                return Err(TimedOut {
                    what: self.what,
                    within: self.within,
                    last,
                });
            }
            tokio::time::sleep(self.every).await;
        }
    }
}
