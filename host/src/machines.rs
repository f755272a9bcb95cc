//! The machines the `carapace` binary embeds, chosen by name (`--machine kv`), and how
//! a command gets instances of a machine: from an embedded or given component in
//! wasmtime, or natively (with the `native` feature).

use std::path::{Path, PathBuf};

use carapace_core::checksum::checksum;
use carapace_core::error::{Error, Result};
use carapace_core::imports::HostImports;
use carapace_core::instance::{Instance, Options};

use crate::wasm::{Limits, Runtime};

/// The echo machine as a component, built from `guest/` by the build script.
pub const ECHO_COMPONENT: &[u8] = include_bytes!(env!("CARAPACE_ECHO_COMPONENT"));

/// The key-value machine as a component.
pub const KV_COMPONENT: &[u8] = include_bytes!(env!("CARAPACE_KV_COMPONENT"));

/// Where the build script left a deliberately different version of the echo component
/// (replies grow by a byte from op 100 on), for tests of `carapace replay --module`.
pub const ECHO_DIVERGENT_COMPONENT_PATH: &str = env!("CARAPACE_ECHO_DIVERGENT_COMPONENT");

/// Where the build script left a deliberately hostile version of the echo component
/// (`commit` traps on a body starting with `poison`), for tests of trap recovery.
pub const ECHO_POISON_COMPONENT_PATH: &str = env!("CARAPACE_ECHO_POISON_COMPONENT");

/// Where the build script left a deliberately broken version of the echo component
/// (I/O completion order leaks into its state), for tests of the simulator.
pub const ECHO_ORDER_LEAK_COMPONENT_PATH: &str = env!("CARAPACE_ECHO_ORDER_LEAK_COMPONENT");

/// A machine the binary embeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Embedded {
    /// Its name, as `--machine` gives it.
    pub name: &'static str,
    /// Its component.
    pub bytes: &'static [u8],
    /// The [`checksum`](carapace_core::checksum::checksum) of `bytes`, computed by the
    /// build script: it names the component's entry in the precompiled cache, so that a
    /// start from the cache does not read the bytes (a pass over a few hundred KB, the
    /// first touch of their pages).
    pub checksum: u128,
}

/// The embedded machines, by name; the first is the default.
pub const EMBEDDED: [Embedded; 2] = [
    Embedded {
        name: "echo",
        bytes: ECHO_COMPONENT,
        checksum: from_hex(env!("CARAPACE_ECHO_COMPONENT_CHECKSUM")),
    },
    Embedded {
        name: "kv",
        bytes: KV_COMPONENT,
        checksum: from_hex(env!("CARAPACE_KV_COMPONENT_CHECKSUM")),
    },
];

/// A checksum the build script wrote in hex.
const fn from_hex(hex: &str) -> u128 {
    match u128::from_str_radix(hex, 16) {
        Ok(value) => value,
        Err(_) => panic!("the build script writes a component's checksum in hex"),
    }
}

/// The embedded machine named `name`.
pub fn embedded(name: &str) -> Result<&'static Embedded> {
    EMBEDDED
        .iter()
        .find(|embedded| embedded.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = EMBEDDED.iter().map(|embedded| embedded.name).collect();
            Error::Refused(format!(
                "no embedded machine is named `{name}` (there are: {})",
                names.join(", ")
            ))
        })
}

/// The largest component file the host reads, in bytes: far above a Rust guest's few
/// hundred KiB, and a bound on what a hostile file can make the host compile.
pub const COMPONENT_FILE_SIZE_MAX: u64 = 64 << 20;

/// Where a machine comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// An embedded machine, by name.
    Embedded(String),
    /// A component file.
    File(PathBuf),
    /// A machine compiled into the host (the baseline), by name.
    Native(String),
}

impl Source {
    /// The source a command's `--machine`, `--module` and `--target native` choose;
    /// `default` names the machine when neither is given.
    pub fn choose(
        machine: Option<&str>,
        module: Option<&Path>,
        native: bool,
        default: &str,
    ) -> Result<Source> {
        match (machine, module, native) {
            (Some(_), Some(_), _) => Err(Error::Refused(
                "`--machine` names an embedded machine and `--module` a file: give one".into(),
            )),
            (_, Some(_), true) => Err(Error::Refused(
                "`--target native` runs a machine compiled into the host; drop `--module`".into(),
            )),
            (_, Some(path), false) => Ok(Source::File(path.to_path_buf())),
            (name, None, true) => Ok(Source::Native(name.unwrap_or(default).to_string())),
            (name, None, false) => Ok(Source::Embedded(name.unwrap_or(default).to_string())),
        }
    }

    /// How people see it in reports.
    pub fn describe(&self) -> String {
        match self {
            Source::Embedded(name) => format!("embedded `{name}`"),
            Source::File(path) => format!("`{}`", path.display()),
            Source::Native(name) => format!("native `{name}`"),
        }
    }
}

/// Makes instances of one machine: the component compiled once, instantiated per call.
pub struct Factory {
    make: Box<dyn Fn(HostImports) -> Result<Box<dyn Instance>>>,
    loaded: Loaded,
}

/// How a factory's machine was loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// Reading, compiling or deserializing, and checking the component (zero for a
    /// native machine).
    pub took: std::time::Duration,
    /// What the component cache did, if one was used.
    pub cache: Option<crate::cache::CacheUse>,
}

impl std::fmt::Debug for Factory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Factory").finish_non_exhaustive()
    }
}

impl Factory {
    /// Load the machine from `source`; a component runs within `limits`.
    pub fn load(source: &Source, limits: Limits) -> Result<Factory> {
        Factory::load_cached(source, limits, None)
    }

    /// [`Factory::load`], through the precompiled components in `cache` if given.
    pub fn load_cached(source: &Source, limits: Limits, cache: Option<&Path>) -> Result<Factory> {
        let started = std::time::Instant::now();
        // An embedded component is used where it lies in the binary, not copied.
        let (bytes, known_checksum): (std::borrow::Cow<'static, [u8]>, _) = match source {
            Source::Embedded(name) => {
                let embedded = embedded(name)?;
                (embedded.bytes.into(), Some(embedded.checksum))
            }
            Source::File(path) => (read_component(path)?.into(), None),
            Source::Native(name) => return native(name),
        };
        let runtime = Runtime::new(limits)?;
        let (component, cache) = match cache {
            Some(dir) => {
                let bytes_checksum = known_checksum.unwrap_or_else(|| checksum(&bytes));
                let (component, cache_use) =
                    crate::cache::load_checksummed(&runtime, &bytes, bytes_checksum, dir)?;
                (component, Some(cache_use))
            }
            None => (runtime.load(&bytes)?, None),
        };
        Ok(Factory {
            make: Box::new(move |imports| Ok(Box::new(runtime.instantiate(&component, imports)?))),
            loaded: Loaded {
                took: started.elapsed(),
                cache,
            },
        })
    }

    /// How the machine was loaded.
    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    /// A fresh instance over `imports`.
    pub fn instance(&self, imports: HostImports) -> Result<Box<dyn Instance>> {
        (self.make)(imports)
    }

    /// The factory as the function [`Durable::open`](carapace_core::durable::Durable::open)
    /// takes.
    pub fn as_fn(&self) -> &(dyn Fn(HostImports) -> Result<Box<dyn Instance>> + '_) {
        &self.make
    }
}

#[cfg(feature = "native")]
fn native(name: &str) -> Result<Factory> {
    if !crate::native::MACHINES.contains(&name) {
        return Err(Error::Refused(format!(
            "no machine named `{name}` is compiled into the host (there are: {})",
            crate::native::MACHINES.join(", ")
        )));
    }
    let name = name.to_string();
    Ok(Factory {
        make: Box::new(move |imports| {
            Ok(crate::native::instance(&name, imports).expect("one of `MACHINES`"))
        }),
        loaded: Loaded {
            took: std::time::Duration::ZERO,
            cache: None,
        },
    })
}

#[cfg(not(feature = "native"))]
fn native(_: &str) -> Result<Factory> {
    Err(Error::Refused(
        "this build has no native baseline: build `carapace` with its `native` feature".into(),
    ))
}

/// Read a component file, refusing what is not a regular file or is too large to be one.
pub fn read_component(path: &Path) -> Result<Vec<u8>> {
    let display = path.display().to_string();
    let metadata =
        std::fs::metadata(path).map_err(|error| Error::io(&display, "reading", error))?;
    if !metadata.is_file() {
        return Err(Error::Refused(format!("`{display}` is not a regular file")));
    }
    if metadata.len() > COMPONENT_FILE_SIZE_MAX {
        return Err(Error::Refused(format!(
            "`{display}` holds {} bytes, over the {COMPONENT_FILE_SIZE_MAX} a component may",
            metadata.len()
        )));
    }
    std::fs::read(path).map_err(|error| Error::io(&display, "reading", error))
}

/// The options a new data directory or an in-memory run takes by default.
pub fn default_options() -> Options {
    Options {
        batch_size_limit: 4096,
        reply_size_limit: 1 << 20,
        checkpoint_interval_ops: 1024,
        block_size: 4096,
        block_count: 1 << 20,
        settings: Vec::new(),
    }
}
