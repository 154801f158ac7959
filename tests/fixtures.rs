//! `intake fixtures export` and `intake sim --fixtures`: a sync landed from one simulator,
//! exported as fixtures and served by a second simulator with no data of its own, lands again
//! byte for byte, every fixture page served exactly once.

mod support;

use std::sync::Arc;

use intake::fixtures::{ExportOptions, Manifest};
use support::*;

/// The landed pages of `sim/customers` in landing order: (`intake.request`, body), blob
/// references resolved.
async fn landed_customer_pages(cfg: &intake::config::Config) -> Vec<(String, Vec<u8>)> {
    let blobs = intake::blob::BlobStore::open(&cfg.blob).unwrap();
    let mut out = Vec::new();
    for r in read_landing(cfg) {
        let kind = r.header("intake.kind").unwrap_or_default();
        if r.header("intake.stream") != Some("customers") || (kind != "page" && kind != "blob-ref")
        {
            continue;
        }
        let body = if kind == "blob-ref" {
            let b = intake::blob::BlobRef::parse_header(r.header("intake.blob").unwrap()).unwrap();
            blobs.get(&b).await.unwrap().to_vec()
        } else {
            r.value.clone().unwrap()
        };
        out.push((r.header("intake.request").unwrap().to_owned(), body));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn exported_fixtures_replay_the_same_sync_byte_for_byte() {
    // A first simulator and a full sync of its customers, cursor-paginated, 50 a page.
    let sim1 = sim(&["--records", "230", "--seed", "5"]).await;
    let cfg1 = Arc::new(config(&sim_source(
        &sim1,
        &[("customers", "/v1/customers", "cursor")],
        "",
    )));
    apply_topics(&cfg1).await;
    let report = fetch_once(&cfg1).await.unwrap();
    assert_eq!(report["sim/customers"].records, 230);
    let first = landed_customer_pages(&cfg1).await;
    assert!(
        first.len() >= 5,
        "230 customers, 50 a page: {}",
        first.len()
    );

    // Exported into a fresh directory.
    let tmp = tempfile::tempdir_in(test_tmp()).unwrap();
    let dir = tmp.path().join("sim-customers");
    let opts = ExportOptions {
        stream: "customers".into(),
        out: Some(dir.clone()),
        progress: true,
        ..ExportOptions::default()
    };
    let exported = intake::fixtures::export(&cfg1, &opts).await.unwrap();
    let manifest = Manifest::read(&dir).unwrap();
    assert_eq!(
        manifest, exported.manifest,
        "the manifest written is the one reported"
    );
    assert_eq!(
        (manifest.source.as_str(), manifest.stream.as_str()),
        ("sim", "customers")
    );
    assert_eq!(manifest.format, "json");
    assert_eq!(manifest.pages.len(), first.len(), "every page of the sync");
    let mut records = 0;
    for (i, (entry, (request, body))) in manifest.pages.iter().zip(&first).enumerate() {
        assert_eq!(entry.file, format!("page-{:04}.body", i + 1));
        let file = std::fs::read(dir.join(&entry.file)).unwrap();
        assert_eq!(&file, body, "{}: the landed bytes", entry.file);
        assert_eq!(
            entry.sha256,
            intake::blob::sha256_hex(&file),
            "{}",
            entry.file
        );
        assert_eq!(entry.bytes, file.len() as u64);
        assert_eq!(entry.status, 200);
        assert!(
            entry.request.starts_with("/v1/customers") && request.ends_with(&entry.request),
            "{} is the path and query of {request}",
            entry.request
        );
        records += entry.records.expect("a JSON page splits");
    }
    assert_eq!(records, 230);
    assert_eq!(
        exported.bytes,
        first.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );
    // A second export into the same directory is refused without --force.
    let refused = intake::fixtures::export(&cfg1, &opts).await.unwrap_err();
    assert_contains(&format!("{refused:#}"), "--force");

    // A second simulator without customers of its own serves the fixtures; a fetch configured
    // like the first (another topic prefix) lands the same pages.
    let dir_arg = dir.to_str().unwrap().to_owned();
    let sim2 = sim(&["--records", "0", "--seed", "6", "--fixtures", &dir_arg]).await;
    let own = truth(&sim2).await;
    assert_eq!(
        own["streams"]["customers"]["live"]
            .as_object()
            .map(|o| o.len()),
        Some(0),
        "the second simulator has no customers of its own"
    );
    let cfg2 = Arc::new(config(&sim_source(
        &sim2,
        &[("customers", "/v1/customers", "cursor")],
        "",
    )));
    assert_ne!(cfg1.topics.prefix, cfg2.topics.prefix);
    apply_topics(&cfg2).await;
    let report = fetch_once(&cfg2).await.unwrap();
    assert_eq!(report["sim/customers"].records, 230);
    let second = landed_customer_pages(&cfg2).await;
    assert_eq!(second.len(), first.len(), "as many pages");
    for (i, ((_, a), (_, b))) in first.iter().zip(&second).enumerate() {
        assert!(a == b, "page {} differs", i + 1);
    }

    // Every fixture page was asked for exactly once, nothing missed.
    let stats = sim_get(&sim2, "/admin/fixtures/stats").await;
    let d = &stats["dirs"][0];
    assert_eq!(d["misses"], 0, "{stats}");
    let pages = d["pages"].as_array().unwrap();
    assert_eq!(pages.len(), manifest.pages.len());
    for p in pages {
        assert_eq!(p["served"], 1, "{p}");
    }
    // A request no fixture answers is a 404 naming the closest fixture request.
    let miss = support::scenario::sim_as(&sim2, "/v1/customers?limit=7", "demo").await;
    assert_eq!(miss.status(), 404);
    let body: serde_json::Value = miss.json().await.unwrap();
    assert_eq!(body["error"], "no_fixture");
    assert_contains(body["message"].as_str().unwrap(), "/v1/customers?limit=50");
    let stats = sim_get(&sim2, "/admin/fixtures/stats").await;
    assert_eq!(stats["dirs"][0]["misses"], 1);
}
