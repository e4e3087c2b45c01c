//! `type = "nats"`.

use super::super::sources::broker;
use super::super::sources::nats::NATS_SCHEMES;
use super::super::walk::{Ctx, Table};
use super::kafka::template_problem;
use super::{cloudevents_mode, format, retry};
use crate::NatsSinkConfig;

pub(super) fn read(cx: &mut Ctx<'_>, table: &Table<'_>) -> NatsSinkConfig {
    let subject = table
        .required_string(
            cx,
            "subject",
            "the subject to publish to; may use {source}, {kind}, {table}, {header:NAME}",
        )
        .unwrap_or_default();
    if let Some(problem) = template_problem("subject", &subject) {
        cx.issue(&table.child("subject"), problem);
    }
    let stream = table.non_empty_string(cx, "stream");
    let create = table.boolean(cx, "create").unwrap_or(false);
    if create && stream.is_none() {
        cx.issue(
            &table.child("create"),
            "create = true makes a stream for `subject`: name it with `stream = \"EVENTS\"`",
        );
    }
    if create && !subject.is_empty() && crate::NatsSinkConfig::created_subjects(&subject).is_none()
    {
        cx.issue(
            &table.child("subject"),
            format!(
                "create = true makes a stream of the subjects of {subject:?}, which needs a \
                 fixed first token before any placeholder (e.g. \"events.{{source}}\"); \
                 create the stream yourself or change the subject"
            ),
        );
    }
    let format = format(cx, table);
    NatsSinkConfig {
        url: broker::url(cx, table, NATS_SCHEMES, "nats://127.0.0.1:4222"),
        subject,
        stream,
        create,
        timeout: table
            .duration(cx, "timeout", false)
            .unwrap_or(NatsSinkConfig::DEFAULT_TIMEOUT),
        concurrency: table
            .positive_usize(cx, "concurrency", "; at least one lane must deliver")
            .unwrap_or(NatsSinkConfig::DEFAULT_CONCURRENCY),
        retry: table
            .get("retry")
            .and_then(|value| retry(cx, &table.child("retry"), value)),
        format,
        cloudevents_mode: cloudevents_mode(cx, table, format),
        tls: broker::tls(cx, table),
    }
}
