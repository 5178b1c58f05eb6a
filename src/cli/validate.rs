//! `validate`: checks connection manifests offline with the webhook's rules. Takes files,
//! directories (every `*.yaml`, `*.yml` and `*.json` below them) and `-` for standard input,
//! any number of each; reports every document of every file with its position and exits 1 if
//! any document has a problem or any input cannot be read or parsed.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::api::manifest;

/// File name endings a directory is searched for.
const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Runs `validate -f …`: every input in order, every problem reported, then the verdict.
pub fn run(inputs: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    let mut all_valid = true;
    for input in inputs {
        let files = match expand(input) {
            Ok(files) => files,
            Err(message) => {
                let _ = writeln!(err, "error: {message}");
                all_valid = false;
                continue;
            }
        };
        for file in files {
            let source = file.display().to_string();
            let text = match read(&file) {
                Ok(text) => text,
                Err(e) => {
                    let _ = writeln!(err, "error: failed to read {source}: {e}");
                    all_valid = false;
                    continue;
                }
            };
            match validate_text(&source, &text, out) {
                Ok(valid) => all_valid &= valid,
                // The report cannot be written: stop (a closed pipe is not reported, see
                // `cli::run`).
                Err(e @ ValidateError::Write(_)) => {
                    let _ = writeln!(err, "error: {e}");
                    return ExitCode::FAILURE;
                }
                Err(e) => {
                    let _ = writeln!(err, "error: {source}: {e}");
                    all_valid = false;
                }
            }
        }
    }
    if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The files one `-f` names: `-` (standard input), a file of any name, or a directory's
/// manifests in path order.
fn expand(input: &Path) -> Result<Vec<PathBuf>, String> {
    if input == Path::new("-") || !input.is_dir() {
        return Ok(vec![input.to_path_buf()]);
    }
    let mut files = Vec::new();
    collect(input, &mut files).map_err(|e| format!("failed to read {}: {e}", input.display()))?;
    if files.is_empty() {
        return Err(format!(
            "{}: no *.yaml, *.yml or *.json file in this directory",
            input.display()
        ));
    }
    files.sort();
    Ok(files)
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e))
        {
            files.push(path);
        }
    }
    Ok(())
}

fn read(file: &Path) -> io::Result<String> {
    if file == Path::new("-") {
        let mut text = String::new();
        io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}

/// Checks `input` and prints a line per document and per problem, each starting with where the
/// document is (`file:line: document n (Kind namespace/name)`); true when all pass.
pub fn validate_text(
    source: &str,
    input: &str,
    out: &mut dyn Write,
) -> Result<bool, ValidateError> {
    let reports = manifest::validate_manifests(input)?;
    if reports.is_empty() {
        return Err(ValidateError::Empty);
    }
    let mut all_valid = true;
    for report in &reports {
        let position = match report.line {
            Some(line) => format!("{source}:{line}"),
            None => source.to_owned(),
        };
        let at = format!("{position}: document {} ({})", report.index, report.subject);
        match &report.outcome {
            manifest::DocumentOutcome::Valid => writeln!(out, "{at}: valid")?,
            manifest::DocumentOutcome::Skipped => {
                writeln!(out, "{at}: skipped, not an AmazonSellerConnection")?
            }
            manifest::DocumentOutcome::Invalid(problems) => {
                all_valid = false;
                for problem in problems {
                    writeln!(out, "{at}: {problem}")?;
                }
            }
        }
    }
    Ok(all_valid)
}

/// Input that could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// Not YAML.
    #[error(transparent)]
    Parse(#[from] manifest::ParseError),
    /// No document in the input.
    #[error("no YAML document found")]
    Empty,
    /// Writing the report failed.
    #[error("failed to write output: {0}")]
    Write(#[from] io::Error),
}
