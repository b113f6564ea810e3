//! Every parser of outside bytes on the device, in one place: the journal
//! (on disk, possibly torn or corrupted), the bootloader's variables (from
//! `fw_printenv`, `grub-editenv list` or the file model) and the server's
//! check-in answer. Each returns an error for any input and never panics;
//! `cargo fuzz` (fuzz/ at the workspace root) and a fixed-seed run in the
//! tests feed them arbitrary bytes.

use updraft_agent_core::{BootRecord, Journal};

/// Largest journal read (a journal holds at most 64 events of 64 KiB).
pub const MAX_JOURNAL_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{what} is {len} bytes, over the limit of {limit}")]
    TooLarge { what: &'static str, len: usize, limit: usize },
    #[error("{what} is not valid: {reason}")]
    Invalid { what: &'static str, reason: String },
}

/// The journal file's contents.
pub fn journal(bytes: &[u8]) -> Result<Journal, ParseError> {
    if bytes.len() > MAX_JOURNAL_BYTES {
        return Err(ParseError::TooLarge { what: "the journal", len: bytes.len(), limit: MAX_JOURNAL_BYTES });
    }
    serde_json::from_slice(bytes).map_err(|e| ParseError::Invalid { what: "the journal", reason: e.to_string() })
}

/// The boot record from `NAME=value` lines (`fw_printenv`, `grub-editenv list`).
pub fn boot_vars(bytes: &[u8]) -> Result<Option<BootRecord>, ParseError> {
    let text = String::from_utf8_lossy(bytes);
    crate::bootloader::from_vars(&crate::bootloader::parse_lines(&text))
        .map_err(|e| ParseError::Invalid { what: "the boot variables", reason: e.to_string() })
}

/// The server's answer to a check-in.
pub fn check_in_answer(bytes: &[u8]) -> Result<updraft_proto::CheckInResponse, ParseError> {
    if bytes.len() > 1 << 20 {
        return Err(ParseError::TooLarge { what: "the check-in answer", len: bytes.len(), limit: 1 << 20 });
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ParseError::Invalid { what: "the check-in answer", reason: e.to_string() })
}

/// Starts the agent core from a parsed journal, against each booted slot
/// and a record at rest and an armed one, and drains its effects: what a
/// device does with whatever its journal says. For the fuzzer and the
/// fixed-seed test; never panics.
pub fn start_core(journal: Journal) {
    use updraft_agent_core::{Agent, Booted, Facts, Input, Slot};
    for (slot, trial) in [(Slot::A, false), (Slot::B, false), (Slot::B, true)] {
        for record in [BootRecord::fresh(Slot::A), BootRecord::fresh(Slot::A).invalidated(Slot::B).armed(Slot::B)] {
            let mut agent = Agent::new(std::time::Duration::from_secs(60));
            let facts = Facts { family: "sensor".into(), hardware: "rev-a".into(), components: vec![] };
            let booted = Booted { slot, trial, reverted_from: None };
            let journal = Some(Box::new(journal.clone()));
            agent.handle(updraft_types::UnixMs(1), Input::Started { journal, record, booted, facts, seed: 1 });
            while agent.poll_effect().is_some() {}
            while agent.poll_notice().is_some() {}
        }
    }
}
