//! The echo machine's settings: the `settings` pairs of the contract's `options`.

use carapace_lsm::Failure;

/// Settings of the echo machine, with their defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `bar-ops`: ops per bar; the memory table is flushed at each bar's end and
    /// checkpoints must fall on a bar's end. A power of two in `2..=1024`; default 32.
    pub bar_ops: u64,
    /// `table-count-max`: tables the manifest holds at most. Default 65,536.
    pub table_count_max: usize,
    /// `stats-interval`: log statistics every this many timestamp units; 0 (the
    /// default) never.
    pub stats_interval: u64,
    /// `grid-cache-blocks`: blocks the grid's cache holds. Default 1,024; 0 disables it.
    pub grid_cache_blocks: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            bar_ops: 32,
            table_count_max: 65_536,
            stats_interval: 0,
            grid_cache_blocks: 1024,
        }
    }
}

/// The largest `grid-cache-blocks`: 64 Ki blocks (256 MiB of 4 KiB blocks).
pub const GRID_CACHE_BLOCKS_LIMIT: usize = 1 << 16;

/// The largest `table-count-max`: its manifest must fit in memory allocated at init.
pub const TABLE_COUNT_MAX_LIMIT: usize = 1 << 20;

impl Settings {
    /// Parse `(name, value)` pairs over the defaults; an unknown name or a bad value is
    /// an error naming it.
    pub fn parse(pairs: &[(String, String)]) -> Result<Settings, Failure> {
        let mut settings = Settings::default();
        for (name, value) in pairs {
            let number = || {
                value.parse::<u64>().map_err(|_| {
                    Failure::InvalidArgument(format!("setting `{name}`: `{value}` is not a number"))
                })
            };
            match name.as_str() {
                "bar-ops" => {
                    let bar_ops = number()?;
                    if !bar_ops.is_power_of_two() || !(2..=1024).contains(&bar_ops) {
                        return Err(Failure::InvalidArgument(format!(
                            "setting `bar-ops`: {bar_ops} is not a power of two in 2..=1024"
                        )));
                    }
                    settings.bar_ops = bar_ops;
                }
                "table-count-max" => {
                    let count = number()?;
                    if !(1..=TABLE_COUNT_MAX_LIMIT as u64).contains(&count) {
                        return Err(Failure::InvalidArgument(format!(
                            "setting `table-count-max`: {count} is not in \
                             1..={TABLE_COUNT_MAX_LIMIT}"
                        )));
                    }
                    settings.table_count_max = count as usize;
                }
                "stats-interval" => settings.stats_interval = number()?,
                "grid-cache-blocks" => {
                    let count = number()?;
                    if count > GRID_CACHE_BLOCKS_LIMIT as u64 {
                        return Err(Failure::InvalidArgument(format!(
                            "setting `grid-cache-blocks`: {count} is more than \
                             {GRID_CACHE_BLOCKS_LIMIT}"
                        )));
                    }
                    settings.grid_cache_blocks = count as usize;
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
    fn parses_known_settings() {
        let settings =
            Settings::parse(&pairs(&[("bar-ops", "4"), ("stats-interval", "9")])).unwrap();
        assert_eq!(settings.bar_ops, 4);
        assert_eq!(settings.stats_interval, 9);
        assert_eq!(
            settings.table_count_max,
            Settings::default().table_count_max
        );
    }

    #[test]
    fn refuses_bad_settings_by_name() {
        for (list, expected) in [
            (&[("bar-opz", "4")][..], "unknown setting `bar-opz`"),
            (&[("bar-ops", "3")][..], "setting `bar-ops`: 3"),
            (&[("bar-ops", "x")][..], "`x` is not a number"),
            (
                &[("table-count-max", "0")][..],
                "setting `table-count-max`: 0",
            ),
        ] {
            let error = Settings::parse(&pairs(list)).unwrap_err();
            assert!(error.message().contains(expected), "{error}");
        }
    }
}
