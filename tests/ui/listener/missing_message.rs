#[pgpubsub::channel]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PostReads {
    pub post_id: i64,
}

#[pgpubsub::listener(PostReads)]
fn on_read(conn: &mut diesel::PgConnection) {
    let _ = conn;
}

fn main() {}
