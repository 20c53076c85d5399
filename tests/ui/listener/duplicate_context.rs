#[pgpubsub::channel]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PostReads {
    pub post_id: i64,
}

#[pgpubsub::listener(PostReads)]
fn on_read(msg: PostReads, ctx: &pgpubsub::Context, again: &pgpubsub::Context) {
    let _ = (msg, ctx, again);
}

fn main() {}
