//! The alert rules with real Prometheus tools: `promtool check rules` and `promtool test rules`
//! over deploy/prometheus/, `promtool check metrics` over the operator's exposition, and a real
//! Prometheus server that scrapes the operator's admin server on loopback and raises the alerts.
//!
//! Without promtool or prometheus (Debian package `prometheus`; `make test` installs it) these
//! tests say so loudly and pass, except under `CI=true`, where they fail.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use amazon_seller_operator::observability::metrics::{
    AccessOutcome, AdmissionDecision, KeyStats, RefreshOutcome,
};
use amazon_seller_operator::observability::{
    AdminState, AuditEvent, AuditLog, Category, Metrics, Outcome,
};

use support::eventually::eventually;
use support::operator::Admin;
use support::repo_path;

/// The path of `name` on PATH, or `None` after a loud message (a panic under `CI=true`).
fn tool(name: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let message = format!(
            "PROMETHEUS TOOLS TIER NOT RUN ({test}): `{name}` is not installed. \
             Run the README test command (make test), or apt-get install prometheus."
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message}");
        }
        eprintln!("\n!!!! {message}\n");
    }
    found
}

fn rules_dir() -> PathBuf {
    repo_path("deploy/prometheus")
}

fn rule_tests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(rules_dir().join("tests"))
        .expect("deploy/prometheus/tests exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn yaml(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("readable YAML");
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every alerting rule in alerts.yaml.
fn alert_rules() -> Vec<serde_json::Value> {
    let rules = yaml(&rules_dir().join("alerts.yaml"));
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("tool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_rule_file() {
    let Some(promtool) = tool("promtool", "promtool_accepts_the_rule_file") else {
        return;
    };
    let text = run(Command::new(promtool)
        .args(["check", "rules"])
        .arg(rules_dir().join("alerts.yaml")));
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn promtool_unit_tests_of_every_alert_pass() {
    let Some(promtool) = tool("promtool", "promtool_unit_tests_of_every_alert_pass") else {
        return;
    };
    let files = rule_tests();
    assert!(!files.is_empty());
    // promtool resolves `rule_files` relative to each test file.
    let text = run(Command::new(promtool).args(["test", "rules"]).args(&files));
    assert!(!text.contains("FAILED"), "{text}");
}

#[test]
fn every_alert_has_a_firing_and_a_silent_unit_test() {
    let mut fired: BTreeSet<String> = BTreeSet::new();
    let mut silent: BTreeSet<String> = BTreeSet::new();
    for file in rule_tests() {
        for test in yaml(&file)["tests"].as_array().expect("tests") {
            for case in test["alert_rule_test"].as_array().into_iter().flatten() {
                let name = case["alertname"].as_str().expect("alertname").to_owned();
                let expected = case["exp_alerts"].as_array().map_or(0, Vec::len);
                if expected == 0 {
                    silent.insert(name);
                } else {
                    fired.insert(name);
                }
            }
        }
    }
    let alerts: Vec<String> = alert_rules()
        .iter()
        .map(|r| r["alert"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(alerts.len(), 13, "{alerts:?}");
    for alert in &alerts {
        assert!(fired.contains(alert), "{alert} has no test where it fires");
        assert!(
            silent.contains(alert),
            "{alert} has no test where it stays silent"
        );
    }
}

/// GitHub's anchor for a Markdown heading: lower case, spaces to dashes, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_has_severity_summary_description_and_a_runbook_section() {
    let runbooks = std::fs::read_to_string(repo_path("docs/runbooks.md")).expect("runbooks");
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(anchor)
        .collect();
    for rule in alert_rules() {
        let name = rule["alert"].as_str().unwrap();
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("warning" | "critical")
            ),
            "{name}: severity"
        );
        for key in ["summary", "description"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|s| s.len() > 10),
                "{name}: {key}"
            );
        }
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .expect("runbook_url");
        let fragment = url.strip_prefix("docs/runbooks.md#").unwrap_or_else(|| {
            panic!("{name}: runbook_url {url} does not point into docs/runbooks.md")
        });
        assert_eq!(
            fragment,
            name.to_lowercase(),
            "{name}: one anchor per alert"
        );
        assert!(
            anchors.contains(fragment),
            "{name}: no `## {name}` section in docs/runbooks.md"
        );
    }
}

/// A registry with a sample in every family, so that every metric name appears in the output.
fn populated_metrics() -> Metrics {
    let m = Metrics::new().unwrap();
    m.set_connection_counts([("acme", true, 2), ("acme", false, 1)]);
    m.set_token_expiry("team-acme", "acme-us", "acme", 1_800_000_000);
    m.set_client_secret_expiry("team-acme", "acme-us", 1_900_000_000);
    m.set_unauthorized_mounts("team-acme", "acme-us", 1);
    m.record_refresh("acme", RefreshOutcome::Success, "none");
    m.observe_lwa_request(Duration::from_millis(120));
    m.record_reconcile("success", Duration::from_millis(15));
    m.record_admission(
        "pods",
        "CREATE",
        AdmissionDecision::Denied,
        "gateway_not_listed",
    );
    m.record_credential_access("acme", "gw-main", AccessOutcome::Allowed);
    m.set_encryption_keys([&KeyStats {
        key_id: "k1".into(),
        created_at: 1_700_000_000,
        sealed_secrets: 3,
    }]);
    m.set_security_log_review_last(Some(1_750_000_000));
    let audit = AuditLog::to_writer(std::io::sink(), m.clone(), "test").unwrap();
    audit
        .record(AuditEvent::new(
            Category::Authentication,
            "token_review",
            Outcome::Success,
        ))
        .unwrap();
    m
}

#[test]
fn alerts_use_only_metrics_the_operator_exports() {
    let exposition = populated_metrics().encode().unwrap();
    let exported: BTreeSet<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let rules = std::fs::read_to_string(rules_dir().join("alerts.yaml")).unwrap();
    let used: BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("amazon_seller_"))
        .collect();
    assert!(used.len() >= 8, "{used:?}");
    for metric in used {
        assert!(
            exported.contains(metric),
            "alerts.yaml uses {metric}, which the operator does not export: {exported:?}"
        );
    }
}

#[test]
fn promtool_accepts_the_metrics_exposition() {
    let Some(promtool) = tool("promtool", "promtool_accepts_the_metrics_exposition") else {
        return;
    };
    let exposition = populated_metrics().encode().unwrap();
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics complained:\n{}{}\n{exposition}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A plain HTTP/1.0 GET (no chunked encoding, connection closed after the response): status
/// and body.
async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the Prometheus child when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The active alerts as (alertname, connection label or "", state).
fn active_alerts(body: &str) -> BTreeMap<(String, String), String> {
    let value: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    value["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let label = |k: &str| a["labels"][k].as_str().unwrap_or("").to_owned();
            (
                (label("alertname"), label("connection")),
                a["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_scrapes_the_admin_server_and_raises_the_alerts() {
    let Some(prometheus) = tool(
        "prometheus",
        "real_prometheus_scrapes_the_admin_server_and_raises_the_alerts",
    ) else {
        return;
    };

    // The operator side: a registry with one token about to expire, one healthy token, a pod
    // outside the rules using acme-us's Secrets (none for acme-de), and a last security review
    // 15 days ago.
    let metrics = Metrics::new().unwrap();
    metrics.set_token_expiry("team-acme", "acme-us", "acme", now() + 60);
    metrics.set_token_expiry("team-acme", "acme-de", "acme", now() + 3600);
    metrics.set_unauthorized_mounts("team-acme", "acme-us", 1);
    metrics.set_unauthorized_mounts("team-acme", "acme-de", 0);
    metrics.set_security_log_review_last(Some(now() - 15 * 86400));
    let state = AdminState::new(metrics);
    state.set_ready(true);
    let server = Admin::start(state).await;
    let admin = server.addr;

    // Prometheus scraping it every second under both jobs the rules expect, evaluating the
    // shipped rules every second.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n\
             \x20 - job_name: amazon-seller-operator\n    static_configs:\n      - targets: ['{admin}']\n\
             \x20 - job_name: amazon-seller-operator-webhook\n    static_configs:\n      - targets: ['{admin}']\n",
            rules = rules_dir().join("alerts.yaml").display(),
        ),
    )
    .unwrap();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log_path = dir.path().join("prometheus.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("prometheus starts");
    let _running = Running(child);

    // Until the first scrapes, `absent(up{job=…})` makes the Down alerts pending; each rule
    // group is evaluated on its own schedule, so wait until they have cleared as well.
    let expected = [
        ("AmazonSellerTokenExpiringWithoutRefresh", "acme-us"),
        ("AmazonSellerUnauthorizedMounts", "acme-us"),
        ("AmazonSellerSecurityLogReviewOverdue", ""),
    ];
    let cleared = ["AmazonSellerOperatorDown", "AmazonSellerWebhookDown"];
    let waited = eventually(
        format!("{expected:?} raised and {cleared:?} cleared"),
        Duration::from_secs(60),
    )
    .every(Duration::from_millis(500))
    .try_poll(async || {
        let answer = http_get(web, "/api/v1/alerts").await;
        if let Ok((200, body)) = &answer {
            let alerts = active_alerts(body);
            let raised = expected.iter().all(|(name, conn)| {
                alerts
                    .get(&((*name).to_owned(), (*conn).to_owned()))
                    .is_some_and(|s| s == "pending" || s == "firing")
            });
            let down = cleared
                .iter()
                .any(|name| alerts.contains_key(&((*name).to_owned(), String::new())));
            if raised && !down {
                return Ok(alerts);
            }
        }
        Err(answer.map(|r| r.1))
    })
    .await;
    let alerts = waited.unwrap_or_else(|timed_out| {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!("{timed_out}\nprometheus log:\n{log}")
    });

    // The healthy token, and a connection whose pods all follow the rules, raise nothing.
    let names: Vec<&(String, String)> = alerts.keys().collect();
    for quiet in [
        "AmazonSellerTokenExpiringWithoutRefresh",
        "AmazonSellerUnauthorizedMounts",
    ] {
        assert!(
            !alerts.contains_key(&(quiet.to_owned(), "acme-de".to_owned())),
            "{names:?}"
        );
    }
    // Access that no longer holds fires at once (no `for:`), not merely pending.
    assert_eq!(
        alerts.get(&(
            "AmazonSellerUnauthorizedMounts".to_owned(),
            "acme-us".to_owned()
        )),
        Some(&"firing".to_owned()),
        "{names:?}"
    );
    let (status, body) = http_get(web, "/api/v1/query?query=amazon_seller_build_info")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(env!("CARGO_PKG_VERSION")), "{body}");

    server.stop().await;
}
