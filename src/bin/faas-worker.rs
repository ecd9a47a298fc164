//! faas-worker: thin shim over the faas library.

fn main() {
    eprintln!("faas-worker: not yet implemented");
    std::process::exit(64);
}
