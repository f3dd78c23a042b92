//! Range query results, summarised for the model. A 30-minute `execute_range_query` of
//! `node_cpu_seconds_total` is tens of kilobytes of JSON; cut to `AI.ToolResultMaxChars`
//! the model would see part of one series and miss the anomaly. Each series becomes one
//! line instead: its labels, its points, and the numbers that show a change.
//!
//! The specification, shared with the Python runner (`summarise_range` in
//! `docker/runner/diagnosis_runner.py`, which must print the same text for the same
//! input; a test runs both on one fixture):
//!
//! - Input: the tool's text. Only a JSON object whose `resultType` is `matrix` and whose
//!   `result` is a list is summarised; any other text passes unchanged.
//! - First line: `range query summarised by deploy-diagnosis: {S} series, {P} points (raw
//!   values omitted)`.
//! - Then one line per series, in the order given (an entry without a `metric` object and a
//!   `values` list is left out; the first line still counts it):
//!   `- {labels}: {n} points {first}..{last}; min {min} mean {mean} max {max} last {last};
//!   largest change {change} at {time}` (`largest change none` with fewer than two values).
//! - `{labels}`: `__name__` (if any) followed by `{k="v", ...}` with the other labels sorted
//!   by key; `{}` when there are none besides the name.
//! - Values are the points' strings parsed as numbers; non-finite ones (`NaN`, `±Inf`) are
//!   counted in `n` but left out of the statistics (no `min … last` part when none is
//!   finite). A point that is not `[number, string]` is not counted at all. The largest
//!   change is the largest
//!   absolute difference between consecutive finite values, printed signed (`+1.5`, `-2`),
//!   at the time of the later point; ties keep the first.
//! - Numbers: fixed three decimals, then trailing zeros and a trailing point removed; `-0`
//!   prints as `0`. Times: UTC `YYYY-MM-DDTHH:MM:SSZ` of the whole seconds.

use std::fmt::Write as _;

use serde_json::Value;

/// The tool whose results are summarised.
pub const RANGE_TOOL: &str = "execute_range_query";

/// A number as the specification prints it.
fn number(x: f64) -> String {
    let fixed = format!("{x:.3}");
    let trimmed = fixed.trim_end_matches('0').trim_end_matches('.');
    match trimmed {
        "-0" | "" => "0".to_owned(),
        other => other.to_owned(),
    }
}

/// A Prometheus timestamp (unix seconds) as the specification prints it.
fn time(unix: f64) -> String {
    chrono::DateTime::from_timestamp(unix.floor() as i64, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| number(unix))
}

fn labels(metric: &serde_json::Map<String, Value>) -> String {
    let name = metric
        .get("__name__")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut pairs: Vec<(&String, String)> = metric
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        .collect();
    pairs.sort();
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(", "))
}

fn series_line(series: &Value) -> Option<String> {
    let metric = series.get("metric")?.as_object()?;
    let points = series.get("values")?.as_array()?;
    let parsed: Vec<(f64, Option<f64>)> = points
        .iter()
        .filter_map(|p| {
            let t = p.get(0)?.as_f64()?;
            let v = p.get(1)?.as_str()?.parse::<f64>().ok();
            Some((t, v.filter(|v| v.is_finite())))
        })
        .collect();
    let mut line = format!("- {}: {} points", labels(metric), parsed.len());
    if let (Some(first), Some(last)) = (parsed.first(), parsed.last()) {
        let _ = write!(line, " {}..{}", time(first.0), time(last.0));
    }
    let finite: Vec<(f64, f64)> = parsed
        .iter()
        .filter_map(|(t, v)| v.map(|v| (*t, v)))
        .collect();
    if let Some(&(_, last)) = finite.last() {
        let values = finite.iter().map(|(_, v)| *v);
        let min = values.clone().fold(f64::INFINITY, f64::min);
        let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
        let mean = values.sum::<f64>() / finite.len() as f64;
        let _ = write!(
            line,
            "; min {} mean {} max {} last {}",
            number(min),
            number(mean),
            number(max),
            number(last)
        );
    }
    let mut largest: Option<(f64, f64)> = None;
    for pair in finite.windows(2) {
        let change = pair[1].1 - pair[0].1;
        if largest.is_none_or(|(c, _)| change.abs() > c.abs()) {
            largest = Some((change, pair[1].0));
        }
    }
    match largest {
        Some((change, at)) => {
            let sign = if change > 0.0 { "+" } else { "" };
            let _ = write!(
                line,
                "; largest change {sign}{} at {}",
                number(change),
                time(at)
            );
        }
        None => line.push_str("; largest change none"),
    }
    Some(line)
}

/// The summary of a range query result, or `None` when the text is not one.
pub fn summarise_range(text: &str) -> Option<String> {
    let value: Value = serde_json::from_str(text).ok()?;
    if value.get("resultType")?.as_str()? != "matrix" {
        return None;
    }
    let result = value.get("result")?.as_array()?;
    let lines: Vec<String> = result.iter().filter_map(series_line).collect();
    let points: usize = result
        .iter()
        .filter_map(|s| s.get("values")?.as_array().map(Vec::len))
        .sum();
    let mut out = format!(
        "range query summarised by deploy-diagnosis: {} series, {points} points (raw values omitted)",
        result.len()
    );
    for line in lines {
        out.push('\n');
        out.push_str(&line);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_times_print_as_specified() {
        let cases = [
            (1.0, "1"),
            (1.5, "1.5"),
            (0.12345, "0.123"),
            (-0.0001, "0"),
            (123456.78, "123456.78"),
            (-2.0, "-2"),
        ];
        for (x, s) in cases {
            assert_eq!(number(x), s, "{x}");
        }
        assert_eq!(time(1_764_064_800.9), "2025-11-25T10:00:00Z");
    }

    #[test]
    fn a_matrix_becomes_one_line_per_series_and_other_text_passes() {
        let text = r#"{"resultType": "matrix", "result": [
            {"metric": {"__name__": "up", "job": "node", "instance": "a:9100"},
             "values": [[1764064800, "1"], [1764064815, "NaN"], [1764064830, "0"], [1764064845, "0"]]},
            {"metric": {}, "values": [[1764064800, "5"]]}]}"#;
        assert_eq!(
            summarise_range(text).unwrap(),
            "range query summarised by deploy-diagnosis: 2 series, 5 points (raw values omitted)\n\
             - up{instance=\"a:9100\", job=\"node\"}: 4 points 2025-11-25T10:00:00Z..2025-11-25T10:00:45Z; \
             min 0 mean 0.333 max 1 last 0; largest change -1 at 2025-11-25T10:00:30Z\n\
             - {}: 1 points 2025-11-25T10:00:00Z..2025-11-25T10:00:00Z; min 5 mean 5 max 5 last 5; largest change none"
        );
        assert_eq!(
            summarise_range(r#"{"resultType": "vector", "result": []}"#),
            None
        );
        assert_eq!(summarise_range("Bad Request: parse error"), None);
    }
}
