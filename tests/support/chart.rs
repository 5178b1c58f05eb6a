//! The Helm chart through real tools: helm-python-sdk (Helm's Go SDK) renders, lints and
//! schema-checks it offline, kubernetes-validate checks manifests against the Kubernetes API
//! schemas. Both live in a Python venv that the test command creates (`hack/test.sh`, pinned in
//! `hack/chart-requirements.txt`) and names in `ASO_TEST_VENV`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::repo_path;

/// The oldest Kubernetes version the operator supports (README).
pub const KUBE_VERSION: &str = "1.33.0";

/// The chart directory.
pub fn chart_dir() -> PathBuf {
    repo_path("charts/amazon-seller-operator")
}

/// The venv with the chart tools, or `None` (after a loud message) outside CI. Panics under
/// `CI=true` when the tools are missing: the test command always installs them.
pub fn tools(test: &str) -> Option<Tools> {
    let on_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let venv = std::env::var_os("ASO_TEST_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/amazon-seller-operator/venv"))
        });
    let missing = |why: String| {
        let message = format!(
            "CHART TOOLS TIER NOT RUN ({test}): {why}. Run the README test command (make test), \
             which installs helm-python-sdk and kubernetes-validate into a venv and sets \
             ASO_TEST_VENV."
        );
        if on_ci {
            panic!("{message}");
        }
        eprintln!("\n!!!! {message}\n");
        None
    };
    let Some(venv) = venv else {
        return missing("ASO_TEST_VENV is not set".into());
    };
    let tools = Tools {
        python: venv.join("bin/python"),
        validate: venv.join("bin/kubernetes-validate"),
    };
    for tool in [&tools.python, &tools.validate] {
        if !tool.exists() {
            return missing(format!("{} does not exist", tool.display()));
        }
    }
    let probe = Command::new(&tools.python)
        .args(["-c", "import helm_python, kubernetes_validate"])
        .output();
    match probe {
        Ok(out) if out.status.success() => Some(tools),
        Ok(out) => missing(format!(
            "the venv {} lacks the chart tools: {}",
            venv.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => missing(format!("cannot run {}: {e}", tools.python.display())),
    }
}

/// The directory of the pinned third-party CRDs (prometheus-operator's monitoring.coreos.com,
/// cert-manager's cert-manager.io), fetched from the Go module proxy into the cache once by
/// `hack/control-plane/third-party-crds.sh`.
pub fn third_party_crds() -> PathBuf {
    let output = Command::new(repo_path("hack/control-plane/third-party-crds.sh"))
        .output()
        .expect("third-party-crds.sh runs");
    assert!(
        output.status.success(),
        "third-party-crds.sh: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// Paths of the chart tools.
#[derive(Clone)]
pub struct Tools {
    python: PathBuf,
    validate: PathBuf,
}

/// One rendered object and the template it came from.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// `amazon-seller-operator/templates/…`.
    pub template: String,
    /// The object.
    pub object: Value,
}

impl Rendered {
    /// `kind`.
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// `metadata.namespace` (empty for cluster-scoped objects).
    pub fn namespace(&self) -> &str {
        self.object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
    }
}

impl Tools {
    fn helper(&self, command: &str, values: &Value, extra: &[&str]) -> (bool, Value) {
        let output = Command::new(&self.python)
            .arg(repo_path("hack/chart.py"))
            .arg(command)
            .arg(chart_dir())
            .arg("--values")
            .arg(values.to_string())
            .args(extra)
            .output()
            .expect("the venv's python runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let parsed = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "hack/chart.py {command} printed no JSON ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.success(), parsed)
    }

    /// Renders the chart as `helm install NAME -n NAMESPACE --values VALUES` would.
    pub fn render(&self, values: &Value, name: &str, namespace: &str) -> (Vec<Rendered>, String) {
        let (ok, out) = self.helper(
            "render",
            values,
            &["--name", name, "--namespace", namespace],
        );
        assert!(ok, "render failed: {out}");
        let objects = out["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .map(|o| Rendered {
                template: o["template"].as_str().unwrap_or_default().to_owned(),
                object: o["object"].clone(),
            })
            .collect();
        (
            objects,
            out["notes"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Renders and expects Helm to refuse; returns its message.
    pub fn render_error(&self, values: &Value) -> String {
        let output = Command::new(&self.python)
            .arg(repo_path("hack/chart.py"))
            .args(["render"])
            .arg(chart_dir())
            .arg("--values")
            .arg(values.to_string())
            .output()
            .expect("the venv's python runs");
        assert!(
            !output.status.success(),
            "render accepted {values}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// `helm lint --strict --kube-version` with these values: the report.
    pub fn lint(&self, values: &Value) -> Value {
        self.lint_in(values, "amazon-seller-operator")
    }

    /// [`Tools::lint`] with `--namespace NAMESPACE`; empty is `helm lint` without the flag.
    pub fn lint_in(&self, values: &Value, namespace: &str) -> Value {
        let version = format!("v{KUBE_VERSION}");
        let (ok, out) = self.helper(
            "lint",
            values,
            &["--kube-version", &version, "--namespace", namespace],
        );
        assert!(ok, "lint could not run: {out}");
        out
    }

    /// Checks values against values.schema.json: `Err(message)` when rejected.
    pub fn schema(&self, values: &Value) -> Result<(), String> {
        let (ok, out) = self.helper("schema", values, &[]);
        if ok {
            Ok(())
        } else {
            Err(out["error"].as_str().unwrap_or_default().to_owned())
        }
    }

    /// `helm install NAME CHART -n NAMESPACE [--create-namespace] --values VALUES` against the
    /// cluster of `kubeconfig`, without `--wait` (no kubelet runs the pods): the release's
    /// status and objects, or Helm's refusal.
    pub fn install(
        &self,
        kubeconfig: &str,
        values: &Value,
        name: &str,
        namespace: &str,
        create_namespace: bool,
    ) -> Result<(String, Vec<Value>), String> {
        let mut extra = vec![
            "--name",
            name,
            "--namespace",
            namespace,
            "--kubeconfig",
            kubeconfig,
        ];
        if create_namespace {
            extra.push("--create-namespace");
        }
        let output = self.run("install", values, &extra);
        if !output.status.success() {
            return Err(format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let out: Value = serde_json::from_slice(&output.stdout).expect("install prints JSON");
        Ok((
            out["status"].as_str().unwrap_or_default().to_owned(),
            out["objects"].as_array().cloned().unwrap_or_default(),
        ))
    }

    /// `helm uninstall NAME -n NAMESPACE --ignore-not-found` against the cluster of
    /// `kubeconfig`.
    pub fn uninstall(&self, kubeconfig: &str, name: &str, namespace: &str) -> Result<(), String> {
        let output = self.run(
            "uninstall",
            &Value::Null,
            &[
                "--name",
                name,
                "--namespace",
                namespace,
                "--kubeconfig",
                kubeconfig,
            ],
        );
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// A `--set` expression as Helm parses it, as values.
    pub fn parse_set(&self, expression: &str) -> Value {
        let output = Command::new(&self.python)
            .arg(repo_path("hack/chart.py"))
            .args(["set", expression])
            .output()
            .expect("the venv's python runs");
        assert!(output.status.success(), "--set {expression}: {output:?}");
        serde_json::from_slice(&output.stdout).expect("set prints JSON")
    }

    fn run(&self, command: &str, values: &Value, extra: &[&str]) -> std::process::Output {
        let values = if values.is_null() {
            "{}".to_owned()
        } else {
            values.to_string()
        };
        Command::new(&self.python)
            .arg(repo_path("hack/chart.py"))
            .arg(command)
            .arg(chart_dir())
            .args(["--values", &values])
            .args(extra)
            .output()
            .expect("the venv's python runs")
    }

    /// Helm SDK and helm-python-sdk versions, for the test log.
    pub fn versions(&self) -> String {
        let output = Command::new(&self.python)
            .arg(repo_path("hack/chart.py"))
            .arg("version")
            .output()
            .expect("the venv's python runs");
        let validate = Command::new(&self.validate)
            .arg("--version")
            .output()
            .expect("kubernetes-validate runs");
        format!(
            "{} kubernetes-validate {}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&validate.stdout).trim()
        )
    }

    /// `kubernetes-validate --strict -k KUBE_VERSION` over the files: exit status and output.
    pub fn validate(&self, files: &[&Path]) -> (bool, String) {
        let output = Command::new(&self.validate)
            .args(["--strict", "-k", KUBE_VERSION])
            .args(files)
            .output()
            .expect("kubernetes-validate runs");
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    }
}
