//! Checks of every field a device sends (enrollment, check-in, events,
//! health) against `updraft_proto::limits`: a value that is not allowed is
//! a 422 `invalid-field`, too many or too long a 422 `too-large`, each
//! naming the field and the rule (413 is for a whole body over the limit).

use updraft_proto::limits::*;
use updraft_types::ReleaseId;

use crate::error::{ApiError, ApiResult};

fn invalid(message: String) -> ApiError {
    ApiError::unprocessable("invalid-field", message)
}

fn too_large(message: String) -> ApiError {
    ApiError::unprocessable("too-large", message)
}

/// An attribute's value: 1 to [`updraft_proto::MAX_INVENTORY_VALUE_LEN`] characters.
pub fn attribute_value(name: &str, v: &str) -> ApiResult<()> {
    let max = updraft_proto::MAX_INVENTORY_VALUE_LEN;
    if v.is_empty() {
        return Err(invalid(format!("attribute {name} is empty; remove it instead")));
    }
    let n = v.chars().count();
    if n > max {
        return Err(too_large(format!("attribute {name} is {n} characters; at most {max}")));
    }
    Ok(())
}

/// An id or a name: 1 to [`MAX_ID_BYTES`] of `A-Z a-z 0-9 . _ - @ + :`, no `..`.
pub fn name(field: &str, s: &str) -> ApiResult<()> {
    if s.len() > MAX_ID_BYTES {
        return Err(too_large(format!("{field} is {} bytes; at most {MAX_ID_BYTES}", s.len())));
    }
    let ok = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+' | b':'))
        && !s.contains("..");
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{field} {s:?}: 1 to {MAX_ID_BYTES} characters of A-Z a-z 0-9 . _ - @ + :")))
    }
}

/// A release id: `NAME@VERSION` with a semantic version.
pub fn release(field: &str, r: &ReleaseId) -> ApiResult<()> {
    name(field, r.as_str())?;
    let ok = r
        .as_str()
        .split_once('@')
        .is_some_and(|(n, v)| !n.is_empty() && !n.contains('@') && semver::Version::parse(v).is_ok());
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{field} {:?} is not NAME@VERSION with a semantic version (sensor-fw@2.3.1)", r.as_str())))
    }
}

/// Component names and versions.
pub fn components<'a>(field: &str, c: impl ExactSizeIterator<Item = (&'a String, &'a String)>) -> ApiResult<()> {
    if c.len() > MAX_COMPONENTS {
        return Err(too_large(format!("{} {field}; at most {MAX_COMPONENTS}", c.len())));
    }
    for (k, v) in c {
        name("component", k)?;
        semver::Version::parse(v).map_err(|e| invalid(format!("component {k} version {v:?}: {e}")))?;
    }
    Ok(())
}

pub fn tags(t: &[String]) -> ApiResult<()> {
    if t.len() > MAX_TAGS {
        return Err(too_large(format!("{} tags; at most {MAX_TAGS}", t.len())));
    }
    t.iter().try_for_each(|t| name("tag", t))
}

pub fn utc_offset(m: i16) -> ApiResult<()> {
    if (MIN_UTC_OFFSET_MIN..=MAX_UTC_OFFSET_MIN).contains(&m) {
        Ok(())
    } else {
        Err(invalid(format!(
            "utcOffsetMin {m}: between {MIN_UTC_OFFSET_MIN} and {MAX_UTC_OFFSET_MIN} (UTC-12:00 to UTC+14:00)"
        )))
    }
}

pub fn health(req: &updraft_proto::HealthRequest) -> ApiResult<()> {
    if req.period_s == 0 || req.period_s > MAX_HEALTH_PERIOD_S {
        return Err(invalid(format!("periodS {}: between 1 and {MAX_HEALTH_PERIOD_S}", req.period_s)));
    }
    if req.boots > MAX_HEALTH_COUNT || req.crashes > MAX_HEALTH_COUNT {
        return Err(invalid(format!("boots and crashes: at most {MAX_HEALTH_COUNT} in one report")));
    }
    if req.metrics.len() > MAX_METRICS {
        return Err(too_large(format!("{} metrics; at most {MAX_METRICS}", req.metrics.len())));
    }
    for (k, v) in &req.metrics {
        if k.len() > MAX_METRIC_NAME_BYTES {
            return Err(too_large(format!("a metric name of {} bytes; at most {MAX_METRIC_NAME_BYTES}", k.len())));
        }
        name("metric name", k)?;
        if !v.is_finite() {
            return Err(invalid(format!("metric {k}: a finite number")));
        }
    }
    Ok(())
}

pub fn event_detail(d: Option<&str>) -> ApiResult<()> {
    match d {
        Some(d) if d.len() > MAX_EVENT_DETAIL_BYTES => Err(too_large(format!(
            "an event detail of {} bytes; at most {MAX_EVENT_DETAIL_BYTES} (send the tail of the log)",
            d.len()
        ))),
        _ => Ok(()),
    }
}
