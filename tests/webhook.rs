//! The admission webhook over real HTTPS on loopback: raw `AdmissionReview` v1 requests for
//! every rule, allowed and denied, sent by a real HTTP client (rustls, trusting a test CA) to
//! the running server, with a fake cluster view. Also: sealing on write, malformed input,
//! limits, readiness, certificate reload, metering and auditing without secret values, and a
//! property test over the request handler.

mod support;

use std::io::BufReader;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use proptest::prelude::*;
use serde_json::{Value, json};

use amazon_seller_operator::crypto::{self, Keyring, SealContext};
use amazon_seller_operator::https::{CertStore, ServerSettings, Webhook, listener, tls};
use amazon_seller_operator::observability::audit::{self, VerifyOptions};
use amazon_seller_operator::observability::metrics::Metrics;

use support::eventually::eventually;
use support::webhook::{
    Captured, FakeCluster, Review, RunningWebhook, TestPki, admission, https_client, owned_by, pod,
    workload,
};

const ALICE: (&str, &[&str]) = (
    "alice@example.com",
    &["system:authenticated", "openteam:team:acme"],
);
const MALLORY: (&str, &[&str]) = (
    "mallory@example.com",
    &["system:authenticated", "openteam:team:globex"],
);
const ADMIN: (&str, &[&str]) = ("root@example.com", &["platform-admins"]);
const OPERATOR: (&str, &[&str]) = (
    "system:serviceaccount:aso:amazon-seller-operator",
    &["system:serviceaccounts", "system:serviceaccounts:aso"],
);
const BUILDER_SA: (&str, &[&str]) = (
    "system:serviceaccount:team-acme:builder",
    &["system:serviceaccounts", "system:serviceaccounts:team-acme"],
);
const REVIEWER: (&str, &[&str]) = ("rita@example.com", &["security-reviewers"]);
/// The kube-controller-manager's controllers, with `--use-service-account-credentials`.
const REPLICASET_CONTROLLER: (&str, &[&str]) = (
    "system:serviceaccount:kube-system:replicaset-controller",
    &[
        "system:serviceaccounts",
        "system:serviceaccounts:kube-system",
    ],
);
const DEPLOYMENT_CONTROLLER: (&str, &[&str]) = (
    "system:serviceaccount:kube-system:deployment-controller",
    &[
        "system:serviceaccounts",
        "system:serviceaccounts:kube-system",
    ],
);
const CRONJOB_CONTROLLER: (&str, &[&str]) = (
    "system:serviceaccount:kube-system:cronjob-controller",
    &[
        "system:serviceaccounts",
        "system:serviceaccounts:kube-system",
    ],
);
const GARBAGE_COLLECTOR: (&str, &[&str]) = (
    "system:serviceaccount:kube-system:generic-garbage-collector",
    &[
        "system:serviceaccounts",
        "system:serviceaccounts:kube-system",
    ],
);
const OTHER_NAMESPACE_SA: (&str, &[&str]) = (
    "system:serviceaccount:team-globex:builder",
    &[
        "system:serviceaccounts",
        "system:serviceaccounts:team-globex",
    ],
);

const NS: &str = "team-acme";
const CLIENT_ID: &str = "amzn1.application-oa2-client.0123abcdef";
const CLIENT_SECRET: &str = "amzn1.oa2-cs.v1.ClientSecretPlaintextXYZ";
const REFRESH_TOKEN: &str = "Atzr|IwEBIRefreshTokenPlaintextXYZ";
const NEXT_CLIENT_SECRET: &str = "amzn1.oa2-cs.v1.NextSecretPlaintextXYZ";
const PLAINTEXTS: [&str; 4] = [
    CLIENT_SECRET,
    REFRESH_TOKEN,
    NEXT_CLIENT_SECRET,
    "0123abcdef",
];

struct Harness {
    server: RunningWebhook,
    client: reqwest::Client,
    cluster: Arc<FakeCluster>,
    keyring: Arc<RwLock<Keyring>>,
    audit: Captured,
    metrics: Metrics,
    _pki: TestPki,
}

/// The `response` of an answered review.
#[derive(Debug)]
struct Answer(Value);

impl Answer {
    fn allowed(&self) -> bool {
        self.0["allowed"].as_bool().unwrap()
    }
    fn reason(&self) -> &str {
        self.0["auditAnnotations"]["reason"].as_str().unwrap_or("")
    }
    fn message(&self) -> &str {
        self.0["status"]["message"].as_str().unwrap_or("")
    }
    fn code(&self) -> u64 {
        self.0["status"]["code"].as_u64().unwrap_or(0)
    }
    fn warnings(&self) -> Vec<String> {
        self.0["warnings"]
            .as_array()
            .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    }
    fn patch(&self) -> Option<json_patch::Patch> {
        // kube's AdmissionResponse writes the patch bytes as a JSON array of numbers, which the
        // API server's decoder accepts like the base64 string Go itself writes.
        let bytes: Vec<u8> = match &self.0["patch"] {
            Value::String(encoded) => B64.decode(encoded).unwrap(),
            Value::Array(numbers) => numbers.iter().map(|n| n.as_u64().unwrap() as u8).collect(),
            _ => return None,
        };
        assert_eq!(self.0["patchType"], "JSONPatch");
        Some(serde_json::from_slice(&bytes).unwrap())
    }
    /// Asserts a denial with `reason` whose message starts with (or contains) `text`.
    fn denied(&self, reason: &str, text: &str) {
        assert!(!self.allowed(), "expected a denial ({reason}): {self:?}");
        assert_eq!(self.reason(), reason, "{self:?}");
        assert_eq!(self.code(), 403, "{self:?}");
        assert!(
            self.message().contains(text),
            "{:?} lacks {text:?}",
            self.message()
        );
    }
}

impl Harness {
    async fn start() -> Self {
        let pki = TestPki::new();
        let cluster = Arc::new(FakeCluster::with_team(NS, "acme", "acme-us", &["gw-main"]));
        cluster.add_team("team-globex", "globex", "globex-de", &["gw-globex"]);
        let keyring = Arc::new(RwLock::new(Keyring::generate(jiff::Timestamp::now())));
        let metrics = Metrics::new().unwrap();
        let audit = Captured::default();
        let admission = admission(
            cluster.clone(),
            keyring.clone(),
            metrics.clone(),
            audit.clone(),
        );
        let server = RunningWebhook::start(admission, pki.store()).await;
        Self {
            client: https_client(&pki.ca_pem),
            server,
            cluster,
            keyring,
            audit,
            metrics,
            _pki: pki,
        }
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.server.url()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn send(&self, path: &str, review: &Review) -> Answer {
        let response = self.post(path, review.body()).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "application/json"
        );
        let body: Value = json_body(response).await;
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(body["kind"], "AdmissionReview");
        assert_eq!(body["response"]["uid"], review.uid(), "uid echoed");
        Answer(body["response"].clone())
    }

    async fn validate(&self, review: &Review) -> Answer {
        self.send("/validate", review).await
    }

    async fn mutate(&self, review: &Review) -> Answer {
        self.send("/mutate", review).await
    }
}

async fn json_body(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

fn as_user(review: Review, (name, groups): (&str, &[&str])) -> Review {
    review.user(name, groups)
}

// --- objects -------------------------------------------------------------------------------

fn connection(spec: Value) -> Value {
    let mut c = json!({
        "apiVersion": "connectors.openteam.io/v1alpha1",
        "kind": "AmazonSellerConnection",
        "metadata": {"name": "acme-us", "namespace": NS},
        "spec": {
            "teamId": "acme",
            "sellerId": "A3FHEXAMPLEYWS",
            "marketplace": "US",
            "environment": "Production",
            "credentialsSecretName": "acme-us-lwa",
            "gateways": ["gw-main"],
            "renewBefore": "20m",
            "suspended": false
        }
    });
    support::webhook::merge(&mut c["spec"], spec);
    c
}

fn intake(name: &str, string_data: bool) -> Value {
    let values = json!({
        "clientId": CLIENT_ID,
        "clientSecret": CLIENT_SECRET,
        "refreshToken": REFRESH_TOKEN,
        "nextClientSecret": NEXT_CLIENT_SECRET,
        "clientSecretExpiresAt": "2026-11-12T00:00:00Z",
    });
    let mut secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"connectors.openteam.io/secret-role": "lwa-credentials"}
        },
        "type": "Opaque"
    });
    if string_data {
        secret["stringData"] = values;
    } else {
        let encoded: serde_json::Map<String, Value> = values
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), B64.encode(v.as_str().unwrap()).into()))
            .collect();
        secret["data"] = Value::Object(encoded);
    }
    secret
}

/// An intake as `kubectl apply -f` sends it: the file, and the file again in kubectl's
/// last-applied annotation.
fn applied_intake() -> Value {
    let file = intake("acme-us-lwa", true);
    let mut object = file.clone();
    object["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/last-applied-configuration": format!("{file}\n")});
    object
}

fn sealed_secret(name: &str, envelope: &[u8]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"connectors.openteam.io/secret-role": "lwa-credentials"}
        },
        "type": "connectors.openteam.io/lwa-credentials",
        "data": {"sealed": B64.encode(envelope)}
    })
}

fn runtime_secret(name: &str, labels: Value, type_: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "type": type_,
        "data": {"access_token": B64.encode("Atza|forged")}
    })
}

fn envelope(keyring: &Keyring, name: &str) -> Vec<u8> {
    let credentials = crypto::Credentials {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        refresh_token: REFRESH_TOKEN.into(),
        next_client_secret: None,
        client_secret_expires_at: None,
    };
    let context = SealContext {
        team_id: "acme",
        namespace: NS,
        secret_name: name,
    };
    crypto::seal(&keyring.active().public_key(), &context, &credentials).unwrap()
}

fn runtime_volume() -> Value {
    json!({"volumes": [{"name": "token", "secret": {"secretName": "acme-us-sp-api"}}],
           "containers": [{"name": "main", "image": "registry.example/gateway:1",
                           "volumeMounts": [{"name": "token", "mountPath": "/var/run/sp-api"}]}]})
}

// --- connections ---------------------------------------------------------------------------

#[tokio::test]
async fn connection_rules_over_https() {
    let h = Harness::start().await;
    let create = |user, spec: Value| {
        as_user(Review::connection("CREATE").in_namespace(NS), user).object(connection(spec))
    };

    let a = h.validate(&create(ALICE, json!({}))).await;
    assert!(a.allowed(), "{a:?}");
    assert!(a.warnings().is_empty());
    assert!(h.validate(&create(ADMIN, json!({}))).await.allowed());
    assert!(h.validate(&create(OPERATOR, json!({}))).await.allowed());

    h.validate(&create(MALLORY, json!({}))).await.denied(
        "not_team_member",
        "\"mallory@example.com\" is not a member of team \"acme\"",
    );
    h.validate(&create(BUILDER_SA, json!({})))
        .await
        .denied("not_team_member", "group \"openteam:team:acme\"");
    h.validate(&create(ALICE, json!({"teamId": "globex"})))
        .await
        .denied(
            "team_mismatch",
            "spec.teamId: \"globex\" must equal the namespace's team \"acme\"",
        );
    h.validate(&create(ALICE, json!({"marketplace": "XX"})))
        .await
        .denied(
            "invalid_spec",
            "spec.marketplace: unknown marketplace \"XX\" (valid: AE, AU,",
        );
    h.validate(&create(
        ALICE,
        json!({"credentialsSecretName": "acme-us-sp-api"}),
    ))
    .await
    .denied("credentials_secret_conflict", "spec.credentialsSecretName");

    let warned = h
        .validate(&create(
            ALICE,
            json!({"credentialsSecretName": "not-yet-there"}),
        ))
        .await;
    assert!(warned.allowed());
    assert_eq!(warned.warnings().len(), 1);
    assert!(
        warned.warnings()[0].starts_with("spec.credentialsSecretName: Secret \"not-yet-there\"")
    );

    let update = as_user(Review::connection("UPDATE").in_namespace(NS), ALICE)
        .old(connection(json!({})))
        .object(connection(json!({"sellerId": "B3FHEXAMPLEYWS"})));
    h.validate(&update)
        .await
        .denied("immutable_field", "spec.sellerId: is immutable");

    let delete = |user| {
        as_user(Review::connection("DELETE").in_namespace(NS), user).old(connection(json!({})))
    };
    assert!(h.validate(&delete(ALICE)).await.allowed());
    h.validate(&delete(MALLORY))
        .await
        .denied("not_team_member", "may delete AmazonSellerConnections");

    // A connection in a namespace without a Team label.
    let mut elsewhere = connection(json!({}));
    elsewhere["metadata"]["namespace"] = "default".into();
    let unbound = as_user(Review::connection("CREATE"), ADMIN).object(elsewhere);
    h.validate(&unbound).await.denied(
        "namespace_not_bound",
        "metadata.namespace: namespace \"default\"",
    );
    h.server.stop().await;
}

// --- secrets -------------------------------------------------------------------------------

#[tokio::test]
async fn an_intake_secret_is_sealed_before_it_is_stored_and_no_plaintext_leaks() {
    // Capture every log line the server writes, at every level.
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::start().await;
    for string_data in [false, true] {
        let object = intake("acme-us-lwa", string_data);
        let review =
            as_user(Review::secret("CREATE").in_namespace(NS), ALICE).object(object.clone());
        let response = h.post("/mutate", review.body()).await;
        let raw = response.text().await.unwrap();
        for plaintext in PLAINTEXTS {
            assert!(
                !raw.contains(plaintext),
                "the response leaks a plaintext value"
            );
            assert!(
                !raw.contains(&B64.encode(plaintext)),
                "the response leaks a value (base64)"
            );
        }
        let answer = Answer(serde_json::from_str::<Value>(&raw).unwrap()["response"].clone());
        assert!(answer.allowed(), "{answer:?}");
        assert_eq!(answer.reason(), "sealed_intake");

        // Apply the patch as the API server does: what would be stored.
        let mut stored = object.clone();
        json_patch::patch(&mut stored, &answer.patch().unwrap()).unwrap();
        assert_eq!(stored["type"], "connectors.openteam.io/lwa-credentials");
        assert!(stored.get("stringData").is_none(), "stringData removed");
        let data = stored["data"].as_object().unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["sealed"]);
        let stored_text = stored.to_string();
        for plaintext in PLAINTEXTS {
            assert!(!stored_text.contains(plaintext));
            assert!(!stored_text.contains(&B64.encode(plaintext)));
        }
        let envelope = B64.decode(data["sealed"].as_str().unwrap()).unwrap();
        let context = SealContext {
            team_id: "acme",
            namespace: NS,
            secret_name: "acme-us-lwa",
        };
        let (opened, key_id) =
            crypto::open(&h.keyring.read().unwrap(), &context, &envelope).unwrap();
        assert_eq!(key_id, h.keyring.read().unwrap().active().id());
        assert_eq!(opened.client_id, CLIENT_ID);
        assert_eq!(opened.client_secret.expose(), CLIENT_SECRET);
        assert_eq!(opened.refresh_token.expose(), REFRESH_TOKEN);
        assert_eq!(
            opened.next_client_secret.as_ref().unwrap().expose(),
            NEXT_CLIENT_SECRET
        );

        // The validating webhook then sees only the envelope and allows it.
        let validated = h
            .validate(&as_user(Review::secret("CREATE").in_namespace(NS), ALICE).object(stored))
            .await;
        assert!(validated.allowed(), "{validated:?}");
    }

    let audit = h.audit.text();
    assert!(
        audit.contains("\"category\":\"connector_setup\""),
        "{audit}"
    );
    assert!(audit.contains("\"reason\":\"sealed_intake\""), "{audit}");
    let metrics = h.metrics.encode().unwrap();
    h.server.stop().await;
    let logs = logs.text();
    assert!(
        logs.contains("admission decision"),
        "debug lines were captured: {logs}"
    );
    for (what, text) in [("audit", &audit), ("logs", &logs), ("metrics", &metrics)] {
        for plaintext in PLAINTEXTS {
            assert!(!text.contains(plaintext), "{what} leak a plaintext value");
            assert!(
                !text.contains(&B64.encode(plaintext)),
                "{what} leak a value (base64)"
            );
        }
    }
}

#[tokio::test]
async fn an_intake_applied_with_kubectl_is_stored_without_plaintext_in_any_annotation() {
    const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
    let h = Harness::start().await;
    // What `kubectl apply -f` sends: the file, and the file again in the annotation.
    let file = intake("acme-us-lwa", true);
    let mut object = file.clone();
    object["metadata"]["annotations"] = json!({
        LAST_APPLIED: format!("{file}\n"),
        "team.example/owner": "alice",
    });
    let answer = h
        .mutate(&as_user(Review::secret("CREATE").in_namespace(NS), ALICE).object(object.clone()))
        .await;
    assert!(answer.allowed(), "{answer:?}");
    assert_eq!(answer.reason(), "sealed_intake");
    let mut stored = object.clone();
    json_patch::patch(&mut stored, &answer.patch().unwrap()).unwrap();
    let stored_text = stored.to_string();
    for plaintext in PLAINTEXTS {
        assert!(!stored_text.contains(plaintext), "stored: {stored_text}");
        assert!(!stored_text.contains(&B64.encode(plaintext)));
    }
    // The annotation keeps everything but the credential keys: kubectl's next three-way merge
    // neither deletes the envelope nor meets a type it did not apply.
    let annotations = &stored["metadata"]["annotations"];
    assert_eq!(annotations["team.example/owner"], "alice");
    let kept = annotations[LAST_APPLIED].as_str().unwrap();
    assert!(kept.ends_with('\n'));
    let mut expected = file.clone();
    expected.as_object_mut().unwrap().remove("stringData");
    assert_eq!(serde_json::from_str::<Value>(kept).unwrap(), expected);
    let validated = h
        .validate(&as_user(Review::secret("CREATE").in_namespace(NS), ALICE).object(stored))
        .await;
    assert!(validated.allowed(), "{validated:?}");

    // A value in another annotation is refused, naming the annotation, never the value.
    let mut copied = object.clone();
    copied["metadata"]["annotations"]["team.example/backup"] = format!("rt={REFRESH_TOKEN}").into();
    let answer = h
        .mutate(&as_user(Review::secret("CREATE").in_namespace(NS), ALICE).object(copied))
        .await;
    answer.denied(
        "credentials_in_metadata",
        "metadata.annotations[\"team.example/backup\"]: holds a credential value",
    );
    assert!(answer.patch().is_none());
    // A last-applied configuration the mutating webhook left (it was not sealing) is refused.
    let mut sealed = sealed_secret(
        "acme-us-lwa",
        &envelope(&h.keyring.read().unwrap(), "acme-us-lwa"),
    );
    sealed["metadata"]["annotations"] = json!({LAST_APPLIED: format!("{file}\n")});
    let answer = h
        .validate(&as_user(Review::secret("UPDATE").in_namespace(NS), ALICE).object(sealed))
        .await;
    answer.denied(
        "plaintext_credentials",
        "metadata.annotations[\"kubectl.kubernetes.io/last-applied-configuration\"]: holds plaintext LWA credentials (stringData.clientId)",
    );
    for plaintext in PLAINTEXTS {
        assert!(!answer.message().contains(plaintext));
    }
    let audit = h.audit.text();
    for plaintext in PLAINTEXTS {
        assert!(!audit.contains(plaintext), "the audit log leaks a value");
    }
    h.server.stop().await;
}

#[tokio::test]
async fn secret_rules_over_https() {
    let h = Harness::start().await;
    let keyring = Keyring::from_json(h.keyring.read().unwrap().to_json().as_bytes()).unwrap();
    let good = envelope(&keyring, "acme-us-lwa");

    // Intake problems are refused by the mutating webhook, naming the key, never the value.
    let mut incomplete = intake("acme-us-lwa", true);
    incomplete["stringData"]
        .as_object_mut()
        .unwrap()
        .remove("refreshToken");
    let a = h
        .mutate(&as_user(Review::secret("CREATE").in_namespace(NS), ALICE).object(incomplete))
        .await;
    a.denied("incomplete_intake", "data.refreshToken: missing");
    let mut wrong = intake("acme-us-lwa", true);
    wrong["stringData"]["refreshToken"] = "Atza|IwEBIRefreshTokenPlaintextXYZ".into();
    let a = h
        .mutate(&as_user(Review::secret("CREATE").in_namespace(NS), ALICE).object(wrong))
        .await;
    a.denied(
        "invalid_intake",
        "data.refreshToken does not look like an LWA refresh token",
    );
    assert!(!a.message().contains("PlaintextXYZ"));
    let mut generated = intake("", true);
    generated["metadata"]["generateName"] = "acme-".into();
    h.mutate(&as_user(Review::secret("CREATE").in_namespace(NS), ALICE).object(generated))
        .await
        .denied("name_required", "metadata.name");
    // A member of another Team cannot have credentials sealed into this Team's namespace.
    h.mutate(
        &as_user(Review::secret("CREATE").in_namespace(NS), MALLORY)
            .object(intake("acme-us-lwa", true)),
    )
    .await
    .denied("not_team_member", "only members of the namespace's Team");

    // Plaintext that reached validation (the mutating webhook was bypassed) is refused.
    h.validate(
        &as_user(Review::secret("CREATE").in_namespace(NS), ALICE)
            .object(intake("acme-us-lwa", false)),
    )
    .await
    .denied(
        "plaintext_credentials",
        "data.clientId: plaintext LWA credentials are never stored",
    );

    // Writing plaintext keys into an existing sealed Secret.
    let mut mixed = sealed_secret("acme-us-lwa", &good);
    mixed["data"]["clientSecret"] = B64.encode(CLIENT_SECRET).into();
    let review = as_user(Review::secret("UPDATE").in_namespace(NS), ALICE)
        .old(sealed_secret("acme-us-lwa", &good))
        .object(mixed);
    h.mutate(&review)
        .await
        .denied("incomplete_intake", "data.clientId: missing");
    h.validate(&review)
        .await
        .denied("plaintext_credentials", "data.clientSecret");

    // Well-formed sealed credentials, by a member; by another Team, replaced: refused.
    let create = as_user(Review::secret("CREATE").in_namespace(NS), ALICE)
        .object(sealed_secret("acme-us-lwa", &good));
    let a = h.validate(&create).await;
    assert!(a.allowed() && a.warnings().is_empty(), "{a:?}");
    let other = envelope(&Keyring::generate(jiff::Timestamp::now()), "acme-us-lwa");
    h.validate(
        &as_user(Review::secret("UPDATE").in_namespace(NS), MALLORY)
            .old(sealed_secret("acme-us-lwa", &good))
            .object(sealed_secret("acme-us-lwa", &other)),
    )
    .await
    .denied(
        "not_team_member",
        "may not change credentials Secret \"acme-us-lwa\"",
    );
    // Sealed to a key the operator does not hold: a warning, not a denial.
    let a = h
        .validate(
            &as_user(Review::secret("UPDATE").in_namespace(NS), ALICE)
                .old(sealed_secret("acme-us-lwa", &good))
                .object(sealed_secret("acme-us-lwa", &other)),
        )
        .await;
    assert!(a.allowed());
    assert!(a.warnings()[0].contains("which the operator does not hold"));
    h.validate(
        &as_user(Review::secret("CREATE").in_namespace(NS), ALICE)
            .object(sealed_secret("acme-us-lwa", b"{\"version\":1}")),
    )
    .await
    .denied("malformed_envelope", "data.sealed: not a sealed envelope");

    // Forged runtime Secrets: by label, by type, by the name of an existing connection; by a
    // member, an admin and another ServiceAccount. Only the operator writes them.
    let forged = [
        runtime_secret(
            "anything",
            json!({"connectors.openteam.io/secret-role": "runtime-token"}),
            "Opaque",
        ),
        runtime_secret("anything", json!({}), "connectors.openteam.io/sp-api-token"),
        runtime_secret("acme-us-sp-api", json!({}), "Opaque"),
    ];
    for object in &forged {
        for user in [ALICE, ADMIN, BUILDER_SA] {
            h.validate(
                &as_user(Review::secret("CREATE").in_namespace(NS), user).object(object.clone()),
            )
            .await
            .denied(
                "not_operator",
                "runtime Secrets are written only by the operator",
            );
        }
        let by_operator =
            as_user(Review::secret("CREATE").in_namespace(NS), OPERATOR).object(object.clone());
        assert!(h.validate(&by_operator).await.allowed());
    }
    h.validate(&as_user(Review::secret("DELETE").in_namespace(NS), ALICE).old(forged[2].clone()))
        .await
        .denied(
            "not_operator",
            "may not delete runtime Secret \"acme-us-sp-api\"",
        );

    // Forged token stores: only the operator writes them either.
    for object in [
        runtime_secret(
            "anything",
            json!({"connectors.openteam.io/secret-role": "token-store"}),
            "Opaque",
        ),
        runtime_secret(
            "anything",
            json!({}),
            "connectors.openteam.io/sp-api-token-sealed",
        ),
        runtime_secret("acme-us-sp-api-sealed", json!({}), "Opaque"),
    ] {
        h.validate(
            &as_user(Review::secret("CREATE").in_namespace(NS), ALICE).object(object.clone()),
        )
        .await
        .denied(
            "not_operator",
            "token stores are written only by the operator",
        );
        let by_operator =
            as_user(Review::secret("CREATE").in_namespace(NS), OPERATOR).object(object);
        assert!(h.validate(&by_operator).await.allowed());
    }

    // Unrelated Secrets are not the webhook's business.
    let plain = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "app-config", "namespace": NS}, "data": {"clientSecret": "eA=="}});
    let a = h
        .validate(&as_user(Review::secret("CREATE").in_namespace(NS), MALLORY).object(plain))
        .await;
    assert!(a.allowed());
    assert_eq!(a.reason(), "unrelated");
    h.server.stop().await;
}

// --- pods ----------------------------------------------------------------------------------

#[tokio::test]
async fn pod_rules_over_https() {
    let h = Harness::start().await;
    let create =
        |user, pod: Value| as_user(Review::pod("CREATE").in_namespace(NS), user).object(pod);

    let gateway = pod("gw", NS, Some("gw-main"), runtime_volume());
    let a = h.validate(&create(ALICE, gateway.clone())).await;
    assert!(a.allowed(), "{a:?}");

    h.validate(&create(ALICE, pod("gw", NS, None, runtime_volume())))
        .await
        .denied(
            "missing_gateway_label",
            "metadata.labels[\"connectors.openteam.io/gateway\"]: missing",
        );
    h.validate(&create(
        ALICE,
        pod("gw", NS, Some("gw-globex"), runtime_volume()),
    ))
    .await
    .denied("gateway_not_listed", "gateway \"gw-globex\" is not listed");

    // Via an init container's env.valueFrom, even in a listed gateway.
    let init_env = pod(
        "gw",
        NS,
        Some("gw-main"),
        json!({"initContainers": [{"name": "init", "image": "busybox", "env": [
            {"name": "X", "value": "1"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "acme-us-sp-api", "key": "access_token"}}}
        ]}]}),
    );
    h.validate(&create(ALICE, init_env)).await.denied(
        "env_reference",
        "spec.initContainers[0].env[1].valueFrom.secretKeyRef: runtime Secret \"acme-us-sp-api\" may only be mounted as a volume",
    );

    // Via a projected volume, without the gateway label.
    let projected = pod(
        "gw",
        NS,
        None,
        json!({"volumes": [{"name": "token", "projected": {"sources": [
            {"configMap": {"name": "settings"}},
            {"secret": {"name": "acme-us-sp-api"}}
        ]}}]}),
    );
    h.validate(&create(ALICE, projected)).await.denied(
        "missing_gateway_label",
        "spec.volumes[0].projected.sources[1].secret",
    );

    // Via subPath.
    let mut sub_path = runtime_volume();
    sub_path["containers"][0]["volumeMounts"][0]["subPath"] = "access_token".into();
    h.validate(&create(ALICE, pod("gw", NS, Some("gw-main"), sub_path)))
        .await
        .denied(
            "sub_path_mount",
            "spec.containers[0].volumeMounts[0].subPath: volume \"token\" holds runtime Secret",
        );

    // Via an ephemeral container's envFrom, added through the subresource.
    let mut debugged = gateway.clone();
    debugged["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": "busybox",
        "envFrom": [{"secretRef": {"name": "acme-us-sp-api"}}]}]);
    h.validate(&as_user(Review::ephemeral_containers(debugged), ALICE))
        .await
        .denied(
            "env_reference",
            "spec.ephemeralContainers[0].envFrom[0].secretRef",
        );
    // An ephemeral container that only mounts the volume in a listed gateway is fine.
    let mut mounted = gateway.clone();
    mounted["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": "busybox",
        "volumeMounts": [{"name": "token", "mountPath": "/t"}]}]);
    assert!(
        h.validate(&as_user(Review::ephemeral_containers(mounted), ALICE))
            .await
            .allowed()
    );

    // A pod update that drops the gateway label.
    let relabelled = pod("gw", NS, Some("gw-other"), runtime_volume());
    h.validate(
        &as_user(Review::pod("UPDATE").in_namespace(NS), ALICE)
            .old(gateway.clone())
            .object(relabelled),
    )
    .await
    .denied("gateway_not_listed", "gateway \"gw-other\"");

    // Sealed credentials: never, in any form.
    for spec in [
        json!({"volumes": [{"name": "c", "secret": {"secretName": "acme-us-lwa"}}]}),
        json!({"containers": [{"name": "main", "image": "x", "envFrom": [{"secretRef": {"name": "acme-us-lwa"}}]}]}),
    ] {
        h.validate(&create(ALICE, pod("gw", NS, Some("gw-main"), spec)))
            .await
            .denied("sealed_secret_reference", "holds sealed LWA credentials");
    }

    // A token store (the runtime credential endpoint's sealed copy): never, in any form, even
    // for a listed gateway.
    for spec in [
        json!({"volumes": [{"name": "t", "secret": {"secretName": "acme-us-sp-api-sealed"}}]}),
        json!({"containers": [{"name": "main", "image": "x", "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "acme-us-sp-api-sealed", "key": "sealed"}}}]}]}),
    ] {
        h.validate(&create(ALICE, pod("gw", NS, Some("gw-main"), spec)))
            .await
            .denied("sealed_secret_reference", "sealed token store");
    }

    // An ordinary pod is unrelated.
    let ordinary = pod(
        "web",
        NS,
        None,
        json!({"volumes": [{"name": "c", "secret": {"secretName": "app-config"}}]}),
    );
    let a = h.validate(&create(MALLORY, ordinary)).await;
    assert!(a.allowed());
    assert_eq!(a.reason(), "none");

    let metrics = h.metrics.encode().unwrap();
    assert!(
        metrics.contains(
            "amazon_seller_credential_access_total{gateway=\"gw-main\",outcome=\"allowed\",team=\"acme\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("gateway=\"none\",outcome=\"denied\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("resource=\"pods_ephemeralcontainers\""),
        "{metrics}"
    );
    h.server.stop().await;
}

#[tokio::test]
async fn using_a_connection_needs_the_teams_identity_over_https() {
    let h = Harness::start().await;
    let create =
        |user, pod: Value| as_user(Review::pod("CREATE").in_namespace(NS), user).object(pod);
    let gateway = pod("gw", NS, Some("gw-main"), runtime_volume());

    // Another Team's member, a ServiceAccount of another namespace and the operator may not,
    // even for a listed gateway; the denial names the requester and the Team.
    h.validate(&create(MALLORY, gateway.clone())).await.denied(
        "not_team_member",
        "\"mallory@example.com\" is not a member of team \"acme\" (group \"openteam:team:acme\")",
    );
    for user in [OTHER_NAMESPACE_SA, OPERATOR] {
        h.validate(&create(user, gateway.clone()))
            .await
            .denied("not_team_member", "is not a member of team \"acme\"");
    }
    // The Team, an admin and a ServiceAccount of the namespace may.
    for user in [ALICE, ADMIN, BUILDER_SA] {
        let a = h.validate(&create(user, gateway.clone())).await;
        assert!(a.allowed(), "{}: {a:?}", user.0);
    }
    // A workload controller only for a pod it makes for an owner.
    let owned = owned_by(gateway.clone(), "apps/v1", "ReplicaSet", "gw-5d8f9c");
    let a = h
        .validate(&create(REPLICASET_CONTROLLER, owned.clone()))
        .await;
    assert!(a.allowed(), "{a:?}");
    h.validate(&create(REPLICASET_CONTROLLER, gateway.clone()))
        .await
        .denied("not_team_member", "replicaset-controller");
    h.validate(&create(MALLORY, owned.clone()))
        .await
        .denied("not_team_member", "mallory");

    // An update that leaves the spec and the gateway label alone needs no Team (the garbage
    // collector orphaning the pod); one that changes the image does.
    let mut orphaned = owned.clone();
    orphaned["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    let update = |user| as_user(Review::pod("UPDATE").in_namespace(NS), user);
    let a = h
        .validate(
            &update(GARBAGE_COLLECTOR)
                .old(owned.clone())
                .object(orphaned),
        )
        .await;
    assert!(a.allowed(), "{a:?}");
    let mut swapped = gateway.clone();
    swapped["spec"]["containers"][0]["image"] = "registry.example/evil:1".into();
    h.validate(&update(MALLORY).old(gateway.clone()).object(swapped))
        .await
        .denied("not_team_member", "mallory");
    // And so does an ephemeral container, even one that only mounts the volume.
    let mut debugged = gateway.clone();
    debugged["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": "busybox",
        "volumeMounts": [{"name": "token", "mountPath": "/t"}]}]);
    h.validate(&as_user(
        Review::ephemeral_containers(debugged).old(gateway.clone()),
        MALLORY,
    ))
    .await
    .denied("not_team_member", "mallory");

    let audit = h.audit.text();
    let denied = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["actor"] == "mallory@example.com" && r["action"] == "pod_create")
        .unwrap_or_else(|| panic!("no record of mallory's pod in {audit}"));
    assert_eq!(denied["category"], "authentication");
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["reason"], "not_team_member");
    assert_eq!(denied["team"], "acme");
    assert_eq!(denied["connection"], "acme-us");
    h.server.stop().await;
}

#[tokio::test]
async fn workload_rules_over_https() {
    let h = Harness::start().await;
    let gateway = pod("gw", NS, Some("gw-main"), runtime_volume());
    let create = |user, kind: &str, object: Value| {
        as_user(Review::workload("CREATE", kind).in_namespace(NS), user).object(object)
    };

    // Every kind: the Team may, another Team's member may not.
    for kind in [
        "Deployment",
        "ReplicaSet",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "CronJob",
    ] {
        let object = workload(kind, "gw", NS, &gateway);
        let a = h.validate(&create(ALICE, kind, object.clone())).await;
        assert!(a.allowed(), "{kind}: {a:?}");
        h.validate(&create(MALLORY, kind, object)).await.denied(
            "not_team_member",
            "\"mallory@example.com\" is not a member of team \"acme\"",
        );
    }

    // The template is judged by the pod rules, named by its path in the workload.
    let unlabelled = pod("gw", NS, None, runtime_volume());
    h.validate(&create(
        ALICE,
        "Deployment",
        workload("Deployment", "gw", NS, &unlabelled),
    ))
    .await
    .denied(
        "missing_gateway_label",
        "spec.template.metadata.labels[\"connectors.openteam.io/gateway\"]: missing",
    );
    let mut env = runtime_volume();
    env["containers"][0]["env"] = json!([{"name": "TOKEN", "valueFrom":
        {"secretKeyRef": {"name": "acme-us-sp-api", "key": "access_token"}}}]);
    h.validate(&create(ALICE, "CronJob", workload("CronJob", "sync", NS, &pod("gw", NS, Some("gw-main"), env))))
        .await
        .denied(
            "env_reference",
            "spec.jobTemplate.spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef: runtime Secret",
        );
    let mut sub_path = runtime_volume();
    sub_path["containers"][0]["volumeMounts"][0]["subPath"] = "access_token".into();
    h.validate(&create(
        ALICE,
        "StatefulSet",
        workload(
            "StatefulSet",
            "gw",
            NS,
            &pod("gw", NS, Some("gw-main"), sub_path),
        ),
    ))
    .await
    .denied(
        "sub_path_mount",
        "spec.template.spec.containers[0].volumeMounts[0].subPath",
    );
    h.validate(&create(
        ALICE,
        "DaemonSet",
        workload(
            "DaemonSet",
            "gw",
            NS,
            &pod("gw", NS, Some("gw-globex"), runtime_volume()),
        ),
    ))
    .await
    .denied(
        "gateway_not_listed",
        "spec.template.metadata.labels[\"connectors.openteam.io/gateway\"]: gateway \"gw-globex\"",
    );
    h.validate(&create(
        ALICE,
        "Job",
        workload(
            "Job",
            "leak",
            NS,
            &pod(
                "gw",
                NS,
                Some("gw-main"),
                json!({"volumes": [{"name": "c", "secret": {"secretName": "acme-us-lwa"}}]}),
            ),
        ),
    ))
    .await
    .denied(
        "sealed_secret_reference",
        "spec.template.spec.volumes[0].secret: Secret \"acme-us-lwa\" holds sealed LWA credentials",
    );

    // Controllers make workloads for their owners: a Deployment's ReplicaSet, a CronJob's Job.
    let replicaset = owned_by(
        workload("ReplicaSet", "gw-5d8f9c", NS, &gateway),
        "apps/v1",
        "Deployment",
        "gw",
    );
    let a = h
        .validate(&create(
            DEPLOYMENT_CONTROLLER,
            "ReplicaSet",
            replicaset.clone(),
        ))
        .await;
    assert!(a.allowed(), "{a:?}");
    let job = owned_by(
        workload("Job", "sync-29000000", NS, &gateway),
        "batch/v1",
        "CronJob",
        "sync",
    );
    let a = h.validate(&create(CRONJOB_CONTROLLER, "Job", job)).await;
    assert!(a.allowed(), "{a:?}");
    // Not without an owner.
    h.validate(&create(
        DEPLOYMENT_CONTROLLER,
        "ReplicaSet",
        workload("ReplicaSet", "gw-x", NS, &gateway),
    ))
    .await
    .denied("not_team_member", "deployment-controller");

    // Scaling leaves the template alone: anyone RBAC lets may; changing the template is a use.
    let deployment = workload("Deployment", "gw", NS, &gateway);
    let update = |user| {
        as_user(
            Review::workload("UPDATE", "Deployment").in_namespace(NS),
            user,
        )
    };
    let mut scaled = deployment.clone();
    scaled["spec"]["replicas"] = 5.into();
    scaled["metadata"]["labels"] = json!({"team.example/owner": "platform"});
    let a = h
        .validate(&update(MALLORY).old(deployment.clone()).object(scaled))
        .await;
    assert!(a.allowed(), "{a:?}");
    let mut swapped = deployment.clone();
    swapped["spec"]["template"]["spec"]["containers"][0]["image"] =
        "registry.example/evil:1".into();
    h.validate(&update(MALLORY).old(deployment.clone()).object(swapped))
        .await
        .denied("not_team_member", "mallory");

    // A workload whose template is not a pod template is malformed, never allowed.
    let mut broken = deployment.clone();
    broken["spec"]["template"]["spec"]["containers"] = "not a list".into();
    let response = h
        .post("/validate", create(ALICE, "Deployment", broken).body())
        .await;
    let answer: Value = json_body(response).await;
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 400);
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("the object has no valid pod template")
    );
    // An ordinary Deployment is unrelated to the operator, whoever makes it.
    let web = workload("Deployment", "web", NS, &pod("web", NS, None, json!({})));
    let a = h.validate(&create(MALLORY, "Deployment", web)).await;
    assert!(a.allowed());
    assert_eq!(a.reason(), "none");

    let metrics = h.metrics.encode().unwrap();
    for series in [
        "amazon_seller_admission_requests_total{decision=\"denied\",operation=\"CREATE\",reason=\"not_team_member\",resource=\"deployments\"} 1",
        "amazon_seller_admission_requests_total{decision=\"allowed\",operation=\"CREATE\",reason=\"none\",resource=\"cronjobs\"} 1",
        "amazon_seller_admission_requests_total{decision=\"invalid\",operation=\"CREATE\",reason=\"malformed_object\",resource=\"deployments\"} 1",
    ] {
        assert!(metrics.contains(series), "missing {series} in\n{metrics}");
    }
    let audit = h.audit.text();
    let records: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for action in [
        "deployment_create",
        "deployment_update",
        "replicaset_create",
        "statefulset_create",
        "daemonset_create",
        "job_create",
        "cronjob_create",
    ] {
        assert!(
            records.iter().any(|r| r["action"] == action),
            "no {action} record in {audit}"
        );
    }
    let denied = records
        .iter()
        .find(|r| {
            r["action"] == "deployment_create"
                && r["outcome"] == "denied"
                && r["reason"] == "not_team_member"
        })
        .unwrap_or_else(|| panic!("no denied deployment in {audit}"));
    assert_eq!(denied["category"], "authentication");
    assert_eq!(denied["actor"], "mallory@example.com");
    assert_eq!(denied["gateway"], "gw-main");
    let report = audit::verify(BufReader::new(audit.as_bytes()), VerifyOptions::default()).unwrap();
    assert!(report.is_intact(), "{report:?}");
    h.server.stop().await;
}

// --- namespaces and reviews ----------------------------------------------------------------

fn namespace(team: Option<&str>) -> Value {
    let mut ns =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {}}});
    if let Some(team) = team {
        ns["metadata"]["labels"]["connectors.openteam.io/team"] = team.into();
    }
    ns
}

#[tokio::test]
async fn namespace_and_review_rules_over_https() {
    let h = Harness::start().await;
    let set = |user| as_user(Review::namespace("CREATE"), user).object(namespace(Some("acme")));
    let remove = |user| {
        as_user(Review::namespace("UPDATE"), user)
            .old(namespace(Some("acme")))
            .object(namespace(None))
    };
    let change = |user| {
        as_user(Review::namespace("UPDATE"), user)
            .old(namespace(Some("acme")))
            .object(namespace(Some("globex")))
    };
    for review in [set(ALICE), remove(ALICE), change(ALICE), remove(BUILDER_SA)] {
        h.validate(&review).await.denied(
            "not_admin",
            "metadata.labels[\"connectors.openteam.io/team\"]",
        );
    }
    for review in [set(ADMIN), remove(ADMIN), change(ADMIN)] {
        assert!(h.validate(&review).await.allowed());
    }
    h.validate(&as_user(Review::namespace("CREATE"), ADMIN).object(namespace(Some("Not_A_Team"))))
        .await
        .denied("invalid_team_label", "invalid team id");

    let review = |user, reviewer: &str| {
        as_user(Review::security_log_review("CREATE"), user).object(json!({
            "apiVersion": "connectors.openteam.io/v1alpha1", "kind": "SecurityLogReview",
            "metadata": {"name": "r1"},
            "spec": {"reviewer": reviewer, "periodStart": "2026-05-01T00:00:00Z",
                     "periodEnd": "2026-05-14T00:00:00Z", "summary": "ok", "findingsCount": 0}
        }))
    };
    let a = h.validate(&review(REVIEWER, "rita@example.com")).await;
    assert!(a.allowed() && a.warnings().is_empty());
    assert_eq!(
        h.validate(&review(REVIEWER, "someone-else"))
            .await
            .warnings()
            .len(),
        1
    );
    h.validate(&review(ALICE, "alice@example.com"))
        .await
        .denied("not_reviewer", "only members of the reviewer groups");
    h.validate(&review(ADMIN, "root"))
        .await
        .denied("not_reviewer", "SecurityLogReviews");

    let audit = h.audit.text();
    assert!(audit.contains("\"category\":\"authentication\""), "{audit}");
    assert!(audit.contains("\"action\":\"namespace_update\""), "{audit}");
    h.server.stop().await;
}

// --- robustness ----------------------------------------------------------------------------

#[tokio::test]
async fn malformed_reviews_are_answered_invalid_never_a_panic() {
    let h = Harness::start().await;
    let valid = as_user(Review::pod("CREATE").in_namespace(NS), ALICE).object(pod(
        "gw",
        NS,
        Some("gw-main"),
        runtime_volume(),
    ));
    let body = valid.body();
    let mut v1beta1 = valid.0.clone();
    v1beta1["apiVersion"] = "admission.k8s.io/v1beta1".into();
    let mut no_request = valid.0.clone();
    no_request.as_object_mut().unwrap().remove("request");
    let mut bad_pod = valid.0.clone();
    bad_pod["request"]["object"]["spec"]["containers"] = "not a list".into();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "empty",
            Vec::new(),
            "malformed AdmissionReview: not a JSON AdmissionReview",
        ),
        (
            "not json",
            b"\x00\xffnot json".to_vec(),
            "not a JSON AdmissionReview",
        ),
        (
            "truncated",
            body[..body.len() / 2].to_vec(),
            "not a JSON AdmissionReview",
        ),
        (
            "v1beta1",
            serde_json::to_vec(&v1beta1).unwrap(),
            "only admission.k8s.io/v1",
        ),
        (
            "no request",
            serde_json::to_vec(&no_request).unwrap(),
            "the review has no request",
        ),
        (
            "bad pod",
            serde_json::to_vec(&bad_pod).unwrap(),
            "the object is not a valid Pod",
        ),
        (
            "a JSON array",
            b"[1,2,3]".to_vec(),
            "not a JSON AdmissionReview",
        ),
    ];
    for (what, body, message) in cases {
        let response = h.post("/validate", body).await;
        assert_eq!(response.status(), 200, "{what}");
        let answer: Value = json_body(response).await;
        let r = &answer["response"];
        assert_eq!(r["allowed"], false, "{what}");
        assert_eq!(r["status"]["code"], 400, "{what}");
        assert!(
            r["status"]["message"].as_str().unwrap().contains(message),
            "{what}: {r}"
        );
    }
    // The uid is echoed whenever it can be read, so the API server can match the answer.
    let answer: Value = json_body(
        h.post("/validate", serde_json::to_vec(&bad_pod).unwrap())
            .await,
    )
    .await;
    assert_eq!(answer["response"]["uid"], valid.uid());

    // HTTP-level limits and routes.
    let huge = vec![b' '; 4 * 1024 * 1024 + 1];
    assert_eq!(h.post("/validate", huge).await.status(), 413);
    let get = h
        .client
        .get(format!("{}/validate", h.server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(h.post("/elsewhere", b"{}".to_vec()).await.status(), 404);

    // The server still answers after all that.
    assert!(h.validate(&valid).await.allowed());
    let metrics = h.metrics.encode().unwrap();
    assert!(metrics.contains("decision=\"invalid\""), "{metrics}");
    h.server.stop().await;
}

#[tokio::test]
async fn a_webhook_whose_cluster_view_is_not_synced_fails_closed() {
    let h = Harness::start().await;
    h.cluster.not_ready.store(true, Ordering::SeqCst);
    let ordinary = as_user(Review::pod("CREATE").in_namespace(NS), ALICE).object(pod(
        "web",
        NS,
        None,
        json!({}),
    ));
    h.validate(&ordinary)
        .await
        .denied("not_ready", "has not synced its view of the cluster");
    let ready = h
        .client
        .get(format!("{}/readyz", h.server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    // Rules that need no cluster view still decide.
    assert!(
        h.validate(&as_user(Review::namespace("CREATE"), ADMIN).object(namespace(Some("acme"))))
            .await
            .allowed()
    );
    h.cluster.not_ready.store(false, Ordering::SeqCst);
    assert!(h.validate(&ordinary).await.allowed());
    h.server.stop().await;
}

#[tokio::test]
async fn readyz_waits_for_a_serving_certificate_and_healthz_answers() {
    use tower::ServiceExt as _;
    let cluster = Arc::new(FakeCluster::with_team(NS, "acme", "acme-us", &["gw-main"]));
    let keyring = Arc::new(RwLock::new(Keyring::generate(jiff::Timestamp::now())));
    let admission = admission(
        cluster,
        keyring,
        Metrics::new().unwrap(),
        Captured::default(),
    );
    let certs = CertStore::new();
    let router = listener::router(admission.clone(), certs.clone(), ServerSettings::default());
    let get = |path: &str| {
        axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let status = router
        .clone()
        .oneshot(get("/readyz"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 503, "not ready without a certificate");
    assert_eq!(
        router
            .clone()
            .oneshot(get("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );

    let pki = TestPki::new();
    certs
        .load_pem(
            &std::fs::read(&pki.cert_file).unwrap(),
            &std::fs::read(&pki.key_file).unwrap(),
        )
        .unwrap();
    assert_eq!(router.oneshot(get("/readyz")).await.unwrap().status(), 200);

    // And over HTTPS.
    let running = RunningWebhook::start(admission, certs).await;
    let client = https_client(&pki.ca_pem);
    for path in ["/healthz", "/readyz"] {
        let response = client
            .get(format!("{}{path}", running.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    running.stop().await;
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let cluster = Arc::new(FakeCluster::with_team(NS, "acme", "acme-us", &["gw-main"]));
    let keyring = Arc::new(RwLock::new(Keyring::generate(jiff::Timestamp::now())));
    let admission = admission(
        cluster,
        keyring,
        Metrics::new().unwrap(),
        Captured::default(),
    );
    let pki = TestPki::new();
    let certs = CertStore::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(tls::watch_files(
        certs.clone(),
        pki.cert_file.clone(),
        pki.key_file.clone(),
        Duration::from_millis(100),
        async move {
            let _ = stopped.await;
        },
    ));
    eventually(
        "the certificate files to be loaded",
        Duration::from_millis(2500),
    )
    .every(Duration::from_millis(50))
    .until(async || certs.is_loaded(), |loaded| *loaded)
    .await;
    let running = RunningWebhook::start(admission, certs.clone()).await;
    let healthz = |ca: String| {
        let url = format!("{}/healthz", running.url());
        async move { https_client(&ca).get(url).send().await.map(|r| r.status()) }
    };
    let old_ca = pki.ca_pem.clone();
    assert_eq!(healthz(old_ca.clone()).await.unwrap(), 200);

    let pki = pki.rotate();
    let served = eventually("the new certificate to be served", Duration::from_secs(5))
        .every(Duration::from_millis(50))
        .until(async || healthz(pki.ca_pem.clone()).await, Result::is_ok)
        .await;
    assert!(served.is_ok(), "the new certificate was not served");
    assert!(
        healthz(old_ca).await.is_err(),
        "a client trusting only the old CA must fail now"
    );

    // A key file that does not match the certificate keeps the current certificate.
    let (_, _, other_key) = support::webhook::issue(&["127.0.0.1"]);
    std::fs::write(&pki.key_file, other_key).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(healthz(pki.ca_pem.clone()).await.unwrap(), 200);

    let _ = stop.send(());
    watcher.await.unwrap();
    running.stop().await;
}

#[tokio::test]
async fn every_decision_is_metered_and_audited_in_an_intact_chain() {
    let h = Harness::start().await;
    let gateway = as_user(Review::pod("CREATE").in_namespace(NS), ALICE).object(pod(
        "gw",
        NS,
        Some("gw-main"),
        runtime_volume(),
    ));
    assert!(h.validate(&gateway).await.allowed());
    h.validate(
        &as_user(Review::connection("CREATE").in_namespace(NS), MALLORY)
            .object(connection(json!({}))),
    )
    .await
    .denied("not_team_member", "");
    assert!(
        h.validate(
            &as_user(Review::connection("CREATE").in_namespace(NS), ALICE)
                .object(connection(json!({})))
        )
        .await
        .allowed()
    );

    let metrics = h.metrics.encode().unwrap();
    for series in [
        "amazon_seller_admission_requests_total{decision=\"allowed\",operation=\"CREATE\",reason=\"none\",resource=\"pods\"} 1",
        "amazon_seller_admission_requests_total{decision=\"denied\",operation=\"CREATE\",reason=\"not_team_member\",resource=\"amazonsellerconnections\"} 1",
        "amazon_seller_admission_requests_total{decision=\"allowed\",operation=\"CREATE\",reason=\"none\",resource=\"amazonsellerconnections\"} 1",
    ] {
        assert!(metrics.contains(series), "missing {series} in\n{metrics}");
    }
    let audit = h.audit.text();
    let records: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |category: &str, action: &str| {
        records
            .iter()
            .find(|r| r["category"] == category && r["action"] == action)
            .unwrap_or_else(|| panic!("no {category}/{action} record in {audit}"))
    };
    let pod_record = find("gateway_activity", "pod_create");
    assert_eq!(pod_record["outcome"], "allowed");
    assert_eq!(pod_record["actor"], "alice@example.com");
    assert_eq!(pod_record["team"], "acme");
    assert_eq!(pod_record["connection"], "acme-us");
    assert_eq!(pod_record["gateway"], "gw-main");
    let denied = find("authentication", "connection_create");
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["reason"], "not_team_member");
    assert_eq!(denied["actor"], "mallory@example.com");
    let setup = find("connector_setup", "connection_create");
    assert_eq!(setup["outcome"], "allowed");
    let report = audit::verify(BufReader::new(audit.as_bytes()), VerifyOptions::default()).unwrap();
    assert!(report.is_intact(), "{report:?}");
    h.server.stop().await;
}

// --- property: the handler never panics ----------------------------------------------------

fn fixtures() -> Vec<Vec<u8>> {
    vec![
        as_user(Review::pod("CREATE").in_namespace(NS), ALICE)
            .object(pod("gw", NS, Some("gw-main"), runtime_volume()))
            .body(),
        as_user(Review::secret("CREATE").in_namespace(NS), ALICE)
            .object(intake("acme-us-lwa", true))
            .body(),
        as_user(Review::connection("UPDATE").in_namespace(NS), ALICE)
            .old(connection(json!({})))
            .object(connection(json!({"marketplace": "DE"})))
            .body(),
        as_user(Review::namespace("UPDATE"), ADMIN)
            .old(namespace(Some("acme")))
            .object(namespace(None))
            .body(),
        as_user(
            Review::workload("CREATE", "Deployment").in_namespace(NS),
            MALLORY,
        )
        .object(workload(
            "Deployment",
            "gw",
            NS,
            &pod("gw", NS, Some("gw-main"), runtime_volume()),
        ))
        .body(),
        as_user(Review::secret("UPDATE").in_namespace(NS), ALICE)
            .old(sealed_secret("acme-us-lwa", b"{}"))
            .object(applied_intake())
            .body(),
        as_user(
            Review::workload("UPDATE", "CronJob").in_namespace(NS),
            ALICE,
        )
        .old(workload(
            "CronJob",
            "sync",
            NS,
            &pod("gw", NS, None, json!({})),
        ))
        .object(workload(
            "CronJob",
            "sync",
            NS,
            &pod("gw", NS, Some("gw-main"), runtime_volume()),
        ))
        .body(),
    ]
}

fn handler() -> (
    tokio::runtime::Runtime,
    Arc<amazon_seller_operator::https::Reviewer>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cluster = Arc::new(FakeCluster::with_team(NS, "acme", "acme-us", &["gw-main"]));
    let keyring = Arc::new(RwLock::new(Keyring::generate(jiff::Timestamp::now())));
    let admission = admission(
        cluster,
        keyring,
        Metrics::new().unwrap(),
        Captured::default(),
    );
    (runtime, admission)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_are_answered_invalid(body in proptest::collection::vec(any::<u8>(), 0..2048), mutate in any::<bool>()) {
        let (runtime, admission) = handler();
        let endpoint = if mutate { Webhook::Mutate } else { Webhook::Validate };
        let answer = runtime.block_on(admission.review_json(endpoint, &body));
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        prop_assert_eq!(&answer["response"]["allowed"], &Value::Bool(false));
    }

    #[test]
    fn truncated_reviews_are_answered_invalid(which in 0usize..7, cut in 0.0f64..1.0, mutate in any::<bool>()) {
        let (runtime, admission) = handler();
        let body = &fixtures()[which];
        let end = ((body.len() as f64) * cut) as usize;
        let endpoint = if mutate { Webhook::Mutate } else { Webhook::Validate };
        let answer = runtime.block_on(admission.review_json(endpoint, &body[..end]));
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        prop_assert_eq!(&answer["response"]["allowed"], &Value::Bool(false));
        let text = String::from_utf8_lossy(&answer.to_string().into_bytes()).into_owned();
        for plaintext in PLAINTEXTS {
            prop_assert!(!text.contains(plaintext));
        }
    }

    #[test]
    fn a_denied_pod_or_template_stays_denied_for_the_same_reason_in_any_order(
        case in 0usize..4,
        extra in 0usize..4,
        seeds in proptest::collection::vec(any::<usize>(), 2),
        kind in prop_oneof![Just("Pod"), Just("Deployment"), Just("StatefulSet"), Just("CronJob")],
    ) {
        // Decided reviews on a thread without a subscriber of its own, while another test's
        // capturing subscriber is the only one registered, would make tracing cache "never"
        // for the decision's log line in every thread (it asks only the registering thread's
        // subscriber then): a subscriber here keeps that test's capture working.
        let _quiet = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(std::io::sink)
                .finish(),
        );
        let (runtime, admission) = handler();
        let (pod, user, reason) = denied_pod(case, extra);
        let pod = reordered(pod, &seeds);
        let review = if kind == "Pod" {
            as_user(Review::pod("CREATE").in_namespace(NS), user).object(pod)
        } else {
            as_user(Review::workload("CREATE", kind).in_namespace(NS), user)
                .object(workload(kind, "gw", NS, &pod))
        };
        let answer = runtime.block_on(admission.review_json(Webhook::Validate, &review.body()));
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        prop_assert_eq!(&answer["response"]["allowed"], &Value::Bool(false), "{}", answer);
        prop_assert_eq!(&answer["response"]["auditAnnotations"]["reason"], reason);
    }

    #[test]
    fn arbitrary_objects_never_panic(which in 0usize..7, value in arb_json(), mutate in any::<bool>()) {
        let (runtime, admission) = handler();
        let mut review: Value = serde_json::from_slice(&fixtures()[which]).unwrap();
        review["request"]["object"] = value;
        let endpoint = if mutate { Webhook::Mutate } else { Webhook::Validate };
        let answer = runtime.block_on(admission.review_json(endpoint, &serde_json::to_vec(&review).unwrap()));
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        prop_assert!(answer["response"]["allowed"].is_boolean());
    }
}

/// A pod that breaks exactly one rule, with the reason it is denied for: another Team's
/// member with a listed gateway, no gateway label, the token through `env` or through a
/// `subPath` mount. Around the offending parts: `extra` unrelated volumes and containers.
fn denied_pod(
    case: usize,
    extra: usize,
) -> (Value, (&'static str, &'static [&'static str]), &'static str) {
    let mut volumes = vec![json!({"name": "token", "secret": {"secretName": "acme-us-sp-api"}})];
    let mut containers = vec![json!({"name": "main", "image": "gw:1",
        "volumeMounts": [{"name": "token", "mountPath": "/var/run/sp-api"}]})];
    for i in 0..extra {
        volumes
            .push(json!({"name": format!("v{i}"), "secret": {"secretName": format!("app-{i}")}}));
        containers.push(json!({"name": format!("side{i}"), "image": "side:1",
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": format!("app-{i}"), "key": "k"}}}],
            "volumeMounts": [{"name": format!("v{i}"), "mountPath": "/v", "subPath": "k"}]}));
    }
    let (gateway, user, reason) = match case {
        0 => (Some("gw-main"), MALLORY, "not_team_member"),
        1 => (None, ALICE, "missing_gateway_label"),
        2 => {
            containers[0]["env"] = json!([{"name": "T", "valueFrom":
                {"secretKeyRef": {"name": "acme-us-sp-api", "key": "access_token"}}}]);
            (Some("gw-main"), ALICE, "env_reference")
        }
        _ => {
            containers[0]["volumeMounts"][0]["subPath"] = "access_token".into();
            (Some("gw-main"), ALICE, "sub_path_mount")
        }
    };
    let spec = json!({"volumes": volumes, "containers": containers});
    (pod("gw", NS, gateway, spec), user, reason)
}

/// `pod` with its volumes and containers rotated by a seed each and, for odd seeds,
/// reversed; its labels untouched.
fn reordered(mut pod: Value, seeds: &[usize]) -> Value {
    for (list, seed) in [("volumes", seeds[0]), ("containers", seeds[1])] {
        let items = pod["spec"][list].as_array_mut().unwrap();
        let n = items.len();
        items.rotate_left(seed % n);
        if seed % 2 == 1 {
            items.reverse();
        }
    }
    pod
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9|./:-]{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_owned()),
                    Just("spec".to_owned()),
                    Just("data".to_owned()),
                    Just("labels".to_owned()),
                    Just("volumes".to_owned()),
                    Just("containers".to_owned()),
                    "[a-zA-Z]{1,10}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
