//! Tier 1 (no cluster): the admin HTTP server over real TCP, and `audit verify` through the
//! built binary on logs written by the operator's own `AuditLog`.

mod support;

use support::Captured;
use support::operator::Admin;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use amazon_seller_operator::error::Categorized;
use amazon_seller_operator::observability::audit::{self, AuditRecord};
use amazon_seller_operator::observability::metrics::RefreshOutcome;
use amazon_seller_operator::observability::{
    AdminServer, AdminState, AuditEvent, AuditLog, Category, Metrics, Outcome,
};

/// A plain HTTP/1.0 GET: status, headers and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_owned())
}

#[tokio::test]
async fn admin_server_serves_metrics_health_and_readiness() {
    let metrics = Metrics::new().unwrap();
    metrics.record_refresh("acme", RefreshOutcome::Success, "none");
    let state = AdminState::new(metrics);
    let admin = Admin::start(state.clone()).await;
    let addr = admin.addr;

    let (status, head, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(body.contains(
        "amazon_seller_token_refresh_total{outcome=\"success\",reason=\"none\",team=\"acme\"} 1"
    ));

    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    // Not ready until the caller says so, then ready, then not ready again (shutting down).
    assert_eq!(http_get(addr, "/readyz").await.0, 503);
    state.set_ready(true);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    state.set_ready(false);
    assert_eq!(http_get(addr, "/readyz").await.0, 503);
    assert_eq!(http_get(addr, "/nothing-here").await.0, 404);

    // Shutdown ends the server task cleanly. (Whether the port then refuses connections is not
    // asserted: under parallel tests another listener may take the freed port at once.)
    admin.stop().await;
}

#[tokio::test]
async fn admin_server_serves_the_active_public_key_and_follows_a_rotation() {
    use amazon_seller_operator::crypto::{Keyring, PublicKey};
    let keyring = std::sync::Arc::new(std::sync::RwLock::new(Keyring::generate(
        jiff::Timestamp::now(),
    )));
    let admin =
        Admin::start(AdminState::new(Metrics::new().unwrap()).with_keyring(keyring.clone())).await;
    let addr = admin.addr;

    let (status, head, body) = http_get(addr, "/public-key").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    // The same document the ConfigMap holds, which `seal --public-key FILE` reads.
    let first_id = keyring.read().unwrap().active().id().to_owned();
    assert_eq!(
        body,
        keyring.read().unwrap().active().public_key().to_json()
    );
    assert_eq!(PublicKey::from_json(&body).unwrap().id(), first_id);
    // No private key in it.
    let private: serde_json::Value =
        serde_json::from_str(&keyring.read().unwrap().to_json()).unwrap();
    let private_key = private["keys"][0]["privateKey"].as_str().unwrap();
    assert!(!body.contains(private_key));

    keyring.write().unwrap().rotate(jiff::Timestamp::now());
    let (_, _, body) = http_get(addr, "/public-key").await;
    let rotated = PublicKey::from_json(&body).unwrap();
    assert_ne!(rotated.id(), first_id);

    // A process without a keyring says so.
    let bare = Admin::start(AdminState::new(Metrics::new().unwrap())).await;
    assert_eq!(http_get(bare.addr, "/public-key").await.0, 404);

    admin.stop().await;
    bare.stop().await;
}

#[tokio::test]
async fn binding_a_taken_address_fails_with_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = AdminServer::bind(addr, AdminState::new(Metrics::new().unwrap()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert_eq!(err.category(), "admin_bind");
}

/// An operator log: a segment of audit records with ordinary log lines in between, as on the
/// operator's standard output.
fn operator_log() -> Vec<String> {
    let out = Captured::default();
    let log = AuditLog::to_writer(out.clone(), Metrics::new().unwrap(), "operator-0").unwrap();
    for connection in ["acme-us", "acme-de", "acme-jp"] {
        log.record(
            AuditEvent::new(
                Category::CredentialAccess,
                "refresh_token",
                Outcome::Success,
            )
            .actor("amazon-seller-operator")
            .team("acme")
            .namespace("team-acme")
            .connection(connection),
        )
        .unwrap();
    }
    log.record(
        AuditEvent::new(
            Category::GatewayActivity,
            "mount_runtime_secret",
            Outcome::Denied,
        )
        .actor("system:serviceaccount:team-acme:web")
        .team("acme")
        .namespace("team-acme")
        .connection("acme-us")
        .reason("gateway_not_listed"),
    )
    .unwrap();
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        lines.push(format!(
            r#"{{"timestamp":"2026-05-16T10:00:0{i}Z","level":"INFO","fields":{{"message":"reconciled"}},"target":"amazon_seller_operator"}}"#
        ));
        lines.push(line.to_owned());
    }
    lines
}

fn write_log(dir: &Path, name: &str, lines: &[String]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path.to_str().unwrap().to_owned()
}

fn verify(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amazon-seller-operator"))
        .arg("audit")
        .arg("verify")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn audit_verify_reports_an_intact_log_with_counts_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), "operator.log", &operator_log());
    let output = verify(&[&path]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("OK: 5 audit records in 1 segments, 5 other lines ignored"),
        "{text}"
    );
    assert!(text.contains("credential_access=3"), "{text}");
    assert!(text.contains("gateway_activity=1"), "{text}");
    assert!(text.contains("head: line 10 seq 4"), "{text}");
}

#[test]
fn audit_verify_names_the_line_and_seq_of_each_kind_of_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let original = operator_log();
    // Audit records sit on the even lines (index 1, 3, 5, 7, 9 = seq 0..4).
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "modified",
            {
                let mut l = original.clone();
                l[7] = l[7].replace("\"connection\":\"acme-jp\"", "\"connection\":\"acme-uk\"");
                l
            },
            "BROKEN at line 8 (seq 3): hash does not match",
        ),
        (
            "deleted",
            {
                let mut l = original.clone();
                l.remove(5);
                l
            },
            "BROKEN at line 7 (seq 3): expected seq 2",
        ),
        (
            "inserted",
            {
                let mut l = original.clone();
                let copy = l[3].clone();
                l.insert(8, copy);
                l
            },
            "BROKEN at line 9 (seq 1): expected seq 4",
        ),
        (
            "reordered",
            {
                let mut l = original.clone();
                l.swap(5, 7);
                l
            },
            "BROKEN at line 6 (seq 3): expected seq 2",
        ),
    ];
    for (kind, lines, expected) in cases {
        let path = write_log(dir.path(), &format!("{kind}.log"), &lines);
        let output = verify(&[&path]);
        let text = stdout(&output);
        assert_eq!(output.status.code(), Some(1), "{kind}: {text}");
        assert!(
            text.contains(expected),
            "{kind}: expected {expected:?} in {text}"
        );
    }
}

#[test]
fn audit_verify_reads_standard_input_with_kubectl_timestamps() {
    let input: String = operator_log()
        .iter()
        .map(|l| format!("2026-05-16T10:00:00.000000001Z {l}\n"))
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_amazon-seller-operator"))
        .args(["audit", "verify", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.starts_with("-: OK: 5 audit records"), "{text}");
}

#[test]
fn audit_verify_of_a_rotated_file_needs_allow_partial_start() {
    let dir = tempfile::tempdir().unwrap();
    let rotated = operator_log()[4..].to_vec();
    let path = write_log(dir.path(), "rotated.log", &rotated);
    let output = verify(&[&path]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("does not begin with a segment start"));
    let output = verify(&[&path, "--allow-partial-start"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
}

/// A boolean flag reads like a boolean: alone it is true (even right before the file, which it
/// must not take as its value), `--no-…` or `=false` turns it off, the last spelling wins, and
/// the environment variable works as before.
#[test]
fn allow_partial_start_reads_like_a_boolean() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), "rotated.log", &operator_log()[4..]);
    let cases: [(&[&str], Option<&str>, i32); 7] = [
        (&["--allow-partial-start", &path], None, 0),
        (&[&path, "--allow-partial-start=true"], None, 0),
        (&[&path, "--allow-partial-start=false"], None, 1),
        (
            &["--allow-partial-start", &path, "--no-allow-partial-start"],
            None,
            1,
        ),
        (
            &["--no-allow-partial-start", &path, "--allow-partial-start"],
            None,
            0,
        ),
        (&[&path], Some("true"), 0),
        (&[&path, "--no-allow-partial-start"], Some("true"), 1),
    ];
    for (args, env, code) in cases {
        let mut command = Command::new(env!("CARGO_BIN_EXE_amazon-seller-operator"));
        command.args(["audit", "verify"]).args(args);
        if let Some(value) = env {
            command.env("ASO_ALLOW_PARTIAL_START", value);
        }
        let output = command.output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?} with ASO_ALLOW_PARTIAL_START={env:?}: {}{}",
            stdout(&output),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn audit_verify_exit_codes_for_unreadable_and_empty_input() {
    let output = verify(&["does-not-exist.log"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .starts_with("error: failed to read does-not-exist.log:")
    );

    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), "plain.log", &["an ordinary line".to_owned()]);
    let output = verify(&[&path]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("no audit records found"));
}

#[test]
fn the_documented_shell_recipe_recomputes_the_hash() {
    // docs/audit-log.md: the hash is SHA-256 over the line without its `,"hash":"…"` field.
    let line = operator_log()[3].clone();
    let record: AuditRecord = serde_json::from_str(&line).unwrap();
    let mut child = Command::new("sh")
        .args(["-c", r#"sed 's/,"hash":"[0-9a-f]*"}$/}/' | sha256sum"#])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(line.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let digest = String::from_utf8(output.stdout).unwrap();
    assert_eq!(digest.split(' ').next(), Some(record.hash.as_str()));
    assert_eq!(record.compute_hash().unwrap(), record.hash);
    assert_eq!(record.log_type, audit::LOG_TYPE);
}
