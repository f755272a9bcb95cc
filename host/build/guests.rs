//! Building guest components from a build script, shared by the host's (the machines it
//! embeds, and test versions of them) and the tests' (hostile guests).
//!
//! After wasmtime's `crates/test-programs/artifacts`: a nested cargo with its own
//! target dir inside `OUT_DIR` (the outer build holds the lock on the shared one), the
//! core module turned into a component with `wit-component`, and `rerun-if-changed`
//! for every source file the nested build's dep-info lists.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// A guest component to build.
pub struct Guest {
    /// Names the component: `OUT_DIR/{name}.component.wasm`, and the environment
    /// variable `CARAPACE_{NAME}_COMPONENT` holding its path.
    pub name: &'static str,
    /// The cargo package of its component crate.
    pub package: &'static str,
    /// Extra cargo arguments.
    pub features: &'static [&'static str],
}

/// Build every guest of `guests` from the workspace at `workspace`, componentize it,
/// and tell cargo its path as `CARAPACE_{NAME}_COMPONENT` and the checksum of its bytes
/// (XXH3-128, in hex) as `CARAPACE_{NAME}_COMPONENT_CHECKSUM`.
pub fn build_all(workspace: &Path, guests: &[Guest]) -> Result<()> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", workspace.join("wit").display());
    ensure_wasm_target()?;
    for guest in guests {
        let module = build_guest(workspace, &out_dir, guest)?;
        let (path, component) = componentize(&module, &out_dir, guest.name)?;
        let name = guest.name.to_uppercase();
        println!(
            "cargo:rustc-env=CARAPACE_{name}_COMPONENT={}",
            path.display()
        );
        // Names an embedded component's entry in the precompiled cache, so that a start
        // from the cache never reads the component's bytes.
        println!(
            "cargo:rustc-env=CARAPACE_{name}_COMPONENT_CHECKSUM={:032x}",
            xxhash_rust::xxh3::xxh3_128(&component)
        );
    }
    Ok(())
}

/// Turn the core module at `core_module` into a component at
/// `OUT_DIR/{name}.component.wasm`; returns its path and bytes.
fn componentize(core_module: &Path, out_dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>)> {
    let bytes = fs::read(core_module)
        .with_context(|| format!("reading the guest module {}", core_module.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&bytes)
        .context("reading the guest module's component type")?
        .validate(true)
        .encode()
        .context("componentizing the guest module")?;
    let path = out_dir.join(format!("{name}.component.wasm"));
    fs::write(&path, &component)?;
    Ok((path, component))
}

/// Make sure the standard library for the wasm target is installed: install it with
/// rustup if possible, or fail with the exact command that would.
fn ensure_wasm_target() -> Result<()> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .with_context(|| format!("running `{rustc} --print target-libdir`"))?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if output.status.success() && has_std(&libdir) {
        return Ok(());
    }
    let installed = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()
        .is_ok_and(|status| status.success());
    if !installed {
        bail!(
            "the `{WASM_TARGET}` target is not installed and rustup could not install it; \
             run `rustup target add {WASM_TARGET}`"
        );
    }
    Ok(())
}

fn has_std(libdir: &Path) -> bool {
    fs::read_dir(libdir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|entry| entry.file_name().to_string_lossy().starts_with("libstd-"))
    })
}

/// Build the guest's core module; returns its path.
fn build_guest(workspace: &Path, out_dir: &Path, guest: &Guest) -> Result<PathBuf> {
    let target_dir = out_dir.join("guest-target");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "--package",
            guest.package,
            "--target",
            WASM_TARGET,
        ])
        .args(guest.features)
        .env("CARGO_TARGET_DIR", &target_dir)
        // The outer build's flags are for the host target, not wasm.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        // 128-bit vectors (the checksum's loop), and LLVM's inliner at twice its usual
        // threshold: wasmtime's code for a guest is best when its hot functions are
        // neither many small calls nor one huge loop whose values Cranelift spills
        // (100,000 echo ops of 64 bytes: 1,210M instructions at the default, 1,169M
        // at 500; docs/performance.md, "Inlining for Cranelift").
        .env(
            "RUSTFLAGS",
            "-C target-feature=+simd128 -C llvm-args=-inline-threshold=500",
        )
        // One codegen unit and link-time optimization: the storage engine's hot paths
        // (key decoding, searches, the merge) cross crates, and only LTO inlines them.
        .env("CARGO_PROFILE_RELEASE_LTO", "fat")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        // A small module: no debug info, no panic strings beyond what std keeps.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        // Arithmetic overflow traps, as TigerBeetle ships ReleaseSafe: a wrapped size
        // must stop the guest, never corrupt its state.
        .env("CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS", "true")
        .status()
        .context("running the nested cargo build of the guest")?;
    if !status.success() {
        bail!(
            "building the guest `{}` for `{WASM_TARGET}` failed",
            guest.package
        );
    }
    let release = target_dir.join(WASM_TARGET).join("release");
    let artifact = guest.package.replace('-', "_");
    rerun_if_sources_change(&release.join(format!("{artifact}.d")))?;
    // Two builds of one package (with other features) share the artifact's name: copy
    // it aside before the next build overwrites it.
    let module = out_dir.join(format!("{}.core.wasm", guest.name));
    fs::copy(release.join(format!("{artifact}.wasm")), &module)
        .with_context(|| format!("copying the core module of `{}`", guest.package))?;
    Ok(module)
}

/// Emit `rerun-if-changed` for every file the dep-info lists.
fn rerun_if_sources_change(dep_info: &Path) -> Result<()> {
    let text = fs::read_to_string(dep_info)
        .with_context(|| format!("reading dep-info {}", dep_info.display()))?;
    // The first line is `artifact: every source`; later lines repeat each source alone.
    let first_line = text.lines().next().unwrap_or_default();
    let (_, sources) = first_line
        .split_once(": ")
        .context("dep-info has a `target:` line")?;
    // Paths are separated by spaces; a space inside a path is escaped as `\ `.
    let sources = sources.replace("\\ ", "\u{0}");
    for source in sources.split_whitespace() {
        println!("cargo:rerun-if-changed={}", source.replace('\u{0}', " "));
    }
    Ok(())
}
