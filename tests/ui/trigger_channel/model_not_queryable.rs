use diesel::prelude::*;

diesel::table! {
    media (id) {
        id -> Int4,
        size -> Int8,
    }
}

// `Selectable` and `Identifiable`, but not `Queryable`.
#[derive(Selectable, Identifiable)]
#[diesel(table_name = media)]
pub struct Media {
    pub id: i32,
    pub size: i64,
}

#[pgpubsub::trigger_channel(model = Media)]
pub struct MediaChannel;

fn main() {}
