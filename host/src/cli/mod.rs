//! The `carapace` command line: one module per subcommand, each a clap struct with an
//! `execute` method. The binary only parses and dispatches.

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Write a line of a command's report to `out`; a failed write (standard output
/// closed: `carapace inspect DIR | head -1`) is an error, never a panic.
macro_rules! say {
    ($out:expr, $($argument:tt)*) => {{
        writeln!($out, $($argument)*)
            .map_err(|error| anyhow::anyhow!("writing to standard output: {error}"))
    }};
}

pub mod bench;
pub mod inspect;
pub mod replay;
pub mod run;

/// A deterministic, sandboxed state-machine runtime.
#[derive(Debug, Parser)]
#[command(name = "carapace", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(run::RunCommand),
    Bench(bench::BenchCommand),
    Replay(replay::ReplayCommand),
    Inspect(inspect::InspectCommand),
}

impl Cli {
    /// Run the chosen subcommand, reporting to standard output.
    pub fn execute(self) -> Result<()> {
        self.execute_to(&mut std::io::stdout().lock())
    }

    /// Run the chosen subcommand, reporting to `out`.
    pub fn execute_to(self, out: &mut dyn std::io::Write) -> Result<()> {
        match self.command {
            Command::Run(command) => command.execute(out),
            Command::Bench(command) => command.execute(out),
            Command::Replay(command) => command.execute(out),
            Command::Inspect(command) => command.execute(out),
        }
    }
}

/// The process's exit status for an error: 1 for a divergence (a replay or a workload
/// whose replies differ from what they must be), 2 for anything else.
pub fn exit_status(error: &anyhow::Error) -> u8 {
    let diverged = error
        .chain()
        .any(|cause| matches!(cause.downcast_ref(), Some(crate::Error::Divergence { .. })));
    if diverged { 1 } else { 2 }
}
