#[pgpubsub::channel]
pub fn post_reads() {}

fn main() {}
