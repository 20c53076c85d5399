#[pgpubsub::channel(upgrade = "row_json")]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PostReads {
    pub post_id: i64,
}

fn main() {}
