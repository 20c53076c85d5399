//! The generated migrations: the desired state of pgpubsub's SQL objects,
//! the state recorded in the newest generated migration, and the migration
//! that takes one to the other.

use std::fs;
use std::path::{Path, PathBuf};

use pgpubsub::Registry;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::schema;
use crate::trigger;

/// Marks a generated `up.sql`; the rest of the line is the state as JSON.
const STATE_MARKER: &str = "-- pgpubsub-state: ";
/// The suffix of generated migration directories.
const DIR_SUFFIX: &str = "_pgpubsub";

/// One SQL object (or group) the generator manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// `schema/0001` or `channel/<name>`.
    pub key: String,
    /// Creates it.
    pub up: String,
    /// Removes it.
    pub down: String,
}

impl Object {
    fn is_schema(&self) -> bool {
        self.key.starts_with("schema/")
    }
}

/// Every object, schema steps first, then channels by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The objects.
    pub objects: Vec<Object>,
}

impl State {
    /// The state the code of this binary asks for.
    pub fn desired(registry: &Registry) -> Result<State> {
        let mut objects: Vec<Object> = schema::STEPS
            .iter()
            .map(|step| Object {
                key: step.key.to_owned(),
                up: step.up.to_owned(),
                down: step.down.to_owned(),
            })
            .collect();
        for entry in registry.channels() {
            if let Some(sql) = trigger::render(entry)? {
                objects.push(Object {
                    key: format!("channel/{}", entry.def.name),
                    up: sql.create,
                    down: sql.drop,
                });
            }
        }
        Ok(State { objects })
    }

    fn get(&self, key: &str) -> Option<&Object> {
        self.objects.iter().find(|object| object.key == key)
    }

    /// The schema steps recorded in `self` whose text differs from `desired`'s:
    /// released steps are frozen, so such a difference is never migrated.
    pub fn changed_steps(&self, desired: &State) -> Vec<String> {
        self.objects
            .iter()
            .filter(|object| object.is_schema())
            .filter(|object| {
                desired
                    .get(&object.key)
                    .is_some_and(|wanted| wanted.up != object.up || wanted.down != object.down)
            })
            .map(|object| object.key.clone())
            .collect()
    }

    /// The channels whose triggers this state installs (`channel/<name>` keys).
    pub fn channel_keys(&self) -> Vec<String> {
        self.objects
            .iter()
            .filter(|object| !object.is_schema())
            .map(|object| object.key.clone())
            .collect()
    }

    /// SQL creating every object from nothing.
    pub fn create_all_sql(&self) -> String {
        State::default().diff(self).up
    }
}

/// A change between two states, as migration SQL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// What changes, one line each (`+ channel/media`, `~ channel/posts`, `- channel/old`).
    pub summary: Vec<String>,
    /// Goes from the old state to the new one.
    pub up: String,
    /// Goes back.
    pub down: String,
}

impl Diff {
    /// True when nothing changes.
    pub fn is_empty(&self) -> bool {
        self.summary.is_empty()
    }
}

impl State {
    /// The migration from `self` to `new`.
    pub fn diff(&self, new: &State) -> Diff {
        let mut diff = Diff::default();
        let mut down_parts: Vec<String> = Vec::new();
        // Removed objects go first (in reverse), so a renamed channel's trigger
        // is gone before its successor is created.
        for old in self.objects.iter().rev() {
            if new.get(&old.key).is_none() && !old.is_schema() {
                diff.summary.push(format!("- {}", old.key));
                diff.up.push_str(&old.down);
                diff.up.push('\n');
                down_parts.push(old.up.clone());
            }
        }
        for object in &new.objects {
            match self.get(&object.key) {
                None => {
                    diff.summary.push(format!("+ {}", object.key));
                    diff.up.push_str(&object.up);
                    diff.up.push('\n');
                    down_parts.push(object.down.clone());
                }
                // Schema steps are append-only: a released step never
                // changes (`changed_steps` refuses one that did).
                Some(old) if old != object && !object.is_schema() => {
                    diff.summary.push(format!("~ {}", object.key));
                    diff.up.push_str(&old.down);
                    diff.up.push_str(&object.up);
                    diff.up.push('\n');
                    down_parts.push(format!("{}{}", object.down, old.up));
                }
                Some(_) => {}
            }
        }
        for part in down_parts.iter().rev() {
            diff.down.push_str(part);
            diff.down.push('\n');
        }
        diff
    }
}

/// The newest generated migration in `dir`.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Its directory.
    pub dir: PathBuf,
    /// The state it leaves the database in.
    pub state: State,
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Migration directory names in `dir`, sorted.
fn migration_dirs(dir: &Path) -> Result<Vec<String>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io("cannot read", dir))? {
        let entry = entry.map_err(io("cannot read", dir))?;
        if entry.path().is_dir() {
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Reads the state recorded by the newest generated migration in `dir`.
pub fn recorded(dir: &Path) -> Result<Option<Recorded>> {
    let Some(name) = migration_dirs(dir)?
        .into_iter()
        .rev()
        .find(|name| name.ends_with(DIR_SUFFIX))
    else {
        return Ok(None);
    };
    let path = dir.join(&name);
    let up = path.join("up.sql");
    let text = fs::read_to_string(&up).map_err(io("cannot read", &up))?;
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix(STATE_MARKER))
        .ok_or_else(|| Error::State {
            path: up.clone(),
            message: format!("no `{}` line", STATE_MARKER.trim()),
        })?;
    let state = serde_json::from_str(line).map_err(|err| Error::State {
        path: up.clone(),
        message: err.to_string(),
    })?;
    Ok(Some(Recorded { dir: path, state }))
}

/// Diesel's two version spellings: `diesel migration generate` writes the
/// first by default, `--version` style projects often use the second.
const DASHED: &str = "%Y-%m-%d-%H%M%S";
const COMPACT: &str = "%Y%m%d%H%M%S";

/// A migration version after every existing one in `dir`, based on `now`,
/// spelled like the newest existing migration (`YYYY-MM-DD-HHMMSS` when
/// there is none).
pub fn next_version(dir: &Path, now: chrono::DateTime<chrono::Utc>) -> Result<String> {
    let mut version = now.naive_utc();
    let mut format = DASHED;
    let mut newest = None;
    for name in migration_dirs(dir)? {
        let prefix = name.split('_').next().unwrap_or_default();
        for candidate in [DASHED, COMPACT] {
            if let Ok(existing) = chrono::NaiveDateTime::parse_from_str(prefix, candidate) {
                if newest.map_or(true, |newest| existing >= newest) {
                    newest = Some(existing);
                    format = candidate;
                }
                if existing >= version {
                    version = existing + chrono::Duration::seconds(1);
                }
            }
        }
    }
    Ok(version.format(format).to_string())
}

/// Writes `diff` as migration `<version>_pgpubsub` in `dir`; returns its path.
pub fn write(dir: &Path, version: &str, state: &State, diff: &Diff) -> Result<PathBuf> {
    let path = dir.join(format!("{version}{DIR_SUFFIX}"));
    fs::create_dir_all(&path).map_err(io("cannot create", &path))?;
    let state_json = serde_json::to_string(state).map_err(|err| Error::State {
        path: path.clone(),
        message: err.to_string(),
    })?;
    let header = format!(
        "-- Generated by pgpubsub-gen from this crate's channels and listeners; do not edit.\n\
         -- Regenerate with `cargo run --bin pgpubsub-gen`.\n{}",
        diff.summary
            .iter()
            .map(|line| format!("-- {line}\n"))
            .collect::<String>()
    );
    let up = format!("{STATE_MARKER}{state_json}\n{header}\n{}", diff.up);
    let down = format!("{header}\n{}", diff.down);
    let up_path = path.join("up.sql");
    fs::write(&up_path, up).map_err(io("cannot write", &up_path))?;
    let down_path = path.join("down.sql");
    fs::write(&down_path, down).map_err(io("cannot write", &down_path))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(names: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for name in names {
            fs::create_dir_all(dir.path().join(name)).unwrap();
        }
        dir
    }

    fn at(text: &str) -> chrono::DateTime<chrono::Utc> {
        chrono::NaiveDateTime::parse_from_str(text, DASHED)
            .unwrap()
            .and_utc()
    }

    #[test]
    fn versions_follow_the_newest_existing_migration() {
        let dir = dir_with(&[
            "00000000000000_diesel_initial_setup",
            "2030-01-01-000000_future",
        ]);
        assert_eq!(
            next_version(dir.path(), at("2024-01-01-000000")).unwrap(),
            "2030-01-01-000001"
        );
    }

    #[test]
    fn compact_versions_stay_compact() {
        let dir = dir_with(&["20240101000000_create_media"]);
        assert_eq!(
            next_version(dir.path(), at("2024-06-01-120000")).unwrap(),
            "20240601120000"
        );
    }

    #[test]
    fn an_empty_directory_uses_now() {
        let dir = dir_with(&[]);
        assert_eq!(
            next_version(dir.path(), at("2024-06-01-120000")).unwrap(),
            "2024-06-01-120000"
        );
    }
}
