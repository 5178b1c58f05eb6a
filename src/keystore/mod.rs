//! The operator's keys in the cluster: bootstrap, publication, rotation, re-sealing, pruning.
//!
//! The keyring lives in one Secret in the operator's namespace (data key `keyring.json`). It is
//! created when absent with create-if-absent semantics, so two replicas starting at once end
//! with one keyring and an existing keyring is never overwritten. Every change after that is a
//! read-modify-write guarded by `resourceVersion`, so concurrent rotations cannot lose a key.

pub mod commands;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::crypto::{self, KeyError, Keyring, SealContext};
use crate::error::Categorized;
use crate::names::{
    CONNECTION_LABEL, FIELD_MANAGER, KEYRING_KEY, LWA_CREDENTIALS_SECRET_TYPE,
    PUBLIC_KEY_CONFIGMAP, PUBLIC_KEY_KEY, ROLE_LWA_CREDENTIALS, ROLE_OPERATOR_KEYS,
    ROLE_TOKEN_STORE, SEALED_KEY, SECRET_ROLE_LABEL, TEAM_LABEL,
};
use crate::rbac::{Names, Permission, Scope};

/// The permissions the operator's calls in this module need (see [`crate::rbac`]). `rotate`
/// and `prune` also patch the key Secret and list credentials cluster-wide, but they are
/// administrator commands run with the administrator's own identity, not the operator's.
pub const RBAC: &[Permission] = &[
    // `KeyStore::load`: `get_opt` of the key Secret, by name.
    Permission::new("", "secrets", &["get"], Scope::OperatorNamespace).named(Names::KeySecret),
    // `KeyStore::bootstrap`: create the key Secret when there is none (create-if-absent).
    Permission::new("", "secrets", &["create"], Scope::OperatorNamespace),
    // `KeyStore::publish`: server-side apply of the public-key ConfigMap, which creates it the
    // first time.
    Permission::new("", "configmaps", &["patch"], Scope::OperatorNamespace)
        .named(Names::PublicKeyConfigMap),
    Permission::new("", "configmaps", &["create"], Scope::OperatorNamespace),
    // `reseal_in` and `keys_in_use_in`: list the credentials Secrets of the watched namespaces
    // and write each re-sealed envelope back (merge patch with a resourceVersion precondition).
    Permission::new("", "secrets", &["list", "patch"], Scope::Watched),
    // `reseal_in`: the Team label of each credentials Secret's namespace (associated data).
    Permission::new("", "namespaces", &["get"], Scope::Cluster).named(Names::WatchedNamespaces),
    // `fail`: a `ResealFailed` Event on a credentials Secret that does not open (create; patch
    // counts a repeat on the next pass).
    Permission::new(
        "events.k8s.io",
        "events",
        &["create", "patch"],
        Scope::Watched,
    ),
];

/// Failures talking to the cluster about keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// An API call failed.
    #[error("failed to {action}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The key Secret exists but does not hold a valid keyring.
    #[error("failed to read the keyring in Secret {secret}: {source}")]
    Keyring {
        /// `namespace/name` of the key Secret.
        secret: String,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// The key Secret does not exist (for commands that need it).
    #[error(
        "key Secret {0} does not exist: start the operator once or apply the output of `keygen`"
    )]
    Missing(String),
    /// Another writer kept changing the key Secret.
    #[error("failed to update key Secret {0}: it kept changing concurrently; try again")]
    Contended(String),
}

impl KeyStoreError {
    fn api(action: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| KeyStoreError::Api { action, source }
    }
}

/// The key Secret and the public-key ConfigMap of one operator installation.
#[derive(Clone)]
pub struct KeyStore {
    secrets: Api<Secret>,
    configmaps: Api<ConfigMap>,
    namespace: String,
    name: String,
}

/// A loaded keyring and the `resourceVersion` it was read at.
pub struct Loaded {
    /// The keys.
    pub keyring: Keyring,
    /// For optimistic concurrency on the next write.
    pub resource_version: Option<String>,
}

impl KeyStore {
    /// The key Secret `namespace/name`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), namespace),
            configmaps: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The operator namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The key Secret's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn display(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Reads the keyring, or `None` when the key Secret does not exist.
    pub async fn load(&self) -> Result<Option<Loaded>, KeyStoreError> {
        let Some(secret) = self
            .secrets
            .get_opt(&self.name)
            .await
            .map_err(KeyStoreError::api("read the key Secret"))?
        else {
            return Ok(None);
        };
        self.parse(&secret).map(Some)
    }

    fn parse(&self, secret: &Secret) -> Result<Loaded, KeyStoreError> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(KEYRING_KEY))
            .map(|b| b.0.as_slice())
            .unwrap_or_default();
        let keyring = Keyring::from_json(bytes).map_err(|source| KeyStoreError::Keyring {
            secret: self.display(),
            source,
        })?;
        Ok(Loaded {
            keyring,
            resource_version: secret.metadata.resource_version.clone(),
        })
    }

    /// Returns the stored keyring, creating one if there is none. Safe when several replicas
    /// call it at once: exactly one create succeeds and everyone returns that keyring.
    /// Also publishes the active public key.
    pub async fn bootstrap(&self, now: Timestamp) -> Result<Keyring, KeyStoreError> {
        Ok(self.bootstrap_reporting(now).await?.0)
    }

    /// [`bootstrap`](Self::bootstrap), also saying whether this call created the keyring.
    pub async fn bootstrap_reporting(
        &self,
        now: Timestamp,
    ) -> Result<(Keyring, bool), KeyStoreError> {
        let (keyring, created) = match self.load().await? {
            Some(loaded) => (loaded.keyring, false),
            None => {
                let fresh = Keyring::generate(now);
                let secret = key_secret(&self.namespace, &self.name, &fresh);
                match self.secrets.create(&PostParams::default(), &secret).await {
                    Ok(_) => {
                        tracing::info!(key_id = fresh.active().id(), secret = %self.display(), "created operator keyring");
                        (fresh, true)
                    }
                    // Another replica won the race: use its keyring, never overwrite it.
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        let theirs = self
                            .load()
                            .await?
                            .ok_or_else(|| KeyStoreError::Missing(self.display()))?
                            .keyring;
                        (theirs, false)
                    }
                    Err(source) => {
                        return Err(KeyStoreError::Api {
                            action: "create the key Secret",
                            source,
                        });
                    }
                }
            }
        };
        self.publish(&keyring).await?;
        Ok((keyring, created))
    }

    /// Publishes the active public key in the ConfigMap `amazon-seller-operator-public-key`.
    pub async fn publish(&self, keyring: &Keyring) -> Result<(), KeyStoreError> {
        let public = keyring.active().public_key();
        let configmap = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": PUBLIC_KEY_CONFIGMAP,
                "labels": { SECRET_ROLE_LABEL: ROLE_OPERATOR_KEYS },
            },
            "data": { PUBLIC_KEY_KEY: public.to_json(), "keyId": public.id() },
        });
        self.configmaps
            .patch(
                PUBLIC_KEY_CONFIGMAP,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&configmap),
            )
            .await
            .map_err(KeyStoreError::api("publish the public key ConfigMap"))?;
        Ok(())
    }

    /// Applies `change` to the stored keyring with optimistic concurrency, retrying on conflict.
    async fn update<T>(
        &self,
        mut change: impl FnMut(&mut Keyring) -> T,
    ) -> Result<(Keyring, T), KeyStoreError> {
        for _ in 0..5 {
            let mut loaded = self
                .load()
                .await?
                .ok_or_else(|| KeyStoreError::Missing(self.display()))?;
            let outcome = change(&mut loaded.keyring);
            let patch = json!({
                "metadata": { "resourceVersion": loaded.resource_version },
                "data": { KEYRING_KEY: ByteString(loaded.keyring.to_json().as_bytes().to_vec()) },
            });
            match self
                .secrets
                .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.publish(&loaded.keyring).await?;
                    return Ok((loaded.keyring, outcome));
                }
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(source) => {
                    return Err(KeyStoreError::Api {
                        action: "update the key Secret",
                        source,
                    });
                }
            }
        }
        Err(KeyStoreError::Contended(self.display()))
    }

    /// Adds a new active key (old keys stay until pruned). Returns the keyring and the new id.
    pub async fn rotate(&self, now: Timestamp) -> Result<(Keyring, String), KeyStoreError> {
        self.update(|ring| ring.rotate(now)).await
    }

    /// Removes every inactive key that no credentials Secret and no token store (the runtime
    /// credential endpoint's sealed access tokens) in the cluster is sealed to. Returns the
    /// removed ids.
    pub async fn prune(&self, client: &Client) -> Result<Vec<String>, KeyStoreError> {
        let mut in_use = keys_in_use(client).await?;
        // A token store is re-sealed to the active key at its connection's next reconcile;
        // until then the key it is sealed to stays.
        for store in
            labelled_secrets(client, &[None], ROLE_TOKEN_STORE, "list token stores").await?
        {
            let id = envelope_of(&store)
                .and_then(|e| crypto::sealed_key_id(e).ok())
                .unwrap_or_else(|| "unreadable".to_owned());
            *in_use.entry(id).or_insert(0) += 1;
        }
        let in_use: Vec<&str> = in_use.keys().map(String::as_str).collect();
        let (_, removed) = self.update(|ring| ring.prune(&in_use)).await?;
        Ok(removed)
    }
}

/// The key Secret manifest for a keyring (bootstrap, and `keygen` for GitOps installs).
pub fn key_secret(namespace: &str, name: &str, keyring: &Keyring) -> Secret {
    let mut secret = Secret {
        type_: Some("Opaque".into()),
        data: Some(
            [(
                KEYRING_KEY.to_owned(),
                ByteString(keyring.to_json().as_bytes().to_vec()),
            )]
            .into(),
        ),
        ..Secret::default()
    };
    secret.metadata.name = Some(name.to_owned());
    secret.metadata.namespace = Some(namespace.to_owned());
    secret.metadata.labels =
        Some([(SECRET_ROLE_LABEL.to_owned(), ROLE_OPERATOR_KEYS.to_owned())].into());
    secret
}

/// A sealed credentials Secret manifest.
pub fn sealed_secret(
    namespace: &str,
    name: &str,
    connection: Option<&str>,
    envelope: Vec<u8>,
) -> Secret {
    let mut labels = BTreeMap::from([(
        SECRET_ROLE_LABEL.to_owned(),
        ROLE_LWA_CREDENTIALS.to_owned(),
    )]);
    if let Some(connection) = connection {
        labels.insert(CONNECTION_LABEL.to_owned(), connection.to_owned());
    }
    let mut secret = Secret {
        type_: Some(LWA_CREDENTIALS_SECRET_TYPE.into()),
        data: Some([(SEALED_KEY.to_owned(), ByteString(envelope))].into()),
        ..Secret::default()
    };
    secret.metadata.name = Some(name.to_owned());
    secret.metadata.namespace = Some(namespace.to_owned());
    secret.metadata.labels = Some(labels);
    secret
}

/// The sealed envelope of a credentials Secret, if it has one.
pub fn envelope_of(secret: &Secret) -> Option<&[u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(SEALED_KEY))
        .map(|b| b.0.as_slice())
}

/// Every credentials Secret in `namespaces` (`None`: all namespaces).
async fn credential_secrets(
    client: &Client,
    namespaces: &[Option<String>],
) -> Result<Vec<Secret>, KeyStoreError> {
    labelled_secrets(
        client,
        namespaces,
        ROLE_LWA_CREDENTIALS,
        "list credentials Secrets",
    )
    .await
}

/// Every Secret with secret-role `role` in `namespaces` (`None`: all namespaces).
async fn labelled_secrets(
    client: &Client,
    namespaces: &[Option<String>],
    role: &str,
    action: &'static str,
) -> Result<Vec<Secret>, KeyStoreError> {
    let mut all = Vec::new();
    for namespace in namespaces {
        let api: Api<Secret> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let mut params = ListParams::default()
            .labels(&format!("{SECRET_ROLE_LABEL}={role}"))
            .limit(500);
        loop {
            let page = api
                .list(&params)
                .await
                .map_err(KeyStoreError::api(action))?;
            let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
            all.extend(page.items);
            match next {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }
    Ok(all)
}

/// How many credentials Secrets are sealed to each key id (unreadable envelopes count under
/// `"unreadable"`, so a key is never pruned while something unexplained remains).
pub async fn keys_in_use(client: &Client) -> Result<BTreeMap<String, usize>, KeyStoreError> {
    keys_in_use_in(client, &[None]).await
}

/// [`keys_in_use`] over the given namespaces only (`None`: all), as an operator watching
/// some namespaces counts.
pub async fn keys_in_use_in(
    client: &Client,
    namespaces: &[Option<String>],
) -> Result<BTreeMap<String, usize>, KeyStoreError> {
    let mut counts = BTreeMap::new();
    for secret in credential_secrets(client, namespaces).await? {
        let id = envelope_of(&secret)
            .and_then(|e| crypto::sealed_key_id(e).ok())
            .unwrap_or_else(|| "unreadable".to_owned());
        *counts.entry(id).or_insert(0) += 1;
    }
    Ok(counts)
}

/// What one re-sealing pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Secrets re-sealed to the active key.
    pub resealed: Vec<String>,
    /// Secrets already sealed to the active key.
    pub current: usize,
    /// Secrets that could not be re-sealed (`namespace/name`, reason category); left untouched.
    pub failed: Vec<(String, &'static str)>,
}

/// Re-seals every credentials Secret not sealed to the active key: each is opened with the key
/// it records and sealed again to the active key with the same associated data, then written
/// with a `resourceVersion` precondition so a concurrent change is never overwritten. Writes
/// are spaced by `pace` to spare the API server. A Secret that fails to open is reported with
/// a Warning Event and a log line (no plaintext) and left untouched.
pub async fn reseal_all(
    client: &Client,
    keyring: &Keyring,
    recorder: Option<&Recorder>,
    pace: Duration,
) -> Result<ResealReport, KeyStoreError> {
    reseal_in(client, &[None], keyring, recorder, pace).await
}

/// [`reseal_all`] over the given namespaces only (`None`: all): an operator watching some
/// namespaces re-seals only there, so it needs no access to other namespaces' Secrets.
pub async fn reseal_in(
    client: &Client,
    namespaces: &[Option<String>],
    keyring: &Keyring,
    recorder: Option<&Recorder>,
    pace: Duration,
) -> Result<ResealReport, KeyStoreError> {
    let active = keyring.active();
    let public = active.public_key();
    let mut teams: HashMap<String, Option<String>> = HashMap::new();
    let namespace_api: Api<Namespace> = Api::all(client.clone());
    let mut report = ResealReport::default();

    for secret in credential_secrets(client, namespaces).await? {
        let namespace = secret.namespace().unwrap_or_default();
        let name = secret.name_any();
        let object = format!("{namespace}/{name}");
        let Some(envelope) = envelope_of(&secret) else {
            fail(
                &mut report,
                recorder,
                &secret,
                &object,
                "missing_envelope",
                "has no sealed envelope",
            )
            .await;
            continue;
        };
        if crypto::sealed_key_id(envelope).ok().as_deref() == Some(active.id()) {
            report.current += 1;
            continue;
        }
        if !teams.contains_key(&namespace) {
            let team = namespace_api
                .get_opt(&namespace)
                .await
                .map_err(KeyStoreError::api("read a namespace"))?
                .and_then(|ns| ns.labels().get(TEAM_LABEL).cloned());
            teams.insert(namespace.clone(), team);
        }
        let Some(team) = teams.get(&namespace).cloned().flatten() else {
            fail(
                &mut report,
                recorder,
                &secret,
                &object,
                "no_team",
                "is in a namespace without a team label",
            )
            .await;
            continue;
        };
        let context = SealContext {
            team_id: &team,
            namespace: &namespace,
            secret_name: &name,
        };
        let credentials = match crypto::open(keyring, &context, envelope) {
            Ok((credentials, _)) => credentials,
            Err(err) => {
                let note = err.to_string();
                fail(
                    &mut report,
                    recorder,
                    &secret,
                    &object,
                    err.category(),
                    &note,
                )
                .await;
                continue;
            }
        };
        let Ok(resealed) = crypto::seal(&public, &context, &credentials) else {
            fail(
                &mut report,
                recorder,
                &secret,
                &object,
                "seal_failed",
                "could not be sealed again",
            )
            .await;
            continue;
        };
        let patch = json!({
            "metadata": { "resourceVersion": secret.metadata.resource_version },
            "data": { SEALED_KEY: ByteString(resealed) },
        });
        let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(secret = %object, key_id = active.id(), "re-sealed credentials to the active key");
                report.resealed.push(object);
            }
            // Changed since we listed it: the next pass sees the new version.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                report.failed.push((object, "conflict"));
            }
            Err(source) => {
                return Err(KeyStoreError::Api {
                    action: "write a re-sealed Secret",
                    source,
                });
            }
        }
        tokio::time::sleep(pace).await;
    }
    Ok(report)
}

async fn fail(
    report: &mut ResealReport,
    recorder: Option<&Recorder>,
    secret: &Secret,
    object: &str,
    category: &'static str,
    note: &str,
) {
    tracing::warn!(secret = %object, reason = category, "cannot re-seal credentials: {note}");
    if let Some(recorder) = recorder {
        let event = Event {
            type_: EventType::Warning,
            reason: "ResealFailed".into(),
            note: Some(format!(
                "credentials were not re-sealed to the active key: {note}"
            )),
            action: "Reseal".into(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&event, &secret.object_ref(&())).await {
            tracing::warn!(secret = %object, "failed to publish event: {err}");
        }
    }
    report.failed.push((object.to_owned(), category));
}
