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
fn keys_are_strings_by_default_and_composite_keys_need_avro() {
    let c = Config::from_toml(MIN).unwrap();
    let s = &c.sources[0].streams[0];
    assert_eq!(s.key_format, KeyFormat::String);
    assert_eq!(s.primary_key.pointers(), ["/id"]);
    assert!(!s.primary_key.is_composite());
    let composite = |format: &str| {
        MIN.replace(
            "primary_key = \"/id\"",
            &format!("primary_key = [\"/customer_id\", \"/id\"]\n{format}"),
        )
    };
    let c = Config::from_toml(&composite("key_format = \"avro\"")).unwrap();
    let s = &c.sources[0].streams[0];
    assert_eq!(s.key_format, KeyFormat::Avro);
    assert_eq!(s.primary_key.pointers(), ["/customer_id", "/id"]);
    assert_eq!(s.primary_key.first(), "/customer_id");
    assert_eq!(s.primary_key.to_string(), "[/customer_id, /id]");
    for (text, field, why) in [
        (
            composite(""),
            "sources[0].streams[0].primary_key",
            "needs key_format = \"avro\"",
        ),
        (
            composite("key_format = \"string\""),
            "sources[0].streams[0].primary_key",
            "needs key_format",
        ),
        (
            MIN.replace(
                "primary_key = \"/id\"",
                "primary_key = [\"/id\", \"x\"]\nkey_format = \"avro\"",
            ),
            "sources[0].streams[0].primary_key[1]",
            "not a JSON pointer",
        ),
        (
            MIN.replace(
                "primary_key = \"/id\"",
                "primary_key = [\"/a/id\", \"/id\"]\nkey_format = \"avro\"",
            ),
            "sources[0].streams[0].primary_key[1]",
            "same member name",
        ),
        (
            MIN.replace(
                "primary_key = \"/id\"",
                "primary_key = []\nkey_format = \"avro\"",
            ),
            "sources[0].streams[0].primary_key",
            "at least one",
        ),
        (
            MIN.replace("primary_key = \"/id\"", "primary_key = \"\""),
            "sources[0].streams[0].primary_key",
            "must point inside",
        ),
    ] {
        let err = Config::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains(field) && err.contains(why), "{err}");
    }
    let err = Config::from_toml(&MIN.replace("primary_key = \"/id\"", "primary_key = 7"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected a JSON pointer"), "{err}");
    let err = Config::from_toml(&MIN.replace(
        "primary_key = \"/id\"",
        "primary_key = \"/id\"\nkey_format = \"json\"",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("key_format") || err.contains("unknown variant"),
        "{err}"
    );
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
    // (text replaced in MIN, its replacement, the field the error names)
    let cases = [
        (
            "primary_key = \"/id\"",
            "primary_key = \"id\"",
            "sources[0].streams[0].primary_key",
        ),
        ("requests = 50", "requests = 0", "sources[0].quota.requests"),
        (
            "name = \"customers\"",
            "name = \"cus tomers\"",
            "sources[0].streams[0].name",
        ),
        ("http://127.0.0.1:8900", "ftp://x", "sources[0].base_url"),
        (
            "full_sync_every = \"1h\"",
            "",
            "sources[0].streams[0].detect_deletes",
        ),
        (
            "brokers = \"127.0.0.1:9092\"",
            "brokers = \"127.0.0.1:9092\"\nproperties = { \"isolation.level\" = \"read_uncommitted\" }",
            "kafka.properties.\"isolation.level\"",
        ),
        (
            "brokers = \"127.0.0.1:9092\"",
            "brokers = \"127.0.0.1:9092\"\nproperties = { \"sasl.password\" = \"hunter2\" }",
            "kafka.properties.\"sasl.password\"",
        ),
        (
            "pagination = { style = \"cursor\" }",
            "pagination = { style = \"cursor\" }\nformat = \"csv\"",
            "sources[0].streams[0].pagination.next_pointer",
        ),
        (
            "pagination = { style = \"cursor\" }",
            "pagination = { style = \"page\", total = \"/total\" }\nformat = \"jsonl\"",
            "sources[0].streams[0].pagination.total",
        ),
        (
            "pagination = { style = \"cursor\" }",
            "pagination = { style = \"graphql\", end_cursor = \"/e\", has_next_page = \"/h\" }\nformat = \"jsonl\"\nbody = { graphql = { query = \"q\", variables = { after = \"{cursor}\" } } }\nmethod = \"POST\"",
            "sources[0].streams[0].pagination.end_cursor",
        ),
    ];
    for format in ["json", "jsonl", "csv"] {
        let ok = MIN.replace(
            "pagination = { style = \"cursor\" }",
            &format!("pagination = {{ style = \"offset\" }}\nformat = \"{format}\""),
        );
        let c = Config::from_toml(&ok).unwrap_or_else(|e| panic!("{format}: {e}"));
        let st = &c.sources[0].streams[0];
        assert_eq!(st.format.as_str(), format);
        assert_eq!(
            st.records_pointer(),
            if format == "json" { "/data" } else { "" }
        );
    }
    for (from, to, field) in cases {
        let err = Config::from_toml(&MIN.replace(from, to))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("`{field}`")), "{field}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    // Tuning is the user's: it is accepted (and applied over intake's defaults).
    let tuned = MIN.replace(
        "brokers = \"127.0.0.1:9092\"",
        "brokers = \"127.0.0.1:9092\"\nproperties = { \"compression.type\" = \"zstd\", \"linger.ms\" = \"20\" }",
    );
    assert_eq!(
        Config::from_toml(&tuned).unwrap().kafka.properties["compression.type"],
        "zstd"
    );
}

#[test]
fn serve_clients_and_listeners_are_checked() {
    let with = |serve: &str| format!("{MIN}\n{serve}");
    let client = |name: &str, ops: &str, sources: &str| {
        format!(
            "[[serve.clients]]\nname = \"{name}\"\nkey = {{ env = \"K_{name}\" }}\noperations = {ops}\nsources = {sources}\n"
        )
    };
    let ok = with(&client("loader", "[\"jobs\", \"blobs\"]", "[\"sim\"]"));
    let cfg = Config::from_toml(&ok).unwrap();
    assert_eq!(cfg.serve.auth, ServeAuth::ApiKeys);
    assert_eq!(
        cfg.serve.clients[0].operations,
        [ServeOperation::Jobs, ServeOperation::Blobs]
    );
    assert!(cfg.serve.clients[0].may_act_for("sim"));
    assert!(!cfg.serve.clients[0].may_act_for("other"));
    let cases = [
        (
            with(&client("loader", "[\"jobs\"]", "[\"crm\"]")),
            "serve.clients[0].sources",
            "no source `crm`",
        ),
        (
            with(&client("loader", "[]", "[\"*\"]")),
            "serve.clients[0].operations",
            "at least one",
        ),
        (
            with(&client("loader", "[\"jobs\"]", "[]")),
            "serve.clients[0].sources",
            "at least one source",
        ),
        (
            with(&format!(
                "{}{}",
                client("loader", "[\"jobs\"]", "[\"*\"]"),
                client("loader", "[\"blobs\"]", "[\"*\"]")
            )),
            "serve.clients[1].name",
            "duplicate client",
        ),
        (
            with(&format!(
                "[serve]\nauth = \"none\"\n{}",
                client("loader", "[\"jobs\"]", "[\"*\"]")
            )),
            "serve.auth",
            "remove one",
        ),
        (
            with("[serve]\nadmin_listen = \"9091\""),
            "serve.admin_listen",
            "not host:port",
        ),
        (
            with("[serve]\nlisten = \"127.0.0.1:9091\"\nadmin_listen = \"127.0.0.1:9091\""),
            "serve.admin_listen",
            "must differ",
        ),
    ];
    for (text, field, why) in cases {
        let err = Config::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains(&format!("`{field}`")), "{field}: {err}");
        assert!(err.contains(why), "{field}: {err}");
    }
    let err = Config::from_toml(&with(&client("loader", "[\"webhooks\"]", "[\"*\"]")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `webhooks`"), "{err}");
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
    load_example("demo");
}

/// Loads `examples/<name>.toml` of the repository; panics, naming it, when it is not valid.
fn load_example(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.toml"));
    Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
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
fn kafka_security_examples_are_valid() {
    for name in [
        "confluent-cloud",
        "confluent-cloud-oauth",
        "msk-scram",
        "self-hosted-mtls",
    ] {
        let cfg = load_example(&format!("kafka/{name}"));
        assert!(cfg.kafka.security_protocol.tls(), "{name}");
    }
}

#[test]
fn public_api_examples_are_valid() {
    for name in [
        "github",
        "stripe",
        "hubspot",
        "zendesk",
        "salesforce",
        "shopify",
        "tracker",
    ] {
        let cfg = load_example(&format!("sources/{name}"));
        assert!(!cfg.sources[0].streams.is_empty());
    }
    // What each example relies on.
    let load = |name: &str| load_example(&format!("sources/{name}")).sources.remove(0);
    let github = load("github");
    assert_eq!(
        github.streams[0].pagination,
        crate::config::Pagination::Link {
            size_param: Some("per_page".into())
        }
    );
    let gh_hook = github.webhook.as_ref().unwrap();
    assert_eq!(
        gh_hook.scheme("sources[0].webhook").unwrap(),
        crate::signing::Scheme::preset("github").unwrap()
    );
    let stripe = load("stripe");
    assert_eq!(stripe.streams[0].version, None);
    let hook = stripe.webhook.as_ref().unwrap();
    assert_eq!(
        hook.scheme("sources[0].webhook").unwrap().header,
        "Stripe-Signature"
    );
    assert_eq!(hook.stream.as_deref(), Some("customers"));
    assert_eq!(
        stripe.streams[1].incremental.as_ref().unwrap().format,
        crate::config::TimeFormat::EpochS
    );
    let hubspot = load("hubspot");
    assert_eq!(hubspot.streams[0].method, crate::config::Method::Post);
    let zendesk = load("zendesk");
    assert!(matches!(
        &zendesk.streams[0].pagination,
        crate::config::Pagination::NextUrl { has_more: Some(p), .. } if p == "/meta/has_more"
    ));
    assert!(matches!(
        &zendesk.streams[1].pagination,
        crate::config::Pagination::NextUrl { done: Some(p), .. } if p == "/end_of_stream"
    ));
    let salesforce = load("salesforce");
    let vf = salesforce.streams[0].version_format.as_ref().unwrap();
    assert_eq!(
        crate::validate::parse_version_as("\"2026-01-02T03:04:05.678+0000\"", vf),
        Ok(1_767_323_045_678_000)
    );
}

// ---------------------------------------------------------------------------------------------
// The reference names every field the code accepts.
//
// The accepted fields are taken from the code itself, through `deny_unknown_fields`: putting an
// unknown key into a table of a valid config makes serde answer "unknown field `x`, expected one
// of `a`, `b`, ..." — the complete field list of the struct behind that table. The walk starts at
// the root of the reference's own toml block and probes every field it learns: a table there
// (a nested struct: recurse), a missing tag (an internally tagged enum: list its variants the
// same way, then each variant's fields), a sequence (probe its first element), or a leaf (a
// string enum lists its values). A field added to any config struct thus shows up here without
// anyone listing it, and the test fails until docs/CONFIG.md shows it.

/// One step of a path inside a toml value.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    /// The first element of an array.
    First,
}

/// What the code accepts, as dotted paths (`sources[].streams[].pagination.param`).
#[derive(Debug, Default)]
struct Accepted {
    fields: std::collections::BTreeSet<String>,
    /// Tag path (`sources[].auth.kind`) → variant names.
    tags: BTreeMap<String, Vec<String>>,
    /// Field path → values of a string enum.
    values: BTreeMap<String, Vec<String>>,
}

const PROBE: &str = "zz_probe";

fn set(root: &mut toml::Value, path: &[Step], v: toml::Value) {
    let Some((step, rest)) = path.split_first() else {
        *root = v;
        return;
    };
    let child = match step {
        Step::Key(k) => {
            let t = root.as_table_mut().expect("a table on the path");
            t.entry(k.clone()).or_insert_with(|| match rest.first() {
                Some(Step::First) => toml::Value::Array(vec![]),
                _ => toml::Value::Table(toml::Table::new()),
            })
        }
        Step::First => {
            let a = root.as_array_mut().expect("an array on the path");
            if a.is_empty() {
                a.push(toml::Value::Table(toml::Table::new()));
            }
            &mut a[0]
        }
    };
    set(child, rest, v);
}

/// The error of the config with `v` at `path` (None: it is accepted).
fn probe(base: &toml::Value, path: &[Step], v: toml::Value) -> Option<String> {
    let mut r = base.clone();
    set(&mut r, path, v);
    let text = toml::to_string(&r).expect("serialisable");
    Config::from_toml(&text).err().map(|e| e.to_string())
}

/// Backquoted names after "expected" on the line of serde's message that starts with `what`.
fn expected_list(err: &str, what: &str) -> Option<Vec<String>> {
    let line = err
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&format!("{what} `{PROBE}`")))?;
    if line.contains("there are no fields") || line.contains("there are no variants") {
        return Some(Vec::new());
    }
    let list = &line[line.find(", expected")?..];
    Some(
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

fn missing_field(err: &str) -> Option<String> {
    let at = err.find("missing field `")? + "missing field `".len();
    Some(err[at..].split('`').next()?.to_owned())
}

fn table(pairs: &[(&str, toml::Value)]) -> toml::Value {
    toml::Value::Table(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

fn walk(base: &toml::Value, path: &[Step], name: &str, out: &mut Accepted) {
    let probe_table = table(&[(PROBE, toml::Value::Integer(1))]);
    let err = probe(base, path, probe_table.clone()).unwrap_or_default();
    let join = |f: &str| {
        if name.is_empty() {
            f.to_owned()
        } else {
            format!("{name}.{f}")
        }
    };
    let sub = |base: &toml::Value, f: &str, out: &mut Accepted| {
        let mut p = path.to_vec();
        p.push(Step::Key(f.to_owned()));
        out.fields.insert(join(f));
        walk(base, &p, &join(f), out);
    };
    if let Some(fields) = expected_list(&err, "unknown field") {
        // A struct.
        for f in fields {
            sub(base, &f, out);
        }
    } else if let Some(tag) = missing_field(&err).filter(|_| !err.contains("sequence")) {
        // An internally tagged enum: its variants, then the fields of each.
        let e = probe(
            base,
            path,
            table(&[(&tag, toml::Value::String(PROBE.into()))]),
        )
        .unwrap_or_default();
        let variants = expected_list(&e, "unknown variant")
            .unwrap_or_else(|| panic!("{name}: tag `{tag}` without a variant list: {e}"));
        out.fields.insert(join(&tag));
        out.tags.insert(join(&tag), variants.clone());
        for v in variants {
            let mut b = base.clone();
            set(
                &mut b,
                path,
                table(&[(&tag, toml::Value::String(v.clone()))]),
            );
            let e = probe(
                &b,
                path,
                table(&[
                    (&tag, toml::Value::String(v.clone())),
                    (PROBE, toml::Value::Integer(1)),
                ]),
            )
            .unwrap_or_default();
            for f in expected_list(&e, "unknown field").unwrap_or_default() {
                if f != tag {
                    sub(&b, &f, out);
                }
            }
        }
    } else if err.contains("sequence") {
        // An array: walk its first element (creating one when the base has none).
        let mut b = base.clone();
        let mut p = path.to_vec();
        p.push(Step::First);
        let e = probe(&b, path, toml::Value::Array(vec![probe_table]));
        if e.as_deref()
            .and_then(|e| expected_list(e, "unknown field"))
            .is_some()
        {
            if probe(base, &p, toml::Value::Table(toml::Table::new())).is_some()
                && !matches!(value_at(base, path), Some(toml::Value::Array(a)) if !a.is_empty())
            {
                set(&mut b, &p, toml::Value::Table(toml::Table::new()));
            }
            walk(&b, &p, &format!("{name}[]"), out);
        }
    } else {
        // A leaf; a string enum lists its values.
        let e = probe(base, path, toml::Value::String(PROBE.into())).unwrap_or_default();
        if let Some(values) = expected_list(&e, "unknown variant") {
            out.values.insert(name.to_owned(), values);
        }
    }
}

fn value_at<'a>(v: &'a toml::Value, path: &[Step]) -> Option<&'a toml::Value> {
    path.iter().try_fold(v, |v, s| match s {
        Step::Key(k) => v.get(k),
        Step::First => v.get(0),
    })
}

/// The reference's toml block.
fn reference_block() -> String {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md"))
        .unwrap();
    let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_owned()
}

/// Every dotted path the reference shows, active or in a commented-out alternative line
/// (`# auth = { kind = "basic", ... }`), with the string values given to each.
fn documented(block: &str) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    fn flatten(
        prefix: &str,
        v: &toml::Value,
        out: &mut BTreeMap<String, std::collections::BTreeSet<String>>,
    ) {
        let entry = out.entry(prefix.to_owned()).or_default();
        match v {
            toml::Value::String(s) => {
                entry.insert(s.clone());
            }
            toml::Value::Table(t) => {
                for (k, x) in t {
                    flatten(&format!("{prefix}.{k}"), x, out);
                }
            }
            toml::Value::Array(a) => {
                for x in a {
                    flatten(&format!("{prefix}[]"), x, out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    let mut arrays = std::collections::BTreeSet::new();
    let mut current = String::new();
    for line in block.lines() {
        let line = line.trim();
        if let Some(h) = line.strip_prefix('[') {
            let array = h.starts_with('[');
            let name = h.trim_start_matches('[').split(']').next().unwrap().trim();
            let mut path = String::new();
            for part in name.split('.') {
                let part = part.trim_matches('"');
                path = if path.is_empty() {
                    part.to_owned()
                } else {
                    format!("{path}.{part}")
                };
                if arrays.contains(&path) {
                    path.push_str("[]");
                }
            }
            if array {
                arrays.insert(path.clone());
                // `[[sources]]` shows the field `sources` and its element `sources[]`.
                out.entry(path.clone()).or_default();
                path.push_str("[]");
            }
            out.entry(path.clone()).or_default();
            current = path;
            continue;
        }
        let body = line.trim_start_matches('#').trim();
        if let Ok(t) = toml::from_str::<toml::Table>(body) {
            for (k, v) in &t {
                let p = if current.is_empty() {
                    k.clone()
                } else {
                    format!("{current}.{k}")
                };
                flatten(&p, v, &mut out);
            }
        }
    }
    out
}

fn accepted() -> Accepted {
    let block = reference_block();
    let base: toml::Value = toml::from_str(&block).expect("the reference parses");
    let mut out = Accepted::default();
    walk(&base, &[], "", &mut out);
    out
}

#[test]
fn the_walk_finds_fields_of_every_kind() {
    // Guards the walk itself: if serde's messages changed, it would find nothing and the
    // reference check below would pass vacuously.
    let a = accepted();
    for f in [
        "kafka.brokers",
        "kafka.properties",
        "kafka.security_protocol",
        "kafka.tls.ca_file",
        "kafka.sasl.mechanism",
        "telemetry.metrics_addr",
        "serve.admin_listen",
        "serve.clients[].key",
        "serve.clients[].operations",
        "sources[].quota.token_id",
        "sources[].webhook.secrets",
        "sources[].auth.kind",
        "sources[].auth.header",
        "sources[].auth.password",
        "sources[].streams[].pagination.has_more_pointer",
        "sources[].streams[].incremental.lookback",
        "sources[].streams[].full_sync_every",
    ] {
        assert!(a.fields.contains(f), "{f} not found; found {:?}", a.fields);
    }
    assert_eq!(
        a.tags["sources[].streams[].pagination.style"],
        [
            "cursor", "link", "next_url", "graphql", "page", "offset", "after"
        ]
    );
    assert_eq!(
        a.tags["sources[].auth.kind"],
        [
            "bearer",
            "api_key",
            "basic",
            "api_key_query",
            "oauth2",
            "session"
        ]
    );
    assert_eq!(a.values["sources[].streams[].drift"], ["dlq", "evolve"]);
    assert_eq!(a.values["sources[].quota.mode"], ["central", "naive"]);
    assert_eq!(a.values["serve.auth"], ["api_keys", "none"]);
    assert!(
        a.fields.len() >= 50,
        "{} fields: {:?}",
        a.fields.len(),
        a.fields
    );
}

#[test]
fn the_reference_names_every_field_the_code_accepts() {
    let block = reference_block();
    let docs = documented(&block);
    let a = accepted();
    let missing: Vec<&String> = a.fields.iter().filter(|f| !docs.contains_key(*f)).collect();
    assert!(
        missing.is_empty(),
        "docs/CONFIG.md does not show these config fields (add them to its toml block, \
         commented out if they are alternatives): {missing:?}"
    );
    for (tag, variants) in &a.tags {
        for v in variants {
            assert!(
                docs[tag].contains(v),
                "docs/CONFIG.md shows no `{tag} = \"{v}\"` (add a commented-out example)"
            );
        }
    }
    for (field, values) in &a.values {
        for v in values {
            assert!(
                block.contains(&format!("\"{v}\"")),
                "docs/CONFIG.md does not mention the value \"{v}\" of `{field}`"
            );
        }
    }
}

#[test]
fn oauth2_settings_are_checked_naming_the_field() {
    let bearer = r#"auth = { kind = "bearer", token = { env = "INTAKE_TEST_CFG_TOKEN" } }"#;
    let with = |auth: &str| MIN.replace(bearer, auth);
    let ok = with(
        r#"auth = { kind = "oauth2", grant = "refresh_token", token_url = "https://idp/t", client_id = "c", refresh_token = { env = "RT" }, token_key = { env = "K" } }"#,
    );
    let c = Config::from_toml(&ok).unwrap();
    let Some(Auth::Oauth2(o)) = &c.sources[0].auth else {
        panic!("oauth2")
    };
    assert_eq!(o.grant, OAuth2Grant::RefreshToken);
    assert_eq!(o.client_auth, OAuth2ClientAuth::Basic);
    assert_eq!(o.refresh_margin, Duration::from_secs(60));
    for (auth, field) in [
        (
            r#"auth = { kind = "oauth2", grant = "client_credentials", token_url = "https://idp/t", client_id = "c" }"#,
            "sources[0].auth.client_secret",
        ),
        (
            r#"auth = { kind = "oauth2", grant = "refresh_token", token_url = "https://idp/t", client_id = "c", token_key = { env = "K" } }"#,
            "sources[0].auth.refresh_token",
        ),
        (
            r#"auth = { kind = "oauth2", grant = "refresh_token", token_url = "https://idp/t", client_id = "c", refresh_token = { env = "RT" } }"#,
            "sources[0].auth.token_key",
        ),
        (
            r#"auth = { kind = "oauth2", grant = "client_credentials", token_url = "ftp://idp/t", client_id = "c", client_secret = "s" }"#,
            "sources[0].auth.token_url",
        ),
        (
            r#"auth = { kind = "oauth2", grant = "client_credentials", token_url = "https://idp/t", client_id = "c", client_secret = "s", refresh_token = "r" }"#,
            "sources[0].auth.refresh_token",
        ),
    ] {
        let err = Config::from_toml(&with(auth)).unwrap_err().to_string();
        assert!(err.contains(field), "{field}: {err}");
        assert!(!err.contains("\"s\""), "{err}");
    }
    // One token id is one token.
    let two = format!(
        "{ok}\n[[sources]]\nname = \"other\"\nquota = {{ requests = 1, per = \"1s\", token_id = \"sim\" }}\nauth = {{ kind = \"bearer\", token = \"t\" }}\n"
    );
    let err = Config::from_toml(&two).unwrap_err().to_string();
    assert!(err.contains("sources[1].auth"), "{err}");
    // The registry takes oauth2 with client credentials only, checked like a source's.
    let reg = |auth: &str| format!("{MIN}\n[registry]\nauth = {{ kind = \"oauth2\", {auth} }}\n");
    Config::from_toml(&reg(
        "grant = \"client_credentials\", token_url = \"https://idp/t\", client_id = \"c\", client_secret = \"s\"",
    ))
    .unwrap();
    for (auth, field) in [
        (
            "grant = \"refresh_token\", token_url = \"https://idp/t\", client_id = \"c\", refresh_token = \"r\", token_key = \"k\"",
            "registry.auth.grant",
        ),
        (
            "grant = \"client_credentials\", token_url = \"https://idp/t\", client_id = \"c\"",
            "registry.auth.client_secret",
        ),
        (
            "grant = \"client_credentials\", token_url = \"idp\", client_id = \"c\", client_secret = \"s\"",
            "registry.auth.token_url",
        ),
    ] {
        let err = Config::from_toml(&reg(auth)).unwrap_err().to_string();
        assert!(err.contains(&format!("`{field}`")), "{auth}: {err}");
    }
}

#[test]
fn child_streams_are_checked() {
    let child = |extra: &str| {
        format!(
            "{MIN}\n[[sources.streams]]\nname = \"orders\"\npath = \"/v1/customers/{{customer}}/orders\"\nprimary_key = \"/id\"\n{extra}\n"
        )
    };
    let ok = Config::from_toml(&child(
        r#"parent = { stream = "customers", as = "customer" }"#,
    ))
    .unwrap();
    let src = &ok.sources[0];
    let orders = src.stream("orders").unwrap();
    let p = orders.parent.as_ref().unwrap();
    assert_eq!(p.key_in(src.stream("customers").unwrap()), "/id");
    assert_eq!(
        src.children_of("customers")
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["orders"]
    );
    let err = |extra: &str| Config::from_toml(&child(extra)).unwrap_err().to_string();
    assert!(err(r#"parent = { stream = "nope", as = "customer" }"#).contains("no stream `nope`"));
    assert!(
        err(r#"parent = { stream = "customers", as = "other" }"#)
            .contains("`{other}` appears nowhere in the stream's request"),
        "the path's placeholder must be the parent's"
    );
    assert!(
        err(r#"parent = { stream = "customers", as = "cursor" }"#).contains("not one intake fills")
    );
    assert!(
        err("parent = { stream = \"customers\", as = \"customer\" }\ndetect_deletes = true")
            .contains("detect_deletes")
    );
    assert!(err(r#"parent = { stream = "orders", as = "customer" }"#).contains("own ancestor"));
    // Without a parent, `{customer}` is no placeholder intake knows.
    assert!(err("").contains("unknown placeholder `{customer}`"));
}
