//! pgpubsub handlers.

use std::io::Write;

use crate::channels::MediaChannel;
use crate::models::Media;

/// Scans every new or changed media file (here: says so on stdout).
#[pgpubsub::post_save_listener(MediaChannel)]
fn scan_media(old: Option<Media>, new: Media) {
    match old {
        None => println!("Perform virus scan on the new media {new:?}."),
        Some(_) => println!("Media updated; scan {new:?} all over again."),
    }
    // Stdout is block-buffered when it is a pipe; show the line now.
    if let Err(err) = std::io::stdout().flush() {
        eprintln!("cannot flush stdout: {err}");
    }
}
