//! Helpers for switchyard's tests.
//!
//! * [`WebhookReceiver`] — a local HTTP server that records what it is sent and can be
//!   told, while running, to fail, throttle, hang or drop connections.
//! * [`verify_standard_webhook`] — checks a Standard Webhooks signature. It is written
//!   independently of the webhook sink's signer so that tests cross-check the two.

mod receiver;
mod verify;

pub use receiver::{Behaviour, ReceivedRequest, WebhookReceiver};
pub use verify::{verify_standard_webhook, verify_standard_webhook_at};
