//! faas-dispatcher: thin shim over the faas library.

fn main() {
    eprintln!("faas-dispatcher: not yet implemented");
    std::process::exit(64);
}
