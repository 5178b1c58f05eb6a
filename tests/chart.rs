//! The Helm chart, with real tools: Helm's own Go SDK (through helm-python-sdk) renders and
//! lints it offline for several value sets, kubernetes-validate checks every rendered manifest
//! strictly against the Kubernetes 1.33 API schemas, and the schema rejects misspelt values.
//! The copies the chart carries (CRDs, alert rules) must equal their sources byte for byte.
//!
//! Without the tools (no venv) these tests say so loudly and, under `CI=true`, fail; the copy
//! checks need no tools.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use support::chart::{Rendered, Tools, chart_dir, tools};
use support::repo_path;

/// The value sets every tool runs over: defaults, each certificate mode, monitoring on and off,
/// namespace-scoped, and every other option changed from its default.
fn value_sets() -> Vec<(&'static str, Value)> {
    vec![
        ("defaults", json!({})),
        (
            "webhook, self-managed certificates",
            json!({ "webhook": { "enabled": true, "certificates": { "mode": "self-managed" } } }),
        ),
        (
            "webhook, cert-manager with a self-signed Issuer",
            json!({ "webhook": { "enabled": true, "certificates": { "mode": "cert-manager" } } }),
        ),
        (
            "webhook, cert-manager with a ClusterIssuer",
            json!({ "webhook": { "enabled": true, "certificates": { "mode": "cert-manager",
                "certManager": { "issuerRef": { "name": "corp-ca", "kind": "ClusterIssuer" } } } } }),
        ),
        (
            "webhook, provided Secret",
            json!({ "webhook": { "enabled": true, "certificates": { "mode": "secret",
                "secret": { "name": "aso-webhook-tls", "caBundle": "Q0EgUEVNIFBMQUNFSE9MREVS" } } } }),
        ),
        (
            "monitoring without the webhook",
            json!({ "serviceMonitor": { "enabled": true }, "prometheusRule": { "enabled": true },
                    "webhook": { "enabled": false } }),
        ),
        (
            "monitoring with the webhook",
            json!({ "serviceMonitor": { "enabled": true, "labels": { "release": "kube-prometheus" } },
                    "prometheusRule": { "enabled": true, "labels": { "release": "kube-prometheus" } },
                    "webhook": { "enabled": true } }),
        ),
        (
            "namespace-scoped",
            json!({ "watchNamespaces": ["team-acme", "team-globex"] }),
        ),
        (
            "credential endpoint",
            json!({ "credentialEndpoint": { "enabled": true, "qps": 2.5, "burst": 10 } }),
        ),
        (
            "everything else changed",
            json!({
                "nameOverride": "aso", "replicaCount": 1,
                "image": { "repository": "registry.example.com/aso", "digest": format!("sha256:{}", "a".repeat(64)), "pullPolicy": "Always" },
                "imagePullSecrets": [{ "name": "regcred" }],
                "serviceAccount": { "create": true, "name": "aso-operator", "annotations": { "example.com/owner": "platform" } },
                "keys": { "secretName": "aso-keys", "resealQps": 2.5 },
                "lwa": { "endpoint": "https://lwa-proxy.example.com/auth/o2/token", "qps": 2, "burst": 4,
                         "caBundle": { "configMapName": "egress-proxy-ca", "key": "proxy.pem" } },
                "leaderElection": { "enabled": false, "leaseName": "aso", "leaseDurationSeconds": 30 },
                "logging": { "format": "text", "level": "debug" },
                "metrics": { "port": 9090, "service": { "port": 9090 } },
                "resources": { "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "memory": "512Mi" } },
                "podLabels": { "team": "platform" }, "podAnnotations": { "example.com/scrape": "true" },
                "nodeSelector": { "kubernetes.io/os": "linux" },
                "tolerations": [{ "key": "dedicated", "operator": "Equal", "value": "platform", "effect": "NoSchedule" }],
                "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": { "nodeSelectorTerms": [
                    { "matchExpressions": [{ "key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"] }] }] } } },
                "topologySpreadConstraints": [{ "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": { "matchLabels": { "app.kubernetes.io/name": "aso" } } }],
                "priorityClassName": "platform-critical",
                "podDisruptionBudget": { "enabled": true, "minAvailable": 1 },
                "networkPolicy": {
                    "metrics": { "from": [{ "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "monitoring" } } }] },
                    "webhook": { "from": [{ "ipBlock": { "cidr": "10.0.0.0/8" } }] },
                    "apiServer": { "cidrs": ["10.0.0.1/32"], "ports": [6443] },
                    "lwa": { "cidrs": ["0.0.0.0/0"], "ports": [443] }
                },
                "webhook": { "enabled": true, "port": 9443, "service": { "port": 8443 }, "failurePolicy": "Ignore", "timeoutSeconds": 5 }
            }),
        ),
    ]
}

fn find<'a>(objects: &'a [Rendered], kind: &str, name_suffix: &str) -> Option<&'a Rendered> {
    objects
        .iter()
        .find(|o| o.kind() == kind && o.name().ends_with(name_suffix))
}

fn kinds(objects: &[Rendered]) -> BTreeSet<String> {
    objects.iter().map(|o| o.kind().to_owned()).collect()
}

fn render(tools: &Tools, values: &Value) -> Vec<Rendered> {
    tools
        .render(values, "amazon-seller-operator", "aso-system")
        .0
}

fn deployment(objects: &[Rendered]) -> &Value {
    &find(objects, "Deployment", "")
        .expect("a Deployment")
        .object
}

fn container(objects: &[Rendered]) -> &Value {
    &deployment(objects)["spec"]["template"]["spec"]["containers"][0]
}

fn env(objects: &[Rendered]) -> BTreeMap<String, Value> {
    container(objects)["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone()))
        .collect()
}

fn files_in(dir: &str) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(repo_path(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Copies the chart carries. No tools needed.

#[test]
fn chart_crds_are_byte_identical_to_the_generated_crds() {
    let generated = files_in("crds");
    let in_chart = files_in("charts/amazon-seller-operator/crds");
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        in_chart.keys().collect::<Vec<_>>(),
        "the chart's crds/ holds other files than crds/: run `make crds`"
    );
    for (name, bytes) in &generated {
        assert!(
            in_chart[name] == *bytes,
            "charts/amazon-seller-operator/crds/{name} differs from crds/{name}: run `make crds`"
        );
    }
}

#[test]
fn chart_alert_rules_are_byte_identical_to_deploy_prometheus_alerts() {
    let source = std::fs::read(repo_path("deploy/prometheus/alerts.yaml")).unwrap();
    let copy = std::fs::read(repo_path("charts/amazon-seller-operator/files/alerts.yaml")).unwrap();
    assert!(
        source == copy,
        "charts/amazon-seller-operator/files/alerts.yaml differs from deploy/prometheus/alerts.yaml: run `make crds`"
    );
}

/// A schema node's properties, when it is an object with declared properties.
fn schema_properties(node: &Value) -> Option<&serde_json::Map<String, Value>> {
    node.get("properties").and_then(Value::as_object)
}

/// Every value in values.yaml has a comment right above it; the schema declares exactly the
/// values values.yaml has, each with a description, and rejects unknown keys at every level.
#[test]
fn every_value_is_commented_and_described_in_the_schema() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap(),
    )
    .unwrap();
    let text = std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // (indent, key) of a `key:` line outside list items.
    let mut stack: Vec<(usize, String, Value)> = Vec::new();
    let mut in_list_deeper_than: Option<usize> = None;
    let mut seen = BTreeSet::new();
    let mut uncommented = Vec::new();
    let mut unknown = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(list) = in_list_deeper_than {
            if indent > list || (indent == list && trimmed.starts_with('-')) {
                continue;
            }
            in_list_deeper_than = None;
        }
        if trimmed.starts_with('-') {
            in_list_deeper_than = Some(indent.saturating_sub(1));
            continue;
        }
        let Some((key, rest)) = trimmed.split_once(':') else {
            continue;
        };
        stack.retain(|(i, _, _)| *i < indent);
        let parent_schema = stack.last().map_or(&schema, |(_, _, s)| s);
        let Some(properties) = schema_properties(parent_schema) else {
            continue; // inside a free-form map (labels, resources.requests): any key
        };
        let path = stack
            .iter()
            .map(|(_, k, _)| k.as_str())
            .chain([key])
            .collect::<Vec<_>>()
            .join(".");
        let Some(node) = properties.get(key) else {
            unknown.push(path);
            continue;
        };
        seen.insert(path.clone());
        // Objects with declared properties are sections; everything else is a value.
        let section = rest.trim().is_empty() && schema_properties(node).is_some();
        if !section
            && !lines[..n]
                .last()
                .is_some_and(|l| l.trim_start().starts_with('#'))
        {
            uncommented.push(path.clone());
        }
        if rest.trim().is_empty() {
            stack.push((indent, key.to_owned(), node.clone()));
        }
    }
    assert!(
        unknown.is_empty(),
        "values.yaml keys the schema lacks: {unknown:?}"
    );
    assert!(
        uncommented.is_empty(),
        "values without a comment: {uncommented:?}"
    );

    fn walk(node: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
        if let Some(properties) = schema_properties(node) {
            if node["additionalProperties"] != json!(false) {
                out.push((prefix.to_owned(), "accepts unknown keys".into()));
            }
            for (key, child) in properties {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                if child["description"].as_str().unwrap_or_default().is_empty() {
                    out.push((path.clone(), "has no description".into()));
                }
                walk(child, &path, out);
            }
        }
        if let Some(items) = node.get("items") {
            walk(items, &format!("{prefix}[]"), out);
        }
    }
    let mut problems = Vec::new();
    walk(&schema, "", &mut problems);
    assert!(problems.is_empty(), "schema: {problems:?}");
    // The schema's own sections all appear in values.yaml (list item schemas aside).
    let mut declared = Vec::new();
    fn sections(node: &Value, prefix: &str, out: &mut Vec<String>) {
        for (key, child) in schema_properties(node).into_iter().flatten() {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            out.push(path.clone());
            sections(child, &path, out);
        }
    }
    sections(&schema, "", &mut declared);
    let missing: Vec<_> = declared
        .iter()
        .filter(|p| *p != "global" && !p.starts_with("affinity.") && !seen.contains(*p))
        .collect();
    assert!(
        missing.is_empty(),
        "schema keys values.yaml lacks: {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Helm: lint, render, schema.

#[test]
fn the_chart_lints_cleanly_in_strict_mode_for_every_value_set() {
    let Some(tools) = tools("the_chart_lints_cleanly_in_strict_mode_for_every_value_set") else {
        return;
    };
    eprintln!("chart tools: {}", tools.versions());
    for (name, values) in value_sets() {
        let report = tools.lint(&values);
        assert_eq!(report["total_charts_linted"], 1, "{name}: {report}");
        assert_eq!(report["errors"], json!([]), "{name}: {report}");
        // Severity 1 is informational ("icon is recommended"); warnings fail strict lint.
        let serious: Vec<&Value> = report["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["severity"].as_i64().unwrap_or(3) > 1)
            .collect();
        assert!(
            serious.is_empty(),
            "{name}: helm lint --strict: {serious:?}"
        );
        eprintln!("helm lint --strict --kube-version v1.33.0 [{name}]: clean");
    }
}

/// Every object the chart can render at once: each optional object on.
fn everything_on() -> Value {
    json!({
        "webhook": { "enabled": true, "certificates": { "mode": "cert-manager" } },
        "credentialEndpoint": { "enabled": true },
        "serviceMonitor": { "enabled": true }, "prometheusRule": { "enabled": true },
        "podDisruptionBudget": { "enabled": true },
        "watchNamespaces": ["team-acme"]
    })
}

/// A DNS label (RFC 1123): what every generated name must be, whatever the object's kind.
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// With no release namespace (`helm lint` or `helm template` without `--namespace`) no name
/// starts with `-`, and for any release name Helm accepts (up to 53 characters) and any
/// namespace every generated name is a DNS label, distinct from the others of its kind.
#[test]
fn generated_names_are_dns_labels_for_any_release_and_namespace() {
    let Some(tools) = tools("generated_names_are_dns_labels_for_any_release_and_namespace") else {
        return;
    };
    for values in [json!({}), everything_on()] {
        let report = tools.lint_in(&values, "");
        let serious: Vec<&Value> = report["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["severity"].as_i64().unwrap_or(3) > 1)
            .collect();
        assert!(
            serious.is_empty(),
            "helm lint --strict without --namespace: {serious:?}"
        );
    }
    let longest = "r".repeat(53);
    let containing = format!("{}-amazon-seller-operator", "x".repeat(30));
    let namespace = "n".repeat(63);
    let cases = [
        ("a", "aso-system"),
        (longest.as_str(), "aso-system"),
        (longest.as_str(), namespace.as_str()),
        (containing.as_str(), namespace.as_str()),
        ("amazon-seller-operator", namespace.as_str()),
    ];
    for (release, namespace) in cases {
        let (objects, _) = tools.render(&everything_on(), release, namespace);
        let mut seen = BTreeSet::new();
        for object in &objects {
            let name = object.name();
            assert!(
                is_dns_label(name),
                "release {release:?} in {namespace:?}: {} {name:?} ({} characters) is not a DNS label",
                object.kind(),
                name.len()
            );
            assert!(
                seen.insert((object.kind(), object.namespace(), name)),
                "release {release:?} in {namespace:?}: two {} named {name:?}",
                object.kind()
            );
        }
        // The names the objects refer to each other by follow the objects' own.
        let deployment = deployment(&objects);
        let vars = env(&objects);
        let service = find(&objects, "Service", "webhook").expect("a webhook Service");
        assert_eq!(
            vars["ASO_WEBHOOK_SERVICE_NAME"]["value"].as_str(),
            Some(service.name())
        );
        let validating = find(&objects, "ValidatingWebhookConfiguration", "").unwrap();
        assert_eq!(
            vars["ASO_VALIDATING_WEBHOOK_CONFIGURATION"]["value"].as_str(),
            Some(validating.name())
        );
        let certificate = find(&objects, "Certificate", "").unwrap();
        assert_eq!(
            validating.object["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!("{namespace}/{}", certificate.name())
        );
        assert_eq!(
            deployment["spec"]["template"]["spec"]["serviceAccountName"].as_str(),
            find(&objects, "ServiceAccount", "").map(Rendered::name)
        );
    }
}

#[test]
fn every_rendered_manifest_validates_strictly_against_kubernetes_1_33() {
    let Some(tools) = tools("every_rendered_manifest_validates_strictly_against_kubernetes_1_33")
    else {
        return;
    };
    // Custom resources whose schemas kubernetes-validate does not ship; tests below check them.
    let custom: BTreeSet<&str> =
        ["Certificate", "Issuer", "PrometheusRule", "ServiceMonitor"].into();
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = Vec::new();
    for (set, (name, values)) in value_sets().into_iter().enumerate() {
        let objects = render(&tools, &values);
        assert!(!objects.is_empty(), "{name}: nothing rendered");
        for (n, object) in objects.iter().enumerate() {
            let path = dir
                .path()
                .join(format!("{set:02}-{n:02}-{}.yaml", object.kind()));
            std::fs::write(&path, serde_json::to_string_pretty(&object.object).unwrap()).unwrap();
            files.push(path);
        }
    }
    // The chart's CRDs are manifests too, and so are the walkthrough's built-in kinds.
    for entry in std::fs::read_dir(chart_dir().join("crds")).unwrap() {
        files.push(entry.unwrap().path());
    }
    for example in [
        "examples/team-namespace.yaml",
        "examples/gateway.yaml",
        "examples/intake-secret.yaml",
    ] {
        files.push(repo_path(example));
    }
    let paths: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
    let (ok, output) = tools.validate(&paths);
    assert!(
        ok,
        "kubernetes-validate --strict -k 1.33.0 failed:\n{output}"
    );
    let passed = output
        .lines()
        .filter(|l| l.starts_with("INFO") && l.contains("passed"))
        .count();
    for line in output.lines().filter(|l| l.starts_with("WARN")) {
        assert!(
            custom.iter().any(|k| line.contains(&format!("kind {k} "))),
            "a built-in kind went unchecked: {line}"
        );
    }
    let warned = output.lines().filter(|l| l.starts_with("WARN")).count();
    assert_eq!(passed + warned, files.len(), "{output}");
    eprintln!(
        "kubernetes-validate --strict -k 1.33.0: {passed} manifests passed, {warned} custom resources skipped"
    );

    // The validator is not vacuous: one misspelt field in the Deployment fails it.
    let mut broken = render(&tools, &json!({}))
        .into_iter()
        .find(|o| o.kind() == "Deployment")
        .unwrap()
        .object;
    broken["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = json!(true);
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, serde_json::to_string(&broken).unwrap()).unwrap();
    let (ok, output) = tools.validate(&[path.as_path()]);
    assert!(!ok, "a misspelt field passed strict validation: {output}");
    assert!(output.contains("readOnlyRootFileSystem"), "{output}");
}

#[test]
fn a_misspelt_value_is_rejected_by_the_schema() {
    let Some(tools) = tools("a_misspelt_value_is_rejected_by_the_schema") else {
        return;
    };
    for (name, values) in value_sets() {
        assert_eq!(tools.schema(&values), Ok(()), "{name}");
    }
    for (misspelt, expected) in [
        (json!({ "replicaCont": 3 }), "replicaCont"),
        (json!({ "webhook": { "enabeld": true } }), "enabeld"),
        (
            json!({ "networkPolicy": { "apiServer": { "cidr": ["10.0.0.1/32"] } } }),
            "cidr",
        ),
        (
            json!({ "webhook": { "certificates": { "mode": "certmanager" } } }),
            "/webhook/certificates/mode",
        ),
        (
            json!({ "webhook": { "failurePolicy": "fail" } }),
            "/webhook/failurePolicy",
        ),
        (json!({ "tolerations": [{ "keys": "dedicated" }] }), "keys"),
    ] {
        let message = tools.schema(&misspelt).expect_err(&misspelt.to_string());
        assert!(message.contains(expected), "{misspelt}: {message}");
        // And an install with it fails before anything is rendered.
        let refused = tools.render_error(&misspelt);
        assert!(refused.contains(expected), "{misspelt}: {refused}");
        eprintln!(
            "schema rejects {misspelt}: {}",
            message.lines().last().unwrap_or_default().trim()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// What the rendered objects say.

#[test]
fn the_deployment_runs_hardened_replicas_with_probes_and_pod_identity() {
    let Some(tools) = tools("the_deployment_runs_hardened_replicas_with_probes_and_pod_identity")
    else {
        return;
    };
    let objects = render(&tools, &json!({}));
    let deployment = deployment(&objects);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    let c = container(&objects);
    assert_eq!(c["args"], json!(["run"]));
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
    let metrics_port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .unwrap();
    assert_eq!(metrics_port["containerPort"], 8080);
    let vars = env(&objects);
    assert_eq!(
        vars["ASO_IDENTITY"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        vars["ASO_OPERATOR_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(vars["ASO_LEADER_ELECTION"]["value"], "true");
    assert_eq!(vars["ASO_METRICS_ADDR"]["value"], "0.0.0.0:8080");
    assert!(!vars.contains_key("ASO_WATCH_NAMESPACE"));
    // No secret value anywhere in the rendered chart: the operator makes its keys itself.
    let text =
        serde_json::to_string(&objects.iter().map(|o| &o.object).collect::<Vec<_>>()).unwrap();
    assert!(!objects.iter().any(|o| o.kind() == "Secret"));
    assert!(!text.contains("BEGIN") && !text.contains("Atzr|") && !text.contains("Atza|"));

    let scoped = render(
        &tools,
        &json!({ "watchNamespaces": ["team-acme", "team-globex"] }),
    );
    assert_eq!(
        env(&scoped)["ASO_WATCH_NAMESPACE"]["value"],
        "team-acme,team-globex"
    );
    let single = render(&tools, &json!({ "replicaCount": 1 }));
    assert!(
        find(&single, "PodDisruptionBudget", "").is_none(),
        "a PDB with one replica blocks drains"
    );
    let pdb = find(&objects, "PodDisruptionBudget", "").expect("a PDB with two replicas");
    assert_eq!(pdb.object["spec"]["minAvailable"], 1);
}

/// Every environment variable the Deployment sets is a `run` flag's, and its value parses: the
/// binary, given exactly that environment, gets past flag parsing to its first API call.
#[test]
fn every_deployment_variable_is_a_run_flag_with_a_value_it_accepts() {
    let Some(tools) = tools("every_deployment_variable_is_a_run_flag_with_a_value_it_accepts")
    else {
        return;
    };
    let binary = env!("CARGO_BIN_EXE_amazon-seller-operator");
    let help = Command::new(binary)
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("proxy.pem"), "").unwrap();
    for (name, values) in value_sets() {
        let objects = render(&tools, &values);
        let mut command = Command::new(binary);
        command
            .arg("run")
            .env_clear()
            .env("KUBECONFIG", &kubeconfig)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for (var, entry) in env(&objects) {
            assert!(
                help.contains(&format!("[env: {var}=")),
                "{name}: {var} is not a `run` flag's variable"
            );
            let value = match entry["value"].as_str() {
                Some(v) => v.to_owned(),
                // The downward API fills these in a pod.
                None => "from-downward-api".to_owned(),
            };
            // A CA file path points into a mounted ConfigMap; point it at a stand-in.
            let value = if var == "ASO_LWA_CA_FILE" {
                dir.path().join("proxy.pem").display().to_string()
            } else {
                value
            };
            command.env(var, value);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("cannot reach the Kubernetes API server"),
            "{name}: the rendered environment did not parse:\n{stderr}"
        );
    }
}

#[test]
fn the_service_monitor_produces_the_job_names_the_alerts_expect() {
    let Some(tools) = tools("the_service_monitor_produces_the_job_names_the_alerts_expect") else {
        return;
    };
    let alerts = std::fs::read_to_string(repo_path("deploy/prometheus/alerts.yaml")).unwrap();
    let expected_jobs: BTreeSet<String> = alerts
        .split("job=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        expected_jobs,
        ["amazon-seller-operator", "amazon-seller-operator-webhook"]
            .map(str::to_owned)
            .into()
    );
    for (webhook, jobs) in [
        (
            true,
            vec!["amazon-seller-operator", "amazon-seller-operator-webhook"],
        ),
        (false, vec!["amazon-seller-operator"]),
    ] {
        // Whatever the release is called, the job names stay the same.
        let (objects, _) = tools.render(
            &json!({ "serviceMonitor": { "enabled": true }, "webhook": { "enabled": webhook } }),
            "payments-aso",
            "payments",
        );
        let monitor = &find(&objects, "ServiceMonitor", "")
            .expect("a ServiceMonitor")
            .object;
        let job_label = monitor["spec"]["jobLabel"].as_str().unwrap();
        let selector = &monitor["spec"]["selector"];
        let endpoint_ports: BTreeSet<&str> = monitor["spec"]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["port"].as_str().unwrap())
            .collect();
        let allowed: Vec<&str> = selector["matchExpressions"][0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let mut produced = Vec::new();
        for service in objects.iter().filter(|o| o.kind() == "Service") {
            let labels = &service.object["metadata"]["labels"];
            let selected = selector["matchLabels"]
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| &labels[k] == v)
                && labels[job_label]
                    .as_str()
                    .is_some_and(|j| allowed.contains(&j));
            if !selected {
                continue;
            }
            let ports: BTreeSet<&str> = service.object["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert!(
                endpoint_ports.is_subset(&ports),
                "{}: {ports:?}",
                service.name()
            );
            produced.push(labels[job_label].as_str().unwrap());
        }
        produced.sort_unstable();
        assert_eq!(produced, jobs, "webhook {webhook}");
    }
}

#[test]
fn the_prometheus_rule_carries_the_alert_rules_unchanged() {
    let Some(tools) = tools("the_prometheus_rule_carries_the_alert_rules_unchanged") else {
        return;
    };
    let source: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo_path("deploy/prometheus/alerts.yaml")).unwrap(),
    )
    .unwrap();
    let with_webhook = render(
        &tools,
        &json!({ "prometheusRule": { "enabled": true }, "webhook": { "enabled": true } }),
    );
    let rule = &find(&with_webhook, "PrometheusRule", "")
        .expect("a PrometheusRule")
        .object;
    assert_eq!(
        rule["spec"]["groups"], source["groups"],
        "the rules differ from alerts.yaml"
    );

    // Without the webhook, only its down alert is left out.
    let without = render(
        &tools,
        &json!({ "prometheusRule": { "enabled": true }, "webhook": { "enabled": false } }),
    );
    let rule = &find(&without, "PrometheusRule", "").unwrap().object;
    let mut expected = source["groups"].clone();
    for group in expected.as_array_mut().unwrap() {
        group["rules"]
            .as_array_mut()
            .unwrap()
            .retain(|r| r["alert"] != "AmazonSellerWebhookDown");
    }
    assert_eq!(rule["spec"]["groups"], expected);
    assert!(find(&render(&tools, &json!({})), "PrometheusRule", "").is_none());
}

#[test]
fn webhook_configurations_fail_closed_with_each_certificate_mode() {
    let Some(tools) = tools("webhook_configurations_fail_closed_with_each_certificate_mode") else {
        return;
    };
    // On by default; off only when asked.
    let defaults = render(&tools, &json!({}));
    assert!(kinds(&defaults).contains("ValidatingWebhookConfiguration"));
    assert!(kinds(&defaults).contains("MutatingWebhookConfiguration"));
    let off = render(&tools, &json!({ "webhook": { "enabled": false } }));
    assert!(!kinds(&off).contains("ValidatingWebhookConfiguration"));
    assert!(!kinds(&off).contains("MutatingWebhookConfiguration"));
    for mode in ["self-managed", "cert-manager", "secret"] {
        let values = json!({ "webhook": { "enabled": true, "certificates": { "mode": mode,
            "secret": { "name": "provided-tls", "caBundle": "Q0EgUEVNIFBMQUNFSE9MREVS" } } } });
        let objects = render(&tools, &values);
        let service = find(&objects, "Service", "-webhook").expect("a webhook Service");
        let https = &service.object["spec"]["ports"][0];
        assert_eq!(
            (https["name"].as_str(), https["port"].as_i64()),
            (Some("https"), Some(443))
        );
        let mut webhooks = Vec::new();
        for kind in [
            "ValidatingWebhookConfiguration",
            "MutatingWebhookConfiguration",
        ] {
            let config = &find(&objects, kind, "")
                .unwrap_or_else(|| panic!("{mode}: no {kind}"))
                .object;
            let injected =
                config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].as_str();
            assert_eq!(injected.is_some(), mode == "cert-manager", "{mode} {kind}");
            for webhook in config["webhooks"].as_array().unwrap() {
                let name = webhook["name"].as_str().unwrap();
                assert_eq!(webhook["failurePolicy"], "Fail", "{mode} {name}");
                assert_eq!(webhook["sideEffects"], "None", "{name}");
                assert_eq!(webhook["admissionReviewVersions"], json!(["v1"]), "{name}");
                assert_eq!(webhook["timeoutSeconds"], 10, "{name}");
                let client = &webhook["clientConfig"];
                assert_eq!(
                    client["service"]["name"],
                    service.object["metadata"]["name"]
                );
                assert_eq!(client["service"]["port"], 443);
                assert_eq!(
                    client["caBundle"].is_string(),
                    mode == "secret",
                    "{mode} {name}"
                );
                webhooks.push((name.to_owned(), webhook.clone()));
            }
        }
        // Credential paths in Team namespaces: Secrets, pods (with ephemeral containers).
        let by_name: BTreeMap<_, _> = webhooks.into_iter().collect();
        for name in [
            "secrets.connectors.openteam.io",
            "pods.connectors.openteam.io",
            "workloads.connectors.openteam.io",
            "intake.secrets.connectors.openteam.io",
        ] {
            assert_eq!(
                by_name[name]["namespaceSelector"]["matchExpressions"][0],
                json!({ "key": "connectors.openteam.io/team", "operator": "Exists" }),
                "{name}"
            );
        }
        assert!(
            by_name["pods.connectors.openteam.io"]["rules"][0]["resources"]
                .as_array()
                .unwrap()
                .contains(&json!("pods/ephemeralcontainers"))
        );
        assert!(
            by_name["connections.connectors.openteam.io"]["rules"][0]["operations"]
                .as_array()
                .unwrap()
                .contains(&json!("DELETE"))
        );

        let certificate = find(&objects, "Certificate", "");
        assert_eq!(certificate.is_some(), mode == "cert-manager", "{mode}");
        let volumes = &deployment(&objects)["spec"]["template"]["spec"]["volumes"];
        let tls = volumes
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "webhook-tls");
        match mode {
            "self-managed" => assert!(tls.is_none()),
            "cert-manager" => {
                let certificate = &certificate.unwrap().object;
                assert_eq!(
                    tls.unwrap()["secret"]["secretName"],
                    certificate["spec"]["secretName"]
                );
                let dns: Vec<&str> = certificate["spec"]["dnsNames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_str().unwrap())
                    .collect();
                assert!(
                    dns.contains(&format!("{}.aso-system.svc", service.name()).as_str()),
                    "{dns:?}"
                );
                assert!(find(&objects, "Issuer", "-selfsigned").is_some());
            }
            _ => assert_eq!(tls.unwrap()["secret"]["secretName"], "provided-tls"),
        }
    }
    // A provided Secret without its CA is refused rather than rendered without a caBundle.
    let refused = tools.render_error(&json!({ "webhook": { "enabled": true, "certificates": { "mode": "secret", "secret": { "name": "provided-tls" } } } }));
    assert!(refused.contains("caBundle is required"), "{refused}");
    // The credential endpoint is served by the webhook's server: not without it.
    let refused = tools.render_error(
        &json!({ "webhook": { "enabled": false }, "credentialEndpoint": { "enabled": true } }),
    );
    assert!(
        refused.contains("credentialEndpoint.enabled needs webhook.enabled=true"),
        "{refused}"
    );
}

/// The chart registers exactly the configurations the webhook's own code generates
/// (src/https/admission/configuration.rs), for each way the CA reaches them.
#[test]
fn the_chart_registers_the_webhook_configurations_the_webhook_generates() {
    use amazon_seller_operator::https::admission::configuration::{self, ClientTarget, Options};
    let Some(tools) = tools("the_chart_registers_the_webhook_configurations_the_webhook_generates")
    else {
        return;
    };
    let ca = "Q0EgUEVNIFBMQUNFSE9MREVS";
    let cases = [
        ("self-managed", vec![]),
        ("cert-manager", vec![]),
        ("secret", vec![]),
        // A namespace-scoped install judges only its namespaces.
        ("self-managed", vec!["team-acme", "team-globex"]),
    ];
    for (mode, watched) in cases {
        let values = json!({ "webhook": { "enabled": true, "certificates": { "mode": mode,
            "secret": { "name": "provided-tls", "caBundle": ca } } }, "watchNamespaces": watched });
        let objects = render(&tools, &values);
        let mut options = Options::new(ClientTarget::Service {
            namespace: "aso-system".into(),
            name: "amazon-seller-operator-webhook".into(),
            port: 443,
        });
        options.namespaces = watched.iter().map(|ns| (*ns).to_owned()).collect();
        options.validating_name = "aso-system-amazon-seller-operator".into();
        options.mutating_name = "aso-system-amazon-seller-operator".into();
        if mode == "secret" {
            use base64::Engine as _;
            options.ca_bundle = Some(
                base64::engine::general_purpose::STANDARD
                    .decode(ca)
                    .unwrap(),
            );
        }
        let expected = [
            (
                "ValidatingWebhookConfiguration",
                serde_json::to_value(configuration::validating(&options)).unwrap(),
            ),
            (
                "MutatingWebhookConfiguration",
                serde_json::to_value(configuration::mutating(&options)).unwrap(),
            ),
        ];
        for (kind, expected) in expected {
            let rendered = &find(&objects, kind, "")
                .unwrap_or_else(|| panic!("no {kind}"))
                .object;
            assert_eq!(
                rendered["metadata"]["name"], expected["metadata"]["name"],
                "{mode} {kind}"
            );
            assert_eq!(rendered["webhooks"], expected["webhooks"], "{mode} {kind}");
        }
        // The Deployment tells the webhook the names whose caBundle it keeps current.
        let vars = env(&objects);
        assert_eq!(
            vars["ASO_VALIDATING_WEBHOOK_CONFIGURATION"]["value"],
            "aso-system-amazon-seller-operator"
        );
        assert_eq!(
            vars["ASO_MUTATING_WEBHOOK_CONFIGURATION"]["value"],
            "aso-system-amazon-seller-operator"
        );
        assert_eq!(
            vars["ASO_WEBHOOK_SERVICE_NAME"]["value"],
            "amazon-seller-operator-webhook"
        );
        let cert_mode = if mode == "self-managed" {
            "self-managed"
        } else {
            "files"
        };
        assert_eq!(vars["ASO_WEBHOOK_CERT_MODE"]["value"], cert_mode);
    }
}

#[test]
fn the_network_policy_admits_only_the_webhook_and_metrics_ports() {
    let Some(tools) = tools("the_network_policy_admits_only_the_webhook_and_metrics_ports") else {
        return;
    };
    for webhook in [false, true] {
        let objects = render(&tools, &json!({ "webhook": { "enabled": webhook } }));
        let policy = &find(&objects, "NetworkPolicy", "")
            .expect("a NetworkPolicy")
            .object;
        assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        let ingress: BTreeSet<&str> = policy["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rule| rule["ports"].as_array().unwrap())
            .map(|p| p["port"].as_str().unwrap())
            .collect();
        let expected: BTreeSet<&str> = if webhook {
            ["metrics", "webhook"].into()
        } else {
            ["metrics"].into()
        };
        assert_eq!(ingress, expected);
        let egress: BTreeSet<(i64, &str)> = policy["spec"]["egress"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rule| rule["ports"].as_array().unwrap())
            .map(|p| (p["port"].as_i64().unwrap(), p["protocol"].as_str().unwrap()))
            .collect();
        assert_eq!(
            egress,
            [(53, "TCP"), (53, "UDP"), (443, "TCP"), (6443, "TCP")].into()
        );
    }
    // By default the egress rules name ports only (no cluster's API server or LWA addresses are
    // known in advance); the CIDR values pin each rule to its destinations.
    let pinned = render(
        &tools,
        &json!({ "networkPolicy": {
            "apiServer": { "cidrs": ["10.0.0.1/32"] },
            "lwa": { "cidrs": ["52.94.0.0/16", "54.239.0.0/17"] } } }),
    );
    let policy = &find(&pinned, "NetworkPolicy", "")
        .expect("a NetworkPolicy")
        .object;
    let destinations: Vec<Vec<&str>> = policy["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| {
            rule["to"]
                .as_array()
                .map(|to| {
                    to.iter()
                        .filter_map(|peer| peer["ipBlock"]["cidr"].as_str())
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        destinations,
        [
            vec!["10.0.0.1/32"],
            vec!["52.94.0.0/16", "54.239.0.0/17"],
            vec![]
        ]
    );
    let disabled = render(&tools, &json!({ "networkPolicy": { "enabled": false } }));
    assert!(find(&disabled, "NetworkPolicy", "").is_none());
}

#[test]
fn notes_tell_how_to_back_up_the_keyring() {
    let Some(tools) = tools("notes_tell_how_to_back_up_the_keyring") else {
        return;
    };
    let (_, notes) = tools.render(&json!({}), "amazon-seller-operator", "aso-system");
    assert!(
        notes.contains("get secret amazon-seller-operator-keys"),
        "{notes}"
    );
    assert!(!notes.contains("webhook is not registered"), "{notes}");
    let (_, notes) = tools.render(
        &json!({ "webhook": { "enabled": false } }),
        "amazon-seller-operator",
        "aso-system",
    );
    assert!(notes.contains("webhook is not registered"), "{notes}");
}

// ---------------------------------------------------------------------------------------------
// The chart on the real API server (the control plane of `make test`, or ASO_TEST_KUBECONFIG):
// what `helm install` does to a cluster, short of a kubelet starting the pods.

/// The CRDs a render may need, applied for real: the chart's own (`crds/`, what Helm installs
/// first) and the pinned monitoring.coreos.com and cert-manager.io CRDs from the Go module
/// proxy (hack/control-plane/third-party-crds.sh), never a hand-written copy.
async fn crds_first(client: &kube::Client) {
    support::objects::apply_crds(client, &chart_dir().join("crds")).await;
    support::objects::apply_crds(client, &support::chart::third_party_crds()).await;
}

/// The value set with each watched namespace replaced by a fresh one that exists, so the
/// Roles the chart puts there can be created.
async fn with_fresh_watched_namespaces(client: &kube::Client, values: &Value) -> Value {
    let mut values = values.clone();
    if let Some(watched) = values["watchNamespaces"].as_array_mut() {
        for namespace in watched.iter_mut() {
            let prefix = namespace.as_str().unwrap_or("team").to_owned();
            *namespace = support::create_namespace(client, &prefix, None)
                .await
                .into();
        }
    }
    values
}

/// Every object of every value set's render, CRDs first, is accepted by the API server (a
/// server-side dry run: schema, CEL rules, RBAC escalation checks, admission; nothing stored),
/// including the ServiceMonitor, PrometheusRule, Certificate and Issuer against their
/// projects' own CRDs.
#[tokio::test]
async fn every_value_set_renders_objects_the_api_server_accepts() {
    let test = "every_value_set_renders_objects_the_api_server_accepts";
    let Some(tools) = tools(test) else {
        return;
    };
    let Some(client) = support::cluster(test).await else {
        return;
    };
    crds_first(&client).await;
    let objects = support::objects::Objects::discover(&client).await;
    let mut refused = Vec::new();
    let mut kinds_checked = BTreeSet::new();
    for (name, values) in value_sets() {
        let namespace = support::create_namespace(&client, "aso-chart", None).await;
        let values = with_fresh_watched_namespaces(&client, &values).await;
        for object in render_in(&tools, &values, &namespace) {
            kinds_checked.insert(object.kind().to_owned());
            if let Err(why) = objects.dry_run(&object.object, &namespace).await {
                refused.push(format!(
                    "[{name}] {} {}: {why}",
                    object.kind(),
                    object.name()
                ));
            }
        }
    }
    assert!(
        refused.is_empty(),
        "refused by the API server:\n{}",
        refused.join("\n")
    );
    for kind in [
        "Deployment",
        "ClusterRole",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "ServiceMonitor",
        "PrometheusRule",
        "Certificate",
        "Issuer",
        "NetworkPolicy",
        "PodDisruptionBudget",
    ] {
        assert!(
            kinds_checked.contains(kind),
            "no {kind} was checked: {kinds_checked:?}"
        );
    }
}

fn render_in(tools: &Tools, values: &Value, namespace: &str) -> Vec<Rendered> {
    tools.render(values, "amazon-seller-operator", namespace).0
}

/// An installed release, uninstalled when dropped (also when the test fails), so that its
/// fail-closed webhook configurations never outlive the test on a shared cluster.
struct Installed<'a> {
    tools: &'a Tools,
    kubeconfig: String,
    name: String,
    namespace: String,
}

impl Installed<'_> {
    fn uninstall(&self) -> Result<(), String> {
        self.tools
            .uninstall(&self.kubeconfig, &self.name, &self.namespace)
    }
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        let _ = self.uninstall();
    }
}

/// What docs/uninstall.md says stays in the release namespace after `helm uninstall`: the
/// objects the operator creates itself (none here, since no kubelet runs it).
fn kept_after_uninstall(object: &str) -> bool {
    [
        "Secret/amazon-seller-operator-keys",
        "ConfigMap/amazon-seller-operator-public-key",
        "Secret/amazon-seller-operator-webhook-tls",
    ]
    .contains(&object)
}

/// `helm install` for real with the defaults and with the webhook's self-managed
/// certificates: every object is created, both webhook configurations are registered and point
/// at the webhook Service; `helm uninstall` then removes every one of them and leaves in the
/// namespace only what docs/uninstall.md says stays, and the CRDs.
#[tokio::test]
async fn helm_install_creates_every_object_and_uninstall_leaves_only_what_the_guide_keeps() {
    let test = "helm_install_creates_every_object_and_uninstall_leaves_only_what_the_guide_keeps";
    let Some(tools) = tools(test) else {
        return;
    };
    let Some(client) = support::cluster(test).await else {
        return;
    };
    let kubeconfig = std::env::var("ASO_TEST_KUBECONFIG").unwrap();
    crds_first(&client).await;
    let objects = support::objects::Objects::discover(&client).await;
    let sets: BTreeMap<&str, Value> = value_sets().into_iter().collect();
    for set in ["defaults", "webhook, self-managed certificates"] {
        let release = Installed {
            tools: &tools,
            kubeconfig: kubeconfig.clone(),
            name: "amazon-seller-operator".into(),
            namespace: support::unique_name("aso-install"),
        };
        let (status, installed) = tools
            .install(
                &kubeconfig,
                &sets[set],
                &release.name,
                &release.namespace,
                true,
            )
            .unwrap_or_else(|e| panic!("[{set}] helm install: {e}"));
        assert_eq!(status, "deployed", "[{set}]");
        for object in &installed {
            assert!(
                objects.get(object, &release.namespace).await.is_some(),
                "[{set}] {} {} was not created",
                object["kind"],
                object["metadata"]["name"]
            );
        }
        let service = installed
            .iter()
            .find(|o| {
                o["kind"] == "Service" && o["metadata"]["name"] == "amazon-seller-operator-webhook"
            })
            .expect("a webhook Service");
        for kind in [
            "ValidatingWebhookConfiguration",
            "MutatingWebhookConfiguration",
        ] {
            let rendered = installed
                .iter()
                .find(|o| o["kind"] == kind)
                .unwrap_or_else(|| panic!("[{set}] no {kind}"));
            let registered = objects
                .get(rendered, &release.namespace)
                .await
                .unwrap_or_else(|| panic!("[{set}] {kind} not registered"));
            let webhooks = registered.data["webhooks"].as_array().unwrap();
            assert!(!webhooks.is_empty(), "[{set}] {kind} has no webhooks");
            for webhook in webhooks {
                let target = &webhook["clientConfig"]["service"];
                assert_eq!(
                    target["namespace"],
                    json!(release.namespace),
                    "[{set}] {kind}"
                );
                assert_eq!(
                    target["name"], service["metadata"]["name"],
                    "[{set}] {kind}"
                );
            }
        }

        let mut uids = Vec::new();
        for object in &installed {
            if let Some(found) = objects.get(object, &release.namespace).await {
                uids.extend(found.metadata.uid.clone());
            }
        }
        release
            .uninstall()
            .unwrap_or_else(|e| panic!("[{set}] helm uninstall: {e}"));
        for object in &installed {
            assert!(
                objects.get(object, &release.namespace).await.is_none(),
                "[{set}] {} {} is left after helm uninstall",
                object["kind"],
                object["metadata"]["name"]
            );
        }
        // What a garbage collector removes with the release (the Deployment's ReplicaSet and
        // pods, the Events about them) is not "left"; the test plane runs none.
        let left: Vec<String> = objects
            .left_in(&release.namespace, &uids)
            .await
            .into_iter()
            .filter(|o| !kept_after_uninstall(o))
            .collect();
        assert!(left.is_empty(), "[{set}] left in the namespace: {left:?}");
    }
    // Helm never deletes CRDs (docs/uninstall.md): every connection would go with them.
    let crds: kube::Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = kube::Api::all(client.clone());
    for name in [
        "amazonsellerconnections.connectors.openteam.io",
        "securitylogreviews.connectors.openteam.io",
    ] {
        assert!(
            crds.get_opt(name).await.unwrap().is_some(),
            "{name} was removed"
        );
    }
}

/// The README's `helm install` command, as written, against the real API server: the only
/// change is a fresh namespace, since the cluster is shared. `--wait` is left out: it waits
/// for ready pods, and this control plane has no kubelet to start them, which is where the
/// README says its steps leave the API server.
#[tokio::test]
async fn the_readme_helm_install_works_as_written_up_to_the_kubelet() {
    let test = "the_readme_helm_install_works_as_written_up_to_the_kubelet";
    let Some(tools) = tools(test) else {
        return;
    };
    let Some(client) = support::cluster(test).await else {
        return;
    };
    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    let command = readme_command(&readme, "helm install ");
    let words: Vec<&str> = command.split_whitespace().collect();
    let (mut positional, mut namespace, mut create, mut values) =
        (Vec::new(), None, false, json!({}));
    let mut words = words[2..].iter();
    while let Some(word) = words.next() {
        match *word {
            "--namespace" | "-n" => namespace = words.next().copied(),
            "--create-namespace" => create = true,
            "--set" => {
                let set = tools.parse_set(words.next().expect("a --set value"));
                merge(&mut values, &set);
            }
            "--wait" => {}
            flag if flag.starts_with('-') => {
                panic!("the README's helm install uses {flag}, which this test does not know")
            }
            word => positional.push(word),
        }
    }
    let [name, chart] = positional[..] else {
        panic!("expected helm install NAME CHART: {command}");
    };
    assert_eq!(chart, "charts/amazon-seller-operator");
    assert_eq!(namespace, Some("amazon-seller-operator"), "{command}");
    assert!(create, "the README creates the namespace: {command}");
    let helm_section = &readme[readme.find("### With Helm").expect("a Helm section")..];
    let helm_section = &helm_section[..helm_section.find("\n### ").unwrap_or(helm_section.len())];
    assert!(
        helm_section.contains("kubelet"),
        "the README's Helm section says where its steps need a kubelet"
    );

    crds_first(&client).await;
    let kubeconfig = std::env::var("ASO_TEST_KUBECONFIG").unwrap();
    let release = Installed {
        tools: &tools,
        kubeconfig: kubeconfig.clone(),
        name: name.to_owned(),
        namespace: support::unique_name("amazon-seller-operator"),
    };
    let (status, installed) = tools
        .install(
            &kubeconfig,
            &values,
            &release.name,
            &release.namespace,
            create,
        )
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    assert_eq!(status, "deployed");
    let objects = support::objects::Objects::discover(&client).await;
    let deployment = installed
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    let stored = objects
        .get(deployment, &release.namespace)
        .await
        .expect("the Deployment is stored");
    let image = &stored.data["spec"]["template"]["spec"]["containers"][0]["image"];
    let repository = values["image"]["repository"].as_str().unwrap();
    assert!(
        image
            .as_str()
            .is_some_and(|i| i.starts_with(&format!("{repository}:"))),
        "{image}"
    );
    release.uninstall().unwrap();
}

/// The first command of the README's `sh` blocks that starts with `prefix`, its continuation
/// lines joined.
fn readme_command(readme: &str, prefix: &str) -> String {
    let mut command = String::new();
    let mut in_command = false;
    for line in readme.lines() {
        let line = line.split(" # ").next().unwrap_or_default().trim_end();
        if !in_command && line.starts_with(prefix) {
            in_command = true;
        }
        if in_command {
            command.push_str(line.trim_end_matches('\\'));
            command.push(' ');
            if !line.ends_with('\\') {
                return command;
            }
        }
    }
    panic!("the README has no `{prefix}` command");
}

/// Merges `patch` into `values` as Helm merges `--set` values.
fn merge(values: &mut Value, patch: &Value) {
    match (values, patch) {
        (Value::Object(values), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(values.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (values, patch) => *values = patch.clone(),
    }
}
