//! The kv machine's settings: the `settings` pairs of the contract's `options`.
//!
//! `lsm-profile` picks a set of defaults (`production`, the default, or `test`: short
//! bars and small levels so that tests exercise many levels and checkpoints fast); the
//! other settings override single values of the profile, whatever their order. The
//! names, ranges and messages are the echo machine's, less `stats-interval` (kv arms no
//! timer); the parser is a copy of echo's until it moves to a crate both can use.

use carapace_lsm::tree::LEVELS_MAX;
use carapace_sdk::Failure;

/// Settings of the kv machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `bar-ops`: ops per bar, a power of two in `2..=1024`. Production 32, test 4.
    pub bar_ops: u64,
    /// `lsm-levels`: levels of the tree, `1..=7`. Production 7, test 4.
    pub levels: u8,
    /// `lsm-growth-factor`: level `l` holds `factor^(l+1)` tables before it compacts.
    /// Production 8, test 4.
    pub growth_factor: u32,
    /// `table-value-blocks-max`: value blocks per table built by compaction.
    /// Production 64: a 4 KiB block holds 45 records, so a table holds 2,880, more than
    /// the 2,048 writes a bar of 32 ops of 64 keys can bring. A level gives one table a
    /// bar to the next, so a table must hold a bar's writes or level 0 would grow
    /// without end; 64 entries also fit one 4 KiB index block (72 at most). Test 16: the
    /// most a 1 KiB index block holds (17), 160 records of 1 KiB blocks.
    pub value_blocks_per_table_max: usize,
    /// `table-count-max`: tables the tree holds at most, allocated at init.
    /// Production 65,536 (188 million records in full tables of 4 KiB blocks), test 4,096.
    pub table_count_max: usize,
    /// `grid-cache-blocks`: blocks the grid's cache holds; 0 disables it.
    /// Production 1,024, test 64.
    pub grid_cache_blocks: usize,
}

impl Settings {
    /// The production profile.
    pub const PRODUCTION: Settings = Settings {
        bar_ops: 32,
        levels: LEVELS_MAX,
        growth_factor: 8,
        value_blocks_per_table_max: 64,
        table_count_max: 65_536,
        grid_cache_blocks: 1024,
    };

    /// The test profile.
    pub const TEST: Settings = Settings {
        bar_ops: 4,
        levels: 4,
        growth_factor: 4,
        value_blocks_per_table_max: 16,
        table_count_max: 4096,
        grid_cache_blocks: 64,
    };
}

impl Default for Settings {
    fn default() -> Settings {
        Settings::PRODUCTION
    }
}

/// The largest `grid-cache-blocks`: 64 Ki blocks (256 MiB of 4 KiB blocks).
pub const GRID_CACHE_BLOCKS_LIMIT: u64 = 1 << 16;

/// The largest `table-count-max`: its manifest must fit in memory allocated at init.
pub const TABLE_COUNT_MAX_LIMIT: u64 = 1 << 20;

impl Settings {
    /// Parse `(name, value)` pairs over the chosen profile; an unknown name or a bad
    /// value is an error naming it.
    pub fn parse(pairs: &[(String, String)]) -> Result<Settings, Failure> {
        let mut settings = Settings::PRODUCTION;
        for (name, value) in pairs.iter().filter(|(name, _)| name == "lsm-profile") {
            settings = match value.as_str() {
                "production" => Settings::PRODUCTION,
                "test" => Settings::TEST,
                _ => {
                    return Err(Failure::InvalidArgument(format!(
                        "setting `{name}`: `{value}` is neither `production` nor `test`"
                    )));
                }
            };
        }
        for (name, value) in pairs.iter().filter(|(name, _)| name != "lsm-profile") {
            let number = |range: std::ops::RangeInclusive<u64>| {
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
            };
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
                "table-count-max" => {
                    settings.table_count_max = number(1..=TABLE_COUNT_MAX_LIMIT)? as usize
                }
                "grid-cache-blocks" => {
                    settings.grid_cache_blocks = number(0..=GRID_CACHE_BLOCKS_LIMIT)? as usize
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn a_profile_then_overrides_in_any_order() {
        let settings = Settings::parse(&pairs(&[
            ("bar-ops", "8"),
            ("lsm-profile", "test"),
            ("grid-cache-blocks", "0"),
        ]))
        .unwrap();
        assert_eq!(settings.bar_ops, 8);
        assert_eq!(settings.grid_cache_blocks, 0);
        assert_eq!(settings.levels, Settings::TEST.levels);
        assert_eq!(Settings::parse(&[]).unwrap(), Settings::PRODUCTION);
    }

    #[test]
    fn refuses_bad_settings_by_name() {
        for (list, expected) in [
            (&[("bar-opz", "4")][..], "unknown setting `bar-opz`"),
            // Echo's timer setting means nothing here.
            (
                &[("stats-interval", "9")][..],
                "unknown setting `stats-interval`",
            ),
            (
                &[("bar-ops", "3")][..],
                "setting `bar-ops`: 3 is not a power of two",
            ),
            (&[("bar-ops", "x")][..], "`x` is not a number"),
            (
                &[("table-count-max", "0")][..],
                "setting `table-count-max`: 0 is not in 1..=",
            ),
            (
                &[("lsm-levels", "8")][..],
                "setting `lsm-levels`: 8 is not in 1..=7",
            ),
            (&[("lsm-profile", "fast")][..], "`fast` is neither"),
        ] {
            let error = Settings::parse(&pairs(list)).unwrap_err();
            assert!(matches!(error, Failure::InvalidArgument(_)), "{error}");
            assert!(error.message().contains(expected), "{error}");
        }
    }
}
