//! `GET /admin/config` (the running config, secrets masked) and
//! `POST /admin/config/validate` (an edited config checked by the validator of
//! `switchyard validate`; nothing is applied).

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
/// (`admin_token`, `secret`, `password`, `sasl.password`, a DSN…) become `***`, and URLs
/// and `name=secret` pairs in other strings lose their credentials. The values are those
/// after `${VAR}` substitution, hence the masking.
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
                    let v = if redact::is_secret_name(&k) && !v.is_null() {
                        Value::String(redact::MASK.to_owned())
                    } else {
                        redacted(v)
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redacted).collect()),
        Value::String(s) => Value::String(redact::dsn(&redact::text(&s))),
        other => other,
    }
}

/// Validates the body, a config in TOML (or YAML with a `yaml` content type), with the
/// process environment, as `switchyard validate` would on this machine.
pub(super) async fn validate(_: Admin, headers: HeaderMap, body: String) -> Json<ValidateAnswer> {
    let yaml = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("yaml"));
    // `${VAR}` values must not come back in a message: the caller sees the file, not the
    // environment of the server.
    let referenced: Vec<String> = referenced_variables(&body)
        .filter_map(|name| std::env::var(name).ok())
        .filter(|v| !v.is_empty())
        .collect();
    let issue = |i: &Issue| ConfigIssue {
        path: i.path.clone(),
        message: redact::scrub(
            &redact::text(&i.message),
            referenced.iter().map(String::as_str),
        )
        .into_owned(),
        line: i.line,
        column: i.column,
    };
    let answer = match switchyard_config::load_str(&body, yaml) {
        Ok(config) => ValidateAnswer {
            ok: true,
            issues: Vec::new(),
            warnings: config.warnings.iter().map(issue).collect(),
        },
        Err(e) => ValidateAnswer {
            ok: false,
            issues: e.issues.iter().map(issue).collect(),
            warnings: Vec::new(),
        },
    };
    Json(answer)
}

/// The names `NAME` of every `${NAME}` in `text`.
fn referenced_variables(text: &str) -> impl Iterator<Item = &str> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .filter(|name| !name.is_empty())
}

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
            "example.com/hook",
            "client.id",
            "\"me\"",
            "null",
        ] {
            assert!(text.contains(kept), "{kept} missing from {text}");
        }
    }

    #[test]
    fn referenced_variables_are_found() {
        let names: Vec<_> = referenced_variables("a = \"${A}\"\nb = \"x${B_2}y ${\"").collect();
        assert_eq!(names, ["A", "B_2"]);
    }
}
