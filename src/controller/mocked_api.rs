//! Mocked-API tier (design §9, tier 3): whole reconciles through the controller's entry point
//! (finalizer included) against a mocked API server, asserting the exact request sequence —
//! method, path with query, and the parts of each body that matter — and that nothing else is
//! requested. LWA is the in-process [`ScriptedLwa`] behind the real refresh engine, on a
//! [`ManualClock`].
//!
//! The real-API-server tier (`tests/operator.rs`) shows the operator works against
//! kube-apiserver; this tier pins down which calls it makes, which a real server cannot show
//! (a write that changes nothing is invisible there).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;

use super::fixtures::{
    self, ApiServerVerifier, Connection, LwaAnswer, ScriptedLwa, TOKEN_PREFIX, mock_api,
    sealed_credentials, start,
};
use super::{Context, Error};
use crate::api::{AmazonSellerConnection, AmazonSellerConnectionStatus};
use crate::crypto::Keyring;
use crate::domain::Delivery;
use crate::lwa::{ManualClock, OAuthErrorCode, clock};
use crate::secrets::{runtime_secret, token_store};

/// The runtime Secret's name.
fn runtime() -> String {
    runtime_secret::name(fixtures::NAME)
}

/// The token store's name.
fn store() -> String {
    token_store::name(fixtures::NAME)
}

/// One reconcile of `connection` while `script` plays the API server; then the server closes
/// and no request may come after the script's last.
async fn reconcile(
    ctx: &Arc<Context<ScriptedLwa>>,
    connection: &AmazonSellerConnection,
    script: impl AsyncFnOnce(&mut ApiServerVerifier),
    api: &mut ApiServerVerifier,
) -> Result<Action, Error> {
    let run = super::reconcile(Arc::new(connection.clone()), ctx.clone());
    let play = async {
        script(api).await;
        api.finish();
    };
    let (result, ()) = tokio::join!(run, play);
    assert_eq!(
        api.late(),
        Vec::<String>::new(),
        "requests after the last expected one"
    );
    result
}

/// What a first reconcile of [`Connection::test()`] leaves behind: the stored connection (with
/// the status written), the runtime Secret, and the keyring the credentials are sealed to.
struct Connected {
    status: AmazonSellerConnectionStatus,
    connection: AmazonSellerConnection,
    runtime: Secret,
    keyring: Keyring,
}

fn access_token(secret: &Secret) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get("access_token"))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

fn reasons(status: &AmazonSellerConnectionStatus) -> Vec<(String, String, String)> {
    status
        .conditions
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect()
}

fn condition(type_: &str, status: &str, reason: &str) -> (String, String, String) {
    (type_.into(), status.into(), reason.into())
}

async fn connect() -> Connected {
    let keyring = Keyring::generate(start());
    let credentials = sealed_credentials(&keyring);
    let clock = Arc::new(ManualClock::new(start()));
    let (client, mut api) = mock_api();
    let (ctx, audit) = fixtures::context(client, ScriptedLwa::default(), clock, keyring.clone());
    let connection = Connection::test().build();
    let mut written = None;
    let mut applied = None;
    let action = reconcile(
        &ctx,
        &connection,
        async |api| {
            api.get_secret(&runtime(), None).await;
            // No status yet, so a leftover token store of another delivery mode is looked for.
            api.get_secret(&store(), None).await;
            api.get_secret(fixtures::CREDENTIALS, Some(&credentials))
                .await;
            applied = Some(api.apply_secret(&runtime()).await);
            written = Some(api.apply_status(&connection).await);
            let event = api.create_event().await;
            assert_eq!(
                event,
                (
                    "Normal".into(),
                    "Connected".into(),
                    "access token published in Secret acme-us-sp-api for gateways gw-main".into()
                )
            );
        },
        &mut api,
    )
    .await
    .unwrap_or_else(|err| panic!("connect: {err}"));
    assert_eq!(
        api.transcript(),
        [
            "GET /api/v1/namespaces/team-acme/secrets/acme-us-sp-api",
            "GET /api/v1/namespaces/team-acme/secrets/acme-us-sp-api-sealed",
            "GET /api/v1/namespaces/team-acme/secrets/acme-us-lwa",
            "PATCH /api/v1/namespaces/team-acme/secrets/acme-us-sp-api?&force=true&fieldManager=amazon-seller-operator",
            "PATCH /apis/connectors.openteam.io/v1alpha1/namespaces/team-acme/amazonsellerconnections/acme-us/status?&force=true&fieldManager=amazon-seller-operator",
            "POST /apis/events.k8s.io/v1/namespaces/team-acme/events?",
        ]
    );
    assert_eq!(lwa_calls(&ctx), 1);
    assert_eq!(
        audit.records(),
        [
            "token_refresh/success/refreshed",
            "connect/success/token_published"
        ]
    );
    let runtime = applied.unwrap_or_default();
    let status = written.unwrap_or_default();
    assert_eq!(access_token(&runtime), format!("{TOKEN_PREFIX}1"));
    assert_eq!(
        runtime.type_.as_deref(),
        Some(crate::names::RUNTIME_SECRET_TYPE)
    );
    let keys: Vec<&str> = runtime
        .data
        .iter()
        .flat_map(|d| d.keys().map(String::as_str))
        .collect();
    assert_eq!(
        keys,
        [
            "access_token",
            "endpoint",
            "expires_at",
            "marketplace_id",
            "region",
            "seller_id",
            "token_type"
        ]
    );
    assert_eq!(
        runtime
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::names::SECRET_ROLE_LABEL))
            .map(String::as_str),
        Some(crate::names::ROLE_RUNTIME_TOKEN)
    );
    let owners = runtime
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default();
    assert_eq!(
        owners
            .iter()
            .map(|o| (o.uid.as_str(), o.controller))
            .collect::<Vec<_>>(),
        [(fixtures::UID, Some(true))]
    );
    assert_eq!(
        reasons(&status),
        [
            condition("Ready", "True", "TokenPublished"),
            condition("CredentialsValid", "True", "Accepted"),
            condition("Suspended", "False", "Active"),
        ]
    );
    let expires = clock::add(start(), Duration::from_secs(3600));
    assert_eq!(status.token_expires_at.as_ref().map(|t| t.0), Some(expires));
    assert_eq!(
        status.runtime_secret_name.as_deref(),
        Some("acme-us-sp-api")
    );
    assert_eq!(status.failed_refresh_attempts, Some(0));
    assert_eq!(status.observed_generation, Some(1));
    assert!(
        !serde_json::to_string(&status)
            .unwrap_or_default()
            .contains(TOKEN_PREFIX),
        "the status holds no token"
    );
    assert!(!audit.text().contains(TOKEN_PREFIX));
    // A refresh is due 20 minutes (plus jitter) before expiry: come back then.
    let next = status.next_refresh_at.as_ref().map_or(start(), |t| t.0);
    assert!(next <= clock::sub(expires, Duration::from_secs(20 * 60)));
    // The status keeps whole seconds; the requeue is the instant itself.
    let due = clock::since(next, start());
    assert!(
        (0..1000).any(|ms| action == Action::requeue(due + Duration::from_millis(ms))),
        "back at the instant it is due ({due:?} plus the second's fraction), not {action:?}"
    );
    Connected {
        connection: Connection::test().with_status(status.clone()).build(),
        status,
        runtime,
        keyring,
    }
}

/// LWA calls the reconciles of `ctx` made.
fn lwa_calls(ctx: &Context<ScriptedLwa>) -> u32 {
    ctx.engine.source().calls()
}

/// A first reconcile reads the runtime Secret, the token store and the credentials, calls LWA
/// once, and writes the runtime Secret, then the status, then the Connected Event.
#[tokio::test]
async fn connect_reads_three_secrets_then_writes_the_runtime_secret_the_status_and_an_event() {
    connect().await;
}

/// A restart with a valid token: the runtime Secret and the credentials are read, nothing is
/// written, LWA is not called, and the reconcile comes back when the token is due.
#[tokio::test]
async fn a_restart_with_a_valid_token_reads_and_writes_nothing_else() {
    let connected = connect().await;
    let credentials = sealed_credentials(&connected.keyring);
    let clock = Arc::new(ManualClock::new(clock::add(
        start(),
        Duration::from_secs(60),
    )));
    let (client, mut api) = mock_api();
    let (ctx, audit) = fixtures::context(
        client,
        ScriptedLwa::default(),
        clock,
        connected.keyring.clone(),
    );
    let action = reconcile(
        &ctx,
        &connected.connection,
        async |api| {
            api.get_secret(&runtime(), Some(&connected.runtime)).await;
            api.get_secret(fixtures::CREDENTIALS, Some(&credentials))
                .await;
        },
        &mut api,
    )
    .await
    .unwrap_or_else(|err| panic!("reconcile: {err}"));
    assert_eq!(
        api.transcript(),
        [
            "GET /api/v1/namespaces/team-acme/secrets/acme-us-sp-api",
            "GET /api/v1/namespaces/team-acme/secrets/acme-us-lwa",
        ]
    );
    assert_eq!(lwa_calls(&ctx), 0);
    assert_eq!(audit.records(), Vec::<String>::new());
    let next = connected
        .connection
        .status
        .as_ref()
        .and_then(|s| s.next_refresh_at.as_ref())
        .map_or(start(), |t| t.0);
    let due = clock::since(next, clock::add(start(), Duration::from_secs(60)));
    assert!(
        (0..1000).any(|ms| action == Action::requeue(due + Duration::from_millis(ms))),
        "back at the instant it is due ({due:?} plus the second's fraction), not {action:?}"
    );
}

/// A due token: LWA is called once, the runtime Secret gets the new token and the status the
/// new expiry; Ready stays True, so there is no Event.
#[tokio::test]
async fn a_due_token_is_refreshed_and_written_without_an_event() {
    let connected = connect().await;
    let credentials = sealed_credentials(&connected.keyring);
    let due_at = clock::add(start(), Duration::from_secs(45 * 60));
    let clock = Arc::new(ManualClock::new(due_at));
    let (client, mut api) = mock_api();
    let (ctx, audit) = fixtures::context(
        client,
        ScriptedLwa::default(),
        clock,
        connected.keyring.clone(),
    );
    let mut written = None;
    let mut status = None;
    reconcile(
        &ctx,
        &connected.connection,
        async |api| {
            api.get_secret(&runtime(), Some(&connected.runtime)).await;
            api.get_secret(fixtures::CREDENTIALS, Some(&credentials))
                .await;
            written = Some(api.apply_secret(&runtime()).await);
            status = Some(api.apply_status(&connected.connection).await);
        },
        &mut api,
    )
    .await
    .unwrap_or_else(|err| panic!("reconcile: {err}"));
    assert_eq!(
        api.transcript(),
        [
            "GET /api/v1/namespaces/team-acme/secrets/acme-us-sp-api",
            "GET /api/v1/namespaces/team-acme/secrets/acme-us-lwa",
            "PATCH /api/v1/namespaces/team-acme/secrets/acme-us-sp-api?&force=true&fieldManager=amazon-seller-operator",
            "PATCH /apis/connectors.openteam.io/v1alpha1/namespaces/team-acme/amazonsellerconnections/acme-us/status?&force=true&fieldManager=amazon-seller-operator",
        ]
    );
    assert_eq!(lwa_calls(&ctx), 1);
    assert_eq!(audit.records(), ["token_refresh/success/refreshed"]);
    assert_eq!(
        access_token(&written.unwrap_or_default()),
        format!("{TOKEN_PREFIX}1")
    );
    let status = status.unwrap_or_default();
    assert_eq!(
        status.token_expires_at.map(|t| t.0),
        Some(clock::add(due_at, Duration::from_secs(3600)))
    );
    assert_eq!(status.last_refresh_at.map(|t| t.0), Some(due_at));
}

/// LWA answers `invalid_grant` on the first connect: the status says RefreshTokenRevoked and
/// a Warning Event follows the status write; nothing is published and nothing retried.
#[tokio::test]
async fn a_revoked_refresh_token_writes_the_status_then_a_warning() {
    let keyring = Keyring::generate(start());
    let credentials = sealed_credentials(&keyring);
    let clock = Arc::new(ManualClock::new(start()));
    let (client, mut api) = mock_api();
    let (ctx, audit) = fixtures::context(
        client,
        ScriptedLwa::answering(&[LwaAnswer::Reject(OAuthErrorCode::InvalidGrant)]),
        clock,
        keyring,
    );
    let connection = Connection::test().build();
    let mut status = None;
    let action = reconcile(
        &ctx,
        &connection,
        async |api| {
            api.get_secret(&runtime(), None).await;
            api.get_secret(&store(), None).await;
            api.get_secret(fixtures::CREDENTIALS, Some(&credentials)).await;
            status = Some(api.apply_status(&connection).await);
            let event = api.create_event().await;
            assert_eq!(
                event,
                (
                    "Warning".into(),
                    "CredentialsRevoked".into(),
                    "LWA rejected the credentials (invalid_grant): the seller must re-authorize the application and the credentials be sealed again".into()
                )
            );
        },
        &mut api,
    )
    .await
    .unwrap_or_else(|err| panic!("reconcile: {err}"));
    assert_eq!(
        api.transcript(),
        [
            "GET /api/v1/namespaces/team-acme/secrets/acme-us-sp-api",
            "GET /api/v1/namespaces/team-acme/secrets/acme-us-sp-api-sealed",
            "GET /api/v1/namespaces/team-acme/secrets/acme-us-lwa",
            "PATCH /apis/connectors.openteam.io/v1alpha1/namespaces/team-acme/amazonsellerconnections/acme-us/status?&force=true&fieldManager=amazon-seller-operator",
            "POST /apis/events.k8s.io/v1/namespaces/team-acme/events?",
        ]
    );
    assert_eq!(action, Action::await_change());
    assert_eq!(audit.records(), ["token_refresh/failure/invalid_grant"]);
    assert_eq!(
        reasons(&status.unwrap_or_default()),
        [
            condition("Ready", "False", "RefreshTokenRevoked"),
            condition("CredentialsValid", "False", "RefreshTokenRevoked"),
            condition("Suspended", "False", "Active"),
        ]
    );
}

/// A change of `spec.delivery` from Secret to Endpoint keeps the token (no LWA call), removes
/// the runtime Secret, seals the token into the token store and writes the status.
#[tokio::test]
async fn a_delivery_change_to_endpoint_moves_the_token_into_the_token_store() {
    let connected = connect().await;
    let credentials = sealed_credentials(&connected.keyring);
    let clock = Arc::new(ManualClock::new(clock::add(
        start(),
        Duration::from_secs(60),
    )));
    let (client, mut api) = mock_api();
    let (ctx, audit) = fixtures::context(
        client,
        ScriptedLwa::default(),
        clock,
        connected.keyring.clone(),
    );
    let connection = Connection::test()
        .with_status(connected.status.clone())
        .with_delivery(Delivery::Endpoint)
        .build();
    let mut sealed = None;
    let mut status = None;
    reconcile(
        &ctx,
        &connection,
        async |api| {
            api.get_secret(&runtime(), Some(&connected.runtime)).await;
            api.get_secret(&store(), None).await;
            api.get_secret(fixtures::CREDENTIALS, Some(&credentials))
                .await;
            api.delete_secret(&runtime(), true).await;
            sealed = Some(api.apply_secret(&store()).await);
            status = Some(api.apply_status(&connection).await);
        },
        &mut api,
    )
    .await
    .unwrap_or_else(|err| panic!("reconcile: {err}"));
    assert_eq!(
        api.transcript(),
        [
            "GET /api/v1/namespaces/team-acme/secrets/acme-us-sp-api",
            "GET /api/v1/namespaces/team-acme/secrets/acme-us-sp-api-sealed",
            "GET /api/v1/namespaces/team-acme/secrets/acme-us-lwa",
            "DELETE /api/v1/namespaces/team-acme/secrets/acme-us-sp-api?",
            "PATCH /api/v1/namespaces/team-acme/secrets/acme-us-sp-api-sealed?&force=true&fieldManager=amazon-seller-operator",
            "PATCH /apis/connectors.openteam.io/v1alpha1/namespaces/team-acme/amazonsellerconnections/acme-us/status?&force=true&fieldManager=amazon-seller-operator",
        ]
    );
    assert_eq!(lwa_calls(&ctx), 0);
    assert_eq!(audit.records(), Vec::<String>::new());
    let sealed = sealed.unwrap_or_default();
    assert_eq!(
        sealed.type_.as_deref(),
        Some(crate::names::TOKEN_STORE_SECRET_TYPE)
    );
    let text = serde_json::to_string(&sealed).unwrap_or_default();
    assert!(
        !text.contains(TOKEN_PREFIX),
        "the token store holds ciphertext only"
    );
    let status = status.unwrap_or_default();
    assert_eq!(status.runtime_secret_name, None);
    assert_eq!(status.observed_generation, Some(2));
}

/// Deleting a connection removes the runtime Secret and the token store, reports the
/// disconnect, then removes the finalizer; LWA is not involved.
#[tokio::test]
async fn disconnect_deletes_both_secrets_then_removes_the_finalizer() {
    let keyring = Keyring::generate(start());
    let clock = Arc::new(ManualClock::new(start()));
    let (client, mut api) = mock_api();
    let (ctx, audit) = fixtures::context(client, ScriptedLwa::default(), clock, keyring);
    let connection = Connection::test().deleted().build();
    let mut patch = None;
    let action = reconcile(
        &ctx,
        &connection,
        async |api| {
            api.delete_secret(&runtime(), true).await;
            api.delete_secret(&store(), false).await;
            let event = api.create_event().await;
            assert_eq!(
                event,
                (
                    "Normal".into(),
                    "Disconnected".into(),
                    "connection deleted: runtime Secret removed".into()
                )
            );
            patch = Some(api.remove_finalizer(&connection).await);
        },
        &mut api,
    )
    .await
    .unwrap_or_else(|err| panic!("disconnect: {err}"));
    assert_eq!(
        api.transcript(),
        [
            "DELETE /api/v1/namespaces/team-acme/secrets/acme-us-sp-api?",
            "DELETE /api/v1/namespaces/team-acme/secrets/acme-us-sp-api-sealed?",
            "POST /apis/events.k8s.io/v1/namespaces/team-acme/events?",
            "PATCH /apis/connectors.openteam.io/v1alpha1/namespaces/team-acme/amazonsellerconnections/acme-us?",
        ]
    );
    assert_eq!(
        patch.unwrap_or_default(),
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": super::FINALIZER},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ])
    );
    assert_eq!(action, Action::await_change());
    assert_eq!(lwa_calls(&ctx), 0);
    assert_eq!(audit.records(), ["disconnect/success/connection_deleted"]);
}

/// A controller stopped while its first list of connections is still out (here: never
/// answered) stops at once. kube-runtime holds its runner until the cache is listed, and the
/// shutdown stops the watch that would list it, so without the operator's own bound it waited
/// forever: a SIGTERM just after start never ended the process.
#[tokio::test]
async fn a_controller_stopped_before_its_first_list_stops_at_once() {
    let (client, mut api) = mock_api();
    let clock = Arc::new(ManualClock::new(start()));
    let (ctx, _) = fixtures::context(
        client,
        ScriptedLwa::answering(&[]),
        clock,
        Keyring::generate(start()),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(super::run(ctx, Some(fixtures::NAMESPACE), async move {
        let _ = stopped.await;
    }));
    let (lines, _pending) = api.hold(Duration::from_millis(500)).await;
    assert!(
        lines.iter().any(|l| l.contains("amazonsellerconnections")),
        "the controller lists connections first: {lines:?}"
    );
    let _ = stop.send(());
    let stopped_in = tokio::time::timeout(Duration::from_secs(5), run).await;
    assert!(
        matches!(stopped_in, Ok(Ok(()))),
        "the controller did not stop within 5 s of the shutdown"
    );
}

/// A pod of the test namespace labelled as gateway `gw-old` that mounts the runtime Secret, as
/// the pod watch delivers it into the context's view (the namespace is Team acme's).
fn old_gateway_pod(ctx: &Context<ScriptedLwa>) {
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "old-gateway", "namespace": fixtures::NAMESPACE, "uid": "uid-old",
                     "labels": {crate::names::GATEWAY_LABEL: "gw-old"}},
        "spec": {"containers": [{"name": "c", "image": "i"}],
                 "volumes": [{"name": "token", "secret": {"secretName": runtime()}}]}
    }))
    .unwrap_or_else(|err| panic!("pod: {err}"));
    ctx.drift.set_team("", fixtures::NAMESPACE, Some("acme"));
    ctx.drift
        .observe_pod("", &kube::runtime::watcher::Event::Apply(pod));
}

/// `spec.onUnauthorizedMount: Evict` with a gateway no longer listed: after the status names
/// the pod (and its Event), the pod is evicted through the Eviction API on condition of its
/// uid, and the eviction is audited and announced. The runtime Secret stays for the listed
/// gateways.
#[tokio::test]
async fn evict_evicts_a_pod_outside_the_rules_by_uid_after_reporting_it() {
    let connected = connect().await;
    let credentials = sealed_credentials(&connected.keyring);
    let clock = Arc::new(ManualClock::new(clock::add(
        start(),
        Duration::from_secs(60),
    )));
    let (client, mut api) = mock_api();
    let (ctx, audit) = fixtures::context(
        client,
        ScriptedLwa::default(),
        clock,
        connected.keyring.clone(),
    );
    old_gateway_pod(&ctx);
    let connection = Connection::test()
        .with_status(connected.status.clone())
        .with_gateways(&["gw-main"])
        .evicting()
        .build();
    let mut eviction = None;
    let mut events = Vec::new();
    let mut status = None;
    let action = reconcile(
        &ctx,
        &connection,
        async |api| {
            api.get_secret(&runtime(), Some(&connected.runtime)).await;
            // A new generation: a leftover token store is looked for once more.
            api.get_secret(&store(), None).await;
            api.get_secret(fixtures::CREDENTIALS, Some(&credentials))
                .await;
            status = Some(api.apply_status(&connection).await);
            events.push(api.create_event().await);
            let received = api
                .expect(
                    http::Method::POST,
                    "/api/v1/namespaces/team-acme/pods/old-gateway/eviction?",
                )
                .await;
            eviction = Some(received.body.clone());
            received.answer(201, &serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}));
            events.push(api.create_event().await);
        },
        &mut api,
    )
    .await
    .unwrap_or_else(|err| panic!("reconcile: {err}"));
    assert_eq!(
        eviction.unwrap_or_default(),
        serde_json::json!({
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "old-gateway", "namespace": "team-acme"},
            "deleteOptions": {"preconditions": {"uid": "uid-old"}},
        })
    );
    let status = status.unwrap_or_default();
    assert!(reasons(&status).contains(&condition(
        "UnauthorizedMounts",
        "True",
        "PodsOutsideRules"
    )));
    assert_eq!(
        events
            .iter()
            .map(|e| (e.0.as_str(), e.1.as_str()))
            .collect::<Vec<_>>(),
        [("Warning", "UnauthorizedMount"), ("Normal", "PodEvicted")]
    );
    assert_eq!(
        audit.records(),
        [
            "unauthorized_mount/failure/gateway_not_listed",
            "evict_pod/success/gateway_not_listed"
        ]
    );
    assert!(
        audit.text().contains("\"pod\":\"old-gateway\""),
        "{}",
        audit.text()
    );
    assert!(
        audit.text().contains("\"gateway\":\"gw-old\""),
        "{}",
        audit.text()
    );
    assert_ne!(action, Action::requeue(Duration::from_secs(30)));
    assert_eq!(lwa_calls(&ctx), 0);
}

/// An eviction a PodDisruptionBudget refuses (429) is reported and tried again in 30 s.
#[tokio::test]
async fn a_refused_eviction_is_reported_and_tried_again() {
    let connected = connect().await;
    let credentials = sealed_credentials(&connected.keyring);
    let clock = Arc::new(ManualClock::new(clock::add(
        start(),
        Duration::from_secs(60),
    )));
    let (client, mut api) = mock_api();
    let (ctx, audit) = fixtures::context(
        client,
        ScriptedLwa::default(),
        clock,
        connected.keyring.clone(),
    );
    old_gateway_pod(&ctx);
    let connection = Connection::test()
        .with_status(connected.status.clone())
        .with_gateways(&["gw-main"])
        .evicting()
        .build();
    let mut failed = None;
    let action = reconcile(
        &ctx,
        &connection,
        async |api| {
            api.get_secret(&runtime(), Some(&connected.runtime)).await;
            api.get_secret(&store(), None).await;
            api.get_secret(fixtures::CREDENTIALS, Some(&credentials))
                .await;
            api.apply_status(&connection).await;
            api.create_event().await;
            api.expect(
                http::Method::POST,
                "/api/v1/namespaces/team-acme/pods/old-gateway/eviction?",
            )
            .await
            .answer(
                429,
                &serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "TooManyRequests", "code": 429,
                    "message": "Cannot evict pod as it would violate the pod's disruption budget."}),
            );
            failed = Some(api.create_event().await);
        },
        &mut api,
    )
    .await
    .unwrap_or_else(|err| panic!("reconcile: {err}"));
    let failed = failed.unwrap_or_default();
    assert_eq!(
        (failed.0.as_str(), failed.1.as_str()),
        ("Warning", "EvictionFailed")
    );
    assert!(failed.2.contains("PodDisruptionBudget"), "{}", failed.2);
    assert_eq!(
        audit.records(),
        [
            "unauthorized_mount/failure/gateway_not_listed",
            "evict_pod/failure/gateway_not_listed"
        ]
    );
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
}

/// When LWA answers again after an outage, the connections the engine wakes reach the
/// controller of their namespace as reconcile requests, and only that one's.
#[tokio::test]
async fn connections_woken_after_an_outage_are_reconciled_by_their_namespaces_controller() {
    use futures::StreamExt;

    use crate::lwa::{ClientCredentials, Clock, ConnectionKey};
    use fixtures::LwaAnswer;

    let (client, _api) = mock_api();
    let clock = Arc::new(ManualClock::new(start()));
    // Five failures from two namespaces open the breaker; then LWA is back.
    let (ctx, _) = fixtures::context(
        client,
        ScriptedLwa::answering(&[LwaAnswer::Unavailable; 5]),
        clock.clone(),
        Keyring::generate(start()),
    );
    let ours = super::woken(&ctx.engine, Some(fixtures::NAMESPACE));
    let everyone = super::woken(&ctx.engine, None);
    let creds = ClientCredentials {
        client_id: "amzn1.application-oa2-client.test".into(),
        client_secret: crate::crypto::SecretString::from("client-secret"),
        refresh_token: crate::crypto::SecretString::from("Atzr|refresh"),
        next_client_secret: None,
    };
    let keys = [
        ConnectionKey::new(fixtures::NAMESPACE, "a"),
        ConnectionKey::new(fixtures::NAMESPACE, "b"),
        ConnectionKey::new("team-globex", "c"),
        ConnectionKey::new("team-globex", "d"),
        ConnectionKey::new(fixtures::NAMESPACE, "e"),
    ];
    for key in &keys {
        assert!(ctx.engine.refresh(key, "fp", &creds, None).await.is_err());
    }
    // Their first backoff (at most 5 s) is over, the breaker is still open: each is paused
    // until it closes, as a reconcile in that moment would be.
    clock.advance(Duration::from_secs(6));
    for key in &keys {
        let decision = ctx
            .engine
            .decide(clock.now(), key, "fp", None, Duration::from_secs(300));
        assert!(
            matches!(
                decision,
                crate::lwa::RefreshDecision::RefreshAt {
                    reason: crate::lwa::WaitReason::CircuitOpen,
                    ..
                }
            ),
            "{key}: {decision:?}"
        );
    }
    // After the breaker's pause a probe gets a token: LWA is back, everyone is woken.
    clock.advance(Duration::from_secs(25));
    let probe = ConnectionKey::new(fixtures::NAMESPACE, "probe");
    assert!(ctx.engine.refresh(&probe, "fp", &creds, None).await.is_ok());
    let named = |refs: Vec<kube::runtime::reflector::ObjectRef<AmazonSellerConnection>>| {
        let mut names: Vec<String> = refs
            .iter()
            .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name))
            .collect();
        names.sort();
        names
    };
    let within = |refs| tokio::time::timeout(Duration::from_secs(5), refs);
    let ours = within(ours.take(3).collect())
        .await
        .expect("three wake-ups for team-acme");
    assert_eq!(named(ours), ["team-acme/a", "team-acme/b", "team-acme/e"]);
    let everyone = within(everyone.take(5).collect())
        .await
        .expect("five wake-ups in all");
    let everyone = named(everyone);
    assert_eq!(everyone.len(), 5, "{everyone:?}");
}
