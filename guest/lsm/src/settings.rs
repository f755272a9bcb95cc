//! The forest's settings, as machines built on it take them from the contract's
//! `settings` pairs: one parser, so that every such machine names, bounds and refuses
//! them the same way.
//!
//! `lsm-profile` picks one of the machine's two profiles (`production`, the default, or
//! `test`: short bars and small levels, so that tests exercise many levels and
//! checkpoints fast); the other settings override single values of the profile,
//! whatever their order. A machine handles its own names (echo's `stats-interval`)
//! through the callback of [`ForestSettings::parse`]; any other name is refused.

use carapace_sdk::Failure;

use crate::scrub::ScrubSettings;
use crate::tree::{LEVELS_MAX, Shape};

/// The largest `grid-cache-blocks`: 64 Ki blocks (256 MiB of 4 KiB blocks).
pub const GRID_CACHE_BLOCKS_LIMIT: u64 = 1 << 16;

/// The largest `table-count-max`: its manifest must fit in memory allocated at init.
pub const TABLE_COUNT_MAX_LIMIT: u64 = 1 << 20;

/// The settings of a forest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForestSettings {
    /// `bar-ops`: ops per bar, a power of two in `2..=1024`.
    pub bar_ops: u64,
    /// `lsm-levels`: levels of each tree, `1..=7`.
    pub levels: u8,
    /// `lsm-growth-factor`: level `l` holds `factor^(l+1)` tables before it compacts,
    /// `2..=64`.
    pub growth_factor: u32,
    /// `table-value-blocks-max`: value blocks per table built by compaction, `1..=1024`.
    pub value_blocks_per_table_max: usize,
    /// `flush-bars-max`: flush the immutable table at least every this many bars, 0 only
    /// when it is full; `0..=1024`.
    pub flush_bars_max: u64,
    /// `table-count-max`: tables each tree holds at most, allocated at init.
    pub table_count_max: usize,
    /// `grid-cache-blocks`: blocks the grid's cache holds; 0 disables it.
    pub grid_cache_blocks: usize,
    /// `scrub-interval`: scrub every this many timestamp units, 0 never; and
    /// `scrub-blocks`: blocks per scrub, `1..=65536`.
    pub scrub: ScrubSettings,
}

/// A machine's two profiles of forest settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profiles {
    /// The default.
    pub production: ForestSettings,
    /// `lsm-profile=test`.
    pub test: ForestSettings,
}

/// The number in `value` of setting `name`, refused unless it is in `range`.
pub fn number_setting(
    name: &str,
    value: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, Failure> {
    let number = value.parse::<u64>().map_err(|_| {
        Failure::InvalidArgument(format!("setting `{name}`: `{value}` is not a number"))
    })?;
    if !range.contains(&number) {
        return Err(Failure::InvalidArgument(format!(
            "setting `{name}`: {number} is not in {}..={}",
            range.start(),
            range.end()
        )));
    }
    Ok(number)
}

impl ForestSettings {
    /// The shape of the forest's trees.
    pub fn shape(&self) -> Shape {
        Shape {
            bar_ops: self.bar_ops,
            levels: self.levels,
            growth_factor: self.growth_factor,
            value_blocks_per_table_max: self.value_blocks_per_table_max,
            flush_bars_max: self.flush_bars_max,
        }
    }

    /// Parse `(name, value)` pairs over the chosen profile. A name the forest does not
    /// know goes to `machine`, which returns whether it took it; an unknown name or a
    /// bad value is an error naming it.
    pub fn parse(
        pairs: &[(String, String)],
        profiles: Profiles,
        mut machine: impl FnMut(&str, &str) -> Result<bool, Failure>,
    ) -> Result<ForestSettings, Failure> {
        let mut settings = profiles.production;
        for (name, value) in pairs.iter().filter(|(name, _)| name == "lsm-profile") {
            settings = match value.as_str() {
                "production" => profiles.production,
                "test" => profiles.test,
                _ => {
                    return Err(Failure::InvalidArgument(format!(
                        "setting `{name}`: `{value}` is neither `production` nor `test`"
                    )));
                }
            };
        }
        for (name, value) in pairs.iter().filter(|(name, _)| name != "lsm-profile") {
            let number = |range| number_setting(name, value, range);
            // The ranges bound every value below `u32::MAX`, so the casts are lossless
            // on 32-bit targets too.
            match name.as_str() {
                "bar-ops" => {
                    let bar_ops = number(2..=1024)?;
                    if !bar_ops.is_power_of_two() {
                        return Err(Failure::InvalidArgument(format!(
                            "setting `bar-ops`: {bar_ops} is not a power of two"
                        )));
                    }
                    settings.bar_ops = bar_ops;
                }
                "lsm-levels" => settings.levels = number(1..=u64::from(LEVELS_MAX))? as u8,
                "lsm-growth-factor" => settings.growth_factor = number(2..=64)? as u32,
                "table-value-blocks-max" => {
                    settings.value_blocks_per_table_max = number(1..=1024)? as usize
                }
                "flush-bars-max" => settings.flush_bars_max = number(0..=1024)?,
                "table-count-max" => {
                    settings.table_count_max = number(1..=TABLE_COUNT_MAX_LIMIT)? as usize
                }
                "grid-cache-blocks" => {
                    settings.grid_cache_blocks = number(0..=GRID_CACHE_BLOCKS_LIMIT)? as usize
                }
                "scrub-interval" => settings.scrub.interval = number(0..=u64::MAX)?,
                "scrub-blocks" => settings.scrub.blocks_per_tick = number(1..=1 << 16)?,
                _ if machine(name, value)? => {}
                _ => {
                    return Err(Failure::InvalidArgument(format!(
                        "unknown setting `{name}`"
                    )));
                }
            }
        }
        Ok(settings)
    }
}
