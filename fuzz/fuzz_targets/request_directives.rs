#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caching_proxy_fuzz::request_directives(data));
