#[pgpubsub::channel]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PostReads {
    pub post_id: i64,
}

#[pgpubsub::listener(PostReads)]
pub struct OnRead;

fn main() {}
