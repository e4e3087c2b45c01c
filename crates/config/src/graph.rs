//! Checks across tables: names that point at nothing, duplicates, and queues that feed
//! themselves through pipelines.

use std::collections::{BTreeMap, BTreeSet};

use crate::validate::{Ctx, Declared, closest};
use crate::{Config, SinkConfig, SourceConfig};

/// Most cycles reported; past that the message would drown the rest.
const MAX_CYCLES: usize = 20;

pub(crate) fn check(cx: &mut Ctx<'_>, config: &Config, declared: &Declared) {
    for (name, pipeline) in &config.pipelines {
        let path = format!("pipelines.{name}");
        let from = Namespace::new("source", "sources", &declared.sources);
        let sinks = Namespace::new("sink", "sinks", &declared.sinks);
        let plugins = Namespace::new("plugin", "plugins", &declared.plugins);
        references(cx, &format!("{path}.from"), &pipeline.from, &from, true);
        references(cx, &format!("{path}.to"), &pipeline.to, &sinks, true);
        references(
            cx,
            &format!("{path}.filters"),
            &pipeline.filters,
            &plugins,
            false,
        );
        references(
            cx,
            &format!("{path}.transforms"),
            &pipeline.transforms,
            &plugins,
            false,
        );
        if let Some(router) = &pipeline.router {
            plugins.check(cx, &format!("{path}.router"), router);
        }
        dead_letter_read_back(cx, config, name);
    }
    one_reader_per_slot(cx, config);
    for (name, source) in &config.sources {
        if let SourceConfig::Queue(source) = source {
            queue_declared(
                cx,
                &format!("sources.{name}.queue"),
                &source.queue,
                declared,
            );
        }
    }
    for (name, sink) in &config.sinks {
        if let SinkConfig::Queue(sink) = sink {
            queue_declared(cx, &format!("sinks.{name}.queue"), &sink.queue, declared);
        }
    }
    for (name, queue) in &config.queues {
        let Some(dead_letter) = &queue.dead_letter else {
            continue;
        };
        let path = format!("queues.{name}.dead_letter");
        if dead_letter == name {
            cx.issue(
                &path,
                "a queue cannot be its own dead-letter queue: name another queue, e.g. \"{name}-dlq\""
                    .replace("{name}", name),
            );
        } else {
            queue_declared(cx, &path, dead_letter, declared);
        }
    }
    cycles(cx, config);
}

/// A replication slot has one position, so a Postgres source feeds one pipeline, and a
/// Kafka source is one consumer-group member whose group hands each message to one member,
/// so a second pipeline would get only part of the topic (the runtime refuses both too).
/// Two sources on the same slot would steal each other's changes.
fn one_reader_per_slot(cx: &mut Ctx<'_>, config: &Config) {
    for (name, source) in &config.sources {
        let names: Vec<&String> = config
            .pipelines
            .iter()
            .filter(|(_, p)| p.from.contains(name))
            .map(|(n, _)| n)
            .collect();
        let [.., _, last] = names.as_slice() else {
            continue;
        };
        let readers = names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(" and ");
        let message = match source {
            SourceConfig::PostgresCdc(_) => format!(
                "postgres_cdc source `{name}` is read by pipelines {readers}: a replication slot \
                 feeds one pipeline; route its events from one pipeline (a router plugin \
                 or several sinks in `to`), or declare a second source with its own `slot`"
            ),
            SourceConfig::Kafka(kafka) => format!(
                "kafka source `{name}` is read by pipelines {readers}: its consumer group `{}` hands \
                 each message to one member, so each pipeline would get only part of the \
                 topic; route its events from one pipeline (a router plugin or several sinks \
                 in `to`), or declare a second kafka source with the same `topics` and its \
                 own `group` for the other pipeline",
                kafka.group
            ),
            SourceConfig::Nats(nats) => format!(
                "nats source `{name}` is read by pipelines {readers}: its durable consumer `{}` \
                 hands each message to one reader, so each pipeline would get only part of the \
                 stream; route its events from one pipeline (a router plugin or several sinks \
                 in `to`), or declare a second nats source with its own `consumer`",
                nats.consumer
            ),
            SourceConfig::Redis(redis) => format!(
                "redis source `{name}` is read by pipelines {readers}: its consumer group `{}` \
                 hands each entry to one member, so each pipeline would get only part of the \
                 stream; route its events from one pipeline (a router plugin or several sinks \
                 in `to`), or declare a second redis source with its own `group`",
                redis.group
            ),
            SourceConfig::Rabbitmq(rabbit) => format!(
                "rabbitmq source `{name}` is read by pipelines {readers}: consumers of queue `{}` \
                 share its messages, so each pipeline would get only part of them; route its \
                 events from one pipeline (a router plugin or several sinks in `to`), or bind a \
                 second queue to the same exchange and read it with a second rabbitmq source",
                rabbit.queue
            ),
            SourceConfig::Mqtt(_) => format!(
                "mqtt source `{name}` is read by pipelines {readers}: its session (one client id) \
                 can be connected once; route its events from one pipeline (a router plugin or \
                 several sinks in `to`), or declare a second mqtt source with its own `client_id`"
            ),
            // Several pipelines may read an http or queue source.
            SourceConfig::Http(_) | SourceConfig::Queue(_) => continue,
        };
        cx.issue(&format!("pipelines.{last}.from"), message);
    }
    let mut slots: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for (name, source) in &config.sources {
        if let SourceConfig::PostgresCdc(c) = source
            && let Some(other) = slots.insert((c.dsn.as_str(), c.slot.as_str()), name)
        {
            cx.issue(
                &format!("sources.{name}.slot"),
                format!(
                    "sources `{other}` and `{name}` use the same replication slot `{}` of one \
                     database: give each its own `slot`",
                    c.slot
                ),
            );
        }
    }
}

struct Namespace<'d> {
    what: &'static str,
    section: &'static str,
    names: &'d BTreeSet<String>,
}

impl<'d> Namespace<'d> {
    fn new(what: &'static str, section: &'static str, names: &'d BTreeSet<String>) -> Self {
        Namespace {
            what,
            section,
            names,
        }
    }

    fn check(&self, cx: &mut Ctx<'_>, path: &str, name: &str) {
        if self.names.contains(name) {
            return;
        }
        let (what, section) = (self.what, self.section);
        let message = match closest(name, self.names.iter().map(String::as_str)) {
            Some(candidate) => format!("unknown {what} `{name}`, did you mean `{candidate}`?"),
            None if self.names.is_empty() => {
                format!(
                    "unknown {what} `{name}`: no {section} are declared; add [{section}.{name}]"
                )
            }
            None => {
                let known: Vec<&str> = self.names.iter().map(String::as_str).collect();
                format!(
                    "unknown {what} `{name}`: declare [{section}.{name}] or use one of: {}",
                    known.join(", ")
                )
            }
        };
        cx.issue(path, message);
    }
}

fn references(
    cx: &mut Ctx<'_>,
    path: &str,
    names: &[String],
    namespace: &Namespace<'_>,
    unique: bool,
) {
    let mut seen = BTreeSet::new();
    for (index, name) in names.iter().enumerate() {
        let item = format!("{path}[{index}]");
        namespace.check(cx, &item, name);
        if unique && !seen.insert(name) {
            cx.issue(
                &item,
                format!(
                    "{} `{name}` is listed twice; remove the repeat",
                    namespace.what
                ),
            );
        }
    }
}

fn queue_declared(cx: &mut Ctx<'_>, path: &str, queue: &str, declared: &Declared) {
    if queue.is_empty() || declared.queues.contains(queue) {
        return;
    }
    let hint = closest(queue, declared.queues.iter().map(String::as_str))
        .map(|candidate| format!(" (did you mean `{candidate}`?)"))
        .unwrap_or_default();
    cx.issue(
        path,
        format!("queue `{queue}` is not declared{hint}; add [queues.{queue}]"),
    );
}

/// The queues a pipeline reads through its queue sources.
fn queues_read(config: &Config, pipeline: &str) -> Vec<(String, String)> {
    let Some(pipeline) = config.pipelines.get(pipeline) else {
        return Vec::new();
    };
    pipeline
        .from
        .iter()
        .filter_map(|source| match config.sources.get(source) {
            Some(SourceConfig::Queue(queue)) => Some((queue.queue.clone(), source.clone())),
            _ => None,
        })
        .collect()
}

/// A pipeline whose dead letters land in a queue it reads would retry failures forever.
fn dead_letter_read_back(cx: &mut Ctx<'_>, config: &Config, name: &str) {
    let Some(pipeline) = config.pipelines.get(name) else {
        return;
    };
    let (dead_letter, path) = match &pipeline.dead_letter {
        Some(queue) => (queue, format!("pipelines.{name}.dead_letter")),
        None => (&config.server.dead_letter, "server.dead_letter".to_string()),
    };
    if let Some((queue, source)) = queues_read(config, name)
        .into_iter()
        .find(|(queue, _)| queue == dead_letter)
    {
        cx.issue(
            &path,
            format!(
                "pipeline `{name}` reads queue `{queue}` (source `{source}`) and would dead-letter into it: failed events would come back forever; use a separate dead-letter queue"
            ),
        );
    }
}

/// queue → (pipeline, queue) edges: a pipeline reading a queue source and writing a queue sink.
fn edges(config: &Config) -> BTreeMap<String, BTreeSet<(String, String)>> {
    let mut edges: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for (name, pipeline) in &config.pipelines {
        let outputs: Vec<&str> = pipeline
            .to
            .iter()
            .filter_map(|sink| match config.sinks.get(sink) {
                Some(SinkConfig::Queue(queue)) => Some(queue.queue.as_str()),
                _ => None,
            })
            .collect();
        for (input, _) in queues_read(config, name) {
            for output in &outputs {
                edges
                    .entry(input.clone())
                    .or_default()
                    .insert((name.clone(), output.to_string()));
            }
        }
    }
    edges
}

/// Reports every elementary cycle once, starting from its smallest queue name.
fn cycles(cx: &mut Ctx<'_>, config: &Config) {
    let edges = edges(config);
    let mut found: Vec<Vec<(String, String)>> = Vec::new();
    for start in edges.keys() {
        let mut trail = Vec::new();
        walk(&edges, start, start, &mut trail, &mut found);
        if found.len() >= MAX_CYCLES {
            break;
        }
    }
    for cycle in found.iter().take(MAX_CYCLES) {
        // cycle: [(queue, pipeline leaving it)], closing back to the first queue.
        let Some((first_queue, first_pipeline)) = cycle.first() else {
            continue;
        };
        let mut picture = String::new();
        for (queue, pipeline) in cycle {
            picture.push_str(&format!("{queue} → pipeline {pipeline} → "));
        }
        picture.push_str(first_queue);
        cx.issue(
            &format!("pipelines.{first_pipeline}.to"),
            format!(
                "queue `{first_queue}` feeds itself: {picture}; events would circulate forever: send to another queue or drop the queue sink"
            ),
        );
    }
}

fn walk(
    edges: &BTreeMap<String, BTreeSet<(String, String)>>,
    start: &str,
    at: &str,
    trail: &mut Vec<(String, String)>,
    found: &mut Vec<Vec<(String, String)>>,
) {
    let Some(next) = edges.get(at) else {
        return;
    };
    for (pipeline, target) in next {
        if found.len() >= MAX_CYCLES {
            return;
        }
        trail.push((at.to_string(), pipeline.clone()));
        if target == start {
            found.push(trail.clone());
        } else if target.as_str() > start && !trail.iter().any(|(queue, _)| queue == target) {
            walk(edges, start, target, trail, found);
        }
        trail.pop();
    }
}
