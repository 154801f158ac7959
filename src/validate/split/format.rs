//! Pages that are not one JSON document: JSON Lines and CSV (`format` of a stream).
//!
//! [`normalize`] turns such a page into a JSON array of its good records, which the
//! [`super::Splitter`] then splits as any page whose selector is empty, and lists the lines or
//! rows that cannot be read, each with its own bytes, so the caller sends them to the DLQ one
//! by one while the others flow on (one bad line never costs its whole page).
//!
//! - **JSON Lines**: each non-blank line is one record; its bytes go into the array unchanged.
//!   A line that is not JSON is `malformed_json`, named by its line number.
//! - **CSV** (RFC 4180, header row first): each row becomes a JSON object whose members are the
//!   header's names in column order. An empty cell is `null` for a field the schema declares
//!   and no member at all otherwise (a column only some records have). Other cells are typed by the
//!   field of the same name in the stream's schema ([`CellTypes`]): a number for `int`, `long`,
//!   `float` and `double` (and the logical types on them) when the cell reads as one, `true` or
//!   `false` for a `boolean` (any letter case), parsed JSON for an array, map or record, and a
//!   string otherwise (so a cell that does not fit is the converter's `type_mismatch`, naming
//!   the field). Without a schema a cell is typed by its look. A row with another number of
//!   cells than the header, or that is not UTF-8, is `malformed_csv`; a header that repeats a
//!   name makes the whole page `not_a_page`.
//!
//! A JSON page is returned as is (borrowed, no copy).

use std::borrow::Cow;

use serde::de::IgnoredAny;

use crate::config::Format;
use crate::validate::error::{DriftKind, RecordError};

/// How a CSV cell of a field is written as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// A JSON string.
    Text,
    /// A JSON number when the cell reads as one, else a string.
    Number,
    /// `true`/`false` when the cell says so (any case), else a string.
    Boolean,
    /// The cell's JSON when it parses (an array, map or record field), else a string.
    Json,
    /// By its look: a number, a boolean, or a string.
    Any,
}

/// Types the cells of a field by name: the stream's schema (`Validator`), or nothing.
pub trait CellTypes {
    /// How the cells of the top-level field `name` are written; `None` when the schema does
    /// not declare it (its cells go by their look, and its empty cells are left out: a column
    /// only some records of the page have is no member of the others).
    fn cell(&self, name: &str) -> Option<Cell>;
}

/// No schema: every cell by its look, empty cells left out.
pub struct ByLook;

impl CellTypes for ByLook {
    fn cell(&self, _: &str) -> Option<Cell> {
        None
    }
}

/// A line or row that cannot be read, with its bytes (a sub-slice of the page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine<'a> {
    /// Its 0-based position among the page's records (good ones included).
    pub index: usize,
    /// Its bytes as received, without the line end.
    pub raw: &'a [u8],
    /// Why, naming the line (1-based, as an editor shows it).
    pub error: RecordError,
}

/// A page made splittable: a JSON page, and the lines or rows left out of it.
#[derive(Debug)]
pub struct Normalized<'a> {
    /// The page as JSON: the input itself for `json`, else an array of the good records.
    pub page: Cow<'a, [u8]>,
    /// The good records' positions among all records of the page, in page order (empty for
    /// `json`, where the splitter's own indexes are the positions).
    pub positions: Vec<usize>,
    /// The lines or rows that cannot be read.
    pub bad: Vec<BadLine<'a>>,
}

/// Makes a page of `format` splittable (see the module docs).
///
/// # Errors
/// The whole page, when it cannot be read at all: a CSV header that is not UTF-8, empty or
/// repeats a name (`not_a_page`).
pub fn normalize<'a>(
    format: Format,
    page: &'a [u8],
    types: &dyn CellTypes,
) -> Result<Normalized<'a>, RecordError> {
    match format {
        Format::Json => Ok(Normalized {
            page: Cow::Borrowed(page),
            positions: Vec::new(),
            bad: Vec::new(),
        }),
        Format::Jsonl => Ok(jsonl(page)),
        Format::Csv => csv_page(page, types),
    }
}

fn jsonl(page: &[u8]) -> Normalized<'_> {
    let mut out = Vec::with_capacity(page.len() + 2);
    out.push(b'[');
    let mut positions = Vec::new();
    let mut bad = Vec::new();
    let mut index = 0;
    for (n, line) in page.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // serde_json does not check the UTF-8 of strings it skips: a line is text first.
        let parsed = std::str::from_utf8(line)
            .map_err(|e| (DriftKind::NotUtf8, e.to_string()))
            .and_then(|text| {
                serde_json::from_str::<IgnoredAny>(text)
                    .map_err(|e| (DriftKind::MalformedJson, e.to_string()))
            });
        match parsed {
            Ok(_) => {
                if !positions.is_empty() {
                    out.extend_from_slice(b",\n");
                }
                out.extend_from_slice(line);
                positions.push(index);
            }
            Err((kind, e)) => {
                bad.push(BadLine {
                    index,
                    raw: line,
                    error: RecordError::whole(kind, format!("line {}: {e}", n + 1)),
                });
            }
        }
        index += 1;
    }
    out.push(b']');
    Normalized {
        page: Cow::Owned(out),
        positions,
        bad,
    }
}

fn csv_page<'a>(page: &'a [u8], types: &dyn CellTypes) -> Result<Normalized<'a>, RecordError> {
    if page.iter().all(u8::is_ascii_whitespace) {
        // An API with nothing to say (the page after the last) may answer without a header.
        return Ok(Normalized {
            page: Cow::Borrowed(b"[]"),
            positions: Vec::new(),
            bad: Vec::new(),
        });
    }
    let not_a_page = |detail: String| RecordError::whole(DriftKind::NotAPage, detail);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(page);
    let header = reader
        .headers()
        .map_err(|e| not_a_page(format!("the CSV header row cannot be read: {e}")))?
        .clone();
    if header.is_empty() || header.iter().all(str::is_empty) {
        return Err(not_a_page("the CSV page has no header row".into()));
    }
    let mut names: Vec<(String, Option<Cell>)> = Vec::with_capacity(header.len());
    for name in &header {
        let name = name.trim();
        if names.iter().any(|(n, _)| n == name) {
            return Err(not_a_page(format!(
                "the CSV header names the column `{name}` twice"
            )));
        }
        names.push((name.to_owned(), types.cell(name)));
    }
    let mut out = Vec::with_capacity(page.len() * 2 + 2);
    out.push(b'[');
    let mut positions = Vec::new();
    let mut bad = Vec::new();
    let mut row = csv::ByteRecord::new();
    let mut index = 0;
    loop {
        let start = reader.position().clone();
        let read = reader.read_byte_record(&mut row);
        let end = reader.position().byte() as usize;
        let raw = trim_line_end(&page[(start.byte() as usize).min(end)..end]);
        let line = start.line();
        match read {
            Ok(false) => break,
            Ok(true) if row.len() == 1 && row[0].is_empty() => continue, // a blank line
            Ok(true) if row.len() != names.len() => bad.push(BadLine {
                index,
                raw,
                error: RecordError::whole(
                    DriftKind::MalformedCsv,
                    format!(
                        "line {line}: {} cells, the header has {}",
                        row.len(),
                        names.len()
                    ),
                ),
            }),
            Ok(true) => match write_row(&mut out, &names, &row, positions.is_empty()) {
                Ok(()) => positions.push(index),
                Err(at) => bad.push(BadLine {
                    index,
                    raw,
                    error: RecordError::whole(
                        DriftKind::MalformedCsv,
                        format!("line {line}: the cell of `{at}` is not UTF-8"),
                    ),
                }),
            },
            Err(e) => bad.push(BadLine {
                index,
                raw,
                error: RecordError::whole(DriftKind::MalformedCsv, format!("line {line}: {e}")),
            }),
        }
        index += 1;
    }
    out.push(b']');
    Ok(Normalized {
        page: Cow::Owned(out),
        positions,
        bad,
    })
}

fn trim_line_end(raw: &[u8]) -> &[u8] {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    raw.strip_suffix(b"\r").unwrap_or(raw)
}

/// Appends one row as a JSON object; `Err(name)` (nothing appended) when a cell is not UTF-8.
fn write_row<'n>(
    out: &mut Vec<u8>,
    names: &'n [(String, Option<Cell>)],
    row: &csv::ByteRecord,
    first: bool,
) -> Result<(), &'n str> {
    let mut cells = Vec::with_capacity(names.len());
    for ((name, _), cell) in names.iter().zip(row) {
        cells.push(std::str::from_utf8(cell).map_err(|_| name.as_str())?);
    }
    if !first {
        out.extend_from_slice(b",\n");
    }
    out.push(b'{');
    let mut first_member = true;
    for ((name, kind), cell) in names.iter().zip(cells) {
        if kind.is_none() && cell.is_empty() {
            continue;
        }
        if !first_member {
            out.push(b',');
        }
        first_member = false;
        serde_json::to_writer(&mut *out, name).expect("a string serialises");
        out.push(b':');
        write_cell(out, kind.unwrap_or(Cell::Any), cell);
    }
    out.push(b'}');
    Ok(())
}

fn write_cell(out: &mut Vec<u8>, kind: Cell, cell: &str) {
    if cell.is_empty() {
        out.extend_from_slice(b"null");
        return;
    }
    let number = || serde_json::from_str::<serde_json::Number>(cell).is_ok();
    let boolean = || {
        ["true", "false"]
            .into_iter()
            .find(|b| cell.eq_ignore_ascii_case(b))
    };
    match kind {
        Cell::Number | Cell::Any if number() => out.extend_from_slice(cell.as_bytes()),
        Cell::Boolean | Cell::Any if boolean().is_some() => {
            out.extend_from_slice(boolean().unwrap_or("false").as_bytes());
        }
        Cell::Json if serde_json::from_str::<IgnoredAny>(cell).is_ok() => {
            out.extend_from_slice(cell.as_bytes());
        }
        _ => serde_json::to_writer(&mut *out, cell).expect("a string serialises"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Schema;
    impl CellTypes for Schema {
        fn cell(&self, name: &str) -> Option<Cell> {
            match name {
                "id" | "zip" => Some(Cell::Text),
                "n" | "score" => Some(Cell::Number),
                "ok" => Some(Cell::Boolean),
                "tags" => Some(Cell::Json),
                _ => None,
            }
        }
    }

    /// The schema's types decide: text over number in a union, logical types on numbers,
    /// nested types as JSON, undeclared fields by look.
    #[test]
    fn a_schema_types_its_fields_cells() {
        let schema = apache_avro::Schema::parse_str(
            r#"{"type":"record","name":"r","fields":[
                {"name":"id","type":"string"},
                {"name":"n","type":["null","long"]},
                {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}},
                {"name":"s","type":["null","long","string"]},
                {"name":"d","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
                {"name":"ok","type":"boolean"},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["A"]}},
                {"name":"tags","type":{"type":"array","items":"string"}}
            ]}"#,
        )
        .unwrap();
        let v = crate::validate::Validator::new(&schema).unwrap();
        for (field, cell) in [
            ("id", Some(Cell::Text)),
            ("n", Some(Cell::Number)),
            ("t", Some(Cell::Number)),
            ("s", Some(Cell::Text)),
            ("d", Some(Cell::Text)),
            ("ok", Some(Cell::Boolean)),
            ("e", Some(Cell::Text)),
            ("tags", Some(Cell::Json)),
            ("other", None),
        ] {
            assert_eq!(v.cell(field), cell, "{field}");
        }
        let page = b"id,n,t,ok,e,tags,other\n1,2,2024-01-01T00:00:00Z,False,A,\"[\"\"x\"\"]\",3\n";
        let n = normalize(Format::Csv, page, &v).unwrap();
        assert_eq!(
            text(&n),
            r#"[{"id":"1","n":2,"t":"2024-01-01T00:00:00Z","ok":false,"e":"A","tags":["x"],"other":3}]"#
        );
    }

    fn text(n: &Normalized<'_>) -> String {
        String::from_utf8(n.page.to_vec()).unwrap()
    }

    /// The lines a normalized page could not read, as `(index, raw bytes, kind)`: all of what
    /// identifies each one, to compare in one assertion.
    fn bad_lines<'a>(n: &'a Normalized<'_>) -> Vec<(usize, &'a [u8], DriftKind)> {
        n.bad
            .iter()
            .map(|b| (b.index, b.raw, b.error.kind))
            .collect()
    }

    #[test]
    fn json_pages_pass_borrowed() {
        let page = br#"{"data":[1]}"#;
        let n = normalize(Format::Json, page, &ByLook).unwrap();
        assert!(matches!(n.page, Cow::Borrowed(p) if p.as_ptr() == page.as_ptr()));
        assert!(n.positions.is_empty() && n.bad.is_empty());
    }

    #[test]
    fn jsonl_keeps_line_bytes_and_reports_bad_lines_by_number() {
        let page = b"{\"id\": 1 , \"a\":\"x\"}\r\n\n  \n{bad\n{\"id\":2}\n\"a\xffb\"\n{\"id\":3}";
        let n = normalize(Format::Jsonl, page, &ByLook).unwrap();
        assert_eq!(
            text(&n),
            "[{\"id\": 1 , \"a\":\"x\"},\n{\"id\":2},\n{\"id\":3}]"
        );
        assert_eq!(n.positions, vec![0, 2, 4]);
        assert_eq!(
            bad_lines(&n),
            [
                (1, &b"{bad"[..], DriftKind::MalformedJson),
                (3, &b"\"a\xffb\""[..], DriftKind::NotUtf8)
            ]
        );
        assert!(
            n.bad[0].error.detail.starts_with("line 4:"),
            "{}",
            n.bad[0].error
        );
        let split = crate::validate::Splitter::new("", "/id", None)
            .unwrap()
            .split(&n.page)
            .unwrap();
        let keys: Vec<_> = split
            .iter()
            .map(|r| r.as_ref().unwrap().key.clone())
            .collect();
        assert_eq!(keys, ["1", "2", "3"]);
        assert_eq!(
            split[0].as_ref().unwrap().raw,
            "{\"id\": 1 , \"a\":\"x\"}",
            "bytes kept"
        );
    }

    #[test]
    fn csv_rows_become_objects_typed_by_the_schema() {
        let page = b"id,n,ok,zip,score,tags,note\r\n\
            007,42,TRUE,01234,1.5e3,\"[1,2]\",\"a, \"\"quoted\"\" note\"\r\n\
            8,,false,,x,[oops,12\n\
            9,1\n\
            \n\
            10,-3,no,99,0,{},true\n";
        let n = normalize(Format::Csv, page, &Schema).unwrap();
        assert_eq!(
            text(&n),
            concat!(
                "[{\"id\":\"007\",\"n\":42,\"ok\":true,\"zip\":\"01234\",\"score\":1.5e3,\"tags\":[1,2],\"note\":\"a, \\\"quoted\\\" note\"},\n",
                "{\"id\":\"8\",\"n\":null,\"ok\":false,\"zip\":null,\"score\":\"x\",\"tags\":\"[oops\",\"note\":12},\n",
                "{\"id\":\"10\",\"n\":-3,\"ok\":\"no\",\"zip\":\"99\",\"score\":0,\"tags\":{},\"note\":true}]"
            )
        );
        assert_eq!(n.positions, vec![0, 1, 3]);
        assert_eq!(bad_lines(&n), [(2, &b"9,1"[..], DriftKind::MalformedCsv)]);
        assert_eq!(n.bad[0].error.detail, "line 4: 2 cells, the header has 7");
        serde_json::from_slice::<serde_json::Value>(&n.page).unwrap();
    }

    #[test]
    fn csv_headers_that_cannot_name_records_reject_the_page() {
        for page in [&b""[..], b"\n", b" \r\n"] {
            let n = normalize(Format::Csv, page, &ByLook).unwrap();
            assert_eq!(text(&n), "[]", "an empty answer has no records");
        }
        for page in [&b","[..], b"id,a,id\n1,2,3\n"] {
            let e = normalize(Format::Csv, page, &ByLook).unwrap_err();
            assert_eq!(e.kind, DriftKind::NotAPage, "{page:?}: {e}");
        }
        let n = normalize(Format::Csv, b"id,v,w\n1,,x\n", &ByLook).unwrap();
        assert_eq!(
            text(&n),
            "[{\"id\":1,\"w\":\"x\"}]",
            "empty cells of undeclared fields left out"
        );
        let n = normalize(Format::Csv, b"id\n", &ByLook).unwrap();
        assert_eq!(text(&n), "[]");
        let n = normalize(Format::Csv, b"id,v\n1,\xff\n2,ok\n", &ByLook).unwrap();
        assert_eq!(text(&n), "[{\"id\":2,\"v\":\"ok\"}]");
        assert_eq!(n.bad[0].error.kind, DriftKind::MalformedCsv);
        assert!(n.bad[0].error.detail.contains("`v` is not UTF-8"));
    }
}
