//! A tolerant reader for the JSON that models write when asked for one JSON object: what a
//! strict parser refuses but a person reads without doubt is repaired, and each repair is
//! named so that the run log and `deploy_diagnosis_answer_repairs_total{kind}` say what
//! the model got wrong. Recorded from real models (tests/fixtures/llm/): line breaks and
//! tabs raw inside strings, PromQL's quotes unescaped inside a string
//! (`"up{job="node"}"`), a regex's `\.` kept as written, a comma before `]`, the answer
//! cut before its closing `"}`.
//!
//! An unescaped quote is told from a string's end by what follows it: a string ends only
//! where valid JSON could go on (a key's before `:`; a value's before `,` and the next key
//! or value, or before its container's end, or at the end of the text). The reader never
//! fails on any text (a property test holds it to that); what it cannot read is `None`.

use serde_json::{Map, Value};

/// One kind of repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Repair {
    /// A raw control character (a line break, a tab) inside a string, escaped.
    ControlCharacter,
    /// A quote inside a string that does not end it, escaped.
    InnerQuote,
    /// A backslash before a character JSON does not escape (`\.`), kept as written.
    InvalidEscape,
    /// A comma before `}` or `]`, dropped.
    TrailingComma,
    /// Two members or items with no comma between them.
    MissingComma,
    /// The text ended inside a string, an object or an array: closed there.
    Unclosed,
    /// Python's `True`, `False`, `None`.
    PythonLiteral,
    /// The four sections written, then written again (a small model loops until its
    /// token limit): the first run is kept.
    RepeatedSections,
}

impl Repair {
    /// The label of `deploy_diagnosis_answer_repairs_total{kind}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Repair::ControlCharacter => "control_character",
            Repair::InnerQuote => "inner_quote",
            Repair::InvalidEscape => "invalid_escape",
            Repair::TrailingComma => "trailing_comma",
            Repair::MissingComma => "missing_comma",
            Repair::Unclosed => "unclosed",
            Repair::PythonLiteral => "python_literal",
            Repair::RepeatedSections => "repeated_sections",
        }
    }
}

/// Nesting deeper than this is not a report (and would cost stack).
const MAX_DEPTH: usize = 64;

/// Where a string stands: it tells which characters may follow its closing quote.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Key,
    ObjectValue,
    ArrayItem,
}

struct Reader<'a> {
    text: &'a [u8],
    at: usize,
    repairs: Vec<Repair>,
}

/// The object that starts `text` (at its `{`), read leniently, with the repairs it took;
/// `None` when it is not one.
pub fn object(text: &str) -> Option<(Value, Vec<Repair>)> {
    let mut r = Reader {
        text: text.as_bytes(),
        at: 0,
        repairs: Vec::new(),
    };
    if r.peek() != Some(b'{') {
        return None;
    }
    let value = r.object(0)?;
    let mut repairs = r.repairs;
    repairs.sort();
    repairs.dedup();
    Some((value, repairs))
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    /// The next byte that is not white space, from `from`.
    fn next_solid(&self, from: usize) -> Option<(usize, u8)> {
        self.text[from.min(self.text.len())..]
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .map(|i| (from + i, self.text[from + i]))
    }

    fn value(&mut self, place: Place, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_space();
        match self.peek()? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string(place, depth).map(Value::String),
            b'-' | b'0'..=b'9' => self.number(),
            _ => self.literal(),
        }
    }

    fn object(&mut self, depth: usize) -> Option<Value> {
        self.at += 1; // '{'
        let mut map = Map::new();
        loop {
            self.skip_space();
            match self.peek() {
                None => {
                    self.repairs.push(Repair::Unclosed);
                    return Some(Value::Object(map));
                }
                Some(b'}') => {
                    self.at += 1;
                    return Some(Value::Object(map));
                }
                Some(b'"') => {}
                Some(_) => return None,
            }
            let key = self.string(Place::Key, depth)?;
            self.skip_space();
            match self.peek() {
                Some(b':') => self.at += 1,
                // Cut after the key: the member is dropped.
                None => {
                    self.repairs.push(Repair::Unclosed);
                    return Some(Value::Object(map));
                }
                Some(_) => return None,
            }
            self.skip_space();
            if self.peek().is_none() {
                self.repairs.push(Repair::Unclosed);
                return Some(Value::Object(map));
            }
            let value = self.value(Place::ObjectValue, depth)?;
            map.insert(key, value);
            self.skip_space();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    if let Some((i, b'}')) = self.next_solid(self.at) {
                        self.repairs.push(Repair::TrailingComma);
                        self.at = i + 1;
                        return Some(Value::Object(map));
                    }
                }
                Some(b'}') => {
                    self.at += 1;
                    return Some(Value::Object(map));
                }
                Some(b'"') => self.repairs.push(Repair::MissingComma),
                None => {
                    self.repairs.push(Repair::Unclosed);
                    return Some(Value::Object(map));
                }
                Some(_) => return None,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<Value> {
        self.at += 1; // '['
        let mut items = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                None => {
                    self.repairs.push(Repair::Unclosed);
                    return Some(Value::Array(items));
                }
                Some(b']') => {
                    self.at += 1;
                    return Some(Value::Array(items));
                }
                _ => {}
            }
            items.push(self.value(Place::ArrayItem, depth)?);
            self.skip_space();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    if let Some((i, b']')) = self.next_solid(self.at) {
                        self.repairs.push(Repair::TrailingComma);
                        self.at = i + 1;
                        return Some(Value::Array(items));
                    }
                }
                Some(b']') => {
                    self.at += 1;
                    return Some(Value::Array(items));
                }
                Some(b'"' | b'{' | b'[') => self.repairs.push(Repair::MissingComma),
                None => {
                    self.repairs.push(Repair::Unclosed);
                    return Some(Value::Array(items));
                }
                Some(_) => return None,
            }
        }
    }

    /// Whether the bracket at `at` can close its container at `depth`: what follows a
    /// nested one is `,`, a closing bracket or the end; after the outermost object comes
    /// prose or a fence, but no more quoted text (a `}` inside a string, as in PromQL's
    /// `{job="a"}[5m]`, has its string's rest after it).
    fn closes(&self, at: usize, depth: usize) -> bool {
        if depth == 0 {
            let rest = &self.text[at + 1..];
            let fence = rest
                .windows(3)
                .position(|w| w == b"```")
                .unwrap_or(rest.len());
            return !rest[..fence].contains(&b'"');
        }
        matches!(
            self.next_solid(at + 1),
            None | Some((_, b',' | b'}' | b']'))
        )
    }

    /// Whether the quote at `at` ends a string standing at `place`, in a container at
    /// `depth`.
    fn ends_string(&self, at: usize, place: Place, depth: usize) -> bool {
        let Some((next, b)) = self.next_solid(at + 1) else {
            return true;
        };
        let value_start = |b: u8| {
            matches!(
                b,
                b'"' | b'{' | b'[' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n' | b'T' | b'F' | b'N'
            )
        };
        match (place, b) {
            (Place::Key, b':') => true,
            (Place::ObjectValue, b'}') | (Place::ArrayItem, b']') => self.closes(next, depth),
            (Place::ObjectValue, b',') => {
                matches!(self.next_solid(next + 1), None | Some((_, b'"' | b'}')))
            }
            (Place::ArrayItem, b',') => match self.next_solid(next + 1) {
                None => true,
                Some((_, b)) => value_start(b) || b == b']',
            },
            // The next member with its comma forgotten: `"a": "x" "b": ...`.
            (Place::ObjectValue, b'"') => self.key_follows(next),
            _ => false,
        }
    }

    /// Whether a key (`"...":`) starts at `at`.
    fn key_follows(&self, at: usize) -> bool {
        let rest = &self.text[at + 1..];
        rest.iter()
            .position(|&b| b == b'"' || b == b'\n')
            .is_some_and(|end| {
                rest[end] == b'"' && matches!(self.next_solid(at + 1 + end + 1), Some((_, b':')))
            })
    }

    fn string(&mut self, place: Place, depth: usize) -> Option<String> {
        self.at += 1; // '"'
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                self.repairs.push(Repair::Unclosed);
                return Some(String::from_utf8_lossy(&out).into_owned());
            };
            match b {
                b'"' if self.ends_string(self.at, place, depth) => {
                    self.at += 1;
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
                b'"' => {
                    self.repairs.push(Repair::InnerQuote);
                    out.push(b'"');
                    self.at += 1;
                }
                b'\\' => {
                    self.at += 1;
                    match self.peek() {
                        None => {
                            self.repairs.push(Repair::Unclosed);
                            return Some(String::from_utf8_lossy(&out).into_owned());
                        }
                        Some(e @ (b'"' | b'\\' | b'/')) => {
                            out.push(e);
                            self.at += 1;
                        }
                        Some(b'n') => self.escaped(&mut out, b'\n'),
                        Some(b't') => self.escaped(&mut out, b'\t'),
                        Some(b'r') => self.escaped(&mut out, b'\r'),
                        Some(b'b') => self.escaped(&mut out, 0x08),
                        Some(b'f') => self.escaped(&mut out, 0x0c),
                        Some(b'u') => self.unicode(&mut out),
                        Some(_) => {
                            self.repairs.push(Repair::InvalidEscape);
                            out.push(b'\\');
                        }
                    }
                }
                b if b < 0x20 => {
                    self.repairs.push(Repair::ControlCharacter);
                    out.push(b);
                    self.at += 1;
                }
                b => {
                    out.push(b);
                    self.at += 1;
                }
            }
        }
    }

    fn escaped(&mut self, out: &mut Vec<u8>, byte: u8) {
        out.push(byte);
        self.at += 1;
    }

    /// `\uXXXX`, with a surrogate pair when one follows; a bad one kept as written.
    fn unicode(&mut self, out: &mut Vec<u8>) {
        let hex = |at: usize| {
            self.text
                .get(at..at + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
        };
        let Some(first) = hex(self.at + 1) else {
            self.repairs.push(Repair::InvalidEscape);
            out.push(b'\\');
            return;
        };
        self.at += 5;
        let code = if (0xD800..0xDC00).contains(&first)
            && self.text.get(self.at..self.at + 2) == Some(b"\\u")
        {
            match hex(self.at + 2) {
                Some(low @ 0xDC00..=0xDFFF) => {
                    self.at += 6;
                    0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00)
                }
                _ => first,
            }
        } else {
            first
        };
        let c = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }

    fn number(&mut self) -> Option<Value> {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
        {
            self.at += 1;
        }
        let text = std::str::from_utf8(&self.text[start..self.at]).ok()?;
        serde_json::from_str(text).ok()
    }

    fn literal(&mut self) -> Option<Value> {
        let rest = &self.text[self.at..];
        let (value, len, python) = [
            (&b"true"[..], Value::Bool(true), false),
            (b"false", Value::Bool(false), false),
            (b"null", Value::Null, false),
            (b"True", Value::Bool(true), true),
            (b"False", Value::Bool(false), true),
            (b"None", Value::Null, true),
        ]
        .into_iter()
        .find(|(word, _, _)| rest.starts_with(word))
        .map(|(word, value, python)| (value, word.len(), python))?;
        if python {
            self.repairs.push(Repair::PythonLiteral);
        }
        self.at += len;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn read(text: &str) -> (Value, Vec<Repair>) {
        object(text).unwrap_or_else(|| panic!("not read: {text}"))
    }

    #[test]
    fn valid_json_needs_no_repair() {
        let text = r#"{"promQL": ["rate(x{job=\"a\"}[5m])"], "content": "a\nb", "n": -1.5e3, "ok": true, "z": null, "u": "\u00e9\ud83d\ude00"}"#;
        let (value, repairs) = read(text);
        assert_eq!(value, serde_json::from_str::<Value>(text).unwrap());
        assert!(repairs.is_empty());
    }

    #[test]
    fn what_real_models_write_is_read_as_meant() {
        // Raw line breaks, inner PromQL quotes, a trailing comma in the array.
        let (value, repairs) = read(
            "{\n  \"promQL\": [\n    \"rate(node_cpu_seconds_total{mode=\"idle\",instance=\"web-1\"}[5m])\",\n    \"up\",\n  ],\n  \"content\": \"【问题概述】\nCPU 饱和\n【根因分析】\nx\"\n}",
        );
        assert_eq!(
            value,
            json!({
                "promQL": ["rate(node_cpu_seconds_total{mode=\"idle\",instance=\"web-1\"}[5m])", "up"],
                "content": "【问题概述】\nCPU 饱和\n【根因分析】\nx"
            })
        );
        assert_eq!(
            repairs,
            vec![
                Repair::ControlCharacter,
                Repair::InnerQuote,
                Repair::TrailingComma
            ]
        );
    }

    #[test]
    fn a_cut_answer_is_closed_where_it_ends() {
        let (value, repairs) = read("{\"promQL\": [\"up\"], \"content\": \"【问题概述】\nCPU");
        assert_eq!(
            value,
            json!({"promQL": ["up"], "content": "【问题概述】\nCPU"})
        );
        assert_eq!(repairs, vec![Repair::ControlCharacter, Repair::Unclosed]);
        let (value, _) = read("{\"promQL\": [\"up\", \"node_lo");
        assert_eq!(value, json!({"promQL": ["up", "node_lo"]}));
        let (value, _) = read("{\"promQL\": [\"up\"], \"content\":");
        assert_eq!(value, json!({"promQL": ["up"]}));
    }

    #[test]
    fn regex_escapes_and_python_literals_and_forgotten_commas() {
        let (value, repairs) =
            read(r#"{"q": "node_filesystem_avail_bytes{mountpoint=~\"/data\.*\"}" "ok": True}"#);
        assert_eq!(
            value,
            json!({"q": "node_filesystem_avail_bytes{mountpoint=~\"/data\\.*\"}", "ok": true})
        );
        assert_eq!(
            repairs,
            vec![
                Repair::InvalidEscape,
                Repair::MissingComma,
                Repair::PythonLiteral
            ]
        );
    }

    #[test]
    fn what_is_no_object_is_not_read() {
        assert!(object("not json").is_none());
        assert!(object("{promQL: []}").is_none());
        assert!(object(&"[".repeat(200)).is_none());
        assert!(object(&format!("{{\"a\": {}", "[".repeat(200))).is_none());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            let _ = object(&format!("{{{s}"));
        }

        #[test]
        fn never_panics_on_json_like_noise(s in "[{}\\[\\]\":,a-zA-Z0-9\\\\ \n]{0,300}") {
            let _ = object(&format!("{{{s}"));
        }

        #[test]
        fn valid_objects_are_read_exactly(q in "\\PC{0,40}", c in "\\PC{0,80}", n in proptest::num::i64::ANY) {
            let v = json!({"promQL": [q], "content": c, "n": n, "nested": {"a": [1, {"b": null}]}});
            let (read, repairs) = object(&v.to_string()).unwrap();
            prop_assert_eq!(read, v);
            prop_assert!(repairs.is_empty());
        }
    }
}
