//! The `carapace` binary: parse, dispatch, report errors. All logic is in the library.

use clap::Parser;

// The host copies every reply out of the guest into an allocation of its own, and frees
// a group's together, where glibc's malloc took ~190 instructions each; mimalloc cut a
// 100,000-op run's allocator work about sixfold (docs/performance.md, "The host's
// allocator"). The library leaves the choice to its embedder.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match carapace::cli::Cli::parse().execute() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(carapace::cli::exit_status(&error))
        }
    }
}
