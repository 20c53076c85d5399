#[pgpubsub::channel]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PostReads {
    pub post_id: i64,
}

#[pgpubsub::listener(PostReads)]
fn on_read(msg: PostReads, ctx: &str) {
    let _ = (msg, ctx);
}

fn main() {}
