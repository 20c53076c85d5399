#[pgpubsub::trigger_channel(lock, name = "Media")]
pub struct MediaChannel(i32);

fn main() {}
