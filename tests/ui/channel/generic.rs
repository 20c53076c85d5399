#[pgpubsub::channel]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PostReads<T> {
    pub post_id: T,
}

fn main() {}
