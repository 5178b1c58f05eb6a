//! The offline subcommands. Each returns the process exit code; `main` only parses flags and
//! calls [`run`].

pub mod validate;

use std::cell::Cell;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use crate::api;
use crate::config::{Cli, Command, OutputFormat};
use crate::domain::{Environment, marketplace};
use crate::keystore;

/// Runs one subcommand, writing its output to `out` and diagnostics to `err`.
///
/// A reader that stops early (`marketplaces -o json | head -1`) closes the pipe under the
/// command. As with other Unix tools that is not the command's failure: it stops writing, says
/// nothing more and exits 0.
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    let closed = Cell::new(false);
    let code = run_command(
        cli,
        &mut ClosedPipeAware {
            inner: out,
            closed: &closed,
        },
        &mut QuietAfterClose {
            inner: err,
            closed: &closed,
        },
    );
    if closed.get() {
        ExitCode::SUCCESS
    } else {
        code
    }
}

/// Standard output that notes when its reader has gone (a broken pipe).
struct ClosedPipeAware<'a> {
    inner: &'a mut dyn Write,
    closed: &'a Cell<bool>,
}

impl ClosedPipeAware<'_> {
    fn noted<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result
            && e.kind() == io::ErrorKind::BrokenPipe
        {
            self.closed.set(true);
        }
        result
    }
}

impl Write for ClosedPipeAware<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = self.inner.write(buf);
        self.noted(result)
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = self.inner.flush();
        self.noted(result)
    }
}

/// Diagnostics that fall silent once standard output's reader has gone: the command's
/// "failed to write output" is then no error worth reporting.
struct QuietAfterClose<'a> {
    inner: &'a mut dyn Write,
    closed: &'a Cell<bool>,
}

impl Write for QuietAfterClose<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed.get() {
            Ok(buf.len())
        } else {
            self.inner.write(buf)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn run_command(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    let result = match cli.command {
        Command::Crd { output_dir } => match output_dir {
            Some(dir) => write_crds(&dir),
            None => print_crds(out),
        },
        Command::Marketplaces { output } => print_marketplaces(output, out),
        Command::Validate { filenames } => return validate::run(&filenames, out, err),
        Command::CheckCredentials(args) => {
            return crate::lwa::check::run(&args.options(), out, err);
        }
        Command::WebhookConfiguration(args) => print_webhook_configuration(&args, out),
        Command::Run(args) => return run_operator(*args, err),
        Command::Keygen(args) => report(keystore::commands::keygen(&args, out), err),
        Command::Seal(args) => block_on(keystore::commands::seal(&args, out), err),
        Command::RotateKey(location) => {
            block_on(keystore::commands::rotate_key(&location, out), err)
        }
        Command::PruneKeys(location) => {
            block_on(keystore::commands::prune_keys(&location, out), err)
        }
        Command::Audit {
            command: crate::config::AuditCommand::Verify(args),
        } => {
            let options = crate::observability::audit::VerifyOptions {
                allow_partial_start: args.allow_partial_start(),
            };
            return crate::observability::audit::verify_command(&args.file, options, out, err);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Reported) => ExitCode::FAILURE,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `run`: the operator's main loop on a multi-threaded runtime.
fn run_operator(args: crate::config::RunArgs, err: &mut dyn Write) -> ExitCode {
    let logs =
        match crate::observability::logging::stdout_subscriber(args.log_format, &args.log_level) {
            Ok(logs) => logs,
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                return ExitCode::FAILURE;
            }
        };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = writeln!(err, "error: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::operator::run(
        args,
        logs,
        crate::operator::shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a command's error, if any, and maps it to the exit code.
fn report<E: std::fmt::Display>(
    result: Result<(), E>,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    if let Err(e) = result {
        let _ = writeln!(err, "error: {e}");
        return Err(CliError::Reported);
    }
    Ok(())
}

/// Runs an async command on a small runtime of its own.
fn block_on<E: std::fmt::Display>(
    future: impl std::future::Future<Output = Result<(), E>>,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    report(runtime.block_on(future), err)
}

/// Failures of the offline subcommands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Writing the output failed (for example a closed pipe).
    #[error("failed to write output: {0}")]
    Write(#[from] io::Error),
    /// The command already printed its error.
    #[error("reported")]
    Reported,
    /// A flag's value is unusable; the message names the flag and the fix.
    #[error("{0}")]
    Usage(String),
    /// A generated object could not be rendered as JSON.
    #[error("failed to render {what}: {source}")]
    RenderJson {
        /// What was being rendered.
        what: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// A generated object could not be rendered as YAML.
    #[error("failed to render {what}: {source}")]
    RenderYaml {
        /// What was being rendered.
        what: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_saphyr::SerializeError,
    },
}

/// `webhook-configuration`: both configurations, as YAML documents.
fn print_webhook_configuration(
    args: &crate::config::WebhookConfigurationArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    use crate::https::admission::configuration::{self, ClientTarget, Options};
    if !args.url.starts_with("https://") {
        return Err(CliError::Usage(format!(
            "--webhook-url {:?} must start with https:// (the API server calls webhooks over TLS only)",
            args.url
        )));
    }
    let mut options = Options::new(ClientTarget::Url(args.url.clone()));
    options.validating_name = args.name.clone();
    options.mutating_name = args.name.clone();
    options.timeout_seconds = args.timeout_seconds;
    options.namespaces = args.watch_namespaces.clone();
    if let Some(file) = &args.ca_file {
        let pem = std::fs::read(file)
            .map_err(|e| CliError::Usage(format!("--webhook-ca-file {}: {e}", file.display())))?;
        options.ca_bundle = Some(pem);
    }
    let render = |what: &'static str, value: serde_json::Result<serde_json::Value>| {
        let value = value.map_err(|source| CliError::RenderJson { what, source })?;
        serde_saphyr::to_string(&value).map_err(|source| CliError::RenderYaml { what, source })
    };
    let mut validating = serde_json::to_value(configuration::validating(&options));
    let mut mutating = serde_json::to_value(configuration::mutating(&options));
    for (object, kind) in [
        (&mut validating, "ValidatingWebhookConfiguration"),
        (&mut mutating, "MutatingWebhookConfiguration"),
    ] {
        if let Ok(serde_json::Value::Object(map)) = object {
            map.insert(
                "apiVersion".into(),
                "admissionregistration.k8s.io/v1".into(),
            );
            map.insert("kind".into(), kind.into());
        }
    }
    let validating = render("the ValidatingWebhookConfiguration", validating)?;
    let mutating = render("the MutatingWebhookConfiguration", mutating)?;
    write!(out, "---\n{validating}---\n{mutating}")?;
    Ok(())
}

fn print_crds(out: &mut dyn Write) -> Result<(), CliError> {
    for (_, yaml) in render_crds()? {
        out.write_all(yaml.as_bytes())?;
    }
    Ok(())
}

fn write_crds(dir: &Path) -> Result<(), CliError> {
    for (file, yaml) in render_crds()? {
        std::fs::write(dir.join(file), yaml)?;
    }
    Ok(())
}

/// Every CRD as a YAML document starting with `---`, with the file name it has under `crds/`.
pub fn render_crds() -> Result<Vec<(String, String)>, CliError> {
    api::crds()
        .into_iter()
        .map(|crd| {
            let file = format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("crd"));
            let yaml = serde_saphyr::to_string(&crd).map_err(|source| CliError::RenderYaml {
                what: "CustomResourceDefinition",
                source,
            })?;
            Ok((file, format!("---\n{yaml}")))
        })
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MarketplaceRow {
    code: &'static str,
    aliases: Vec<&'static str>,
    name: &'static str,
    marketplace_id: &'static str,
    region: &'static str,
    endpoint: &'static str,
    sandbox_endpoint: &'static str,
}

fn marketplace_rows() -> Vec<MarketplaceRow> {
    marketplace::MARKETPLACES
        .iter()
        .map(|m| MarketplaceRow {
            code: m.code,
            aliases: marketplace::aliases_of(m.code),
            name: m.name,
            marketplace_id: m.marketplace_id,
            region: m.region.code(),
            endpoint: m.endpoint(Environment::Production),
            sandbox_endpoint: m.endpoint(Environment::Sandbox),
        })
        .collect()
}

fn print_marketplaces(format: OutputFormat, out: &mut dyn Write) -> Result<(), CliError> {
    let rows = marketplace_rows();
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &rows).map_err(|source| {
                CliError::RenderJson {
                    what: "marketplace table",
                    source,
                }
            })?;
            writeln!(out)?;
        }
        OutputFormat::Table => {
            let code = |r: &MarketplaceRow| {
                std::iter::once(r.code)
                    .chain(r.aliases.iter().copied())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let width = |f: &dyn Fn(&MarketplaceRow) -> usize, header: &str| {
                rows.iter().map(f).max().unwrap_or(0).max(header.len())
            };
            let (wc, wn, wi) = (
                width(&|r| code(r).len(), "CODE"),
                width(&|r| r.name.len(), "NAME"),
                width(&|r| r.marketplace_id.len(), "MARKETPLACE ID"),
            );
            let we = width(&|r| r.endpoint.len(), "ENDPOINT");
            writeln!(
                out,
                "{:wc$}  {:wn$}  {:wi$}  REGION  {:we$}  SANDBOX ENDPOINT",
                "CODE", "NAME", "MARKETPLACE ID", "ENDPOINT"
            )?;
            for r in &rows {
                writeln!(
                    out,
                    "{:wc$}  {:wn$}  {:wi$}  {:6}  {:we$}  {}",
                    code(r),
                    r.name,
                    r.marketplace_id,
                    r.region,
                    r.endpoint,
                    r.sandbox_endpoint
                )?;
            }
        }
    }
    Ok(())
}
