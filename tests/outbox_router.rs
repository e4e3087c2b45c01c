//! The outbox pattern end to end, against a real, throwaway Postgres cluster and a real
//! Kafka-protocol broker (tansu): rows inserted into an outbox table become events on one
//! topic per aggregate type (`outbox.event.<aggregatetype>`, named by the
//! `plugins/examples/outbox-router` transform's header), keyed by their aggregate, with
//! the `payload` column as the value; the outbox's deletes are dropped, and changes of
//! another table pass unchanged.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_test_support::kafka::{KafkaRecord, Tansu, read_topic, unique_name};
use switchyard_test_support::{PgCluster, Switchyard, tail};
use switchyard_tests::{read_jsonl, wait_until};

/// A plugin built by `scripts/build-plugins.sh`.
fn wasm(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins.sh first",
        path.display()
    );
    path.canonicalize().unwrap().display().to_string()
}

/// The outbox transform, then a router sending each event to the sink named like its
/// kind: routed outbox rows are `message`s (to Kafka), other changes keep their kind.
fn config(dsn: &str, brokers: &str, prefix: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.db]
type = "postgres_cdc"
dsn = "{dsn}"
slot = "sy_outbox"
tables = ["public.outbox", "public.orders"]
snapshot = "never"

[plugins.outbox]
path = "{outbox}"
config = {{ table = "public.outbox" }}

[plugins.by_kind]
path = "{by_kind}"

[pipelines.cdc]
from = ["db"]
transforms = ["outbox"]
router = "by_kind"

[sinks.message]
type = "kafka"
brokers = "{brokers}"
topic = "{prefix}.{{header:aggregatetype}}"
create_topics = true

[sinks.insert]
type = "file"
path = "{{dir}}/inserts.jsonl"

[sinks.update]
type = "file"
path = "{{dir}}/updates.jsonl"

[sinks.schema]
type = "file"
path = "{{dir}}/schemas.jsonl"
"#,
        outbox = wasm("outbox_router"),
        by_kind = wasm("route_by_kind"),
    )
}

fn read(brokers: &str, topic: &str, n: usize) -> Vec<KafkaRecord> {
    read_topic(brokers, topic, Duration::from_secs(60), |r| r.len() >= n)
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

#[test]
fn outbox_rows_become_events_on_a_topic_per_aggregate_type() {
    let broker = Tansu::shared();
    let brokers = broker.brokers();
    let prefix = unique_name("outbox.event");
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE outbox (id text PRIMARY KEY, aggregatetype text NOT NULL,
             aggregateid text NOT NULL, type text NOT NULL, payload jsonb);
         CREATE TABLE orders (id int PRIMARY KEY, status text);",
    );
    let switchyard = Switchyard::start(&config(&dsn, &brokers, &prefix));

    // The application's transactions: a change of its own table and the events it
    // publishes, which it deletes at once (the outbox stays empty).
    pg.sql(
        "app",
        r#"BEGIN;
         INSERT INTO orders VALUES (1, 'new');
         INSERT INTO outbox VALUES
             ('e1', 'order', 'o-1', 'OrderCreated', '{"order": 1, "total": "9.90"}'),
             ('e2', 'customer', 'c-7', 'CustomerCreated', '{"customer": 7}');
         DELETE FROM outbox;
         COMMIT;
         BEGIN;
         UPDATE orders SET status = 'paid' WHERE id = 1;
         INSERT INTO outbox VALUES ('e3', 'order', 'o-1', 'OrderPaid', '{"order": 1, "paid": true}');
         DELETE FROM outbox;
         COMMIT;
         INSERT INTO orders VALUES (2, 'new');"#,
    );

    let orders = read(&brokers, &format!("{prefix}.order"), 2);
    let customers = read(&brokers, &format!("{prefix}.customer"), 1);
    let inserts_done = wait_until(Duration::from_secs(60), || {
        read_jsonl(&switchyard.dir().join("inserts.jsonl")).len() >= 2
            && !read_jsonl(&switchyard.dir().join("updates.jsonl")).is_empty()
    });
    assert!(
        orders.len() == 2 && customers.len() == 1 && inserts_done,
        "order topic: {orders:?}\ncustomer topic: {customers:?}\n--- log ---\n{}",
        tail(&switchyard.logs(), 40)
    );

    // One topic per aggregate type, keyed by the aggregate, the payload column as value,
    // in commit order.
    let ids: Vec<Option<&str>> = orders.iter().map(|r| r.header("id")).collect();
    assert_eq!(ids, [Some("e1"), Some("e3")]);
    for record in &orders {
        assert_eq!(record.key.as_deref(), Some(&b"o-1"[..]));
        assert_eq!(record.header("aggregatetype"), Some("order"));
        assert_eq!(record.header("switchyard-kind"), Some("message"));
        assert_eq!(record.header("switchyard-source"), Some("db"));
        assert_eq!(record.header("pg-table"), Some("public.outbox"));
    }
    assert_eq!(
        json_of(&orders[0].payload),
        json!({"order": 1, "total": "9.90"})
    );
    assert_eq!(
        json_of(&orders[1].payload),
        json!({"order": 1, "paid": true})
    );
    let customer = &customers[0];
    assert_eq!(customer.key.as_deref(), Some(&b"c-7"[..]));
    assert_eq!(customer.header("id"), Some("e2"));
    assert_eq!(json_of(&customer.payload), json!({"customer": 7}));
    // The event id is the change's: stable when the change is streamed again.
    let id = customer.header("switchyard-id").unwrap();
    assert_eq!(id.matches('/').count(), 2, "{id}");

    // Changes of another table pass unchanged (by kind, to their own sinks); the
    // outbox's deletes and schema event went nowhere, or the router would have named
    // sinks `delete` and `schema` for them and dead-lettered the deletes.
    let inserts = read_jsonl(&switchyard.dir().join("inserts.jsonl"));
    assert_eq!(inserts.len(), 2, "{inserts:#?}");
    for (event, id) in inserts.iter().zip([1, 2]) {
        assert_eq!(event["payload"]["table"], "orders");
        assert_eq!(event["payload"]["after"]["id"], id);
        assert_eq!(event["key"], format!("{{\"id\":{id}}}"));
    }
    let updates = read_jsonl(&switchyard.dir().join("updates.jsonl"));
    assert_eq!(updates.len(), 1, "{updates:#?}");
    assert_eq!(updates[0]["payload"]["after"]["status"], "paid");
    let schemas = read_jsonl(&switchyard.dir().join("schemas.jsonl"));
    assert!(!schemas.is_empty(), "schema events reach their sink");
    assert!(
        schemas.iter().all(|e| e["payload"]["table"] == "orders"),
        "{schemas:#?}"
    );
    let metrics = switchyard_tests::metrics(&switchyard.url());
    let counted = |line: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .unwrap_or_else(|| panic!("no {line} in:\n{metrics}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(
        counted("switchyard_pipeline_events_total{pipeline=\"cdc\",outcome=\"dead_lettered\"}"),
        0.0,
        "{metrics}"
    );
    assert!(
        !switchyard.logs().contains("not routed"),
        "every outbox row was routed"
    );
}
