//! Credential sealing through the CLI (tier 1, no cluster) and key bootstrap, rotation and
//! pruning against the real API server (tier 2).

mod support;

use std::path::Path;
use std::process::{Command, Output};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::{Recorder, Reporter};

use amazon_seller_operator::crypto::{self, Credentials, Keyring, PublicKey, SealContext};
use amazon_seller_operator::keystore::{self, KeyStore};
use amazon_seller_operator::names::{PUBLIC_KEY_CONFIGMAP, PUBLIC_KEY_KEY};

use support::scenario::{ELSEWHERE, sealed_secret};
use support::{cluster, create_namespace, unique_name};

const CLIENT_ID: &str = "amzn1.application-oa2-client.5f3e0cafe1234";
const CLIENT_SECRET: &str = "amzn1.oa2-cs.v1.c0ffee5ecretva1ue";
const REFRESH_TOKEN: &str = "Atzr|IwEBIPlaintextRefreshTokenValue";
const NEXT_SECRET: &str = "amzn1.oa2-cs.v1.nextc0ffee5ecret";

fn aso(args: &[&str], kubeconfig: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_amazon-seller-operator"));
    command.args(args);
    if let Some(path) = kubeconfig {
        command.env("KUBECONFIG", path);
    }
    command.output().expect("binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs `keygen`, returning the keyring (from the printed Secret) and the public key file.
fn keygen(dir: &Path) -> (Keyring, String) {
    let public = dir.join("public-key.json");
    let output = aso(
        &["keygen", "--public-key-out", public.to_str().unwrap()],
        None,
    );
    assert!(output.status.success(), "{}", text(&output));
    let secret: Secret =
        serde_saphyr::from_str(&String::from_utf8(output.stdout).unwrap()).unwrap();
    let data = secret.data.unwrap();
    let keyring = Keyring::from_json(&data["keyring.json"].0).unwrap();
    (keyring, public.to_str().unwrap().to_owned())
}

fn seal_args<'a>(public: &'a str, secret_file: &'a str, token_file: &'a str) -> Vec<&'a str> {
    vec![
        "seal",
        "--public-key",
        public,
        "--team",
        "acme",
        "--namespace",
        "team-acme",
        "--name",
        "acme-us-lwa",
        "--connection",
        "acme-us",
        "--client-id",
        CLIENT_ID,
        "--client-secret-file",
        secret_file,
        "--refresh-token-file",
        token_file,
    ]
}

#[test]
fn seal_output_holds_no_plaintext_and_opens_with_the_operator_key() {
    let dir = tempfile::tempdir().unwrap();
    let (keyring, public) = keygen(dir.path());
    let secret_file = write(dir.path(), "secret", &format!("{CLIENT_SECRET}\n"));
    let token_file = write(dir.path(), "token", &format!("{REFRESH_TOKEN}\n"));
    let next_file = write(dir.path(), "next", NEXT_SECRET);
    let mut args = seal_args(&public, &secret_file, &token_file);
    args.extend([
        "--next-client-secret-file",
        &next_file,
        "--client-secret-expires-at",
        "2027-05-01T00:00:00Z",
    ]);
    let output = aso(&args, None);
    assert!(output.status.success(), "{}", text(&output));
    let yaml = String::from_utf8(output.stdout).unwrap();
    for plaintext in [
        CLIENT_ID,
        CLIENT_SECRET,
        REFRESH_TOKEN,
        NEXT_SECRET,
        "Atzr|",
        "amzn1.oa2-cs",
    ] {
        assert!(
            !yaml.contains(plaintext),
            "seal output contains {plaintext}"
        );
    }

    let secret: Secret = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(
        secret.type_.as_deref(),
        Some("connectors.openteam.io/lwa-credentials")
    );
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(
        labels["connectors.openteam.io/secret-role"],
        "lwa-credentials"
    );
    assert_eq!(labels["connectors.openteam.io/connection"], "acme-us");
    let envelope = keystore::envelope_of(&secret).unwrap();
    let context = SealContext {
        team_id: "acme",
        namespace: "team-acme",
        secret_name: "acme-us-lwa",
    };
    let (credentials, key_id) = crypto::open(&keyring, &context, envelope).unwrap();
    assert_eq!(key_id, keyring.active().id());
    assert_eq!(credentials.client_id, CLIENT_ID);
    assert_eq!(credentials.client_secret.expose(), CLIENT_SECRET);
    assert_eq!(credentials.refresh_token.expose(), REFRESH_TOKEN);
    assert_eq!(
        credentials.next_client_secret.unwrap().expose(),
        NEXT_SECRET
    );
    assert_eq!(
        credentials.client_secret_expires_at.unwrap().to_string(),
        "2027-05-01T00:00:00Z"
    );
}

#[test]
fn seal_refuses_bad_inputs_naming_the_input_and_never_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = keygen(dir.path());
    let good_secret = write(dir.path(), "secret", CLIENT_SECRET);
    let good_token = write(dir.path(), "token", REFRESH_TOKEN);
    let access_token = write(dir.path(), "access", "Atza|AccessTokenNotRefresh");
    let empty = write(dir.path(), "empty", "\n");
    let huge = write(dir.path(), "huge", &"x".repeat(9 * 1024));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            seal_args(&public, &good_secret, &access_token),
            "--refresh-token-file does not look like an LWA refresh token",
        ),
        (
            seal_args(&public, &empty, &good_token),
            "--client-secret-file is empty",
        ),
        (
            seal_args(&public, &huge, &good_token),
            "--client-secret-file is larger than 8192 bytes",
        ),
        (
            seal_args(&public, &good_secret, "/nonexistent/token"),
            "failed to read --refresh-token-file from /nonexistent/token",
        ),
        (
            seal_args(&public, "-", "-"),
            "only one secret input can come from standard input",
        ),
        (
            seal_args(&public, &good_secret, &good_token)
                .into_iter()
                .map(|a| if a == CLIENT_ID { "my-client" } else { a })
                .collect(),
            "--client-id does not look like an LWA client id",
        ),
        (
            seal_args(&public, &good_secret, &good_token)
                .into_iter()
                .map(|a| if a == "team-acme" { "Team_Acme" } else { a })
                .collect(),
            "--namespace: invalid namespace \"Team_Acme\"",
        ),
    ];
    for (args, expected) in cases {
        let output = aso(&args, None);
        let all = text(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {all}");
        assert!(all.contains(expected), "expected {expected:?} in {all}");
        for plaintext in ["AccessTokenNotRefresh", CLIENT_SECRET, REFRESH_TOKEN] {
            assert!(!all.contains(plaintext), "{plaintext} echoed: {all}");
        }
    }
}

#[test]
fn seal_requires_a_public_key_source() {
    let output = aso(
        &[
            "seal",
            "--team",
            "acme",
            "--namespace",
            "n",
            "--name",
            "s",
            "--client-id",
            CLIENT_ID,
            "--client-secret-file",
            "a",
            "--refresh-token-file",
            "b",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("--public-key"));
}

// ---- tier 2: the real API server -------------------------------------------------------

async fn plane(test: &str) -> Option<(Client, String)> {
    let client = cluster(test).await?;
    let namespace = create_namespace(&client, "aso-system", None).await;
    Some((client, namespace))
}

#[tokio::test]
async fn concurrent_bootstraps_end_with_exactly_one_keyring() {
    let Some((client, ns)) = plane("concurrent_bootstraps_end_with_exactly_one_keyring").await
    else {
        return;
    };
    let now = jiff::Timestamp::now();
    let stores: Vec<KeyStore> = (0..4)
        .map(|_| KeyStore::new(client.clone(), &ns, "aso-keys"))
        .collect();
    let results = futures::future::join_all(stores.iter().map(|s| s.bootstrap(now))).await;
    let ids: Vec<String> = results
        .into_iter()
        .map(|r| r.expect("bootstrap succeeds").active().id().to_owned())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "replicas disagree: {ids:?}"
    );
    let stored = stores[0].load().await.unwrap().unwrap().keyring;
    assert_eq!(stored.keys().len(), 1);
    assert_eq!(stored.active().id(), ids[0]);

    let configmap = Api::<ConfigMap>::namespaced(client, &ns)
        .get(PUBLIC_KEY_CONFIGMAP)
        .await
        .unwrap();
    let public = PublicKey::from_json(&configmap.data.unwrap()[PUBLIC_KEY_KEY]).unwrap();
    assert_eq!(public.id(), ids[0]);
}

#[tokio::test]
async fn an_existing_key_secret_is_never_overwritten() {
    let Some((client, ns)) = plane("an_existing_key_secret_is_never_overwritten").await else {
        return;
    };
    let existing = Keyring::generate(jiff::Timestamp::now());
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &keystore::key_secret(&ns, "aso-keys", &existing),
        )
        .await
        .unwrap();
    let store = KeyStore::new(client, &ns, "aso-keys");
    let booted = store.bootstrap(jiff::Timestamp::now()).await.unwrap();
    assert_eq!(booted.active().id(), existing.active().id());
    let stored = store.load().await.unwrap().unwrap().keyring;
    assert_eq!(stored.keys().len(), 1);
    assert_eq!(stored.active().id(), existing.active().id());
}

fn credentials(n: usize) -> Credentials {
    Credentials {
        client_id: CLIENT_ID.into(),
        client_secret: format!("{CLIENT_SECRET}{n}").into(),
        refresh_token: format!("{REFRESH_TOKEN}{n}").into(),
        next_client_secret: None,
        client_secret_expires_at: None,
    }
}

#[tokio::test]
async fn rotation_reseals_every_credential_and_prune_removes_the_old_key() {
    let Some((client, ns)) =
        plane("rotation_reseals_every_credential_and_prune_removes_the_old_key").await
    else {
        return;
    };
    // Several Team namespaces and their credentials, sealed to the first key.
    let store = KeyStore::new(client.clone(), &ns, "aso-keys");
    let first = store.bootstrap(jiff::Timestamp::now()).await.unwrap();
    let team = unique_name("team");
    let team_ns = create_namespace(&client, "team", Some(&team)).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &team_ns);
    let first_key = first.active().public_key();
    for n in 0..3 {
        let name = format!("creds-{n}");
        let context = SealContext {
            team_id: &team,
            namespace: &team_ns,
            secret_name: &name,
        };
        secrets
            .create(
                &PostParams::default(),
                &sealed_secret(&first_key, &context, &team_ns, &credentials(n)),
            )
            .await
            .unwrap();
    }
    // One that cannot be opened: sealed for another namespace, then copied here.
    let wrong = SealContext {
        team_id: &team,
        namespace: ELSEWHERE,
        secret_name: "creds-broken",
    };
    let broken = secrets
        .create(
            &PostParams::default(),
            &sealed_secret(&first_key, &wrong, &team_ns, &credentials(9)),
        )
        .await
        .unwrap();

    let (rotated, new_id) = store.rotate(jiff::Timestamp::now()).await.unwrap();
    assert_ne!(new_id, first.active().id());
    let configmap = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get(PUBLIC_KEY_CONFIGMAP)
        .await
        .unwrap();
    assert_eq!(
        configmap.data.unwrap()["keyId"],
        new_id,
        "the new public key is published"
    );

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "aso-tests".into(),
            instance: None,
        },
    );
    let report = keystore::reseal_all(
        &client,
        &rotated,
        Some(&recorder),
        std::time::Duration::ZERO,
    )
    .await
    .unwrap();
    let mine: Vec<_> = report
        .resealed
        .iter()
        .filter(|s| s.starts_with(&format!("{team_ns}/")))
        .collect();
    assert_eq!(mine.len(), 3, "{report:?}");
    assert!(
        report
            .failed
            .iter()
            .any(|(s, reason)| s == &format!("{team_ns}/creds-broken")
                && *reason == "authentication_failed")
    );

    // Every credential now opens with the new key alone.
    let only_new = Keyring::from_json(rotated.to_json().as_bytes()).unwrap();
    for n in 0..3 {
        let name = format!("creds-{n}");
        let secret = secrets.get(&name).await.unwrap();
        let context = SealContext {
            team_id: &team,
            namespace: &team_ns,
            secret_name: &name,
        };
        let (opened, key_id) =
            crypto::open(&only_new, &context, keystore::envelope_of(&secret).unwrap()).unwrap();
        assert_eq!(key_id, new_id);
        assert_eq!(opened, credentials(n));
    }
    // The broken one is untouched and reported with an Event that holds no plaintext.
    let after = secrets.get("creds-broken").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        broken.metadata.resource_version
    );
    let events = Api::<Event>::namespaced(client.clone(), &team_ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let event = events
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("ResealFailed"))
        .expect("a ResealFailed event");
    let note = event.note.clone().unwrap_or_default();
    assert!(note.contains("authentication failed"), "{note}");
    assert!(
        !note.contains("Atzr|") && !note.contains(CLIENT_SECRET),
        "{note}"
    );

    // The old key is still used by the broken Secret, so prune keeps it until that is fixed.
    assert!(store.prune(&client).await.unwrap().is_empty());
    secrets
        .delete("creds-broken", &Default::default())
        .await
        .unwrap();
    assert_eq!(
        store.prune(&client).await.unwrap(),
        vec![first.active().id().to_owned()]
    );
    let remaining = store.load().await.unwrap().unwrap().keyring;
    assert_eq!(remaining.keys().len(), 1);
    assert_eq!(remaining.active().id(), new_id);
}
