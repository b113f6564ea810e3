//! JUnit XML, as pytest, cargo-nextest, Zephyr's twister, ctest and most
//! test runners write it: `<testsuites>` (optional) of `<testsuite>` of
//! `<testcase>`, whose `<failure>`, `<error>` or `<skipped>` child says how it
//! went. nextest's `<flakyFailure>` (failed, then passed on a retry) and
//! `<rerunFailure>` are understood.

use serde::Serialize;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::PipelineError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Failed,
    Error,
    Skipped,
}

/// One test case.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Case {
    pub suite: String,
    pub classname: String,
    pub name: String,
    pub outcome: Outcome,
    /// The runner retried it and it both failed and passed (nextest).
    pub retried_flaky: bool,
    pub message: String,
    pub time_s: f64,
}

impl Case {
    /// `classname::name` (or `suite::name` without a classname): the test's identity.
    pub fn id(&self) -> String {
        let scope = if self.classname.is_empty() { &self.suite } else { &self.classname };
        format!("{scope}::{}", self.name)
    }
}

fn attr(e: &BytesStart, key: &[u8]) -> String {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
        .unwrap_or_default()
}

/// Reads a JUnit XML document.
pub fn parse(text: &str, path: &str) -> Result<Vec<Case>, PipelineError> {
    let err = |reason: String| PipelineError::Junit { path: path.to_owned(), reason };
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut cases = Vec::new();
    let mut suites: Vec<String> = Vec::new();
    let mut current: Option<Case> = None;
    let mut saw_root = false;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| err(format!("not well-formed XML at byte {}: {e}", reader.buffer_position())))?;
        match ev {
            Event::Start(e) => open(&e, &mut suites, &mut current, &mut cases, &mut saw_root),
            Event::Empty(e) => {
                open(&e, &mut suites, &mut current, &mut cases, &mut saw_root);
                // A self-closed element has no end tag.
                match e.name().as_ref() {
                    b"testcase" => cases.extend(current.take()),
                    b"testsuite" => {
                        suites.pop();
                    }
                    _ => {}
                }
            }
            Event::End(e) => match e.name().as_ref() {
                b"testcase" => cases.extend(current.take()),
                b"testsuite" => {
                    suites.pop();
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root {
        return Err(err("no <testsuites> or <testsuite> element: this is not a JUnit report".into()));
    }
    Ok(cases)
}

fn open(
    e: &BytesStart,
    suites: &mut Vec<String>,
    current: &mut Option<Case>,
    cases: &mut Vec<Case>,
    saw_root: &mut bool,
) {
    match e.name().as_ref() {
        b"testsuites" => *saw_root = true,
        b"testsuite" => {
            *saw_root = true;
            suites.push(attr(e, b"name"));
        }
        b"testcase" => {
            cases.extend(current.take());
            *current = Some(Case {
                suite: suites.last().cloned().unwrap_or_default(),
                classname: attr(e, b"classname"),
                name: attr(e, b"name"),
                outcome: Outcome::Passed,
                retried_flaky: false,
                message: String::new(),
                time_s: attr(e, b"time").parse().unwrap_or(0.0),
            });
        }
        kind => {
            let Some(c) = current.as_mut() else { return };
            let message = attr(e, b"message");
            match kind {
                b"failure" => c.outcome = Outcome::Failed,
                b"error" => c.outcome = Outcome::Error,
                b"skipped" => c.outcome = Outcome::Skipped,
                // Failed, then passed on a retry: the case passed, flakily.
                b"flakyFailure" | b"flakyError" => c.retried_flaky = true,
                _ => {}
            }
            if c.message.is_empty() {
                c.message = message;
            }
        }
    }
}
