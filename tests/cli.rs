//! Tier 1 (no cluster): the CLI as a user runs it, through the built binary.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use support::repo_path;

fn aso(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amazon-seller-operator"))
        .args(args)
        .current_dir(repo_path(""))
        .output()
        .expect("binary runs")
}

fn aso_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_amazon-seller-operator"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(input.as_bytes())
        .expect("stdin written");
    child.wait_with_output().expect("binary finishes")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

#[test]
fn committed_crds_match_the_generator() {
    let output = aso(&["crd"]);
    assert!(output.status.success());
    let generated = stdout(&output);
    let mut files: Vec<_> = std::fs::read_dir(repo_path("crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let committed: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    assert!(
        generated == committed,
        "crds/ has drifted from `amazon-seller-operator crd`: run `make crds` and commit the result"
    );
}

#[test]
fn marketplaces_json_lists_all_23_with_derived_values() {
    let output = aso(&["marketplaces", "--output", "json"]);
    assert!(output.status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(rows.len(), 23);
    let by_code = |code: &str| rows.iter().find(|r| r["code"] == code).unwrap().clone();
    let de = by_code("DE");
    assert_eq!(de["marketplaceId"], "A1PA6795UKMFR9");
    assert_eq!(de["region"], "EU");
    assert_eq!(de["endpoint"], "https://sellingpartnerapi-eu.amazon.com");
    assert_eq!(
        de["sandboxEndpoint"],
        "https://sandbox.sellingpartnerapi-eu.amazon.com"
    );
    let uk = by_code("UK");
    assert_eq!(uk["aliases"], serde_json::json!(["GB"]));
    assert_eq!(
        by_code("JP")["endpoint"],
        "https://sellingpartnerapi-fe.amazon.com"
    );
    assert_eq!(by_code("BR")["marketplaceId"], "A2Q3Y263D00KWC");
}

#[test]
fn marketplaces_table_has_a_header_and_a_row_per_marketplace() {
    let output = aso(&["marketplaces"]);
    assert!(output.status.success());
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 24);
    assert!(lines[0].starts_with("CODE"));
    assert!(text.contains("UK,GB"));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("US ") && l.contains("ATVPDKIKX0DER"))
    );
}

#[test]
fn valid_examples_pass_validate() {
    for example in ["examples/connection.yaml", "examples/team-namespace.yaml"] {
        let output = aso(&["validate", "-f", example]);
        assert!(output.status.success(), "{example}: {}", stdout(&output));
    }
}

/// Every `examples/invalid-*.yaml` names, in an `# expect:` header line, the field whose
/// rule it breaks; `validate` must fail and report exactly that field.
#[test]
fn each_invalid_example_fails_validate_with_its_field_path() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo_path("examples")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("invalid-") {
            continue;
        }
        let expected = expected_field(&path);
        let output = aso(&["validate", "-f", path.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1), "{name} should fail validate");
        let text = stdout(&output);
        let problems: Vec<&str> = text.lines().collect();
        assert_eq!(problems.len(), 1, "{name}: {text}");
        assert!(
            problems[0].contains(&format!("): {expected}: ")),
            "{name}: expected a problem at {expected}, got {text}"
        );
        checked += 1;
    }
    assert!(
        checked >= 4,
        "expected at least four invalid examples, found {checked}"
    );
}

/// The field path an invalid example's `# expect:` header names.
pub fn expected_field(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{} has no `# expect:` line", path.display()))
        .trim()
        .to_owned()
}

#[test]
fn validate_reads_standard_input_and_reports_each_document() {
    let connection = std::fs::read_to_string(repo_path("examples/connection.yaml")).unwrap();
    let input = format!(
        "{}---\n{connection}---\n{}",
        std::fs::read_to_string(repo_path("examples/team-namespace.yaml")).unwrap(),
        connection.replace("marketplace: US", "marketplace: XX")
    );
    let output = aso_stdin(&["validate", "-f", "-"], &input);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    // Each line says where its document starts: the line of its first content.
    assert_eq!(
        lines[0],
        "-:4: document 1 (Namespace team-acme): skipped, not an AmazonSellerConnection"
    );
    assert_eq!(
        lines[1],
        "-:13: document 2 (AmazonSellerConnection team-acme/acme-us): valid"
    );
    assert!(lines[2].starts_with(
        "-:30: document 3 (AmazonSellerConnection team-acme/acme-us): spec.marketplace: unknown marketplace \"XX\" (valid: AE, AU,"
    ));
}

/// Several `-f`, directories (searched below for `*.yaml`, `*.yml`, `*.json`, nothing else),
/// `-` and multi-document files in one run: every file and document is reported in order with
/// its position, an unreadable or unparseable input does not stop the others, and one problem
/// anywhere makes the exit status 1.
#[test]
fn validate_takes_several_files_directories_and_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let connection = std::fs::read_to_string(repo_path("examples/connection.yaml")).unwrap();
    let tree = dir.path().join("manifests");
    std::fs::create_dir_all(tree.join("nested")).unwrap();
    std::fs::write(
        tree.join("a.yaml"),
        format!(
            "{connection}---\n{}",
            connection.replace("acme-us", "acme-us-2")
        ),
    )
    .unwrap();
    std::fs::write(tree.join("nested/b.yml"), &connection).unwrap();
    let json = serde_json::to_string_pretty(
        &serde_saphyr::from_str::<serde_json::Value>(&connection).unwrap(),
    )
    .unwrap();
    std::fs::write(tree.join("nested/c.json"), json).unwrap();
    std::fs::write(tree.join("notes.txt"), "not a manifest").unwrap();
    let tree = tree.to_str().unwrap();

    let valid = aso_stdin(
        &[
            "validate",
            "-f",
            tree,
            "-f",
            "-",
            "--filename=examples/connection.yaml",
        ],
        &connection,
    );
    let text = stdout(&valid);
    assert_eq!(valid.status.code(), Some(0), "{text}");
    let located: Vec<&str> = text
        .lines()
        .map(|l| l.split(" (").next().unwrap())
        .collect();
    assert_eq!(
        located,
        [
            format!("{tree}/a.yaml:3: document 1"),
            format!("{tree}/a.yaml:20: document 2"),
            format!("{tree}/nested/b.yml:3: document 1"),
            format!("{tree}/nested/c.json:1: document 1"),
            "-:3: document 1".to_owned(),
            "examples/connection.yaml:3: document 1".to_owned(),
        ]
    );
    assert!(text.lines().all(|l| l.ends_with(": valid")), "{text}");

    // One bad document among good ones, and inputs that cannot be read or parsed: all are
    // reported, the run goes on, and it fails.
    std::fs::write(dir.path().join("broken.yaml"), "spec: [unclosed\n").unwrap();
    let broken = dir.path().join("broken.yaml");
    let output = aso(&[
        "validate",
        "-f",
        broken.to_str().unwrap(),
        "-f",
        "examples",
        "-f",
        "does-not-exist.yaml",
        "-f",
        "examples/connection.yaml",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        text.contains("examples/invalid-unknown-marketplace.yaml:3: document 1 (AmazonSellerConnection team-acme/acme-invalid): spec.marketplace: unknown marketplace"),
        "{text}"
    );
    assert!(text.ends_with("examples/connection.yaml:3: document 1 (AmazonSellerConnection team-acme/acme-us): valid\n"), "{text}");
    assert!(
        stderr.contains(&format!(
            "error: {}: failed to parse YAML",
            broken.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: failed to read does-not-exist.yaml:"),
        "{stderr}"
    );
    let empty = tempfile::tempdir().unwrap();
    let output = aso(&["validate", "-f", empty.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no *.yaml, *.yml or *.json file"));
}

#[test]
fn validate_rejects_unparseable_input_with_a_clear_error() {
    for input in ["spec: [unclosed\n", "\u{0}\u{1}binary", "a: b\n c: d\n"] {
        let output = aso_stdin(&["validate", "-f", "-"], input);
        assert_eq!(output.status.code(), Some(1), "{input:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("error: -: "), "{input:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn validate_of_a_missing_file_names_the_file() {
    let output = aso(&["validate", "-f", "does-not-exist.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: failed to read does-not-exist.yaml:"),
        "{stderr}"
    );
}

#[test]
fn validate_of_empty_input_is_an_error_not_a_pass() {
    let output = aso_stdin(&["validate", "-f", "-"], "# only a comment\n");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no YAML document found"));
}

#[test]
fn webhook_configuration_prints_what_the_webhook_generates_for_a_url() {
    use amazon_seller_operator::https::admission::configuration::{self, ClientTarget, Options};
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let output = aso(&[
        "webhook-configuration",
        "--webhook-url",
        "https://127.0.0.1:9443",
        "--webhook-configuration-name",
        "aso-dev",
        "--webhook-ca-file",
        ca.to_str().unwrap(),
        "--watch-namespace",
        "team-acme",
        "--webhook-timeout-seconds",
        "5",
    ]);
    assert!(output.status.success(), "{output:?}");
    let docs: Vec<serde_json::Value> = stdout(&output)
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str(d).unwrap())
        .collect();
    let mut options = Options::new(ClientTarget::Url("https://127.0.0.1:9443".into()));
    options.validating_name = "aso-dev".into();
    options.mutating_name = "aso-dev".into();
    options.ca_bundle = Some(std::fs::read(&ca).unwrap());
    options.namespaces = vec!["team-acme".into()];
    options.timeout_seconds = 5;
    let mut validating = serde_json::to_value(configuration::validating(&options)).unwrap();
    validating["apiVersion"] = "admissionregistration.k8s.io/v1".into();
    validating["kind"] = "ValidatingWebhookConfiguration".into();
    let mut mutating = serde_json::to_value(configuration::mutating(&options)).unwrap();
    mutating["apiVersion"] = "admissionregistration.k8s.io/v1".into();
    mutating["kind"] = "MutatingWebhookConfiguration".into();
    assert_eq!(docs, vec![validating, mutating]);

    // Plain HTTP is refused, naming the flag; so is a CA file that is not there.
    let refused = aso(&[
        "webhook-configuration",
        "--webhook-url",
        "http://127.0.0.1:9443",
    ]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("--webhook-url") && message.contains("https://"),
        "{message}"
    );
    let missing = aso(&[
        "webhook-configuration",
        "--webhook-url",
        "https://127.0.0.1:9443",
        "--webhook-ca-file",
        "/nonexistent/ca.pem",
    ]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("--webhook-ca-file /nonexistent/ca.pem")
    );
}

#[test]
fn run_refuses_the_old_name_of_the_watch_namespace_variable() {
    // Unit tier: fails before any cluster is contacted (KUBECONFIG points nowhere).
    let output = Command::new(env!("CARGO_BIN_EXE_amazon-seller-operator"))
        .arg("run")
        .env("ASO_WATCH_NAMESPACES", "team-acme")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("binary runs");
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("ASO_WATCH_NAMESPACES is no longer read")
            && message.contains("ASO_WATCH_NAMESPACE "),
        "{message}"
    );
}

/// Every command that prints exits 0 without a word when its reader has already gone
/// (`marketplaces -o json | head -1`), as Unix tools do. The pipe's reading end is closed
/// before the command starts, so its first write meets the closed pipe.
#[test]
fn commands_writing_to_a_closed_pipe_exit_zero_quietly() {
    let example = repo_path("examples/connection.yaml");
    let example = example.to_str().unwrap();
    let commands: [&[&str]; 5] = [
        &["marketplaces", "-o", "json"],
        &["marketplaces"],
        &["crd"],
        &["validate", "-f", example],
        &[
            "webhook-configuration",
            "--webhook-url",
            "https://127.0.0.1:9443",
        ],
    ];
    for args in commands {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = Command::new(env!("CARGO_BIN_EXE_amazon-seller-operator"))
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("binary runs");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {output:?}");
        assert!(
            output.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Through a shell pipeline, as a user types it; pipefail makes the command's own exit
    // status the pipeline's.
    let output = Command::new("bash")
        .args([
            "-c",
            &format!(
                "set -o pipefail; {} marketplaces -o json | head -1",
                env!("CARGO_BIN_EXE_amazon-seller-operator")
            ),
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&output), "[\n");
    assert!(output.stderr.is_empty(), "{output:?}");
}

/// `run`'s booleans in every spelling are accepted: the run gets as far as looking for a
/// cluster (there is none here) instead of stopping at a usage error. A value is attached with
/// `=`; a separate word is refused rather than silently taken.
#[test]
fn run_accepts_every_spelling_of_its_boolean_flags() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_amazon-seller-operator"))
            .arg("run")
            .args(args)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("HOME", home.path())
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .expect("binary runs")
    };
    for args in [
        &[
            "--leader-election",
            "--webhook-enabled",
            "--credential-endpoint-enabled",
        ][..],
        &[
            "--no-leader-election",
            "--no-webhook-enabled",
            "--no-credential-endpoint-enabled",
        ],
        &[
            "--leader-election=false",
            "--webhook-enabled=true",
            "--credential-endpoint-enabled=false",
        ],
        &["--no-leader-election", "--leader-election"],
    ] {
        let output = run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("kubeconfig") && !stderr.contains("Usage:"),
            "{args:?}: {stderr}"
        );
    }
    let output = run(&["--leader-election", "false"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unexpected argument 'false'"), "{stderr}");
}
