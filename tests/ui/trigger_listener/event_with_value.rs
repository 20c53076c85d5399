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

#[pgpubsub::trigger_channel(model = Media)]
pub struct MediaChannel;

#[pgpubsub::trigger_listener(MediaChannel, insert = true)]
fn big_media(new: Media) {
    let _ = new;
}

fn main() {}
