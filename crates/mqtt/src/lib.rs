//! MQTT for switchyard, on rumqttc (MQTT 3.1.1).
//!
//! * [`sink::build`] — the `mqtt` sink: each event one QoS 1 publish to a topic (a
//!   template), answered [`Outcome::Delivered`] only on its PUBACK. A connection that
//!   breaks fails every publish still waiting; they are retried on a new connection.
//! * [`source::build`] — the `mqtt` source: QoS 1 subscriptions in a persistent session
//!   (clean session off, a stable client id) with manual acks; a message's PUBACK is
//!   sent only once everything up to it is delivered, so a crash makes the broker send
//!   it again instead of losing it.
//!
//! docs/decisions/0026-mqtt-connector.md has the design and why rumqttc.
//!
//! [`Outcome::Delivered`]: switchyard_connector::Outcome::Delivered

pub mod sink;
pub mod source;

use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};

/// Largest MQTT packet switchyard sends or takes (a hostile broker cannot make it hold
/// more for one message).
pub const MAX_PACKET: usize = 16 * 1024 * 1024;

/// Where and how to connect, from a `url` (`mqtt://[user:password@]host:port`,
/// `mqtts://…` for TLS) and the connector's `ca_file`. The error says what to fix, with
/// the password masked.
pub(crate) fn options(
    url: &str,
    client_id: &str,
    ca_file: Option<&str>,
) -> Result<MqttOptions, String> {
    let shown = switchyard_config::redact::url(url);
    let invalid =
        || format!("invalid url {shown:?}: write mqtt://[user:password@]host:port or mqtts://…");
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else {
        return Err(invalid());
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (credentials, host_port) = match authority.rsplit_once('@') {
        Some((credentials, host_port)) => (Some(credentials), host_port),
        None => (None, authority),
    };
    let (host, port) = host_port.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_keep_alive(Duration::from_secs(15))
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    if let Some(credentials) = credentials {
        let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
        options.set_credentials(percent_decoded(user), percent_decoded(password));
    }
    if tls {
        let config = match ca_file {
            Some(path) => TlsConfiguration::Simple {
                ca: std::fs::read(path)
                    .map_err(|e| format!("cannot read ca_file {path:?}: {e}"))?,
                alpn: None,
                client_auth: None,
            },
            // The system's roots; loading them panics inside the client when there are
            // none, so that is turned into an error here.
            None => std::panic::catch_unwind(TlsConfiguration::default).map_err(|_| {
                "cannot load the system's CA certificates for mqtts://: set ca_file".to_owned()
            })?,
        };
        options.set_transport(Transport::tls_with_config(config));
    }
    Ok(options)
}

/// `%XX` escapes of a URL's user or password decoded (an `@` or `:` in a password).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a broken connection means, said with what to do.
pub(crate) fn connection_error(url: &str, error: &rumqttc::ConnectionError) -> String {
    let shown = switchyard_config::redact::url(url);
    let hint = match error {
        rumqttc::ConnectionError::ConnectionRefused(code) => match code {
            rumqttc::ConnectReturnCode::BadUserNamePassword
            | rumqttc::ConnectReturnCode::NotAuthorized => ": check the user and password in `url`",
            rumqttc::ConnectReturnCode::BadClientId => {
                ": the broker refuses the client id; set `client_id`"
            }
            _ => "",
        },
        _ => "",
    };
    format!("mqtt broker {shown}: {error}{hint}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_gives_host_port_and_credentials() {
        let o = super::options("mqtt://u%40x:p%3Aw@broker.example:1884", "c1", None).unwrap();
        assert_eq!(o.broker_address(), ("broker.example".to_owned(), 1884));
        let login = o.credentials().expect("credentials");
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("u@x", "p:w")
        );
        assert_eq!(o.client_id(), "c1");
        let e = super::options("http://u:secret@h:1", "c", None).unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        assert!(super::options("mqtt://h", "c", None).is_err());
    }
}
