#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caching_proxy_fuzz::config_units(data));
