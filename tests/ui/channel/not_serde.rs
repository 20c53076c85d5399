#[pgpubsub::channel]
pub struct PostReads {
    pub post_id: i64,
}

fn main() {}
