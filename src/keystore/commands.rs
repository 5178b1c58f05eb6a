//! The key and sealing subcommands: `keygen`, `seal`, `rotate-key`, `prune-keys`.

use std::io::{self, Read, Write};
use std::path::Path;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use zeroize::Zeroizing;

use super::{KeyStore, KeyStoreError, key_secret, sealed_secret};
use crate::config::{KeyLocation, KeygenArgs, SealArgs};
use crate::crypto::{
    self, Credentials, InputError, KeyError, Keyring, MAX_SECRET_INPUT_BYTES, PublicKey,
    SealContext, SecretString,
};
use crate::domain::validation::{check_dns_label, check_dns_subdomain};
use crate::names::{PUBLIC_KEY_CONFIGMAP, PUBLIC_KEY_KEY};

/// Why a key or sealing command failed. Messages name inputs, never their values.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A credential input has the wrong shape.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A flag value is unusable.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read.
    #[error("failed to read {input} from {path}: {source}")]
    Read {
        /// Which input.
        input: &'static str,
        /// From where.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The public key document is unusable.
    #[error("public key: {0}")]
    PublicKey(#[from] KeyError),
    /// The cluster could not be reached or refused.
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    /// No kubeconfig or in-cluster configuration.
    #[error("failed to connect to the cluster: {0}")]
    Connect(#[source] kube::Error),
    /// The cluster has no published public key.
    #[error("ConfigMap {0} has no {PUBLIC_KEY_KEY}: is the operator installed and started?")]
    NoPublishedKey(String),
    /// Sealing failed.
    #[error(transparent)]
    Seal(#[from] crypto::SealError),
    /// Rendering YAML failed.
    #[error("failed to render YAML: {0}")]
    Render(#[source] serde_saphyr::SerializeError),
    /// Writing the output failed.
    #[error("failed to write output: {0}")]
    Write(#[from] io::Error),
}

fn to_yaml<T: serde::Serialize>(value: &T) -> Result<String, CommandError> {
    serde_saphyr::to_string(value).map_err(CommandError::Render)
}

/// `keygen`: prints a key Secret manifest with one new key.
pub fn keygen(args: &KeygenArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    let keyring = Keyring::generate(Timestamp::now());
    let secret = key_secret(
        &args.location.operator_namespace,
        &args.location.key_secret,
        &keyring,
    );
    if let Some(path) = &args.public_key_out {
        std::fs::write(path, keyring.active().public_key().to_json()).map_err(|source| {
            CommandError::Read {
                input: "public key output",
                path: path.display().to_string(),
                source,
            }
        })?;
    }
    let yaml = Zeroizing::new(to_yaml(&secret)?);
    out.write_all(b"---\n")?;
    out.write_all(yaml.as_bytes())?;
    Ok(())
}

/// `seal`: reads the credentials, checks them, seals them and prints the Secret manifest.
pub async fn seal(args: &SealArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    check_dns_label("team", &args.team)
        .map_err(|why| CommandError::Usage(format!("--team: {why}")))?;
    check_dns_label("namespace", &args.namespace)
        .map_err(|why| CommandError::Usage(format!("--namespace: {why}")))?;
    check_dns_subdomain(&args.name).map_err(|why| CommandError::Usage(format!("--name: {why}")))?;
    let stdin_inputs = [
        Some(&args.client_secret_file),
        Some(&args.refresh_token_file),
        args.next_client_secret_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .filter(|p| p.as_os_str() == "-")
    .count();
    if stdin_inputs > 1 {
        return Err(CommandError::Usage(
            "only one secret input can come from standard input (-)".into(),
        ));
    }
    let client_secret_expires_at = args
        .client_secret_expires_at
        .as_deref()
        .map(|t| {
            t.parse::<Timestamp>().map_err(|_| {
                CommandError::Usage(format!(
                    "--client-secret-expires-at: {t:?} is not an RFC 3339 time such as 2027-05-01T00:00:00Z"
                ))
            })
        })
        .transpose()?;
    let credentials = Credentials {
        client_id: args.client_id.trim().to_owned(),
        client_secret: read_secret("--client-secret-file", &args.client_secret_file)?,
        refresh_token: read_secret("--refresh-token-file", &args.refresh_token_file)?,
        next_client_secret: args
            .next_client_secret_file
            .as_deref()
            .map(|p| read_secret("--next-client-secret-file", p))
            .transpose()?,
        client_secret_expires_at,
    };
    credentials.check([
        "--client-id",
        "--client-secret-file",
        "--refresh-token-file",
        "--next-client-secret-file",
    ])?;

    let public_key = match &args.public_key {
        // `--public-key-from-cluster=false` satisfies clap's "one of the two" rule but asks
        // for neither.
        None if !args.public_key_from_cluster() => {
            return Err(CommandError::Usage(
                "name the operator's public key: --public-key FILE or --public-key-from-cluster"
                    .into(),
            ));
        }
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| CommandError::Read {
                input: "public key",
                path: path.display().to_string(),
                source,
            })?;
            PublicKey::from_json(&text)?
        }
        None => public_key_from_cluster(&args.operator_namespace).await?,
    };
    let context = SealContext {
        team_id: &args.team,
        namespace: &args.namespace,
        secret_name: &args.name,
    };
    let envelope = crypto::seal(&public_key, &context, &credentials)?;
    let secret = sealed_secret(
        &args.namespace,
        &args.name,
        args.connection.as_deref(),
        envelope,
    );
    out.write_all(b"---\n")?;
    out.write_all(to_yaml(&secret)?.as_bytes())?;
    Ok(())
}

async fn public_key_from_cluster(namespace: &str) -> Result<PublicKey, CommandError> {
    let client = kube::Client::try_default()
        .await
        .map_err(CommandError::Connect)?;
    let configmap = Api::<ConfigMap>::namespaced(client, namespace)
        .get(PUBLIC_KEY_CONFIGMAP)
        .await
        .map_err(|source| KeyStoreError::Api {
            action: "read the public key ConfigMap",
            source,
        })?;
    let text = configmap
        .data
        .as_ref()
        .and_then(|d| d.get(PUBLIC_KEY_KEY))
        .ok_or_else(|| {
            CommandError::NoPublishedKey(format!("{namespace}/{PUBLIC_KEY_CONFIGMAP}"))
        })?;
    Ok(PublicKey::from_json(text)?)
}

/// Reads one secret input, at most 8 KiB, trimming surrounding white space (files usually end
/// with a newline). Every intermediate buffer is zeroized.
fn read_secret(input: &'static str, path: &Path) -> Result<SecretString, CommandError> {
    let mut buffer = Zeroizing::new(Vec::new());
    let limit = MAX_SECRET_INPUT_BYTES as u64 + 1;
    let read = if path.as_os_str() == "-" {
        io::stdin().lock().take(limit).read_to_end(&mut buffer)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut buffer))
    };
    read.map_err(|source| CommandError::Read {
        input,
        path: path.display().to_string(),
        source,
    })?;
    if buffer.len() > MAX_SECRET_INPUT_BYTES {
        return Err(InputError::TooLarge { input }.into());
    }
    let text = std::str::from_utf8(&buffer)
        .map_err(|_| CommandError::Usage(format!("{input}: the file is not UTF-8 text")))?;
    Ok(SecretString::new(text.trim().to_owned()))
}

async fn key_store(location: &KeyLocation) -> Result<(kube::Client, KeyStore), CommandError> {
    let client = kube::Client::try_default()
        .await
        .map_err(CommandError::Connect)?;
    let store = KeyStore::new(
        client.clone(),
        &location.operator_namespace,
        &location.key_secret,
    );
    Ok((client, store))
}

/// `rotate-key`: adds a new active key; prints its id.
pub async fn rotate_key(location: &KeyLocation, out: &mut dyn Write) -> Result<(), CommandError> {
    let (_, store) = key_store(location).await?;
    let (_, id) = store.rotate(Timestamp::now()).await?;
    writeln!(
        out,
        "added active key {id}; the operator re-seals every stored credential to it, then `prune-keys` removes the old keys"
    )?;
    Ok(())
}

/// `prune-keys`: removes keys nothing is sealed to; prints what it removed.
pub async fn prune_keys(location: &KeyLocation, out: &mut dyn Write) -> Result<(), CommandError> {
    let (client, store) = key_store(location).await?;
    let removed = store.prune(&client).await?;
    if removed.is_empty() {
        writeln!(
            out,
            "no unused keys: every inactive key still has credentials or token stores sealed to it"
        )?;
    }
    for id in removed {
        writeln!(out, "removed key {id}")?;
    }
    Ok(())
}
