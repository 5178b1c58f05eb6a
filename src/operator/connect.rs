//! Which cluster `run` talks to, and the one line that says why it cannot.
//!
//! The cluster is chosen as kubectl chooses it: `--kubeconfig` (or `ASO_KUBECONFIG`), else the
//! files in `KUBECONFIG`, else `~/.kube/config`, else the in-cluster configuration of the pod's
//! ServiceAccount; `--context` picks a context of the kubeconfig instead of its
//! `current-context`. Each failure names what was tried, the cause (the innermost error, not
//! the chain of wrappers around it) and the fix.

use std::fmt;
use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};

use crate::config::ClusterArgs;

/// Where the client's configuration came from, as messages name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A kubeconfig: the file(s), how they were found, and the context if one was asked for.
    Kubeconfig {
        /// The path, or the paths of `KUBECONFIG` joined with `:`.
        path: String,
        /// `--kubeconfig`, `KUBECONFIG` or `the default location`.
        found_by: &'static str,
        /// `--context`, when given.
        context: Option<String>,
    },
    /// The pod's ServiceAccount (`KUBERNETES_SERVICE_HOST` is set).
    InCluster,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kubeconfig {
                path,
                found_by,
                context,
            } => {
                write!(f, "kubeconfig {path} from {found_by}")?;
                if let Some(context) = context {
                    write!(f, ", context {context}")?;
                }
                Ok(())
            }
            Self::InCluster => f.write_str("the in-cluster configuration"),
        }
    }
}

/// The fix offered whenever no cluster can be used.
pub const FIX: &str = "run `make demo` for a local control plane, or point KUBECONFIG=/path/to/kubeconfig (or --kubeconfig, --context) at a cluster";

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No kubeconfig anywhere and not in a pod.
    #[error(
        "no Kubernetes cluster to connect to: no kubeconfig found (KUBECONFIG is not set and {default} does not exist) and not running in a pod; {FIX}"
    )]
    NoConfiguration {
        /// Where the default kubeconfig would be.
        default: String,
    },
    /// A kubeconfig was named or found but cannot be used.
    #[error("cannot use the {source_desc}: {cause}; {FIX}")]
    Kubeconfig {
        /// What was tried.
        source_desc: Source,
        /// The innermost cause.
        cause: String,
    },
    /// Running in a pod, but its ServiceAccount configuration cannot be read.
    #[error(
        "cannot use the in-cluster configuration: {cause}; is the pod's ServiceAccount token mounted (automountServiceAccountToken)?"
    )]
    InCluster {
        /// The innermost cause.
        cause: String,
    },
}

/// A client and what it points at.
pub struct Connection {
    /// The API client.
    pub client: Client,
    /// The API server URL, without a trailing `/`.
    pub url: String,
    /// Where the configuration came from.
    pub source: Source,
}

/// Builds the client the flags and the environment choose (see the module docs).
pub async fn connect(args: &ClusterArgs) -> Result<Connection, ConnectError> {
    let (config, source) = configuration(args).await?;
    let url = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_owned();
    let client = Client::try_from(config).map_err(|e| ConnectError::Kubeconfig {
        source_desc: source.clone(),
        cause: cause(&e),
    })?;
    Ok(Connection {
        client,
        url,
        source,
    })
}

async fn configuration(args: &ClusterArgs) -> Result<(Config, Source), ConnectError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let from_env = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty());
    let default = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".kube/config"));
    let (found, source) = if let Some(path) = &args.kubeconfig {
        let source = kubeconfig_source(path.display().to_string(), "--kubeconfig", args);
        (Kubeconfig::read_from(path), source)
    } else if let Some(paths) = &from_env {
        let source = kubeconfig_source(paths.to_string_lossy().into_owned(), "KUBECONFIG", args);
        let read = Kubeconfig::from_env().and_then(|k| k.ok_or(KubeconfigError::FindPath));
        (read, source)
    } else if let Some(path) = default.as_ref().filter(|p| p.exists()) {
        let source = kubeconfig_source(path.display().to_string(), "the default location", args);
        (Kubeconfig::read_from(path), source)
    } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        // kube's message names the file it could not read; the innermost error would not.
        let config = Config::incluster().map_err(|e| ConnectError::InCluster {
            cause: e.to_string(),
        })?;
        return Ok((config, Source::InCluster));
    } else {
        return Err(ConnectError::NoConfiguration {
            default: default
                .map_or_else(|| "~/.kube/config".to_owned(), |p| p.display().to_string()),
        });
    };
    let unusable = |e: &(dyn std::error::Error + 'static)| ConnectError::Kubeconfig {
        source_desc: source.clone(),
        cause: cause(e),
    };
    let kubeconfig = found.map_err(|e| unusable(&e))?;
    if let Some(context) = &args.context
        && !kubeconfig.contexts.iter().any(|c| &c.name == context)
    {
        let known: Vec<&str> = kubeconfig
            .contexts
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        return Err(ConnectError::Kubeconfig {
            source_desc: source,
            cause: format!(
                "it has no context {context:?} (it has: {})",
                known.join(", ")
            ),
        });
    }
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| unusable(&e))?;
    Ok((config, source))
}

fn kubeconfig_source(path: String, found_by: &'static str, args: &ClusterArgs) -> Source {
    Source::Kubeconfig {
        path,
        found_by,
        context: args.context.clone(),
    }
}

/// The innermost error of a chain, which names what actually went wrong ("connection
/// refused"), without the wrappers' words ("ServiceError: client error (Connect)") or the OS
/// error number.
pub fn cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = err;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    let text = innermost.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    };
    // "Connection refused" reads as a clause after a colon; acronyms ("TLS …") stay.
    let mut chars = text.chars();
    match (chars.next(), text.chars().nth(1)) {
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => {
            first.to_lowercase().chain(chars).collect()
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(&'static str, Option<Box<dyn std::error::Error + 'static>>);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref()
        }
    }

    #[test]
    fn the_cause_is_the_innermost_error_without_its_os_number() {
        let refused = std::io::Error::from_raw_os_error(111);
        let chain = Wrapper(
            "ServiceError: client error (Connect)",
            Some(Box::new(Wrapper(
                "tcp connect error",
                Some(Box::new(refused)),
            ))),
        );
        assert_eq!(cause(&chain), "connection refused");
        assert_eq!(
            cause(&Wrapper("TLS handshake failed", None)),
            "TLS handshake failed"
        );
    }

    #[test]
    fn sources_name_the_file_how_it_was_found_and_the_context() {
        let source = Source::Kubeconfig {
            path: "/tmp/kc".into(),
            found_by: "KUBECONFIG",
            context: Some("staging".into()),
        };
        assert_eq!(
            source.to_string(),
            "kubeconfig /tmp/kc from KUBECONFIG, context staging"
        );
    }
}
