//! Command-line flags. Every flag has a doc comment (shown by `--help`) and an `ASO_…`
//! environment variable, so the same settings work from a shell, a Deployment or Helm values.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Keeps Amazon SP-API seller credentials sealed in Kubernetes and publishes fresh
/// Login-with-Amazon access tokens to a Team's gateways.
#[derive(Debug, Parser)]
#[command(name = "amazon-seller-operator", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every CustomResourceDefinition the operator serves, as multi-document YAML.
    Crd {
        /// Write one `<crd name>.yaml` file per CRD into this directory instead of printing.
        #[arg(long, env = "ASO_OUTPUT_DIR")]
        output_dir: Option<PathBuf>,
    },
    /// Print the marketplace table: code, name, marketplace id, region and SP-API endpoints.
    Marketplaces {
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table, env = "ASO_OUTPUT")]
        output: OutputFormat,
    },
    /// Check AmazonSellerConnection manifests offline with the rules the webhook applies.
    ///
    /// Prints one line per problem with its field path and exits 1 if any document has a
    /// problem; other kinds are reported and skipped.
    Validate {
        /// The YAML file to check (multi-document allowed), or `-` for standard input.
        #[arg(long = "filename", short = 'f', env = "ASO_FILENAME")]
        filename: PathBuf,
    },
}

/// How `marketplaces` prints the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// A JSON array for scripts.
    Json,
}
