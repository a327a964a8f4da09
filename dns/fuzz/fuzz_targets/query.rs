//! Fuzzes the query path: any bytes, over UDP and TCP. Must never panic; every reply must be a
//! well-formed message echoing the ID; where the fast path answers, the full path agrees.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcsd_dns::fuzzing::check_query;

fuzz_target!(|data: &[u8]| {
    check_query(data);
});
