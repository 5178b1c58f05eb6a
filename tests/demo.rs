//! The newcomer demo (`make demo`, hack/demo.sh) end to end: its own control plane, the LWA
//! emulator and the operator's `run`, with its key outputs asserted. Uses the binaries this
//! test run built. Needs kubectl, etcd and the cached kube-apiserver (the test command installs
//! them); without them it says so loudly, and fails under `CI=true`.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::repo_path;

fn missing_tools() -> Vec<&'static str> {
    ["kubectl", "etcd", "curl", "openssl"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect()
}

struct StopDemo(PathBuf);

impl Drop for StopDemo {
    fn drop(&mut self) {
        let _ = Command::new(repo_path("hack/demo.sh"))
            .arg("stop")
            .env("ASO_DEMO_DIR", &self.0)
            .output();
    }
}

#[test]
fn the_demo_shows_a_ready_connection_masked_token_suspend_webhook_denials_and_a_verified_audit_log()
{
    let missing = missing_tools();
    if !missing.is_empty() {
        let message = format!("DEMO TEST NOT RUN: missing {missing:?}; run it through `make test`");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("\n!!!! {message}\n");
        return;
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_amazon-seller-operator"));
    let emulator = bin.parent().unwrap().join("examples").join("lwa_emulator");
    assert!(
        emulator.exists(),
        "{} not built (cargo test --all-targets builds it)",
        emulator.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("demo");
    let _stop = StopDemo(state.clone());
    let output = Command::new(repo_path("hack/demo.sh"))
        .env("ASO_DEMO_DIR", &state)
        .env("ASO_BIN", &bin)
        .env("ASO_EMULATOR_BIN", &emulator)
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");

    // The connection row: Ready, derived marketplace id and region.
    let row = stdout
        .lines()
        .find(|l| l.starts_with("acme-us ") && l.contains("True"))
        .unwrap_or_else(|| panic!("no Ready row for acme-us in:\n{stdout}"));
    assert!(
        row.contains("ATVPDKIKX0DER") && row.contains(" NA "),
        "{row}"
    );
    assert!(
        stdout.contains("access_token: Atza|…("),
        "token not shown masked:\n{stdout}"
    );
    assert!(stdout.contains("runtime Secret acme-us-sp-api: gone"));
    // The webhook, registered with the API server, refuses a pod that is not a listed gateway
    // and a user of another Team, and says why.
    assert!(
        stdout.contains(
            "admission webhook \"pods.connectors.openteam.io\" denied the request: \
             metadata.labels[\"connectors.openteam.io/gateway\"]: missing"
        ),
        "no gateway denial:\n{stdout}"
    );
    assert!(
        stdout.contains(
            "admission webhook \"connections.connectors.openteam.io\" denied the request: \
             \"bob\" is not a member of team \"acme\""
        ),
        "no Team denial:\n{stdout}"
    );
    for line in [
        " pod_create             denied   team-acme/acme-us missing_gateway_label",
        " connection_update      denied   team-acme/acme-us not_team_member",
    ] {
        assert!(
            stdout.contains(line),
            "audit line {line:?} missing:\n{stdout}"
        );
    }
    assert!(stdout.contains(
        "amazon_seller_credential_access_total{gateway=\"none\",outcome=\"denied\",team=\"acme\"} 1"
    ));
    assert!(stdout.contains("unsuspended: runtime Secret restored"));
    assert!(stdout.contains("LWA EMULATOR (local, not Amazon)"));
    for action in ["token_refresh", "connect", "suspend", "resume"] {
        assert!(
            stdout.contains(&format!(" {action} ")),
            "audit action {action} missing:\n{stdout}"
        );
    }
    assert!(
        stdout.contains(": OK: "),
        "audit verify did not pass:\n{stdout}"
    );
    assert!(stdout.contains("amazon_seller_token_refresh_total{"));
    assert!(stdout.contains("make demo-stop"));

    // No secret reaches the output: not the demo's client secret or refresh token, not the
    // issued access token (read back from the runtime Secret).
    let read = |name: &str| std::fs::read_to_string(state.join("lwa").join(name)).unwrap();
    let kubeconfig = state.join("plane").join("kubeconfig");
    let token = Command::new("kubectl")
        .args([
            "get",
            "secret",
            "acme-us-sp-api",
            "-n",
            "team-acme",
            "-o",
            "jsonpath={.data.access_token}",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD
        .decode(String::from_utf8_lossy(&token.stdout).trim())
        .unwrap();
    let token = String::from_utf8(token).unwrap();
    assert!(token.starts_with("Atza|"));
    for secret in [read("client-secret"), read("refresh-token"), token] {
        assert!(
            !stdout.contains(secret.trim()) && !stderr.contains(secret.trim()),
            "the demo printed a secret"
        );
    }
    let log = std::fs::read_to_string(state.join("operator.log")).unwrap();
    assert!(
        !log.contains(read("refresh-token").trim()),
        "the operator log holds the refresh token"
    );

    // `make demo-stop` leaves nothing running: no process mentions the demo's directory
    // (the operator, the emulator, etcd and kube-apiserver all take paths inside it).
    let stopped = Command::new(repo_path("hack/demo.sh"))
        .arg("stop")
        .env("ASO_DEMO_DIR", &state)
        .output()
        .unwrap();
    assert!(stopped.status.success());
    let left = Command::new("pgrep")
        .args(["-af", state.to_str().unwrap()])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        left.trim().is_empty(),
        "still running after demo stop:\n{left}"
    );
}

#[test]
fn real_credentials_mode_names_the_missing_file_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("client-id"),
        "amzn1.application-oa2-client.demo\n",
    )
    .unwrap();
    let state = dir.path().join("demo");
    let output = Command::new(repo_path("hack/demo.sh"))
        .env("ASO_DEMO_DIR", &state)
        .env("ASO_DEMO_CREDENTIALS", dir.path())
        .output()
        .expect("demo runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("real-credentials mode:") && stderr.contains("/client-secret is missing"),
        "{stderr}"
    );
    assert!(!state.exists(), "nothing may be started or written");
}
