//! Two channel types claiming one name: both the listener and the generator
//! refuse to start, naming both types.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

diesel::table! {
    media (id) {
        id -> BigInt,
    }
}

#[derive(Queryable, Selectable, Identifiable, Deserialize, Debug)]
#[diesel(table_name = media)]
pub struct Media {
    pub id: i64,
}

mod uploads {
    #[pgpubsub::trigger_channel(model = super::Media, name = "media_events")]
    pub struct MediaChannel;
}

mod messages {
    #[pgpubsub::channel(lock_notifications, name = "media_events")]
    #[derive(super::Serialize, super::Deserialize)]
    #[allow(dead_code)] // declared only to collide with `MediaChannel`
    pub struct MediaEvent {
        pub id: i64,
    }
}

#[pgpubsub::post_insert_listener(uploads::MediaChannel)]
fn on_insert(new: Media) {
    let _ = new.id;
}

#[test]
fn the_registry_names_both_types_sharing_a_channel_name() {
    let message = pgpubsub::Registry::load().unwrap_err().to_string();
    assert!(
        message.contains("two channels are named `media_events`"),
        "{message}"
    );
    assert!(
        message.contains("duplicate_names::uploads::MediaChannel"),
        "{message}"
    );
    assert!(
        message.contains("duplicate_names::messages::MediaEvent"),
        "{message}"
    );
}

#[test]
fn the_listener_refuses_to_start_before_connecting() {
    // The URL is never dialled: the registry check comes first.
    let err = pgpubsub::Listener::new("postgres://postgres@127.0.0.1:1/unused")
        .spawn()
        .err()
        .expect("a listener with duplicate channel names must not start");
    assert!(
        matches!(err, pgpubsub::Error::DuplicateChannel { .. }),
        "{err}"
    );
}

#[test]
fn the_generator_refuses_to_write_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let err = pgpubsub::Registry::load()
        .map_err(pgpubsub_diesel::Error::from)
        .and_then(|registry| pgpubsub_diesel::generate(&registry, dir.path(), false, None))
        .unwrap_err();
    assert!(err.to_string().contains("media_events"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
