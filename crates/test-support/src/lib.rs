//! switchyard-test-support
