//! The one printer: data on stdout (human text or `--json`), people on
//! stderr (progress bars, warnings). A closed stdout pipe is not an error.

#![allow(clippy::print_stdout)]

use std::cell::RefCell;
use std::io::{self, IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Prints `value` as pretty JSON, or the human text made by `human`.
pub fn emit<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&mut String)) -> anyhow::Result<()> {
    let mut text = String::new();
    if json {
        text = serde_json::to_string_pretty(value)?;
        text.push('\n');
    } else {
        human(&mut text);
    }
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Whether progress bars may be drawn.
pub fn progress_enabled(quiet: bool, json: bool) -> bool {
    !quiet && !json && std::env::var_os("NO_PROGRESS").is_none() && io::stderr().is_terminal()
}

/// A progress bar on stderr for the bundle library.
pub struct Bar {
    bar: RefCell<Option<ProgressBar>>,
    enabled: bool,
}

impl Bar {
    pub fn new(enabled: bool) -> Self {
        Bar { bar: RefCell::new(None), enabled }
    }
}

impl updraft_bundle::Progress for Bar {
    fn start(&self, label: &str, total_bytes: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::new(total_bytes);
        let template = if std::env::var_os("NO_COLOR").is_none() {
            "{msg:>18} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
        } else {
            "{msg:>18} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
        };
        bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
        bar.set_message(label.to_owned());
        *self.bar.borrow_mut() = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if let Some(b) = self.bar.borrow().as_ref() {
            b.inc(bytes);
        }
    }

    fn finish(&self) {
        if let Some(b) = self.bar.borrow_mut().take() {
            b.finish_and_clear();
        }
    }
}

/// Short form of a 64-hex-digit id for human output.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(16)]
}
