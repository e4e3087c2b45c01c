//! `type = "webhook"`: one signed HTTP POST per event.
//!
//! * **Body**: the event payload with the event's content type; with `envelope = true`
//!   the JSON wire form (`application/json`); with `format = "debezium"` a Postgres
//!   change as Debezium's change event (`application/json`; a schema event is skipped,
//!   other events are sent as without it).
//! * **Signing** (when `secret` is set; `webhook-id` and `webhook-timestamp` are sent
//!   always): [Standard Webhooks] — `webhook-id` is the event
//!   id (the same on every retry, so receivers deduplicate), `webhook-timestamp` is the
//!   attempt's Unix time in seconds and `webhook-signature` is
//!   `v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>` keyed with the base64-decoded
//!   part of the `whsec_…` secret.
//! * **Headers**: `content-type`, `x-switchyard-source`, `x-switchyard-kind`,
//!   `x-switchyard-key` (when the key is UTF-8), then the configured `headers` (which may
//!   override any of those), then the signature headers (which nothing overrides).
//! * **Outcomes**: 2xx → delivered; 408, 429, 5xx, timeouts and connection errors →
//!   retry (with the `Retry-After` the server sent, in seconds or as an HTTP date);
//!   3xx → permanent (redirects are not followed: a redirect would re-send the signed
//!   body somewhere the user did not configure); any other status → permanent, with the
//!   start of the response body in the error.
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use sha2::Sha256;
use switchyard_config::{WebhookSinkConfig, redact};
use switchyard_connector::format::{self, Binding, Body, Formatter};
use switchyard_event::Event;

use reqwest::dns::Resolve;

use crate::SinkError;
use crate::outbound::{self, GuardedResolver, PassThrough, SystemResolver};
use switchyard_connector::{
    BoxFuture, BuildContext, BuildError, MAX_RETRY_AFTER, Outcome, RetryPolicy, Sink,
};

/// How much of an error response's body goes into the error message.
const ERROR_BODY_PREFIX: usize = 200;
/// How much of a response body is read at most (so the connection can be reused).
const DRAIN_LIMIT: usize = 64 * 1024;

/// The Standard Webhooks signing key, the decoded part of a `whsec_…` secret.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// Parses `whsec_` + base64. `None` when the secret is not in that form.
    pub fn from_secret(secret: &str) -> Option<Self> {
        let encoded = secret.strip_prefix("whsec_")?;
        let key = B64.decode(encoded.trim()).ok()?;
        (!key.is_empty()).then_some(Self(key))
    }

    /// The `webhook-signature` value for one message: `v1,<base64 HMAC-SHA256>` of
    /// `"{id}.{timestamp}.{body}"`.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("hmac takes keys of any length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }
}

/// Delivers each event as one HTTP POST to a fixed URL.
#[derive(Clone, Debug)]
pub struct WebhookSink {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    name: String,
    url: reqwest::Url,
    /// `url` without its password and query values, for messages (they end up in logs,
    /// dead-letter headers and admin answers).
    shown_url: String,
    client: reqwest::Client,
    key: Option<SigningKey>,
    headers: HeaderMap,
    envelope: bool,
    formatter: Formatter,
    timeout: Duration,
    concurrency: usize,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Inner {
    // Not derived: configured headers often carry credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("name", &self.name)
            .field("url", &self.shown_url)
            .field("signed", &self.key.is_some())
            .field("envelope", &self.envelope)
            .field("format", &self.formatter.format())
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl WebhookSink {
    /// Builds the sink called `name`; checks the URL, secret and headers up front so a
    /// bad config fails at start-up rather than on the first event.
    pub fn new(name: &str, cfg: &WebhookSinkConfig) -> Result<Self, SinkError> {
        Self::with_resolver(name, cfg, None)
    }

    /// [`WebhookSink::new`] resolving host names through `resolver` instead of the
    /// system's. Link-local and metadata addresses it answers are dropped all the same
    /// unless the sink sets `allow_private` (see [`crate::outbound`]).
    pub fn with_resolver(
        name: &str,
        cfg: &WebhookSinkConfig,
        resolver: Option<Arc<dyn Resolve>>,
    ) -> Result<Self, SinkError> {
        let shown_url = redact::url(&cfg.url);
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| SinkError::InvalidUrl {
            sink: name.to_owned(),
            url: shown_url.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(SinkError::InvalidUrl {
                sink: name.to_owned(),
                url: shown_url.clone(),
                reason: format!("scheme `{}` is not http or https", url.scheme()),
            });
        }
        if !cfg.allow_private {
            outbound::check_literal_host(name, &url)?;
        }
        let key =
            match &cfg.secret {
                None => None,
                Some(secret) => Some(SigningKey::from_secret(secret).ok_or_else(|| {
                    SinkError::InvalidSecret {
                        sink: name.to_owned(),
                    }
                })?),
            };
        if cfg.timeout.is_zero() {
            return Err(SinkError::InvalidSetting {
                sink: name.to_owned(),
                key: "timeout",
                problem: "must be longer than zero; set e.g. timeout = \"5s\"",
            });
        }
        if cfg.concurrency == 0 {
            return Err(SinkError::InvalidSetting {
                sink: name.to_owned(),
                key: "concurrency",
                problem: "must be at least 1",
            });
        }
        let mut headers = HeaderMap::with_capacity(cfg.headers.len());
        for (header, value) in &cfg.headers {
            let invalid = |reason: String| SinkError::InvalidHeader {
                sink: name.to_owned(),
                name: header.clone(),
                reason,
            };
            let parsed_name = HeaderName::from_bytes(header.as_bytes())
                .map_err(|e| invalid(format!("bad name: {e}")))?;
            if is_signature_header(&parsed_name) {
                return Err(invalid(
                    "it is set by the Standard Webhooks signing; remove it from `headers`".into(),
                ));
            }
            let parsed_value =
                HeaderValue::from_str(value).map_err(|e| invalid(format!("bad value: {e}")))?;
            headers.append(parsed_name, parsed_value);
        }
        // Redirects are never followed: a redirect would re-send the signed body to an
        // address nobody configured (or checked).
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .pool_max_idle_per_host(cfg.concurrency)
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")));
        // Every host name goes through the guard unless the sink allows private
        // addresses; then a given resolver is used as it is.
        match (cfg.allow_private, resolver) {
            (false, resolver) => {
                let inner = resolver.unwrap_or_else(|| Arc::new(SystemResolver));
                client = client.dns_resolver(Arc::new(GuardedResolver::new(name, inner)));
            }
            (true, Some(resolver)) => {
                client = client.dns_resolver(Arc::new(PassThrough(resolver)));
            }
            (true, None) => {}
        }
        let client = client.build().map_err(|source| SinkError::HttpClient {
            sink: name.to_owned(),
            source,
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                url,
                shown_url,
                client,
                key,
                headers,
                envelope: cfg.envelope,
                formatter: Formatter::new(cfg.format).with_cloudevents_mode(cfg.cloudevents_mode),
                timeout: cfg.timeout,
                concurrency: cfg.concurrency,
                retry: RetryPolicy::from(&cfg.retry),
            }),
        })
    }

    /// The sink writing each body in `formatter`'s format ([`Self::new`] takes the
    /// config's `format` without knowing the sources: Debezium's `source.db` is null).
    pub fn with_formatter(self, formatter: Formatter) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.formatter = formatter;
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The URL as shown in messages (password and query values masked).
    pub fn url(&self) -> &str {
        &self.inner.shown_url
    }

    /// The sink's name in the config.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// One POST of one event.
    async fn deliver_one(&self, event: &Event) -> Outcome {
        let inner = &*self.inner;
        let mut formatted = Vec::new();
        // CloudEvents in binary mode: the payload as it is, the attributes as headers.
        let attributes = inner.formatter.binary_headers(event, Binding::Http);
        let native = inner.formatter.is_native()
            || attributes.is_some()
            || match inner
                .formatter
                .write(event, format::now_us(), &mut formatted)
            {
                Body::Native => true,
                Body::Skip => return Outcome::Skipped,
                Body::Written { .. } => false,
            };
        let (body, content_type) = if !native {
            (
                formatted,
                HeaderValue::from_static(inner.formatter.written_content_type()),
            )
        } else if inner.envelope {
            (
                event.to_wire_line().into_bytes(),
                HeaderValue::from_static("application/json"),
            )
        } else {
            let content_type = if event.content_type.is_empty() {
                HeaderValue::from_static("application/octet-stream")
            } else {
                match HeaderValue::from_str(&event.content_type) {
                    Ok(v) => v,
                    Err(_) => {
                        return Outcome::Permanent {
                            error: format!(
                                "content type {:?} of event {} cannot be sent as an HTTP header; set `envelope = true` on sink `{}` or fix the source",
                                event.content_type, event.id, inner.name
                            ),
                        };
                    }
                }
            };
            (event.payload.clone(), content_type)
        };

        let mut headers = HeaderMap::with_capacity(8 + inner.headers.len());
        headers.insert(CONTENT_TYPE, content_type);
        insert_if_valid(&mut headers, "x-switchyard-source", &event.source);
        insert_if_valid(&mut headers, "x-switchyard-kind", &event.kind);
        if let Some(key) = event
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
        {
            insert_if_valid(&mut headers, "x-switchyard-key", key);
        }
        for (name, value) in attributes.iter().flatten() {
            // Percent-encoded by the binding: always a valid header value.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        for name in inner.headers.keys() {
            headers.remove(name);
        }
        headers.extend(inner.headers.clone());
        // `webhook-id` and `webhook-timestamp` go on every request, signed or not, so
        // receivers can always deduplicate on the event id.
        let Ok(id) = HeaderValue::from_str(&event.id) else {
            return Outcome::Permanent {
                error: format!(
                    "event id {:?} cannot be sent as the webhook-id header; ids must be visible ASCII",
                    event.id
                ),
            };
        };
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        headers.insert("webhook-id", id);
        headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
        if let Some(key) = &inner.key {
            let signature = key.sign(&event.id, timestamp, &body);
            match HeaderValue::from_str(&signature) {
                Ok(v) => headers.insert("webhook-signature", v),
                Err(_) => unreachable!("base64 is a valid header value"),
            };
        }

        let sent = inner
            .client
            .post(inner.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            // The address guard refused every address of the host: retrying cannot
            // help until the config changes.
            Err(e) => {
                if let Some(refused) = outbound::refusal(&e) {
                    return Outcome::Permanent {
                        error: refused.to_string(),
                    };
                }
                return self.transport_failure(e);
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_prefix(response).await;

        if status.is_success() {
            return Outcome::Delivered;
        }
        if status.is_redirection() {
            return Outcome::Permanent {
                error: format!(
                    "{} answered {status} redirecting to {}; redirects are not followed: point `url` of sink `{}` at the final address",
                    inner.shown_url,
                    location
                        .as_deref()
                        .map_or_else(|| "(no location)".into(), redact::url),
                    inner.name
                ),
            };
        }
        let error = format!(
            "{} answered {status}: {}",
            inner.shown_url,
            error_body_excerpt(&body)
        );
        if is_transient(status) {
            Outcome::Retry { error, retry_after }
        } else {
            Outcome::Permanent { error }
        }
    }

    fn transport_failure(&self, e: reqwest::Error) -> Outcome {
        let inner = &*self.inner;
        // The URL is named by us, masked; reqwest's copy may hold a password.
        let e = e.without_url();
        if e.is_builder() {
            return Outcome::Permanent {
                error: format!(
                    "cannot build a request to {}: {}",
                    inner.shown_url,
                    chain(&e)
                ),
            };
        }
        let error = if e.is_timeout() {
            format!(
                "{} did not answer within {:?} (timeout of sink `{}`)",
                inner.shown_url, inner.timeout, inner.name
            )
        } else {
            format!("cannot reach {}: {}", inner.shown_url, chain(&e))
        };
        Outcome::Retry {
            error,
            retry_after: None,
        }
    }
}

impl Sink for WebhookSink {
    /// Events are posted one after another. After a `Retry` the rest of the batch is not
    /// attempted (and also reported as `Retry`), so later events of the lane never
    /// overtake an earlier one. With `max_batch() == 1` a batch is a single event.
    fn deliver<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(batch.len());
            let mut iter = batch.iter();
            for event in iter.by_ref() {
                let outcome = self.deliver_one(event).await;
                let stop = matches!(outcome, Outcome::Retry { .. });
                outcomes.push(outcome);
                if stop {
                    break;
                }
            }
            for event in iter {
                outcomes.push(Outcome::Retry {
                    error: format!(
                        "not attempted: an earlier event in the batch of {} failed",
                        event.id
                    ),
                    retry_after: None,
                });
            }
            outcomes
        })
    }

    fn max_batch(&self) -> usize {
        1
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry
    }
}

fn is_signature_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "webhook-id" | "webhook-timestamp" | "webhook-signature"
    )
}

/// 408 Request Timeout, 429 Too Many Requests and every 5xx may succeed later.
fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// Event metadata that cannot be a header value (control characters) is left out
/// rather than failing the delivery: it is informational.
fn insert_if_valid(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3), at most
/// [`MAX_RETRY_AFTER`] so callers can add it to an `Instant` safely. A date in the past
/// means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Overlong digit strings are "very long": saturate instead of failing.
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Reads up to [`DRAIN_LIMIT`] bytes of the body; errors just end the read (the status
/// already decided the outcome).
async fn read_prefix(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < DRAIN_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// The first [`ERROR_BODY_PREFIX`] bytes of a response body as text, cut at a character
/// boundary; URLs and `token=…` pairs in it are masked (servers like to echo the request
/// line, query and all).
fn error_body_excerpt(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty body)".to_owned();
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_PREFIX)]);
    let mut text = text.trim().to_owned();
    if body.len() > ERROR_BODY_PREFIX {
        text.push('…');
    }
    redact::text(&text).into_owned()
}

/// An error and its causes, `a: b: c`, which is where reqwest keeps the useful part
/// ("connection refused"); any URL a cause quotes is masked.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    redact::text(&out).into_owned()
}

/// Builds the `webhook` sink `name`: the runtime's registration calls this.
pub fn build(
    name: &str,
    cfg: &WebhookSinkConfig,
    ctx: &BuildContext<'_>,
) -> Result<Arc<dyn Sink>, BuildError> {
    let sink = WebhookSink::new(name, cfg).map_err(|e| BuildError::from_error(&e))?;
    Ok(Arc::new(sink.with_formatter(
        Formatter::for_config(cfg.format, ctx.config).with_cloudevents_mode(cfg.cloudevents_mode),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        // The example published with the Standard Webhooks specification.
        let key = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            key.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_must_be_whsec_base64() {
        assert!(SigningKey::from_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_none());
        assert!(SigningKey::from_secret("whsec_not base64!").is_none());
        assert!(SigningKey::from_secret("whsec_").is_none());
        assert!(SigningKey::from_secret("whsec_c2VjcmV0").is_some());
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn error_excerpt_is_bounded_and_utf8_safe() {
        let long = "é".repeat(300);
        let excerpt = error_body_excerpt(long.as_bytes());
        assert!(excerpt.len() <= ERROR_BODY_PREFIX + '…'.len_utf8());
        assert!(excerpt.ends_with('…'));
        assert_eq!(error_body_excerpt(b""), "(empty body)");
    }

    #[test]
    fn transient_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 410, 413, 422] {
            assert!(!is_transient(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}
