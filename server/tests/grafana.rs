//! `deploy/grafana/liveslice.json` queries only metrics the server exports:
//! a real server publishes, plays over gRPC and HTTP and ends a session,
//! then every metric name in the dashboard's PromQL (`expr`, and the
//! template variable's query) must be a series in its `/metrics` scrape.
//! (Its own test binary: the metrics recorder is process-wide.)

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Every PromQL string in the dashboard: panel targets and template
/// variable queries.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => queries(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| queries(x, out)),
        _ => {}
    }
}

/// The metric names a PromQL expression reads: identifiers outside label
/// matchers `{…}`, ranges `[…]`, strings and `by (…)`/`without (…)`
/// groupings, that are not followed by `(` (functions) and are not
/// keywords or aggregation operators.
fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "and",
        "or",
        "unless",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        // Aggregation operators, also written `sum by (x) (…)`.
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let b = expr.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut skip_group = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                continue;
            }
            b'{' => depth_brace += 1,
            b'}' => depth_brace -= 1,
            b'[' => depth_bracket += 1,
            b']' => depth_bracket -= 1,
            b')' => skip_group = false,
            _ => {}
        }
        if (c.is_ascii_alphabetic() || c == b'_' || c == b':')
            && (i == 0
                || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'$' || b[i - 1] == b'_'))
        {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            let next = expr[i..].trim_start();
            if depth_brace > 0 || depth_bracket > 0 || skip_group {
                continue;
            }
            if word == "by" || word == "without" {
                skip_group = true;
                continue;
            }
            if next.starts_with('(') || KEYWORDS.contains(&word) {
                continue;
            }
            // A number's exponent (1e3) starts with a digit, never here.
            names.push(word.to_string());
            continue;
        }
        i += 1;
    }
    names
}

#[test]
fn the_name_extractor_reads_promql() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, kind) (rate(a_bucket{instance=~"$instance", x="y{z}"}[$__rate_interval]))) / b_total offset 5m"#
        ),
        ["a_bucket", "b_total"]
    );
    assert_eq!(metric_names("8 * sum(rate(c[5m]))"), ["c"]);
    assert_eq!(
        metric_names("label_values(liveslice_sessions, instance)"),
        ["liveslice_sessions", "instance"]
    );
}

fn scrape(addr: std::net::SocketAddr) -> String {
    let (status, _, body) = common::http_get(&format!("http://{addr}/metrics"));
    assert_eq!(status, 200);
    String::from_utf8(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exported() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/liveslice.json"
    ))
    .unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "liveslice");
    let mut exprs = Vec::new();
    queries(&dashboard, &mut exprs);
    assert!(exprs.len() >= 15, "{exprs:?}");

    // Traffic: a session with drops, a gRPC subscriber, HTTP playlist and
    // segment fetches, the end.
    let server = start(test_config()).await;
    let mut c = client(&server).await;
    let p = publish(&mut c, "g", Default::default()).await.unwrap();
    let mut sub = subscribe(&mut c, "g", true, 0).await.unwrap();
    let reader = tokio::spawn(async move { collect(&mut sub, Duration::from_secs(30)).await });
    p.send_chunked(&testdata("damaged_cut_ref.h264"), &[20_000])
        .await;
    let base = format!("http://{}", server.http_addr);
    for _ in 0..100 {
        if get(&format!("{base}/live/g/index.m3u8")).await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&format!("{base}/live/g/seg-0.m4s")).await.0, 200);
    p.end().await;
    let _ = reader.await.unwrap();
    let scraped = scrape(server.http_addr);
    server.shutdown().await;

    let series: BTreeSet<&str> = scraped
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut queried = BTreeSet::new();
    for e in &exprs {
        for name in metric_names(e) {
            // The template variable's label argument.
            if name == "instance" && e.starts_with("label_values(") {
                continue;
            }
            assert!(name.starts_with("liveslice_"), "{name:?} in {e:?}");
            queried.insert(name);
        }
    }
    let missing: Vec<_> = queried
        .iter()
        .filter(|n| !series.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "queried but not in /metrics: {missing:?}\n{scraped}"
    );
    // What the issue asks the dashboard to show.
    for must in [
        "liveslice_sessions",
        "liveslice_bytes_in_total",
        "liveslice_frames_dropped_total",
        "liveslice_subscriber_lag_skips_total",
        "liveslice_http_requests_total",
        "liveslice_http_request_duration_seconds_bucket",
        "liveslice_media_memory_bytes",
    ] {
        assert!(
            queried.contains(must),
            "the dashboard does not query {must}"
        );
    }
    println!(
        "{} metrics queried, all exported: {queried:?}",
        queried.len()
    );
}
