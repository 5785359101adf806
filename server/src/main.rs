//! The `holdfast` binary. Everything testable lives in the library.

fn main() {
    std::process::exit(holdfast_server::cli::main());
}
