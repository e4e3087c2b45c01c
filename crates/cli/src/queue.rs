//! `switchyard queue produce|consume|tail|stats|groups`: the internal-queue HTTP API of a running
//! switchyard (docs/queues.md, docs/openapi.yaml).
//!
//! The parts that do not need a server — payloads and message bodies, batching of stdin,
//! durations, the stats table, finding the newest records for `tail` — are plain
//! functions, tested at the end of this file.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Deserialize as _;
use serde_json::{Map, Value};
use switchyard_api::{
    AckAnswer, NackAnswer, ProduceAnswer, ProduceBatch, ProduceMessage, Produced, QueueStats,
    ReceiveRequest, ReceivedMessage, SettleRequest,
};

use crate::dlq::Admin;

/// Messages per produce request when reading stdin (the server takes up to 1000).
pub(crate) const BATCH_MESSAGES: usize = 500;
/// A batch is sent early when its body reaches this size (the server takes up to 16 MiB).
pub(crate) const BATCH_BYTES: usize = 8 << 20;
/// The most records `GET /admin/queues/{queue}/messages` answers at once.
const LIST_LIMIT: usize = 10_000;
/// How often `tail --follow` asks for new messages.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

#[derive(Subcommand)]
pub enum QueueCommand {
    /// Append messages to a queue: DATA, or one payload per line of stdin.
    #[command(after_help = PRODUCE_EXAMPLES)]
    Produce(ProduceArgs),
    /// Receive messages as a work group, print them as JSON lines, and ack them.
    #[command(after_help = CONSUME_EXAMPLES)]
    Consume(ConsumeArgs),
    /// Print the newest messages of a queue (whatever any group has consumed).
    #[command(after_help = TAIL_EXAMPLES)]
    Tail(TailArgs),
    /// Size, age and per-group progress of one queue, or of every queue.
    #[command(after_help = STATS_EXAMPLES)]
    Stats(StatsArgs),
    /// The work groups of a queue: list them, or delete one.
    #[command(subcommand)]
    Groups(GroupsCommand),
}

#[derive(Subcommand)]
pub enum GroupsCommand {
    /// The work groups of a queue, with their depth and memory, and the queue's limits.
    #[command(after_help = GROUPS_LIST_EXAMPLES)]
    List(GroupsListArgs),
    /// Delete a work group: its state under data_dir, its memory and its leases.
    #[command(after_help = GROUPS_DELETE_EXAMPLES)]
    Delete(GroupsDeleteArgs),
}

#[derive(Args)]
pub struct GroupsListArgs {
    pub queue: String,
    #[arg(short, long, env = "SWITCHYARD_CONFIG")]
    pub config: PathBuf,
    /// Print the server's JSON (the queue's stats) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct GroupsDeleteArgs {
    pub queue: String,
    pub group: String,
    #[arg(short, long, env = "SWITCHYARD_CONFIG")]
    pub config: PathBuf,
}

const GROUPS_LIST_EXAMPLES: &str = "\
Examples:
  switchyard queue groups list orders -c switchyard.toml

A queue has at most max_groups work groups; together their loaded messages use at most
work_memory. Work groups idle for group_idle_expiry are deleted.";

const GROUPS_DELETE_EXAMPLES: &str = "\
Examples:
  switchyard queue groups delete orders old-workers -c switchyard.toml

The group's acks are forgotten: a later receive with the same name starts a new group at
the oldest retained message, so every retained message is delivered again.";

const PRODUCE_EXAMPLES: &str = "\
Examples:
  switchyard queue produce orders '{\"order\": 42}' --key customer-7 --priority 5 -c switchyard.toml
  switchyard queue produce orders 'plain text is sent as a JSON string' -c switchyard.toml
  switchyard queue produce orders --delay 30s < messages.ndjson -c switchyard.toml

Prints `ID PARTITION OFFSET` per stored message (`duplicate ID` for one whose idempotency
key was seen within the queue's dedup_window), once the messages are durable.";

const CONSUME_EXAMPLES: &str = "\
Examples:
  switchyard queue consume orders --group workers -c switchyard.toml
  switchyard queue consume orders --group workers --count 1 --no-ack -c switchyard.toml
  switchyard queue consume orders --group workers --nack --delay 10s -c switchyard.toml

Each message is printed as one JSON line (the event, its receipt, partition, offset,
priority and deliveries) before it is acked. Ctrl-C stops between batches; messages of a
receive that was interrupted are handed out again when their lease (ack_timeout) ends.";

const TAIL_EXAMPLES: &str = "\
Examples:
  switchyard queue tail orders -c switchyard.toml
  switchyard queue tail orders -n 50 --follow -c switchyard.toml
  switchyard queue tail orders --json | jq .event.payload

Lines are `PARTITION:OFFSET  TIME  ID  key=KEY  PAYLOAD`, oldest first.";

const STATS_EXAMPLES: &str = "\
Examples:
  switchyard queue stats -c switchyard.toml
  switchyard queue stats orders -c switchyard.toml
  switchyard queue stats orders --json -c switchyard.toml

DEPTH is what a group has not finished: for a work group, not acked or dead-lettered
(including IN FLIGHT and DELAYED messages).";

#[derive(Args)]
pub struct ProduceArgs {
    /// The queue (`[queues.NAME]` in the config).
    pub queue: String,
    /// The payload: JSON, or else sent as a JSON string. Without DATA, stdin is read: one
    /// payload per line (NDJSON; empty lines are skipped), sent in batches of up to 500.
    pub data: Option<String>,
    #[arg(short, long, env = "SWITCHYARD_CONFIG")]
    pub config: PathBuf,
    /// Partition and FIFO key: messages of a key go to one partition and out in order.
    #[arg(long)]
    pub key: Option<String>,
    /// 0..=9; within a work group higher priorities are handed out first.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub priority: Option<u8>,
    /// Not handed out before this long, e.g. `30s`, `5m`.
    #[arg(long, value_parser = parse_duration_arg)]
    pub delay: Option<DurationArg>,
    /// A header `NAME=VALUE`; repeat for several.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Not stored again when produced within the queue's dedup_window. With stdin, line N
    /// gets `K-N`, so that sending the same file again stores nothing twice.
    #[arg(long, value_name = "K")]
    pub idempotency_key: Option<String>,
}

#[derive(Args)]
pub struct ConsumeArgs {
    pub queue: String,
    /// The work group (created by its first receive; not a pipeline's group).
    #[arg(short, long)]
    pub group: String,
    #[arg(short, long, env = "SWITCHYARD_CONFIG")]
    pub config: PathBuf,
    /// Messages per receive (1..=1000).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max: u32,
    /// How long a receive waits for a message (at most 60s).
    #[arg(long, default_value = "5s", value_parser = parse_wait)]
    pub wait: DurationArg,
    /// Stop after this many messages (default: until Ctrl-C).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Leave the messages leased: they are handed out again when the lease ends.
    #[arg(long, conflicts_with = "nack")]
    pub no_ack: bool,
    /// Give the messages back instead of acking them (their delivery count goes up).
    #[arg(long)]
    pub nack: bool,
    /// With --nack: not handed out again before this long.
    #[arg(long, requires = "nack", value_parser = parse_duration_arg)]
    pub delay: Option<DurationArg>,
}

#[derive(Args)]
pub struct TailArgs {
    pub queue: String,
    #[arg(short, long, env = "SWITCHYARD_CONFIG")]
    pub config: PathBuf,
    /// How many of the newest messages to print.
    #[arg(short = 'n', long = "lines", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(0..=5000))]
    pub lines: u32,
    /// Keep printing new messages (every 500ms) until Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
    /// Print each record as the server's JSON (`partition`, `offset`, `event`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct StatsArgs {
    /// One queue (default: every queue).
    pub queue: Option<String>,
    #[arg(short, long, env = "SWITCHYARD_CONFIG")]
    pub config: PathBuf,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A duration as the user wrote it (sent to the server as such) and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurationArg {
    pub text: String,
    pub value: Duration,
}

pub(crate) fn parse_duration_arg(text: &str) -> Result<DurationArg, String> {
    let value = switchyard_config::units::parse_duration(text)?;
    Ok(DurationArg {
        text: text.trim().to_owned(),
        value,
    })
}

fn parse_wait(text: &str) -> Result<DurationArg, String> {
    let d = parse_duration_arg(text)?;
    if d.value > Duration::from_secs(60) {
        return Err(format!(
            "{text:?} is longer than 60s, the longest a receive waits"
        ));
    }
    Ok(d)
}

pub(crate) fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

/// DATA as a payload: JSON when it parses as JSON, else the text as a JSON string.
pub(crate) fn parse_payload(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// What every message of one `queue produce` has in common.
#[derive(Clone, Debug, Default)]
pub(crate) struct Template {
    pub key: Option<String>,
    pub priority: Option<u8>,
    pub delay: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Template {
    fn of(args: &ProduceArgs) -> Self {
        Template {
            key: args.key.clone(),
            priority: args.priority,
            delay: args.delay.as_ref().map(|d| d.text.clone()),
            headers: args.headers.clone(),
        }
    }

    /// One message (docs/openapi.yaml `Message`).
    pub(crate) fn message(
        &self,
        payload: Value,
        idempotency_key: Option<String>,
    ) -> ProduceMessage {
        ProduceMessage {
            payload: Some(payload),
            key: self.key.clone(),
            priority: self.priority,
            delay: self.delay.clone(),
            headers: self.headers.clone(),
            idempotency_key,
            ..ProduceMessage::default()
        }
    }
}

/// A produce request for some lines of stdin.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The (1-based) input line of each message.
    pub lines: Vec<usize>,
    /// `{"messages": [...]}`.
    pub body: ProduceBatch,
}

/// Turns lines of stdin into produce requests of at most `max_messages` messages and
/// about `max_bytes` of JSON.
pub(crate) struct Batcher {
    template: Template,
    idempotency_key: Option<String>,
    max_messages: usize,
    max_bytes: usize,
    lines: Vec<usize>,
    messages: Vec<ProduceMessage>,
    bytes: usize,
}

impl Batcher {
    pub(crate) fn new(
        template: Template,
        idempotency_key: Option<String>,
        max_messages: usize,
        max_bytes: usize,
    ) -> Self {
        Batcher {
            template,
            idempotency_key,
            max_messages: max_messages.max(1),
            max_bytes,
            lines: Vec::new(),
            messages: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds input line `number` (1-based); answers a full batch to send, if any.
    pub(crate) fn push(&mut self, number: usize, line: &str) -> Option<Batch> {
        let text = line.trim();
        if text.is_empty() {
            return None;
        }
        let key = self
            .idempotency_key
            .as_ref()
            .map(|k| format!("{k}-{number}"));
        let message = self.template.message(parse_payload(text), key);
        let size = serde_json::to_vec(&message).map_or(0, |m| m.len()) + 1;
        let mut out = None;
        if !self.messages.is_empty()
            && (self.bytes + size > self.max_bytes || self.messages.len() >= self.max_messages)
        {
            out = self.take();
        }
        self.lines.push(number);
        self.messages.push(message);
        self.bytes += size;
        if out.is_none() && self.messages.len() >= self.max_messages {
            out = self.take();
        }
        out
    }

    /// The last, partial batch.
    pub(crate) fn finish(&mut self) -> Option<Batch> {
        self.take()
    }

    fn take(&mut self) -> Option<Batch> {
        if self.messages.is_empty() {
            return None;
        }
        self.bytes = 0;
        Some(Batch {
            lines: std::mem::take(&mut self.lines),
            body: ProduceBatch {
                messages: std::mem::take(&mut self.messages),
            },
        })
    }
}

/// The line printed for one entry of a produce answer.
pub(crate) fn produced_line(entry: &Produced) -> String {
    let id = &entry.id;
    let or_null = |n: Option<u64>| n.map_or_else(|| "null".to_owned(), |n| n.to_string());
    if entry.duplicate {
        format!("duplicate {id}")
    } else {
        format!(
            "{id} {} {}",
            or_null(entry.partition.map(u64::from)),
            or_null(entry.offset)
        )
    }
}

/// `{"receipts": [...]}` plus what `--nack --delay` adds.
pub(crate) fn settle_body(receipts: &[String], delay: Option<&DurationArg>) -> SettleRequest {
    SettleRequest {
        receipts: receipts.to_vec(),
        delay: delay.map(|d| d.text.clone()),
        by: None,
    }
}

pub fn run(command: QueueCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match command {
            QueueCommand::Produce(a) => produce(a).await,
            QueueCommand::Consume(a) => consume(a).await,
            QueueCommand::Tail(a) => tail(a).await,
            QueueCommand::Stats(a) => stats(a).await,
            QueueCommand::Groups(GroupsCommand::List(a)) => groups_list(a).await,
            QueueCommand::Groups(GroupsCommand::Delete(a)) => groups_delete(a).await,
        }
    })
}

fn admin(config: &std::path::Path) -> anyhow::Result<Admin> {
    let cfg = crate::load(config)?;
    Admin::new(&cfg, config)
}

/// `/queues/{queue}/...` with the queue name escaped for a path segment.
fn queue_path(queue: &str, rest: &str) -> String {
    format!("/queues/{}{rest}", segment(queue))
}

/// Escapes what would change the meaning of a URL path segment.
pub(crate) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn produce(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let admin = admin(&args.config)?;
    let path = queue_path(&args.queue, "/messages");
    let template = Template::of(&args);
    let mut stdout = std::io::stdout().lock();
    if let Some(data) = &args.data {
        let body = template.message(parse_payload(data), args.idempotency_key.clone());
        let answer: ProduceAnswer = admin.post(&path, &body).await?;
        for entry in &answer.messages {
            writeln!(stdout, "{}", produced_line(entry))?;
        }
        return Ok(ExitCode::SUCCESS);
    }

    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("reading payloads from stdin, one per line; end with Ctrl-D");
    }
    let mut batcher = Batcher::new(
        template,
        args.idempotency_key.clone(),
        BATCH_MESSAGES,
        BATCH_BYTES,
    );
    let mut counts = Counts::default();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, stdin.lock());
    let mut line = String::new();
    let mut number = 0usize;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .with_context(|| format!("reading line {} of stdin", number + 1))?;
        if read == 0 {
            if let Some(batch) = batcher.finish() {
                send(&admin, &path, batch, &mut counts, &mut stdout).await?;
            }
            break;
        }
        number += 1;
        if let Some(batch) = batcher.push(number, &line) {
            send(&admin, &path, batch, &mut counts, &mut stdout).await?;
        }
        // Nothing more to read right now (a slow pipe): send what is there.
        if reader.buffer().is_empty()
            && let Some(batch) = batcher.finish()
        {
            send(&admin, &path, batch, &mut counts, &mut stdout).await?;
        }
    }
    let Counts { stored, duplicates } = counts;
    eprintln!(
        "produced {} messages to `{}` ({stored} stored, {duplicates} duplicates)",
        stored + duplicates,
        args.queue
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Default)]
struct Counts {
    stored: usize,
    duplicates: usize,
}

/// Sends one batch of stdin and prints its answer.
async fn send(
    admin: &Admin,
    path: &str,
    batch: Batch,
    counts: &mut Counts,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let first = batch.lines.first().copied().unwrap_or(0);
    let answer: ProduceAnswer = admin.post(path, &batch.body).await.with_context(|| {
        format!(
            "producing the batch that starts at line {first} of stdin; the {} messages before \
             it were produced ({} of them duplicates), none from line {first} on",
            counts.stored + counts.duplicates,
            counts.duplicates
        )
    })?;
    for entry in &answer.messages {
        if entry.duplicate {
            counts.duplicates += 1;
        } else {
            counts.stored += 1;
        }
        writeln!(out, "{}", produced_line(entry))?;
    }
    out.flush()?;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn consume(args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let admin = admin(&args.config)?;
    let group = segment(&args.group);
    let receive = queue_path(&args.queue, &format!("/groups/{group}/receive"));
    let (verb, answered) = if args.nack {
        ("nack", "nacked")
    } else {
        ("ack", "acked")
    };
    let settle = queue_path(&args.queue, &format!("/groups/{group}/{verb}"));
    let stop = interrupted();
    tokio::pin!(stop);
    let (mut received, mut settled, mut stale) = (0u64, 0u64, 0u64);
    let mut stdout = std::io::stdout().lock();
    loop {
        let want = match args.count {
            Some(n) if received >= n => break,
            Some(n) => (n - received).min(u64::from(args.max)),
            None => u64::from(args.max),
        };
        let body = ReceiveRequest {
            max: Some(want),
            wait: Some(args.wait.text.clone()),
            ack_timeout: None,
        };
        // Kept as they came, to print them; read as `ReceivedMessage` for the receipts.
        let answer: RawMessages = tokio::select! {
            biased;
            _ = &mut stop => break,
            a = admin.post(&receive, &body) => a?,
        };
        let messages = answer.messages;
        let mut receipts = Vec::with_capacity(messages.len());
        for m in &messages {
            writeln!(stdout, "{}", serde_json::to_string(m)?)?;
            let received = ReceivedMessage::<serde::de::IgnoredAny>::deserialize(m)
                .context("a received message without its receipt")?;
            receipts.push(received.receipt);
        }
        stdout.flush()?;
        received += messages.len() as u64;
        if args.no_ack || receipts.is_empty() {
            continue;
        }
        // Not interrupted: what was printed is settled before stopping.
        let body = settle_body(&receipts, args.delay.as_ref());
        let sent = if args.nack {
            admin
                .post::<NackAnswer>(&settle, &body)
                .await
                .map(|a| (a.nacked, a.stale))
        } else {
            admin
                .post::<AckAnswer>(&settle, &body)
                .await
                .map(|a| (a.acked, a.stale))
        };
        let (n, lost) =
            sent.with_context(|| format!("{verb}ing {} printed messages", receipts.len()))?;
        settled += n;
        if !lost.is_empty() {
            stale += lost.len() as u64;
            eprintln!(
                "warning: {} leases were lost before the {verb} (the messages were handed out \
                 again or acked already): {}",
                lost.len(),
                lost.join(" ")
            );
        }
    }
    let what = if args.no_ack {
        "left leased".to_owned()
    } else {
        format!("{answered} {settled}, {stale} stale")
    };
    eprintln!(
        "received {received} messages from `{}` as group `{}` ({what})",
        args.queue, args.group
    );
    Ok(ExitCode::SUCCESS)
}

/// An answer's `messages` as they came (printed as they are): a receive, or a listing.
#[derive(serde::Deserialize)]
struct RawMessages {
    #[serde(default)]
    messages: Vec<Value>,
}

/// One record of `GET /admin/queues/{queue}/messages`.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub partition: u64,
    pub offset: u64,
    pub value: Value,
}

impl Record {
    fn timestamp(&self) -> u64 {
        self.value["event"]["timestamp_ms"].as_u64().unwrap_or(0)
    }
}

/// Reads records at or after `offset` of every partition, partition 0 first, at most
/// `limit` in all — what `GET /admin/queues/{queue}/messages` answers.
pub(crate) trait ReadRecords {
    async fn read(&self, offset: u64, limit: usize) -> anyhow::Result<Vec<Record>>;
}

struct AdminRecords<'a> {
    admin: &'a Admin,
    path: String,
}

impl ReadRecords for AdminRecords<'_> {
    async fn read(&self, offset: u64, limit: usize) -> anyhow::Result<Vec<Record>> {
        let body: RawMessages = self
            .admin
            .get(&format!("{}?offset={offset}&limit={limit}", self.path))
            .await?;
        body.messages
            .into_iter()
            .map(|m| {
                let r = switchyard_api::Record::deserialize(&m)
                    .context("reading a record switchyard answered")?;
                Ok(Record {
                    partition: u64::from(r.partition),
                    offset: r.offset,
                    value: m,
                })
            })
            .collect()
    }
}

/// The newest `n` records (by timestamp), oldest first, and the offset `x` they were
/// searched from: every record at or after `x` (in every partition) was looked at.
///
/// The API filters by one offset for all partitions, so this finds the largest `x` with
/// at least `n` records at or after it. Partitions are filled round robin (or by key), so
/// their offsets stay close; a partition far behind the others only shows once its
/// offsets reach `x`.
pub(crate) async fn newest(r: &impl ReadRecords, n: usize) -> anyhow::Result<(u64, Vec<Record>)> {
    if n == 0 {
        // Nothing to print: follow from the end of the longest partition.
        let end = match last_with(r, 1).await? {
            Some(x) => x + 1,
            None => 0,
        };
        return Ok((end, Vec::new()));
    }
    let x = last_with(r, n).await?.unwrap_or(0);
    // Fewer than n at x+1, so fewer than n + (partitions) at x.
    let mut records = r.read(x, LIST_LIMIT.min(n + 1024)).await?;
    sort_records(&mut records);
    let keep = records.len().saturating_sub(n);
    records.drain(..keep);
    Ok((x, records))
}

/// The largest offset with at least `n` (> 0) records at or after it (in all
/// partitions), or `None` when the queue holds fewer than `n`.
async fn last_with(r: &impl ReadRecords, n: usize) -> anyhow::Result<Option<u64>> {
    let at_least = |x: u64| async move { anyhow::Ok(r.read(x, n).await?.len() >= n) };
    if !at_least(0).await? {
        return Ok(None);
    }
    // At least n at `lo`, fewer at `hi`: the count falls as the offset grows.
    let (mut lo, mut hi) = (0u64, 1u64);
    while at_least(hi).await? {
        lo = hi;
        hi = hi.checked_mul(2).context("offsets beyond 2^63")?;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if at_least(mid).await? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Some(lo))
}

/// Oldest first: by timestamp, then by id (ids are UUIDv7, ordered within a millisecond).
fn sort_records(records: &mut [Record]) {
    records.sort_by(|a, b| {
        let key = |r: &Record| {
            (
                r.timestamp(),
                r.value["event"]["id"].as_str().map(str::to_owned),
            )
        };
        key(a)
            .cmp(&key(b))
            .then((a.partition, a.offset).cmp(&(b.partition, b.offset)))
    });
}

/// Where `tail --follow` is: the next offset of each partition seen, and the offset
/// everything was looked at from.
pub(crate) struct Follow {
    floor: u64,
    next: HashMap<u64, u64>,
}

impl Follow {
    pub(crate) fn new(floor: u64, seen: &[Record]) -> Self {
        let mut f = Follow {
            floor,
            next: HashMap::new(),
        };
        f.note(seen);
        f
    }

    fn note(&mut self, records: &[Record]) {
        for r in records {
            let next = self.next.entry(r.partition).or_insert(0);
            *next = (*next).max(r.offset + 1);
        }
    }

    /// The offset to read from next.
    pub(crate) fn from(&self) -> u64 {
        self.next.values().copied().min().unwrap_or(self.floor)
    }

    /// The records of `page` not seen before (oldest first), remembered as seen.
    pub(crate) fn new_records(&mut self, page: Vec<Record>) -> Vec<Record> {
        let mut fresh: Vec<Record> = page
            .into_iter()
            .filter(|r| r.offset >= self.next.get(&r.partition).copied().unwrap_or(self.floor))
            .collect();
        sort_records(&mut fresh);
        self.note(&fresh);
        fresh
    }
}

/// `PARTITION:OFFSET  TIME  ID  key=KEY  PAYLOAD`.
pub(crate) fn tail_line(r: &Record) -> String {
    let e = &r.value["event"];
    let time = match e["timestamp_ms"].as_u64() {
        Some(ms) => {
            humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                .to_string()
        }
        None => "-".into(),
    };
    let key = match &e["key"] {
        Value::String(k) => k.clone(),
        _ => "-".into(),
    };
    let payload = match (&e["payload"], e["payload_encoding"].as_str()) {
        (Value::String(b), Some(enc)) => format!("({enc}) {b}"),
        (p, _) => p.to_string(),
    };
    format!(
        "{}:{}  {time}  {}  key={key}  {payload}",
        r.partition,
        r.offset,
        e["id"].as_str().unwrap_or("?")
    )
}

async fn tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    let admin = admin(&args.config)?;
    let reader = AdminRecords {
        admin: &admin,
        path: format!("/admin/queues/{}/messages", segment(&args.queue)),
    };
    let print = |records: &[Record]| -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        for r in records {
            if args.json {
                writeln!(out, "{}", serde_json::to_string(&r.value)?)?;
            } else {
                writeln!(out, "{}", tail_line(r))?;
            }
        }
        out.flush()?;
        Ok(())
    };
    let (floor, records) = newest(&reader, args.lines as usize).await?;
    print(&records)?;
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut follow = Follow::new(floor, &records);
    let stop = interrupted();
    tokio::pin!(stop);
    loop {
        let page = tokio::select! {
            biased;
            _ = &mut stop => break,
            p = reader.read(follow.from(), LIST_LIMIT) => p?,
        };
        let full = page.len() >= LIST_LIMIT;
        let fresh = follow.new_records(page);
        print(&fresh)?;
        if full && !fresh.is_empty() {
            continue;
        }
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn stats(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let admin = admin(&args.config)?;
    let body: Value = match &args.queue {
        Some(q) => admin.get(&queue_path(q, "/stats")).await?,
        None => admin.get("/queues").await?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        print!("{}", render_stats(&stats_list(&body)?));
    }
    Ok(ExitCode::SUCCESS)
}

async fn groups_list(args: GroupsListArgs) -> anyhow::Result<ExitCode> {
    let admin = admin(&args.config)?;
    let body: Value = admin.get(&queue_path(&args.queue, "/stats")).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        let stats = QueueStats::deserialize(&body)
            .context("reading the queue stats switchyard answered")?;
        print!("{}", render_groups(&stats));
    }
    Ok(ExitCode::SUCCESS)
}

async fn groups_delete(args: GroupsDeleteArgs) -> anyhow::Result<ExitCode> {
    let admin = admin(&args.config)?;
    let path = queue_path(&args.queue, &format!("/groups/{}", segment(&args.group)));
    let _: switchyard_api::GroupDeleted = admin.delete(&path).await?;
    println!(
        "deleted work group `{}` of queue `{}`",
        args.group, args.queue
    );
    Ok(ExitCode::SUCCESS)
}

/// The `queue groups list` table: the work groups of one queue's stats.
pub(crate) fn render_groups(stats: &QueueStats) -> String {
    let name = &stats.queue;
    let work: Vec<_> = stats.groups.iter().filter(|(_, g)| g.is_work()).collect();
    let memory = match (stats.work_memory_bytes, stats.max_work_memory) {
        (Some(u), Some(m)) => format!("{}/{}", fmt_bytes(u), fmt_bytes(m)),
        _ => "-".into(),
    };
    let mut out = format!(
        "{name}: {} of {} work groups (max_groups), memory {memory} (work_memory)\n",
        work.len(),
        num(stats.max_groups),
    );
    if work.is_empty() {
        return out;
    }
    let mut rows = vec![
        ["GROUP", "DEPTH", "IN FLIGHT", "DELAYED", "MEMORY", "OLDEST"]
            .map(String::from)
            .to_vec(),
    ];
    for (group, g) in work {
        rows.push(vec![
            group.clone(),
            num(g.depth),
            num(g.in_flight),
            num(g.delayed),
            g.memory_bytes.map_or_else(|| "-".into(), fmt_bytes),
            fmt_age(g.oldest_age_ms.flatten()),
        ]);
    }
    out.push_str(&table(&rows, &[false, true, true, true, true, true], "  "));
    out
}

/// The queue stats in an answer of `GET /queues/{queue}/stats` (one object) or
/// `GET /queues` (`{"queues": [...]}`, or a list, or an object by name).
pub(crate) fn stats_list(body: &Value) -> anyhow::Result<Vec<QueueStats>> {
    let list = match body {
        Value::Array(list) => list.clone(),
        Value::Object(o) if o.contains_key("queue") => vec![body.clone()],
        Value::Object(o) => match o.get("queues") {
            Some(Value::Array(list)) => list.clone(),
            Some(Value::Object(by_name)) => named(by_name),
            _ => named(o),
        },
        _ => Vec::new(),
    };
    list.iter()
        .map(|q| QueueStats::deserialize(q).context("reading the queue stats switchyard answered"))
        .collect()
}

fn named(by_name: &Map<String, Value>) -> Vec<Value> {
    by_name
        .iter()
        .map(|(name, s)| {
            let mut s = s.clone();
            if s.get("queue").is_none() {
                s["queue"] = name.clone().into();
            }
            s
        })
        .collect()
}

/// `1.2 MiB`.
pub(crate) fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `850ms`, `5.3s`, `2m05s`, `3h07m`, `2d04h`; `-` for none.
pub(crate) fn fmt_age(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

/// Columns padded to their widest cell; `right[i]` aligns column i to the right.
fn table(rows: &[Vec<String>], right: &[bool], indent: &str) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(indent);
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let pad = widths[c] - cell.chars().count();
            if right.get(c).copied().unwrap_or(false) {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn num(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |n| n.to_string())
}

/// The `queue stats` table: one row per queue, then the groups of each queue.
pub(crate) fn render_stats(queues: &[QueueStats]) -> String {
    if queues.is_empty() {
        return "no queues are declared in the config\n".into();
    }
    let mut rows = vec![
        ["QUEUE", "PARTITIONS", "MESSAGES", "BYTES/MAX", "OLDEST"]
            .map(String::from)
            .to_vec(),
    ];
    for q in queues {
        let bytes = match (q.bytes, q.max_bytes) {
            (Some(b), Some(m)) => format!("{}/{}", fmt_bytes(b), fmt_bytes(m)),
            (Some(b), None) => fmt_bytes(b),
            _ => "-".into(),
        };
        rows.push(vec![
            q.queue.clone(),
            num(q.partitions),
            num(q.messages),
            bytes,
            fmt_age(q.oldest_age_ms),
        ]);
    }
    let mut out = table(&rows, &[false, true, true, true, true], "");
    for q in queues {
        let name = &q.queue;
        out.push('\n');
        match &q.groups[..] {
            [] => out.push_str(&format!("{name}: no consumer groups yet\n")),
            groups => {
                out.push_str(&format!("{name}:\n"));
                let mut rows = vec![
                    [
                        "GROUP",
                        "MODE",
                        "DEPTH",
                        "IN FLIGHT",
                        "DELAYED",
                        "DEAD LETTERED",
                        "OLDEST",
                    ]
                    .map(String::from)
                    .to_vec(),
                ];
                for (group, g) in groups {
                    rows.push(vec![
                        group.clone(),
                        g.mode.clone(),
                        num(g.depth),
                        num(g.in_flight),
                        num(g.delayed),
                        num(g.dead_lettered),
                        fmt_age(g.oldest_age_ms.flatten()),
                    ]);
                }
                out.push_str(&table(
                    &rows,
                    &[false, false, true, true, true, true, true],
                    "  ",
                ));
            }
        }
        if let Some(d) = &q.dead_letter {
            out.push_str(&format!(
                "  dead letters go to `{}` ({} there now)\n",
                d.queue,
                num(d.messages)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: QueueCommand,
    }

    fn parse(args: &[&str]) -> Result<QueueCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("queue").chain(args.iter().copied())).map(|c| c.command)
    }

    #[test]
    fn data_is_json_when_it_parses_and_a_string_otherwise() {
        assert_eq!(parse_payload(r#"{"order": 42}"#), json!({"order": 42}));
        assert_eq!(parse_payload("42"), json!(42));
        assert_eq!(parse_payload("\"quoted\""), json!("quoted"));
        assert_eq!(parse_payload("not json"), json!("not json"));
        assert_eq!(parse_payload("{broken"), json!("{broken"));
    }

    #[test]
    fn produce_arguments_make_the_message_body() {
        let Ok(QueueCommand::Produce(a)) = parse(&[
            "produce",
            "orders",
            r#"{"order":42}"#,
            "-c",
            "x.toml",
            "--key",
            "customer-7",
            "--priority",
            "5",
            "--delay",
            "30s",
            "--header",
            "trace=abc",
            "--header",
            "eq=a=b",
            "--idempotency-key",
            "order-42",
        ]) else {
            panic!("produce parses");
        };
        let body = Template::of(&a).message(
            parse_payload(a.data.as_deref().unwrap()),
            a.idempotency_key.clone(),
        );
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({
                "payload": {"order": 42},
                "key": "customer-7",
                "priority": 5,
                "delay": "30s",
                "headers": {"trace": "abc", "eq": "a=b"},
                "idempotency_key": "order-42",
            })
        );
        // Nothing but the payload when nothing else is given.
        assert_eq!(
            serde_json::to_value(Template::default().message(json!("x"), None)).unwrap(),
            json!({"payload": "x"})
        );
    }

    #[test]
    fn produce_rejects_bad_arguments_before_sending() {
        for bad in [
            &["produce", "q", "-c", "x", "--priority", "10"][..],
            &["produce", "q", "-c", "x", "--delay", "soon"],
            &["produce", "q", "-c", "x", "--delay", "30"],
            &["produce", "q", "-c", "x", "--header", "novalue"],
            &["produce", "q", "-c", "x", "--header", "=v"],
            &["consume", "q", "-c", "x"],
            &["consume", "q", "-g", "w", "-c", "x", "--max", "0"],
            &["consume", "q", "-g", "w", "-c", "x", "--max", "1001"],
            &["consume", "q", "-g", "w", "-c", "x", "--wait", "61s"],
            &["consume", "q", "-g", "w", "-c", "x", "--delay", "1s"],
            &["consume", "q", "-g", "w", "-c", "x", "--nack", "--no-ack"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn durations_keep_the_text_and_check_the_value() {
        assert_eq!(
            parse_duration_arg(" 30s "),
            Ok(DurationArg {
                text: "30s".into(),
                value: Duration::from_secs(30)
            })
        );
        assert_eq!(
            parse_duration_arg("1m 30s").unwrap().value,
            Duration::from_secs(90)
        );
        assert_eq!(
            parse_duration_arg("250ms").unwrap().value,
            Duration::from_millis(250)
        );
        assert!(parse_duration_arg("30").is_err());
        assert!(parse_duration_arg("").is_err());
        assert_eq!(parse_wait("60s").unwrap().value, Duration::from_secs(60));
        assert!(parse_wait("2m").unwrap_err().contains("60s"));
    }

    #[test]
    fn consume_arguments_and_the_ack_and_nack_bodies() {
        let Ok(QueueCommand::Consume(a)) = parse(&[
            "consume", "orders", "--group", "workers", "-c", "x", "--nack", "--delay", "10s",
            "--count", "3",
        ]) else {
            panic!("consume parses");
        };
        assert_eq!(
            (a.max, a.wait.value, a.count),
            (10, Duration::from_secs(5), Some(3))
        );
        assert_eq!(
            serde_json::to_value(settle_body(&["r1".into(), "r2".into()], a.delay.as_ref()))
                .unwrap(),
            json!({"receipts": ["r1", "r2"], "delay": "10s"})
        );
        assert_eq!(
            serde_json::to_value(settle_body(&["r1".into()], None)).unwrap(),
            json!({"receipts": ["r1"]})
        );
    }

    fn messages(batch: &Batch) -> Vec<Value> {
        batch
            .body
            .messages
            .iter()
            .map(|m| serde_json::to_value(m).unwrap())
            .collect()
    }

    #[test]
    fn stdin_lines_become_batches() {
        let template = Template {
            key: Some("k".into()),
            ..Template::default()
        };
        let mut b = Batcher::new(template, Some("run1".into()), 2, 1 << 20);
        let input = ["{\"n\":1}", "", "plain text", "  ", "[1,2]", "7"];
        let mut batches = Vec::new();
        for (i, line) in input.iter().enumerate() {
            batches.extend(b.push(i + 1, line));
        }
        batches.extend(b.finish());
        assert!(b.finish().is_none());
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].lines, vec![1, 3]);
        assert_eq!(batches[1].lines, vec![5, 6]);
        assert_eq!(
            messages(&batches[0]),
            vec![
                json!({"payload": {"n": 1}, "key": "k", "idempotency_key": "run1-1"}),
                json!({"payload": "plain text", "key": "k", "idempotency_key": "run1-3"}),
            ]
        );
        assert_eq!(messages(&batches[1])[0]["payload"], json!([1, 2]));
        assert_eq!(messages(&batches[1])[1]["idempotency_key"], "run1-6");
    }

    #[test]
    fn batches_hold_at_most_500_messages_and_about_max_bytes() {
        let mut b = Batcher::new(Template::default(), None, BATCH_MESSAGES, BATCH_BYTES);
        let mut sizes = Vec::new();
        for i in 1..=1234 {
            if let Some(batch) = b.push(i, &i.to_string()) {
                sizes.push(messages(&batch).len());
            }
        }
        sizes.extend(b.finish().map(|batch| messages(&batch).len()));
        assert_eq!(sizes, vec![500, 500, 234]);

        // 40-byte payloads, batches of about 100 bytes: two messages each.
        let line = format!("\"{}\"", "x".repeat(38));
        let mut b = Batcher::new(Template::default(), None, 500, 120);
        let mut sizes = Vec::new();
        for i in 1..=5 {
            sizes.extend(b.push(i, &line).map(|batch| messages(&batch).len()));
        }
        sizes.extend(b.finish().map(|batch| messages(&batch).len()));
        assert_eq!(sizes, vec![2, 2, 1]);
        // One message per batch.
        let mut b = Batcher::new(Template::default(), None, 1, 1 << 20);
        let sizes: Vec<_> = (1..=3)
            .filter_map(|i| b.push(i, "1"))
            .map(|x| x.lines)
            .collect();
        assert_eq!(sizes, [vec![1], vec![2], vec![3]]);
        assert!(b.finish().is_none());
        // A message larger than max_bytes still goes, alone.
        let mut b = Batcher::new(Template::default(), None, 500, 10);
        assert!(b.push(1, &line).is_none());
        assert_eq!(b.push(2, &line).map(|x| x.lines), Some(vec![1]));
        assert_eq!(b.finish().map(|x| x.lines), Some(vec![2]));
    }

    #[test]
    fn produce_answers_print_one_line_per_message() {
        let produced = |v: Value| serde_json::from_value::<Produced>(v).unwrap();
        assert_eq!(
            produced_line(&produced(
                json!({"id": "01J", "partition": 1, "offset": 17, "duplicate": false})
            )),
            "01J 1 17"
        );
        assert_eq!(
            produced_line(&produced(json!({"id": "01J", "duplicate": true}))),
            "duplicate 01J"
        );
    }

    #[test]
    fn queue_and_group_names_are_escaped_in_paths() {
        assert_eq!(queue_path("orders", "/stats"), "/queues/orders/stats");
        assert_eq!(segment("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(segment("orders-dlq_1.x~"), "orders-dlq_1.x~");
    }

    #[test]
    fn ages_and_sizes_read_well() {
        assert_eq!(fmt_age(None), "-");
        assert_eq!(fmt_age(Some(850)), "850ms");
        assert_eq!(fmt_age(Some(5_300)), "5.3s");
        assert_eq!(fmt_age(Some(125_000)), "2m05s");
        assert_eq!(fmt_age(Some(3 * 3_600_000 + 7 * 60_000)), "3h07m");
        assert_eq!(fmt_age(Some(2 * 86_400_000 + 4 * 3_600_000)), "2d04h");
        assert_eq!(fmt_bytes(0), "0 B");
        assert_eq!(fmt_bytes(1023), "1023 B");
        assert_eq!(fmt_bytes(1_310_720), "1.2 MiB");
        assert_eq!(fmt_bytes(1 << 30), "1.0 GiB");
    }

    fn example_stats() -> Value {
        json!({"queue": "orders", "partitions": 4, "messages": 1200, "bytes": 1310720,
               "max_bytes": 1073741824u64, "oldest_age_ms": 5300,
               "groups": {"workers": {"mode": "work", "depth": 180, "in_flight": 16,
                                      "delayed": 2, "oldest_age_ms": 5300, "dead_lettered": 1},
                          "fanout": {"mode": "pubsub", "depth": 0}},
               "dead_letter": {"queue": "orders-dlq", "messages": 1}})
    }

    #[test]
    fn stats_render_as_a_table() {
        let text = render_stats(&stats_list(&example_stats()).unwrap());
        let expected = "\
QUEUE   PARTITIONS  MESSAGES        BYTES/MAX  OLDEST
orders           4      1200  1.2 MiB/1.0 GiB    5.3s

orders:
  GROUP    MODE    DEPTH  IN FLIGHT  DELAYED  DEAD LETTERED  OLDEST
  workers  work      180         16        2              1    5.3s
  fanout   pubsub      0          -        -              -       -
  dead letters go to `orders-dlq` (1 there now)
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn groups_list_shows_only_work_groups_with_the_limits() {
        let stats = json!({
            "queue": "orders", "max_groups": 64, "work_memory_bytes": 2048,
            "max_work_memory": 268435456,
            "groups": {
                "workers": {"mode": "work", "depth": 3, "in_flight": 1, "delayed": 0,
                            "memory_bytes": 2048, "oldest_age_ms": 1500},
                "fanout": {"mode": "pubsub", "depth": 0}
            }
        });
        let text = render_groups(&serde_json::from_value(stats).unwrap());
        assert!(
            text.starts_with(
                "orders: 1 of 64 work groups (max_groups), memory 2.0 KiB/256.0 MiB (work_memory)\n"
            ),
            "{text}"
        );
        assert!(text.contains("workers"), "{text}");
        assert!(!text.contains("fanout"), "{text}");
        let parsed = parse(&["groups", "delete", "orders", "old", "-c", "s.toml"]);
        assert!(matches!(
            parsed,
            Ok(QueueCommand::Groups(GroupsCommand::Delete(GroupsDeleteArgs { ref queue, ref group, .. })))
                if queue == "orders" && group == "old"
        ));
        assert!(parse(&["groups", "delete", "orders", "-c", "s.toml"]).is_err());
    }

    #[test]
    fn the_queue_list_answer_in_any_shape() {
        let one = example_stats();
        let empty = json!({"queue": "empty", "partitions": 1, "messages": 0, "bytes": 0,
                           "max_bytes": 1024, "oldest_age_ms": null, "groups": {}});
        for body in [
            json!({"queues": [one, empty]}),
            json!([one, empty]),
            json!({"queues": {"orders": one, "empty": empty}}),
        ] {
            let list = stats_list(&body).unwrap();
            let names: Vec<_> = list.iter().map(|q| q.queue.as_str()).collect();
            assert_eq!(names, ["orders", "empty"], "{body}");
            let text = render_stats(&list);
            assert!(text.contains("empty: no consumer groups yet"), "{text}");
            assert!(text.contains("0 B/1.0 KiB"), "{text}");
        }
        assert_eq!(
            render_stats(&stats_list(&json!({"queues": []})).unwrap()),
            "no queues are declared in the config\n"
        );
    }

    /// What `GET /admin/queues/{queue}/messages` answers over partitions holding
    /// `[start, end)` offsets with timestamp = offset * partitions + partition.
    struct Fake {
        parts: Vec<(u64, u64)>,
        calls: std::cell::Cell<usize>,
    }

    impl ReadRecords for Fake {
        async fn read(&self, offset: u64, limit: usize) -> anyhow::Result<Vec<Record>> {
            self.calls.set(self.calls.get() + 1);
            let limit = limit.min(LIST_LIMIT);
            let n = self.parts.len() as u64;
            let mut out = Vec::new();
            for (p, &(start, end)) in self.parts.iter().enumerate() {
                for o in offset.max(start)..end {
                    if out.len() >= limit {
                        return Ok(out);
                    }
                    let ts = o * n + p as u64;
                    out.push(Record {
                        partition: p as u64,
                        offset: o,
                        value: json!({"partition": p, "offset": o,
                                      "event": {"id": format!("{p}-{o}"), "timestamp_ms": ts}}),
                    });
                }
            }
            Ok(out)
        }
    }

    fn run_newest(parts: &[(u64, u64)], n: usize) -> (u64, Vec<(u64, u64)>) {
        let fake = Fake {
            parts: parts.to_vec(),
            calls: Default::default(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (x, records) = rt.block_on(newest(&fake, n)).unwrap();
        assert!(fake.calls.get() < 150, "{} reads", fake.calls.get());
        (x, records.iter().map(|r| (r.partition, r.offset)).collect())
    }

    #[test]
    fn tail_finds_the_newest_records() {
        // One partition: exactly the last n, oldest first.
        assert_eq!(run_newest(&[(0, 100)], 3).1, [(0, 97), (0, 98), (0, 99)]);
        // Fewer than n: all of them.
        assert_eq!(run_newest(&[(0, 2)], 10).1, [(0, 0), (0, 1)]);
        assert_eq!(run_newest(&[(0, 0)], 10), (0, vec![]));
        // Retention removed the start.
        assert_eq!(run_newest(&[(5000, 5003)], 2).1, [(0, 5001), (0, 5002)]);
        // Round robin over three partitions: the newest by time, across partitions.
        assert_eq!(
            run_newest(&[(0, 34), (0, 33), (0, 33)], 4).1,
            [(0, 32), (1, 32), (2, 32), (0, 33)]
        );
        // A large queue: few reads (checked in run_newest), the right records.
        assert_eq!(
            run_newest(&[(0, 1_000_000_000)], 2).1,
            [(0, 999_999_998), (0, 999_999_999)]
        );
        // -n 0 (follow only): starts at the end.
        assert_eq!(run_newest(&[(0, 10), (0, 12)], 0), (12, vec![]));
        assert_eq!(run_newest(&[(0, 0)], 0), (0, vec![]));
    }

    fn rec(p: u64, o: u64) -> Record {
        Record {
            partition: p,
            offset: o,
            value: json!({"event": {"timestamp_ms": o * 10 + p}}),
        }
    }

    #[test]
    fn follow_prints_each_record_once() {
        let mut f = Follow::new(10, &[rec(0, 10), rec(0, 11), rec(1, 10)]);
        assert_eq!(f.from(), 11);
        let fresh = f.new_records(vec![rec(0, 11), rec(0, 12), rec(1, 11), rec(2, 10)]);
        let got: Vec<_> = fresh.iter().map(|r| (r.partition, r.offset)).collect();
        assert_eq!(got, [(2, 10), (1, 11), (0, 12)]);
        assert_eq!(f.from(), 11);
        assert!(f.new_records(vec![rec(0, 12), rec(1, 11)]).is_empty());
        // Nothing seen yet: from the floor.
        let mut f = Follow::new(7, &[]);
        assert_eq!(f.from(), 7);
        assert_eq!(f.new_records(vec![rec(0, 6), rec(0, 7)]).len(), 1);
    }

    #[test]
    fn tail_lines_show_where_when_and_what() {
        let r = Record {
            partition: 1,
            offset: 17,
            value: json!({"partition": 1, "offset": 17, "event": {
                "id": "01J", "key": "customer-7", "timestamp_ms": 1_700_000_000_123u64,
                "payload": {"order": 42}}}),
        };
        assert_eq!(
            tail_line(&r),
            r#"1:17  2023-11-14T22:13:20.123Z  01J  key=customer-7  {"order":42}"#
        );
        let r = Record {
            partition: 0,
            offset: 0,
            value: json!({"event": {"id": "b", "key": null, "payload": "aGk=",
                                    "payload_encoding": "base64"}}),
        };
        assert_eq!(tail_line(&r), "0:0  -  b  key=-  (base64) aGk=");
    }

    #[test]
    fn every_command_teaches_with_an_example() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        for sub in ["produce", "consume", "tail", "stats"] {
            let cmd = cli.find_subcommand_mut(sub).unwrap();
            let help = cmd.render_long_help().to_string();
            assert!(help.contains("Examples:"), "{sub}:\n{help}");
            assert!(
                help.contains(&format!("switchyard queue {sub} ")),
                "{sub}:\n{help}"
            );
            assert!(cmd.get_about().is_some(), "{sub}");
        }
    }
}
