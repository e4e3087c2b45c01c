//! Where a webhook may connect: host names resolving to link-local or cloud metadata
//! addresses are refused at connect time as a permanent outcome, literal ones when the
//! sink is built, unless the sink sets `allow_private`.
//!
//! No external DNS: the sink resolves through a map given to it, and the guard checks
//! what that map answers exactly as it checks the system resolver's answers.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use switchyard_config::{CloudEventsMode, RetryConfig, SinkFormat, WebhookSinkConfig};
use switchyard_connector::{Outcome, Sink};
use switchyard_event::Event;
use switchyard_sinks::{SinkError, WebhookSink};
use switchyard_test_support::{Behaviour, WebhookReceiver};

const WAIT: Duration = Duration::from_secs(10);

fn config(url: String) -> WebhookSinkConfig {
    WebhookSinkConfig {
        url,
        secret: None,
        // Short: a test that wrongly connects to an unreachable address fails fast.
        timeout: Duration::from_secs(2),
        concurrency: 1,
        retry: RetryConfig::default(),
        headers: BTreeMap::new(),
        envelope: false,
        allow_private: false,
        format: SinkFormat::DEFAULT,
        cloudevents_mode: CloudEventsMode::Binary,
    }
}

/// Answers names from a fixed map and counts the lookups.
#[derive(Default)]
struct MapResolver {
    names: HashMap<String, Vec<IpAddr>>,
    lookups: AtomicUsize,
}

impl MapResolver {
    fn with(name: &str, addrs: &[&str]) -> Arc<Self> {
        let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
        Arc::new(Self {
            names: HashMap::from([(name.to_owned(), addrs)]),
            lookups: AtomicUsize::new(0),
        })
    }
}

impl Resolve for MapResolver {
    fn resolve(&self, name: Name) -> Resolving {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let found = self.names.get(name.as_str()).cloned();
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = found.ok_or_else(|| format!("{name} is not in the test's map"))?;
            let addrs: Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(addrs)
        })
    }
}

fn event(id: &str) -> Arc<Event> {
    Arc::new(Event {
        id: id.to_owned().into(),
        source: "api".into(),
        kind: "message".into(),
        key: Some(b"k".to_vec()),
        payload: br#"{"n":1}"#.to_vec(),
        content_type: "application/json".into(),
        headers: Vec::new(),
        timestamp_ms: 1_764_064_800_000,
        payload_is_compact_json: false,
    })
}

async fn deliver_one(sink: &WebhookSink) -> Outcome {
    let outcomes = sink.deliver(&[event("e-1")]).await;
    assert_eq!(outcomes.len(), 1, "one outcome per event");
    outcomes.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_name_resolving_to_a_metadata_or_link_local_address_is_refused_as_permanent() {
    for (address, class) in [
        ("169.254.169.254", "a link-local/cloud metadata address"),
        ("fd00:ec2::254", "a link-local/cloud metadata address"),
        ("169.254.7.7", "a link-local address"),
        ("fe80::1", "a link-local address"),
    ] {
        let resolver = MapResolver::with("hooks.example.test", &[address]);
        let sink = WebhookSink::with_resolver(
            "audit",
            &config("http://hooks.example.test/hook".into()),
            Some(resolver.clone()),
        )
        .expect("a host name is only checked at connect time");
        let error = match deliver_one(&sink).await {
            Outcome::Permanent { error } => error,
            other => panic!("{address}: expected a permanent refusal, got {other:?}"),
        };
        assert_eq!(
            error,
            format!(
                "sinks.audit.url: {address} (what hooks.example.test resolves to) is {class}; \
                 webhooks to it are refused unless the sink sets allow_private = true"
            )
        );
        assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1, "{address}");
    }
}

#[tokio::test]
async fn refused_addresses_are_dropped_and_the_allowed_ones_used() {
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let port = receiver.addr().port();
    // The metadata address first: without the guard the client would try it first.
    let resolver = MapResolver::with("receiver.test", &["169.254.169.254", "127.0.0.1"]);
    let sink = WebhookSink::with_resolver(
        "audit",
        &config(format!("http://receiver.test:{port}/hook")),
        Some(resolver.clone()),
    )
    .unwrap();
    assert_eq!(deliver_one(&sink).await, Outcome::Delivered);
    assert!(receiver.wait_for_count_async(1, WAIT).await);
    assert_eq!(receiver.accepted()[0].header("webhook-id"), Some("e-1"));
    assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_name_resolving_to_loopback_keeps_working() {
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let port = receiver.addr().port();
    let resolver = MapResolver::with("receiver.test", &["127.0.0.1"]);
    let sink = WebhookSink::with_resolver(
        "audit",
        &config(format!("http://receiver.test:{port}/hook")),
        Some(resolver.clone()),
    )
    .unwrap();
    assert_eq!(deliver_one(&sink).await, Outcome::Delivered);
    assert_eq!(receiver.count(), 1);
    assert_eq!(
        resolver.lookups.load(Ordering::SeqCst),
        1,
        "the map was asked"
    );
}

#[tokio::test]
async fn with_allow_private_a_link_local_answer_is_attempted() {
    // fe80::1 without a scope: the connect fails at once on this host (no packet
    // leaves), so the attempt shows as a retry rather than a refusal.
    let url = "http://receiver.test:9/hook".to_owned();
    let resolver = MapResolver::with("receiver.test", &["fe80::1"]);
    let mut cfg = config(url);
    cfg.allow_private = true;
    let sink = WebhookSink::with_resolver("audit", &cfg, Some(resolver.clone())).unwrap();
    match deliver_one(&sink).await {
        Outcome::Retry { error, .. } => {
            assert!(!error.contains("allow_private"), "{error}");
        }
        other => panic!("expected an attempt that failed to connect, got {other:?}"),
    }
    assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1);

    cfg.allow_private = false;
    let sink = WebhookSink::with_resolver("audit", &cfg, Some(resolver.clone())).unwrap();
    match deliver_one(&sink).await {
        Outcome::Permanent { error } => assert!(error.contains("allow_private"), "{error}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn literal_metadata_and_link_local_urls_are_refused_when_the_sink_is_built() {
    for (url, says) in [
        (
            "http://169.254.169.254/latest/meta-data",
            "sinks.audit.url: 169.254.169.254 is a link-local/cloud metadata address",
        ),
        // The URL parser reads these as 169.254.169.254, and so does the HTTP client.
        (
            "http://2852039166/latest",
            "sinks.audit.url: 169.254.169.254 is",
        ),
        (
            "http://[::ffff:a9fe:a9fe]/latest",
            "sinks.audit.url: ::ffff:169.254.169.254 is",
        ),
        (
            "http://[fe80::1]:8080/hook",
            "sinks.audit.url: fe80::1 is a link-local address",
        ),
        (
            "http://metadata.google.internal/computeMetadata/v1/",
            "sinks.audit.url: metadata.google.internal is the name of a cloud metadata service",
        ),
    ] {
        let error = WebhookSink::new("audit", &config(url.into())).expect_err(url);
        assert!(matches!(error, SinkError::RefusedAddress { .. }), "{url}");
        let text = error.to_string();
        assert!(text.starts_with(says), "{url}: {text}");
        assert!(
            text.ends_with("refused unless the sink sets allow_private = true"),
            "{text}"
        );

        let mut allowed = config(url.into());
        allowed.allow_private = true;
        WebhookSink::new("audit", &allowed).unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    for url in [
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
        "http://10.1.2.3/hook",
        "http://localhost:9/hook",
    ] {
        WebhookSink::new("audit", &config(url.into())).unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}
