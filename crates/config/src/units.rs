//! Sizes written like `"64MiB"`.
pub use bytesize_compat::ByteSize;
mod bytesize_compat {
    /// A size in bytes; parsed from `"64MiB"`, `"1GiB"`, `"500KB"` or a plain integer.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    pub struct ByteSize(pub u64);
}
