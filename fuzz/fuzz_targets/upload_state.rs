#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ngx_upload_fuzz::upload_state::check(data));
