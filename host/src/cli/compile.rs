//! `carapace compile`: precompile a machine's component into the component cache, so
//! that the next start loads native code instead of compiling (`run`, `replay`, `sim`
//! and `bench` use the cache by default).

use anyhow::{Result, bail};
use clap::Args;

use super::run::MachineArgs;

/// Precompile a component into the cache.
#[derive(Debug, Args)]
pub struct CompileCommand {
    #[command(flatten)]
    machine: MachineArgs,
}

impl CompileCommand {
    /// Compile (or find) the entry and say where it is.
    pub fn execute(self, out: &mut dyn std::io::Write) -> Result<()> {
        let Some(dir) = self.machine.cache_dir() else {
            bail!("`compile` writes to the component cache: drop `--no-cache`");
        };
        if self.machine.target == super::run::Target::Native {
            bail!("`--target native` is compiled into the host: there is nothing to precompile");
        }
        let (source, factory) = self.machine.load("echo")?;
        let loaded = factory.loaded();
        let cache = loaded
            .cache
            .as_ref()
            .expect("a component loaded through the cache");
        say!(
            out,
            "{}: {cache}, in {:.2} ms; the cache is {}",
            source.describe(),
            loaded.took.as_secs_f64() * 1e3,
            dir.display()
        )
    }
}
