//! Arbitrary bytes into every parser of outside bytes on the device; a
//! journal that parses is then fed to the agent core's start-up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use updraft_agent::parse;

fuzz_target!(|data: &[u8]| {
    let _ = parse::boot_vars(data);
    let _ = parse::check_in_answer(data);
    if let Ok(journal) = parse::journal(data) {
        updraft_agent::parse::start_core(journal);
    }
});
