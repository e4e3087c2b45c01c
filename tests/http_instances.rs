//! HTTP ingest across two switchyard instances behind a load balancer that routes each
//! request by its key: a small HTTP/1.1 proxy written here hashes the `x-key` header and
//! forwards the request to one instance. Producers send keyed batches through it; one
//! instance is killed with SIGKILL mid-stream and started again on its data directory.
//! Every event an instance acknowledged must be delivered, each key's events in order —
//! each instance's intake is local and durable, and a key always reaches the same one.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use switchyard_test_support::{Behaviour, Switchyard, WebhookReceiver, check, tail};
use switchyard_tests::{
    WEBHOOK_SECRET, deliveries, runtime, send_until, wait_for_all_delivered, wait_until,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP source `api` into a signed webhook naming the instance in a header.
fn instance(url: &str, name: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.api]
type = "http"
partitions = 4

[pipelines.deliver]
from = ["api"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "{url}"
secret = "{WEBHOOK_SECRET}"
concurrency = 8
headers = {{ "x-instance" = "{name}" }}
retry = {{ max_attempts = 60, initial = "10ms", max = "200ms" }}
"#
    )
}

/// FNV-1a (64 bit): the proxy's choice of instance for a key.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn backend_for(key: &str, backends: usize) -> usize {
    (fnv1a(key.as_bytes()) % backends as u64) as usize
}

/// Reads one HTTP/1.1 request (head and `content-length` body) from `client`.
async fn read_request(client: &mut TcpStream) -> Option<(Vec<String>, Vec<u8>)> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let lines: Vec<String> = head.split("\r\n").map(str::to_owned).collect();
    let length: usize = lines
        .iter()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 65536];
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((lines, body))
}

/// Forwards one request to the instance its `x-key` hashes to, one connection per
/// request (`connection: close` both ways), and answers 502 when that instance is down.
async fn proxy_one(mut client: TcpStream, backends: Arc<Vec<SocketAddr>>, routed: Arc<Routed>) {
    let Some((lines, body)) = read_request(&mut client).await else {
        return;
    };
    let key = lines
        .iter()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-key")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    let target = backend_for(&key, backends.len());
    let mut request = Vec::new();
    for line in lines
        .iter()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
    {
        request.extend_from_slice(line.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"connection: close\r\n\r\n");
    request.extend_from_slice(&body);
    let answer = async {
        let mut upstream = TcpStream::connect(backends[target]).await?;
        upstream.write_all(&request).await?;
        let mut response = Vec::new();
        upstream.read_to_end(&mut response).await?;
        if response.is_empty() {
            return Err(std::io::Error::other("no answer"));
        }
        Ok::<_, std::io::Error>(response)
    }
    .await;
    let response = match answer {
        Ok(response) => {
            routed.forwarded[target].fetch_add(1, Ordering::SeqCst);
            response
        }
        Err(_) => {
            routed.failed[target].fetch_add(1, Ordering::SeqCst);
            b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
        }
    };
    let _ = client.write_all(&response).await;
    let _ = client.shutdown().await;
}

/// What the proxy did per instance.
struct Routed {
    forwarded: [AtomicUsize; 2],
    failed: [AtomicUsize; 2],
}

#[test]
fn http_two_instances_behind_a_key_hashing_proxy_one_killed_loses_nothing() {
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let mut instances = [
        Switchyard::start(&instance(&receiver.url(), "0")),
        Switchyard::start(&instance(&receiver.url(), "1")),
    ];
    let backends = Arc::new(instances.iter().map(Switchyard::addr).collect::<Vec<_>>());
    let routed = Arc::new(Routed {
        forwarded: Default::default(),
        failed: Default::default(),
    });

    // The load balancer, on a runtime of its own.
    let proxy_rt = runtime();
    let listener = proxy_rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("binding the proxy");
    let proxy_url = format!("http://{}", listener.local_addr().expect("proxy address"));
    {
        let (backends, routed) = (backends.clone(), routed.clone());
        proxy_rt.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(proxy_one(client, backends.clone(), routed.clone()));
            }
        });
    }

    // Producers: 16 keys, batches of 10 events, until told to stop.
    let keys = 16;
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let producers = {
        let (url, stop, count) = (proxy_url.clone(), stop.clone(), count.clone());
        std::thread::spawn(move || {
            send_until(
                &url,
                keys,
                10,
                Duration::from_millis(10),
                100_000,
                stop,
                count,
            )
        })
    };
    let owner: HashMap<String, usize> = (0..keys)
        .map(|k| {
            let key = format!("k{k:03}");
            let to = backend_for(&key, 2);
            (key, to)
        })
        .collect();
    assert!(
        owner.values().any(|&i| i == 0) && owner.values().any(|&i| i == 1),
        "the keys all hash to one instance: {owner:?}"
    );

    assert!(
        wait_until(Duration::from_secs(60), || count.load(Ordering::SeqCst)
            >= 3_000),
        "producers did not get going: {} accepted",
        count.load(Ordering::SeqCst)
    );
    instances[0].kill9();
    let at_kill = count.load(Ordering::SeqCst);
    // Producers whose keys live on the killed instance get 502s and retry; the others
    // go on.
    assert!(
        wait_until(Duration::from_secs(60), || {
            routed.failed[0].load(Ordering::SeqCst) > 0
                && count.load(Ordering::SeqCst) >= at_kill + 1_000
        }),
        "the proxy saw no failure towards the killed instance, or the other stalled"
    );
    instances[0].restart();
    let after_restart = count.load(Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(60), || count.load(Ordering::SeqCst)
            >= after_restart + 2_000),
        "producers did not go on after the restart"
    );
    stop.store(true, Ordering::SeqCst);
    let acked = producers.join().expect("the producers");

    let all = wait_for_all_delivered(&receiver, &acked, Duration::from_secs(120));
    let delivered = deliveries(&receiver);
    let report = check(&acked, &delivered);
    // Which instance delivered each key.
    let mut delivered_by: HashMap<String, HashSet<String>> = HashMap::new();
    for r in receiver.accepted() {
        if let (Some(t), Some(i)) = (
            switchyard_test_support::Tracked::from_webhook(&r),
            r.header("x-instance"),
        ) {
            delivered_by.entry(t.key).or_default().insert(i.to_owned());
        }
    }
    println!(
        "http_instances: {report} (forwarded {:?}, refused while down {:?}, {at_kill} \
         accepted at the kill)",
        routed
            .forwarded
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .collect::<Vec<_>>(),
        routed
            .failed
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .collect::<Vec<_>>(),
    );
    assert!(
        all,
        "not every acknowledged event was delivered: {report}\n0: {}\n1: {}",
        tail(&instances[0].stderr(), 30),
        tail(&instances[1].stderr(), 30)
    );
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
    for (key, by) in &delivered_by {
        let expected = owner[key].to_string();
        assert_eq!(
            by,
            &HashSet::from([expected]),
            "key {key} was delivered by {by:?}"
        );
    }
    assert_eq!(delivered_by.len(), keys, "every key was delivered");
}
