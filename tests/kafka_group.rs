//! Several switchyard instances in one Kafka consumer group, against the tansu broker
//! (`scripts/install-tansu.sh`): three instances (each its own data directory and port)
//! share a topic of six partitions and one webhook receiver while a producer writes keyed
//! messages; one instance is killed with SIGKILL mid-stream and started again. Every
//! message produced must reach the receiver, each key's messages first delivered in
//! order, and the partitions the survivors give up when the killed instance rejoins are
//! committed up to what they had delivered.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use switchyard_test_support::kafka::{Tansu, produce, unique_name};
use switchyard_test_support::{
    Behaviour, ReceivedRequest, Switchyard, Tracked, WebhookReceiver, check, tail,
};
use switchyard_tests::{WEBHOOK_SECRET, wait_until};

const PARTITIONS: u32 = 6;
const KEYS: u64 = 36;

/// A Kafka source in group `group` piped into a signed webhook that names the instance
/// in a header.
fn member(brokers: &str, topic: &str, group: &str, url: &str, instance: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.clicks]
type = "kafka"
brokers = "{brokers}"
topics = ["{topic}"]
group = "{group}"
options = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}

[pipelines.deliver]
from = ["clicks"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "{url}"
secret = "{WEBHOOK_SECRET}"
concurrency = 8
headers = {{ "x-instance" = "{instance}" }}
retry = {{ max_attempts = 60, initial = "10ms", max = "200ms" }}
"#
    )
}

/// The partitions an instance's log says it was assigned last (empty when none yet).
fn last_assignment(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .find(|l| l.contains("kafka partitions assigned"))
        .map(str::to_owned)
}

/// A delivery as a checker record whose id is the producer's `key-seq`, so that a
/// message read again under another offset owner counts as a duplicate of itself.
fn as_produced(r: &ReceivedRequest) -> Option<Tracked> {
    let t = Tracked::from_webhook(r)?;
    Some(Tracked::new(format!("{}-{}", t.key, t.seq), t.key, t.seq))
}

#[test]
fn kafka_group_of_three_instances_one_killed_and_restarted_loses_nothing() {
    let broker = Tansu::shared();
    let brokers = broker.brokers();
    let topic = unique_name("group-clicks");
    let group = unique_name("group");
    broker.create_topic(&topic, PARTITIONS);
    let receiver = WebhookReceiver::start(Behaviour::Ok);

    // A producer writing keyed messages steadily, batch after batch (each batch is
    // acknowledged by the broker before the next, so a key's messages are in order).
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let producer = {
        let (brokers, topic) = (brokers.clone(), topic.clone());
        let (stop, produced) = (stop.clone(), produced.clone());
        std::thread::spawn(move || {
            let mut seq = 0u64;
            while !stop.load(Ordering::SeqCst) && seq < 2_000 {
                let batch: Vec<_> = (seq..seq + 5)
                    .flat_map(|s| {
                        (0..KEYS).map(move |k| {
                            let key = format!("k{k:02}");
                            (
                                Some(key.clone().into_bytes()),
                                format!("{{\"key\":\"{key}\",\"seq\":{s}}}").into_bytes(),
                                vec![],
                            )
                        })
                    })
                    .collect();
                produce(&brokers, &topic, &batch, Duration::from_secs(60));
                seq += 5;
                produced.store(seq, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
            seq
        })
    };

    let config = |name: &str| member(&brokers, &topic, &group, &receiver.url(), name);
    let mut instances: Vec<Switchyard> = ["a", "b", "c"]
        .iter()
        .map(|name| Switchyard::start(&config(name)))
        .collect();

    // The group settles on all three members: each holds partitions.
    let spread = wait_until(Duration::from_secs(90), || {
        let from: HashSet<String> = receiver
            .accepted()
            .iter()
            .rev()
            .take(2_000)
            .filter_map(|r| r.header("x-instance").map(str::to_owned))
            .collect();
        from.len() == 3
    });
    for (i, s) in instances.iter().enumerate() {
        println!(
            "kafka_group: instance {i} before the kill: {:?}",
            last_assignment(&s.stderr())
        );
    }
    assert!(
        spread,
        "the three members did not all deliver (the group did not spread the partitions)\n\
         a: {}\nb: {}\nc: {}",
        tail(&instances[0].stderr(), 20),
        tail(&instances[1].stderr(), 20),
        tail(&instances[2].stderr(), 20)
    );

    // Kill one member while messages flow; the others take its partitions over once the
    // group notices it is gone (session.timeout.ms).
    let before_kill = receiver.count();
    instances[0].kill9();
    let after_kill = receiver.count();
    let survivors_took_over = wait_until(Duration::from_secs(90), || {
        let recent: HashSet<String> = receiver.accepted()[after_kill..]
            .iter()
            .filter_map(|r| {
                let t = Tracked::from_webhook(r)?;
                Some(t.key)
            })
            .collect();
        recent.len() as u64 == KEYS
    });
    assert!(
        survivors_took_over,
        "not every key was delivered after the kill: the killed member's partitions were \
         not taken over\nb: {}\nc: {}",
        tail(&instances[1].stderr(), 30),
        tail(&instances[2].stderr(), 30)
    );

    // It comes back on the same data directory and port, and rejoins the group: the
    // survivors give partitions up and commit what they delivered.
    let at_restart = receiver.count();
    instances[0].restart();
    let rejoined = wait_until(Duration::from_secs(90), || {
        let n = receiver.count();
        receiver.accepted()[after_kill.min(n)..]
            .iter()
            .any(|r| r.header("x-instance") == Some("a"))
    });
    stop.store(true, Ordering::SeqCst);
    let per_key = producer.join().expect("the producer thread");
    let total = (per_key * KEYS) as usize;

    let wanted: Vec<Tracked> = (0..KEYS)
        .flat_map(|k| {
            let key = format!("k{k:02}");
            (0..per_key).map(move |s| Tracked::new(format!("{key}-{s}"), key.clone(), s))
        })
        .collect();
    let all_delivered = wait_until(Duration::from_secs(180), || {
        let got: HashSet<String> = receiver
            .accepted()
            .iter()
            .filter_map(as_produced)
            .map(|t| t.id)
            .collect();
        got.len() >= total
    });
    let delivered: Vec<Tracked> = receiver.accepted().iter().filter_map(as_produced).collect();
    let report = check(&wanted, &delivered);
    // Duplicates by phase: the kill (what the killed member had delivered but not
    // committed) and the rejoin (what the survivors had in flight when they gave
    // partitions up; what they had acknowledged was committed on revoke).
    let seen_before_restart: HashSet<&str> = delivered
        .iter()
        .take(at_restart)
        .map(|t| t.id.as_str())
        .collect();
    let mut seen_after: HashSet<&str> = HashSet::new();
    let (mut dup_of_earlier, mut dup_within_after) = (0, 0);
    for t in delivered.iter().skip(at_restart) {
        if seen_before_restart.contains(t.id.as_str()) {
            dup_of_earlier += 1;
        } else if !seen_after.insert(t.id.as_str()) {
            dup_within_after += 1;
        }
    }
    println!(
        "kafka_group: after the restart, {dup_of_earlier} deliveries repeated messages \
         delivered before it, {dup_within_after} repeated messages first delivered after it"
    );
    let mut by_instance: HashMap<String, usize> = HashMap::new();
    for r in receiver.accepted() {
        *by_instance
            .entry(r.header("x-instance").unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    let revoke_commits: usize = instances[1..]
        .iter()
        .map(|s| {
            s.stderr()
                .matches("committed acknowledged offsets of revoked partitions")
                .count()
        })
        .sum();
    println!(
        "kafka_group: {report} ({total} produced, {before_kill} delivered before the kill, \
         deliveries per instance {by_instance:?}, {revoke_commits} commits on revoke by the \
         survivors, rejoined={rejoined})"
    );
    assert!(
        all_delivered,
        "not every message was delivered: {report}\na: {}\nb: {}\nc: {}",
        tail(&instances[0].stderr(), 30),
        tail(&instances[1].stderr(), 30),
        tail(&instances[2].stderr(), 30)
    );
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
    assert_eq!(report.unacked, 0, "{report}");
    assert!(
        rejoined,
        "the restarted member got no partitions back\na: {}",
        tail(&instances[0].stderr(), 30)
    );
    // Repeats of messages delivered before the restart are counted, not refused: what
    // the killed member delivered without committing is read again by the survivor that
    // takes its partitions over, and that takeover may end after the restart.
    assert!(
        revoke_commits > 0,
        "no survivor committed acknowledged offsets when it gave partitions up\nb: {}\nc: {}",
        tail(&instances[1].stderr(), 30),
        tail(&instances[2].stderr(), 30)
    );
}
