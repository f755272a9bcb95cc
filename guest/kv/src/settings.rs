//! The kv machine's settings: the forest's (`carapace_lsm::settings`), with kv's two
//! profiles; kv has no settings of its own.

use carapace_lsm::scrub::ScrubSettings;
use carapace_lsm::settings::{ForestSettings, Profiles};
use carapace_lsm::tree::LEVELS_MAX;
use carapace_sdk::Failure;

/// Settings of the kv machine: its forest's.
pub type Settings = ForestSettings;

/// kv's forest profiles.
///
/// - `bar-ops`: production 32, test 4. `lsm-levels`: production 7, test 4.
///   `lsm-growth-factor`: production 8, test 4.
/// - `table-value-blocks-max`: production 64: a 4 KiB block holds 45 records, so a
///   table holds 2,880, more than the 2,048 writes a bar of 32 ops of 64 keys can
///   bring. A level gives one table a bar to the next, so a table must hold a bar's
///   writes or level 0 would grow without end; 64 entries also fit one 4 KiB index
///   block (72 at most). Test 16: the most a 1 KiB index block holds (17), 160 records
///   of 1 KiB blocks.
/// - `flush-bars-max`: production 0 (the immutable table absorbs bars until it is
///   full), test 2 (tables every other bar).
/// - `table-count-max`: production 65,536 (188 million records in full tables of 4 KiB
///   blocks), test 4,096.
/// - `grid-cache-blocks`: production 1,024, test 64.
/// - `scrub-interval`, `scrub-blocks`: [`ScrubSettings::PRODUCTION`] and
///   [`ScrubSettings::TEST`].
pub const PROFILES: Profiles = Profiles {
    production: ForestSettings {
        bar_ops: 32,
        levels: LEVELS_MAX,
        growth_factor: 8,
        value_blocks_per_table_max: 64,
        flush_bars_max: 0,
        table_count_max: 65_536,
        grid_cache_blocks: 1024,
        scrub: ScrubSettings::PRODUCTION,
    },
    test: ForestSettings {
        bar_ops: 4,
        levels: 4,
        growth_factor: 4,
        value_blocks_per_table_max: 16,
        flush_bars_max: 2,
        table_count_max: 4096,
        grid_cache_blocks: 64,
        scrub: ScrubSettings::TEST,
    },
};

/// Parse `(name, value)` pairs over the chosen profile; an unknown name or a bad value
/// is an error naming it.
pub fn parse(pairs: &[(String, String)]) -> Result<Settings, Failure> {
    ForestSettings::parse(pairs, PROFILES, |_, _| Ok(false))
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
        let settings = parse(&pairs(&[
            ("bar-ops", "8"),
            ("lsm-profile", "test"),
            ("grid-cache-blocks", "0"),
        ]))
        .unwrap();
        assert_eq!(settings.bar_ops, 8);
        assert_eq!(settings.grid_cache_blocks, 0);
        assert_eq!(settings.levels, PROFILES.test.levels);
        assert_eq!(parse(&[]).unwrap(), PROFILES.production);
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
            let error = parse(&pairs(list)).unwrap_err();
            assert!(matches!(error, Failure::InvalidArgument(_)), "{error}");
            assert!(error.message().contains(expected), "{error}");
        }
    }
}
