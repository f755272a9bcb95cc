//! `carapace component --machine NAME --output FILE`: write an embedded machine's
//! component to a file, byte for byte what the host runs — for jco to transpile for a
//! browser page, or for `wasm-tools` to inspect.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

/// Write an embedded machine's component to a file.
#[derive(Debug, Args)]
pub struct ComponentCommand {
    /// The embedded machine: `echo` or `kv`.
    #[arg(long, value_name = "NAME", default_value = "echo")]
    machine: String,
    /// Where to write it.
    #[arg(long, value_name = "FILE.wasm")]
    output: PathBuf,
}

impl ComponentCommand {
    /// Write the component and say where.
    pub fn execute(self, out: &mut dyn std::io::Write) -> Result<()> {
        let bytes = crate::machines::embedded(&self.machine)?.bytes;
        std::fs::write(&self.output, bytes)
            .with_context(|| format!("writing `{}`", self.output.display()))?;
        say!(
            out,
            "wrote the `{}` component ({} bytes) to {}",
            self.machine,
            bytes.len(),
            self.output.display()
        )
    }
}
