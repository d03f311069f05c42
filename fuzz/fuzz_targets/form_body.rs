#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ngx_upload_fuzz::form_body::check(data));
