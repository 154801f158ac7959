//! Issue 18: real providers' webhooks. Stripe-, GitHub-, Shopify- and Slack-signed deliveries,
//! signed here with each provider's documented scheme (HMAC computed by this test, not by
//! intake), land through serve as upserts and deletes of the right keys at the right versions,
//! read back from the landing topic and, after validate and dedup, from the curated topics; a
//! forged, stale, altered or unsigned one is refused with a JSON reason and lands nothing.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use intake::config::Config;
use intake::topics::TopicNames;
use serde_json::json;
use sha2::Sha256;
use support::*;

const STRIPE: &str = "whsec_test_current";
const STRIPE_OLD: &str = "whsec_test_previous";
const GITHUB: &str = "It's a Secret to Everybody";
const SHOPIFY: &str = "shpss_test_secret";
const SLACK: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// A `[[sources]]` block: webhook source `name`, deliveries signed with any of `secrets` by the
/// provider scheme of the same name, its events all of the one stream `stream` (keyed by `/id`,
/// drift evolving); `pointers` are its `event_id`, `entity_id`, `sequence` and `record`, and
/// `webhook` holds the rest of its `[sources.webhook]` table.
fn webhook_source(
    name: &str,
    secrets: &[&str],
    stream: &str,
    pointers: [&str; 4],
    webhook: &str,
) -> String {
    let secrets: Vec<String> = secrets.iter().map(|s| format!("\"{s}\"")).collect();
    let [event_id, entity_id, sequence, record] = pointers;
    format!(
        r#"
[[sources]]
name = "{name}"
[sources.webhook]
secrets = [{secrets}]
signature = {{ preset = "{name}" }}
event_id = "{event_id}"
entity_id = "{entity_id}"
sequence = "{sequence}"
record = "{record}"
stream = "{stream}"
{webhook}
[[sources.streams]]
name = "{stream}"
primary_key = "/id"
drift = "evolve"
"#,
        secrets = secrets.join(", ")
    )
}

fn webhook_config() -> Arc<Config> {
    let stripe = webhook_source(
        "stripe",
        &[STRIPE, STRIPE_OLD],
        "customers",
        ["/id", "/data/object/id", "/created", "/data/object"],
        r#"version_format = "epoch_s"
upsert = ["customer.created", "customer.updated"]
delete = ["customer.deleted"]
ignore = ["invoice.*"]"#,
    );
    let github = webhook_source(
        "github",
        &[GITHUB],
        "issues",
        [
            "header:X-GitHub-Delivery",
            "/issue/id",
            "/issue/updated_at",
            "/issue",
        ],
        r#"event_type = ["header:X-GitHub-Event", "/action"]
upsert = ["issues.opened", "issues.edited"]
delete = ["issues.deleted"]
ignore = ["ping"]"#,
    );
    let shopify = webhook_source(
        "shopify",
        &[SHOPIFY],
        "products",
        [
            "header:X-Shopify-Webhook-Id",
            "/id",
            "header:X-Shopify-Triggered-At",
            "",
        ],
        r#"event_type = "header:X-Shopify-Topic"
upsert = ["products/create", "products/update"]
delete = ["products/delete"]"#,
    );
    let slack = webhook_source(
        "slack",
        &[SLACK],
        "users",
        ["/event_id", "/event/user/id", "/event_time", "/event/user"],
        r#"version_format = "epoch_s"
event_type = "/event/type"
upsert = ["team_join", "user_change"]"#,
    );
    Arc::new(config(&format!("{stripe}{github}{shopify}{slack}")))
}

fn hmac(secret: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(payload);
    m.finalize().into_bytes().to_vec()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Stripe: `Stripe-Signature: t=<t>,v1=<hex HMAC of "t.body">` (one `v1` per secret).
fn stripe_headers(secrets: &[&str], t: i64, body: &[u8]) -> Vec<(String, String)> {
    let mut payload = format!("{t}.").into_bytes();
    payload.extend_from_slice(body);
    let mut v = format!("t={t}");
    for s in secrets {
        v.push_str(&format!(",v1={}", hex::encode(hmac(s, &payload))));
    }
    vec![("Stripe-Signature".into(), v)]
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC of the body>`.
fn github_headers(secret: &str, event: &str, delivery: &str, body: &[u8]) -> Vec<(String, String)> {
    vec![
        (
            "X-Hub-Signature-256".into(),
            format!("sha256={}", hex::encode(hmac(secret, body))),
        ),
        ("X-GitHub-Event".into(), event.into()),
        ("X-GitHub-Delivery".into(), delivery.into()),
    ]
}

/// Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC of the body>`.
fn shopify_headers(
    secret: &str,
    topic: &str,
    id: &str,
    at: &str,
    body: &[u8],
) -> Vec<(String, String)> {
    vec![
        (
            "X-Shopify-Hmac-Sha256".into(),
            base64::engine::general_purpose::STANDARD.encode(hmac(secret, body)),
        ),
        ("X-Shopify-Topic".into(), topic.into()),
        ("X-Shopify-Webhook-Id".into(), id.into()),
        ("X-Shopify-Triggered-At".into(), at.into()),
    ]
}

/// Slack: `X-Slack-Signature: v0=<hex HMAC of "v0:t:body">`, `X-Slack-Request-Timestamp: t`.
fn slack_headers(secret: &str, t: i64, body: &[u8]) -> Vec<(String, String)> {
    let mut payload = format!("v0:{t}:").into_bytes();
    payload.extend_from_slice(body);
    vec![
        (
            "X-Slack-Signature".into(),
            format!("v0={}", hex::encode(hmac(secret, &payload))),
        ),
        ("X-Slack-Request-Timestamp".into(), t.to_string()),
    ]
}

/// POSTs a delivery to serve's webhook endpoint of `source`.
async fn post(
    srv: &Serve,
    source: &str,
    body: &[u8],
    headers: &[(String, String)],
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/webhooks/{source}", srv.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

fn bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn rfc3339_micros(s: &str) -> i64 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap()
}

/// Asserts that a delivery was refused (401) as `bad_signature`.
fn assert_bad_signature(status: u16, v: &serde_json::Value) {
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("bad_signature")),
        "{v}"
    );
}

/// What a source's deliveries come to when they leave one key upserted and another deleted,
/// each `(key, version)`.
fn upserted_and_deleted(upserted: (&str, i64), deleted: (&str, i64)) -> Expect {
    [
        (upserted.0.to_owned(), ("upsert", upserted.1)),
        (deleted.0.to_owned(), ("delete", deleted.1)),
    ]
    .into()
}

/// POSTs a delivery to the `stripe` source, signed at `t` with each of `secrets`.
async fn post_stripe(
    srv: &Serve,
    secrets: &[&str],
    t: i64,
    body: &[u8],
) -> (u16, serde_json::Value) {
    post(srv, "stripe", body, &stripe_headers(secrets, t, body)).await
}

/// Asserts that an answer's `message` contains `needle`.
fn assert_message(v: &serde_json::Value, needle: &str) {
    assert!(v["message"].as_str().unwrap().contains(needle), "{v}");
}

/// A landed event: key, op, version.
type Landed = (String, String, i64);

/// What a source's deliveries must come to: key → (op, version).
type Expect = BTreeMap<String, (&'static str, i64)>;

#[tokio::test(flavor = "multi_thread")]
async fn providers_signed_webhooks_land_as_upserts_and_deletes_and_forgeries_land_nothing() {
    let cfg = webhook_config();
    apply_topics(&cfg).await;
    let srv = Serve::start(cfg.clone()).await;
    let t0 = now();
    let mut accepted = 0usize;
    let mut expect: BTreeMap<(&str, &str), Expect> = BTreeMap::new();

    // --- Stripe: customer events; versions are the events' `created` (epoch seconds).
    let stripe_event = |id: &str, ty: &str, cus: &str, created: i64, name: &str| {
        let object = if ty == "customer.deleted" {
            json!({"id": cus, "object": "customer", "deleted": true})
        } else {
            json!({"id": cus, "object": "customer", "name": name, "email": format!("{cus}@example.com")})
        };
        bytes(
            &json!({"id": id, "object": "event", "type": ty, "created": created,
            "api_version": "2024-06-20", "data": {"object": object}}),
        )
    };
    let stripe_ok = [
        (
            "evt_1",
            "customer.created",
            "cus_A",
            1_700_000_000,
            "Ada",
            STRIPE,
        ),
        (
            "evt_2",
            "customer.updated",
            "cus_A",
            1_700_000_100,
            "Ada L.",
            STRIPE_OLD,
        ),
        (
            "evt_3",
            "customer.created",
            "cus_B",
            1_700_000_050,
            "Bob",
            STRIPE,
        ),
        (
            "evt_4",
            "customer.deleted",
            "cus_B",
            1_700_000_200,
            "",
            STRIPE,
        ),
    ];
    for (id, ty, cus, created, name, secret) in stripe_ok {
        let body = stripe_event(id, ty, cus, created, name);
        let (s, v) = post_stripe(&srv, &[secret], now(), &body).await;
        assert_eq!(s, 202, "{id}: {v}");
        assert_eq!(v["status"], "landed", "{v}");
        accepted += 1;
    }
    expect.insert(
        ("stripe", "customers"),
        upserted_and_deleted(
            ("cus_A", 1_700_000_100_000_000),
            ("cus_B", 1_700_000_200_000_000),
        ),
    );
    // An event type the source ignores: acknowledged, nothing landed.
    let invoice = bytes(
        &json!({"id": "evt_9", "type": "invoice.paid", "created": 1, "data": {"object": {"id": "in_1"}}}),
    );
    let (s, v) = post_stripe(&srv, &[STRIPE], now(), &invoice).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ignored")), "{v}");
    // A type no list names.
    let charge = bytes(
        &json!({"id": "evt_8", "type": "charge.succeeded", "created": 1, "data": {"object": {"id": "ch_1"}}}),
    );
    let (s, v) = post_stripe(&srv, &[STRIPE], now(), &charge).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (422, Some("unknown_event_type")),
        "{v}"
    );
    // Forged, stale, altered.
    let body = stripe_event(
        "evt_x",
        "customer.updated",
        "cus_A",
        1_800_000_000,
        "Mallory",
    );
    let (s, v) = post_stripe(&srv, &["whsec_attacker"], now(), &body).await;
    assert_bad_signature(s, &v);
    assert_message(&v, "bad signature");
    let (s, v) = post_stripe(&srv, &[STRIPE], now() - 3600, &body).await;
    assert_bad_signature(s, &v);
    assert_message(&v, "stale signature");
    let mut altered = body.clone();
    let at = altered.iter().position(|&b| b == b'M').unwrap();
    altered[at] = b'm';
    let (s, _) = post(
        &srv,
        "stripe",
        &altered,
        &stripe_headers(&[STRIPE], now(), &body),
    )
    .await;
    assert_eq!(s, 401);

    // --- GitHub: issues events; type from X-GitHub-Event and /action.
    let issue = |action: &str, id: u64, title: &str, updated: &str| {
        bytes(
            &json!({"action": action, "issue": {"id": id, "number": id - 100, "title": title,
            "state": "open", "updated_at": updated}, "repository": {"full_name": "octo/hello"}}),
        )
    };
    let github_ok = [
        ("d-1", "opened", 101, "First", "2026-01-01T00:00:00Z"),
        (
            "d-2",
            "edited",
            101,
            "First, edited",
            "2026-01-01T01:00:00Z",
        ),
        ("d-3", "opened", 102, "Second", "2026-01-01T00:30:00Z"),
        ("d-4", "deleted", 102, "Second", "2026-01-01T02:00:00Z"),
    ];
    for (delivery, action, id, title, updated) in github_ok {
        let body = issue(action, id, title, updated);
        let (s, v) = post(
            &srv,
            "github",
            &body,
            &github_headers(GITHUB, "issues", delivery, &body),
        )
        .await;
        assert_eq!(s, 202, "{delivery}: {v}");
        accepted += 1;
    }
    expect.insert(
        ("github", "issues"),
        upserted_and_deleted(
            ("101", rfc3339_micros("2026-01-01T01:00:00Z")),
            ("102", rfc3339_micros("2026-01-01T02:00:00Z")),
        ),
    );
    let ping = bytes(&json!({"zen": "Keep it logically awesome.", "hook_id": 1}));
    let (s, v) = post(
        &srv,
        "github",
        &ping,
        &github_headers(GITHUB, "ping", "d-0", &ping),
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ignored")), "{v}");
    let forged = issue("edited", 101, "Pwned", "2027-01-01T00:00:00Z");
    let (s, v) = post(
        &srv,
        "github",
        &forged,
        &github_headers("guess", "issues", "d-x", &forged),
    )
    .await;
    assert_bad_signature(s, &v);
    let (s, v) = post(
        &srv,
        "github",
        &forged,
        &github_headers(GITHUB, "issues", "d-x", &forged)[1..],
    )
    .await;
    assert_eq!(s, 401, "{v}");
    assert_message(&v, "missing signature header X-Hub-Signature-256");

    // --- Shopify: product topics; base64 MAC; version from X-Shopify-Triggered-At.
    let product =
        |id: u64, title: &str| bytes(&json!({"id": id, "title": title, "status": "active"}));
    let shopify_ok = [
        (
            "products/create",
            "w-1",
            1001,
            "Mug",
            "2026-02-01T00:00:00Z",
        ),
        (
            "products/update",
            "w-2",
            1001,
            "Big mug",
            "2026-02-01T00:05:00Z",
        ),
        (
            "products/create",
            "w-3",
            1002,
            "Cup",
            "2026-02-01T00:01:00Z",
        ),
    ];
    for (topic, id, pid, title, at) in shopify_ok {
        let body = product(pid, title);
        let (s, v) = post(
            &srv,
            "shopify",
            &body,
            &shopify_headers(SHOPIFY, topic, id, at, &body),
        )
        .await;
        assert_eq!(s, 202, "{id}: {v}");
        accepted += 1;
    }
    // Shopify's products/delete carries only the id.
    let gone = bytes(&json!({"id": 1002}));
    let (s, v) = post(
        &srv,
        "shopify",
        &gone,
        &shopify_headers(
            SHOPIFY,
            "products/delete",
            "w-4",
            "2026-02-01T00:09:00Z",
            &gone,
        ),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    accepted += 1;
    expect.insert(
        ("shopify", "products"),
        upserted_and_deleted(
            ("1001", rfc3339_micros("2026-02-01T00:05:00Z")),
            ("1002", rfc3339_micros("2026-02-01T00:09:00Z")),
        ),
    );
    let body = product(1001, "Forged mug");
    let mut h = shopify_headers(
        "wrong",
        "products/update",
        "w-x",
        "2027-01-01T00:00:00Z",
        &body,
    );
    let (s, v) = post(&srv, "shopify", &body, &h).await;
    assert_bad_signature(s, &v);
    // Hex where base64 is expected.
    h[0].1 = hex::encode(hmac(SHOPIFY, &body));
    let (s, v) = post(&srv, "shopify", &body, &h).await;
    assert_eq!(s, 401, "{v}");
    assert_message(&v, "malformed");

    // --- Slack: Events API callbacks; v0:{timestamp}:{body}.
    let slack_event = |id: &str, ty: &str, user: &str, name: &str, time: i64| {
        bytes(
            &json!({"token": "x", "team_id": "T1", "type": "event_callback", "event_id": id,
            "event_time": time, "event": {"type": ty, "user": {"id": user, "name": name, "deleted": false}}}),
        )
    };
    for (id, ty, user, name, time) in [
        ("Ev1", "team_join", "U1", "ada", 1_700_000_000),
        ("Ev2", "user_change", "U1", "ada.l", 1_700_000_060),
    ] {
        let body = slack_event(id, ty, user, name, time);
        let (s, v) = post(&srv, "slack", &body, &slack_headers(SLACK, now(), &body)).await;
        assert_eq!(s, 202, "{id}: {v}");
        accepted += 1;
    }
    expect.insert(
        ("slack", "users"),
        [("U1".to_owned(), ("upsert", 1_700_000_060_000_000))].into(),
    );
    // Slack's URL verification (signed like an event): answered with its challenge, never
    // landed; unsigned, refused.
    let body = bytes(&json!({"token": "x", "type": "url_verification",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}));
    let (s, v) = post(&srv, "slack", &body, &slack_headers(SLACK, now(), &body)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    let (s, v) = post(
        &srv,
        "slack",
        &body,
        &slack_headers(SLACK, now(), &body)[..1],
    )
    .await;
    assert_eq!(s, 401, "{v}");
    let body = slack_event("Ev9", "user_change", "U1", "mallory", 1_800_000_000);
    let (s, v) = post(
        &srv,
        "slack",
        &body,
        &slack_headers(SLACK, now() - 301, &body),
    )
    .await;
    assert_eq!(s, 401, "{v}");
    assert_message(&v, "stale signature");
    let (s, v) = post(
        &srv,
        "slack",
        &body,
        &slack_headers(SLACK, now(), &body)[..1],
    )
    .await;
    assert_eq!(s, 401, "{v}");
    assert_message(&v, "missing signature header X-Slack-Request-Timestamp");
    srv.stop().await;
    eprintln!("{accepted} deliveries accepted in {} s", now() - t0);

    // The landing topic holds exactly the accepted deliveries, keyed and mapped.
    let names = TopicNames::from_config(&cfg);
    let landed = read_all(&names.landing(), "read_committed");
    assert_eq!(landed.len(), accepted, "exactly the accepted deliveries");
    // (source, stream) → every landed (key, op, version).
    let mut seen: BTreeMap<(String, String), Vec<Landed>> = BTreeMap::new();
    for r in &landed {
        assert_eq!(r.header("intake.kind"), Some("event"));
        let src = r.header("intake.source").unwrap().to_owned();
        let stream = r.header("intake.stream").unwrap().to_owned();
        seen.entry((src, stream)).or_default().push((
            r.key_str().to_owned(),
            r.header("intake.op").unwrap().to_owned(),
            r.header("intake.seq").unwrap().parse().unwrap(),
        ));
        for secret in [STRIPE, STRIPE_OLD, GITHUB, SHOPIFY, SLACK] {
            assert!(
                r.headers
                    .iter()
                    .all(|(_, v)| !String::from_utf8_lossy(v).contains(secret)),
                "no secret in headers"
            );
        }
    }
    for ((src, stream), want) in &expect {
        let got = &seen[&((*src).to_owned(), (*stream).to_owned())];
        // The last landed per key is what must win.
        let mut last: BTreeMap<String, (String, i64)> = BTreeMap::new();
        for (k, op, v) in got {
            let e = last.entry(k.clone()).or_insert((op.clone(), *v));
            if *v >= e.1 {
                *e = (op.clone(), *v);
            }
        }
        let want: BTreeMap<String, (String, i64)> = want
            .iter()
            .map(|(k, (op, v))| (k.clone(), ((*op).to_owned(), *v)))
            .collect();
        assert_eq!(last, want, "{src}/{stream} landing");
    }

    // validate and dedup: the curated topics end at exactly these keys, ops and versions.
    let curated: Vec<String> = expect.keys().map(|(s, st)| names.curated(s, st)).collect();
    let final_state = |out: &BTreeMap<String, Vec<Rec>>| -> BTreeMap<String, Expect> {
        out.iter()
            .map(|(topic, recs)| {
                let mut m = Expect::new();
                for r in recs {
                    let op = if r.value.is_none() {
                        "delete"
                    } else {
                        "upsert"
                    };
                    let v: i64 = r.header("intake.version").unwrap_or("0").parse().unwrap();
                    m.insert(r.key_str().to_owned(), (op, v));
                }
                (topic.clone(), m)
            })
            .collect()
    };
    let want: BTreeMap<String, Expect> = expect
        .iter()
        .map(|((s, st), e)| (names.curated(s, st), e.clone()))
        .collect();
    let out = curate_until(&cfg, &curated, "every provider's final state", |out| {
        final_state(out) == want
    })
    .await;
    assert_eq!(final_state(&out), want);
    // Nothing went to the DLQ.
    assert_no_dead_letters(&cfg);
}
