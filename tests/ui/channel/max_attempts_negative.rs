#[pgpubsub::channel(lock_notifications, max_attempts = -1)]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PostRead {
    pub id: i64,
}

fn main() {}
