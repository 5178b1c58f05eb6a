//! `check-credentials` as a user runs it: the built binary against the LWA emulator over
//! HTTPS. Exit codes: 0 valid, 2 rejected, 3 LWA unavailable, 1 usage error. Neither output
//! stream ever holds a secret or a token.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use support::lwa_emulator::{LwaEmulator, Reply, Seller};

/// Runs the binary with `args` and only the given environment (no inherited `ASO_…` or proxy
/// variables), off the async runtime so the emulator keeps serving.
async fn aso(args: Vec<String>, env: Vec<(String, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_amazon-seller-operator"))
            .args(&args)
            .env_clear()
            .envs(env)
            .output()
            .expect("binary runs")
    })
    .await
    .expect("runner joins")
}

struct Case {
    emulator: LwaEmulator,
    seller: Seller,
    secret_file: PathBuf,
    token_file: PathBuf,
}

impl Case {
    async fn new() -> Self {
        let emulator = LwaEmulator::start().await;
        let seller = emulator.new_seller();
        let secret_file = emulator.scratch_dir().join("client-secret");
        let token_file = emulator.scratch_dir().join("refresh-token");
        // As `kubectl … | base64 -d > file` or an editor leaves them: with a newline.
        std::fs::write(&secret_file, format!("{}\n", seller.client_secret)).expect("write");
        std::fs::write(&token_file, format!("{}\n", seller.refresh_token)).expect("write");
        Self {
            emulator,
            seller,
            secret_file,
            token_file,
        }
    }

    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "check-credentials",
            "--client-id",
            &self.seller.client_id,
            "--client-secret-file",
            &self.secret_file.display().to_string(),
            "--refresh-token-file",
            &self.token_file.display().to_string(),
            "--lwa-endpoint",
            &self.emulator.https_url(),
            "--lwa-ca-file",
            &self.emulator.ca_file().display().to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    /// [`args`](Self::args) with `flag`'s value replaced.
    fn args_with(&self, flag: &str, value: &str) -> Vec<String> {
        let mut args = self.args(&[]);
        let at = args.iter().position(|a| a == flag).expect("flag present");
        args[at + 1] = value.to_owned();
        args
    }

    async fn run(&self, extra: &[&str]) -> Output {
        let output = aso(self.args(extra), Vec::new()).await;
        self.assert_no_secret(&output);
        output
    }

    /// Neither stream holds the client secret, the refresh token or any issued token.
    fn assert_no_secret(&self, output: &Output) {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !text.contains(&self.seller.client_secret),
            "client secret printed"
        );
        assert!(
            !text.contains(&self.seller.refresh_token),
            "refresh token printed"
        );
        for token in self.emulator.issued_tokens() {
            assert!(!text.contains(&token), "access token printed");
        }
        assert!(
            !text.contains("Atza|"),
            "something token-like printed: {text}"
        );
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn valid_credentials_exit_0_and_print_only_non_secret_facts() {
    let case = Case::new().await;
    let output = case.run(&[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("credentials valid"), "{text}");
    assert!(text.contains("token type: bearer"), "{text}");
    assert!(text.contains("lifetime:   3600s"), "{text}");
    assert!(text.contains("expires at: "), "{text}");
    assert_eq!(case.emulator.total_calls(), 1);
    assert_eq!(case.emulator.issued_tokens().len(), 1);
}

#[tokio::test]
async fn a_revoked_refresh_token_exits_2_and_says_the_seller_must_reauthorize() {
    let case = Case::new().await;
    case.emulator.revoke(&case.seller.refresh_token);
    let output = case.run(&[]).await;
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(
        text.contains("the seller must re-authorize the app"),
        "{text}"
    );
    assert!(stdout(&output).is_empty());
}

#[tokio::test]
async fn a_wrong_client_secret_exits_2_and_mentions_rotation() {
    let case = Case::new().await;
    case.emulator
        .register_app(&case.seller.client_id, &["amzn1.oa2-cs.v1.another"]);
    let output = case.run(&[]).await;
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("invalid_client"), "{text}");
    assert!(text.contains("180 days"), "{text}");
}

#[tokio::test]
async fn an_lwa_outage_exits_3() {
    let case = Case::new().await;
    case.emulator.always(
        &case.seller.client_id,
        Reply::Status {
            status: 503,
            retry_after: None,
        },
    );
    let output = case.run(&[]).await;
    assert_eq!(output.status.code(), Some(3));
    let text = stderr(&output);
    assert!(text.contains("HTTP 503"), "{text}");
    assert!(
        text.contains("nothing is known to be wrong with the credentials"),
        "{text}"
    );
}

#[tokio::test]
async fn rate_limiting_exits_3_and_says_when_to_retry() {
    let case = Case::new().await;
    case.emulator.always(
        &case.seller.client_id,
        Reply::RateLimited {
            retry_after: Some("30".into()),
        },
    );
    let output = case.run(&[]).await;
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("try again in 30s"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn a_slow_lwa_exits_3_after_the_timeout() {
    let case = Case::new().await;
    case.emulator
        .always(&case.seller.client_id, Reply::Slow(Duration::from_secs(10)));
    let started = std::time::Instant::now();
    let output = case.run(&["--lwa-timeout", "500ms"]).await;
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr(&output).contains("timed out"), "{}", stderr(&output));
    assert!(started.elapsed() < Duration::from_secs(9));
}

#[tokio::test]
async fn a_malformed_answer_exits_3() {
    let case = Case::new().await;
    case.emulator
        .always(&case.seller.client_id, Reply::Malformed);
    let output = case.run(&[]).await;
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("did not answer like LWA"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_exits_3() {
    let case = Case::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let endpoint = format!("http://127.0.0.1:{port}/auth/o2/token");
    let output = aso(case.args_with("--lwa-endpoint", &endpoint), Vec::new()).await;
    case.assert_no_secret(&output);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("no connection to LWA"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn an_untrusted_certificate_exits_3_and_points_at_the_ca_flag() {
    let case = Case::new().await;
    let mut args = case.args(&[]);
    let at = args
        .iter()
        .position(|a| a == "--lwa-ca-file")
        .expect("flag");
    args.drain(at..at + 2);
    let output = aso(args, Vec::new()).await;
    case.assert_no_secret(&output);
    assert_eq!(output.status.code(), Some(3));
    let text = stderr(&output);
    assert!(text.contains("--lwa-ca-file"), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert_eq!(case.emulator.total_calls(), 0);
}

#[tokio::test]
async fn usage_errors_exit_1_without_calling_lwa() {
    let case = Case::new().await;
    let empty = case.emulator.scratch_dir().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let missing = case.emulator.scratch_dir().join("missing");
    let not_a_ca = case.emulator.scratch_dir().join("not-a-ca.pem");
    std::fs::write(&not_a_ca, "hello\n").expect("write");
    let replace = |flag: &str, value: &str| case.args_with(flag, value);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            replace("--client-secret-file", &missing.display().to_string()),
            "failed to read the client secret file",
        ),
        (
            replace("--refresh-token-file", &empty.display().to_string()),
            "it is empty",
        ),
        (replace("--client-id", " "), "--client-id is empty"),
        (
            replace("--lwa-endpoint", "http://api.amazon.com/auth/o2/token"),
            "must use https",
        ),
        (
            replace("--lwa-ca-file", &not_a_ca.display().to_string()),
            "holds no PEM certificate",
        ),
        (case.args(&["--lwa-timeout", "soon"]), "invalid duration"),
        (case.args(&["--no-such-flag"]), "unexpected argument"),
        (
            vec!["check-credentials".into(), "--client-id".into(), "x".into()],
            "required",
        ),
    ];
    for (args, expected) in cases {
        let output = aso(args.clone(), Vec::new()).await;
        case.assert_no_secret(&output);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: expected {expected:?} in {}",
            stderr(&output)
        );
    }
    assert_eq!(case.emulator.total_calls(), 0);
}

#[tokio::test]
async fn flags_can_come_from_aso_environment_variables() {
    let case = Case::new().await;
    let env = vec![
        ("ASO_CLIENT_ID".to_owned(), case.seller.client_id.clone()),
        (
            "ASO_CLIENT_SECRET_FILE".to_owned(),
            case.secret_file.display().to_string(),
        ),
        (
            "ASO_REFRESH_TOKEN_FILE".to_owned(),
            case.token_file.display().to_string(),
        ),
        ("ASO_LWA_ENDPOINT".to_owned(), case.emulator.https_url()),
        (
            "ASO_LWA_CA_FILE".to_owned(),
            case.emulator.ca_file().display().to_string(),
        ),
    ];
    let output = aso(vec!["check-credentials".into()], env).await;
    case.assert_no_secret(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}
