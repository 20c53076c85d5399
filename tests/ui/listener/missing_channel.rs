#[pgpubsub::channel]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PostReads {
    pub post_id: i64,
}

#[pgpubsub::listener]
fn on_read(msg: PostReads) {
    let _ = msg;
}

fn main() {}
