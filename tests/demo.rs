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
fn the_demo_shows_a_ready_connection_masked_token_suspend_both_refusals_and_a_verified_audit_log() {
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

    // The connection row: Ready, derived region; -o wide adds the marketplace id and more.
    let row = stdout
        .lines()
        .find(|l| l.starts_with("acme-us ") && l.contains("True"))
        .unwrap_or_else(|| panic!("no Ready row for acme-us in:\n{stdout}"));
    assert!(row.contains(" NA "), "{row}");
    let wide = stdout
        .lines()
        .find(|l| l.starts_with("acme-us ") && l.contains("ATVPDKIKX0DER"))
        .unwrap_or_else(|| panic!("no -o wide row for acme-us in:\n{stdout}"));
    assert!(
        wide.contains("A3FHEXAMPLEYWS") && wide.contains(r#"["gw-main"]"#),
        "{wide}"
    );
    assert!(
        stdout.contains("access_token: Atza|…("),
        "token not shown masked:\n{stdout}"
    );
    assert!(stdout.contains("runtime Secret acme-us-sp-api: gone"));
    // Two Teams set up as on a real cluster: RBAC refuses another Team's read, the webhook
    // another Team's gateway pod that RBAC let through, each with its reason; the demo checked
    // both itself (it fails when a layer lets the request through) and says which did what.
    assert!(
        stdout.contains(
            "is forbidden: User \"bob\" cannot get resource \"amazonsellerconnections\" in API \
             group \"connectors.openteam.io\" in the namespace \"team-acme\"\n  -> refused by rbac"
        ),
        "no RBAC refusal:\n{stdout}"
    );
    // Both of the webhook's reasons: the pipeline is not Team acme's (the identity rule comes
    // first), and its gateway is not one the connection lists.
    assert!(
        stdout.contains(
            "admission webhook \"pods.connectors.openteam.io\" denied the request: \
             \"system:serviceaccount:default:deployer\" is not a member of team \"acme\""
        ) && stdout.contains(
            "metadata.labels[\"connectors.openteam.io/gateway\"]: gateway \"gw-globex\" is not \
             listed in connection \"acme-us\" spec.gateways (gw-main)"
        ) && stdout.contains("-> refused by webhook"),
        "no webhook refusal:\n{stdout}"
    );
    assert!(
        stdout.contains(
            "RBAC stopped the read (bob has no RoleBinding in team-acme); the webhook stopped \
             the pod (RBAC allowed it, but the pipeline is not in Team acme and gw-globex is not \
             in acme-us spec.gateways)."
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(" pod_create             denied   team-acme/acme-us not_team_member"),
        "no audit record of the refused pod:\n{stdout}"
    );
    assert!(stdout.contains(
        "amazon_seller_credential_access_total{gateway=\"gw-globex\",outcome=\"denied\",team=\"acme\"} 1"
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

/// The first `make demo` (or test run) builds kube-apiserver; two started together must not
/// build into the same directory. build.sh holds a lock: the second run says it waits, then
/// uses the first one's binary, and a later run uses the binary without taking the lock. A
/// stand-in `go` makes the "build" take three seconds instead of five minutes.
#[test]
fn two_runs_at_once_build_kube_apiserver_once_and_the_second_says_it_waits() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("bin");
    std::fs::create_dir(&fake).unwrap();
    let go = fake.join("go");
    std::fs::write(
        &go,
        r#"#!/bin/sh
# A stand-in for the Go toolchain, doing what build.sh asks in the shape it expects.
here="$(dirname "$0")"
case "$1 $2" in
  "mod download")
    printf 'module k8s.io/kubernetes

go 1.26
' >"$here/kubernetes.mod"
    printf '{
	"GoMod": "%s",
}
' "$here/kubernetes.mod" ;;
  "env GOMODCACHE") echo "$here/modcache" ;;
  "mod tidy") ;;
  build*)
    while [ "$1" != "-o" ]; do shift; done
    echo built >>"$here/builds"
    sleep 3
    printf '#!/bin/sh
echo "Kubernetes v1.36.3"
' >"$2"
    chmod +x "$2" ;;
esac
"#,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&go, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cache = dir.path().join("cache");
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap());
    let build = || {
        Command::new(repo_path("hack/control-plane/build.sh"))
            .env("ASO_CACHE_DIR", &cache)
            .env("PATH", &path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = build();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let second = build();
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    assert!(first.status.success() && second.status.success());
    let binary = cache.join("control-plane/v1.36.3/kube-apiserver");
    assert_eq!(text(&first.stdout).trim(), binary.to_str().unwrap());
    assert_eq!(text(&second.stdout).trim(), binary.to_str().unwrap());
    let builds = std::fs::read_to_string(fake.join("builds")).unwrap();
    assert_eq!(builds.lines().count(), 1, "built more than once");
    // The first says what it builds, that it happens once, how long it takes and where it goes.
    let said = text(&first.stderr);
    for words in [
        "building kube-apiserver v1.36.3 from the Go module proxy: once, about 5 minutes on 2 cores",
        &format!(
            "later runs reuse it from {}",
            binary.parent().unwrap().display()
        ),
        "kube-apiserver v1.36.3 built:",
    ] {
        assert!(said.contains(words), "{words:?} not in:\n{said}");
    }
    let waited = text(&second.stderr);
    assert!(
        waited.contains("another run is building kube-apiserver v1.36.3")
            && waited.contains("waiting for it to finish")
            && waited.contains("ready (built by the other run)"),
        "{waited}"
    );
    // Once built, a run neither builds nor waits.
    let later = build().wait_with_output().unwrap();
    assert_eq!(text(&later.stdout).trim(), binary.to_str().unwrap());
    assert!(later.stderr.is_empty(), "{}", text(&later.stderr));
    assert_eq!(
        std::fs::read_to_string(fake.join("builds")).unwrap(),
        builds
    );
}
