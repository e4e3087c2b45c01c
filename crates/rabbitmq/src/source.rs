//! The `rabbitmq` source.
