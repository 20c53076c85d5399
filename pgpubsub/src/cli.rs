//! A ready command line for the listener, to mount in the application's binary.
//!
//! ```no_run
//! use clap::Parser;
//!
//! #[derive(clap::Parser)]
//! enum Command {
//!     /// Run the pgpubsub listener.
//!     Listen(pgpubsub::cli::ListenArgs),
//!     /// List, retry or purge dead notifications.
//!     Dead(pgpubsub::cli::DeadArgs),
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     match Command::parse() {
//!         Command::Listen(args) => args.main(),
//!         Command::Dead(args) => args.main(),
//!     }
//! }
//! ```

use std::process::ExitCode;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::error::Result;
use crate::listener::Listener;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `listen`: run the handlers of this binary's channels.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// The database to claim notifications from.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// A separate URL for the LISTEN session (e.g. bypassing a transaction-pooling PgBouncer).
    #[arg(long, env = "PGPUBSUB_LISTEN_URL")]
    pub listen_url: Option<String>,
    /// Serve only these channels (comma-separated or repeated); default: every channel with handlers.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub channels: Vec<String>,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Process notifications stored while no listener ran (the default; kept for django-pgpubsub parity).
    #[arg(long, conflicts_with = "no_recover")]
    pub recover: bool,
    /// Leave notifications stored before start alone.
    #[arg(long)]
    pub no_recover: bool,
    /// Stop instead of restarting a failed worker.
    #[arg(long)]
    pub no_restart_on_failure: bool,
    /// Notifications claimed per transaction.
    #[arg(long, default_value_t = 100)]
    pub batch_size: i64,
    /// Seconds between polls of an idle worker.
    #[arg(long, default_value_t = 2.0)]
    pub poll_interval: f64,
    /// Attempts before a notification is dead (channels may set their own `max_attempts`).
    #[arg(long, default_value_t = 25)]
    pub max_attempts: u32,
    /// Seconds a claimed notification stays reserved; one whose listener died is claimable again after it.
    #[arg(long, default_value_t = 30.0)]
    pub lease: f64,
    /// Seconds of handler work after which a batch commits early.
    #[arg(long, default_value_t = 1.0)]
    pub batch_time: f64,
    /// Seconds a stop waits for the notifications in hand before abandoning them (they roll back).
    #[arg(long, default_value_t = 30.0)]
    pub shutdown_timeout: f64,
    /// Log level or tracing filter (`info`, `debug`, `pgpubsub=debug,warn`); `RUST_LOG` wins when set.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl ListenArgs {
    /// The listener these arguments describe.
    pub fn listener(&self) -> Result<Listener> {
        let mut listener = Listener::new(&self.database_url)
            .workers(self.workers)
            .recover(!self.no_recover)
            .restart_on_failure(!self.no_restart_on_failure)
            .batch_size(self.batch_size)
            .poll_interval(seconds("--poll-interval", self.poll_interval)?)
            .max_attempts(self.max_attempts)
            .lease(seconds("--lease", self.lease)?)
            .batch_time(seconds("--batch-time", self.batch_time)?)
            .shutdown_timeout(seconds("--shutdown-timeout", self.shutdown_timeout)?);
        if !self.channels.is_empty() {
            listener = listener.channels(self.channels.iter().cloned());
        }
        if let Some(url) = &self.listen_url {
            listener = listener.listen_url(url);
        }
        Ok(listener)
    }

    /// Sets up logging, runs the listener until SIGINT/SIGTERM, and reports
    /// a failure on stderr with a non-zero exit code.
    pub fn main(&self) -> ExitCode {
        init_logging(&self.log_level, self.log_format);
        match self.listener().and_then(Listener::run) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {}", crate::listener::error_chain(&err));
                ExitCode::FAILURE
            }
        }
    }
}

fn seconds(flag: &str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        crate::Error::Config(format!(
            "`{flag}` must be a positive number of seconds, not {value}"
        ))
    })
}

/// `dead`: list, retry or purge dead notifications.
#[derive(Debug, Clone, clap::Args)]
pub struct DeadArgs {
    /// The database.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: DeadCommand,
}

/// A `dead` subcommand.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DeadCommand {
    /// List dead notifications: id, channel, attempts, died, last error.
    List {
        /// Only this channel's.
        #[arg(long)]
        channel: Option<String>,
    },
    /// Make dead notifications available again, with fresh attempts.
    Retry(DeadSelection),
    /// Delete dead notifications.
    Purge(DeadSelection),
}

/// Which dead notifications: exactly one of `--all`, `--channel`, `--id`.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct DeadSelection {
    /// Every dead notification.
    #[arg(long)]
    pub all: bool,
    /// The dead notifications of this channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// These ids (repeat, or comma-separate).
    #[arg(long = "id", value_delimiter = ',', num_args = 1..)]
    pub ids: Vec<i64>,
}

impl DeadSelection {
    /// As a [`crate::dead::Selection`].
    pub fn selection(&self) -> crate::dead::Selection {
        if self.all {
            crate::dead::Selection::All
        } else if let Some(channel) = &self.channel {
            crate::dead::Selection::Channel(channel.clone())
        } else {
            crate::dead::Selection::Ids(self.ids.clone())
        }
    }
}

impl DeadArgs {
    /// Runs the subcommand, printing to stdout; errors go to stderr with a
    /// non-zero exit code.
    pub fn main(&self) -> ExitCode {
        match self.run(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        }
    }

    /// Runs the subcommand, writing its report to `out`.
    pub fn run(&self, out: &mut dyn std::io::Write) -> std::result::Result<(), String> {
        let url = self
            .database_url
            .as_deref()
            .ok_or("no database: pass --database-url or set DATABASE_URL")?;
        let info = crate::connection::ConnInfo::parse(url).map_err(|err| err.to_string())?;
        let mut conn =
            crate::connection::worker(&info).map_err(|err| crate::listener::error_chain(&err))?;
        let write = |out: &mut dyn std::io::Write, line: String| {
            writeln!(out, "{line}").map_err(|err| format!("cannot write the report: {err}"))
        };
        match &self.command {
            DeadCommand::List { channel } => {
                let dead = crate::dead::list(&mut conn, channel.as_deref())
                    .map_err(|err| crate::listener::error_chain(&err))?;
                for row in &dead {
                    let error = row.last_error.as_deref().unwrap_or("").replace('\n', " ");
                    write(
                        out,
                        format!(
                            "{}\t{}\tattempts={}\tdied={}\t{}",
                            row.id,
                            row.channel,
                            row.attempts,
                            row.dead_at.to_rfc3339(),
                            error
                        ),
                    )?;
                }
                write(out, format!("{} dead", dead.len()))?;
            }
            DeadCommand::Retry(selection) => {
                let retried = crate::dead::retry(&mut conn, &selection.selection())
                    .map_err(|err| crate::listener::error_chain(&err))?;
                write(out, format!("{retried} retried"))?;
            }
            DeadCommand::Purge(selection) => {
                let purged = crate::dead::purge(&mut conn, &selection.selection())
                    .map_err(|err| crate::listener::error_chain(&err))?;
                write(out, format!("{purged} purged"))?;
            }
        }
        Ok(())
    }
}

/// Installs a `tracing` subscriber writing to stderr (does nothing when one is set).
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser)]
    enum Command {
        Listen(ListenArgs),
    }

    fn parse(args: &[&str]) -> Result<ListenArgs, clap::Error> {
        let Command::Listen(args) = Command::try_parse_from(
            ["app", "listen", "--database-url", "postgres://db"]
                .iter()
                .chain(args),
        )?;
        Ok(args)
    }

    #[test]
    fn parses_django_pgpubsub_style_flags() {
        let args = parse(&[
            "--channels",
            "media_channel,post_reads",
            "--workers",
            "4",
            "--recover",
            "--no-restart-on-failure",
            "--log-level",
            "debug",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(args.channels, ["media_channel", "post_reads"]);
        let listener = args.listener().unwrap();
        let config = listener.config();
        assert_eq!(config.workers, 4);
        assert!(config.recover);
        assert!(!config.restart_on_failure);
        assert_eq!(
            config.channels.as_deref(),
            Some(&["media_channel".to_owned(), "post_reads".to_owned()][..])
        );
        assert_eq!(args.log_format, LogFormat::Json);
    }

    #[test]
    fn no_recover_turns_recovery_off_and_conflicts_with_recover() {
        let args = parse(&["--no-recover"]).unwrap();
        assert!(!args.listener().unwrap().config().recover);
        assert!(parse(&["--recover", "--no-recover"]).is_err());
    }

    #[test]
    fn rejects_a_bad_poll_interval_with_its_value() {
        let args = parse(&["--poll-interval=-1"]).unwrap();
        let err = args.listener().unwrap_err().to_string();
        assert!(
            err.contains("--poll-interval") && err.contains("-1"),
            "{err}"
        );
    }
}
