//! The Login-with-Amazon token client and its error taxonomy.
//!
//! One request per call, form-encoded as LWA documents it (`POST /auth/o2/token`,
//! `application/x-www-form-urlencoded`): `grant_type=refresh_token` to turn a seller's refresh
//! token into a one-hour access token, and `grant_type=client_credentials` with a `scope` for
//! the application-level calls that rotate client secrets.
//!
//! TLS is rustls on ring. Amazon's endpoint is verified against Mozilla's root store compiled
//! into the binary (`webpki-roots`) rather than the platform's: the operator ships in minimal
//! images that may have no CA bundle at all, and a compiled-in store behaves the same in every
//! image and is pinned by `Cargo.lock`. A private or test endpoint is trusted by adding its CA
//! with [`LwaClientConfig::extra_ca_file`].
//!
//! Neither request nor response bodies are ever logged or put into an error: errors keep the
//! HTTP status and LWA's OAuth error code only (never `error_description`), and parse failures
//! say which field was wrong, never its value.

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::clock;
use super::token::TokenGrant;
use crate::crypto::SecretString;

/// LWA's token endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://api.amazon.com/auth/o2/token";
/// How long to wait for a TCP and TLS connection to LWA.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one token request may take, from connecting to the last byte of the answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest answer read: LWA's are a few hundred bytes.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The scope of the client-credentials grant that rotates an application's client secret.
pub const ROTATION_SCOPE: &str = "sellingpartnerapi::client_credential:rotation";
/// The longest `expires_in` accepted. LWA grants one hour; an answer claiming more than a day
/// would leave a token unrefreshed for that long, so it is treated as malformed.
pub const MAX_EXPIRES_IN: Duration = Duration::from_secs(24 * 60 * 60);

/// Every category an [`LwaError`] can have ([`Categorized::category`](crate::error::Categorized::category)),
/// for pre-registering metric label values.
pub const CATEGORIES: &[&str] = &[
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "invalid_request",
    "invalid_scope",
    "unsupported_grant_type",
    "client_error",
    "incomplete_credentials",
    "server_error",
    "temporarily_unavailable",
    "rate_limited",
    "timeout",
    "connection",
    "transport",
    "unexpected_status",
    "malformed_response",
    "response_too_large",
    "config",
];

/// How the client reaches LWA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LwaClientConfig {
    /// The token endpoint: `https://…`, or `http://` to a loopback address only (tests).
    pub endpoint: String,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// How long a whole request may take.
    pub timeout: Duration,
    /// The largest answer body read.
    pub max_response_bytes: usize,
    /// A PEM file of extra CA certificates to trust besides Mozilla's roots.
    pub extra_ca_file: Option<PathBuf>,
}

impl Default for LwaClientConfig {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            extra_ca_file: None,
        }
    }
}

/// The OAuth 2.0 error codes LWA answers with (RFC 6749 §5.2, plus §4.1.2.1's server codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OAuthErrorCode {
    /// The refresh token is revoked, expired, or was issued to another client.
    InvalidGrant,
    /// The client id or secret is wrong or expired.
    InvalidClient,
    /// The client may not use this grant type.
    UnauthorizedClient,
    /// A parameter is missing, repeated or malformed.
    InvalidRequest,
    /// The requested scope is unknown or not allowed.
    InvalidScope,
    /// LWA does not support the grant type.
    UnsupportedGrantType,
    /// LWA failed internally.
    ServerError,
    /// LWA is overloaded or in maintenance.
    TemporarilyUnavailable,
    /// A code not listed here (kept only as this variant: the text is not ours to log).
    Other,
}

impl OAuthErrorCode {
    /// Maps LWA's `error` field.
    pub fn parse(code: &str) -> Self {
        match code {
            "invalid_grant" => Self::InvalidGrant,
            "invalid_client" => Self::InvalidClient,
            "unauthorized_client" => Self::UnauthorizedClient,
            "invalid_request" => Self::InvalidRequest,
            "invalid_scope" => Self::InvalidScope,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "server_error" => Self::ServerError,
            "temporarily_unavailable" => Self::TemporarilyUnavailable,
            _ => Self::Other,
        }
    }

    /// The code as LWA spells it (`other` for unlisted codes).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InvalidGrant => "invalid_grant",
            Self::InvalidClient => "invalid_client",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidScope => "invalid_scope",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::Other => "other",
        }
    }
}

impl std::fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an error is worth retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The credentials or the request are wrong: retrying cannot help until they change.
    Terminal,
    /// LWA or the path to it failed: retry later with backoff.
    Retriable,
    /// The client is misconfigured (endpoint, CA file): fix the configuration.
    Config,
}

/// Failures of a token request, or of setting up the client.
#[derive(Debug, thiserror::Error)]
pub enum LwaError {
    /// LWA refused the request with a 4xx status: terminal.
    #[error(
        "failed to obtain an LWA access token: LWA rejected the request with HTTP {status} ({code})"
    )]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// LWA's OAuth error code.
        code: OAuthErrorCode,
    },
    /// A required credential is empty, so no request was sent: terminal.
    #[error("failed to obtain an LWA access token: the {field} is empty")]
    IncompleteCredentials {
        /// Which credential (`client id`, `client secret`, `refresh token`, `scope`).
        field: &'static str,
    },
    /// LWA failed (5xx, `server_error`, `temporarily_unavailable`): retriable.
    #[error("failed to obtain an LWA access token: LWA is unavailable (HTTP {status}{})", code.map(|c| format!(", {c}")).unwrap_or_default())]
    Unavailable {
        /// The HTTP status.
        status: u16,
        /// LWA's OAuth error code, when the body had one.
        code: Option<OAuthErrorCode>,
        /// LWA's `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// LWA answered 429 Too Many Requests: retriable.
    #[error("failed to obtain an LWA access token: LWA is rate-limiting requests (HTTP 429)")]
    RateLimited {
        /// LWA's `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// The connection or the whole request took too long (or LWA answered 408): retriable.
    #[error("failed to obtain an LWA access token: the request timed out")]
    Timeout,
    /// No connection to LWA could be made (DNS, TCP, TLS): retriable.
    #[error("failed to connect to LWA")]
    Connect {
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The connection broke while sending or reading: retriable.
    #[error("failed to exchange a request with LWA")]
    Transport {
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// An HTTP status LWA does not document (1xx, 3xx): retriable. Redirects are not
    /// followed: the credentials must go to the configured endpoint only.
    #[error("failed to obtain an LWA access token: unexpected HTTP {status}")]
    UnexpectedStatus {
        /// The HTTP status.
        status: u16,
    },
    /// A success answer that is not a token (bad JSON, missing or odd fields): retriable.
    #[error("failed to read the LWA answer: {what}")]
    Malformed {
        /// What is wrong, never the offending value.
        what: &'static str,
    },
    /// The answer exceeded the size limit: retriable.
    #[error("failed to read the LWA answer: it is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The endpoint is not acceptable.
    #[error("failed to configure the LWA client: the endpoint {reason}")]
    InvalidEndpoint {
        /// Why.
        reason: &'static str,
    },
    /// The extra CA file could not be read.
    #[error("failed to read the LWA CA file {path}")]
    ReadCaFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The extra CA file holds no usable certificate.
    #[error("failed to load the LWA CA file {path}: {reason}")]
    InvalidCaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// The HTTP client could not be built.
    #[error("failed to build the LWA HTTP client")]
    BuildClient {
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl LwaError {
    /// Whether retrying can help.
    pub fn class(&self) -> ErrorClass {
        match self {
            LwaError::Rejected { .. } | LwaError::IncompleteCredentials { .. } => {
                ErrorClass::Terminal
            }
            LwaError::Unavailable { .. }
            | LwaError::RateLimited { .. }
            | LwaError::Timeout
            | LwaError::Connect { .. }
            | LwaError::Transport { .. }
            | LwaError::UnexpectedStatus { .. }
            | LwaError::Malformed { .. }
            | LwaError::TooLarge { .. } => ErrorClass::Retriable,
            LwaError::InvalidEndpoint { .. }
            | LwaError::ReadCaFile { .. }
            | LwaError::InvalidCaFile { .. }
            | LwaError::BuildClient { .. } => ErrorClass::Config,
        }
    }

    /// LWA's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LwaError::Unavailable { retry_after, .. } | LwaError::RateLimited { retry_after } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// Whether LWA (or the path to it) is failing, as opposed to answering: what the circuit
    /// breaker counts.
    pub fn is_outage(&self) -> bool {
        self.class() == ErrorClass::Retriable
    }
}

impl crate::error::Categorized for LwaError {
    fn category(&self) -> &'static str {
        match self {
            LwaError::Rejected { code, .. } => match code {
                OAuthErrorCode::InvalidGrant
                | OAuthErrorCode::InvalidClient
                | OAuthErrorCode::UnauthorizedClient
                | OAuthErrorCode::InvalidRequest
                | OAuthErrorCode::InvalidScope
                | OAuthErrorCode::UnsupportedGrantType => code.as_str(),
                OAuthErrorCode::ServerError
                | OAuthErrorCode::TemporarilyUnavailable
                | OAuthErrorCode::Other => "client_error",
            },
            LwaError::IncompleteCredentials { .. } => "incomplete_credentials",
            LwaError::Unavailable {
                code: Some(OAuthErrorCode::TemporarilyUnavailable),
                ..
            } => "temporarily_unavailable",
            LwaError::Unavailable { .. } => "server_error",
            LwaError::RateLimited { .. } => "rate_limited",
            LwaError::Timeout => "timeout",
            LwaError::Connect { .. } => "connection",
            LwaError::Transport { .. } => "transport",
            LwaError::UnexpectedStatus { .. } => "unexpected_status",
            LwaError::Malformed { .. } => "malformed_response",
            LwaError::TooLarge { .. } => "response_too_large",
            LwaError::InvalidEndpoint { .. }
            | LwaError::ReadCaFile { .. }
            | LwaError::InvalidCaFile { .. }
            | LwaError::BuildClient { .. } => "config",
        }
    }
}

/// Classifies a non-success answer from its status, OAuth error code and `Retry-After`.
pub fn classify_failure(
    status: u16,
    code: Option<OAuthErrorCode>,
    retry_after: Option<Duration>,
) -> LwaError {
    match (status, code) {
        (429, _) => LwaError::RateLimited { retry_after },
        // 408 Request Timeout is a 4xx by number but a transient condition by meaning:
        // treating it as terminal would stop a healthy connection until its credentials change.
        (408, _) => LwaError::Timeout,
        (
            _,
            Some(code @ (OAuthErrorCode::ServerError | OAuthErrorCode::TemporarilyUnavailable)),
        ) => LwaError::Unavailable {
            status,
            code: Some(code),
            retry_after,
        },
        (500..=599, code) => LwaError::Unavailable {
            status,
            code,
            retry_after,
        },
        (400..=499, code) => LwaError::Rejected {
            status,
            code: code.unwrap_or(OAuthErrorCode::Other),
        },
        _ => LwaError::UnexpectedStatus { status },
    }
}

/// Parses `Retry-After`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3), relative to `now`.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // An absurdly long number saturates; the engine caps what it honours.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    Some(clock::since(at, now))
}

/// Something that turns a refresh token into an access token: [`LwaClient`], or an in-process
/// stand-in in simulations.
pub trait TokenSource: Send + Sync + 'static {
    /// One `grant_type=refresh_token` exchange.
    fn refresh_grant(
        &self,
        client_id: &str,
        client_secret: &SecretString,
        refresh_token: &SecretString,
    ) -> impl Future<Output = Result<TokenGrant, LwaError>> + Send;
}

/// The LWA token client. Cheap to clone; share one per process (it pools connections).
#[derive(Clone, Debug)]
pub struct LwaClient {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    max_response_bytes: usize,
}

impl LwaClient {
    /// Builds a client for `config`: validates the endpoint and loads the extra CA file.
    pub fn new(config: &LwaClientConfig) -> Result<Self, LwaError> {
        let endpoint = parse_endpoint(&config.endpoint)?;
        let tls = tls_config(config.extra_ca_file.as_deref())?;
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .http1_only()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            // Credentials go to the configured endpoint and nowhere else.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "amazon-seller-operator/",
                env!("CARGO_PKG_VERSION")
            ));
        if is_loopback(&endpoint) {
            // A loopback endpoint (a local emulator or proxy) is never reached through
            // HTTPS_PROXY.
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(|e| LwaError::BuildClient {
            source: Box::new(e),
        })?;
        Ok(Self {
            http,
            endpoint,
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// The token endpoint.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// Exchanges a seller's refresh token for an access token (`grant_type=refresh_token`).
    pub async fn refresh_token_grant(
        &self,
        client_id: &str,
        client_secret: &SecretString,
        refresh_token: &SecretString,
    ) -> Result<TokenGrant, LwaError> {
        require(client_id.is_empty(), "client id")?;
        require(client_secret.is_empty(), "client secret")?;
        require(refresh_token.is_empty(), "refresh token")?;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("refresh_token", refresh_token.expose())
            .append_pair("client_id", client_id)
            .append_pair("client_secret", client_secret.expose())
            .finish();
        self.request(form).await
    }

    /// Obtains an application token for `scope` (`grant_type=client_credentials`), as the
    /// client-secret rotation calls need ([`ROTATION_SCOPE`]).
    pub async fn client_credentials_grant(
        &self,
        client_id: &str,
        client_secret: &SecretString,
        scope: &str,
    ) -> Result<TokenGrant, LwaError> {
        require(client_id.is_empty(), "client id")?;
        require(client_secret.is_empty(), "client secret")?;
        require(scope.is_empty(), "scope")?;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("scope", scope)
            .append_pair("client_id", client_id)
            .append_pair("client_secret", client_secret.expose())
            .finish();
        self.request(form).await
    }

    /// Sends one form. The body moves into the HTTP stack as its only copy: it cannot be
    /// zeroized once handed over, so no second copy is made on our side.
    async fn request(&self, form: String) -> Result<TokenGrant, LwaError> {
        let response = self
            .http
            .post(self.endpoint.clone())
            .header(
                CONTENT_TYPE,
                "application/x-www-form-urlencoded;charset=UTF-8",
            )
            .header(ACCEPT, "application/json")
            .body(form)
            .send()
            .await
            .map_err(from_reqwest)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Timestamp::now()));
        let body = read_limited(response, self.max_response_bytes).await?;
        if (200..300).contains(&status) {
            parse_grant(&body)
        } else {
            Err(classify_failure(
                status,
                parse_error_code(&body),
                retry_after,
            ))
        }
    }
}

impl TokenSource for LwaClient {
    fn refresh_grant(
        &self,
        client_id: &str,
        client_secret: &SecretString,
        refresh_token: &SecretString,
    ) -> impl Future<Output = Result<TokenGrant, LwaError>> + Send {
        self.refresh_token_grant(client_id, client_secret, refresh_token)
    }
}

fn require(missing: bool, field: &'static str) -> Result<(), LwaError> {
    if missing {
        Err(LwaError::IncompleteCredentials { field })
    } else {
        Ok(())
    }
}

fn from_reqwest(error: reqwest::Error) -> LwaError {
    if error.is_timeout() {
        LwaError::Timeout
    } else if error.is_connect() {
        LwaError::Connect { source: error }
    } else {
        LwaError::Transport { source: error }
    }
}

/// Reads at most `limit` bytes into a buffer reserved once (no reallocation leaves an
/// unzeroized copy of the token behind) and zeroized on drop.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, LwaError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(LwaError::TooLarge { limit });
    }
    let mut body = Zeroizing::new(Vec::with_capacity(limit));
    while let Some(chunk) = response.chunk().await.map_err(from_reqwest)? {
        if body.len() + chunk.len() > limit {
            return Err(LwaError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Deserialize)]
struct SuccessBody {
    access_token: Option<SecretString>,
    token_type: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<String>,
}

/// Parses a success answer. serde's messages can quote the offending value, which may be the
/// token, so they are replaced by a fixed description.
fn parse_grant(body: &[u8]) -> Result<TokenGrant, LwaError> {
    let parsed: SuccessBody = serde_json::from_slice(body).map_err(|_| LwaError::Malformed {
        what: "the body is not a JSON token response",
    })?;
    let access_token =
        parsed
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or(LwaError::Malformed {
                what: "access_token is missing or empty",
            })?;
    let token_type = parsed
        .token_type
        .filter(|t| !t.is_empty() && t.len() <= 32 && t.bytes().all(|b| b.is_ascii_alphanumeric()))
        .ok_or(LwaError::Malformed {
            what: "token_type is missing or not a short alphanumeric word",
        })?;
    let expires_in = parsed
        .expires_in
        .map(Duration::from_secs)
        .filter(|d| !d.is_zero() && *d <= MAX_EXPIRES_IN)
        .ok_or(LwaError::Malformed {
            what: "expires_in is missing, zero or longer than a day",
        })?;
    Ok(TokenGrant {
        access_token,
        token_type,
        expires_in,
    })
}

fn parse_error_code(body: &[u8]) -> Option<OAuthErrorCode> {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()?
        .error
        .map(|code| OAuthErrorCode::parse(&code))
}

fn parse_endpoint(endpoint: &str) -> Result<reqwest::Url, LwaError> {
    let url = reqwest::Url::parse(endpoint).map_err(|_| LwaError::InvalidEndpoint {
        reason: "is not an absolute URL",
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        // Never echoed back: the userinfo would be a credential.
        return Err(LwaError::InvalidEndpoint {
            reason: "must not contain a user name or password",
        });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(LwaError::InvalidEndpoint {
            reason: "has no host",
        });
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(LwaError::InvalidEndpoint {
            reason: "must use https (plain http is allowed to a loopback address only)",
        }),
        _ => Err(LwaError::InvalidEndpoint {
            reason: "must use https",
        }),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

fn tls_config(extra_ca_file: Option<&Path>) -> Result<rustls::ClientConfig, LwaError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca_file {
        let invalid = |reason| LwaError::InvalidCaFile {
            path: path.to_owned(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|source| LwaError::ReadCaFile {
            path: path.to_owned(),
            source,
        })?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|_| invalid("it is not a PEM certificate bundle"))?;
            roots
                .add(cert)
                .map_err(|_| invalid("a certificate in it cannot be a trust anchor"))?;
            added += 1;
        }
        if added == 0 {
            return Err(invalid("it holds no PEM certificate"));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LwaError::BuildClient {
            source: Box::new(e),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Categorized;

    #[test]
    fn terminal_codes_are_terminal_with_their_own_category() {
        for (code, category) in [
            ("invalid_grant", "invalid_grant"),
            ("invalid_client", "invalid_client"),
            ("unauthorized_client", "unauthorized_client"),
            ("invalid_request", "invalid_request"),
            ("invalid_scope", "invalid_scope"),
            ("unsupported_grant_type", "unsupported_grant_type"),
            ("access_denied", "client_error"),
        ] {
            let status = if code == "invalid_client" { 401 } else { 400 };
            let error = classify_failure(status, Some(OAuthErrorCode::parse(code)), None);
            assert_eq!(error.class(), ErrorClass::Terminal, "{code}");
            assert_eq!(error.category(), category, "{code}");
        }
        let error = classify_failure(403, None, None);
        assert_eq!(
            (error.class(), error.category()),
            (ErrorClass::Terminal, "client_error")
        );
    }

    #[test]
    fn server_failures_and_throttling_are_retriable() {
        let after = Some(Duration::from_secs(9));
        for (status, code, category) in [
            (500, None, "server_error"),
            (503, None, "server_error"),
            (502, Some("invalid_grant"), "server_error"),
            (400, Some("server_error"), "server_error"),
            (
                503,
                Some("temporarily_unavailable"),
                "temporarily_unavailable",
            ),
            (429, None, "rate_limited"),
            (429, Some("invalid_request"), "rate_limited"),
            (408, None, "timeout"),
            (302, None, "unexpected_status"),
        ] {
            let error = classify_failure(status, code.map(OAuthErrorCode::parse), after);
            assert_eq!(error.class(), ErrorClass::Retriable, "{status} {code:?}");
            assert_eq!(error.category(), category, "{status} {code:?}");
            assert!(CATEGORIES.contains(&error.category()));
        }
        assert_eq!(classify_failure(429, None, after).retry_after(), after);
        assert_eq!(classify_failure(503, None, after).retry_after(), after);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = Timestamp::from_second(784_111_777).unwrap(); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:40:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn a_success_body_becomes_a_grant() {
        let body = br#"{"access_token":"Atza|IwEBIA","refresh_token":"Atzr|x","token_type":"bearer","expires_in":3600}"#;
        let grant = parse_grant(body).unwrap();
        assert_eq!(grant.access_token.expose(), "Atza|IwEBIA");
        assert_eq!(grant.token_type, "bearer");
        assert_eq!(grant.expires_in, Duration::from_secs(3600));
    }

    #[test]
    fn malformed_success_bodies_never_quote_the_token() {
        for body in [
            &br#"{"access_token":"Atza|SECRET","token_type":"bearer","expires_in":"Atza|SECRET"}"#
                [..],
            br#"{"access_token":"Atza|SECRET","token_type":"bearer"}"#,
            br#"{"access_token":"Atza|SECRET","token_type":"Atza|SECRET","expires_in":3600}"#,
            br#"{"access_token":"","token_type":"bearer","expires_in":3600}"#,
            br#"{"access_token":"Atza|SECRET","token_type":"bearer","expires_in":0}"#,
            br#"{"access_token":"Atza|SECRET","token_type":"bearer","expires_in":31536000}"#,
            br#"{"access_token": Atza|SECRET"#,
            b"Atza|SECRET",
        ] {
            let error = parse_grant(body).unwrap_err();
            assert_eq!(error.category(), "malformed_response");
            let printed = format!("{error} {error:?}");
            assert!(!printed.contains("SECRET"), "{printed}");
        }
    }

    #[test]
    fn error_bodies_keep_only_the_code() {
        let body = br#"{"error":"invalid_grant","error_description":"The request has an invalid grant parameter : refresh_token"}"#;
        assert_eq!(parse_error_code(body), Some(OAuthErrorCode::InvalidGrant));
        assert_eq!(parse_error_code(b"<html>oops</html>"), None);
        let error = classify_failure(400, parse_error_code(body), None);
        assert!(!error.to_string().contains("parameter"), "{error}");
    }

    #[test]
    fn endpoints_must_be_https_or_loopback_http_without_userinfo() {
        for ok in [
            DEFAULT_ENDPOINT,
            "https://api.amazon.co.uk/auth/o2/token",
            "http://127.0.0.1:8080/auth/o2/token",
            "http://[::1]:8080/token",
            "http://localhost/token",
        ] {
            assert!(parse_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://api.amazon.com/auth/o2/token",
            "ftp://api.amazon.com/",
            "https://user:hunter2@api.amazon.com/",
            "api.amazon.com/auth/o2/token",
        ] {
            let error = parse_endpoint(bad).unwrap_err();
            assert_eq!(error.class(), ErrorClass::Config, "{bad}");
            assert!(!error.to_string().contains("hunter2"));
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_rejected() {
        let dir = std::env::temp_dir().join(format!("aso-lwa-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("empty.pem");
        std::fs::write(&file, "not a certificate\n").unwrap();
        let error = tls_config(Some(&file)).unwrap_err();
        assert!(matches!(error, LwaError::InvalidCaFile { .. }), "{error}");
        let error = tls_config(Some(&dir.join("missing.pem"))).unwrap_err();
        assert!(matches!(error, LwaError::ReadCaFile { .. }), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_credentials_are_refused_before_any_request() {
        let client = LwaClient::new(&LwaClientConfig {
            endpoint: "http://127.0.0.1:9/token".into(),
            ..LwaClientConfig::default()
        })
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let error = rt
            .block_on(client.refresh_token_grant(
                "id",
                &SecretString::from("s"),
                &SecretString::default(),
            ))
            .unwrap_err();
        assert_eq!(
            (error.class(), error.category()),
            (ErrorClass::Terminal, "incomplete_credentials")
        );
    }
}
