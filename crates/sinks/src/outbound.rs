//! Where a webhook may connect: link-local and cloud metadata addresses are refused
//! unless the sink sets `allow_private = true` (the classes are
//! [`switchyard_config::outbound`]'s, the same `validate` uses).
//!
//! Two places, because the HTTP client skips name resolution for an address literal:
//! * a literal host in `url` (in any spelling the URL parser accepts, e.g. the decimal
//!   `http://2852039166/`) or a well-known metadata name is refused when the sink is
//!   built, so a start fails;
//! * a host name is resolved through [`GuardedResolver`], which drops refused addresses
//!   from the answer. When none is left the connection fails with
//!   [`SinkError::RefusedAddress`], which the sink reports as a permanent outcome (a
//!   dead letter naming the key), not a retry: DNS can point a name anywhere, and this
//!   is checked on every new connection.
//!
//! Redirects are not followed (the client's policy), so a 3xx cannot lead elsewhere.
//! A proxy from `HTTP_PROXY`/`HTTPS_PROXY` resolves the target itself, out of reach of
//! the resolver; its own policy applies then.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use switchyard_config::outbound::{classify, is_metadata_host};

use crate::SinkError;

/// What a well-known metadata name is called in messages.
const METADATA_NAME: &str = "the name of a cloud metadata service";

/// Refuses a `url` whose host is a link-local or metadata address literal, or a
/// well-known metadata name. Callers skip it when the sink sets `allow_private`.
pub(crate) fn check_literal_host(sink: &str, url: &Url) -> Result<(), SinkError> {
    let Some(host) = url.host_str() else {
        return Ok(());
    };
    // The parser has already normalised every IPv4 spelling to dotted decimal; IPv6
    // literals come in brackets.
    let (target, class) = match host.trim_start_matches('[').trim_end_matches(']').parse() {
        Ok(ip) => (ip, classify(ip)),
        Err(_) if is_metadata_host(host) => {
            return Err(SinkError::RefusedAddress {
                sink: sink.to_owned(),
                target: host.to_owned(),
                class: METADATA_NAME,
            });
        }
        Err(_) => return Ok(()),
    };
    if class.refused() {
        return Err(SinkError::RefusedAddress {
            sink: sink.to_owned(),
            target: target.to_string(),
            class: class.describe(),
        });
    }
    Ok(())
}

/// The system's resolver (`getaddrinfo` on a blocking thread, as the HTTP client's own
/// default), for [`GuardedResolver`] to check.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok::<_, Box<dyn StdError + Send + Sync>>(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Resolves through `inner` and drops the addresses a webhook must not reach; an answer
/// with nothing left is an error ([`SinkError::RefusedAddress`]).
pub(crate) struct GuardedResolver {
    sink: String,
    inner: Arc<dyn Resolve>,
}

impl GuardedResolver {
    pub(crate) fn new(sink: &str, inner: Arc<dyn Resolve>) -> Self {
        Self {
            sink: sink.to_owned(),
            inner,
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let sink = self.sink.clone();
        let lookup = self.inner.resolve(name);
        Box::pin(async move {
            let mut refused = None;
            let allowed: Vec<SocketAddr> = lookup
                .await?
                .filter(|addr| {
                    let class = classify(addr.ip());
                    if class.refused() {
                        refused.get_or_insert((addr.ip(), class));
                        return false;
                    }
                    true
                })
                .collect();
            if let (true, Some((ip, class))) = (allowed.is_empty(), refused) {
                let error = SinkError::RefusedAddress {
                    sink,
                    target: format!("{ip} (what {host} resolves to)"),
                    class: class.describe(),
                };
                return Err(Box::new(error) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// A given resolver as it is (a sink with `allow_private`); the client takes a sized
/// resolver.
pub(crate) struct PassThrough(pub(crate) Arc<dyn Resolve>);

impl Resolve for PassThrough {
    fn resolve(&self, name: Name) -> Resolving {
        self.0.resolve(name)
    }
}

/// The [`SinkError::RefusedAddress`] somewhere in the causes of a request's failure, if
/// the resolver refused every address.
pub(crate) fn refusal(error: &reqwest::Error) -> Option<&SinkError> {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(refused @ SinkError::RefusedAddress { .. }) = e.downcast_ref::<SinkError>() {
            return Some(refused);
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_hosts_in_every_spelling() {
        for refused in [
            "http://169.254.169.254/latest/meta-data",
            "http://2852039166/",
            "http://0xA9FEA9FE/",
            "http://[::ffff:169.254.169.254]/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]:8080/",
            "http://metadata.google.internal/computeMetadata/v1/",
        ] {
            let url = Url::parse(refused).unwrap();
            let error = check_literal_host("hook", &url).expect_err(refused);
            let text = error.to_string();
            assert!(text.starts_with("sinks.hook.url: "), "{text}");
            assert!(
                text.ends_with("refused unless the sink sets allow_private = true"),
                "{text}"
            );
        }
        for allowed in [
            "http://127.0.0.1:9/hook",
            "http://10.0.0.1/",
            "https://hooks.example.com/in",
            "http://[::1]:9/",
        ] {
            check_literal_host("hook", &Url::parse(allowed).unwrap()).expect(allowed);
        }
    }
}
