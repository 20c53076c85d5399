use diesel::prelude::*;

diesel::table! {
    media (id) {
        id -> Int4,
        size -> Int8,
    }
}

#[derive(Queryable, Selectable, Identifiable, serde::Deserialize)]
#[diesel(table_name = media)]
pub struct Media {
    pub id: i32,
    pub size: i64,
}

#[pgpubsub::trigger_channel(
    model = Media,
    name = "media_events_of_the_main_database_for_the_scanning_worker"
)]
pub struct MediaChannel;

fn main() {}
