// Broadcast notifications are never retried: an attempt limit makes no sense.
#[pgpubsub::channel(max_attempts = 3)]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PostRead {
    pub id: i64,
}

fn main() {}
