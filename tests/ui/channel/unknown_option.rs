#[pgpubsub::channel(lock)]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PostReads {
    pub post_id: i64,
}

fn main() {}
