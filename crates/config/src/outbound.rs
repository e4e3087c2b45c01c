//! Where webhooks may go: the address classes behind `allow_private`.
//!
//! A webhook URL comes from the config file or an environment override, and switchyard
//! runs next to things a URL should not reach: the cloud metadata service (instance
//! credentials), link-local services, its own admin API. These checks are shared by
//! `validate` (literal addresses and well-known names, here) and the webhook sink (every
//! address a host name resolves to, at connect time), so both refuse the same things.
//!
//! Pure: no DNS, no network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use crate::validate::Ctx;
use crate::{Config, SinkConfig};

/// What an address is, from the point of view of a webhook sent to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressClass {
    /// Anywhere else: sent without comment.
    Public,
    /// 127/8, ::1, and the unspecified 0.0.0.0/8 and :: (which reach this host): sent,
    /// with a warning.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, 100.64/10 (shared address space), fc00::/7: sent,
    /// with a warning.
    Private,
    /// 169.254/16, fe80::/10: refused unless `allow_private = true`.
    LinkLocal,
    /// A cloud instance metadata service (169.254.169.254, fd00:ec2::254,
    /// 100.100.100.200): refused unless `allow_private = true`.
    Metadata,
}

impl AddressClass {
    /// Refused unless the sink sets `allow_private = true`.
    pub fn refused(self) -> bool {
        matches!(self, AddressClass::LinkLocal | AddressClass::Metadata)
    }

    /// Sent, but worth a warning when it is written in the config.
    pub fn internal(self) -> bool {
        matches!(self, AddressClass::Loopback | AddressClass::Private)
    }

    /// "a link-local address", for messages.
    pub fn describe(self) -> &'static str {
        match self {
            AddressClass::Public => "a public address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private-network address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::Metadata => "a link-local/cloud metadata address",
        }
    }
}

/// Cloud metadata services at addresses outside 169.254/16 or reached through IPv6.
const METADATA_V4: &[Ipv4Addr] = &[
    // AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle… (also link-local).
    Ipv4Addr::new(169, 254, 169, 254),
    // Alibaba Cloud (inside 100.64/10, which is otherwise only "private").
    Ipv4Addr::new(100, 100, 100, 200),
];
/// AWS IMDS over IPv6 (Nitro instances).
const METADATA_V6: &[Ipv6Addr] = &[Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];

/// Host names that resolve to a metadata service on the cloud they belong to (GCP's
/// names, AWS's `instance-data`). Compared without case and trailing dot.
pub const METADATA_HOSTS: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
];

/// The class of one address. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is judged
/// as the IPv4 address it reaches.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    if METADATA_V4.contains(&ip) {
        AddressClass::Metadata
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if ip.is_loopback() || a == 0 {
        AddressClass::Loopback
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let first = ip.segments()[0];
    if METADATA_V6.contains(&ip) {
        AddressClass::Metadata
    } else if first & 0xffc0 == 0xfe80 {
        AddressClass::LinkLocal
    } else if ip.is_loopback() || ip.is_unspecified() {
        AddressClass::Loopback
    } else if first & 0xfe00 == 0xfc00 {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

/// Whether `host` (a name, not an address) is a well-known name of a metadata service.
pub fn is_metadata_host(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    METADATA_HOSTS
        .iter()
        .any(|known| known.eq_ignore_ascii_case(host))
}

/// Whether `host` (a name) always means this machine: `localhost` and `*.localhost`
/// (RFC 6761).
pub fn is_localhost(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// Checks the `url` of every webhook sink: a link-local or metadata address (or a
/// well-known metadata name) is an error unless the sink sets `allow_private = true`; a
/// loopback or private address, `localhost`, or this switchyard's own `server.listen` is
/// a warning. Host names are not resolved here (the sink checks what they resolve to
/// at connect time).
pub(crate) fn check_webhooks(cx: &mut Ctx<'_>, config: &Config) {
    for (name, sink) in &config.sinks {
        let SinkConfig::Webhook(hook) = sink else {
            continue;
        };
        let path = format!("sinks.{name}.url");
        // An empty or non-http(s) url is already reported by the schema.
        if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
            continue;
        }
        // The URL is parsed the way the sink's HTTP client parses it (WHATWG), so
        // `http://2852039166/` is judged as the 169.254.169.254 it reaches.
        let url = match Url::parse(&hook.url) {
            Ok(url) => url,
            Err(error) => {
                // Not the URL itself in the message: it may hold a password.
                cx.issue(
                    &path,
                    format!(
                        "invalid url ({error}): write an absolute address such as \"https://example.com/hook\""
                    ),
                );
                continue;
            }
        };
        let Some(host) = url.host() else {
            continue;
        };
        let override_hint = "unless the sink sets allow_private = true";
        let (shown, class) = match &host {
            Host::Ipv4(ip) => (ip.to_string(), classify(IpAddr::V4(*ip))),
            Host::Ipv6(ip) => (ip.to_string(), classify(IpAddr::V6(*ip))),
            Host::Domain(domain) if is_metadata_host(domain) => {
                if !hook.allow_private {
                    cx.issue(
                        &path,
                        format!(
                            "{domain} is the name of a cloud metadata service (it resolves to a link-local/cloud metadata address); webhooks to it are refused {override_hint}"
                        ),
                    );
                }
                continue;
            }
            Host::Domain(domain) if is_localhost(domain) => {
                (domain.to_string(), AddressClass::Loopback)
            }
            Host::Domain(_) => (String::new(), AddressClass::Public),
        };
        if class.refused() && !hook.allow_private {
            cx.issue(
                &path,
                format!(
                    "{shown} is {}; webhooks to it are refused {override_hint}",
                    class.describe()
                ),
            );
        } else if class.internal() && !hook.allow_private {
            cx.warn(
                &path,
                format!(
                    "{shown} is {}: webhooks to it are sent, but check that this is intended \
                     (an environment override of `url` can point switchyard at internal services); \
                     set allow_private = true on the sink to silence this warning",
                    class.describe()
                ),
            );
        }
        let port = url.port_or_known_default();
        if port.is_some_and(|port| is_own_server(&host, port, &config.server.listen)) {
            cx.warn(
                &path,
                format!(
                    "{}:{} is this switchyard's own server (server.listen = {:?}): events would be \
                     POSTed to its own ingest and admin API; point `url` at the receiver",
                    host,
                    port.unwrap_or_default(),
                    config.server.listen
                ),
            );
        }
    }
}

/// Whether `host:port` of a URL reaches `listen` (`server.listen`), as far as can be
/// told without DNS: the same address or name, or a loopback URL (`localhost`,
/// 127.0.0.1, ::1) for a server listening on loopback or on every interface.
fn is_own_server(host: &Host<&str>, port: u16, listen: &str) -> bool {
    let Some((listen_host, listen_port)) = listen.rsplit_once(':') else {
        return false;
    };
    if listen_port.parse::<u16>().ok() != Some(port) {
        return false;
    }
    let listen_host = listen_host.trim_start_matches('[').trim_end_matches(']');
    let url_ip = match host {
        Host::Ipv4(ip) => Some(IpAddr::V4(*ip)),
        Host::Ipv6(ip) => Some(IpAddr::V6(*ip)),
        Host::Domain(_) => None,
    };
    let url_is_local = match (host, url_ip) {
        (_, Some(ip)) => classify(ip) == AddressClass::Loopback,
        (Host::Domain(domain), None) => is_localhost(domain),
        _ => false,
    };
    match listen_host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => url_is_local,
        Ok(ip) => {
            url_ip.is_some_and(|url_ip| url_ip.to_canonical() == ip.to_canonical())
                || (ip.is_loopback() && matches!(host, Host::Domain(d) if is_localhost(d)))
        }
        Err(_) => match host {
            Host::Domain(domain) => {
                domain.eq_ignore_ascii_case(listen_host)
                    || (is_localhost(listen_host) && url_is_local)
            }
            _ => is_localhost(listen_host) && url_is_local,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::Issue;

    /// A config with one webhook sink `hook` at `url`, plus `extra` lines in the sink.
    fn config_with(url: &str, extra: &str) -> String {
        format!(
            r#"[server]
listen = "127.0.0.1:18080"

[sources.api]
type = "http"

[pipelines.deliver]
from = ["api"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "{url}"
{extra}
"#
        )
    }

    fn refused(url: &str) -> Issue {
        let issues = crate::load_str(&config_with(url, ""), false)
            .expect_err(url)
            .issues;
        assert_eq!(issues.len(), 1, "{url}: {issues:#?}");
        issues.into_iter().next().unwrap()
    }

    fn warnings(url: &str, extra: &str) -> Vec<Issue> {
        crate::load_str(&config_with(url, extra), false)
            .unwrap_or_else(|e| panic!("{url} is accepted: {e}"))
            .warnings
    }

    #[test]
    fn a_literal_metadata_address_is_refused_with_the_key_to_override() {
        let issue = refused("http://169.254.169.254/latest/meta-data");
        assert_eq!(issue.path, "sinks.hook.url");
        assert_eq!(issue.line, Some(13), "{issue:?}");
        assert_eq!(
            issue.message,
            "169.254.169.254 is a link-local/cloud metadata address; webhooks to it are \
             refused unless the sink sets allow_private = true"
        );
    }

    #[test]
    fn every_spelling_of_a_link_local_or_metadata_host_is_refused() {
        for (url, says) in [
            (
                "http://[fd00:ec2::254]/latest",
                "fd00:ec2::254 is a link-local/cloud metadata",
            ),
            // The decimal and IPv4-mapped forms of 169.254.169.254.
            (
                "http://2852039166/",
                "169.254.169.254 is a link-local/cloud metadata",
            ),
            (
                "http://[::ffff:a9fe:a9fe]/",
                "::ffff:169.254.169.254 is a link-local/cloud",
            ),
            (
                "https://169.254.10.1:8443/hook",
                "169.254.10.1 is a link-local address",
            ),
            ("http://[fe80::1]/hook", "fe80::1 is a link-local address"),
            (
                "http://metadata.google.internal/computeMetadata/v1/",
                "metadata.google.internal is the name of a cloud metadata service",
            ),
        ] {
            let issue = refused(url);
            assert_eq!(issue.path, "sinks.hook.url", "{url}");
            assert!(issue.message.contains(says), "{url}: {issue}");
            assert!(
                issue.message.contains("allow_private = true"),
                "{url}: {issue}"
            );
        }
    }

    #[test]
    fn allow_private_accepts_them_without_a_warning() {
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://metadata.google.internal/",
            "http://127.0.0.1:9000/hook",
        ] {
            let config = crate::load_str(&config_with(url, "allow_private = true"), false)
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            let Some(SinkConfig::Webhook(hook)) = config.sinks.get("hook") else {
                panic!("a webhook sink");
            };
            assert!(hook.allow_private);
            assert_eq!(config.warnings, [], "{url}");
        }
        let config = crate::load_str(&config_with("https://example.com/hook", ""), false).unwrap();
        let Some(SinkConfig::Webhook(hook)) = config.sinks.get("hook") else {
            panic!("a webhook sink");
        };
        assert!(!hook.allow_private, "default false");
    }

    #[test]
    fn loopback_and_private_addresses_are_accepted_with_a_warning() {
        for (url, says) in [
            (
                "http://127.0.0.1:9000/hook",
                "127.0.0.1 is a loopback address",
            ),
            (
                "http://localhost:9000/hook",
                "localhost is a loopback address",
            ),
            ("http://[::1]:9000/hook", "::1 is a loopback address"),
            (
                "http://10.0.0.5/hook",
                "10.0.0.5 is a private-network address",
            ),
            (
                "https://192.168.1.20/hook",
                "192.168.1.20 is a private-network address",
            ),
            (
                "http://[fd12::5]/hook",
                "fd12::5 is a private-network address",
            ),
        ] {
            let warnings = warnings(url, "");
            assert_eq!(warnings.len(), 1, "{url}: {warnings:#?}");
            assert_eq!(warnings[0].path, "sinks.hook.url");
            assert_eq!(warnings[0].line, Some(13));
            assert!(warnings[0].message.contains(says), "{url}: {}", warnings[0]);
            assert!(
                warnings[0].message.contains("allow_private = true"),
                "{}",
                warnings[0]
            );
        }
        assert_eq!(warnings("https://hooks.example.com/in", ""), []);
        assert_eq!(warnings("https://8.8.8.8/in", ""), []);
    }

    #[test]
    fn a_webhook_to_the_own_server_warns() {
        for url in [
            "http://127.0.0.1:18080/ingest/api",
            "http://localhost:18080/admin",
        ] {
            let warnings = warnings(url, "allow_private = true");
            assert_eq!(warnings.len(), 1, "{url}: {warnings:#?}");
            assert!(
                warnings[0].message.contains("this switchyard's own server")
                    && warnings[0].message.contains("127.0.0.1:18080"),
                "{}",
                warnings[0]
            );
        }
        // Another port is another server.
        assert_eq!(
            warnings("http://127.0.0.1:18081/", "allow_private = true"),
            []
        );
        // Listening on every interface: a loopback URL reaches it.
        let text = config_with("http://[::1]:18080/", "allow_private = true")
            .replace("127.0.0.1:18080", "0.0.0.0:18080")
            .replace("[server]\n", "[server]\ninsecure = true\n");
        let config = crate::load_str(&text, false).unwrap();
        assert_eq!(config.warnings.len(), 1, "{:#?}", config.warnings);
        assert!(config.warnings[0].message.contains("own server"));
        // The default listen address is 127.0.0.1:8080.
        let text = config_with("http://127.0.0.1:8080/", "allow_private = true")
            .replace("[server]\nlisten = \"127.0.0.1:18080\"\n", "");
        let config = crate::load_str(&text, false).unwrap();
        assert_eq!(config.warnings.len(), 1, "{:#?}", config.warnings);
    }

    #[test]
    fn environment_overrides_are_checked_too() {
        let text = config_with("https://hooks.example.com/in", "");
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let url = ("SWITCHYARD_SINKS__HOOK__URL", "http://169.254.169.254/");
        let issues = crate::load_str_with_env(&text, false, &env(&[url]))
            .expect_err("an override to the metadata address")
            .issues;
        assert_eq!(issues.len(), 1, "{issues:#?}");
        assert!(
            issues[0].message.contains("allow_private = true")
                && issues[0]
                    .message
                    .contains("set by environment variable SWITCHYARD_SINKS__HOOK__URL"),
            "{}",
            issues[0]
        );
        let allow = ("SWITCHYARD_SINKS__HOOK__ALLOW_PRIVATE", "true");
        let config = crate::load_str_with_env(&text, false, &env(&[url, allow]))
            .expect("allow_private from the environment");
        assert_eq!(config.warnings, []);
    }

    #[test]
    fn a_malformed_url_is_reported_without_its_password() {
        let issue = refused("http://user:s3cr3t@exa mple.com/hook");
        assert_eq!(issue.path, "sinks.hook.url");
        assert!(issue.message.contains("invalid url"), "{issue}");
        assert!(!issue.message.contains("s3cr3t"), "{issue}");
    }

    fn class(text: &str) -> AddressClass {
        classify(text.parse().expect(text))
    }

    #[test]
    fn addresses_are_classified() {
        use AddressClass::*;
        for (ip, expected) in [
            ("169.254.169.254", Metadata),
            ("fd00:ec2::254", Metadata),
            ("100.100.100.200", Metadata),
            ("::ffff:169.254.169.254", Metadata),
            ("169.254.0.1", LinkLocal),
            ("169.254.170.2", LinkLocal),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("::ffff:169.254.1.1", LinkLocal),
            ("127.0.0.1", Loopback),
            ("127.9.9.9", Loopback),
            ("::1", Loopback),
            ("0.0.0.0", Loopback),
            ("::", Loopback),
            ("::ffff:127.0.0.1", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", Private),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("172.32.0.1", Public),
            ("169.255.0.1", Public),
            ("100.128.0.1", Public),
            ("8.8.8.8", Public),
            ("fec0::1", Public),
            ("2001:db8::1", Public),
        ] {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn only_link_local_and_metadata_are_refused() {
        assert!(AddressClass::Metadata.refused());
        assert!(AddressClass::LinkLocal.refused());
        for class in [
            AddressClass::Public,
            AddressClass::Loopback,
            AddressClass::Private,
        ] {
            assert!(!class.refused(), "{class:?}");
        }
        assert!(AddressClass::Loopback.internal());
        assert!(AddressClass::Private.internal());
        assert!(!AddressClass::Public.internal());
    }

    #[test]
    fn metadata_and_local_names() {
        assert!(is_metadata_host("metadata.google.internal"));
        assert!(is_metadata_host("METADATA.google.internal."));
        assert!(is_metadata_host("instance-data"));
        assert!(!is_metadata_host("metadata.example.com"));
        assert!(is_localhost("localhost"));
        assert!(is_localhost("api.localhost."));
        assert!(!is_localhost("localhost.example.com"));
    }
}
