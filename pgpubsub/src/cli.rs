//! A ready command line for the listener, to mount in the application's binary.
//!
//! ```no_run
//! use clap::Parser;
//!
//! #[derive(clap::Parser)]
//! enum Command {
//!     /// Run the pgpubsub listener.
//!     Listen(pgpubsub::cli::ListenArgs),
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     match Command::parse() {
//!         Command::Listen(args) => args.main(),
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
        let poll = Duration::try_from_secs_f64(self.poll_interval).map_err(|_| {
            crate::Error::Config(format!(
                "`--poll-interval` must be a positive number of seconds, not {}",
                self.poll_interval
            ))
        })?;
        let mut listener = Listener::new(&self.database_url)
            .workers(self.workers)
            .recover(!self.no_recover)
            .restart_on_failure(!self.no_restart_on_failure)
            .batch_size(self.batch_size)
            .poll_interval(poll);
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
