//! Internal queues as message queues, through the real binary and its HTTP API
//! (`docs/queues.md`): work groups with leases, redelivery, dead letters and replay, priority,
//! FIFO per key, pub/sub groups, fan-out by a router plugin, kill -9, clear 4xx answers, and
//! the bounds on work groups: `max_groups`, `work_memory`, deletion, idle expiry, 7-day delays.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_test_support::{Switchyard, tail};
use switchyard_tests::{client, read_jsonl, runtime, wait_until};

const TOKEN: &str = "queue-test-token-0123456789";

/// A client of the queue API.
#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(s: &Switchyard) -> Self {
        Api {
            base: s.url(),
            http: client(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, body.to_string()).await
    }

    async fn post_raw(&self, path: &str, body: String) -> (u16, Value) {
        match self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                let v = r.json().await.unwrap_or(Value::Null);
                (status, v)
            }
            Err(_) => (0, Value::Null),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        match self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// Produces `messages`; panics unless 201.
    async fn produce(&self, queue: &str, messages: Vec<Value>) -> Vec<Value> {
        let (status, body) = self
            .post(
                &format!("/queues/{queue}/messages"),
                json!({ "messages": messages }),
            )
            .await;
        assert_eq!(status, 201, "produce: {body}");
        body["messages"].as_array().unwrap().clone()
    }

    async fn receive(&self, queue: &str, group: &str, body: Value) -> Vec<Value> {
        let (status, v) = self
            .post(&format!("/queues/{queue}/groups/{group}/receive"), body)
            .await;
        if status != 200 {
            return Vec::new();
        }
        v["messages"].as_array().cloned().unwrap_or_default()
    }

    async fn ack(&self, queue: &str, group: &str, msgs: &[Value]) -> (u16, Value) {
        let receipts: Vec<&Value> = msgs.iter().map(|m| &m["receipt"]).collect();
        self.post(
            &format!("/queues/{queue}/groups/{group}/ack"),
            json!({ "receipts": receipts }),
        )
        .await
    }

    async fn stats(&self, queue: &str) -> Value {
        self.get(&format!("/queues/{queue}/stats")).await.1
    }
}

fn config(extra: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
admin_token = "{TOKEN}"

{extra}
"#
    )
}

fn payload(m: &Value) -> &Value {
    &m["payload"]
}

#[test]
fn eight_consumers_share_100k_messages_each_handled_once() {
    let s = Switchyard::start(&config(
        r#"
[queues.jobs]
partitions = 4
"#,
    ));
    let api = Api::new(&s);
    let rt = runtime();
    const N: usize = 100_000;
    rt.block_on(async {
        let mut producers = Vec::new();
        for p in 0..4 {
            let api = api.clone();
            producers.push(tokio::spawn(async move {
                for batch in 0..(N / 4 / 500) {
                    let msgs = (0..500)
                        .map(|i| json!({ "payload": { "n": p * (N / 4) + batch * 500 + i } }))
                        .collect();
                    api.produce("jobs", msgs).await;
                }
            }));
        }
        for p in producers {
            p.await.unwrap();
        }
    });
    let handled: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    rt.block_on(async {
        let mut consumers = Vec::new();
        for c in 0..8 {
            let api = api.clone();
            let handled = handled.clone();
            consumers.push(tokio::spawn(async move {
                let mut empty = 0;
                while empty < 3 {
                    let msgs = api
                        .receive("jobs", "workers", json!({ "max": 100, "wait": "200ms" }))
                        .await;
                    if msgs.is_empty() {
                        empty += 1;
                        continue;
                    }
                    empty = 0;
                    handled
                        .lock()
                        .unwrap()
                        .extend(msgs.iter().map(|m| (c, payload(m)["n"].as_u64().unwrap())));
                    let (status, body) = api.ack("jobs", "workers", &msgs).await;
                    assert_eq!(status, 200, "{body}");
                    assert_eq!(body["acked"], msgs.len(), "{body}");
                }
            }));
        }
        for c in consumers {
            c.await.unwrap();
        }
    });
    let handled = handled.lock().unwrap();
    let mut per_message: HashMap<u64, usize> = HashMap::new();
    let mut per_consumer = [0usize; 8];
    for &(c, n) in handled.iter() {
        *per_message.entry(n).or_default() += 1;
        per_consumer[c] += 1;
    }
    let twice = per_message.values().filter(|&&k| k > 1).count();
    eprintln!(
        "handled={} distinct={} twice={twice} per consumer={per_consumer:?}",
        handled.len(),
        per_message.len()
    );
    assert_eq!(per_message.len(), N, "every message handled");
    assert_eq!(twice, 0, "no message handled by two consumers");
    assert!(
        per_consumer.iter().filter(|&&n| n > 0).count() >= 4,
        "the work was shared: {per_consumer:?}"
    );
    let stats = rt.block_on(api.stats("jobs"));
    assert_eq!(stats["groups"]["workers"]["depth"], 0, "{stats}");
    assert_eq!(stats["groups"]["workers"]["in_flight"], 0, "{stats}");
}

#[test]
fn a_crashed_consumers_messages_come_back_and_a_poison_message_is_dead_lettered_then_replayed() {
    let s = Switchyard::start(&config(
        r#"
[queues.tasks]
ack_timeout = "300ms"
max_deliveries = 3
dead_letter = "tasks-dlq"

[queues.tasks-dlq]
"#,
    ));
    let api = Api::new(&s);
    let rt = runtime();
    rt.block_on(async {
        let msgs = (0..20)
            .map(|i| json!({ "payload": { "n": i, "poison": i == 7 } }))
            .collect();
        api.produce("tasks", msgs).await;

        // A consumer takes ten and "crashes": it never acks.
        let lost = api.receive("tasks", "w", json!({ "max": 10 })).await;
        assert_eq!(lost.len(), 10);
        assert!(lost.iter().all(|m| m["deliveries"] == 1));
        let lost_ns: HashSet<u64> = lost
            .iter()
            .map(|m| payload(m)["n"].as_u64().unwrap())
            .collect();

        // Another consumer handles everything except the poison message, which it never
        // acks (as if it crashed the consumer each time).
        let mut done: HashSet<u64> = HashSet::new();
        let mut redelivered = HashSet::new();
        let mut poison_deliveries = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let got = api
                .receive("tasks", "w", json!({ "max": 20, "wait": "500ms" }))
                .await;
            let (poison, good): (Vec<Value>, Vec<Value>) =
                got.into_iter().partition(|m| payload(m)["poison"] == true);
            poison_deliveries.extend(poison.iter().map(|m| m["deliveries"].as_u64().unwrap()));
            for m in &good {
                let n = payload(m)["n"].as_u64().unwrap();
                if lost_ns.contains(&n) {
                    assert_eq!(m["deliveries"], 2, "redelivered after the lease: {m}");
                    redelivered.insert(n);
                }
                done.insert(n);
            }
            if !good.is_empty() {
                api.ack("tasks", "w", &good).await;
            }
            let stats = api.stats("tasks").await;
            if done.len() == 19 && stats["groups"]["w"]["dead_lettered"] == 1 {
                break;
            }
        }
        assert_eq!(done.len(), 19, "every good message handled");
        assert_eq!(
            redelivered.len(),
            lost_ns.len() - usize::from(lost_ns.contains(&7)),
            "the crashed consumer's messages came back"
        );
        let stats = api.stats("tasks").await;
        assert_eq!(stats["groups"]["w"]["dead_lettered"], 1, "{stats}");
        assert_eq!(stats["groups"]["w"]["depth"], 0, "{stats}");
        assert!(
            poison_deliveries.iter().all(|&d| d <= 3),
            "{poison_deliveries:?}"
        );

        // The gauges say so too (they are refreshed every second).
        let metric = r#"switchyard_queue_group_dead_lettered{queue="tasks",group="w"} 1"#;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = api
                .http
                .get(format!("{}/metrics", api.base))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if text.lines().any(|l| l == metric) {
                break;
            }
            assert!(Instant::now() < deadline, "no `{metric}` in:\n{text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // The dead letter says why, and replay puts it back into the queue.
        let (status, dl) = api.get("/admin/dlq/tasks-dlq").await;
        assert_eq!(status, 200);
        let letters = dl["dead_letters"].as_array().unwrap();
        assert_eq!(letters.len(), 1, "{dl}");
        let headers = &letters[0]["event"]["headers"];
        assert_eq!(headers["x-switchyard-dead-letter-queue"], "tasks");
        assert_eq!(headers["x-switchyard-dead-letter-group"], "w");
        assert_eq!(headers["x-switchyard-dead-letter-attempts"], "3");
        assert!(
            headers["x-switchyard-dead-letter-error"]
                .as_str()
                .unwrap()
                .contains("expired"),
            "{headers}"
        );
        // A body that is not a replay request is refused with the API's JSON error.
        let (status, r) = api
            .post("/admin/dlq/tasks-dlq/replay", json!({ "sinks": "typo" }))
            .await;
        assert_eq!(status, 400, "{r}");
        assert!(r["error"].as_str().unwrap().contains("sinks"), "{r}");
        let (status, r) = api.post("/admin/dlq/tasks-dlq/replay", json!({})).await;
        assert_eq!((status, &r["replayed"]), (200, &json!(1)), "{r}");
        let back = api
            .receive("tasks", "w", json!({ "max": 10, "wait": "5s" }))
            .await;
        assert_eq!(back.len(), 1);
        assert_eq!(payload(&back[0])["n"], 7);
        assert_eq!(back[0]["deliveries"], 1, "a replayed message starts over");
        assert!(
            back[0]["headers"]
                .as_object()
                .unwrap()
                .keys()
                .all(|k| !k.starts_with("x-switchyard-dead-letter")),
            "{}",
            back[0]
        );
        let (_, acked) = api.ack("tasks", "w", &back).await;
        assert_eq!(acked["acked"], 1);
        // Nothing left to replay, and purge reports zero.
        let (_, purge) = api.post("/admin/dlq/tasks-dlq/purge", json!({})).await;
        assert_eq!(purge["purged"], 0, "{purge}");
    });
}

#[test]
fn priority_delay_nack_extend_and_dedup() {
    let s = Switchyard::start(&config(
        r#"
[queues.p]
ack_timeout = "2s"
"#,
    ));
    let api = Api::new(&s);
    let rt = runtime();
    rt.block_on(async {
        // Priorities produced in mixed order; equal priorities keep their order.
        let mut msgs = Vec::new();
        for i in 0..30 {
            msgs.push(json!({ "payload": { "i": i }, "priority": (i * 7) % 10 }));
        }
        api.produce("p", msgs).await;
        let got = api.receive("p", "g", json!({ "max": 30 })).await;
        let order: Vec<(u64, u64)> = got
            .iter()
            .map(|m| {
                (
                    m["priority"].as_u64().unwrap(),
                    payload(m)["i"].as_u64().unwrap(),
                )
            })
            .collect();
        let mut expected = order.clone();
        expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        assert_eq!(order, expected, "higher priority first, then oldest first");
        assert_eq!(api.ack("p", "g", &got).await.1["acked"], 30);

        // A delayed message is not handed out before its time.
        api.produce("p", vec![json!({ "payload": "later", "delay": "1500ms" })])
            .await;
        let early = Instant::now();
        assert!(api.receive("p", "g", json!({ "max": 1 })).await.is_empty());
        let later = api
            .receive("p", "g", json!({ "max": 1, "wait": "10s" }))
            .await;
        assert_eq!(later.len(), 1);
        assert!(early.elapsed() >= Duration::from_millis(1400));

        // nack with a delay, then extend the next lease past ack_timeout.
        let (status, r) = api
            .post(
                "/queues/p/groups/g/nack",
                json!({ "receipts": [later[0]["receipt"]], "delay": "300ms" }),
            )
            .await;
        assert_eq!((status, &r["nacked"]), (200, &json!(1)), "{r}");
        assert!(api.receive("p", "g", json!({ "max": 1 })).await.is_empty());
        let again = api
            .receive("p", "g", json!({ "max": 1, "wait": "5s" }))
            .await;
        assert_eq!(again[0]["deliveries"], 2);
        let (_, ext) = api
            .post(
                "/queues/p/groups/g/extend",
                json!({ "receipts": [again[0]["receipt"]], "by": "30s" }),
            )
            .await;
        assert_eq!(ext["extended"], 1, "{ext}");
        // Past the original 2 s lease it is still ours.
        assert!(
            api.receive("p", "g", json!({ "max": 1, "wait": "2500ms" }))
                .await
                .is_empty()
        );
        // The first delivery's receipt is stale; the current one acks.
        let (_, stale) = api.ack("p", "g", &later).await;
        assert_eq!(stale["acked"], 0);
        assert_eq!(stale["stale"][0], later[0]["receipt"]);
        assert_eq!(api.ack("p", "g", &again).await.1["acked"], 1);

        // The same idempotency key within the window is stored once.
        let first = api
            .produce("p", vec![json!({ "payload": 1, "idempotency_key": "k-1" })])
            .await;
        let second = api
            .produce("p", vec![json!({ "payload": 2, "idempotency_key": "k-1" })])
            .await;
        assert_eq!(first[0]["duplicate"], false);
        assert_eq!(second[0]["duplicate"], true);
        assert_eq!(second[0]["id"], first[0]["id"]);
        let one = api
            .receive("p", "g", json!({ "max": 10, "wait": "1s" }))
            .await;
        assert_eq!(one.len(), 1);
        assert_eq!(payload(&one[0]), &json!(1));
    });
}

#[test]
fn a_keys_messages_are_handled_in_order_by_concurrent_consumers() {
    let s = Switchyard::start(&config(
        r#"
[queues.k]
partitions = 2
"#,
    ));
    let api = Api::new(&s);
    let rt = runtime();
    const KEYS: usize = 20;
    const PER_KEY: u64 = 100;
    rt.block_on(async {
        for seq in 0..PER_KEY {
            let msgs = (0..KEYS)
                .map(|k| json!({ "payload": { "k": k, "seq": seq }, "key": format!("key-{k}") }))
                .collect();
            api.produce("k", msgs).await;
        }
        // Unkeyed messages alongside, handed out freely.
        api.produce(
            "k",
            (0..200)
                .map(|i| json!({ "payload": { "free": i } }))
                .collect(),
        )
        .await;
    });
    let in_flight: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let seen: Arc<Mutex<BTreeMap<u64, Vec<u64>>>> = Arc::default();
    let overlaps = Arc::new(Mutex::new(0usize));
    rt.block_on(async {
        let mut consumers = Vec::new();
        for _ in 0..8 {
            let (api, in_flight, seen, overlaps) = (
                api.clone(),
                in_flight.clone(),
                seen.clone(),
                overlaps.clone(),
            );
            consumers.push(tokio::spawn(async move {
                let mut empty = 0;
                while empty < 3 {
                    let msgs = api
                        .receive("k", "g", json!({ "max": 7, "wait": "200ms" }))
                        .await;
                    if msgs.is_empty() {
                        empty += 1;
                        continue;
                    }
                    empty = 0;
                    let keyed: Vec<(u64, u64)> = msgs
                        .iter()
                        .filter_map(|m| {
                            Some((payload(m)["k"].as_u64()?, payload(m)["seq"].as_u64()?))
                        })
                        .collect();
                    {
                        let mut f = in_flight.lock().unwrap();
                        let mut s = seen.lock().unwrap();
                        for &(k, seq) in &keyed {
                            if !f.insert(k) {
                                *overlaps.lock().unwrap() += 1;
                            }
                            s.entry(k).or_default().push(seq);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    {
                        let mut f = in_flight.lock().unwrap();
                        for &(k, _) in &keyed {
                            f.remove(&k);
                        }
                    }
                    api.ack("k", "g", &msgs).await;
                }
            }));
        }
        for c in consumers {
            c.await.unwrap();
        }
    });
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), KEYS);
    for (k, seqs) in seen.iter() {
        assert_eq!(
            seqs,
            &(0..PER_KEY).collect::<Vec<_>>(),
            "key {k} handled in order, each once"
        );
    }
    assert_eq!(
        *overlaps.lock().unwrap(),
        0,
        "two messages of one key were never leased at once"
    );
}

#[test]
fn pubsub_groups_and_a_router_plugin_fan_a_queue_out_by_content() {
    let wasm = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release/route_by_table.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: run scripts/build-plugins.sh",
        wasm.display()
    );
    let s = Switchyard::start(&config(&format!(
        r#"
[queues.in]
partitions = 2
[queues.orders]
[queues.customers]
[queues.other]

[sources.fanout]
type = "queue"
queue = "in"
group = "fanout"

[sources.archive]
type = "queue"
queue = "in"
group = "archive"

[plugins.by_table]
path = "{wasm}"
config = {{ routes = {{ "public.orders" = ["to_orders"], "public.customers" = ["to_customers"] }}, default = ["to_other"] }}

[pipelines.route]
from = ["fanout"]
router = "by_table"

[pipelines.archive]
from = ["archive"]
to = ["file"]

[sinks.to_orders]
type = "queue"
queue = "orders"
[sinks.to_customers]
type = "queue"
queue = "customers"
[sinks.to_other]
type = "queue"
queue = "other"
[sinks.file]
type = "file"
path = "{{dir}}/archive.jsonl"
"#,
        wasm = wasm.display()
    )));
    let api = Api::new(&s);
    let rt = runtime();
    let tables = ["orders", "customers", "invoices"];
    rt.block_on(async {
        let msgs = (0..300)
            .map(|i| {
                json!({ "payload": { "schema": "public", "table": tables[i % 3], "i": i },
                        "key": format!("row-{}", i % 17) })
            })
            .collect();
        api.produce("in", msgs).await;
    });
    // Work groups on the fanned-out queues get exactly their table's messages.
    let drain = |queue: &'static str| {
        let api = api.clone();
        async move {
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while got.len() < 100 && Instant::now() < deadline {
                let msgs = api
                    .receive(queue, "readers", json!({ "max": 100, "wait": "500ms" }))
                    .await;
                api.ack(queue, "readers", &msgs).await;
                got.extend(msgs);
            }
            got
        }
    };
    for (queue, table) in [
        ("orders", "orders"),
        ("customers", "customers"),
        ("other", "invoices"),
    ] {
        let got = rt.block_on(drain(queue));
        assert_eq!(got.len(), 100, "{queue}");
        assert!(got.iter().all(|m| payload(m)["table"] == table), "{queue}");
    }
    // The other pub/sub group saw every message too.
    let archive = s.dir().join("archive.jsonl");
    assert!(
        wait_until(Duration::from_secs(30), || read_jsonl(&archive).len()
            >= 300),
        "archive has {}",
        read_jsonl(&archive).len()
    );
    let stats = rt.block_on(api.stats("in"));
    assert_eq!(stats["groups"]["fanout"]["mode"], "pubsub", "{stats}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let st = rt.block_on(api.stats("in"));
            st["groups"]["fanout"]["depth"] == 0 && st["groups"]["archive"]["depth"] == 0
        }),
        "{}",
        rt.block_on(api.stats("in"))
    );
    // A pipeline's group is not a work group.
    let (status, body) = rt.block_on(api.post("/queues/in/groups/fanout/receive", json!({})));
    assert_eq!(status, 409, "{body}");
    // Two work groups each get everything.
    rt.block_on(async {
        api.produce("other", (0..50).map(|i| json!({ "payload": i })).collect())
            .await;
        for g in ["a", "b"] {
            // Keyed messages (the router kept each row's key) come one per key at a time.
            let mut got = 0;
            loop {
                let msgs = api
                    .receive("other", g, json!({ "max": 1000, "wait": "500ms" }))
                    .await;
                if msgs.is_empty() {
                    break;
                }
                got += msgs.len();
                api.ack("other", g, &msgs).await;
            }
            assert_eq!(got, 150, "group {g} sees every message of the queue");
        }
    });
}

#[test]
fn malformed_calls_get_clear_4xx_answers() {
    let mut s = Switchyard::start(&config(
        r#"
[queues.q]
max_bytes = "64KiB"
"#,
    ));
    let api = Api::new(&s);
    let rt = runtime();
    rt.block_on(async {
        let cases: Vec<(&str, String, u16, &str)> = vec![
            (
                "/queues/q/messages",
                "{not json".into(),
                400,
                "not valid JSON",
            ),
            ("/queues/q/messages", "[1,2]".into(), 400, "JSON object"),
            (
                "/queues/q/messages",
                json!({"messages": []}).to_string(),
                400,
                "1 to 1000",
            ),
            (
                "/queues/q/messages",
                json!({"key": "k"}).to_string(),
                400,
                "no `payload`",
            ),
            (
                "/queues/q/messages",
                json!({"payload": 1, "priority": 12}).to_string(),
                400,
                "0 to 9",
            ),
            (
                "/queues/q/messages",
                json!({"payload": 1, "delay": "soon"}).to_string(),
                400,
                "delay",
            ),
            (
                "/queues/q/messages",
                json!({"payload": 1, "colour": "red"}).to_string(),
                400,
                "unknown field `colour`",
            ),
            (
                "/queues/q/messages",
                json!({"payload": 1, "headers": {"a": 1}}).to_string(),
                400,
                "must be a string",
            ),
            (
                "/queues/nope/messages",
                json!({"payload": 1}).to_string(),
                404,
                "no queue named `nope`",
            ),
            (
                "/queues/q/groups/g/receive",
                json!({"max": 0}).to_string(),
                400,
                "1 to 1000",
            ),
            (
                "/queues/q/groups/g/receive",
                json!({"wait": "10m"}).to_string(),
                400,
                "at most",
            ),
            (
                "/queues/q/groups/.hidden/receive",
                "{}".into(),
                400,
                "not a valid group name",
            ),
            ("/queues/q/groups/g/ack", "{}".into(), 400, "receipts"),
            (
                "/queues/q/groups/g/ack",
                json!({"receipts": ["zzz"]}).to_string(),
                400,
                "not a receipt",
            ),
            (
                "/queues/q/groups/g/nack",
                json!({"receipts": ["0-0-1"], "delay": 5}).to_string(),
                400,
                "duration",
            ),
            // Delays and leases of more than 7 days.
            (
                "/queues/q/messages",
                json!({"payload": 1, "delay": "8d"}).to_string(),
                400,
                "`delay` in the message may be at most 7d",
            ),
            (
                "/queues/q/messages",
                json!({"messages": [{"payload": 1, "not_before": 4_102_444_800_000u64}]})
                    .to_string(),
                400,
                "at most 7d",
            ),
            (
                "/queues/q/groups/g/nack",
                json!({"receipts": ["0-0-1"], "delay": "8d"}).to_string(),
                400,
                "`delay` may be at most 7d",
            ),
            (
                "/queues/q/groups/g/receive",
                json!({"ack_timeout": "8d"}).to_string(),
                400,
                "`ack_timeout` may be at most 7d",
            ),
            (
                "/queues/q/groups/g/extend",
                json!({"receipts": ["0-0-1"], "by": "192h"}).to_string(),
                400,
                "`by` may be at most 7d",
            ),
            // Ack, nack and extend do not create groups.
            (
                "/queues/q/groups/never-received/ack",
                json!({"receipts": ["0-0-1"]}).to_string(),
                404,
                "no work group `never-received`",
            ),
        ];
        for (path, body, status, needle) in cases {
            let (got, v) = api.post_raw(path, body.clone()).await;
            assert_eq!(got, status, "{path} {body}: {v}");
            let msg = v["error"].as_str().unwrap_or_default();
            assert!(
                msg.contains(needle),
                "{path} {body}: `{msg}` lacks `{needle}`"
            );
        }
        // No token, wrong token.
        let r = reqwest::Client::new()
            .post(format!("{}/queues/q/messages", api.base))
            .body(json!({"payload": 1}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        // A delay of exactly 7 days is fine.
        let (status, v) = api
            .post("/queues/q/messages", json!({ "payload": 1, "delay": "7d" }))
            .await;
        assert_eq!(status, 201, "{v}");
        // Unknown receipts of an existing group are stale, not errors.
        assert!(api.receive("q", "g", json!({})).await.is_empty());
        let (status, v) = api
            .post("/queues/q/groups/g/ack", json!({"receipts": ["0-99-1"]}))
            .await;
        assert_eq!((status, &v["stale"][0]), (200, &json!("0-99-1")), "{v}");
        // A full queue pushes back with 429 and Retry-After; nothing already stored is lost.
        let big = "x".repeat(8 << 10);
        let mut stored = 0;
        let mut refused = None;
        for _ in 0..64 {
            let (status, v) = api
                .post("/queues/q/messages", json!({ "payload": big }))
                .await;
            match status {
                201 => stored += 1,
                429 => {
                    refused = Some(v);
                    break;
                }
                other => panic!("unexpected {other}: {v}"),
            }
        }
        let refused = refused.expect("the queue filled up");
        assert!(
            refused["error"].as_str().unwrap().contains("max_bytes"),
            "{refused}"
        );
        let all = api.receive("q", "g", json!({ "max": 1000 })).await;
        assert_eq!(
            all.len(),
            stored,
            "everything accepted (and not delayed) is there"
        );
    });
    let logs = s.logs();
    assert!(s.is_running(), "{}", tail(&logs, 20));
}

#[test]
fn kill_9_loses_no_produced_message_and_no_answered_ack() {
    let mut s = Switchyard::start(&config(
        r#"
[queues.jobs]
partitions = 3
ack_timeout = "2s"
"#,
    ));
    let rt = runtime();
    const N: u64 = 6000;
    let produced: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let handled: Arc<Mutex<Vec<u64>>> = Arc::default();
    let acked: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let base = s.url();
    let api = Api {
        base: base.clone(),
        http: client(),
    };
    // Producers: batches with an idempotency key per message, retried until answered 201.
    let mut tasks = Vec::new();
    for p in 0..2u64 {
        let (api, produced) = (api.clone(), produced.clone());
        tasks.push(rt.spawn(async move {
            let per = N / 2;
            let mut i = 0;
            while i < per {
                let ns: Vec<u64> = (i..(i + 50).min(per)).map(|j| p * per + j).collect();
                let msgs: Vec<Value> = ns
                    .iter()
                    .map(|n| json!({ "payload": { "n": n }, "idempotency_key": format!("m-{n}") }))
                    .collect();
                let (status, _) = api
                    .post("/queues/jobs/messages", json!({ "messages": msgs }))
                    .await;
                if status == 201 {
                    produced.lock().unwrap().extend(&ns);
                    i += 50;
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    // Consumers: record, then ack; an answered ack means "never again".
    for _ in 0..4 {
        let (api, handled, acked, stop) =
            (api.clone(), handled.clone(), acked.clone(), stop.clone());
        tasks.push(rt.spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let msgs = api
                    .receive("jobs", "w", json!({ "max": 50, "wait": "200ms" }))
                    .await;
                if msgs.is_empty() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let ns: Vec<u64> = msgs
                    .iter()
                    .map(|m| payload(m)["n"].as_u64().unwrap())
                    .collect();
                {
                    let acked = acked.lock().unwrap();
                    for n in &ns {
                        assert!(
                            !acked.contains(n),
                            "message {n} came back after its ack was answered"
                        );
                    }
                }
                handled.lock().unwrap().extend(&ns);
                let (status, v) = api.ack("jobs", "w", &msgs).await;
                if status == 200 {
                    let stale: HashSet<String> = v["stale"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_str().unwrap().to_owned())
                        .collect();
                    let mut a = acked.lock().unwrap();
                    for (m, n) in msgs.iter().zip(&ns) {
                        if !stale.contains(m["receipt"].as_str().unwrap()) {
                            a.insert(*n);
                        }
                    }
                }
            }
        }));
    }
    for kill in 1..=3u64 {
        let target = kill * N / 4;
        assert!(
            wait_until(Duration::from_secs(120), || handled.lock().unwrap().len()
                as u64
                >= target),
            "progress stalled before kill {kill}: {}",
            tail(&s.logs(), 30)
        );
        s.kill9();
        s.restart();
    }
    // Done when everything was produced, handled, and the group finished it all (an ack
    // whose answer was cut off by a kill may still have taken effect).
    let all_done = wait_until(Duration::from_secs(180), || {
        let p = produced.lock().unwrap().clone();
        let h: HashSet<u64> = handled.lock().unwrap().iter().copied().collect();
        p.len() as u64 == N
            && h.is_superset(&p)
            && rt.block_on(api.stats("jobs"))["groups"]["w"]["depth"] == 0
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            t.await.expect("a producer or consumer failed");
        }
    });
    eprintln!("acks answered: {}", acked.lock().unwrap().len());
    let produced = produced.lock().unwrap();
    let handled = handled.lock().unwrap();
    let distinct: HashSet<u64> = handled.iter().copied().collect();
    let lost = produced.difference(&distinct).count();
    eprintln!(
        "produced={} handled={} distinct={} duplicated={} lost={lost} runs={}",
        produced.len(),
        handled.len(),
        distinct.len(),
        handled.len() - distinct.len(),
        s.runs()
    );
    assert!(
        all_done,
        "not everything produced was finished: {}",
        tail(&s.logs(), 30)
    );
    assert_eq!(lost, 0);
}

/// The resident memory of process `pid`, in bytes (`VmRSS` of `/proc/<pid>/status`).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS in kB");
    kb * 1024
}

const MIB: u64 = 1 << 20;

/// An attacker with the token names a new work group on every receive. Each group loads a
/// window of the queue into memory; without bounds 300 groups over a few MiB of messages
/// took gigabytes. With the defaults (`max_groups` 64, `work_memory` 256 MiB) the groups
/// past 64 are refused with 409 and the process grows by less than the budget plus slack.
#[test]
fn an_attacker_naming_300_work_groups_is_refused_past_max_groups_and_memory_stays_bounded() {
    let s = Switchyard::start(&config("[queues.jobs]\n"));
    let api = Api::new(&s);
    let rt = runtime();
    let pid = s.pid().expect("running");
    // 8 MiB of messages: every group that loads its window holds all of them.
    let pad = "x".repeat(64 << 10);
    rt.block_on(async {
        for batch in 0..8 {
            let msgs = (0..16)
                .map(|i| json!({ "payload": { "n": batch * 16 + i, "pad": pad } }))
                .collect();
            api.produce("jobs", msgs).await;
        }
    });
    let before = rss_bytes(pid);
    // The budget (256 MiB) plus slack for what is not counted: per-group journals, buffers
    // of reads and answers, allocator overhead.
    let bound = 384 * MIB;
    let mut peak = before;
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    rt.block_on(async {
        for i in 0..300 {
            let group = format!("attacker-{i:03}");
            let (status, v) = api
                .post(
                    &format!("/queues/jobs/groups/{group}/receive"),
                    json!({ "max": 1 }),
                )
                .await;
            match status {
                200 => {
                    assert_eq!(v["messages"].as_array().map(Vec::len), Some(1), "{v}");
                    accepted.push((group, v["messages"][0].clone()));
                }
                409 => refused.push(v["error"].as_str().unwrap_or_default().to_owned()),
                other => panic!("receive {i}: {other} {v}"),
            }
            let now = rss_bytes(pid);
            peak = peak.max(now);
            assert!(
                now.saturating_sub(before) < bound,
                "after {} groups RSS grew from {} MiB to {} MiB (bound +{} MiB)",
                i + 1,
                before / MIB,
                now / MIB,
                bound / MIB
            );
        }
    });
    let after = rss_bytes(pid);
    eprintln!(
        "RSS before {} MiB, peak {} MiB, after 300 receives {} MiB",
        before / MIB,
        peak / MIB,
        after / MIB
    );
    assert_eq!(accepted.len(), 64, "max_groups defaults to 64");
    assert_eq!(refused.len(), 236);
    let e = &refused[0];
    for needle in [
        "has 64 work groups",
        "queues.jobs.max_groups",
        "DELETE /queues/jobs/groups/NAME",
        "switchyard queue groups delete jobs NAME",
    ] {
        assert!(e.contains(needle), "`{e}` lacks `{needle}`");
    }
    // Existing groups keep working; the budget is what the groups report.
    let stats = rt.block_on(api.stats("jobs"));
    assert_eq!(stats["work_groups"], 64, "{stats}");
    let used = stats["work_memory_bytes"].as_u64().unwrap();
    let max = stats["max_work_memory"].as_u64().unwrap();
    assert_eq!(max, 256 * MIB);
    // Past the budget each group holds its one message of progress (about 64 KiB).
    assert!(used <= max + 64 * 80 * 1024, "{used} > {max} + allowance");
    let per_group: u64 = stats["groups"]
        .as_object()
        .unwrap()
        .values()
        .map(|g| g["memory_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(per_group, used, "{stats}");
    // A group past the budget still makes progress, one message at a time.
    let (group, first) = &accepted[63];
    rt.block_on(async {
        let (status, v) = api.ack("jobs", group, std::slice::from_ref(first)).await;
        assert_eq!((status, &v["acked"]), (200, &json!(1)), "{v}");
        let next = api.receive("jobs", group, json!({ "max": 10 })).await;
        assert_eq!(next.len(), 1);
        assert_eq!(
            payload(&next[0])["n"],
            payload(first)["n"].as_u64().unwrap() + 1
        );
    });
}

#[test]
fn work_groups_are_deleted_by_api_and_cli_and_expire_when_idle() {
    let mut s = Switchyard::start(&config(
        r#"
[queues.jobs]
max_groups = 2

[queues.brief]
group_idle_expiry = "1s"

[queues.lasting]
group_idle_expiry = "0"
"#,
    ));
    let api = Api::new(&s);
    let rt = runtime();
    let groups_dir = s.data_dir().join("queues/jobs/groups");
    rt.block_on(async {
        let msgs = (0..3).map(|n| json!({ "payload": { "n": n } })).collect();
        api.produce("jobs", msgs).await;
        let a = api.receive("jobs", "a", json!({ "max": 3 })).await;
        assert_eq!(a.len(), 3);
        let (status, v) = api.ack("jobs", "a", &a[..1]).await;
        assert_eq!((status, &v["acked"]), (200, &json!(1)), "{v}");
        assert_eq!(api.receive("jobs", "b", json!({})).await.len(), 1);
        let (status, v) = api.post("/queues/jobs/groups/c/receive", json!({})).await;
        assert_eq!(status, 409, "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("queues.jobs.max_groups"),
            "{v}"
        );
        assert!(groups_dir.join("a/journal").is_dir());

        // `queue groups list`, then `queue groups delete`.
        let out = s.cli(&["queue", "groups", "list", "jobs"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("2 of 2 work groups"), "{text}");
        assert!(
            text.lines().any(|l| l.trim_start().starts_with("a ")),
            "{text}"
        );
        let out = s.cli(&["queue", "groups", "delete", "jobs", "a"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!groups_dir.join("a").exists(), "its journal is removed");
        // Its leases are gone with it.
        let (status, v) = api.ack("jobs", "a", &a[1..]).await;
        assert_eq!(status, 404, "{v}");
        // Room for another group now.
        assert_eq!(api.receive("jobs", "c", json!({})).await.len(), 1);
        // The name starts a new group: every retained message again, the acked one too.
        let (status, v) = api.get("/queues/jobs/stats").await;
        assert_eq!((status, &v["work_groups"]), (200, &json!(2)), "{v}");
        let (status, v) = api
            .http
            .delete(format!("{}/queues/jobs/groups/c", api.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .map(|r| (r.status().as_u16(), r))
            .unwrap();
        assert_eq!(status, 200);
        let v: Value = v.json().await.unwrap();
        assert_eq!(v, json!({"queue": "jobs", "group": "c", "deleted": true}));
        let fresh = api.receive("jobs", "a", json!({ "max": 10 })).await;
        let mut ns: Vec<u64> = fresh
            .iter()
            .map(|m| payload(m)["n"].as_u64().unwrap())
            .collect();
        ns.sort();
        assert_eq!(ns, vec![0, 1, 2]);
        assert!(fresh.iter().all(|m| m["deliveries"] == 1));

        // Unknown group, bad name, no token.
        for (path, token, want) in [
            ("/queues/jobs/groups/nope", Some(TOKEN), 404),
            ("/queues/jobs/groups/.x", Some(TOKEN), 400),
            ("/queues/nope/groups/a", Some(TOKEN), 404),
            ("/queues/jobs/groups/a", None, 401),
        ] {
            let mut req = api.http.delete(format!("{}{path}", api.base));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), want, "DELETE {path}");
        }
    });
    // After a restart the groups on disk load again (they count against max_groups).
    s.kill9();
    s.restart();
    let api = Api::new(&s);
    rt.block_on(async {
        let stats = api.stats("jobs").await;
        assert_eq!(stats["work_groups"], 2, "{stats}");
        let (status, v) = api.post("/queues/jobs/groups/d/receive", json!({})).await;
        assert_eq!(status, 409, "{v}");
        // Its lease did not survive the restart: `b`'s message comes again.
        let b = api.receive("jobs", "b", json!({})).await;
        assert_eq!(b.len(), 1);
        assert_eq!(b[0]["deliveries"], 2);
    });
    let out = s.cli(&["queue", "groups", "delete", "jobs", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("404") && err.contains("no work group `nope`"),
        "{err}"
    );

    // Idle expiry: `brief` deletes a group a second after its last call, `lasting` never.
    rt.block_on(async {
        api.produce("brief", vec![json!({ "payload": 1 })]).await;
        assert_eq!(api.receive("brief", "idle", json!({})).await.len(), 1);
        assert!(api.receive("lasting", "kept", json!({})).await.is_empty());
    });
    let brief_dir = s.data_dir().join("queues/brief/groups/idle");
    assert!(brief_dir.is_dir());
    let gone = wait_until(Duration::from_secs(30), || {
        let stats = rt.block_on(api.stats("brief"));
        stats["groups"].as_object().is_some_and(|g| g.is_empty()) && !brief_dir.exists()
    });
    assert!(gone, "{}", tail(&s.logs(), 20));
    // The line is written just after the deletion: wait for it too.
    let said = wait_until(Duration::from_secs(10), || {
        s.logs().lines().any(|l| {
            l.contains("work group expired")
                && l.contains("brief")
                && l.contains("idle")
                && l.contains("INFO")
        })
    });
    assert!(said, "{}", tail(&s.logs(), 20));
    let lasting = rt.block_on(api.stats("lasting"));
    assert!(lasting["groups"]["kept"].is_object(), "{lasting}");
    // The expired name starts afresh: its message (leased when it expired) comes again.
    let again = rt.block_on(api.receive("brief", "idle", json!({})));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["deliveries"], 1);
}
