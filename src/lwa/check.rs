//! `check-credentials`: one refresh-token exchange with LWA, to tell whether a set of LWA
//! credentials works before (or after) it is sealed, without ever printing a secret.
//!
//! Exit codes: 0 the credentials work; 2 LWA rejected them (terminal: someone must act);
//! 3 LWA could not be reached or failed (retriable: nothing known to be wrong with them);
//! 1 a usage error (bad flag, missing, unreadable or empty file, bad endpoint or CA file).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use jiff::Timestamp;
use zeroize::Zeroizing;

use super::client::{ErrorClass, LwaClient, LwaClientConfig, LwaError};
use crate::crypto::SecretString;
use crate::error::Categorized;
use crate::error::chain;

/// LWA accepted the credentials.
pub const EXIT_VALID: u8 = 0;
/// A usage error: flags, files, endpoint or CA file.
pub const EXIT_USAGE: u8 = 1;
/// LWA rejected the credentials.
pub const EXIT_REJECTED: u8 = 2;
/// LWA was unreachable or failed.
pub const EXIT_UNAVAILABLE: u8 = 3;

/// A secret file larger than this is not a client secret or refresh token.
const MAX_SECRET_FILE_BYTES: u64 = 16 * 1024;

/// Why the check could not say "valid".
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A secret file could not be read.
    #[error("failed to read the {what} file {path}")]
    ReadFile {
        /// Which secret.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A secret file is empty, too large or not text.
    #[error("failed to use the {what} file {path}: {reason}")]
    BadFile {
        /// Which secret.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// `--client-id` is empty.
    #[error("failed to check the credentials: --client-id is empty")]
    EmptyClientId,
    /// The async runtime could not start.
    #[error("failed to start the async runtime")]
    Runtime(#[source] io::Error),
    /// The LWA client or LWA itself failed.
    #[error(transparent)]
    Lwa(#[from] LwaError),
}

impl CheckError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CheckError::Lwa(e) => match e.class() {
                ErrorClass::Terminal => EXIT_REJECTED,
                ErrorClass::Retriable => EXIT_UNAVAILABLE,
                ErrorClass::Config => EXIT_USAGE,
            },
            _ => EXIT_USAGE,
        }
    }
}

/// What to check: the client id, the files holding the secrets, and how to reach LWA.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// The LWA client id (not a secret).
    pub client_id: String,
    /// The file holding the LWA client secret.
    pub client_secret_file: PathBuf,
    /// The file holding the seller's refresh token.
    pub refresh_token_file: PathBuf,
    /// How to reach LWA.
    pub client: LwaClientConfig,
}

/// Runs the check, printing facts to `out` and the classified error with advice to `err`.
pub fn run(args: &CheckOptions, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    match check(args) {
        Ok(report) => match report.print(out) {
            Ok(()) => ExitCode::from(EXIT_VALID),
            Err(e) => {
                let _ = writeln!(err, "error: failed to write output: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Err(e) => {
            let _ = writeln!(err, "error: {}", chain(&e));
            if let Some(advice) = advice(&e) {
                let _ = writeln!(err, "advice: {advice}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// The non-secret facts of a successful check.
struct Report {
    endpoint: String,
    token_type: String,
    lifetime_secs: u64,
    expires_at: Timestamp,
}

impl Report {
    fn print(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "credentials valid: LWA issued an access token")?;
        writeln!(out, "endpoint:   {}", self.endpoint)?;
        writeln!(out, "token type: {}", self.token_type)?;
        writeln!(out, "lifetime:   {}s", self.lifetime_secs)?;
        writeln!(out, "expires at: {}", self.expires_at)
    }
}

fn check(args: &CheckOptions) -> Result<Report, CheckError> {
    if args.client_id.trim().is_empty() {
        return Err(CheckError::EmptyClientId);
    }
    let client_secret = read_secret("client secret", &args.client_secret_file)?;
    let refresh_token = read_secret("refresh token", &args.refresh_token_file)?;
    let client = LwaClient::new(&args.client)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CheckError::Runtime)?;
    let requested_at = Timestamp::now();
    let grant = runtime.block_on(client.refresh_token_grant(
        args.client_id.trim(),
        &client_secret,
        &refresh_token,
    ))?;
    let token = grant.issued_at(requested_at);
    Ok(Report {
        endpoint: client.endpoint().to_owned(),
        lifetime_secs: token.lifetime().as_secs(),
        expires_at: token.expires_at,
        token_type: token.token_type,
    })
}

/// Reads a secret file: surrounding whitespace (a trailing newline) is not part of it. The
/// raw bytes are zeroized once the secret is taken out.
fn read_secret(what: &'static str, path: &Path) -> Result<SecretString, CheckError> {
    let bad = |reason| CheckError::BadFile {
        what,
        path: path.to_owned(),
        reason,
    };
    let read_error = |source| CheckError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > MAX_SECRET_FILE_BYTES {
        return Err(bad("it is too large to hold a single secret"));
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(read_error)?);
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("it is not UTF-8 text"))?;
    let value = text.trim();
    if value.is_empty() {
        return Err(bad("it is empty"));
    }
    Ok(SecretString::from(value))
}

/// What to do about an error, in words for the person who ran the check.
fn advice(error: &CheckError) -> Option<String> {
    let CheckError::Lwa(error) = error else {
        return None;
    };
    let text = match error.category() {
        "invalid_grant" => {
            "the refresh token is revoked, expired or was issued to another LWA app: \
             the seller must re-authorize the app (Seller Central, Manage Your Apps), and the new \
             refresh token must be sealed again"
                .to_owned()
        }
        "invalid_client" => "the client id or client secret is wrong, or the secret has expired \
             (LWA client secrets must be rotated every 180 days): check them in the app's LWA \
             credentials and seal the current secret"
            .to_owned(),
        "unauthorized_client" => "this LWA app may not use refresh tokens: check the app's \
             registration"
            .to_owned(),
        "invalid_request" | "invalid_scope" | "unsupported_grant_type" | "client_error" => {
            "LWA did not accept the request: check that --lwa-endpoint is an LWA token endpoint"
                .to_owned()
        }
        "rate_limited" => match error.retry_after() {
            Some(after) => format!(
                "LWA is rate-limiting requests: try again in {}s",
                after.as_secs()
            ),
            None => "LWA is rate-limiting requests: try again later".to_owned(),
        },
        "server_error" | "temporarily_unavailable" => {
            "LWA is failing or unavailable; nothing is known to be wrong with the credentials: \
             try again later"
                .to_owned()
        }
        "timeout" => "LWA did not answer in time: check network access to the endpoint, or \
             raise --lwa-timeout"
            .to_owned(),
        "connection" => "no connection to LWA: check DNS, egress rules and proxy settings, and \
             --lwa-ca-file if the endpoint uses a private CA"
            .to_owned(),
        "transport" | "unexpected_status" | "malformed_response" | "response_too_large" => {
            "the endpoint did not answer like LWA: check --lwa-endpoint".to_owned()
        }
        _ => return None,
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_error_class() {
        let rejected = CheckError::Lwa(LwaError::Rejected {
            status: 400,
            code: super::super::OAuthErrorCode::InvalidGrant,
        });
        assert_eq!(rejected.exit_code(), EXIT_REJECTED);
        assert!(advice(&rejected).unwrap().contains("re-authorize"));
        assert_eq!(
            CheckError::Lwa(LwaError::Timeout).exit_code(),
            EXIT_UNAVAILABLE
        );
        let config = CheckError::Lwa(LwaError::InvalidEndpoint { reason: "x" });
        assert_eq!(config.exit_code(), EXIT_USAGE);
        assert_eq!(CheckError::EmptyClientId.exit_code(), EXIT_USAGE);
    }

    #[test]
    fn secret_files_are_trimmed_and_empty_ones_refused() {
        let dir = std::env::temp_dir().join(format!("aso-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "  amzn1.oa2-cs.v1.abc\n").unwrap();
        assert_eq!(
            read_secret("client secret", &file).unwrap().expose(),
            "amzn1.oa2-cs.v1.abc"
        );
        std::fs::write(&file, "\n \n").unwrap();
        let error = read_secret("client secret", &file).unwrap_err();
        assert_eq!(error.exit_code(), EXIT_USAGE);
        assert!(error.to_string().contains("is empty"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
