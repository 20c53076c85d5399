#[pgpubsub::channel(lock_notifications, lock_notifications = false)]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PostReads {
    pub post_id: i64,
}

fn main() {}
