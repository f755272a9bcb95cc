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
pub mod compile;
pub mod component;
pub mod inspect;
#[cfg(feature = "peer")]
pub mod matrix;
pub mod replay;
pub mod run;
pub mod sim;

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
    Sim(sim::SimCommand),
    Component(component::ComponentCommand),
    Compile(compile::CompileCommand),
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
            Command::Sim(command) => command.execute(out),
            Command::Component(command) => command.execute(out),
            Command::Compile(command) => command.execute(out),
        }
    }
}

/// The process's exit status for an error: 1 for a divergence (a replay or a workload
/// whose replies differ from what they must be) or a failed simulation, 2 for anything
/// else.
pub fn exit_status(error: &anyhow::Error) -> u8 {
    let failed_a_check = error.chain().any(|cause| {
        matches!(cause.downcast_ref(), Some(crate::Error::Divergence { .. }))
            || cause.downcast_ref::<sim::SimulationFailed>().is_some()
    });
    if failed_a_check { 1 } else { 2 }
}

/// A progress bar of `length` `unit`s on standard error, drawn only when standard error
/// is a terminal (hidden otherwise: nothing extra in a pipe or a log).
pub fn progress_bar(length: u64, unit: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{bar:40}} {{pos}}/{{len}} {unit} {{elapsed_precise}} eta {{eta}}"
    ))
    .expect("the template is valid");
    indicatif::ProgressBar::new(length).with_style(style)
}
