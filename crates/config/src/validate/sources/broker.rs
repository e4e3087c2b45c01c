//! What the NATS and Redis sources and sinks share: the server URL and the `tls` table.

use serde_json::Value;

use super::super::walk::{Ctx, Table};
use crate::BrokerTlsConfig;

/// `url` of a NATS or Redis source or sink: required, with one of `schemes`.
pub(crate) fn url(cx: &mut Ctx<'_>, table: &Table<'_>, schemes: &[&str], example: &str) -> String {
    let url = table
        .required_string(cx, "url", &format!("the server, e.g. {example:?}"))
        .unwrap_or_default();
    // Several NATS servers may be listed, comma-separated: each needs a scheme.
    let bad = url
        .split(',')
        .map(str::trim)
        .find(|one| !one.is_empty() && !schemes.iter().any(|s| one.starts_with(s)));
    if let Some(bad) = bad {
        cx.issue(
            &table.child("url"),
            format!(
                "invalid url {:?}: it must start with {}, e.g. {example:?}",
                crate::redact::url(bad),
                schemes.join(" or ")
            ),
        );
    }
    url
}

/// `tls = { ca, cert, key }`: `cert` and `key` come together.
pub(crate) fn tls(cx: &mut Ctx<'_>, table: &Table<'_>) -> BrokerTlsConfig {
    let Some(value) = table.get("tls") else {
        return BrokerTlsConfig::default();
    };
    tls_table(cx, &table.child("tls"), value).unwrap_or_default()
}

fn tls_table(cx: &mut Ctx<'_>, path: &str, value: &Value) -> Option<BrokerTlsConfig> {
    let table = Table::of::<BrokerTlsConfig>(cx, path, value)?;
    let tls = BrokerTlsConfig {
        ca: table.non_empty_string(cx, "ca"),
        cert: table.non_empty_string(cx, "cert"),
        key: table.non_empty_string(cx, "key"),
    };
    if tls.cert.is_some() != tls.key.is_some() {
        cx.issue(
            path,
            "a client certificate needs both `cert` (the PEM chain) and `key` (its private \
             key): give both or neither",
        );
    }
    table.finish(cx);
    Some(tls)
}
