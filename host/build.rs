//! Builds every guest in [`GUESTS`] to wasm32 and componentizes it (see
//! `build/guests.rs`), so that the `carapace` binary embeds its machines and `cargo
//! test` works on a fresh machine.

use std::path::PathBuf;

use anyhow::{Context, Result};

#[path = "build/guests.rs"]
mod guests;

use guests::Guest;

/// Every guest the host embeds or the tests load. The divergent and poison echoes are
/// deliberately different versions, for tests of `replay --module` and of trap
/// recovery: kept as files, never embedded.
const GUESTS: [Guest; 5] = [
    Guest {
        name: "echo",
        package: "carapace-echo-component",
        features: &[],
    },
    Guest {
        name: "kv",
        package: "carapace-kv-component",
        features: &[],
    },
    Guest {
        name: "echo_divergent",
        package: "carapace-echo-component",
        features: &["--features", "divergent-test-version"],
    },
    Guest {
        name: "echo_poison",
        package: "carapace-echo-component",
        features: &["--features", "poison-test-version"],
    },
    Guest {
        name: "echo_order_leak",
        package: "carapace-echo-component",
        features: &["--features", "order-leak-test-version"],
    },
];

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir.parent().context("host/ has a parent")?;
    guests::build_all(workspace, &GUESTS)
}
