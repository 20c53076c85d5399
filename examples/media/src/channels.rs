//! pgpubsub channels.

use crate::models::Media;

/// Every insert, update and delete of a `media` row becomes a stored
/// notification, claimed by exactly one listener.
#[pgpubsub::trigger_channel(model = Media, lock_notifications)]
pub struct MediaChannel;
