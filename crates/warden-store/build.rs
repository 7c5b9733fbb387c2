// The migrations are embedded at compile time (`sqlx::migrate!`): a new or changed file must
// rebuild the crate even when no Rust source changed.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
