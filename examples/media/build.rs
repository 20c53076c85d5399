//! Rebuilds the binary when a migration is added, so `embed_migrations!`
//! embeds the migrations on disk.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
