//! switchyard-log
