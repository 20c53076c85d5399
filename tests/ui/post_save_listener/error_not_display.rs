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

pub struct ScanFailed;

#[pgpubsub::post_save_listener(MediaChannel)]
fn scan_media(new: Media) -> Result<(), ScanFailed> {
    let _ = new;
    Ok(())
}

fn main() {}
