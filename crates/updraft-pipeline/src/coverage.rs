//! Line coverage from a Cobertura XML report (gcovr, coverage.py,
//! cargo-llvm-cov, JaCoCo converters) or an lcov tracefile (lcov,
//! grcov, cargo-llvm-cov --lcov).

use quick_xml::events::Event;
use quick_xml::Reader;
use serde::Serialize;

use crate::PipelineError;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    pub lines_covered: u64,
    pub lines_valid: u64,
    pub percent: f64,
    pub format: &'static str,
}

/// Reads a coverage report; the format is told by its first byte (`<`: Cobertura).
pub fn parse(text: &str, path: &str) -> Result<Coverage, PipelineError> {
    let err = |reason: String| PipelineError::Junit { path: path.to_owned(), reason };
    if text.trim_start().starts_with('<') {
        let mut reader = Reader::from_str(text);
        loop {
            match reader.read_event().map_err(|e| err(format!("not well-formed XML: {e}")))? {
                Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"coverage" => {
                    let get = |k: &[u8]| {
                        e.attributes()
                            .flatten()
                            .find(|a| a.key.as_ref() == k)
                            .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
                    };
                    let covered = get(b"lines-covered").and_then(|v| v.parse::<u64>().ok());
                    let valid = get(b"lines-valid").and_then(|v| v.parse::<u64>().ok());
                    let (c, v, percent) = match (covered, valid) {
                        (Some(c), Some(v)) => (c, v, if v == 0 { 100.0 } else { c as f64 * 100.0 / v as f64 }),
                        _ => {
                            let rate: f64 = get(b"line-rate").and_then(|v| v.parse().ok()).ok_or_else(|| {
                                err("<coverage> has neither lines-covered/lines-valid nor line-rate".into())
                            })?;
                            (0, 0, rate * 100.0)
                        }
                    };
                    return Ok(Coverage { lines_covered: c, lines_valid: v, percent, format: "cobertura" });
                }
                Event::Eof => return Err(err("no <coverage> element: not a Cobertura report".into())),
                _ => {}
            }
        }
    }
    let (mut lf, mut lh, mut records) = (0u64, 0u64, 0u32);
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("LF:") {
            lf += v.trim().parse::<u64>().map_err(|_| err(format!("bad lcov line {line:?}")))?;
            records += 1;
        } else if let Some(v) = line.strip_prefix("LH:") {
            lh += v.trim().parse::<u64>().map_err(|_| err(format!("bad lcov line {line:?}")))?;
        }
    }
    if records == 0 {
        return Err(err("neither Cobertura XML nor an lcov tracefile (no LF: lines)".into()));
    }
    let percent = if lf == 0 { 100.0 } else { lh as f64 * 100.0 / lf as f64 };
    Ok(Coverage { lines_covered: lh, lines_valid: lf, percent, format: "lcov" })
}
