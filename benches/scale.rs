//! Whole-system cost against a real control plane: the operator binary as its own process, the
//! LWA emulator as another, and N connections (each with its own sealed credentials Secret)
//! in 10 Team namespaces. Prints figures; asserts nothing about timing.
//!
//! For each size: time until every connection is Ready; the operator's CPU time per reconcile
//! and resident memory (its caches included); API writes per first connect, per no-op
//! reconcile (after a restart with valid tokens: limit 0) and per steady refresh (limit 2: the
//! runtime Secret and one status write); LWA calls after the restart (limit 0).
//!
//! Run: `cargo bench --bench scale -- --sizes 1000,10000 --refresh-sizes 1000` with
//! `ASO_TEST_KUBECONFIG` naming a
//! fresh test cluster (`hack/control-plane/start.sh DIR`). Under `cargo test` it runs a
//! 20-connection smoke pass when a cluster is configured, and skips otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use amazon_seller_operator::api::AmazonSellerConnection;
use amazon_seller_operator::crypto::{self, Credentials, PublicKey, SealContext};
use amazon_seller_operator::keystore;

const NAMESPACES: usize = 10;
const IN_FLIGHT: usize = 32;

struct Procs {
    operator: Child,
    emulator: Child,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for child in [&mut self.operator, &mut self.emulator] {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("bench path");
    // target/<profile>/deps/scale-… → target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let dir = target_dir();
    for candidate in [
        dir.join(name),
        dir.parent()
            .map(|p| p.join("debug").join(name))
            .unwrap_or_default(),
    ] {
        if candidate.exists() {
            return candidate;
        }
    }
    panic!(
        "{name} not built: run `cargo build --release --bin amazon-seller-operator --example lwa_emulator` first"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// (CPU seconds, resident KiB, peak resident KiB) of a process.
fn usage(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (ticks / 100.0, kib("VmRSS:"), kib("VmHWM:"))
}

/// A plain HTTP/1.0 GET of `http://127.0.0.1:PORT/PATH` (the operator's admin server).
async fn get_text(url: &str) -> String {
    use std::io::{Read, Write};
    let Some(rest) = url.strip_prefix("http://") else {
        return String::new();
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut stream) = std::net::TcpStream::connect(host) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{')
                    || l.as_bytes().get(name.len()) == Some(&b' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Mutating requests the API server has served, by resource (from its own metrics).
async fn api_writes(client: &Client) -> BTreeMap<String, f64> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(request).await.unwrap_or_default();
    let mut writes = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |key: &str| {
            line.split(&format!("{key}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
                .to_owned()
        };
        let verb = label("verb");
        if !matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE") {
            continue;
        }
        let resource = label("resource");
        if !matches!(resource.as_str(), "secrets" | "amazonsellerconnections") {
            continue;
        }
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let key = format!(
            "{verb} {resource}{}",
            match label("subresource").as_str() {
                "" => String::new(),
                s => format!("/{s}"),
            }
        );
        *writes.entry(key).or_insert(0.0) += value;
    }
    writes
}

fn diff(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

fn total(writes: &BTreeMap<String, f64>) -> f64 {
    // From +0.0: an empty f64 sum is -0.0, printed "-0".
    writes.values().fold(0.0, |sum, v| sum + v)
}

fn start_operator(
    kubeconfig: &str,
    namespace: &str,
    watched: &[String],
    lwa_dir: &Path,
    port: u16,
    log: &Path,
) -> Child {
    Command::new(binary("amazon-seller-operator"))
        .args([
            "run",
            "--operator-namespace",
            namespace,
            "--leader-election=false",
            // The controller's cost is measured here; the webhook has its own benchmark.
            "--webhook-enabled=false",
        ])
        // Only this run's namespaces: earlier runs' objects linger in a plane without a
        // namespace controller and must not be counted.
        .arg(format!("--watch-namespace={}", watched.join(",")))
        .args(["--lwa-qps", "500", "--lwa-burst", "500"])
        .args([
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--log-level",
            "warn",
        ])
        .arg("--lwa-endpoint")
        .arg(std::fs::read_to_string(lwa_dir.join("url")).expect("emulator url"))
        .arg("--lwa-ca-file")
        .arg(lwa_dir.join("ca.pem"))
        .env("KUBECONFIG", kubeconfig)
        .stdout(
            std::fs::File::create(log)
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .stderr(Stdio::null())
        .spawn()
        .expect("operator starts")
}

/// Waits until `n` connections report Ready=True, following a watch per namespace (a LIST every
/// second would cost the API server more than the operator at 100,000 connections).
async fn wait_ready(
    client: &Client,
    namespaces: &[String],
    n: usize,
    limit: Duration,
) -> Option<Duration> {
    use kube::runtime::watcher;
    let started = Instant::now();
    let watches = namespaces.iter().map(|ns| {
        watcher::watcher(
            Api::<AmazonSellerConnection>::namespaced(client.clone(), ns),
            watcher::Config::default(),
        )
        .boxed()
    });
    let mut events = stream::select_all(watches);
    let mut ready = std::collections::HashSet::new();
    let mut counted = 0;
    let follow = async {
        while let Some(event) = events.next().await {
            let (connection, deleted) = match event {
                Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => (c, false),
                Ok(watcher::Event::Delete(c)) => (c, true),
                _ => continue,
            };
            let key = format!(
                "{}/{}",
                connection.metadata.namespace.clone().unwrap_or_default(),
                connection.metadata.name.clone().unwrap_or_default()
            );
            let is_ready = !deleted
                && connection.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|x| x.type_ == "Ready" && x.status == "True")
                });
            if is_ready {
                ready.insert(key);
            } else {
                ready.remove(&key);
            }
            if n >= 10_000 && ready.len() >= counted + n / 10 && ready.len() < n {
                counted = ready.len();
                eprintln!(
                    "  … {counted} Ready after {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            }
            if ready.len() >= n {
                return started.elapsed();
            }
        }
        started.elapsed()
    };
    tokio::time::timeout(limit, follow).await.ok()
}

/// Resident memory of the control plane's processes, when the plane was started by
/// `hack/control-plane/start.sh` (its pid files sit beside the kubeconfig).
fn plane_memory(kubeconfig: &str) -> Option<String> {
    let dir = Path::new(kubeconfig).parent()?;
    let pid = |name: &str| -> Option<u32> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let (_, apiserver, _) = usage(pid("apiserver.pid")?);
    let (_, etcd, _) = usage(pid("etcd.pid")?);
    Some(format!(
        "kube-apiserver {:.0} MiB, etcd {:.0} MiB",
        apiserver as f64 / 1024.0,
        etcd as f64 / 1024.0
    ))
}

async fn wait_metric(port: u16, name: &str, at_least: f64, limit: Duration) -> f64 {
    let started = Instant::now();
    loop {
        let value = metric_sum(
            &get_text(&format!("http://127.0.0.1:{port}/metrics")).await,
            name,
        );
        if value >= at_least || started.elapsed() > limit {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One measured run. With `refresh_phase` the emulator issues 21.5-minute tokens, so with
/// renewBefore 20m every connection refreshes once about a minute after connecting, and that
/// refresh is measured instead of a restart (whose no-op figures need tokens that are not due).
async fn run_size(client: &Client, kubeconfig: &str, n: usize, refresh_phase: bool) {
    let run = format!(
        "scale-{n}{}-{}",
        if refresh_phase { "r" } else { "" },
        std::process::id()
    );
    let work = tempfile::tempdir().expect("temp dir");
    let operator_ns = format!("{run}-system");
    let namespaces: Vec<String> = (0..NAMESPACES).map(|i| format!("{run}-team{i}")).collect();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for (i, name) in std::iter::once(&operator_ns).chain(&namespaces).enumerate() {
        let mut ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
        if i > 0 {
            ns.metadata.labels =
                Some([("connectors.openteam.io/team".to_owned(), format!("t{i}"))].into());
        }
        ns_api
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace created");
    }

    // Tokens from the emulator live 21 minutes when the refresh phase runs, so that with
    // renewBefore 20m every connection refreshes once within about a minute of connecting.
    let lwa_dir = work.path().join("lwa");
    let expires = if refresh_phase { "1290" } else { "3600" };
    let emulator = Command::new(binary("examples/lwa_emulator"))
        .arg(&lwa_dir)
        .arg(expires)
        .stdout(Stdio::null())
        .spawn()
        .expect("emulator starts");
    for _ in 0..100 {
        if lwa_dir.join("url").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let port = free_port();
    let operator = start_operator(
        kubeconfig,
        &operator_ns,
        &namespaces,
        &lwa_dir,
        port,
        &work.path().join("operator.log"),
    );
    let mut procs = Procs { operator, emulator };
    wait_metric(
        port,
        "amazon_seller_build_info",
        1.0,
        Duration::from_secs(30),
    )
    .await;

    let cm: Api<ConfigMap> = Api::namespaced(client.clone(), &operator_ns);
    let mut public = None;
    for _ in 0..600 {
        if let Ok(c) = cm.get("amazon-seller-operator-public-key").await {
            public = c.data.and_then(|d| d.get("public-key.json").cloned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let public = PublicKey::from_json(&public.expect("public key published")).expect("public key");
    let read = |f: &str| std::fs::read_to_string(lwa_dir.join(f)).expect("demo credential");
    let credentials = Credentials {
        client_id: read("client-id"),
        client_secret: read("client-secret").into(),
        refresh_token: read("refresh-token").into(),
        next_client_secret: None,
        client_secret_expires_at: None,
    };

    // Create the objects.
    let writes_before = api_writes(client).await;
    let (cpu_before, _, _) = usage(procs.operator.id());
    let created = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let ns = namespaces[i % NAMESPACES].clone();
            let team = format!("t{}", i % NAMESPACES + 1);
            let envelope = crypto::seal(
                &public,
                &SealContext { team_id: &team, namespace: &ns, secret_name: &format!("c{i}-lwa") },
                &credentials,
            )
            .expect("sealed");
            async move {
                let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
                secrets
                    .create(&PostParams::default(), &keystore::sealed_secret(&ns, &format!("c{i}-lwa"), None, envelope))
                    .await?;
                let connection: AmazonSellerConnection = serde_json::from_value(json!({
                    "apiVersion": "connectors.openteam.io/v1alpha1", "kind": "AmazonSellerConnection",
                    "metadata": {"name": format!("c{i}"), "namespace": ns},
                    "spec": {"teamId": team, "sellerId": "A3FHEXAMPLEYWS", "marketplace": "DE",
                             "credentialsSecretName": format!("c{i}-lwa"), "gateways": ["gw"], "renewBefore": "20m"}
                }))
                .expect("connection");
                Api::<AmazonSellerConnection>::namespaced(client, &ns).create(&PostParams::default(), &connection).await?;
                if n >= 10_000 && (i + 1) % (n / 10) == 0 {
                    eprintln!("  … about {} created after {:.0} s", i + 1, created.elapsed().as_secs_f64());
                }
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await
        .expect("objects created");
    let create_time = created.elapsed();
    let ready = wait_ready(
        client,
        &namespaces,
        n,
        Duration::from_secs(600 + n as u64 / 10),
    )
    .await;
    // Let the reconciles triggered by the operator's own writes settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let metrics = get_text(&format!("http://127.0.0.1:{port}/metrics")).await;
    let reconciles = metric_sum(&metrics, "amazon_seller_reconcile_total");
    let refreshes = metric_sum(&metrics, "amazon_seller_token_refresh_total");
    let (cpu_after, rss, peak) = usage(procs.operator.id());
    let connect_writes = diff(&api_writes(client).await, &writes_before);
    let operator_connect_writes = total(&connect_writes) - 2.0 * n as f64;

    let label = if refresh_phase {
        " (21.5-minute tokens: steady refresh run)"
    } else {
        ""
    };
    println!("\n== {n} connections ({NAMESPACES} namespaces), against the real API server{label}");
    println!(
        "  objects created in {:.1} s; all Ready after {}",
        create_time.as_secs_f64(),
        ready.map_or("TIMEOUT".to_owned(), |d| format!(
            "{:.1} s",
            d.as_secs_f64()
        ))
    );
    println!(
        "  operator CPU: {:.2} s for {reconciles:.0} reconciles = {:.2} ms per reconcile",
        cpu_after - cpu_before,
        (cpu_after - cpu_before) * 1000.0 / reconciles.max(1.0)
    );
    println!(
        "  operator resident memory: {:.1} MiB (peak {:.1} MiB) = {:.1} KiB per connection",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        rss as f64 / n as f64
    );
    if let Some(plane) = plane_memory(kubeconfig) {
        println!("  control plane resident memory: {plane}");
    }
    println!(
        "  LWA refreshes: {refreshes:.0} ({:.2} per connection)",
        refreshes / n as f64
    );
    println!(
        "  API writes by the operator to connect: {operator_connect_writes:.0} = {:.2} per connection {:?}",
        operator_connect_writes / n as f64,
        connect_writes
    );

    if !refresh_phase {
        // No-op: a restart with valid tokens.
        let _ = Command::new("kill")
            .arg(procs.operator.id().to_string())
            .status();
        let _ = procs.operator.wait();
        let calls_before: u64 = read("calls").trim().parse().unwrap_or(0);
        let before = api_writes(client).await;
        let port2 = free_port();
        procs.operator = start_operator(
            kubeconfig,
            &operator_ns,
            &namespaces,
            &lwa_dir,
            port2,
            &work.path().join("operator2.log"),
        );
        let (cpu0, _, _) = usage(procs.operator.id());
        let seen = wait_metric(
            port2,
            "amazon_seller_reconcile_total",
            n as f64,
            Duration::from_secs(600),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (cpu1, rss2, _) = usage(procs.operator.id());
        let noop_writes = diff(&api_writes(client).await, &before);
        let calls_after: u64 = read("calls").trim().parse().unwrap_or(0);
        println!(
            "  restart with valid tokens: {seen:.0} reconciles, {:.0} API writes (limit 0) {:?}, {} LWA calls (limit 0)",
            total(&noop_writes),
            noop_writes,
            calls_after.saturating_sub(calls_before)
        );
        println!(
            "  restart CPU: {:.2} ms per no-op reconcile (start-up and initial lists included); memory {:.1} MiB",
            (cpu1 - cpu0) * 1000.0 / seen.max(1.0),
            rss2 as f64 / 1024.0
        );
    }
    if refresh_phase {
        // Every token was issued for 21.5 minutes: each falls due within about 1.5 minutes.
        let before = api_writes(client).await;
        let refreshes_before = metric_sum(
            &get_text(&format!("http://127.0.0.1:{port}/metrics")).await,
            "amazon_seller_token_refresh_total",
        );
        let done = wait_metric(
            port,
            "amazon_seller_token_refresh_total",
            refreshes_before + n as f64,
            Duration::from_secs(300),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Both counted after the settling time, refreshes first: a refresh in between adds
        // writes but not itself, so the figure errs high, never low.
        let refreshed = metric_sum(
            &get_text(&format!("http://127.0.0.1:{port}/metrics")).await,
            "amazon_seller_token_refresh_total",
        )
        .max(done)
            - refreshes_before;
        let writes = diff(&api_writes(client).await, &before);
        println!(
            "  steady refresh: {refreshed:.0} refreshes, {:.0} API writes = {:.2} per refresh (limit 2) {:?}",
            total(&writes),
            total(&writes) / refreshed.max(1.0),
            writes
        );
    }
    drop(procs);
    for ns in std::iter::once(&operator_ns).chain(&namespaces) {
        let _ = ns_api.delete(ns, &Default::default()).await;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let sizes: Vec<usize> = args
        .iter()
        .skip_while(|a| *a != "--sizes")
        .nth(1)
        .map(|v| {
            v.split(',')
                .filter_map(|s| s.parse().ok())
                .filter(|n| *n > 0)
                .collect()
        })
        .unwrap_or_else(|| if bench { vec![1000, 10_000] } else { vec![20] });
    let refresh_sizes: Vec<usize> = args
        .iter()
        .skip_while(|a| *a != "--refresh-sizes")
        .nth(1)
        .map(|v| {
            v.split(',')
                .filter_map(|s| s.parse().ok())
                .filter(|n| *n > 0)
                .collect()
        })
        .unwrap_or_else(|| if bench { vec![1000] } else { Vec::new() });
    let Ok(kubeconfig) = std::env::var("ASO_TEST_KUBECONFIG") else {
        println!(
            "scale benchmark skipped: set ASO_TEST_KUBECONFIG to a test cluster (hack/control-plane/start.sh)"
        );
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let config = Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&kubeconfig).expect("kubeconfig"),
            &KubeConfigOptions::default(),
        )
        .await
        .expect("config");
        let client = Client::try_from(config).expect("client");
        // The CRDs, as `crd` prints them, applied the way a user would.
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
            Api::all(client.clone());
        for crd in amazon_seller_operator::api::crds() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            crds.patch(&name, &kube::api::PatchParams::apply("aso-bench").force(), &kube::api::Patch::Apply(&crd))
                .await
                .expect("CRD applied");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "scale benchmark: operator and LWA emulator as separate processes; {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        for n in sizes {
            run_size(&client, &kubeconfig, n, false).await;
        }
        for n in refresh_sizes {
            run_size(&client, &kubeconfig, n, true).await;
        }
    });
}
