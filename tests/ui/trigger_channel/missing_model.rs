#[pgpubsub::trigger_channel(lock_notifications)]
pub struct MediaChannel;

fn main() {}
