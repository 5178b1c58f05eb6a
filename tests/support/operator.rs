//! The operator's own `run` in-process, as the integration tiers start it: its flags, a
//! captured audit log, its own metrics registry, and a clean stop.

use std::time::Duration;

use kube::Client;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use clap::Parser;

use amazon_seller_operator::config::{Cli, Command, RunArgs};
use amazon_seller_operator::observability::audit::AuditLog;
use amazon_seller_operator::observability::logging::{self, LogFormat};
use amazon_seller_operator::observability::metrics::Metrics;
use amazon_seller_operator::operator::{self, Deps, RunError};

use super::Captured;
use super::lwa_emulator::LwaEmulator;

/// The command line of one `run`, as a test states it; [`RunFlags::args`] parses it as the
/// binary would.
#[derive(Clone, Debug)]
pub struct RunFlags {
    argv: Vec<String>,
}

impl Default for RunFlags {
    fn default() -> Self {
        Self::new()
    }
}

impl RunFlags {
    /// `run` with its metrics on a free loopback port (parallel instances share the machine).
    pub fn new() -> Self {
        Self {
            argv: [
                "amazon-seller-operator",
                "run",
                "--metrics-addr",
                "127.0.0.1:0",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }

    /// Adds `name value`.
    pub fn flag(mut self, name: &str, value: impl AsRef<str>) -> Self {
        self.argv.push(name.to_owned());
        self.argv.push(value.as_ref().to_owned());
        self
    }

    /// Adds a flag that takes no value.
    pub fn switch(mut self, flag: &str) -> Self {
        self.argv.push(flag.to_owned());
        self
    }

    /// Keys, Lease and public key in `namespace`.
    pub fn operator_namespace(self, namespace: &str) -> Self {
        self.flag("--operator-namespace", namespace)
    }

    /// Watching only `namespaces`.
    pub fn watching(self, namespaces: &[&str]) -> Self {
        self.flag("--watch-namespace", namespaces.join(","))
    }

    /// Asking `lwa` for tokens, trusting its CA.
    pub fn lwa(self, lwa: &LwaEmulator) -> Self {
        self.flag("--lwa-endpoint", lwa.https_url())
            .flag("--lwa-ca-file", lwa.ca_file().display().to_string())
    }

    /// Reconciling at once, without a Lease.
    pub fn without_leader_election(self) -> Self {
        self.switch("--leader-election=false")
    }

    /// Without the HTTPS server's admission webhook.
    pub fn without_webhook(self) -> Self {
        self.switch("--webhook-enabled=false")
    }

    /// Serving the webhook on loopback `port` with self-managed certificates: issued into
    /// Secret `secret` (valid for 127.0.0.1 too), reloaded every second, their CA kept in the
    /// caBundle of both webhook configurations, named `configurations`.
    pub fn self_managed_webhook(self, port: u16, secret: &str, configurations: &str) -> Self {
        self.flag("--webhook-addr", format!("127.0.0.1:{port}"))
            .flag("--webhook-cert-mode", "self-managed")
            .flag("--webhook-cert-secret", secret)
            .flag("--webhook-extra-san", "127.0.0.1")
            .flag("--webhook-cert-reload-interval", "1s")
            .flag("--validating-webhook-configuration", configurations)
            .flag("--mutating-webhook-configuration", configurations)
    }

    /// The parsed arguments.
    pub fn args(&self) -> RunArgs {
        match Cli::parse_from(&self.argv).command {
            Command::Run(args) => *args,
            _ => unreachable!("the argv starts with run"),
        }
    }
}

/// How a `run` that was asked to stop ended, when not cleanly.
#[derive(Debug)]
pub enum Unclean {
    /// It did not stop within 30 s.
    Hung,
    /// Its task panicked.
    Panicked(tokio::task::JoinError),
    /// It returned an error.
    Failed(RunError),
}

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

    /// Whether `run` has returned already (before a stop, only an error ends it).
    pub fn has_stopped(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops it, requiring a clean exit within 30 s; returns its audit log and metrics.
    pub async fn stop(self) -> (Captured, Metrics) {
        match self.try_stop().await {
            Ok(ended) => ended,
            Err(Unclean::Hung) => panic!("operator stops within 30 s"),
            Err(Unclean::Panicked(e)) => panic!("operator task: {e:?}"),
            Err(Unclean::Failed(e)) => panic!("operator ran without error: {e:?}"),
        }
    }

    /// Stops it; returns its audit log and metrics after a clean exit within 30 s, and how it
    /// ended otherwise.
    pub async fn try_stop(mut self) -> Result<(Captured, Metrics), Unclean> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(Duration::from_secs(30), &mut self.task).await {
            Err(_) => Err(Unclean::Hung),
            Ok(Err(e)) => Err(Unclean::Panicked(e)),
            Ok(Ok(Err(e))) => Err(Unclean::Failed(e)),
            Ok(Ok(Ok(()))) => Ok((self.audit.clone(), self.metrics.clone())),
        }
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
