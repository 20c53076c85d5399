#[derive(serde::Deserialize)]
pub struct Media {
    pub id: i32,
}

#[pgpubsub::trigger_channel(model = Media)]
pub struct MediaChannel;

fn main() {}
