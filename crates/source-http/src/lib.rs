//! switchyard-source-http
