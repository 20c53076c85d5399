use diesel::prelude::*;

diesel::table! {
    media (id) {
        id -> Int4,
        size -> Int8,
    }
}

#[derive(Queryable, Selectable, Identifiable)]
#[diesel(table_name = media)]
pub struct Media {
    pub id: i32,
    pub size: i64,
}

#[pgpubsub::trigger_channel(model = Media, lock_notifications, max_attempts = "5")]
pub struct MediaChannel;

fn main() {}
