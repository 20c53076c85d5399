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

#[pgpubsub::post_save_listener(MediaChannel)]
async fn scan_media(old: Media, media: Media, new: Option<Media>) {
    let _ = (old, media, new);
}

fn main() {}
