//! RabbitMQ for switchyard, on lapin (AMQP 0-9-1).
//!
//! * [`sink::build`] — the `rabbitmq` sink: each event one persistent message published
//!   to an exchange (mandatory), answered [`Outcome::Delivered`] only on the broker's
//!   publisher confirm; a message the broker returns as unroutable is a permanent error
//!   with the broker's reason, a nack (a full queue with `x-overflow = reject-publish`,
//!   a resource alarm) and a lost connection are retried.
//! * [`source::build`] — the `rabbitmq` source: one consumer of a queue with manual acks
//!   and a prefetch; deliveries are acknowledged (`multiple`) only below the reader's low
//!   watermark, so what a crash interrupts is redelivered by the broker.
//!
//! docs/decisions/0025-rabbitmq-connector.md has the design.
//!
//! [`Outcome::Delivered`]: switchyard_connector::Outcome::Delivered

pub mod sink;
pub mod source;

use lapin::tcp::OwnedTLSConfig;
use lapin::{Connection, ConnectionProperties};

/// Message headers the sink sets from the event's fields (the event's own headers follow
/// them). The source maps them back.
pub mod headers {
    pub const ID: &str = "switchyard-id";
    pub const SOURCE: &str = "switchyard-source";
    pub const KIND: &str = "switchyard-kind";
    pub const KEY: &str = "switchyard-key";
    /// The names above, which the sink does not copy again from the event's headers.
    pub const ALL: [&str; 4] = [ID, SOURCE, KIND, KEY];
}

/// Most headers the source takes from one message: a peer cannot make an event of
/// unbounded size out of many small headers.
pub const MAX_HEADERS: usize = 64;

/// Checks that `ca_file` (when given) can be read, so a wrong path stops the start.
pub(crate) fn check_ca_file(ca_file: Option<&str>) -> Result<(), switchyard_connector::BuildError> {
    match ca_file {
        Some(path) => std::fs::read_to_string(path).map(drop).map_err(|e| {
            switchyard_connector::BuildError::new(format!(
                "cannot read ca_file {path:?}: {e}; give the PEM file of the CA that signed the \
                 broker's certificate, or leave ca_file out to use the system's roots"
            ))
        }),
        None => Ok(()),
    }
}

/// Connects to `url`, trusting the CA in the PEM file `ca_file` (for `amqps://`) when
/// given. The error says what failed, with the URL's password masked.
pub(crate) async fn connect(
    url: &str,
    ca_file: Option<&str>,
    name: &str,
) -> Result<Connection, String> {
    let shown = switchyard_config::redact::url(url);
    let mut tls = OwnedTLSConfig::default();
    if let Some(path) = ca_file {
        tls.cert_chain = Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read ca_file {path:?}: {e}"))?,
        );
    }
    let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
    let properties =
        ConnectionProperties::default().with_connection_name(format!("switchyard-{name}").into());
    Connection::connect_with_config(url, properties, tls, runtime)
        .await
        .map_err(|e| {
            let e = switchyard_config::redact::text(&e.to_string()).into_owned();
            let hint = if e.contains("ACCESS_REFUSED") || e.contains("403") {
                ": check the user and password in `url`"
            } else if e.contains("NOT_ALLOWED") || e.contains("vhost") {
                ": check the vhost at the end of `url` (the default vhost is %2f) and the user's permissions on it"
            } else {
                ""
            };
            format!("cannot connect to RabbitMQ at {shown}: {e}{hint}")
        })
}
