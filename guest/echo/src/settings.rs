//! The echo machine's settings: the forest's (`carapace_lsm::settings`, with echo's two
//! profiles) and `stats-interval`.

use carapace_lsm::scrub::ScrubSettings;
use carapace_lsm::settings::{ForestSettings, Profiles, number_setting};
use carapace_lsm::tree::LEVELS_MAX;
use carapace_sdk::Failure;

/// Settings of the echo machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The forest's settings.
    pub forest: ForestSettings,
    /// `stats-interval`: log statistics every this many timestamp units; 0 (the
    /// default) never.
    pub stats_interval: u64,
}

/// Echo's forest profiles.
///
/// - `bar-ops`: production 32, test 4.
/// - `lsm-levels`: production 7, test 4.
/// - `lsm-growth-factor`: production 8, test 4.
/// - `table-value-blocks-max`: production 16 (a 4 KiB block holds 126 Things, so a
///   table holds about 2,000 of them; the immutable table absorbs bars until it holds
///   that many, so tables are full however short a bar is; larger tables make each
///   bar's absorb and each merge move more bytes), test 2 (so tables of several
///   blocks are exercised).
/// - `flush-bars-max`: production 0 (flush when full), test 2 (tables every other bar,
///   so that tests reach deep levels in a few hundred ops, and bars are still absorbed).
/// - `table-count-max`: production 65,536 (10^7 echo ops fill about 5,000 tables per
///   tree), test 4,096.
/// - `grid-cache-blocks`: production 1,024, test 64.
/// - `scrub-interval`, `scrub-blocks`: [`ScrubSettings::PRODUCTION`] and
///   [`ScrubSettings::TEST`].
pub const PROFILES: Profiles = Profiles {
    production: ForestSettings {
        bar_ops: 32,
        levels: LEVELS_MAX,
        growth_factor: 8,
        value_blocks_per_table_max: 16,
        flush_bars_max: 0,
        table_count_max: 65_536,
        grid_cache_blocks: 1024,
        scrub: ScrubSettings::PRODUCTION,
    },
    test: ForestSettings {
        bar_ops: 4,
        levels: 4,
        growth_factor: 4,
        value_blocks_per_table_max: 2,
        flush_bars_max: 2,
        table_count_max: 4096,
        grid_cache_blocks: 64,
        scrub: ScrubSettings::TEST,
    },
};

impl Settings {
    /// The production profile.
    pub const PRODUCTION: Settings = Settings {
        forest: PROFILES.production,
        stats_interval: 0,
    };

    /// The test profile.
    pub const TEST: Settings = Settings {
        forest: PROFILES.test,
        stats_interval: 0,
    };

    /// Parse `(name, value)` pairs over the chosen profile; an unknown name or a bad
    /// value is an error naming it.
    pub fn parse(pairs: &[(String, String)]) -> Result<Settings, Failure> {
        let mut stats_interval = 0;
        let forest = ForestSettings::parse(pairs, PROFILES, |name, value| {
            if name != "stats-interval" {
                return Ok(false);
            }
            stats_interval = number_setting(name, value, 0..=u64::MAX)?;
            Ok(true)
        })?;
        Ok(Settings {
            forest,
            stats_interval,
        })
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings::PRODUCTION
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
            ("stats-interval", "9"),
        ]))
        .unwrap();
        assert_eq!(settings.forest.bar_ops, 8);
        assert_eq!(settings.stats_interval, 9);
        assert_eq!(settings.forest.levels, Settings::TEST.forest.levels);
        assert_eq!(Settings::parse(&[]).unwrap(), Settings::PRODUCTION);
    }

    #[test]
    fn refuses_bad_settings_by_name() {
        for (list, expected) in [
            (&[("bar-opz", "4")][..], "unknown setting `bar-opz`"),
            (
                &[("bar-ops", "3")][..],
                "setting `bar-ops`: 3 is not a power of two",
            ),
            (&[("bar-ops", "x")][..], "`x` is not a number"),
            (
                &[("flush-bars-max", "1025")][..],
                "setting `flush-bars-max`: 1025 is not in 0..=1024",
            ),
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
            assert!(error.message().contains(expected), "{error}");
        }
    }
}
