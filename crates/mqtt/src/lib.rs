//! MQTT for switchyard, on rumqttc: MQTT 3.1.1 (the default) or 5 (`protocol = "5"`).
//!
//! * [`sink::build`] — the `mqtt` sink: each event one QoS 1 publish to a topic (a
//!   template), answered [`Outcome::Delivered`] only on its PUBACK (with MQTT 5, a PUBACK
//!   whose reason code is a failure answers a retry or a permanent failure, as the code
//!   says). A connection that breaks fails every publish still waiting; they are retried
//!   on a new connection. With MQTT 5 the event's id, source, kind, key and headers go
//!   as user properties ([`properties`]) and its content type as the content-type
//!   property.
//! * [`source::build`] — the `mqtt` source: QoS 1 subscriptions in a persistent session
//!   (clean session off or, with MQTT 5, clean start off and a session expiry interval;
//!   a stable client id) with manual acks; a message's PUBACK is sent only once
//!   everything up to it is delivered, so a crash makes the broker send it again instead
//!   of losing it. With MQTT 5 the user properties a switchyard sink wrote become the
//!   event's id, kind, key and headers again.
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

/// MQTT 5 user properties the sink sets from the event's fields (the event's own headers
/// follow them, and with CloudEvents in binary mode the attributes before those). The
/// source maps them back. The content type goes in the content-type property.
pub mod properties {
    pub const ID: &str = "switchyard-id";
    pub const SOURCE: &str = "switchyard-source";
    pub const KIND: &str = "switchyard-kind";
    /// The event key when it is text a user property can carry.
    pub const KEY: &str = "switchyard-key";
    /// The event key in base64 when it is not.
    pub const KEY_BASE64: &str = "switchyard-key-base64";
    /// Set by the source on every event: the topic the message was published to.
    pub const TOPIC: &str = "mqtt-topic";
    /// The names the sink writes from the event's fields, which it does not copy again
    /// from the event's headers, and the source does not make headers of.
    pub const ALL: [&str; 6] = [ID, SOURCE, KIND, KEY, KEY_BASE64, TOPIC];

    /// Whether `text` can be an MQTT 5 string as it is: brokers close the connection of
    /// a client that sends one with a control character or a noncharacter (mosquitto
    /// does), which would fail every publish waiting on it.
    pub fn fits(text: &str) -> bool {
        text.len() <= usize::from(u16::MAX)
            && !text.chars().any(|c| {
                c.is_control()
                    || matches!(u32::from(c) & 0xFFFF, 0xFFFE | 0xFFFF)
                    || ('\u{FDD0}'..='\u{FDEF}').contains(&c)
            })
    }
}

/// The broker of a `url`, with the login and the transport it asks for.
struct Target {
    host: String,
    port: u16,
    login: Option<(String, String)>,
    tls: Option<TlsConfiguration>,
}

/// Where and how to connect, from a `url` (`mqtt://[user:password@]host:port`,
/// `mqtts://…` for TLS) and the connector's `ca_file`. The error says what to fix, with
/// the password masked.
fn target(url: &str, ca_file: Option<&str>) -> Result<Target, String> {
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
    let login = credentials.map(|credentials| {
        let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
        (percent_decoded(user), percent_decoded(password))
    });
    let tls = if tls {
        Some(match ca_file {
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
        })
    } else {
        None
    };
    Ok(Target {
        host: host.to_owned(),
        port,
        login,
        tls,
    })
}

/// MQTT 3.1.1 options for `url` (see [`target`]).
pub(crate) fn options(
    url: &str,
    client_id: &str,
    ca_file: Option<&str>,
) -> Result<MqttOptions, String> {
    let target = target(url, ca_file)?;
    let mut options = MqttOptions::new(client_id, target.host, target.port);
    options
        .set_keep_alive(Duration::from_secs(15))
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    if let Some((user, password)) = target.login {
        options.set_credentials(user, password);
    }
    if let Some(tls) = target.tls {
        options.set_transport(Transport::tls_with_config(tls));
    }
    Ok(options)
}

/// MQTT 5 options for `url` (see [`target`]).
pub(crate) fn options_v5(
    url: &str,
    client_id: &str,
    ca_file: Option<&str>,
) -> Result<rumqttc::v5::MqttOptions, String> {
    let target = target(url, ca_file)?;
    let mut options = rumqttc::v5::MqttOptions::new(client_id, target.host, target.port);
    options
        .set_keep_alive(Duration::from_secs(15))
        .set_max_packet_size(Some(MAX_PACKET as u32));
    if let Some((user, password)) = target.login {
        options.set_credentials(user, password);
    }
    if let Some(tls) = target.tls {
        options.set_transport(Transport::tls_with_config(tls));
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

/// [`connection_error`] for MQTT 5.
pub(crate) fn connection_error_v5(url: &str, error: &rumqttc::v5::ConnectionError) -> String {
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as Code;
    use rumqttc::v5::{ConnectionError, StateError};
    let shown = switchyard_config::redact::url(url);
    let code = match error {
        ConnectionError::ConnectionRefused(code)
        | ConnectionError::MqttState(StateError::ConnFail { reason: code }) => Some(*code),
        _ => None,
    };
    let hint = match code {
        Some(Code::BadUserNamePassword | Code::NotAuthorized | Code::BadAuthenticationMethod) => {
            ": check the user and password in `url`"
        }
        Some(Code::ClientIdentifierNotValid | Code::BadClientId) => {
            ": the broker refuses the client id; set `client_id`"
        }
        Some(Code::UnsupportedProtocolVersion | Code::RefusedProtocolVersion) => {
            ": the broker does not speak MQTT 5; set protocol = \"3.1.1\""
        }
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
