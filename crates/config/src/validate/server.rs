//! `[server]` and the checks of the listener against the rest of the file (exposure
//! beyond loopback, request memory against the http sources' `max_body`).

use serde_json::Value;

use super::walk::{Ctx, Table, check_name};
use crate::{Config, MIN_TOKEN_LEN, ServerConfig, ServerTlsConfig, SourceConfig};

/// `[server]`. The struct is built field by field, so a key added to [`ServerConfig`]
/// does not compile until it is read here.
pub(super) fn server(cx: &mut Ctx<'_>, value: &Value) -> ServerConfig {
    let Some(table) = Table::of::<ServerConfig>(cx, "server", value) else {
        return ServerConfig::default();
    };
    let listen = table.non_empty_string(cx, "listen");
    if let Some(listen) = &listen
        && !valid_listen(listen)
    {
        cx.issue(
            "server.listen",
            format!("invalid address {listen:?}: write host:port, e.g. \"127.0.0.1:8080\" or \"0.0.0.0:8080\""),
        );
    }
    let server = ServerConfig {
        listen: listen.unwrap_or_else(|| ServerConfig::DEFAULT_LISTEN.into()),
        data_dir: table
            .non_empty_string(cx, "data_dir")
            .unwrap_or_else(|| ServerConfig::DEFAULT_DATA_DIR.into()),
        admin_token: token(cx, &table, "admin_token"),
        metrics_token: token(cx, &table, "metrics_token"),
        shutdown_timeout: table
            .duration(cx, "shutdown_timeout", true)
            .unwrap_or(ServerConfig::DEFAULT_SHUTDOWN_TIMEOUT),
        insecure: table.boolean(cx, "insecure").unwrap_or(false),
        max_connections: table
            .positive_usize(cx, "max_connections", "")
            .unwrap_or(ServerConfig::DEFAULT_MAX_CONNECTIONS),
        header_timeout: table
            .duration(cx, "header_timeout", false)
            .unwrap_or(ServerConfig::DEFAULT_HEADER_TIMEOUT),
        body_timeout: table
            .duration(cx, "body_timeout", false)
            .unwrap_or(ServerConfig::DEFAULT_BODY_TIMEOUT),
        idle_timeout: table
            .duration(cx, "idle_timeout", false)
            .unwrap_or(ServerConfig::DEFAULT_IDLE_TIMEOUT),
        max_request_memory: table
            .size(cx, "max_request_memory")
            .unwrap_or(ServerConfig::DEFAULT_MAX_REQUEST_MEMORY),
        tls: table
            .get("tls")
            .and_then(|value| server_tls(cx, &table.child("tls"), value)),
        dead_letter: match table.non_empty_string(cx, "dead_letter") {
            Some(dead_letter) => {
                check_name(cx, "server.dead_letter", "queue", &dead_letter);
                dead_letter
            }
            None => ServerConfig::DEFAULT_DEAD_LETTER.into(),
        },
    };
    table.finish(cx);
    server
}

/// `[server.tls]`: both files named; they are read (and their contents checked) at start.
fn server_tls(cx: &mut Ctx<'_>, path: &str, value: &Value) -> Option<ServerTlsConfig> {
    let table = Table::of::<ServerTlsConfig>(cx, path, value)?;
    let cert = table.required_string(cx, "cert", "the PEM file of the certificate chain");
    let key = table.required_string(cx, "key", "the PEM file of the private key");
    table.finish(cx);
    Some(ServerTlsConfig {
        cert: cert?,
        key: key?,
    })
}

/// A bearer token: absent, or at least [`MIN_TOKEN_LEN`] characters. The value is never
/// echoed.
pub(super) fn token(cx: &mut Ctx<'_>, table: &Table<'_>, key: &str) -> Option<String> {
    let token = table.non_empty_string(cx, key)?;
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        cx.issue(
            &table.child(key),
            "the token holds spaces, control or non-ASCII characters, which a bearer token \
             cannot carry (no client could send it); use visible ASCII characters only",
        );
        return None;
    }
    if token.len() < MIN_TOKEN_LEN {
        cx.issue(
            &table.child(key),
            format!(
                "the token is {} characters long; use at least {MIN_TOKEN_LEN} random characters \
                 (e.g. the output of `openssl rand -hex 32`)",
                token.len()
            ),
        );
        return None;
    }
    Some(token)
}

/// Whether `listen` only accepts connections from this machine.
pub(crate) fn listen_is_loopback(listen: &str) -> bool {
    let Some((host, _)) = listen.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An ingest request holds its body and what it expands to (about twice the body) within
/// `server.max_request_memory`: a `max_body` that cannot fit would refuse every large body.
pub(super) fn request_memory(cx: &mut Ctx<'_>, config: &Config) {
    let budget = config.server.max_request_memory.0;
    for (name, source) in &config.sources {
        if let SourceConfig::Http(http) = source
            && http.max_body.0.saturating_mul(2) > budget
        {
            cx.issue(
                &format!("sources.{name}.max_body"),
                format!(
                    "a request of max_body ({} bytes) holds about twice that in memory, more than \
                     server.max_request_memory ({budget} bytes); lower max_body or raise \
                     server.max_request_memory to at least {}",
                    http.max_body.0,
                    http.max_body.0.saturating_mul(2)
                ),
            );
        }
    }
}

/// Listening beyond loopback needs a token on every door, or `server.insecure = true`.
pub(super) fn exposure(cx: &mut Ctx<'_>, config: &Config) {
    let server = &config.server;
    // An invalid address is reported on its own.
    if server.insecure || listen_is_loopback(&server.listen) || !valid_listen(&server.listen) {
        return;
    }
    let mut open: Vec<String> = config
        .sources
        .iter()
        .filter_map(|(name, source)| match source {
            SourceConfig::Http(http) if http.token.is_none() => {
                Some(format!("sources.{name}.token"))
            }
            _ => None,
        })
        .collect();
    if server.admin_token.is_none() {
        open.insert(0, "server.admin_token".to_owned());
    }
    if open.is_empty() {
        return;
    }
    cx.issue(
        "server.listen",
        format!(
            "{} accepts connections from other machines, but {} not set: anyone who can reach \
             the port could send events or use the admin API; set {}, listen on 127.0.0.1, or \
             set server.insecure = true if that is really meant",
            server.listen,
            open.join(", ") + if open.len() == 1 { " is" } else { " are" },
            if open.len() == 1 { "it" } else { "them" },
        ),
    );
}

pub(crate) fn valid_listen(listen: &str) -> bool {
    let Some((host, port)) = listen.rsplit_once(':') else {
        return false;
    };
    !host.is_empty() && port.parse::<u16>().is_ok()
}
