//! Integration tests of carapace live in `all/`; this library only names the test
//! guests its build script made.

/// The hostile test guest (`tests/hostile`) as a component file.
pub const HOSTILE_COMPONENT_PATH: &str = env!("CARAPACE_HOSTILE_COMPONENT");
