//! `sqlx::migrate!` embeds the files under `migrations/` when it compiles: without this, a
//! migration added or edited after the last build would leave a binary that does not know it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
