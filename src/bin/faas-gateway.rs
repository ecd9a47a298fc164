//! faas-gateway: thin shim over the faas library.

fn main() {
    eprintln!("faas-gateway: not yet implemented");
    std::process::exit(64);
}
