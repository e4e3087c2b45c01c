//! `GET /admin/config` (the running config, secrets masked) and
//! `POST /admin/config/validate` (an edited config checked by the validator of
//! `switchyard validate`; nothing is applied).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use http::HeaderMap;
use serde_json::Value;
use switchyard_api::{ConfigIssue, ValidateAnswer};
use switchyard_config::{Issue, redact};
use switchyard_source_http::{Admin, ApiError};

use crate::Shared;

/// The running config as JSON, every secret masked: values under secret-like keys
/// (`admin_token`, `secret`, `password`, `sasl.password`, a DSN…) become `***`, every
/// value of a plugin's free-form `config` and of a sink's extra `headers` too (their key
/// names say nothing about what is secret), and URLs in other strings keep only their
/// scheme, user and host (a webhook address often carries its token in the path, as
/// Slack's and Discord's do). The values are those after `${VAR}` substitution, hence the
/// masking.
pub(super) async fn running(
    State(shared): State<Arc<Shared>>,
    _: Admin,
) -> Result<Json<Value>, ApiError> {
    let value = serde_json::to_value(&shared.config)
        .map_err(|e| ApiError::internal(format!("cannot write the config as JSON: {e}")))?;
    Ok(Json(redacted(value)))
}

fn redacted(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = if (redact::is_secret_name(&k) && !v.is_null())
                        || (OPAQUE.contains(&k.as_str()) && v.is_object())
                    {
                        masked_leaves(v)
                    } else {
                        redacted(v)
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redacted).collect()),
        Value::String(s) => Value::String(without_url_path(&redact::dsn(&redact::text(&s)))),
        other => other,
    }
}

/// Keys whose values are maps of free-form names to values, any of which may be a secret.
const OPAQUE: &[&str] = &["config", "headers"];

/// `value` with every string, number and bool in it masked; names and nulls stay.
fn masked_leaves(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, masked_leaves(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(masked_leaves).collect()),
        Value::Null => Value::Null,
        _ => Value::String(redact::MASK.to_owned()),
    }
}

/// A URL's path (and what follows) masked: `https://hooks.example.com/services/T/B/x`
/// → `https://hooks.example.com/***`. Text that holds no `://` stays as it is.
fn without_url_path(text: &str) -> String {
    let Some(at) = text.find("://") else {
        return text.to_owned();
    };
    let rest = &text[at + 3..];
    match rest.find(['/', '?', '#']) {
        Some(end) if rest.len() > end + 1 => {
            format!("{}/{}", &text[..at + 3 + end], redact::MASK)
        }
        _ => text.to_owned(),
    }
}

/// Validates the body, a config in TOML (or YAML with a `yaml` content type), as
/// `switchyard validate` would — but without the server's environment: no
/// `SWITCHYARD_*` overrides, and `${VAR}` references stay unresolved (reported as
/// warnings, with their `:-default` used where there is one). The answer depends only on
/// the text posted, so it cannot be used to read the server's environment (a message
/// quoting part of a substituted value, or telling whether a variable is set).
pub(super) async fn validate(_: Admin, headers: HeaderMap, body: String) -> Json<ValidateAnswer> {
    let yaml = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("yaml"));
    let issue = |i: &Issue| ConfigIssue {
        path: i.path.clone(),
        message: redact::text(&i.message).into_owned(),
        line: i.line,
        column: i.column,
    };
    let unresolved = |i: &Issue| ConfigIssue {
        message: format!(
            "{}: not checked here; the console validates without the server's environment",
            i.path
        ),
        ..issue(i)
    };
    let answer = match switchyard_config::load_str_with_env(&body, yaml, &HashMap::new()) {
        Ok(config) => ValidateAnswer {
            ok: true,
            issues: Vec::new(),
            warnings: config.warnings.iter().map(issue).collect(),
        },
        Err(e) => {
            let (variables, issues): (Vec<&Issue>, Vec<&Issue>) = e
                .issues
                .iter()
                .partition(|i| i.message.starts_with(UNSET_VARIABLE));
            ValidateAnswer {
                ok: issues.is_empty(),
                issues: issues.into_iter().map(issue).collect(),
                warnings: variables.into_iter().map(unresolved).collect(),
            }
        }
    };
    Json(answer)
}

/// How the loader starts the message of a `${VAR}` that is not set.
const UNSET_VARIABLE: &str = "environment variable";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_the_rest_is_kept() {
        let value = serde_json::json!({
            "server": {"admin_token": "admin-secret-0123456789", "listen": "127.0.0.1:8080"},
            "sinks": {"hook": {"url": "https://user:pw@example.com/hook?sig=abc", "secret": "whsec_x"}},
            "sources": {"pg": {"dsn": "postgres://u:pw@db/app"}},
            "k": {"options": {"sasl.password": "p4ss", "client.id": "me"}},
            "none": {"token": null}
        });
        let text = redacted(value).to_string();
        for secret in ["admin-secret", ":pw@", "sig=abc", "whsec_x", "p4ss"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        for kept in [
            "127.0.0.1:8080",
            "user:***@example.com/***",
            "client.id",
            "\"me\"",
            "null",
        ] {
            assert!(text.contains(kept), "{kept} missing from {text}");
        }
    }

    #[test]
    fn tokens_in_url_paths_plugin_config_and_headers_are_masked() {
        let value = serde_json::json!({
            "sinks": {"slack": {
                "url": "https://hooks.slack.com/services/T0001/B0002/XXXXsecretXXXX",
                "headers": {"X-Api": "hdr-secret-1"}
            }},
            "plugins": {"p": {"path": "p.wasm", "config": {"pw": "plugin-secret-2", "n": 3}}},
            "sources": {"n": {"url": "nats://127.0.0.1:4222"}}
        });
        let text = redacted(value).to_string();
        for secret in ["XXXXsecretXXXX", "T0001", "hdr-secret-1", "plugin-secret-2"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        for kept in [
            "https://hooks.slack.com/***",
            "X-Api",
            "\"pw\"",
            "nats://127.0.0.1:4222",
            "p.wasm",
        ] {
            assert!(text.contains(kept), "{kept} missing from {text}");
        }
    }

    #[tokio::test]
    async fn validation_never_reads_the_servers_environment() {
        // SAFETY: set before anything else in this test reads the environment; the name
        // is this test's own.
        unsafe { std::env::set_var("SWITCHYARD_TEST_CONSOLE_SECRET", "Summer2024xyz") };
        let body = "[server]\nidle_timeout = \"1${SWITCHYARD_TEST_CONSOLE_SECRET}\"\n".to_owned();
        let Json(answer) = validate(Admin, HeaderMap::new(), body).await;
        let text = format!("{:?}", (&answer.issues, &answer.warnings));
        assert!(!text.contains("Summer"), "{text}");
        assert!(
            answer
                .warnings
                .iter()
                .any(|w| w.path.contains("idle_timeout")),
            "{text}"
        );
    }
}
