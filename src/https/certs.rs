//! Self-managed serving certificates (`--webhook-cert-mode=self-managed`): the operator keeps
//! its own CA and a serving certificate for the webhook Service's DNS names in one Secret in
//! its namespace, renews the serving certificate well before it expires (and the CA a year
//! before it does), and keeps `caBundle` of its Validating- and MutatingWebhookConfiguration
//! current.
//!
//! Every replica runs the same loop. The Secret is created with create-if-absent semantics and
//! changed only with a `resourceVersion` precondition, so replicas starting or renewing at once
//! end with one CA; each replica serves whatever the Secret holds. After a CA renewal the
//! bundle holds the new and the previous CA until the next renewal, so replicas still serving
//! a certificate of the old CA stay trusted while they reload.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::HttpsError;
use super::tls::CertStore;
use crate::error::Categorized;
use crate::rbac::{Names, Permission, Scope};

/// The permissions of the self-managed mode, declared beside its calls (see [`crate::rbac`]).
pub const RBAC: &[Permission] = &[
    // The certificate Secret is created on first start when absent (create cannot be narrowed
    // to a name), then read and replaced with a resourceVersion precondition.
    Permission::new("", "secrets", &["create"], Scope::OperatorNamespace),
    Permission::new("", "secrets", &["get", "update"], Scope::OperatorNamespace)
        .named(Names::WebhookCertSecret),
    // `caBundle` of the operator's own two configurations.
    Permission::new(
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        &["get", "update"],
        Scope::Cluster,
    )
    .named(Names::WebhookConfigurations),
    Permission::new(
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        &["get", "update"],
        Scope::Cluster,
    )
    .named(Names::WebhookConfigurations),
];

/// Data key of the CA bundle (current CA first, then the previous one after a renewal).
pub const CA_BUNDLE_KEY: &str = "ca.crt";
/// Data key of the CA's private key.
pub const CA_KEY_KEY: &str = "ca.key";
/// Data key of the serving certificate.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Data key of the serving certificate's private key.
pub const TLS_KEY_KEY: &str = "tls.key";
/// Annotation: when the serving certificate expires (RFC 3339).
pub const NOT_AFTER_ANNOTATION: &str = "connectors.openteam.io/not-after";
/// Annotation: when the CA expires (RFC 3339).
pub const CA_NOT_AFTER_ANNOTATION: &str = "connectors.openteam.io/ca-not-after";
/// Annotation: the DNS names and addresses the serving certificate is for, comma-separated.
pub const DNS_NAMES_ANNOTATION: &str = "connectors.openteam.io/dns-names";

/// The CA's subject; also how the CA is recognised when it signs again.
const CA_COMMON_NAME: &str = "amazon-seller-operator webhook CA";
/// Lifetime of the CA.
const CA_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 3650);
/// Renew the CA when less than this is left.
const CA_RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(24 * 365);
/// Lifetime of a serving certificate.
const LEAF_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 90);
/// Renew a serving certificate when less than this is left.
const LEAF_RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(24 * 30);

/// The DNS names a Service is reached by, plus any extra names or IP addresses.
pub fn dns_names(service: &str, namespace: &str, extra: &[String]) -> Vec<String> {
    let mut names = vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    for name in extra {
        if !name.is_empty() && !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// The self-managed certificate loop of one replica.
#[derive(Clone)]
pub struct SelfManaged {
    /// The API client.
    pub client: Client,
    /// The operator's namespace, where the Secret lives.
    pub namespace: String,
    /// The Secret's name.
    pub secret: String,
    /// What the serving certificate is for.
    pub dns_names: Vec<String>,
    /// The ValidatingWebhookConfiguration whose `caBundle` is kept current.
    pub validating_configuration: String,
    /// The MutatingWebhookConfiguration whose `caBundle` is kept current.
    pub mutating_configuration: String,
}

/// A freshly issued certificate set, PEM.
struct Issued {
    ca_bundle: String,
    ca_key: String,
    cert: String,
    key: String,
    ca_not_after: Timestamp,
    not_after: Timestamp,
}

/// Sets a certificate's validity, in whole days (UTC), from `from` to `until`.
fn set_validity(params: &mut CertificateParams, from: Timestamp, until: Timestamp) {
    let ymd = |at: Timestamp| {
        let date = at.to_zoned(jiff::tz::TimeZone::UTC).date();
        // jiff's month and day are always in 1..=12 and 1..=31.
        rcgen::date_time_ymd(
            i32::from(date.year()),
            u8::try_from(date.month()).unwrap_or(1),
            u8::try_from(date.day()).unwrap_or(1),
        )
    };
    params.not_before = ymd(from);
    params.not_after = ymd(until);
}

fn ca_params(now: Timestamp) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // A day of slack before now: clocks across the cluster are not exactly in step.
    set_validity(
        &mut params,
        now - SignedDuration::from_hours(24),
        now + CA_LIFETIME,
    );
    params
}

fn generation(err: rcgen::Error) -> HttpsError {
    HttpsError::Generate(err)
}

/// Issues a serving certificate for `dns_names` signed by the CA key `ca_key`.
fn issue_leaf(
    ca_key: KeyPair,
    dns_names: &[String],
    now: Timestamp,
) -> Result<(String, String, Timestamp), HttpsError> {
    let issuer = Issuer::new(ca_params(now), ca_key);
    let mut params = CertificateParams::new(dns_names.to_vec()).map_err(generation)?;
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        dns_names.first().map_or("webhook", String::as_str),
    );
    params.distinguished_name = name;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let not_after = now + LEAF_LIFETIME;
    set_validity(&mut params, now - SignedDuration::from_hours(24), not_after);
    let key = KeyPair::generate().map_err(generation)?;
    let cert = params.signed_by(&key, &issuer).map_err(generation)?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

/// Issues a new CA and a serving certificate; the bundle keeps `previous_ca` (PEM) if given.
fn issue_all(
    dns_names: &[String],
    previous_ca: Option<&str>,
    now: Timestamp,
) -> Result<Issued, HttpsError> {
    let ca_key = KeyPair::generate().map_err(generation)?;
    let ca_cert = ca_params(now).self_signed(&ca_key).map_err(generation)?;
    let ca_key_pem = ca_key.serialize_pem();
    let (cert, key, not_after) = issue_leaf(ca_key, dns_names, now)?;
    let mut ca_bundle = ca_cert.pem();
    if let Some(previous) = previous_ca {
        ca_bundle.push_str(previous);
    }
    Ok(Issued {
        ca_bundle,
        ca_key: ca_key_pem,
        cert,
        key,
        ca_not_after: now + CA_LIFETIME,
        not_after,
    })
}

/// The first certificate of a PEM bundle, as PEM.
fn first_certificate(bundle: &[u8]) -> Option<String> {
    let first = CertificateDer::pem_slice_iter(bundle).next()?.ok()?;
    let body = B64.encode(first.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).ok()?);
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    Some(out)
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn annotation_time(secret: &Secret, key: &str) -> Option<Timestamp> {
    secret.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

impl SelfManaged {
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn display(&self) -> String {
        format!("{}/{}", self.namespace, self.secret)
    }

    fn manifest(&self, issued: &Issued, resource_version: Option<String>) -> Secret {
        let data: BTreeMap<String, ByteString> = [
            (CA_BUNDLE_KEY, &issued.ca_bundle),
            (CA_KEY_KEY, &issued.ca_key),
            (TLS_CERT_KEY, &issued.cert),
            (TLS_KEY_KEY, &issued.key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
        let mut secret = Secret {
            type_: Some("kubernetes.io/tls".to_owned()),
            data: Some(data),
            ..Secret::default()
        };
        secret.metadata.name = Some(self.secret.clone());
        secret.metadata.namespace = Some(self.namespace.clone());
        secret.metadata.resource_version = resource_version;
        secret.metadata.labels = Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_owned(),
            crate::names::FIELD_MANAGER.to_owned(),
        )]));
        secret.metadata.annotations = Some(BTreeMap::from([
            (
                NOT_AFTER_ANNOTATION.to_owned(),
                issued.not_after.to_string(),
            ),
            (
                CA_NOT_AFTER_ANNOTATION.to_owned(),
                issued.ca_not_after.to_string(),
            ),
            (DNS_NAMES_ANNOTATION.to_owned(), self.dns_names.join(",")),
        ]));
        secret
    }

    /// What the stored Secret needs: `None` when it is current, otherwise a replacement.
    fn renewal(&self, stored: &Secret, now: Timestamp) -> Result<Option<Issued>, HttpsError> {
        let ca_key = text(stored, CA_KEY_KEY).and_then(|pem| KeyPair::from_pem(&pem).ok());
        let ca_bundle = text(stored, CA_BUNDLE_KEY);
        let ca_until = annotation_time(stored, CA_NOT_AFTER_ANNOTATION);
        let ca_current = ca_key.is_some()
            && ca_bundle.is_some()
            && ca_until.is_some_and(|t| t.duration_since(now) > CA_RENEW_BEFORE);
        let leaf_current = text(stored, TLS_CERT_KEY).is_some()
            && text(stored, TLS_KEY_KEY).is_some()
            && annotation_time(stored, NOT_AFTER_ANNOTATION)
                .is_some_and(|t| t.duration_since(now) > LEAF_RENEW_BEFORE)
            && stored
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DNS_NAMES_ANNOTATION))
                == Some(&self.dns_names.join(","));
        match (ca_current, ca_key, ca_bundle, ca_until) {
            (true, _, _, _) if leaf_current => Ok(None),
            (true, Some(ca_key), Some(ca_bundle), Some(ca_until)) => {
                let ca_key_pem = ca_key.serialize_pem();
                let (cert, key, not_after) = issue_leaf(ca_key, &self.dns_names, now)?;
                Ok(Some(Issued {
                    ca_bundle,
                    ca_key: ca_key_pem,
                    cert,
                    key,
                    ca_not_after: ca_until,
                    not_after,
                }))
            }
            _ => {
                // A new CA; the previous one stays in the bundle while replicas reload.
                let previous = text(stored, CA_BUNDLE_KEY)
                    .and_then(|bundle| first_certificate(bundle.as_bytes()));
                issue_all(&self.dns_names, previous.as_deref(), now).map(Some)
            }
        }
    }

    /// One pass: makes sure the Secret holds a CA and a current serving certificate, serves it,
    /// and makes both webhook configurations trust the CA. Returns the CA bundle (PEM).
    pub async fn reconcile(
        &self,
        store: &CertStore,
        now: Timestamp,
    ) -> Result<Vec<u8>, HttpsError> {
        let api = self.secrets();
        let stored = match api
            .get_opt(&self.secret)
            .await
            .map_err(HttpsError::kube("read the webhook certificate Secret"))?
        {
            Some(stored) => match self.renewal(&stored, now)? {
                None => stored,
                Some(issued) => {
                    let replacement =
                        self.manifest(&issued, stored.metadata.resource_version.clone());
                    let replaced = api
                        .replace(&self.secret, &PostParams::default(), &replacement)
                        .await
                        .map_err(HttpsError::kube("renew the webhook certificate Secret"))?;
                    tracing::info!(secret = %self.display(), not_after = %issued.not_after, "renewed the webhook serving certificate");
                    replaced
                }
            },
            None => {
                let issued = issue_all(&self.dns_names, None, now)?;
                match api
                    .create(&PostParams::default(), &self.manifest(&issued, None))
                    .await
                {
                    Ok(created) => {
                        tracing::info!(secret = %self.display(), "created the webhook CA and serving certificate");
                        created
                    }
                    // Another replica created it first: use theirs.
                    Err(kube::Error::Api(status)) if status.code == 409 => api
                        .get(&self.secret)
                        .await
                        .map_err(HttpsError::kube("read the webhook certificate Secret"))?,
                    Err(source) => {
                        return Err(HttpsError::Kube {
                            action: "create the webhook certificate Secret",
                            source,
                        });
                    }
                }
            }
        };
        let malformed = || HttpsError::MalformedSecret(self.display());
        let cert = text(&stored, TLS_CERT_KEY).ok_or_else(malformed)?;
        let key = zeroize::Zeroizing::new(text(&stored, TLS_KEY_KEY).ok_or_else(malformed)?);
        let bundle = text(&stored, CA_BUNDLE_KEY).ok_or_else(malformed)?;
        if store.load_pem(cert.as_bytes(), key.as_bytes())? {
            tracing::info!(secret = %self.display(), "serving the self-managed webhook certificate");
        }
        self.patch_ca_bundles(bundle.as_bytes()).await?;
        Ok(bundle.into_bytes())
    }

    /// Sets `caBundle` on every webhook of both configurations, where it differs. A missing
    /// configuration is not an error (the chart may not have created it yet).
    pub async fn patch_ca_bundles(&self, bundle: &[u8]) -> Result<(), HttpsError> {
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        if let Some(mut config) = validating
            .get_opt(&self.validating_configuration)
            .await
            .map_err(HttpsError::kube("read the ValidatingWebhookConfiguration"))?
        {
            let mut changed = false;
            for hook in config.webhooks.iter_mut().flatten() {
                changed |= set_bundle(&mut hook.client_config.ca_bundle, bundle);
            }
            if changed {
                validating
                    .replace(
                        &self.validating_configuration,
                        &PostParams::default(),
                        &config,
                    )
                    .await
                    .map_err(HttpsError::kube(
                        "update the ValidatingWebhookConfiguration caBundle",
                    ))?;
                tracing::info!(configuration = %self.validating_configuration, "updated caBundle");
            }
        }
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        if let Some(mut config) = mutating
            .get_opt(&self.mutating_configuration)
            .await
            .map_err(HttpsError::kube("read the MutatingWebhookConfiguration"))?
        {
            let mut changed = false;
            for hook in config.webhooks.iter_mut().flatten() {
                changed |= set_bundle(&mut hook.client_config.ca_bundle, bundle);
            }
            if changed {
                mutating
                    .replace(
                        &self.mutating_configuration,
                        &PostParams::default(),
                        &config,
                    )
                    .await
                    .map_err(HttpsError::kube(
                        "update the MutatingWebhookConfiguration caBundle",
                    ))?;
                tracing::info!(configuration = %self.mutating_configuration, "updated caBundle");
            }
        }
        Ok(())
    }

    /// Reconciles now and every `interval` until `shutdown`. Failures are logged and retried
    /// at the next tick; the current certificate keeps being served meanwhile.
    pub async fn run(
        self,
        store: Arc<CertStore>,
        interval: Duration,
        shutdown: impl Future<Output = ()>,
    ) {
        let work = async {
            loop {
                if let Err(err) = self.reconcile(&store, Timestamp::now()).await {
                    tracing::warn!(
                        reason = err.category(),
                        "self-managed webhook certificate: {err}"
                    );
                }
                tokio::time::sleep(interval).await;
            }
        };
        tokio::select! {
            () = work => {}
            () = shutdown => {}
        }
    }
}

fn set_bundle(slot: &mut Option<ByteString>, bundle: &[u8]) -> bool {
    if slot.as_ref().is_some_and(|b| b.0 == bundle) {
        return false;
    }
    *slot = Some(ByteString(bundle.to_vec()));
    true
}
