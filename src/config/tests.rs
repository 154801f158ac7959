use super::*;

const MIN: &str = r#"
[kafka]
brokers = "127.0.0.1:9092"

[[sources]]
name = "sim"
base_url = "http://127.0.0.1:8900"
auth = { kind = "bearer", token = { env = "INTAKE_TEST_CFG_TOKEN" } }
quota = { requests = 50, per = "1s" }

[[sources.streams]]
name = "customers"
path = "/v1/customers"
primary_key = "/id"
version = "/version"
pagination = { style = "cursor" }
incremental = { param = "updated_since", field = "/updated_at", lookback = "10m" }
full_sync_every = "1h"
detect_deletes = true
"#;

#[test]
fn parses_with_defaults() {
    let c = Config::from_toml(MIN).unwrap();
    assert_eq!(c.topics.prefix, "intake");
    assert_eq!(c.blob.max_inline_bytes, 900 * 1024);
    let s = &c.sources[0].streams[0];
    assert_eq!(s.records, "/data");
    assert_eq!(s.page_size, 100);
    assert_eq!(s.drift, DriftPolicy::Dlq);
    assert_eq!(
        s.pagination,
        Pagination::Cursor {
            param: "cursor".into(),
            next_pointer: "/next_cursor".into(),
            size_param: "limit".into()
        }
    );
    assert_eq!(
        s.incremental.as_ref().unwrap().lookback,
        Duration::from_secs(600)
    );
    assert_eq!(c.sources[0].token_id(), "sim");
    assert!(c.stream("customers").is_some());
    assert!(c.stream("sim/customers").is_some());
    assert!(c.stream("other/customers").is_none());
}

#[test]
fn unknown_field_is_named() {
    let bad = MIN.replace(
        "detect_deletes = true",
        "detect_deletes = true\nprimary_keys = \"/x\"",
    );
    let err = Config::from_toml(&bad).unwrap_err().to_string();
    assert!(err.contains("unknown field `primary_keys`"), "{err}");
}

#[test]
fn invalid_values_name_the_field() {
    let cases = [
        (
            MIN.replace("primary_key = \"/id\"", "primary_key = \"id\""),
            "sources[0].streams[0].primary_key",
        ),
        (
            MIN.replace("requests = 50", "requests = 0"),
            "sources[0].quota.requests",
        ),
        (
            MIN.replace("name = \"customers\"", "name = \"cus tomers\""),
            "sources[0].streams[0].name",
        ),
        (
            MIN.replace("http://127.0.0.1:8900", "ftp://x"),
            "sources[0].base_url",
        ),
        (
            MIN.replace("full_sync_every = \"1h\"", ""),
            "sources[0].streams[0].detect_deletes",
        ),
    ];
    for (text, field) in cases {
        let err = Config::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains(&format!("`{field}`")), "{field}: {err}");
    }
}

#[test]
fn debug_never_shows_literal_secrets() {
    let text = MIN.replace("{ env = \"INTAKE_TEST_CFG_TOKEN\" }", "\"s3cr3t-token\"");
    let c = Config::from_toml(&text).unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("s3cr3t-token"), "{dbg}");
}

#[test]
fn demo_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.toml");
    Config::load(&path).unwrap();
}

#[test]
fn the_reference_in_docs_parses_with_the_real_config_code() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md"))
        .unwrap();
    let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let cfg = Config::from_toml(&doc[start..end]).unwrap();
    assert_eq!(cfg.sources[0].streams[0].page_size, 100);
    assert!(cfg.sources[0].webhook.is_some());
}

#[test]
fn public_api_examples_are_valid() {
    for name in ["github", "stripe"] {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/sources/{name}.toml"));
        let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!cfg.sources[0].streams.is_empty());
    }
}
