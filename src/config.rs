//! Command-line flags. Every flag has a doc comment (shown by `--help`) and an `ASO_…`
//! environment variable, so the same settings work from a shell, a Deployment or Helm values.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};

/// Keeps Amazon SP-API seller credentials sealed in Kubernetes and publishes fresh
/// Login-with-Amazon access tokens to a Team's gateways.
#[derive(Debug, Parser)]
#[command(name = "amazon-seller-operator", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every CustomResourceDefinition the operator serves, as multi-document YAML.
    Crd {
        /// Write one `<crd name>.yaml` file per CRD into this directory instead of printing.
        #[arg(long, env = "ASO_OUTPUT_DIR")]
        output_dir: Option<PathBuf>,
    },
    /// Print the marketplace table: code, name, marketplace id, region and SP-API endpoints.
    Marketplaces {
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table, env = "ASO_OUTPUT")]
        output: OutputFormat,
    },
    /// Check AmazonSellerConnection manifests offline with the rules the webhook applies.
    ///
    /// Prints a line per document (where it starts, what it is, valid or skipped) and per
    /// problem with its field path; exits 1 if any document has a problem or any input cannot
    /// be read. Other kinds are reported and skipped.
    Validate {
        /// A YAML or JSON file (multi-document allowed), a directory (every `*.yaml`, `*.yml`
        /// and `*.json` below it), or `-` for standard input. Repeat the flag or separate with
        /// commas.
        #[arg(
            long = "filename",
            short = 'f',
            env = "ASO_FILENAME",
            required = true,
            value_delimiter = ','
        )]
        filenames: Vec<PathBuf>,
    },
    /// Run the operator: reconcile connections into runtime Secrets until SIGTERM.
    ///
    /// The cluster is chosen as kubectl chooses it: `--kubeconfig` (or `ASO_KUBECONFIG`), else
    /// the files in `KUBECONFIG`, else `~/.kube/config`, else the in-cluster configuration of
    /// the pod's ServiceAccount (how the Helm chart runs it). `--context` picks a context of the
    /// kubeconfig instead of its current-context. Without any cluster, `make demo` starts a
    /// local control plane and runs the operator against it.
    Run(Box<RunArgs>),
    /// Print a new operator key Secret manifest (for offline or GitOps installs).
    Keygen(KeygenArgs),
    /// Seal LWA credentials to the operator's public key; prints the credentials Secret YAML.
    Seal(SealArgs),
    /// Add a new active operator key in the cluster; the operator then re-seals every stored
    /// credential to it.
    RotateKey(KeyLocation),
    /// Remove operator keys that no credentials Secret is sealed to any more.
    PruneKeys(KeyLocation),
    /// Work with the operator's audit log.
    Audit {
        /// What to do with the audit log.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Exchange a refresh token for an LWA access token once, to check a set of credentials.
    ///
    /// Prints only non-secret facts (token type, lifetime), never a token or secret. Exits 0
    /// when LWA accepts the credentials, 2 when it rejects them (for example a revoked refresh
    /// token), 3 when LWA cannot be reached or fails, 1 on a usage error.
    CheckCredentials(CheckCredentialsArgs),
    /// Print the Validating- and MutatingWebhookConfiguration for a webhook reached at a URL,
    /// for an operator run outside the cluster (development, the demo). In-cluster installs get
    /// them from the Helm chart.
    ///
    /// Without `--webhook-ca-file` the caBundle is left empty for `run --webhook-cert-mode
    /// self-managed` to fill in; until then the API server refuses the writes they cover.
    WebhookConfiguration(WebhookConfigurationArgs),
}

/// Flags of `webhook-configuration`. Named as `run` names the same settings, so each flag's
/// environment variable is `ASO_` + its name like every other flag's.
#[derive(Debug, clap::Args)]
pub struct WebhookConfigurationArgs {
    /// Base URL of the webhook's HTTPS server, e.g. `https://127.0.0.1:8443`.
    #[arg(long = "webhook-url", env = "ASO_WEBHOOK_URL")]
    pub url: String,
    /// Name of both configurations (what `run` takes as `--validating-webhook-configuration`
    /// and `--mutating-webhook-configuration`).
    #[arg(
        long = "webhook-configuration-name",
        env = "ASO_WEBHOOK_CONFIGURATION_NAME",
        default_value = "amazon-seller-operator"
    )]
    pub name: String,
    /// PEM file of the CA that signs the serving certificate, written into caBundle.
    #[arg(long = "webhook-ca-file", env = "ASO_WEBHOOK_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Judge only these namespaces (the operator's `--watch-namespace`; repeat the flag or
    /// separate with commas). Default: every Team namespace.
    #[arg(
        long = "watch-namespace",
        env = "ASO_WATCH_NAMESPACE",
        value_delimiter = ','
    )]
    pub watch_namespaces: Vec<String>,
    /// Seconds the API server waits for an answer (1-30).
    #[arg(long = "webhook-timeout-seconds", env = "ASO_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(1..=30))]
    pub timeout_seconds: i32,
}

/// The `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check an audit log's hash chain: prints OK with counts and the last record, or the
    /// first record where the chain breaks. Exit 0 intact, 1 broken or empty, 2 unreadable.
    ///
    /// Ordinary log lines mixed into the file are skipped.
    Verify(AuditVerifyArgs),
}

/// Flags of `audit verify`.
#[derive(Debug, clap::Args)]
pub struct AuditVerifyArgs {
    /// The log file, or `-` for standard input.
    pub file: PathBuf,
    /// Accept a log whose first record is not a segment start (a file rotated in the
    /// middle of a process's chain) and check the chain from that record on.
    #[arg(long, env = "ASO_ALLOW_PARTIAL_START", default_value_t = false,
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          action = ArgAction::Set, overrides_with = "no_allow_partial_start")]
    allow_partial_start: bool,
    /// The same as `--allow-partial-start=false`.
    #[arg(long, hide = true, overrides_with = "allow_partial_start")]
    no_allow_partial_start: bool,
}

impl AuditVerifyArgs {
    /// `--allow-partial-start`, unless a later `--no-allow-partial-start` turned it off.
    pub fn allow_partial_start(&self) -> bool {
        self.allow_partial_start && !self.no_allow_partial_start
    }
}

/// How `marketplaces` prints the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// A JSON array for scripts.
    Json,
}

/// Where the operator keeps its keys (shared by `run` and the key commands).
#[derive(Clone, Debug, clap::Args)]
pub struct KeyLocation {
    /// The namespace the operator runs in; its key Secret and public-key ConfigMap live there.
    #[arg(
        long,
        env = "ASO_OPERATOR_NAMESPACE",
        default_value = "amazon-seller-operator"
    )]
    pub operator_namespace: String,
    /// The name of the Secret holding the operator's keyring.
    #[arg(long, env = "ASO_KEY_SECRET", default_value = crate::names::DEFAULT_KEY_SECRET)]
    pub key_secret: String,
}

/// Flags of `keygen`.
#[derive(Clone, Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where the key Secret will be applied.
    #[command(flatten)]
    pub location: KeyLocation,
    /// Also write the public key document (for `seal --public-key`) to this file.
    #[arg(long, env = "ASO_PUBLIC_KEY_OUT")]
    pub public_key_out: Option<PathBuf>,
}

/// Flags of `seal`. Secret values are read from files (or `-` for standard input), never
/// from the command line, where they would land in shell history and process listings.
#[derive(Clone, Debug, clap::Args)]
pub struct SealArgs {
    /// The operator's public key document (`public-key.json` from the ConfigMap
    /// `amazon-seller-operator-public-key`, or from `keygen --public-key-out`).
    #[arg(
        long,
        env = "ASO_PUBLIC_KEY",
        required_unless_present = "public_key_from_cluster"
    )]
    pub public_key: Option<PathBuf>,
    /// Read the public key from the cluster (current kubeconfig context) instead of a file.
    #[arg(long, env = "ASO_PUBLIC_KEY_FROM_CLUSTER", default_value_t = false,
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          action = ArgAction::Set, conflicts_with = "public_key",
          overrides_with = "no_public_key_from_cluster")]
    public_key_from_cluster: bool,
    /// The same as `--public-key-from-cluster=false`.
    #[arg(long, hide = true, overrides_with = "public_key_from_cluster")]
    no_public_key_from_cluster: bool,
    /// The operator's namespace, for `--public-key-from-cluster`.
    #[arg(
        long,
        env = "ASO_OPERATOR_NAMESPACE",
        default_value = "amazon-seller-operator"
    )]
    pub operator_namespace: String,
    /// The Team that owns the credentials (the namespace's `connectors.openteam.io/team` label).
    #[arg(long, env = "ASO_TEAM")]
    pub team: String,
    /// The namespace the credentials Secret will be created in.
    #[arg(long, env = "ASO_NAMESPACE")]
    pub namespace: String,
    /// The name of the credentials Secret (the connection's `spec.credentialsSecretName`).
    #[arg(long, env = "ASO_NAME")]
    pub name: String,
    /// Label the Secret with the connection that uses it.
    #[arg(long, env = "ASO_CONNECTION")]
    pub connection: Option<String>,
    /// The LWA client id (`amzn1.application-oa2-client.…`); not a secret.
    #[arg(long, env = "ASO_CLIENT_ID")]
    pub client_id: String,
    /// File holding the LWA client secret (`-` for standard input).
    #[arg(long, env = "ASO_CLIENT_SECRET_FILE")]
    pub client_secret_file: PathBuf,
    /// File holding the seller's refresh token, `Atzr|…` (`-` for standard input).
    #[arg(long, env = "ASO_REFRESH_TOKEN_FILE")]
    pub refresh_token_file: PathBuf,
    /// File holding the next client secret during Amazon's rotation overlap.
    #[arg(long, env = "ASO_NEXT_CLIENT_SECRET_FILE")]
    pub next_client_secret_file: Option<PathBuf>,
    /// When the current client secret expires (RFC 3339), for the expiry alert.
    #[arg(long, env = "ASO_CLIENT_SECRET_EXPIRES_AT")]
    pub client_secret_expires_at: Option<String>,
}

impl SealArgs {
    /// `--public-key-from-cluster`, unless a later `--no-public-key-from-cluster` turned it off.
    pub fn public_key_from_cluster(&self) -> bool {
        self.public_key_from_cluster && !self.no_public_key_from_cluster
    }
}

/// Which cluster `run` talks to (see `run --help`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClusterArgs {
    /// The kubeconfig file to use instead of `KUBECONFIG`, `~/.kube/config` or the in-cluster
    /// configuration.
    #[arg(long, env = "ASO_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use instead of its current-context.
    #[arg(long, env = "ASO_CONTEXT")]
    pub context: Option<String>,
}

/// Flags of `run`.
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// Which cluster to talk to.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Where the operator keeps its keys.
    #[command(flatten)]
    pub keys: KeyLocation,
    /// Reconcile connections only in these namespaces (repeat the flag or separate with
    /// commas); all namespaces when absent.
    #[arg(
        long = "watch-namespace",
        env = "ASO_WATCH_NAMESPACE",
        value_delimiter = ','
    )]
    pub watch_namespaces: Vec<String>,
    /// How to reach LWA.
    #[command(flatten)]
    pub lwa: LwaClientArgs,
    /// Sustained LWA token requests per second, across all connections. Normal demand is about
    /// one refresh per connection per 40 minutes; leave room to catch up after an LWA outage
    /// (BENCHMARKS.md has the figures).
    #[arg(long, env = "ASO_LWA_QPS", default_value_t = 10.0)]
    pub lwa_qps: f64,
    /// LWA token requests allowed in a burst above the sustained rate.
    #[arg(long, env = "ASO_LWA_BURST", default_value_t = 20)]
    pub lwa_burst: u32,
    /// Elect a leader through a Lease so only one replica reconciles. Turn it off
    /// (`--no-leader-election` or `--leader-election=false`) only when a single replica runs.
    #[arg(long, env = "ASO_LEADER_ELECTION", default_value_t = true,
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          action = ArgAction::Set, overrides_with = "no_leader_election")]
    leader_election: bool,
    /// The same as `--leader-election=false`.
    #[arg(long, hide = true, overrides_with = "leader_election")]
    no_leader_election: bool,
    /// Name of the leader election Lease, in the operator's namespace.
    #[arg(long, env = "ASO_LEASE_NAME", default_value = "amazon-seller-operator")]
    pub lease_name: String,
    /// Seconds a leader's Lease lasts without renewal before another replica takes over.
    #[arg(long, env = "ASO_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// This replica's name: the Lease holder identity and the actor of its audit records.
    /// Defaults to the host (pod) name.
    #[arg(long, env = "ASO_IDENTITY")]
    pub identity: Option<String>,
    /// Address of the admin server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "ASO_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
    /// Credentials Secrets re-sealed per second after a key rotation.
    #[arg(long, env = "ASO_RESEAL_QPS", default_value_t = 5.0)]
    pub reseal_qps: f64,
    /// Connections reconciled at once, per controller (one per watched namespace, or one for
    /// the whole cluster). Bounds memory and API load when every connection is due at once,
    /// as after a restart; 0 is unbounded.
    #[arg(long, env = "ASO_RECONCILE_CONCURRENCY", default_value_t = 16)]
    pub reconcile_concurrency: u16,
    /// Log line format. Audit records follow it: JSON lines, or with `text` one `AUDIT` line
    /// each holding the same fields; `audit verify` checks either (docs/audit-log.md).
    #[arg(long, env = "ASO_LOG_FORMAT", value_enum, default_value_t = crate::observability::logging::LogFormat::Json)]
    pub log_format: crate::observability::logging::LogFormat,
    /// Log filter: a level (`info`) or directives (`info,kube=warn`).
    #[arg(long, env = "ASO_LOG_LEVEL", default_value = "info,kube=warn")]
    pub log_level: String,
    /// The admission webhook.
    #[command(flatten)]
    pub webhook: WebhookArgs,
}

impl RunArgs {
    /// `--leader-election` (the default), unless `--no-leader-election` or `=false` turned it off.
    pub fn leader_election(&self) -> bool {
        self.leader_election && !self.no_leader_election
    }
}

/// Where the webhook's serving certificate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CertMode {
    /// PEM files mounted by cert-manager or Helm; reloaded when their contents change.
    Files,
    /// The operator keeps its own CA and serving certificate in a Secret in its namespace,
    /// renews them, and keeps the webhook configurations' `caBundle` current.
    SelfManaged,
}

/// Flags of the admission webhook, served by every replica of `run`.
#[derive(Clone, Debug, clap::Args)]
pub struct WebhookArgs {
    /// Serve the admission webhook (`--no-webhook-enabled` or `--webhook-enabled=false` turns
    /// it off). Without it nothing enforces Team scoping, gateway-only runtime access or sealing
    /// on write (the configurations fail closed).
    #[arg(long, env = "ASO_WEBHOOK_ENABLED", default_value_t = true,
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          action = ArgAction::Set, overrides_with = "no_webhook_enabled")]
    webhook_enabled: bool,
    /// The same as `--webhook-enabled=false`.
    #[arg(long, hide = true, overrides_with = "webhook_enabled")]
    no_webhook_enabled: bool,
    /// Address of the webhook's HTTPS server (`/validate`, `/mutate`, `/healthz`, `/readyz`).
    #[arg(long, env = "ASO_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    pub webhook_addr: std::net::SocketAddr,
    /// Where the serving certificate comes from.
    #[arg(long, env = "ASO_WEBHOOK_CERT_MODE", value_enum, default_value_t = CertMode::Files)]
    pub webhook_cert_mode: CertMode,
    /// PEM certificate chain (`files` mode).
    #[arg(
        long,
        env = "ASO_WEBHOOK_CERT_FILE",
        default_value = "/etc/amazon-seller-operator/webhook-tls/tls.crt"
    )]
    pub webhook_cert_file: PathBuf,
    /// PEM private key (`files` mode).
    #[arg(
        long,
        env = "ASO_WEBHOOK_KEY_FILE",
        default_value = "/etc/amazon-seller-operator/webhook-tls/tls.key"
    )]
    pub webhook_key_file: PathBuf,
    /// How often the certificate files (or the self-managed Secret) are checked for changes.
    #[arg(long, env = "ASO_WEBHOOK_CERT_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_timeout)]
    pub webhook_cert_reload_interval: Duration,
    /// Secret in the operator's namespace holding the self-managed CA and serving certificate.
    #[arg(
        long,
        env = "ASO_WEBHOOK_CERT_SECRET",
        default_value = "amazon-seller-operator-webhook-tls"
    )]
    pub webhook_cert_secret: String,
    /// The webhook Service's name: the self-managed certificate is issued for its DNS names.
    #[arg(
        long,
        env = "ASO_WEBHOOK_SERVICE_NAME",
        default_value = "amazon-seller-operator-webhook"
    )]
    pub webhook_service_name: String,
    /// The webhook Service's namespace; the operator's namespace when absent.
    #[arg(long, env = "ASO_WEBHOOK_SERVICE_NAMESPACE")]
    pub webhook_service_namespace: Option<String>,
    /// Extra DNS names or IP addresses for the self-managed certificate, for a webhook the
    /// API server reaches by URL (repeat the flag or separate with commas).
    #[arg(
        long = "webhook-extra-san",
        env = "ASO_WEBHOOK_EXTRA_SAN",
        value_delimiter = ','
    )]
    pub webhook_extra_sans: Vec<String>,
    /// The ValidatingWebhookConfiguration whose `caBundle` self-managed mode keeps current.
    #[arg(
        long,
        env = "ASO_VALIDATING_WEBHOOK_CONFIGURATION",
        default_value = "amazon-seller-operator"
    )]
    pub validating_webhook_configuration: String,
    /// The MutatingWebhookConfiguration whose `caBundle` self-managed mode keeps current.
    #[arg(
        long,
        env = "ASO_MUTATING_WEBHOOK_CONFIGURATION",
        default_value = "amazon-seller-operator"
    )]
    pub mutating_webhook_configuration: String,
    /// How long one admission review may take before it is answered 503; keep it below the
    /// configurations' `timeoutSeconds` (10 s).
    #[arg(long, env = "ASO_WEBHOOK_REQUEST_TIMEOUT", default_value = "8s", value_parser = parse_timeout)]
    pub webhook_request_timeout: Duration,
    /// Team membership: members of Team `t` are in the group `<prefix>t`.
    #[arg(long, env = "ASO_TEAM_GROUP_PREFIX", default_value = "openteam:team:")]
    pub team_group_prefix: String,
    /// Groups that may act for every Team and set, change or remove namespaces' Team label
    /// (repeat the flag or separate with commas).
    #[arg(
        long = "admin-group",
        env = "ASO_ADMIN_GROUP",
        value_delimiter = ',',
        default_value = "system:masters"
    )]
    pub admin_groups: Vec<String>,
    /// Groups whose members may record SecurityLogReviews (repeat the flag or separate with
    /// commas).
    #[arg(
        long = "reviewer-group",
        env = "ASO_REVIEWER_GROUP",
        value_delimiter = ',',
        default_value = "openteam:security-reviewers"
    )]
    pub reviewer_groups: Vec<String>,
    /// Identities that create pods, ReplicaSets and Jobs for an owner object (repeat the flag
    /// or separate with commas): they may put a connection's runtime Secret to use only in an
    /// object with a controller ownerReference, made from a template a Team member wrote. The
    /// default covers the kube-controller-manager with and without per-controller
    /// ServiceAccounts.
    #[arg(
        long = "workload-controller",
        env = "ASO_WORKLOAD_CONTROLLER",
        value_delimiter = ',',
        default_value = "system:kube-controller-manager,system:serviceaccount:kube-system:replicaset-controller,system:serviceaccount:kube-system:deployment-controller,system:serviceaccount:kube-system:statefulset-controller,system:serviceaccount:kube-system:daemon-set-controller,system:serviceaccount:kube-system:job-controller,system:serviceaccount:kube-system:cronjob-controller"
    )]
    pub workload_controllers: Vec<String>,
    /// Serve the runtime credential endpoint
    /// `GET /v1/namespaces/<namespace>/connections/<name>/token` on the webhook's HTTPS server
    /// (`--webhook-addr`), for connections with `spec.delivery` `Endpoint` or `Both`. Callers
    /// authenticate with a projected ServiceAccount token (audience `connectors.openteam.io`);
    /// the operator then needs to create TokenReviews and get pods (docs/credential-endpoint.md).
    #[arg(long, env = "ASO_CREDENTIAL_ENDPOINT_ENABLED", default_value_t = false,
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          action = ArgAction::Set, overrides_with = "no_credential_endpoint_enabled")]
    credential_endpoint_enabled: bool,
    /// The same as `--credential-endpoint-enabled=false`.
    #[arg(long, hide = true, overrides_with = "credential_endpoint_enabled")]
    no_credential_endpoint_enabled: bool,
    /// Sustained runtime credential requests per second allowed per calling ServiceAccount;
    /// above it callers get 429 with `Retry-After`.
    #[arg(long, env = "ASO_CREDENTIAL_ENDPOINT_QPS", default_value_t = 5.0)]
    pub credential_endpoint_qps: f64,
    /// Runtime credential requests per ServiceAccount allowed in a burst above the sustained
    /// rate.
    #[arg(long, env = "ASO_CREDENTIAL_ENDPOINT_BURST", default_value_t = 20)]
    pub credential_endpoint_burst: u32,
    /// The operator's ServiceAccount (in the operator's namespace): the only identity that
    /// may write runtime Secrets.
    #[arg(
        long,
        env = "ASO_OPERATOR_SERVICE_ACCOUNT",
        default_value = "amazon-seller-operator"
    )]
    pub operator_service_account: String,
}

impl WebhookArgs {
    /// `--webhook-enabled` (the default), unless `--no-webhook-enabled` or `=false` turned it off.
    pub fn webhook_enabled(&self) -> bool {
        self.webhook_enabled && !self.no_webhook_enabled
    }

    /// `--credential-endpoint-enabled`, unless a later `--no-credential-endpoint-enabled` turned
    /// it off.
    pub fn credential_endpoint_enabled(&self) -> bool {
        self.credential_endpoint_enabled && !self.no_credential_endpoint_enabled
    }
}

/// Flags of `check-credentials`. Secrets are read from files, never from the command line,
/// where they would land in shell history and process listings.
#[derive(Clone, Debug, clap::Args)]
pub struct CheckCredentialsArgs {
    /// The LWA client id (`amzn1.application-oa2-client.…`); not a secret.
    #[arg(long, env = "ASO_CLIENT_ID")]
    pub client_id: String,
    /// File holding the LWA client secret (surrounding whitespace is ignored).
    #[arg(long, env = "ASO_CLIENT_SECRET_FILE")]
    pub client_secret_file: PathBuf,
    /// File holding the seller's refresh token, `Atzr|…` (surrounding whitespace is ignored).
    #[arg(long, env = "ASO_REFRESH_TOKEN_FILE")]
    pub refresh_token_file: PathBuf,
    /// How to reach LWA.
    #[command(flatten)]
    pub lwa: LwaClientArgs,
}

impl CheckCredentialsArgs {
    /// The check these flags ask for.
    pub fn options(&self) -> crate::lwa::check::CheckOptions {
        crate::lwa::check::CheckOptions {
            client_id: self.client_id.clone(),
            client_secret_file: self.client_secret_file.clone(),
            refresh_token_file: self.refresh_token_file.clone(),
            client: self.lwa.client_config(),
        }
    }
}

/// How to reach LWA's token endpoint (shared by `run` and `check-credentials`).
#[derive(Clone, Debug, clap::Args)]
pub struct LwaClientArgs {
    /// LWA's token endpoint: `https://…`, or `http://` to a loopback address only.
    #[arg(long, env = "ASO_LWA_ENDPOINT", default_value = crate::lwa::DEFAULT_ENDPOINT)]
    pub lwa_endpoint: String,
    /// A PEM file of extra CA certificates to trust for the endpoint, besides the Mozilla roots
    /// built into the binary (a private endpoint or a TLS-inspecting egress proxy).
    #[arg(long, env = "ASO_LWA_CA_FILE")]
    pub lwa_ca_file: Option<PathBuf>,
    /// How long to wait for a connection to LWA, e.g. `5s` or `500ms`.
    #[arg(long, env = "ASO_LWA_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_timeout)]
    pub lwa_connect_timeout: Duration,
    /// How long one token request may take in all, connection included.
    #[arg(long, env = "ASO_LWA_TIMEOUT", default_value = "15s", value_parser = parse_timeout)]
    pub lwa_timeout: Duration,
}

impl LwaClientArgs {
    /// The client settings these flags describe.
    pub fn client_config(&self) -> crate::lwa::LwaClientConfig {
        crate::lwa::LwaClientConfig {
            endpoint: self.lwa_endpoint.clone(),
            connect_timeout: self.lwa_connect_timeout,
            timeout: self.lwa_timeout,
            extra_ca_file: self.lwa_ca_file.clone(),
            ..crate::lwa::LwaClientConfig::default()
        }
    }
}

/// Parses a positive duration such as `5s`, `500ms` or `1m30s`.
fn parse_timeout(value: &str) -> Result<Duration, String> {
    let parsed: jiff::SignedDuration = value
        .parse()
        .map_err(|_| format!("invalid duration {value:?}: use for example \"5s\" or \"500ms\""))?;
    Duration::try_from(parsed)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{value:?} must be longer than zero"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag of every command can be set by the environment variable `ASO_` + its name,
    /// the one rule the docs give (a flag without a variable is reported too). A boolean's
    /// hidden `--no-…` form is set through its flag's variable.
    #[test]
    fn every_flag_has_the_environment_variable_its_name_gives() {
        fn walk(command: &clap::Command, path: &str, wrong: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let Some(long) = arg.get_long() else {
                    continue;
                };
                if matches!(long, "help" | "version") || negation(command, arg).is_some() {
                    continue;
                }
                let expected = format!("ASO_{}", long.to_uppercase().replace('-', "_"));
                let actual = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                if actual.as_deref() != Some(expected.as_str()) {
                    wrong.push(format!("{path} --{long}: {actual:?}, expected {expected}"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), wrong);
            }
        }
        let mut wrong = Vec::new();
        let command = Cli::command();
        walk(&command, command.get_name(), &mut wrong);
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    /// The flag a hidden `--no-<flag>` turns off, if `arg` is one.
    fn negation<'a>(command: &'a clap::Command, arg: &clap::Arg) -> Option<&'a clap::Arg> {
        let flag = arg.get_long()?.strip_prefix("no-")?;
        command
            .get_arguments()
            .find(|a| a.get_long() == Some(flag) && arg.is_hide_set())
    }

    fn is_boolean(arg: &clap::Arg) -> bool {
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_owned())
            .collect();
        values == ["true", "false"]
    }

    /// Booleans read like booleans: `--flag` alone is true, `--no-flag` false, and
    /// `--flag=true|false` (what the chart and scripts write) still works. `=` is required so
    /// a flag never swallows the next word (`audit verify --allow-partial-start FILE`).
    #[test]
    fn every_boolean_flag_takes_a_bare_form_a_no_form_and_an_explicit_value() {
        fn walk(command: &clap::Command, path: &str, wrong: &mut Vec<String>) {
            for arg in command
                .get_arguments()
                .filter(|a| is_boolean(a) && negation(command, a).is_none())
            {
                let Some(long) = arg.get_long() else {
                    continue;
                };
                let optional_value = arg.get_num_args() == Some((0..=1).into());
                if !optional_value || !arg.is_require_equals_set() {
                    wrong.push(format!("{path} --{long}: --{long} alone must mean true"));
                }
                let negated = command
                    .get_arguments()
                    .find(|a| a.get_long() == Some(&format!("no-{long}")));
                match negated {
                    Some(no) if negation(command, no).is_some() => {}
                    _ => wrong.push(format!("{path} --{long}: no hidden --no-{long}")),
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), wrong);
            }
        }
        let mut wrong = Vec::new();
        let command = Cli::command();
        walk(&command, command.get_name(), &mut wrong);
        assert!(wrong.is_empty(), "{wrong:#?}");

        let run = |args: &[&str]| -> RunArgs {
            let argv = ["amazon-seller-operator", "run"].iter().chain(args);
            match Cli::try_parse_from(argv).map(|cli| cli.command) {
                Ok(Command::Run(args)) => *args,
                other => panic!("{args:?}: {other:?}"),
            }
        };
        let cases: [(&[&str], bool, bool, bool); 9] = [
            (&[], true, true, false),
            (&["--leader-election"], true, true, false),
            (&["--no-leader-election"], false, true, false),
            (&["--leader-election=false"], false, true, false),
            (&["--leader-election=true"], true, true, false),
            (
                &["--no-leader-election", "--leader-election"],
                true,
                true,
                false,
            ),
            (
                &["--leader-election", "--no-leader-election"],
                false,
                true,
                false,
            ),
            (
                &["--no-webhook-enabled", "--credential-endpoint-enabled"],
                true,
                false,
                true,
            ),
            (
                &[
                    "--webhook-enabled=false",
                    "--credential-endpoint-enabled=false",
                ],
                true,
                false,
                false,
            ),
        ];
        for (args, leader, webhook, endpoint) in cases {
            let parsed = run(args);
            assert_eq!(
                (
                    parsed.leader_election(),
                    parsed.webhook.webhook_enabled(),
                    parsed.webhook.credential_endpoint_enabled()
                ),
                (leader, webhook, endpoint),
                "{args:?}"
            );
        }
        // A value must be attached with `=`: a separate word is not taken as the value.
        assert!(
            Cli::try_parse_from([
                "amazon-seller-operator",
                "run",
                "--leader-election",
                "false"
            ])
            .is_err()
        );
        let verify = Cli::try_parse_from([
            "amazon-seller-operator",
            "audit",
            "verify",
            "--allow-partial-start",
            "audit.log",
        ]);
        match verify.map(|cli| cli.command) {
            Ok(Command::Audit {
                command: AuditCommand::Verify(args),
            }) => {
                assert!(args.allow_partial_start());
                assert_eq!(args.file, PathBuf::from("audit.log"));
            }
            other => panic!("{other:?}"),
        }
    }
}
