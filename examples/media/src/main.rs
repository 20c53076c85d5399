//! The media application's binary: `listen` runs the pgpubsub listener,
//! `generate` writes its trigger migration, `demo` shows the whole round trip on a database of its own.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Text};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use pgpubsub::TriggerChannel;

use media_example::channels::MediaChannel;
use media_example::models::{Media, NewMedia};
use media_example::schema::media;

/// The migrations of `migrations/`: the `media` table and the generated
/// pgpubsub migration.
const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The demo's database when neither `--database-url` nor `DATABASE_URL` is given.
const DEFAULT_DEMO_URL: &str = "postgres://postgres@127.0.0.1:5432/pgpubsub_media_demo";

#[derive(Debug, clap::Parser)]
#[command(name = "media-example", about = "pgpubsub's media example", version)]
enum Command {
    /// Run the pgpubsub listener: scan media as rows change.
    Listen(pgpubsub::cli::ListenArgs),
    /// Write the Diesel migration with this binary's pgpubsub triggers into
    /// `migrations/` (`--check`: only say whether it is behind the code).
    Generate(pgpubsub_diesel::GenArgs),
    /// Create the database if missing, migrate it, insert and update a media
    /// row, and watch the listener scan it twice.
    Demo(DemoArgs),
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// The database to use; created when missing.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DEMO_URL)]
    database_url: String,
    /// Seconds to wait for the listener before giving up.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

fn main() -> ExitCode {
    match Command::parse() {
        Command::Listen(args) => args.main(),
        Command::Generate(args) => args.main_in(env!("CARGO_MANIFEST_DIR")),
        Command::Demo(args) => match demo(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("demo failed: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    let url = args.database_url.as_str();
    let timeout = Duration::from_secs(args.timeout);
    pgpubsub::cli::init_logging("warn", pgpubsub::cli::LogFormat::Text);

    create_database_if_missing(url)?;
    let mut conn = PgConnection::establish(url)
        .with_context(|| format!("cannot connect to {}", redact(url)))?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|err| anyhow!(err))
        .context("cannot apply the migrations")?;
    for version in &applied {
        println!("Applied migration {version}.");
    }

    let handle = pgpubsub::Listener::new(url)
        .channels([MediaChannel::NAME])
        .spawn()
        .context("cannot start the listener")?;
    if !handle.wait_listening(timeout) {
        bail!("the listener did not start listening within {timeout:?}");
    }
    println!("Listening on `{}`.", MediaChannel::NAME);

    let row: Media = diesel::insert_into(media::table)
        .values(&NewMedia {
            name: "holiday.mp4",
            size: 1_048_576,
        })
        .returning(Media::as_returning())
        .get_result(&mut conn)
        .context("cannot insert a media row")?;
    println!("Inserted media {}.", row.id);
    diesel::update(&row)
        .set(media::size.eq(row.size * 2))
        .execute(&mut conn)
        .context("cannot update the media row")?;
    println!("Updated media {}.", row.id);
    flush_stdout();

    // Both notifications handled: none stored, and this listener ran both.
    let deadline = Instant::now() + timeout;
    loop {
        let pending = pending_notifications(&mut conn)?;
        let completed = handle
            .stats()
            .completed
            .load(std::sync::atomic::Ordering::Relaxed);
        if pending == 0 && completed >= 2 {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {timeout:?}: {pending} notification(s) still stored, \
                 {completed} of 2 handled by this listener (is another listener serving \
                 this database, or did the handler fail? see `pgpubsub_notification.last_error`)"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    handle.shutdown().context("the listener failed")?;
    println!(
        "Demo finished: media {} was scanned on insert and on update.",
        row.id
    );
    flush_stdout();
    Ok(())
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    exists: bool,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// Creates the database `url` names, through the server's `postgres` database.
fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let (admin_url, name) = split_database(url)?;
    let mut admin = PgConnection::establish(&admin_url).with_context(|| {
        format!(
            "cannot connect to the PostgreSQL server at {} (is it running?)",
            redact(&admin_url)
        )
    })?;
    let exists = |admin: &mut PgConnection| -> anyhow::Result<bool> {
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
            .bind::<Text, _>(&name)
            .get_result::<Exists>(admin)
            .map(|row| row.exists)
            .context("cannot look the database up in pg_database")
    };
    if exists(&mut admin)? {
        return Ok(());
    }
    let created = admin.batch_execute(&format!("CREATE DATABASE {}", pgpubsub::quote_ident(&name)));
    match created {
        Ok(()) => {
            println!("Created database {name}.");
            Ok(())
        }
        // Someone else created it meanwhile.
        Err(_) if exists(&mut admin)? => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot create database {name}")),
    }
}

/// Splits `postgres://user@host:port/db?query` into the URL of the server's
/// `postgres` database and the (percent-decoded) name `db`.
fn split_database(url: &str) -> anyhow::Result<(String, String)> {
    let scheme_end = url
        .find("://")
        .map(|i| i + 3)
        .filter(|_| url.starts_with("postgres://") || url.starts_with("postgresql://"))
        .ok_or_else(|| {
            anyhow!("the database URL must look like postgres://user@host:port/database")
        })?;
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let slash = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .ok_or_else(|| anyhow!("the database URL {} names no database", redact(url)))?;
    let name = percent_decode(&base[slash + 1..])?;
    if name.is_empty() {
        bail!("the database URL {} names no database", redact(url));
    }
    let admin = match query {
        Some(query) => format!("{}/postgres?{query}", &base[..slash]),
        None => format!("{}/postgres", &base[..slash]),
    };
    Ok((admin, name))
}

fn percent_decode(text: &str) -> anyhow::Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| anyhow!("bad percent-encoding in the database name `{text}`"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("the database name is not UTF-8")
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!(
                "{}{user}:***@{host}{}",
                &url[..scheme_end],
                &url[authority_end..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn pending_notifications(conn: &mut PgConnection) -> anyhow::Result<i64> {
    diesel::sql_query("SELECT count(*) AS count FROM pgpubsub_notification")
        .get_result::<Count>(conn)
        .map(|row| row.count)
        .context("cannot count the stored notifications")
}

fn flush_stdout() {
    if let Err(err) = std::io::stdout().flush() {
        eprintln!("cannot flush stdout: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_database_off_the_url() {
        assert_eq!(
            split_database("postgres://postgres@127.0.0.1:5432/pgpubsub_media_demo").unwrap(),
            (
                "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
                "pgpubsub_media_demo".to_owned()
            )
        );
        assert_eq!(
            split_database("postgresql://u:p@h/my%20db?sslmode=disable").unwrap(),
            (
                "postgresql://u:p@h/postgres?sslmode=disable".to_owned(),
                "my db".to_owned()
            )
        );
        assert!(split_database("postgres://h:5432").is_err());
        assert!(split_database("postgres://h:5432/").is_err());
        assert!(split_database("host=localhost dbname=x").is_err());
    }

    #[test]
    fn redacts_the_password() {
        assert_eq!(
            redact("postgres://u:secret@h:1/db"),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
