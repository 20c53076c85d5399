// Derived name `notification_sent`: pgpubsub's objects are `pgpubsub_notification*`.
#[pgpubsub::channel(lock_notifications)]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct NotificationSent {
    pub id: i64,
}

fn main() {}
