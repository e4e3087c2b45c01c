//! switchyard-runtime
