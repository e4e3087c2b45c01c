//! Mapping of Postgres values in text output format to JSON.
//!
//! pgoutput sends every column in its type's text output format; [`TypeRegistry::to_json`]
//! turns that text into the JSON of a CDC change record (`docs/design.md`, "Event model"):
//!
//! | Postgres | JSON |
//! |---|---|
//! | `bool` | `true` / `false` |
//! | `int2`, `int4`, `int8`, `oid` | number |
//! | `float4`, `float8` | number; `NaN`, `Infinity`, `-Infinity` as strings |
//! | `numeric` | string, exactly as Postgres wrote it (no float rounding) |
//! | `bytea` | base64 string (standard alphabet, padded) |
//! | `timestamptz` | RFC 3339 string with offset, fraction kept as given |
//! | `timestamp` | `YYYY-MM-DDTHH:MM:SS[.ffffff]`, no offset |
//! | `date`, `time`, `timetz`, `interval`, text-like types | string as given |
//! | `json`, `jsonb` | the parsed JSON |
//! | arrays | JSON arrays (nested for multi-dimensional), elements mapped by element type |
//! | enums, composites, unknown types | string as given |
//! | domains | as their base type |
//!
//! The mapping is total: text that does not have the shape the type promises (which
//! Postgres never sends, or sends only under a non-ISO `DateStyle`) stays a string as
//! given rather than failing the stream. `infinity` and `-infinity` timestamps and dates
//! are strings for that reason.
//!
//! Architecture invariant: pure. No IO and no panic on any input.

use std::collections::HashMap;
use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

/// Bounds the recursion through domains, arrays and nested array levels, so a cycle of
/// registered domains or a deeply nested literal cannot exhaust the stack. Postgres
/// itself allows at most 6 array dimensions.
const MAX_DEPTH: usize = 32;

/// What a type learnt at run time is, as far as the JSON mapping cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeKind {
    /// An enum: its values are strings.
    Enum,
    /// A domain: mapped as its base type.
    Domain {
        /// OID of the base type (itself built in or registered).
        base: u32,
    },
    /// An array type: mapped to a JSON array of its elements.
    Array {
        /// OID of the element type (itself built in or registered).
        element: u32,
    },
    /// A composite (row) type: the text literal as a string.
    Composite,
    /// Anything else (ranges, extension types …): the text as a string.
    Other,
}

#[derive(Clone, Debug)]
struct Registered {
    kind: TypeKind,
    name: Option<String>,
}

/// The types the JSON mapping knows: Postgres's built-in types, always, plus the types
/// registered at run time (enums, domains, arrays of them … learnt from the catalog when
/// a pgoutput Type message announces them).
///
/// Built-in OIDs always map as built-ins; registering one has no effect on the mapping.
#[derive(Clone, Debug, Default)]
pub struct TypeRegistry {
    types: HashMap<u32, Registered>,
}

impl TypeRegistry {
    /// A registry that knows only the built-in types.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the kind of a type learnt at run time, keeping a name
    /// registered earlier for that OID.
    pub fn insert(&mut self, oid: u32, kind: TypeKind) {
        self.types
            .entry(oid)
            .and_modify(|r| r.kind = kind)
            .or_insert(Registered { kind, name: None });
    }

    /// Registers (or replaces) a type learnt at run time with its name, which
    /// [`TypeRegistry::type_name`] then reports (e.g. in schema events).
    pub fn insert_named(&mut self, oid: u32, name: impl Into<String>, kind: TypeKind) {
        self.types.insert(
            oid,
            Registered {
                kind,
                name: Some(name.into()),
            },
        );
    }

    /// The registered kind of `oid`, or `None` for built-in and unknown types.
    pub fn kind(&self, oid: u32) -> Option<TypeKind> {
        self.types.get(&oid).map(|r| r.kind)
    }

    /// The type's name: `pg_type.typname` for built-ins (`int4`, `_text` …), the
    /// registered name otherwise; `None` when neither is known.
    pub fn type_name(&self, oid: u32) -> Option<&str> {
        match builtin(oid) {
            Some((name, _)) => Some(name),
            None => self.types.get(&oid).and_then(|r| r.name.as_deref()),
        }
    }

    /// Maps one value in text output format of type `type_oid` to JSON (see the module
    /// documentation for the mapping). Total: never fails, never panics.
    pub fn to_json(&self, type_oid: u32, text: &str) -> Value {
        self.map(type_oid, text, 0)
    }

    fn map(&self, oid: u32, text: &str, depth: usize) -> Value {
        if depth > MAX_DEPTH {
            return string(text);
        }
        if let Some((_, mapping)) = builtin(oid) {
            return match mapping {
                Mapping::Text => string(text),
                Mapping::Bool => match text {
                    "t" => Value::Bool(true),
                    "f" => Value::Bool(false),
                    _ => string(text),
                },
                Mapping::Int => text
                    .parse::<i64>()
                    .map_or_else(|_| string(text), Value::from),
                Mapping::Oid => text
                    .parse::<u32>()
                    .map_or_else(|_| string(text), Value::from),
                Mapping::Float => text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or_else(|| string(text), Value::Number),
                Mapping::Bytea => {
                    bytea(text).map_or_else(|| string(text), |b| B64.encode(b).into())
                }
                Mapping::Timestamp => {
                    timestamp(text, false).map_or_else(|| string(text), Value::String)
                }
                Mapping::Timestamptz => {
                    timestamp(text, true).map_or_else(|| string(text), Value::String)
                }
                Mapping::Json => serde_json::from_str(text).unwrap_or_else(|_| string(text)),
                Mapping::Array(element) => self.array(element, text, depth),
            };
        }
        match self.kind(oid) {
            Some(TypeKind::Domain { base }) => self.map(base, text, depth + 1),
            Some(TypeKind::Array { element }) => self.array(element, text, depth),
            Some(TypeKind::Enum | TypeKind::Composite | TypeKind::Other) | None => string(text),
        }
    }

    /// Appends the JSON of one value (see [`TypeRegistry::to_json`]) to `out`: the bytes
    /// `serde_json` writes for `to_json(type_oid, text)`, without building the `Value`
    /// for the types rows are mostly made of. Total: never fails, never panics.
    pub fn write_json(&self, type_oid: u32, text: &str, out: &mut Vec<u8>) {
        self.write(type_oid, text, 0, out);
    }

    fn write(&self, oid: u32, text: &str, depth: usize, out: &mut Vec<u8>) {
        if depth > MAX_DEPTH {
            return write_json(out, text);
        }
        if let Some((_, mapping)) = builtin(oid) {
            return match mapping {
                Mapping::Text => write_json(out, text),
                Mapping::Bool => match text {
                    "t" => out.extend_from_slice(b"true"),
                    "f" => out.extend_from_slice(b"false"),
                    _ => write_json(out, text),
                },
                Mapping::Int => match text.parse::<i64>() {
                    Ok(n) => write_json(out, &n),
                    Err(_) => write_json(out, text),
                },
                Mapping::Oid => match text.parse::<u32>() {
                    Ok(n) => write_json(out, &n),
                    Err(_) => write_json(out, text),
                },
                // `Number::from_f64` takes exactly the finite floats.
                Mapping::Float => match text.parse::<f64>() {
                    Ok(f) if f.is_finite() => write_json(out, &f),
                    _ => write_json(out, text),
                },
                Mapping::Timestamp | Mapping::Timestamptz => {
                    let start = out.len();
                    out.push(b'"');
                    let with_offset = matches!(mapping, Mapping::Timestamptz);
                    if write_timestamp(text, with_offset, out).is_some() {
                        out.push(b'"');
                    } else {
                        out.truncate(start);
                        write_json(out, text);
                    }
                }
                Mapping::Bytea | Mapping::Json | Mapping::Array(_) => {
                    write_json(out, &self.map(oid, text, depth));
                }
            };
        }
        match self.kind(oid) {
            Some(TypeKind::Domain { base }) => self.write(base, text, depth + 1, out),
            Some(TypeKind::Array { .. }) => write_json(out, &self.map(oid, text, depth)),
            Some(TypeKind::Enum | TypeKind::Composite | TypeKind::Other) | None => {
                write_json(out, text);
            }
        }
    }

    fn array(&self, element: u32, text: &str, depth: usize) -> Value {
        // `box` is the one built-in type whose array delimiter is not a comma.
        let delimiter = if element == BOX_OID { b';' } else { b',' };
        let mut parser = ArrayParser {
            registry: self,
            element,
            delimiter,
            bytes: text.as_bytes(),
            pos: 0,
        };
        parser.literal(depth).unwrap_or_else(|| string(text))
    }
}

/// `pg_type.typname` of a built-in type, e.g. `int4` for 23 and `_int4` for 1007.
pub fn builtin_type_name(oid: u32) -> Option<&'static str> {
    builtin(oid).map(|(name, _)| name)
}

fn string(text: &str) -> Value {
    Value::String(text.to_owned())
}

/// Appends `value` as compact JSON, escaped by `serde_json`.
pub(crate) fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing into a Vec cannot fail, and the values written here (strings, integers,
    // finite floats, `Value`s) always serialise.
    serde_json::to_writer(out, value).expect("serialising JSON into memory");
}

/// How a built-in type's text becomes JSON.
#[derive(Clone, Copy)]
enum Mapping {
    Text,
    Bool,
    Int,
    Oid,
    Float,
    Bytea,
    Timestamp,
    Timestamptz,
    Json,
    Array(u32),
}

const BOX_OID: u32 = 603;

/// Name and mapping of the built-in types; OIDs from `pg_type.dat`, stable across
/// Postgres versions.
fn builtin(oid: u32) -> Option<(&'static str, Mapping)> {
    use Mapping::*;
    Some(match oid {
        16 => ("bool", Bool),
        17 => ("bytea", Bytea),
        18 => ("char", Text),
        19 => ("name", Text),
        20 => ("int8", Int),
        21 => ("int2", Int),
        23 => ("int4", Int),
        24 => ("regproc", Text),
        25 => ("text", Text),
        26 => ("oid", Oid),
        27 => ("tid", Text),
        28 => ("xid", Text),
        29 => ("cid", Text),
        114 => ("json", Json),
        142 => ("xml", Text),
        600 => ("point", Text),
        601 => ("lseg", Text),
        602 => ("path", Text),
        603 => ("box", Text),
        604 => ("polygon", Text),
        628 => ("line", Text),
        650 => ("cidr", Text),
        700 => ("float4", Float),
        701 => ("float8", Float),
        718 => ("circle", Text),
        774 => ("macaddr8", Text),
        790 => ("money", Text),
        829 => ("macaddr", Text),
        869 => ("inet", Text),
        1042 => ("bpchar", Text),
        1043 => ("varchar", Text),
        1082 => ("date", Text),
        1083 => ("time", Text),
        1114 => ("timestamp", Timestamp),
        1184 => ("timestamptz", Timestamptz),
        1186 => ("interval", Text),
        1266 => ("timetz", Text),
        1560 => ("bit", Text),
        1562 => ("varbit", Text),
        1700 => ("numeric", Text),
        2205 => ("regclass", Text),
        2206 => ("regtype", Text),
        2950 => ("uuid", Text),
        3220 => ("pg_lsn", Text),
        3614 => ("tsvector", Text),
        3615 => ("tsquery", Text),
        3802 => ("jsonb", Json),
        3904 => ("int4range", Text),
        3906 => ("numrange", Text),
        3908 => ("tsrange", Text),
        3910 => ("tstzrange", Text),
        3912 => ("daterange", Text),
        3926 => ("int8range", Text),
        4072 => ("jsonpath", Text),
        5069 => ("xid8", Text),
        // Array types.
        143 => ("_xml", Array(142)),
        199 => ("_json", Array(114)),
        651 => ("_cidr", Array(650)),
        775 => ("_macaddr8", Array(774)),
        791 => ("_money", Array(790)),
        1000 => ("_bool", Array(16)),
        1001 => ("_bytea", Array(17)),
        1002 => ("_char", Array(18)),
        1003 => ("_name", Array(19)),
        1005 => ("_int2", Array(21)),
        1007 => ("_int4", Array(23)),
        1009 => ("_text", Array(25)),
        1014 => ("_bpchar", Array(1042)),
        1015 => ("_varchar", Array(1043)),
        1016 => ("_int8", Array(20)),
        1017 => ("_point", Array(600)),
        1020 => ("_box", Array(BOX_OID)),
        1021 => ("_float4", Array(700)),
        1022 => ("_float8", Array(701)),
        1028 => ("_oid", Array(26)),
        1040 => ("_macaddr", Array(829)),
        1041 => ("_inet", Array(869)),
        1115 => ("_timestamp", Array(1114)),
        1182 => ("_date", Array(1082)),
        1183 => ("_time", Array(1083)),
        1185 => ("_timestamptz", Array(1184)),
        1187 => ("_interval", Array(1186)),
        1231 => ("_numeric", Array(1700)),
        1270 => ("_timetz", Array(1266)),
        1561 => ("_bit", Array(1560)),
        1563 => ("_varbit", Array(1562)),
        2951 => ("_uuid", Array(2950)),
        3221 => ("_pg_lsn", Array(3220)),
        3643 => ("_tsvector", Array(3614)),
        3807 => ("_jsonb", Array(3802)),
        3905 => ("_int4range", Array(3904)),
        3907 => ("_numrange", Array(3906)),
        3909 => ("_tsrange", Array(3908)),
        3911 => ("_tstzrange", Array(3910)),
        3913 => ("_daterange", Array(3912)),
        3927 => ("_int8range", Array(3926)),
        _ => return None,
    })
}

/// A parser of array literals as `array_out` writes them: an optional dimension
/// decoration (`[0:1]=`), then `{…}` levels whose elements are unquoted words, `NULL`,
/// double-quoted strings with backslash escapes, or nested levels.
///
/// Returns `None` on anything malformed so the caller can fall back to the raw text.
struct ArrayParser<'a> {
    registry: &'a TypeRegistry,
    element: u32,
    delimiter: u8,
    bytes: &'a [u8],
    pos: usize,
}

impl ArrayParser<'_> {
    fn literal(&mut self, depth: usize) -> Option<Value> {
        self.skip_whitespace();
        if self.peek() == Some(b'[') {
            // Dimension decoration `[lo:hi]…=`: array_out writes it only when a lower
            // bound is not 1; JSON arrays cannot carry the bounds, so it is dropped.
            while self.peek() == Some(b'[') {
                while self.next()? != b']' {}
            }
            self.skip_whitespace();
            if self.next()? != b'=' {
                return None;
            }
            self.skip_whitespace();
        }
        let value = self.level(depth)?;
        self.skip_whitespace();
        (self.pos == self.bytes.len()).then_some(value)
    }

    fn level(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH || self.next()? != b'{' {
            return None;
        }
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Some(Value::Array(items));
        }
        loop {
            self.skip_whitespace();
            let item = match self.peek()? {
                b'{' => self.level(depth + 1)?,
                b'"' => {
                    self.pos += 1;
                    let text = self.quoted()?;
                    self.registry.map(self.element, &text, depth + 1)
                }
                _ => match self.unquoted()? {
                    None => Value::Null,
                    Some(text) => self.registry.map(self.element, &text, depth + 1),
                },
            };
            items.push(item);
            self.skip_whitespace();
            match self.next()? {
                b'}' => return Some(Value::Array(items)),
                b if b == self.delimiter => {}
                _ => return None,
            }
        }
    }

    /// The rest of a double-quoted element, after the opening quote.
    fn quoted(&mut self) -> Option<String> {
        let mut out = Vec::new();
        loop {
            match self.next()? {
                b'"' => break,
                b'\\' => out.push(self.next()?),
                b => out.push(b),
            }
        }
        // Splitting only at ASCII bytes keeps multi-byte characters whole.
        String::from_utf8(out).ok()
    }

    /// An unquoted element; `None` inside for the `NULL` marker.
    fn unquoted(&mut self) -> Option<Option<String>> {
        let mut out = Vec::new();
        let mut escaped = false;
        // Trailing whitespace is not part of the element, unless it was escaped.
        let mut keep = 0;
        loop {
            match self.peek()? {
                b'{' | b'"' => return None,
                b'}' => break,
                b if b == self.delimiter => break,
                b'\\' => {
                    self.pos += 1;
                    out.push(self.next()?);
                    escaped = true;
                    keep = out.len();
                }
                b => {
                    self.pos += 1;
                    out.push(b);
                    if !b.is_ascii_whitespace() {
                        keep = out.len();
                    }
                }
            }
        }
        out.truncate(keep);
        if out.is_empty() {
            return None;
        }
        if !escaped && out.eq_ignore_ascii_case(b"NULL") {
            return Some(None);
        }
        String::from_utf8(out).ok().map(Some)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }
}

/// Decodes bytea text output: hex format (`\x0a1b`, the default) or the older escape
/// format (`bytea_output = escape`: printable bytes as is, `\\`, and `\ooo` octal).
fn bytea(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if let Some(hex) = text.strip_prefix("\\x") {
        let hex = hex.as_bytes();
        if hex.len() % 2 != 0 {
            return None;
        }
        return hex
            .chunks_exact(2)
            .map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?))
            .collect();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let octal = bytes.get(i + 1..i + 4)?;
            if !octal.iter().all(|b| (b'0'..=b'7').contains(b)) || octal[0] > b'3' {
                return None;
            }
            out.push(octal.iter().fold(0u8, |acc, b| acc << 3 | (b - b'0')));
            i += 4;
        }
    }
    Some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Rewrites an ISO-style `timestamp[tz]` (`2026-11-25 10:00:00.123456+05:30`) as RFC 3339
/// (`2026-11-25T10:00:00.123456+05:30`), keeping the fraction as given. `None` for
/// anything else (`infinity`, BC dates, other `DateStyle`s, an offset on a `timestamp`
/// or none on a `timestamptz`).
fn timestamp(text: &str, with_offset: bool) -> Option<String> {
    let mut out = Vec::new();
    write_timestamp(text, with_offset, &mut out)?;
    String::from_utf8(out).ok()
}

/// Appends the RFC 3339 form of an ISO-style `timestamp[tz]` to `out` (see
/// `timestamp`); `None`, with `out` possibly appended to, for anything else.
///
/// Everything written is ASCII digits and `-:.T+Z`, so it needs no JSON escaping.
fn write_timestamp(text: &str, with_offset: bool, out: &mut Vec<u8>) -> Option<()> {
    let (date, rest) = text.split_once(' ')?;
    let (year, month, day) = parse_date(date)?;
    let time_len = time_prefix_len(rest)?;
    let (time, offset) = rest.split_at(time_len);
    if !with_offset {
        if !offset.is_empty() {
            return None;
        }
        out.extend_from_slice(date.as_bytes());
        out.push(b'T');
        out.extend_from_slice(time.as_bytes());
        return Some(());
    }
    let (sign, offset) = match offset.as_bytes().first()? {
        b'+' => (1, &offset[1..]),
        b'-' => (-1, &offset[1..]),
        _ => return None,
    };
    let mut parts = offset.split(':');
    let hours = two_digits(parts.next()?)?;
    let minutes = parts.next().map_or(Some(0), two_digits)?;
    let seconds = parts.next().map_or(Some(0), two_digits)?;
    if parts.next().is_some() || minutes > 59 || seconds > 59 {
        return None;
    }
    if seconds == 0 {
        out.extend_from_slice(date.as_bytes());
        out.push(b'T');
        out.extend_from_slice(time.as_bytes());
        out.push(if sign < 0 { b'-' } else { b'+' });
        push_two_digits(out, hours);
        out.push(b':');
        push_two_digits(out, minutes);
        return Some(());
    }
    // Offsets with seconds (local mean time of zones before ~1900) have no RFC 3339
    // form: convert to UTC instead.
    let clock = &time[..8];
    let fraction = &time[8..];
    let hms: Vec<i64> = clock.split(':').filter_map(|p| p.parse().ok()).collect();
    let [h, m, s] = hms[..] else { return None };
    let local = days_from_civil(year, month, day) * 86_400 + h * 3_600 + m * 60 + s;
    let utc = local - sign * (hours * 3_600 + minutes * 60 + seconds);
    let (y, mo, d) = civil_from_days(utc.div_euclid(86_400));
    let secs = utc.rem_euclid(86_400);
    write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}{fraction}Z",
        secs / 3_600,
        secs / 60 % 60,
        secs % 60
    )
    .ok()
}

/// Appends `n` (0 to 99) as two digits.
fn push_two_digits(out: &mut Vec<u8>, n: i64) {
    let n = n.clamp(0, 99) as u8;
    out.push(b'0' + n / 10);
    out.push(b'0' + n % 10);
}

/// `YYYY-MM-DD` with a year of four or more digits.
fn parse_date(date: &str) -> Option<(i64, i64, i64)> {
    let mut parts = date.split('-');
    let year = parts.next()?;
    let month = two_digits(parts.next()?)?;
    let day = two_digits(parts.next()?)?;
    if parts.next().is_some()
        || year.len() < 4
        || year.len() > 9
        || !year.bytes().all(|b| b.is_ascii_digit())
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
    {
        return None;
    }
    Some((year.parse().ok()?, month, day))
}

/// Length of the `HH:MM:SS[.f…]` that starts `rest`.
fn time_prefix_len(rest: &str) -> Option<usize> {
    let b = rest.as_bytes();
    let digits = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    if !(digits(0) && digits(1) && b.get(2) == Some(&b':') && digits(3) && digits(4))
        || b.get(5) != Some(&b':')
        || !(digits(6) && digits(7))
    {
        return None;
    }
    if b.get(8) != Some(&b'.') {
        return Some(8);
    }
    let fraction = b[9..].iter().take_while(|c| c.is_ascii_digit()).count();
    (fraction > 0).then_some(9 + fraction)
}

fn two_digits(s: &str) -> Option<i64> {
    (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn map(oid: u32, text: &str) -> Value {
        TypeRegistry::new().to_json(oid, text)
    }

    #[test]
    fn booleans() {
        assert_eq!(map(16, "t"), json!(true));
        assert_eq!(map(16, "f"), json!(false));
        assert_eq!(map(16, "maybe"), json!("maybe"));
    }

    #[test]
    fn integers() {
        assert_eq!(map(21, "-32768"), json!(-32768));
        assert_eq!(map(23, "7"), json!(7));
        assert_eq!(
            map(20, "9223372036854775807"),
            json!(9_223_372_036_854_775_807_i64)
        );
        assert_eq!(map(26, "4294967295"), json!(4_294_967_295_u32));
        assert_eq!(map(23, "x"), json!("x"));
    }

    #[test]
    fn floats() {
        assert_eq!(map(701, "1.5"), json!(1.5));
        assert_eq!(map(700, "-0.25"), json!(-0.25));
        assert_eq!(map(701, "1e+20"), json!(1e20));
        assert_eq!(map(701, "NaN"), json!("NaN"));
        assert_eq!(map(701, "Infinity"), json!("Infinity"));
        assert_eq!(map(700, "-Infinity"), json!("-Infinity"));
    }

    #[test]
    fn numeric_is_the_exact_text() {
        assert_eq!(
            map(1700, "12345678901234567890.000000000001"),
            json!("12345678901234567890.000000000001")
        );
        assert_eq!(map(1700, "1.10"), json!("1.10"));
        assert_eq!(map(1700, "NaN"), json!("NaN"));
    }

    #[test]
    fn text_like_types_are_strings() {
        for (oid, text) in [
            (25, "hello"),
            (1043, ""),
            (1042, "ab  "),
            (19, "name"),
            (18, "c"),
            (2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            (869, "192.168.0.1/24"),
            (650, "10.0.0.0/8"),
            (829, "08:00:2b:01:02:03"),
            (1186, "1 day 02:03:04"),
            (790, "$1,000.00"),
            (1560, "101"),
            (1562, "10"),
            (142, "<a>b</a>"),
            (3614, "'a' 'b'"),
            (1083, "10:00:00.5"),
            (1266, "10:00:00+02"),
            (1082, "2026-11-25"),
        ] {
            assert_eq!(map(oid, text), json!(text), "oid {oid}");
        }
    }

    #[test]
    fn bytea_is_base64() {
        assert_eq!(map(17, "\\x"), json!(""));
        assert_eq!(map(17, "\\x00ff10"), json!("AP8Q"));
        assert_eq!(map(17, "\\x48656C6c6f"), json!("SGVsbG8="));
        // bytea_output = escape
        assert_eq!(map(17, "a\\000\\\\"), json!(B64.encode(b"a\0\\")));
        // Not bytea text output at all: kept as given.
        assert_eq!(map(17, "\\xabc"), json!("\\xabc"));
        assert_eq!(map(17, "\\9"), json!("\\9"));
    }

    #[test]
    fn timestamptz_is_rfc3339() {
        assert_eq!(
            map(1184, "2026-11-25 10:00:00.123456+00"),
            json!("2026-11-25T10:00:00.123456+00:00")
        );
        assert_eq!(
            map(1184, "2026-11-25 10:00:00+05:30"),
            json!("2026-11-25T10:00:00+05:30")
        );
        assert_eq!(
            map(1184, "2026-11-25 10:00:00.5-08"),
            json!("2026-11-25T10:00:00.5-08:00")
        );
        assert_eq!(
            map(1184, "12026-01-01 00:00:00+00"),
            json!("12026-01-01T00:00:00+00:00")
        );
    }

    #[test]
    fn timestamptz_with_an_offset_in_seconds_is_converted_to_utc() {
        // Europe/Amsterdam local mean time before 1937 was +00:19:32.
        assert_eq!(
            map(1184, "1900-01-01 00:00:00.25+00:19:32"),
            json!("1899-12-31T23:40:28.25Z")
        );
        assert_eq!(
            map(1184, "2000-02-28 23:59:59-00:00:01"),
            json!("2000-02-29T00:00:00Z")
        );
    }

    #[test]
    fn timestamp_without_zone() {
        assert_eq!(
            map(1114, "2026-11-25 10:00:00.123456"),
            json!("2026-11-25T10:00:00.123456")
        );
        assert_eq!(
            map(1114, "2026-11-25 10:00:00"),
            json!("2026-11-25T10:00:00")
        );
    }

    #[test]
    fn special_and_unusual_timestamps_stay_as_given() {
        for (oid, text) in [
            (1184, "infinity"),
            (1184, "-infinity"),
            (1114, "infinity"),
            (1082, "-infinity"),
            (1082, "infinity"),
            (1184, "0044-03-15 12:00:00+00 BC"),
            (1114, "0044-03-15 12:00:00 BC"),
            (1184, "Wed Nov 25 10:00:00 2026 UTC"),
            (1114, "2026-11-25 10:00:00+00"),
            (1184, "2026-11-25 10:00:00"),
            (1184, "2026-13-25 10:00:00+00"),
            (1184, "2026-11-25 10:00:00.+00"),
        ] {
            assert_eq!(map(oid, text), json!(text), "{text}");
        }
    }

    #[test]
    fn json_and_jsonb_are_parsed() {
        assert_eq!(map(114, r#"{"a": [1, 2]}"#), json!({"a": [1, 2]}));
        assert_eq!(map(3802, "null"), json!(null));
        assert_eq!(map(3802, "\"s\""), json!("s"));
        assert_eq!(map(114, "{not json"), json!("{not json"));
    }

    #[test]
    fn integer_arrays() {
        assert_eq!(map(1007, "{1,2,NULL}"), json!([1, 2, null]));
        assert_eq!(map(1007, "{}"), json!([]));
        assert_eq!(map(1007, "{{1,2},{3,4}}"), json!([[1, 2], [3, 4]]));
        assert_eq!(map(1007, "[0:1]={1,2}"), json!([1, 2]));
        assert_eq!(
            map(1007, "[0:1][1:2]={{1,2},{3,4}}"),
            json!([[1, 2], [3, 4]])
        );
        assert_eq!(map(1016, "{ 1 , 2 }"), json!([1, 2]));
        assert_eq!(map(1005, "{{{1}}}"), json!([[[1]]]));
    }

    #[test]
    fn text_arrays_with_quotes_and_escapes() {
        assert_eq!(
            map(1009, r#"{"a b","c\"d",NULL,"NULL"}"#),
            json!(["a b", "c\"d", null, "NULL"])
        );
        assert_eq!(
            map(1009, r#"{"back\\slash","",x}"#),
            json!(["back\\slash", "", "x"])
        );
        assert_eq!(map(1015, "{null,Null,a\\,b}"), json!([null, null, "a,b"]));
        assert_eq!(map(1009, r#"{"{}","é,ü"}"#), json!(["{}", "é,ü"]));
        assert_eq!(map(1014, r#"{"ab  ",cd}"#), json!(["ab  ", "cd"]));
    }

    #[test]
    fn arrays_map_elements_by_their_type() {
        assert_eq!(map(1000, "{t,f,NULL}"), json!([true, false, null]));
        assert_eq!(map(1021, "{1.5,NaN}"), json!([1.5, "NaN"]));
        assert_eq!(map(1022, "{-Infinity,0}"), json!(["-Infinity", 0.0]));
        assert_eq!(map(1231, "{1.10,NaN}"), json!(["1.10", "NaN"]));
        assert_eq!(
            map(1185, r#"{"2026-11-25 10:00:00+00",infinity}"#),
            json!(["2026-11-25T10:00:00+00:00", "infinity"])
        );
        assert_eq!(
            map(1115, r#"{"2026-11-25 10:00:00.5"}"#),
            json!(["2026-11-25T10:00:00.5"])
        );
        assert_eq!(
            map(1182, "{2026-11-25,-infinity}"),
            json!(["2026-11-25", "-infinity"])
        );
        assert_eq!(
            map(2951, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"),
            json!(["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"])
        );
        assert_eq!(
            map(199, r#"{"{\"a\": 1}","[1, 2]"}"#),
            json!([{"a": 1}, [1, 2]])
        );
        assert_eq!(map(3807, r#"{"{\"a\": 1}",NULL}"#), json!([{"a": 1}, null]));
        assert_eq!(map(1001, r#"{"\\x00ff",NULL}"#), json!(["AP8=", null]));
        assert_eq!(
            map(1020, "{(1,1),(0,0);(2,2),(1,1)}"),
            json!(["(1,1),(0,0)", "(2,2),(1,1)"])
        );
    }

    #[test]
    fn malformed_arrays_stay_as_given() {
        for text in [
            "{1,2", "1,2}", "{1,,2}", "{1,2}x", "{\"a}", "[0:1]{1}", "{a\"b}", "{1,}", "", "{{1},2",
        ] {
            assert_eq!(map(1007, text), json!(text), "{text}");
        }
    }

    #[test]
    fn registered_types() {
        let mut reg = TypeRegistry::new();
        reg.insert_named(16400, "mood", TypeKind::Enum);
        reg.insert(16401, TypeKind::Array { element: 16400 });
        reg.insert(16402, TypeKind::Domain { base: 23 });
        reg.insert(16403, TypeKind::Domain { base: 16402 });
        reg.insert(16404, TypeKind::Array { element: 16403 });
        reg.insert(16405, TypeKind::Composite);
        reg.insert(16406, TypeKind::Other);
        assert_eq!(reg.to_json(16400, "happy"), json!("happy"));
        assert_eq!(reg.to_json(16401, "{happy,sad}"), json!(["happy", "sad"]));
        assert_eq!(reg.to_json(16402, "5"), json!(5));
        assert_eq!(reg.to_json(16403, "6"), json!(6));
        assert_eq!(reg.to_json(16404, "{1,NULL}"), json!([1, null]));
        assert_eq!(reg.to_json(16405, "(1,\"a b\")"), json!("(1,\"a b\")"));
        assert_eq!(reg.to_json(16406, "[1,2)"), json!("[1,2)"));
        assert_eq!(reg.to_json(99999, "whatever"), json!("whatever"));
        assert_eq!(reg.type_name(16400), Some("mood"));
        assert_eq!(reg.type_name(16401), None);
        assert_eq!(reg.type_name(1007), Some("_int4"));
        assert_eq!(reg.kind(16402), Some(TypeKind::Domain { base: 23 }));
        assert_eq!(reg.kind(23), None);
    }

    #[test]
    fn insert_keeps_a_known_name() {
        let mut reg = TypeRegistry::new();
        reg.insert_named(16400, "mood", TypeKind::Other);
        reg.insert(16400, TypeKind::Enum);
        assert_eq!(reg.type_name(16400), Some("mood"));
        assert_eq!(reg.kind(16400), Some(TypeKind::Enum));
    }

    #[test]
    fn builtins_cannot_be_overridden() {
        let mut reg = TypeRegistry::new();
        reg.insert(23, TypeKind::Enum);
        assert_eq!(reg.to_json(23, "1"), json!(1));
    }

    #[test]
    fn domain_cycles_end_as_strings() {
        let mut reg = TypeRegistry::new();
        reg.insert(16500, TypeKind::Domain { base: 16501 });
        reg.insert(16501, TypeKind::Domain { base: 16500 });
        assert_eq!(reg.to_json(16500, "1"), json!("1"));
        reg.insert(16502, TypeKind::Array { element: 16502 });
        assert_eq!(reg.to_json(16502, "{{1}}"), json!([["1"]]));
        assert_eq!(reg.to_json(16502, r#"{"{\"{}\"}"}"#), json!([[[]]]));
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let deep = format!("{}{}", "{".repeat(10_000), "}".repeat(10_000));
        assert_eq!(map(1007, &deep), json!(deep));
    }

    #[test]
    fn builtin_names() {
        assert_eq!(builtin_type_name(23), Some("int4"));
        assert_eq!(builtin_type_name(1184), Some("timestamptz"));
        assert_eq!(builtin_type_name(3807), Some("_jsonb"));
        assert_eq!(builtin_type_name(16384), None);
    }

    #[test]
    fn civil_arithmetic_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 1, 1), 10_957);
        assert_eq!(civil_from_days(10_957), (2000, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(oid in proptest::sample::select(vec![
            16u32, 17, 20, 23, 26, 114, 700, 701, 1000, 1001, 1007, 1009, 1020, 1082, 1114,
            1184, 1185, 1231, 3802, 3807, 16400, 16401, 99999,
        ]), text in "\\PC{0,40}|[{}\",\\\\ NUL0-9:+.\\[\\]=-]{0,40}") {
            let mut reg = TypeRegistry::new();
            reg.insert(16400, TypeKind::Domain { base: 1184 });
            reg.insert(16401, TypeKind::Array { element: 16400 });
            let _ = reg.to_json(oid, &text);
        }

        /// `write_json` writes the bytes of the `Value` of `to_json`, serialised.
        #[test]
        fn written_json_is_the_serialised_value(oid in proptest::sample::select(vec![
            16u32, 17, 18, 20, 21, 23, 25, 26, 114, 700, 701, 1000, 1001, 1007, 1009, 1020,
            1082, 1114, 1184, 1185, 1231, 1700, 3802, 3807, 16400, 16401, 16402, 16403, 99999,
        ]), text in "\\PC{0,40}|[{}\",\\\\ NUL0-9:+.\\[\\]=-]{0,40}|[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,6})?([+-][0-9]{2}(:[0-9]{2}){0,2})?|-?[0-9]{1,20}(\\.[0-9]{0,20})?(e[+-]?[0-9]{1,3})?|t|f|NaN|-?Infinity|\\\\x([0-9a-f]{2}){0,4}") {
            let mut reg = TypeRegistry::new();
            reg.insert(16400, TypeKind::Domain { base: 1184 });
            reg.insert(16401, TypeKind::Array { element: 16400 });
            reg.insert(16402, TypeKind::Domain { base: 1114 });
            reg.insert(16403, TypeKind::Enum);
            let mut written = b"[".to_vec();
            reg.write_json(oid, &text, &mut written);
            let expected = format!("[{}", reg.to_json(oid, &text));
            prop_assert_eq!(String::from_utf8(written).unwrap(), expected);
        }

        #[test]
        fn text_arrays_round_trip(items in proptest::collection::vec(proptest::option::of("\\PC{0,12}"), 0..6)) {
            let literal = format!("{{{}}}", items.iter().map(|i| match i {
                None => "NULL".to_owned(),
                Some(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
            }).collect::<Vec<_>>().join(","));
            let expected: Vec<Value> = items.into_iter().map(|i| i.map_or(Value::Null, Value::String)).collect();
            prop_assert_eq!(map(1009, &literal), Value::Array(expected));
        }
    }
}
