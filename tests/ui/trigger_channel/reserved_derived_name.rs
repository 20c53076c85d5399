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

// Derived name `db_version`: `pgpubsub_db_version` is pgpubsub's own function.
#[pgpubsub::trigger_channel(model = Media)]
pub struct DbVersion;

fn main() {}
