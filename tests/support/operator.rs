//! The operator's own `run` in-process, as the integration tiers start it: captured audit
//! log, its own metrics registry, and a clean stop.

use std::time::Duration;

use kube::Client;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use amazon_seller_operator::config::RunArgs;
use amazon_seller_operator::observability::audit::AuditLog;
use amazon_seller_operator::observability::logging::{self, LogFormat};
use amazon_seller_operator::observability::metrics::Metrics;
use amazon_seller_operator::operator::{self, Deps, RunError};

use super::Captured;

/// One running operator instance.
pub struct RunningOperator {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), RunError>>,
    /// Its audit log.
    pub audit: Captured,
    /// Its metrics.
    pub metrics: Metrics,
}

impl RunningOperator {
    /// Starts `run` with `args` as `identity`, talking to the API server through `client`.
    pub fn start(client: &Client, identity: &str, args: RunArgs) -> Self {
        let metrics = Metrics::new().unwrap();
        let audit = Captured::default();
        let deps = Deps {
            client: client.clone(),
            url: "test".into(),
            identity: identity.to_owned(),
            metrics: metrics.clone(),
            audit: AuditLog::to_writer(audit.clone(), metrics.clone(), identity).unwrap(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(operator::run_with(args, deps, async move {
            let _ = stopped.await;
        }));
        Self {
            stop: Some(stop),
            task,
            audit,
            metrics,
        }
    }

    /// Stops it, requiring a clean exit within 30 s; returns its audit log and metrics.
    pub async fn stop(mut self) -> (Captured, Metrics) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("operator stops within 30 s")
            .expect("operator task")
            .expect("operator ran without error");
        (self.audit.clone(), self.metrics.clone())
    }
}

/// Every log line of this test binary, captured by a process-wide subscriber at debug level.
pub fn captured_logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let subscriber = logging::subscriber(LogFormat::Json, "debug", logs.clone()).unwrap();
        let _ = tracing::subscriber::set_global_default(subscriber);
        logs
    })
}

/// An admin server serving `state` on a free loopback port, until [`Admin::stop`].
pub struct Admin {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<Result<(), amazon_seller_operator::observability::admin::AdminError>>,
}

impl Admin {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start(state: amazon_seller_operator::observability::AdminState) -> Self {
        let server = amazon_seller_operator::observability::AdminServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            state,
        )
        .await
        .unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop,
            serving,
        }
    }

    /// Stops it, requiring a clean end of the server task.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.serving.await.unwrap().unwrap();
    }
}
