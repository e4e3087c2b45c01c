//! switchyard-ack
