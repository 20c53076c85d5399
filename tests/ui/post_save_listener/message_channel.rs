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

#[pgpubsub::channel]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PostReads {
    pub post_id: i64,
}

#[pgpubsub::post_save_listener(PostReads)]
fn scan_media(new: Media) {
    let _ = new;
}

fn main() {}
