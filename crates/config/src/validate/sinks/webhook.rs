//! `type = "webhook"`. Its addresses are judged once the whole file is read
//! (`crate::outbound::check_webhooks`).

use super::super::walk::{Ctx, Table, join};
use super::{cloudevents_mode, format, retry};
use crate::{SinkFormat, WebhookSinkConfig};

pub(super) fn read(cx: &mut Ctx<'_>, table: &Table<'_>) -> WebhookSinkConfig {
    let url = table
        .required_string(
            cx,
            "url",
            "where events are POSTed, e.g. \"https://example.com/hook\"",
        )
        .unwrap_or_default();
    if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
        cx.issue(
            &table.child("url"),
            format!("invalid url {url:?}: it must start with http:// or https://"),
        );
    }
    let secret = table.non_empty_string(cx, "secret");
    if let Some(secret) = &secret
        && (!secret.starts_with("whsec_") || secret.len() <= "whsec_".len())
    {
        cx.issue(
            &table.child("secret"),
            "invalid secret: use the Standard Webhooks form \"whsec_\" followed by a base64 key",
        );
    }
    let headers = table.string_map(cx, "headers").unwrap_or_default();
    for name in headers.keys() {
        let token = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
        if !token {
            cx.issue(
                &join(&table.child("headers"), name),
                format!("invalid header name {name:?}: use letters, digits and `-`"),
            );
        }
    }
    let envelope = table.boolean(cx, "envelope").unwrap_or(false);
    let format = format(cx, table);
    if envelope && format != SinkFormat::Switchyard {
        cx.issue(
            &table.child("envelope"),
            format!(
                "envelope = true sends switchyard's own JSON envelope, and format = \"{}\" \
                 sends the event in another shape: remove `envelope` (or the `format`)",
                format.name()
            ),
        );
    }
    let cloudevents_mode = cloudevents_mode(cx, table, format);
    WebhookSinkConfig {
        url,
        secret,
        timeout: table
            .duration(cx, "timeout", false)
            .unwrap_or(WebhookSinkConfig::DEFAULT_TIMEOUT),
        concurrency: table
            .positive_usize(
                cx,
                "concurrency",
                "; at least one request must be in flight",
            )
            .unwrap_or(WebhookSinkConfig::DEFAULT_CONCURRENCY),
        retry: table
            .get("retry")
            .and_then(|value| retry(cx, &table.child("retry"), value))
            .unwrap_or_default(),
        headers,
        envelope,
        allow_private: table.boolean(cx, "allow_private").unwrap_or(false),
        format,
        cloudevents_mode,
    }
}
