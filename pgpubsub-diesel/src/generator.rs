//! `pgpubsub-gen`: writes the Diesel migration that brings the database's
//! pgpubsub objects in line with this crate's channels and listeners.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use pgpubsub::Registry;

use crate::error::Result;
use crate::migration::{self, Diff, State};

/// The generator's command line.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "pgpubsub-gen",
    about = "Write Diesel migrations with the triggers of this crate's pgpubsub channels"
)]
pub struct GenArgs {
    /// The Diesel migrations directory [default: `migrations` in the crate].
    #[arg(long)]
    pub migrations_dir: Option<PathBuf>,
    /// Write nothing; exit with status 1 when the migrations are behind the code.
    #[arg(long)]
    pub check: bool,
    /// The migration version to use instead of the current time (`YYYY-MM-DD-HHMMSS`).
    #[arg(long)]
    pub version: Option<String>,
    /// Write a migration that drops every channel's trigger when the binary
    /// links no channel at all (without it, that is an error: usually the
    /// crate that declares them is not linked).
    #[arg(long)]
    pub drop_all_channels: bool,
}

/// What a run found and did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The migrations on disk match the code.
    UpToDate,
    /// A migration was written.
    Written {
        /// Its directory.
        path: PathBuf,
        /// What it changes.
        diff: Diff,
    },
    /// `--check` found the code ahead of the migrations.
    Behind {
        /// What a run would change.
        diff: Diff,
    },
}

/// Compares the code's registry with the migrations in `dir`, writing a new
/// migration unless `check`.
pub fn generate(
    registry: &Registry,
    dir: &Path,
    check: bool,
    version: Option<&str>,
) -> Result<Outcome> {
    generate_with(registry, dir, check, version, false)
}

/// [`generate`], and with `drop_all_channels`, also when this binary links
/// no channel while the migrations install some (a migration dropping them
/// all). Without it that case is [`Error::NoChannelsLinked`](crate::Error::NoChannelsLinked).
pub fn generate_with(
    registry: &Registry,
    dir: &Path,
    check: bool,
    version: Option<&str>,
    drop_all_channels: bool,
) -> Result<Outcome> {
    let desired = State::desired(registry)?;
    let recorded = migration::recorded(dir)?;
    if let Some(recorded) = &recorded {
        let installed = recorded.state.channel_keys();
        if !drop_all_channels && registry.channels().next().is_none() && !installed.is_empty() {
            return Err(crate::Error::NoChannelsLinked {
                channels: installed,
                path: recorded.dir.clone(),
            });
        }
    }
    if let Some(recorded) = &recorded {
        let changed = recorded.state.changed_steps(&desired);
        if !changed.is_empty() {
            return Err(crate::Error::ChangedStep {
                steps: changed,
                path: recorded.dir.clone(),
            });
        }
    }
    let recorded = recorded.map(|recorded| recorded.state).unwrap_or_default();
    let diff = recorded.diff(&desired);
    if diff.is_empty() {
        return Ok(Outcome::UpToDate);
    }
    if check {
        return Ok(Outcome::Behind { diff });
    }
    let version = match version {
        Some(version) => version.to_owned(),
        None => migration::next_version(dir, chrono::Utc::now())?,
    };
    let path = migration::write(dir, &version, &desired, &diff)?;
    Ok(Outcome::Written { path, diff })
}

/// Runs the generator with the process arguments; `manifest_dir` is the
/// crate whose `migrations/` directory is the default.
pub fn main_in(manifest_dir: &str) -> ExitCode {
    GenArgs::parse().main_in(manifest_dir)
}

impl GenArgs {
    /// Runs the generator with these arguments, printing what it did;
    /// `manifest_dir` (`env!("CARGO_MANIFEST_DIR")`) is the crate whose
    /// `migrations/` directory is the default.
    ///
    /// This is how an application's own binary offers generation as a
    /// subcommand, next to `listen`, with no library crate and no second
    /// binary:
    ///
    /// ```no_run
    /// use clap::Parser;
    ///
    /// #[derive(clap::Parser)]
    /// enum Command {
    ///     /// Run the pgpubsub listener.
    ///     Listen(pgpubsub::cli::ListenArgs),
    ///     /// Write the Diesel migration with this binary's channels' triggers.
    ///     Generate(pgpubsub_diesel::GenArgs),
    /// }
    ///
    /// fn main() -> std::process::ExitCode {
    ///     match Command::parse() {
    ///         Command::Listen(args) => args.main(),
    ///         Command::Generate(args) => args.main_in(env!("CARGO_MANIFEST_DIR")),
    ///     }
    /// }
    /// ```
    pub fn main_in(self, manifest_dir: &str) -> ExitCode {
        let dir = self
            .migrations_dir
            .clone()
            .unwrap_or_else(|| Path::new(manifest_dir).join("migrations"));
        let outcome = Registry::load()
            .map_err(crate::Error::from)
            .and_then(|registry| {
                generate_with(
                    &registry,
                    &dir,
                    self.check,
                    self.version.as_deref(),
                    self.drop_all_channels,
                )
            });
        match outcome {
            Ok(Outcome::UpToDate) => {
                println!("pgpubsub migrations in {} are up to date", dir.display());
                ExitCode::SUCCESS
            }
            Ok(Outcome::Written { path, diff }) => {
                println!("wrote {}", path.display());
                for line in &diff.summary {
                    println!("  {line}");
                }
                ExitCode::SUCCESS
            }
            Ok(Outcome::Behind { diff }) => {
                eprintln!(
                    "pgpubsub migrations in {} are behind the code; run the generator without `--check` to write them. Changes:",
                    dir.display()
                );
                for line in &diff.summary {
                    eprintln!("  {line}");
                }
                ExitCode::FAILURE
            }
            Err(err) => {
                eprintln!("error: {err}");
                let mut source = std::error::Error::source(&err);
                while let Some(cause) = source {
                    eprintln!("  caused by: {cause}");
                    source = cause.source();
                }
                ExitCode::from(2)
            }
        }
    }
}
