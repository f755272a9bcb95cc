//! Builds the hostile test guest (`tests/hostile`) to a component, with the host's
//! guest-building code, so that the sandbox tests load a real component.

use std::path::PathBuf;

use anyhow::{Context, Result};

#[path = "../host/build/guests.rs"]
mod guests;

use guests::Guest;

const GUESTS: [Guest; 1] = [Guest {
    name: "hostile",
    package: "carapace-hostile-guest",
    features: &[],
}];

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir.parent().context("tests/ has a parent")?;
    guests::build_all(workspace, &GUESTS)
}
