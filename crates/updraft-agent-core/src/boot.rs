//! The boot-selection record and the bootloader's contract.
//!
//! The record is shared with the bootloader and always written in one
//! atomic step (one `fw_setenv` script, one `grub-editenv` call, one file
//! rename). The bootloader runs [`boot`] on every boot: it counts attempts
//! only while a trial is armed (no writes on normal boots), and reverts on
//! its own when the attempts run out.

use serde::{Deserialize, Serialize};

/// One of the two firmware banks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    pub fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }
}

/// Boot attempts a trial gets before the bootloader reverts.
pub const TRIAL_ATTEMPTS: u8 = 3;

/// The boot-selection record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootRecord {
    /// The slot to boot.
    pub primary: Slot,
    /// Attempts left for a trial, per slot.
    pub tries: [u8; 2],
    /// Slots known good (committed).
    pub good: [bool; 2],
    /// Whether `primary` is on trial.
    pub trial_armed: bool,
    /// The slot whose trial the bootloader gave up on (attempts exhausted),
    /// until the next trial is armed: how the agent tells a boot loop from
    /// flags that were never flipped.
    pub last_revert: Option<Slot>,
}

impl BootRecord {
    /// A device whose `slot` holds committed firmware and whose other slot is empty.
    pub fn fresh(slot: Slot) -> BootRecord {
        let mut good = [false; 2];
        good[slot.index()] = true;
        BootRecord { primary: slot, tries: [0; 2], good, trial_armed: false, last_revert: None }
    }

    /// The target slot made unbootable (before anything is written to it).
    /// Only while the other slot runs outside a trial: that slot becomes
    /// the primary and is marked good (it runs), and a stale trial armed
    /// for `slot` is dropped.
    pub fn invalidated(mut self, slot: Slot) -> BootRecord {
        self.primary = slot.other();
        self.good[slot.other().index()] = true;
        self.trial_armed = false;
        self.good[slot.index()] = false;
        self.tries[slot.index()] = 0;
        self
    }

    /// `slot` is running and good, with no trial armed: the record at rest.
    pub fn is_settled_on(&self, slot: Slot) -> bool {
        self.primary == slot && !self.trial_armed && self.good[slot.index()]
    }

    /// The record at rest on `slot` (the other slot's flags are kept).
    pub fn settled(mut self, slot: Slot) -> BootRecord {
        self.primary = slot;
        self.trial_armed = false;
        self.good[slot.index()] = true;
        self.tries[slot.index()] = 0;
        self
    }

    /// `slot` armed for a trial boot.
    pub fn armed(mut self, slot: Slot) -> BootRecord {
        self.primary = slot;
        self.tries[slot.index()] = TRIAL_ATTEMPTS;
        self.trial_armed = true;
        self.last_revert = None;
        self
    }

    /// The trial slot committed.
    pub fn committed(mut self, slot: Slot) -> BootRecord {
        self.primary = slot;
        self.good[slot.index()] = true;
        self.tries[slot.index()] = 0;
        self.trial_armed = false;
        self
    }

    /// The trial slot given up: boot `back_to`, which must be good.
    pub fn reverted(mut self, failed: Slot) -> BootRecord {
        let back_to = failed.other();
        self.primary = back_to;
        self.good[failed.index()] = false;
        self.tries[failed.index()] = 0;
        self.trial_armed = false;
        self
    }

    /// Invariant I1: the record selects a slot that is good, or on trial
    /// with attempts left, or the bootloader can fall back to a good slot.
    pub fn bootable(&self) -> bool {
        let p = self.primary.index();
        self.good[p] || (self.trial_armed && self.tries[p] > 0) || self.good[1 - p]
    }
}

/// What the bootloader did on a boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Booted {
    pub slot: Slot,
    /// Booted on trial (an attempt was consumed).
    pub trial: bool,
    /// The trial of this slot ran out of attempts and the bootloader went back.
    pub reverted_from: Option<Slot>,
}

/// The bootloader's contract, run on every boot before the kernel: returns
/// the record to persist (if it changed) and what booted.
pub fn boot(record: BootRecord) -> (Option<BootRecord>, Booted) {
    let mut r = record;
    if r.trial_armed {
        let s = r.primary;
        if r.tries[s.index()] > 0 {
            r.tries[s.index()] -= 1;
            return (Some(r), Booted { slot: s, trial: true, reverted_from: None });
        }
        let back = s.other();
        r.primary = back;
        r.trial_armed = false;
        r.good[s.index()] = false;
        r.last_revert = Some(s);
        return (Some(r), Booted { slot: back, trial: false, reverted_from: Some(s) });
    }
    if !r.good[r.primary.index()] && r.good[r.primary.other().index()] {
        // Never-brick fallback: the primary is not good but the other is.
        r.primary = r.primary.other();
        return (Some(r), Booted { slot: r.primary, trial: false, reverted_from: None });
    }
    (None, Booted { slot: r.primary, trial: false, reverted_from: None })
}
