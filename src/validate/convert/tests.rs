use super::*;
use apache_avro::{from_avro_datum, to_avro_datum};
use proptest::prelude::*;
use serde_json::json;

/// A record with every kind of field the converter maps.
const ORDER: &str = crate::testing::ORDER_SCHEMA;

fn order_validator() -> Validator {
    Validator::new(&Schema::parse_str(ORDER).unwrap()).unwrap()
}

fn good_order() -> Json {
    json!({
        "id": "o-1", "qty": 2, "total": 9_000_000_000_i64, "price": 12.5, "weight": 3,
        "paid": true, "status": "inactive",
        "address": {"city": "Lyon"},
        "items": [{"sku": "a"}, {"sku": "b", "n": 4}],
        "attrs": {"color": "red"},
        "created": "2024-05-06T07:08:09.123456Z"
    })
}

fn s(v: &str) -> AvroValue {
    AvroValue::String(v.to_owned())
}

fn rec(fields: Vec<(&str, AvroValue)>) -> AvroValue {
    AvroValue::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn null_branch() -> AvroValue {
    AvroValue::Union(0, Box::new(AvroValue::Null))
}

/// `record` with the member at `pointer` set (added if absent).
fn with(mut record: Json, pointer: &str, value: Json) -> Json {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    match record.pointer_mut(parent).unwrap() {
        Json::Object(members) => {
            members.insert(last.to_owned(), value);
        }
        Json::Array(items) => items[last.parse::<usize>().unwrap()] = value,
        _ => panic!("no container at {parent}"),
    }
    record
}

fn without(mut record: Json, pointer: &str) -> Json {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    record
        .pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(last);
    record
}

/// (kind, field, detail) of the first error.
fn first_error(record: &Json) -> (DriftKind, Option<String>, String) {
    let e = order_validator().convert(record).unwrap_err();
    (e.kind, e.field, e.detail)
}

fn err(kind: DriftKind, field: &str, detail: &str) -> (DriftKind, Option<String>, String) {
    (kind, Some(field.to_owned()), detail.to_owned())
}

#[test]
fn converts_a_good_record_to_exact_values() {
    let value = order_validator().convert(&good_order()).unwrap();
    let expected = rec(vec![
        ("id", s("o-1")),
        ("qty", AvroValue::Int(2)),
        ("total", AvroValue::Long(9_000_000_000)),
        ("price", AvroValue::Double(12.5)),
        ("weight", AvroValue::Float(3.0)),
        ("paid", AvroValue::Boolean(true)),
        ("status", AvroValue::Enum(1, "inactive".to_owned())),
        ("note", null_branch()),
        (
            "address",
            rec(vec![("city", s("Lyon")), ("zip", null_branch())]),
        ),
        (
            "items",
            AvroValue::Array(vec![
                rec(vec![("sku", s("a")), ("n", AvroValue::Int(1))]),
                rec(vec![("sku", s("b")), ("n", AvroValue::Int(4))]),
            ]),
        ),
        (
            "attrs",
            AvroValue::Map([("color".to_owned(), s("red"))].into()),
        ),
        ("blob", AvroValue::Bytes(Vec::new())),
        ("billing", null_branch()),
        ("created", AvroValue::TimestampMicros(1_714_979_289_123_456)),
        ("tags", AvroValue::Array(Vec::new())),
    ]);
    assert_eq!(value, expected);
}

#[test]
fn present_values_fill_unions_and_nested_named_types() {
    let record = with(
        with(good_order(), "/note", json!("hi")),
        "/billing",
        json!({"city": "Paris", "zip": "75001"}),
    );
    let record = with(record, "/blob", json!("é"));
    let AvroValue::Record(fields) = order_validator().convert(&record).unwrap() else {
        panic!()
    };
    assert_eq!(fields[7].1, AvroValue::Union(1, Box::new(s("hi"))));
    assert_eq!(fields[11].1, AvroValue::Bytes(vec![0xc3, 0xa9]));
    assert_eq!(
        fields[12].1,
        AvroValue::Union(
            1,
            Box::new(rec(vec![
                ("city", s("Paris")),
                ("zip", AvroValue::Union(1, Box::new(s("75001"))))
            ]))
        )
    );
}

#[test]
fn missing_field_names_the_path() {
    assert_eq!(
        first_error(&without(good_order(), "/address/city")),
        err(
            DriftKind::MissingField,
            "address.city",
            "is absent; the field is required and has no default"
        )
    );
    assert_eq!(
        first_error(&with(good_order(), "/qty", Json::Null)),
        err(
            DriftKind::MissingField,
            "qty",
            "is null, but the field is not nullable and has no default"
        )
    );
    assert_eq!(
        first_error(&without(good_order(), "/items/1/sku")),
        err(
            DriftKind::MissingField,
            "items[1].sku",
            "is absent; the field is required and has no default"
        )
    );
    // Inside the single non-null branch of an optional record, the path stays precise.
    assert_eq!(
        first_error(&with(good_order(), "/billing", json!({"zip": "1"}))),
        err(
            DriftKind::MissingField,
            "billing.city",
            "is absent; the field is required and has no default"
        )
    );
}

#[test]
fn absent_or_null_fields_take_defaults_or_null() {
    let record = with(
        without(without(good_order(), "/attrs"), "/items/1/n"),
        "/tags",
        Json::Null,
    );
    let AvroValue::Record(fields) = order_validator().convert(&record).unwrap() else {
        panic!()
    };
    assert_eq!(
        fields[9].1,
        AvroValue::Array(vec![
            rec(vec![("sku", s("a")), ("n", AvroValue::Int(1))]),
            rec(vec![("sku", s("b")), ("n", AvroValue::Int(1))]),
        ])
    );
    assert_eq!(fields[10].1, AvroValue::Map(HashMap::new()));
    assert_eq!(fields[14].1, AvroValue::Array(Vec::new()));
    let record = with(good_order(), "/note", Json::Null);
    let AvroValue::Record(fields) = order_validator().convert(&record).unwrap() else {
        panic!()
    };
    assert_eq!(fields[7].1, null_branch());
}

#[test]
fn type_mismatch_names_expected_and_found() {
    let items = json!([{"sku": "a"}, {"sku": "b"}, {"sku": "c"}, {"sku": 7}]);
    assert_eq!(
        first_error(&with(good_order(), "/items", items)),
        err(
            DriftKind::TypeMismatch,
            "items[3].sku",
            "expected string, found integer"
        )
    );
    assert_eq!(
        first_error(&with(good_order(), "/paid", json!("yes"))),
        err(
            DriftKind::TypeMismatch,
            "paid",
            "expected boolean, found string"
        )
    );
    assert_eq!(
        first_error(&with(good_order(), "/address", json!("Lyon"))),
        err(
            DriftKind::TypeMismatch,
            "address",
            "expected record shop.Address, found string"
        )
    );
    assert_eq!(
        first_error(&with(good_order(), "/note", json!(5))),
        err(
            DriftKind::TypeMismatch,
            "note",
            "expected one of [null, string], found integer"
        )
    );
    assert_eq!(
        first_error(&with(
            good_order(),
            "/attrs",
            json!({"color": "red", "size": 3})
        )),
        err(
            DriftKind::TypeMismatch,
            "attrs.size",
            "expected string, found integer"
        )
    );
    assert_eq!(
        first_error(&with(good_order(), "/attrs", json!({"a b": null}))),
        err(
            DriftKind::TypeMismatch,
            "attrs[\"a b\"]",
            "expected string, found null"
        )
    );
    assert_eq!(
        first_error(&with(good_order(), "/tags", json!(["x", null]))),
        err(
            DriftKind::TypeMismatch,
            "tags[1]",
            "expected string, found null"
        )
    );
    assert_eq!(
        first_error(&with(good_order(), "/created", json!("yesterday"))),
        err(
            DriftKind::TypeMismatch,
            "created",
            "expected timestamp-micros (long or RFC 3339 string), found a string that is not an RFC 3339 timestamp"
        )
    );
    let e = order_validator().convert(&json!([1])).unwrap_err();
    assert_eq!(
        (e.kind, e.field, e.detail.as_str()),
        (
            DriftKind::TypeMismatch,
            None,
            "expected record shop.Order, found array"
        )
    );
    assert_eq!(
        order_validator()
            .convert(&with(good_order(), "/paid", json!(1)))
            .unwrap_err()
            .to_string(),
        "type mismatch at field `paid`: expected boolean, found integer"
    );
}

#[test]
fn integers_are_range_checked() {
    assert_eq!(
        first_error(&with(good_order(), "/qty", json!(3_000_000_000_i64))),
        err(
            DriftKind::TypeMismatch,
            "qty",
            "3000000000 is out of range for int"
        )
    );
    assert_eq!(
        first_error(&with(good_order(), "/qty", json!(-2_147_483_649_i64))),
        err(
            DriftKind::TypeMismatch,
            "qty",
            "-2147483649 is out of range for int"
        )
    );
    assert_eq!(
        first_error(&with(good_order(), "/total", json!(u64::MAX))),
        err(
            DriftKind::TypeMismatch,
            "total",
            "18446744073709551615 is out of range for long"
        )
    );
    assert_eq!(
        first_error(&with(good_order(), "/qty", json!(1.5))),
        err(
            DriftKind::TypeMismatch,
            "qty",
            "expected int, found a non-integer number"
        )
    );
    assert_eq!(
        first_error(&with(good_order(), "/weight", json!(1e300))),
        err(
            DriftKind::TypeMismatch,
            "weight",
            "1e+300 is out of range for float"
        )
    );
    let edge = with(
        with(good_order(), "/qty", json!(i32::MIN)),
        "/total",
        json!(i64::MAX),
    );
    let AvroValue::Record(fields) = order_validator().convert(&edge).unwrap() else {
        panic!()
    };
    assert_eq!(
        (&fields[1].1, &fields[2].1),
        (&AvroValue::Int(i32::MIN), &AvroValue::Long(i64::MAX))
    );
}

#[test]
fn unknown_enum_lists_symbol_and_allowed_symbols() {
    assert_eq!(
        first_error(&with(good_order(), "/status", json!("archived"))),
        err(
            DriftKind::UnknownEnum,
            "status",
            "\"archived\" is not one of [active, inactive] of enum shop.Status"
        )
    );
}

#[test]
fn unknown_fields_at_any_depth() {
    assert_eq!(
        first_error(&with(good_order(), "/extra", json!(1))),
        err(
            DriftKind::UnknownField,
            "extra",
            "is not a field of record shop.Order"
        )
    );
    assert_eq!(
        first_error(&with(good_order(), "/address/country", json!("FR"))),
        err(
            DriftKind::UnknownField,
            "address.country",
            "is not a field of record shop.Address"
        )
    );
    assert_eq!(
        first_error(&with(good_order(), "/items/1/color", json!("red"))),
        err(
            DriftKind::UnknownField,
            "items[1].color",
            "is not a field of record shop.Item"
        )
    );
}

#[test]
fn errors_are_deterministic_and_collectable() {
    // A renamed field (status → state) plus a wrong type and two unknown fields.
    let record = with(
        with(
            with(without(good_order(), "/status"), "/state", json!("active")),
            "/qty",
            json!("2"),
        ),
        "/b_extra",
        json!(0),
    );
    let all: Vec<(DriftKind, Option<String>)> = order_validator()
        .errors(&record)
        .into_iter()
        .map(|e| (e.kind, e.field))
        .collect();
    assert_eq!(
        all,
        [
            (DriftKind::TypeMismatch, Some("qty".to_owned())),
            (DriftKind::MissingField, Some("status".to_owned())),
            (DriftKind::UnknownField, Some("b_extra".to_owned())),
            (DriftKind::UnknownField, Some("state".to_owned())),
        ]
    );
    assert_eq!(first_error(&record).1.as_deref(), Some("qty"));
    assert!(order_validator().errors(&good_order()).is_empty());
    let many = json!({"id": 1, "x0": 0, "x1": 0, "x2": 0, "x3": 0, "x4": 0, "x5": 0, "x6": 0, "x7": 0, "x8": 0, "x9": 0,
        "y0": 0, "y1": 0, "y2": 0, "y3": 0, "y4": 0, "y5": 0, "y6": 0, "y7": 0, "y8": 0, "y9": 0,
        "z0": 0, "z1": 0, "z2": 0, "z3": 0, "z4": 0, "z5": 0, "z6": 0, "z7": 0, "z8": 0, "z9": 0});
    assert_eq!(order_validator().errors(&many).len(), MAX_ERRORS);
}

#[test]
fn ambiguous_unions_take_the_first_branch_that_fits() {
    let schema = Schema::parse_str(
        r#"{"type":"record","name":"R","fields":[
            {"name":"n","type":["int","long","string"]},
            {"name":"r","type":[
                {"type":"record","name":"A","fields":[{"name":"a","type":"int"}]},
                {"type":"record","name":"B","fields":[{"name":"b","type":"string"}]}]}]}"#,
    )
    .unwrap();
    let v = Validator::new(&schema).unwrap();
    let field = |json: Json, i: usize| match v.convert(&json).unwrap() {
        AvroValue::Record(mut f) => f.swap_remove(i).1,
        _ => panic!(),
    };
    assert_eq!(
        field(json!({"n": 5, "r": {"a": 1}}), 0),
        AvroValue::Union(0, Box::new(AvroValue::Int(5)))
    );
    assert_eq!(
        field(json!({"n": 5_000_000_000_i64, "r": {"a": 1}}), 0),
        AvroValue::Union(1, Box::new(AvroValue::Long(5_000_000_000)))
    );
    assert_eq!(
        field(json!({"n": "x", "r": {"a": 1}}), 0),
        AvroValue::Union(2, Box::new(s("x")))
    );
    assert_eq!(
        field(json!({"n": 1, "r": {"b": "y"}}), 1),
        AvroValue::Union(1, Box::new(rec(vec![("b", s("y"))])))
    );
    let e = v.convert(&json!({"n": 1, "r": {"c": true}})).unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref(), e.detail.as_str()),
        (
            DriftKind::MissingField,
            Some("r.a"),
            "is absent; the field is required and has no default"
        )
    );
}

#[test]
fn recursive_schemas_compile_and_convert() {
    let schema = Schema::parse_str(
        r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","Node"],"default":null}]}"#,
    )
    .unwrap();
    let v = Validator::new(&schema).unwrap();
    let value = v.convert(&json!({"v": 1, "next": {"v": 2}})).unwrap();
    assert_eq!(
        value,
        rec(vec![
            ("v", AvroValue::Int(1)),
            (
                "next",
                AvroValue::Union(
                    1,
                    Box::new(rec(vec![("v", AvroValue::Int(2)), ("next", null_branch())]))
                )
            ),
        ])
    );
    let e = v
        .convert(&json!({"v": 1, "next": {"v": 2, "next": {"v": "3"}}}))
        .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("next.next.v"));
}

#[test]
fn logical_types_from_json() {
    let schema = Schema::parse_str(
        r#"{"type":"record","name":"T","fields":[
            {"name":"d","type":{"type":"int","logicalType":"date"}},
            {"name":"ms","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"ns","type":{"type":"long","logicalType":"timestamp-nanos"}},
            {"name":"u","type":{"type":"string","logicalType":"uuid"}},
            {"name":"f","type":{"type":"fixed","name":"F","size":2}}]}"#,
    )
    .unwrap();
    let v = Validator::new(&schema).unwrap();
    let value = v
        .convert(&json!({"d": 19000, "ms": "1970-01-01T00:00:01.5Z", "ns": 7, "u": "67e55044-10b1-426f-9247-bb680e5fe0c8", "f": "ab"}))
        .unwrap();
    assert_eq!(
        value,
        rec(vec![
            ("d", AvroValue::Date(19000)),
            ("ms", AvroValue::TimestampMillis(1500)),
            ("ns", AvroValue::TimestampNanos(7)),
            (
                "u",
                AvroValue::Uuid(Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap())
            ),
            ("f", AvroValue::Fixed(2, b"ab".to_vec())),
        ])
    );
    let bytes = to_avro_datum(&schema, value.clone()).unwrap();
    assert_eq!(
        from_avro_datum(&schema, &mut &bytes[..], None).unwrap(),
        value
    );
    let e = v
        .convert(&json!({"d": 1, "ms": 1, "ns": 1, "u": "nope", "f": "abc"}))
        .unwrap_err();
    assert_eq!(
        (e.field.as_deref(), e.detail.as_str()),
        (
            Some("u"),
            "expected uuid, found a string that is not a UUID"
        )
    );
    let e = v.errors(
        &json!({"d": 1, "ms": 1, "ns": 1, "u": "67e55044-10b1-426f-9247-bb680e5fe0c8", "f": "abc"}),
    );
    assert_eq!(
        e[0].detail,
        "expected fixed F (2 bytes), found a string of 3 bytes"
    );
}

#[test]
fn unsupported_and_bad_schemas() {
    let big = Schema::parse_str(
        r#"{"type":"record","name":"M","fields":[{"name":"amount","type":{"type":"bytes","logicalType":"big-decimal"}}]}"#,
    )
    .unwrap();
    assert_eq!(
        Validator::new(&big).unwrap_err(),
        SchemaError::Unsupported {
            path: "amount".to_owned(),
            what: "big-decimal".to_owned()
        }
    );
}

const LOGICAL: &str = r#"{"type":"record","name":"L","namespace":"shop","fields":[
    {"name":"created_at","type":{"type":"long","logicalType":"timestamp-micros"}},
    {"name":"day","type":{"type":"int","logicalType":"date"}},
    {"name":"at","type":{"type":"int","logicalType":"time-millis"}},
    {"name":"at_us","type":{"type":"long","logicalType":"time-micros"}},
    {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":38,"scale":9}},
    {"name":"fee","type":["null",{"type":"fixed","name":"Fee","size":4,"logicalType":"decimal","precision":9,"scale":2}],"default":null},
    {"name":"rebate","type":{"type":"bytes","logicalType":"decimal","precision":5,"scale":2},"default":"\u00ff\u0085"},
    {"name":"again","type":["null","Fee"],"default":null}
]}"#;

/// Every path's result for a raw record: the raw path, the capturing path, the tree walk on a
/// parse, and `convert`; the raw paths must agree with each other.
fn logical_paths(
    raw: &str,
) -> (
    Result<AvroValue, RecordError>,
    Result<AvroValue, RecordError>,
) {
    let schema = Schema::parse_str(LOGICAL).unwrap();
    let v = Validator::new(&schema).unwrap();
    let decode = |bytes: &[u8]| from_avro_datum(&schema, &mut &bytes[..], None).unwrap();
    let mut out = Vec::new();
    let raw_result = v
        .encode_raw_into(raw.as_bytes(), &mut out)
        .map(|()| decode(&out));
    let mut str_out = Vec::new();
    let mut capture = Capture::new(&[]);
    let str_result = v
        .encode_str_into(raw, &mut str_out, &mut capture)
        .map(|()| decode(&str_out));
    assert_eq!(str_result, raw_result);
    (raw_result, v.convert(&serde_json::from_str(raw).unwrap()))
}

fn decimal(unscaled: i128) -> AvroValue {
    AvroValue::Decimal(apache_avro::Decimal::from(unscaled.to_be_bytes()))
}

#[test]
fn logical_types_from_strings_and_exact_decimals() {
    let raw = r#"{"created_at":"2024-03-01T13:45:01.250001+01:00","day":"2024-03-01",
        "at":"13:45:01.250","at_us":"00:00:01.0000019","amount":"-12345678901234567890123456789.123456789",
        "fee":1234567.5,"again":"-0.01"}"#;
    let (raw_result, tree_result) = logical_paths(raw);
    let expected = rec(vec![
        (
            "created_at",
            AvroValue::TimestampMicros(1_709_297_101_250_001),
        ),
        ("day", AvroValue::Date(19_783)),
        ("at", AvroValue::TimeMillis(49_501_250)),
        ("at_us", AvroValue::TimeMicros(1_000_001)),
        (
            "amount",
            decimal(-12_345_678_901_234_567_890_123_456_789_123_456_789),
        ),
        ("fee", AvroValue::Union(1, Box::new(decimal(123_456_750)))),
        ("rebate", decimal(-123)),
        ("again", AvroValue::Union(1, Box::new(decimal(-1)))),
    ]);
    assert_eq!(raw_result.unwrap(), expected);
    assert_eq!(tree_result.unwrap(), expected);

    // A decimal as a JSON number of more digits than a float holds: exact on the raw paths,
    // also when the record goes to the tree walk for another error (the fallback reads the
    // number's text again), so a digit past the scale is never rounded away.
    let raw =
        r#"{"created_at":0,"day":0,"at":0,"at_us":0,"amount":12345678901234567890.000000001}"#;
    let (raw_result, _) = logical_paths(raw);
    assert_eq!(
        raw_result.unwrap(),
        rec(vec![
            ("created_at", AvroValue::TimestampMicros(0)),
            ("day", AvroValue::Date(0)),
            ("at", AvroValue::TimeMillis(0)),
            ("at_us", AvroValue::TimeMicros(0)),
            ("amount", decimal(12_345_678_901_234_567_890_000_000_001)),
            ("fee", null_branch()),
            ("rebate", decimal(-123)),
            ("again", null_branch()),
        ])
    );
    let raw = r#"{"created_at":0,"day":0,"at":0,"at_us":0,"amount":0.1000000000000000001}"#;
    let e = logical_paths(raw).0.unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref(), e.detail.as_str()),
        (
            DriftKind::TypeMismatch,
            Some("amount"),
            "expected decimal(38, 9) on bytes (number or decimal string), found \
             \"0.1000000000000000001\": more fraction digits than the scale 9 allows"
        )
    );
    let raw = r#"{"created_at":0,"day":0,"at":0,"at_us":0,"amount":0.1000000000000000001,"x":1}"#;
    assert_eq!(
        logical_paths(raw).0.unwrap_err().field.as_deref(),
        Some("amount")
    );
}

#[test]
fn unconvertible_logical_values_are_type_mismatches_naming_the_field() {
    let base = r#""created_at":0,"day":0,"at":0,"at_us":0,"amount":0"#;
    let cases = [
        (
            r#""created_at":"2024-03-01 13:45""#,
            "created_at",
            "expected timestamp-micros (long or RFC 3339 string), found a string that is not an \
             RFC 3339 timestamp",
        ),
        (
            r#""day":"2024-02-30""#,
            "day",
            "expected date (int or ISO 8601 date string), found a string that is not an ISO \
             8601 date (YYYY-MM-DD)",
        ),
        (
            r#""at":"25:00:00""#,
            "at",
            "expected time-millis (int or time-of-day string), found a string that is not a \
             time of day (HH:MM:SS[.fraction])",
        ),
        (
            r#""amount":"12,5""#,
            "amount",
            "expected decimal(38, 9) on bytes (number or decimal string), found \"12,5\": not \
             a decimal number",
        ),
        (
            r#""fee":"12.345""#,
            "fee",
            "expected decimal(9, 2) on fixed shop.Fee (number or decimal string), found \
             \"12.345\": more fraction digits than the scale 2 allows",
        ),
        (
            r#""fee":10000000"#,
            "fee",
            "expected decimal(9, 2) on fixed shop.Fee (number or decimal string), found \
             \"10000000\": more digits than the precision 9 allows",
        ),
        (
            r#""amount":true"#,
            "amount",
            "expected decimal(38, 9) on bytes (number or decimal string), found boolean",
        ),
    ];
    for (member, field, detail) in cases {
        // The member comes last, so it overrides the base's.
        let raw = format!("{{{base},{member}}}");
        let (raw_result, tree_result) = logical_paths(&raw);
        let e = raw_result.unwrap_err();
        assert_eq!(
            (e.kind, e.field.as_deref(), e.detail.as_str()),
            (DriftKind::TypeMismatch, Some(field), detail),
            "{raw}"
        );
        assert_eq!(tree_result.unwrap_err(), e);
    }
}

#[test]
fn decimal_defaults_are_avro_bytes() {
    // A default is the decimal's bytes (here -123 in the `LOGICAL` record's `rebate`, checked
    // above); one byte for a fixed of two is a bad default. (apache-avro itself refuses code
    // points above 255.)
    let schema = Schema::parse_str(
        r#"{"type":"record","name":"M","fields":[{"name":"fee","type":{"type":"fixed","name":"F","size":2,"logicalType":"decimal","precision":4,"scale":0},"default":"\u0001"}]}"#,
    )
    .unwrap();
    assert!(matches!(
        Validator::new(&schema).unwrap_err(),
        SchemaError::BadDefault { path, detail } if path == "fee" && detail.contains("code points 0-255")
    ));
}

#[test]
fn convert_raw_reports_malformed_json_and_depth() {
    let v = order_validator();
    let e = v.convert_raw(b"{\"id\": }").unwrap_err();
    assert_eq!(
        (e.kind, e.detail.as_str()),
        (
            DriftKind::MalformedJson,
            "expected value at line 1 column 8 (byte offset 7)"
        )
    );
    let deep = format!("{{\"id\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let e = v.convert_raw(deep.as_bytes()).unwrap_err();
    assert_eq!(e.kind, DriftKind::MalformedJson);
    assert!(
        e.detail
            .starts_with("recursion limit exceeded at line 1 column 133 (byte offset 132)"),
        "{}",
        e.detail
    );
    let raw = serde_json::to_vec(&good_order()).unwrap();
    assert_eq!(
        v.convert_raw(&raw).unwrap(),
        v.convert(&good_order()).unwrap()
    );
}

#[test]
fn encoding_matches_to_avro_datum_and_round_trips() {
    let schema = Schema::parse_str(ORDER).unwrap();
    let v = order_validator();
    let value = v.convert(&good_order()).unwrap();
    let reference = to_avro_datum(&schema, value.clone()).unwrap();
    let mut out = vec![0, 0, 0, 0, 42]; // a Confluent header written first
    v.encode_into(&good_order(), &mut out).unwrap();
    assert_eq!(&out[..5], [0, 0, 0, 0, 42]);
    assert_eq!(&out[5..], reference.as_slice());
    assert_eq!(v.encode(&good_order()).unwrap(), reference);
    let mut via_apache = Vec::new();
    v.encoder()
        .unwrap()
        .encode_value(&value, &mut via_apache)
        .unwrap();
    assert_eq!(via_apache, reference);
    assert_eq!(
        from_avro_datum(&schema, &mut &reference[..], None).unwrap(),
        value
    );
    let raw = serde_json::to_vec(&good_order()).unwrap();
    let mut from_raw = Vec::new();
    v.encode_raw_into(&raw, &mut from_raw).unwrap();
    assert_eq!(from_raw, reference);
    // A failing record leaves the buffer as it was, and fails as `convert` does.
    let before = out.clone();
    let bad = with(good_order(), "/items/1/sku", json!(1));
    assert_eq!(
        v.encode_into(&bad, &mut out).unwrap_err(),
        v.convert(&bad).unwrap_err()
    );
    assert_eq!(out, before);
    // apache-avro refuses a value that does not fit.
    let e = v
        .encoder()
        .unwrap()
        .encode_value(&AvroValue::Int(1), &mut out)
        .unwrap_err();
    assert_eq!(e.kind, DriftKind::EncodeFailed);
    assert_eq!(out, before);
}

#[test]
fn raw_path_reorders_members_fills_defaults_and_defers_doubt() {
    let v = order_validator();
    let reference = v.encode(&good_order()).unwrap();
    // Members in another order, defaults left out, a key escaped, whitespace around.
    let raw = br#" { "created": "2024-05-06T07:08:09.123456Z", "attrs": {"color": "red"},
        "items": [{"n": 1, "sku": "a"}, {"n": 4, "sku": "b"}], "address": {"city": "Lyon", "zip": null},
        "status": "inactive", "paid": true, "weight": 3, "price": 12.5, "total": 9000000000, "qty": 2, "id": "o-1" } "#;
    let mut out = Vec::new();
    v.encode_raw_into(raw, &mut out).unwrap();
    assert_eq!(out, reference);
    // Already in schema order: no reordering needed, same bytes.
    let ordered = br#"{"id":"o-1","qty":2,"total":9000000000,"price":12.5,"weight":3,"paid":true,"status":"inactive","note":null,"address":{"city":"Lyon"},"items":[{"sku":"a"},{"sku":"b","n":4}],"attrs":{"color":"red"},"blob":"","billing":null,"created":"2024-05-06T07:08:09.123456Z","tags":[]}"#;
    out.clear();
    v.encode_raw_into(ordered, &mut out).unwrap();
    assert_eq!(out, reference);
    // A duplicate member: the tree walk decides, the last one wins as in serde_json.
    let duplicate = br#"{"id":"x","id":"o-1","qty":2,"total":9000000000,"price":12.5,"weight":3,"paid":true,"status":"inactive","address":{"city":"Lyon"},"items":[{"sku":"a"},{"sku":"b","n":4}],"attrs":{"color":"red"},"created":"2024-05-06T07:08:09.123456Z"}"#;
    out.clear();
    v.encode_raw_into(duplicate, &mut out).unwrap();
    assert_eq!(out, reference);
    // Errors are the tree walk's, and leave the buffer alone.
    let mut out = vec![1, 2];
    let e = v.encode_raw_into(br#"{"id": 5}"#, &mut out).unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (DriftKind::TypeMismatch, Some("id"))
    );
    let e = v.encode_raw_into(b"{\"id\": ", &mut out).unwrap_err();
    assert_eq!(e.kind, DriftKind::MalformedJson);
    assert_eq!(out, [1, 2]);
}

#[test]
fn union_trials_roll_back_their_bytes() {
    // The int branch is tried first and fails on range; its bytes must not stay behind.
    let schema = Schema::parse_str(r#"{"type":"record","name":"R","fields":[{"name":"n","type":["int","long"]},{"name":"s","type":"string"}]}"#).unwrap();
    let v = Validator::new(&schema).unwrap();
    let record = json!({"n": 5_000_000_000_i64, "s": "x"});
    let reference = to_avro_datum(&schema, v.convert(&record).unwrap()).unwrap();
    assert_eq!(v.encode(&record).unwrap(), reference);
    assert_eq!(reference, [2, 0x80, 0xc8, 0xaf, 0xa0, 0x25, 2, b'x']);
}

// ---------------------------------------------------------------------------------------------
// Property: any record generated from any schema converts, and round-trips through apache-avro.

/// A schema shape to generate records for.
#[derive(Debug, Clone)]
enum Shape {
    Bool,
    Int,
    Long,
    Float,
    Double,
    Str,
    Bytes,
    Enum(usize),
    Date,
    TimeMillis,
    TimeMicros,
    TimestampMillis,
    TimestampMicros,
    /// precision, scale, on a fixed (else bytes)
    Decimal(usize, usize, bool),
    Array(Box<Shape>),
    Map(Box<Shape>),
    Opt(Box<Shape>),
    Record(Vec<Shape>),
}

fn shape() -> impl Strategy<Value = Shape> {
    let leaf = prop_oneof![
        Just(Shape::Bool),
        Just(Shape::Int),
        Just(Shape::Long),
        Just(Shape::Float),
        Just(Shape::Double),
        Just(Shape::Str),
        Just(Shape::Bytes),
        (1usize..5).prop_map(Shape::Enum),
        Just(Shape::Date),
        Just(Shape::TimeMillis),
        Just(Shape::TimeMicros),
        Just(Shape::TimestampMillis),
        Just(Shape::TimestampMicros),
        (1usize..=30)
            .prop_flat_map(|p| (Just(p), 0..=p, any::<bool>()))
            .prop_map(|(p, s, fixed)| Shape::Decimal(p, s, fixed)),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            inner.clone().prop_map(|s| Shape::Array(Box::new(s))),
            inner.clone().prop_map(|s| Shape::Map(Box::new(s))),
            inner
                .clone()
                .prop_filter("unions do not nest", |s| !matches!(s, Shape::Opt(_)))
                .prop_map(|s| Shape::Opt(Box::new(s))),
            prop::collection::vec(inner, 1..5).prop_map(Shape::Record),
        ]
    })
}

fn render(shape: &Shape, names: &mut usize) -> Json {
    match shape {
        Shape::Bool => json!("boolean"),
        Shape::Int => json!("int"),
        Shape::Long => json!("long"),
        Shape::Float => json!("float"),
        Shape::Double => json!("double"),
        Shape::Str => json!("string"),
        Shape::Bytes => json!("bytes"),
        Shape::Enum(n) => {
            *names += 1;
            let symbols: Vec<String> = (0..*n).map(|i| format!("S{i}")).collect();
            json!({"type": "enum", "name": format!("E{names}"), "symbols": symbols})
        }
        Shape::Date => json!({"type": "int", "logicalType": "date"}),
        Shape::TimeMillis => json!({"type": "int", "logicalType": "time-millis"}),
        Shape::TimeMicros => json!({"type": "long", "logicalType": "time-micros"}),
        Shape::TimestampMillis => json!({"type": "long", "logicalType": "timestamp-millis"}),
        Shape::TimestampMicros => json!({"type": "long", "logicalType": "timestamp-micros"}),
        Shape::Decimal(precision, scale, false) => {
            json!({"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale})
        }
        Shape::Decimal(precision, scale, true) => {
            *names += 1;
            json!({"type": "fixed", "name": format!("D{names}"), "size": fixed_size(*precision),
                   "logicalType": "decimal", "precision": precision, "scale": scale})
        }
        Shape::Array(items) => json!({"type": "array", "items": render(items, names)}),
        Shape::Map(values) => json!({"type": "map", "values": render(values, names)}),
        Shape::Opt(inner) => json!(["null", render(inner, names)]),
        Shape::Record(fields) => {
            *names += 1;
            let name = format!("R{names}");
            let fields: Vec<Json> = fields
                .iter()
                .enumerate()
                .map(|(i, f)| json!({"name": format!("f{i}"), "type": render(f, names)}))
                .collect();
            json!({"type": "record", "name": name, "fields": fields})
        }
    }
}

fn number(x: f64) -> Json {
    Json::Number(Number::from_f64(x).unwrap())
}

/// The bytes a fixed needs for every unscaled value of `precision` digits (two's complement).
fn fixed_size(precision: usize) -> usize {
    let max = 10_i128.pow(precision as u32) - 1;
    (1..=16).find(|&b| max >> (8 * b - 1) == 0).unwrap()
}

/// `unscaled / 10^scale` written out by integer arithmetic: `-12.050`.
fn decimal_text(unscaled: i128, scale: usize) -> String {
    let sign = if unscaled < 0 { "-" } else { "" };
    let digits = format!("{:0>width$}", unscaled.unsigned_abs(), width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// Days since 1970-01-01 as `YYYY-MM-DD`, by the `time` crate (the other way round from the
/// converter, which reads the text).
fn date_text(days: i32) -> String {
    let date = time::Date::from_julian_day(days + 2_440_588).unwrap();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// Nanoseconds since midnight as `HH:MM:SS` and `fraction` digits of the second.
fn time_text(nanos: i64, fraction: usize) -> String {
    let (secs, sub) = (nanos / 1_000_000_000, nanos % 1_000_000_000);
    let mut text = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if fraction > 0 {
        text.push('.');
        text.push_str(&format!("{sub:09}")[..fraction]);
    }
    text
}

/// Nanoseconds since the epoch as RFC 3339, at a UTC offset of `offset_minutes`.
fn timestamp_text(nanos: i128, offset_minutes: i16) -> String {
    let offset = time::UtcOffset::from_whole_seconds(i32::from(offset_minutes) * 60).unwrap();
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap()
        .to_offset(offset)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Years 0001 to 9999 in days since 1970-01-01.
const DAYS: std::ops::Range<i32> = -719_162..2_932_896;
const DAY_NANOS: i64 = 86_400_000_000_000;

fn timestamp_value() -> BoxedStrategy<Json> {
    let micros = i64::from(DAYS.start) * 86_400_000_000..i64::from(DAYS.end) * 86_400_000_000;
    prop_oneof![
        micros.clone().prop_map(|m| json!(m)),
        (micros, -1439_i16..1440).prop_map(|(m, o)| json!(timestamp_text(i128::from(m) * 1000, o))),
    ]
    .boxed()
}

fn time_value(unit: i64) -> BoxedStrategy<Json> {
    prop_oneof![
        (0..DAY_NANOS / unit).prop_map(|t| json!(t)),
        (0..DAY_NANOS, 0usize..=9).prop_map(|(n, f)| json!(time_text(n, f))),
    ]
    .boxed()
}

fn decimal_value(precision: usize, scale: usize) -> BoxedStrategy<Json> {
    let max = 10_i128.pow(precision as u32) - 1;
    (-max..=max, any::<bool>())
        .prop_map(move |(unscaled, as_number)| {
            let text = decimal_text(unscaled, scale);
            // As a JSON number only when a float holds it (a parsed tree keeps the float).
            if as_number && unscaled.unsigned_abs() < 10_u128.pow(15) {
                serde_json::from_str(&text).unwrap()
            } else {
                json!(text)
            }
        })
        .boxed()
}

/// Any JSON, to break records with.
fn any_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        (-1e6f64..1e6).prop_map(number),
        Just(json!(0.125)),
        prop_oneof![
            Just("S0"),
            Just("S9"),
            Just(""),
            Just("2024-01-02T03:04:05Z"),
            Just("2024-01-02"),
            Just("13:45:01.250"),
            Just("-12.5"),
            Just("x")
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Json::Array),
            prop::collection::btree_map(
                prop_oneof![Just("f0"), Just("f1"), Just("f2"), Just("zz")],
                inner,
                0..3
            )
            .prop_map(|m| Json::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// Values for a shape; `loose` ones are sometimes anything at all, and their records sometimes
/// lack a member (required or not) or have one the schema lacks.
fn values_for(shape: &Shape, loose: bool) -> BoxedStrategy<Json> {
    let strict = match shape {
        Shape::Bool => any::<bool>().prop_map(Json::Bool).boxed(),
        Shape::Int => any::<i32>().prop_map(|i| json!(i)).boxed(),
        Shape::Long => any::<i64>().prop_map(|i| json!(i)).boxed(),
        Shape::Float => prop_oneof![
            any::<f32>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| number(f64::from(f))),
            any::<i16>().prop_map(|i| json!(i)),
        ]
        .boxed(),
        Shape::Double => prop_oneof![
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(number),
            any::<i32>().prop_map(|i| json!(i)),
        ]
        .boxed(),
        Shape::Str | Shape::Bytes => "\\PC{0,8}".prop_map(Json::String).boxed(),
        Shape::Enum(n) => (0..*n).prop_map(|i| json!(format!("S{i}"))).boxed(),
        Shape::Date => prop_oneof![
            DAYS.prop_map(|d| json!(d)),
            DAYS.prop_map(|d| json!(date_text(d)))
        ]
        .boxed(),
        Shape::TimeMillis => time_value(1_000_000),
        Shape::TimeMicros => time_value(1_000),
        Shape::TimestampMillis | Shape::TimestampMicros => timestamp_value(),
        Shape::Decimal(precision, scale, _) => decimal_value(*precision, *scale),
        Shape::Array(items) => prop::collection::vec(values_for(items, loose), 0..4)
            .prop_map(Json::Array)
            .boxed(),
        Shape::Map(values) => {
            prop::collection::btree_map("\\PC{0,4}", values_for(values, loose), 0..4)
                .prop_map(|m| Json::Object(m.into_iter().collect()))
                .boxed()
        }
        Shape::Opt(inner) => prop_oneof![Just(Json::Null), values_for(inner, loose)].boxed(),
        Shape::Record(fields) => {
            // Optional fields may be absent; loose records may lose any member.
            let members: Vec<BoxedStrategy<Option<Json>>> = fields
                .iter()
                .map(|f| match (f, loose) {
                    (_, true) => prop::option::weighted(0.9, values_for(f, loose)).boxed(),
                    (Shape::Opt(_), false) => prop::option::of(values_for(f, loose)).boxed(),
                    _ => values_for(f, loose).prop_map(Some).boxed(),
                })
                .collect();
            let extra = if loose {
                prop::option::weighted(0.1, any_json()).boxed()
            } else {
                Just(None).boxed()
            };
            (members, extra)
                .prop_map(|(values, extra)| {
                    let mut record: Map<String, Json> = values
                        .into_iter()
                        .enumerate()
                        .filter_map(|(i, v)| v.map(|v| (format!("f{i}"), v)))
                        .collect();
                    if let Some(extra) = extra {
                        record.insert("zz".to_owned(), extra);
                    }
                    Json::Object(record)
                })
                .boxed()
        }
    };
    if loose {
        prop_oneof![12 => strict, 1 => any_json()].boxed()
    } else {
        strict
    }
}

fn schema_and_record() -> impl Strategy<Value = (Json, Json)> {
    schema_and(false)
}

fn schema_and(loose: bool) -> impl Strategy<Value = (Json, Json)> {
    prop::collection::vec(shape(), 1..6).prop_flat_map(move |fields| {
        let top = Shape::Record(fields);
        (Just(render(&top, &mut 0)), values_for(&top, loose))
    })
}

/// The tests parse JSON text they generated and compare what two paths report about its
/// numbers, so the parse must give back the number written: serde_json's default float parser
/// may not (`-102151.37235071849` came back as `…848`, and the raw path and the tree walk then
/// named different numbers in the same error); the tests build serde_json with
/// `float_roundtrip` (Cargo.toml).
#[test]
fn the_tests_parse_floats_exactly() {
    for text in [
        "-102151.37235071849",
        "0.30000000000000004",
        "1.7976931348623157e+308",
    ] {
        let x: Json = serde_json::from_str(text).unwrap();
        assert_eq!(x.to_string(), text);
    }
}

proptest! {
    // No regression files: they would land outside `src/validate`; a failure prints its input.
    // 256 cases unless PROPTEST_CASES says otherwise.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_records_convert_and_round_trip((schema_json, record) in schema_and_record()) {
        let schema = Schema::parse_str(&schema_json.to_string()).unwrap();
        let v = Validator::new(&schema).unwrap();
        let value = v.convert(&record).unwrap();
        prop_assert!(value.validate(&schema));
        let bytes = to_avro_datum(&schema, value.clone()).unwrap();
        // The direct JSON → bytes path writes what apache-avro writes: byte for byte, except
        // that apache-avro writes map entries in `HashMap` order (random) and we in the
        // record's order (deterministic); either way the datum decodes to the same value.
        let ours = v.encode(&record).unwrap();
        prop_assert_eq!(from_avro_datum(&schema, &mut &ours[..], None).unwrap(), value.clone());
        if !schema_json.to_string().contains(r#""map""#) {
            prop_assert_eq!(&ours, &bytes);
        }
        prop_assert_eq!(v.encode(&record).unwrap(), ours);
        let mut via_apache = Vec::new();
        v.encoder().unwrap().encode_value(&value, &mut via_apache).unwrap();
        prop_assert_eq!(from_avro_datum(&schema, &mut &via_apache[..], None).unwrap(), value.clone());
        let decoded = from_avro_datum(&schema, &mut &bytes[..], None).unwrap();
        prop_assert_eq!(decoded, value);
        // The one-pass raw path agrees (byte for byte unless maps are involved).
        let text = record.to_string();
        let mut raw_bytes = Vec::new();
        v.encode_raw_into(text.as_bytes(), &mut raw_bytes).unwrap();
        let reparsed: Json = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(from_avro_datum(&schema, &mut &raw_bytes[..], None).unwrap(), v.convert(&reparsed).unwrap());
        if !schema_json.to_string().contains(r#""map""#) {
            prop_assert_eq!(&raw_bytes, &v.encode(&reparsed).unwrap());
        }
        // Raw bytes take the same path. (Compared with a parse of the same text: without
        // serde_json's `float_roundtrip` feature, text → f64 may differ by one ulp from the
        // f64 the text was printed from.)
        let text = record.to_string();
        let reparsed: Json = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(v.convert_raw(text.as_bytes()).unwrap(), v.convert(&reparsed).unwrap());
    }

    /// Logical values round-trip exactly: intake converts their text, apache-avro decodes the
    /// datum with the schema, and each value is what the `time` crate and integer arithmetic
    /// say it is. A timestamp with any one character broken is drift naming its field.
    #[test]
    fn logical_values_round_trip_exactly(
        nanos in i128::from(DAYS.start) * i128::from(DAY_NANOS)..i128::from(DAYS.end) * i128::from(DAY_NANOS),
        offset in -1439_i16..1440,
        days in DAYS,
        time in 0..DAY_NANOS,
        fraction in 0usize..=9,
        (precision, scale, unscaled) in (1usize..=38).prop_flat_map(|p| {
            let max = 10_i128.pow(p as u32) - 1;
            (Just(p), 0..=p, -max..=max)
        }),
        trailing_zeros in 0usize..3,
        broken_at in any::<prop::sample::Index>(),
    ) {
        let schema = Schema::parse_str(&json!({"type": "record", "name": "R", "fields": [
            {"name": "created_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
            {"name": "t_ms", "type": {"type": "int", "logicalType": "time-millis"}},
            {"name": "t_us", "type": {"type": "long", "logicalType": "time-micros"}},
            {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal",
                "precision": precision, "scale": scale}},
            {"name": "fixed", "type": {"type": "fixed", "name": "F", "size": fixed_size(precision),
                "logicalType": "decimal", "precision": precision, "scale": scale}},
        ]}).to_string()).unwrap();
        let v = Validator::new(&schema).unwrap();
        let ts = timestamp_text(nanos, offset);
        let mut amount = decimal_text(unscaled, scale);
        if trailing_zeros > 0 {
            amount.push_str(if scale == 0 { "." } else { "" });
            amount.push_str(&"0".repeat(trailing_zeros));
        }
        // The amount is a JSON number of up to 38 digits, the fixed one a string.
        let raw = format!(
            r#"{{"created_at":"{ts}","ts_ms":"{ts}","day":"{}","t_ms":"{t}","t_us":"{t}","amount":{amount},"fixed":"{}"}}"#,
            date_text(days),
            decimal_text(unscaled, scale),
            t = time_text(time, fraction),
        );
        let mut out = Vec::new();
        v.encode_raw_into(raw.as_bytes(), &mut out).unwrap();
        let truncated = time - time % 10_i64.pow(9 - fraction as u32);
        let expected = rec(vec![
            ("created_at", AvroValue::TimestampMicros(nanos.div_euclid(1_000) as i64)),
            ("ts_ms", AvroValue::TimestampMillis(nanos.div_euclid(1_000_000) as i64)),
            ("day", AvroValue::Date(days)),
            ("t_ms", AvroValue::TimeMillis((truncated / 1_000_000) as i32)),
            ("t_us", AvroValue::TimeMicros(truncated / 1_000)),
            ("amount", decimal(unscaled)),
            ("fixed", decimal(unscaled)),
        ]);
        prop_assert_eq!(from_avro_datum(&schema, &mut &out[..], None).unwrap(), expected);

        let i = broken_at.index(ts.len());
        let broken = format!("{}x{}", &ts[..i], &ts[i + 1..]);
        let raw = raw.replacen(&format!(r#""created_at":"{ts}""#), &format!(r#""created_at":"{broken}""#), 1);
        let e = v.encode_raw_into(raw.as_bytes(), &mut out).unwrap_err();
        prop_assert_eq!((e.kind, e.field.as_deref()), (DriftKind::TypeMismatch, Some("created_at")));
    }

    /// The one-pass raw path never accepts what the tree walk rejects, and reports what the
    /// tree walk reports, on records that are often broken.
    #[test]
    fn raw_path_agrees_with_the_tree_walk((schema_json, record) in schema_and(true)) {
        let schema = Schema::parse_str(&schema_json.to_string()).unwrap();
        let v = Validator::new(&schema).unwrap();
        let text = record.to_string();
        let parsed: Json = serde_json::from_str(&text).unwrap();
        let mut raw_out = vec![7];
        let raw_result = v.encode_raw_into(text.as_bytes(), &mut raw_out);
        let mut tree_out = vec![7];
        let tree_result = v.encode_into(&parsed, &mut tree_out);
        prop_assert_eq!(&raw_result, &tree_result);
        match raw_result {
            Ok(()) => prop_assert_eq!(
                from_avro_datum(&schema, &mut &raw_out[1..], None).unwrap(),
                v.convert(&parsed).unwrap()
            ),
            Err(_) => prop_assert_eq!(&raw_out, &vec![7]),
        }
        // The capturing path gives the same result and bytes, and notes the raw value of each
        // named top-level member (here: the record's last member and an absent one).
        let last = parsed.as_object().and_then(|o| o.keys().next_back().cloned());
        let names = [last.as_deref().unwrap_or("absent"), "not a member"];
        let mut capture = Capture::new(&names);
        let mut str_out = vec![7];
        let str_result = v.encode_str_into(&text, &mut str_out, &mut capture);
        prop_assert_eq!(&str_result, &tree_result);
        prop_assert_eq!(&str_out, &raw_out);
        if let Some([first, absent]) = capture.spans(&text) {
            prop_assert!(str_result.is_ok());
            prop_assert_eq!(absent, None);
            let noted = first.map(|raw| serde_json::from_str::<Json>(raw).unwrap());
            prop_assert_eq!(noted.as_ref(), parsed.get(names[0]));
        }
    }
}

/// The split takes a record's key and version from what the one pass noted, and they are what
/// its own scan finds, nested version pointer, escapes and member order included.
#[test]
fn noted_key_and_version_are_what_the_split_reads() {
    let schema = Schema::parse_str(
        r#"{"type": "record", "name": "R", "fields": [
            {"name": "id", "type": "string"},
            {"name": "meta", "type": {"type": "record", "name": "M", "fields": [{"name": "seq", "type": "long"}]}},
            {"name": "notes", "type": ["null", "string"], "default": null}
        ]}"#,
    )
    .unwrap();
    let v = Validator::new(&schema).unwrap();
    let splitter = crate::validate::Splitter::new("/data", "/id", Some("/meta/seq")).unwrap();
    let page = br#"{"data": [
        {"id": "a\u00e9", "meta": {"seq": 3}, "notes": "x"},
        {"notes": null, "meta": {"seq": 9}, "id": "b"},
        {"id": "c", "meta": {"seq": "nine"}}
    ]}"#;
    let names = splitter.top_members();
    assert_eq!(names, ["id", "meta"]);
    let mut capture = Capture::new(&names);
    let mut out = Vec::new();
    let mut noted = 0;
    for element in splitter.elements(page).unwrap() {
        out.clear();
        let encoded = v.encode_str_into(element.raw, &mut out, &mut capture);
        let top = capture.spans(element.raw);
        assert_eq!(top.is_some(), encoded.is_ok(), "{}", element.raw);
        noted += usize::from(top.is_some());
        assert_eq!(
            splitter.record(element, top),
            splitter.record(element, None)
        );
    }
    assert_eq!(noted, 2);
    let keys: Vec<_> = splitter
        .split(page)
        .unwrap()
        .into_iter()
        .map(|r| r.map(|r| (r.key, r.version)).map_err(|b| b.error.kind))
        .collect();
    assert_eq!(
        keys,
        [
            Ok(("aé".to_owned(), Some(3))),
            Ok(("b".to_owned(), Some(9))),
            Err(DriftKind::BadVersion)
        ]
    );
}
