//! Log setup: `env_logger` at the configured level. Access log lines use the target
//! `access`; everything else is application and Pingora events.

use log::LevelFilter;

pub fn init(level: LevelFilter) {
    let _ = env_logger::Builder::new()
        .filter_level(level)
        .format_timestamp_millis()
        .try_init();
}
