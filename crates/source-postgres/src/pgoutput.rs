//! Decoding of pgoutput logical replication messages, protocol versions 1 and 2.
//!
//! The input of [`decode`] is the payload of one XLogData message of the replication
//! stream; the output is a [`Message`]. Protocol version 2 adds the streaming of large
//! transactions before they commit: between a [`Message::StreamStart`] and a
//! [`Message::StreamStop`] every change, relation, type and logical message carries the
//! xid of its (sub)transaction right after its tag; decode those with [`decode_streamed`]. The layout is the one documented in the
//! Postgres manual, "Logical Replication Message Formats": big-endian integers,
//! NUL-terminated strings, and tuples as a column count followed by one tagged datum per
//! column.
//!
//! Architecture invariant: pure. No IO, no async, and no panic on any input: the bytes
//! come from the network, so every read is bounds-checked and a malformed message is a
//! [`DecodeError`] that names the message and the field.

/// One decoded pgoutput message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// `B`: a transaction starts. `final_lsn` is the LSN of its commit record.
    Begin {
        /// LSN of the transaction's commit record (equals the Commit's `commit_lsn`).
        final_lsn: u64,
        /// Commit time in microseconds since 2000-01-01 00:00:00 UTC.
        commit_ts_us: i64,
        /// Transaction id.
        xid: u32,
    },
    /// `C`: the transaction started by the last `Begin` committed.
    Commit {
        /// Unused by Postgres so far; always 0.
        flags: u8,
        /// LSN of the commit record.
        commit_lsn: u64,
        /// LSN just past the commit record: the position to confirm to the slot once
        /// every event of the transaction is acknowledged.
        end_lsn: u64,
        /// Commit time in microseconds since 2000-01-01 00:00:00 UTC.
        commit_ts_us: i64,
    },
    /// `O`: the transaction was replicated to this server from another origin.
    Origin {
        /// Commit LSN on the origin server.
        commit_lsn: u64,
        /// Name of the origin.
        name: String,
    },
    /// `R`: the shape of a table, sent before its first change on each connection and
    /// again after it changes.
    Relation(Relation),
    /// `Y`: a non-built-in type used by a following Relation.
    Type {
        /// Type OID.
        oid: u32,
        /// Schema of the type; empty for `pg_catalog`.
        namespace: String,
        /// Type name (`pg_type.typname`).
        name: String,
    },
    /// `I`: a row was inserted.
    Insert {
        /// OID of the relation, as announced by a previous [`Message::Relation`].
        relation: u32,
        /// The new row.
        new: Tuple<'a>,
    },
    /// `U`: a row was updated.
    Update {
        /// OID of the relation, as announced by a previous [`Message::Relation`].
        relation: u32,
        /// The old row: absent unless the replica identity is FULL or the key changed.
        old: Option<OldTuple<'a>>,
        /// The new row.
        new: Tuple<'a>,
    },
    /// `D`: a row was deleted.
    Delete {
        /// OID of the relation, as announced by a previous [`Message::Relation`].
        relation: u32,
        /// The deleted row: its key only, or all of it with REPLICA IDENTITY FULL.
        old: OldTuple<'a>,
    },
    /// `T`: tables were truncated.
    Truncate {
        /// OIDs of the truncated relations.
        relations: Vec<u32>,
        /// `TRUNCATE … CASCADE`.
        cascade: bool,
        /// `TRUNCATE … RESTART IDENTITY`.
        restart_identity: bool,
    },
    /// `M`: a message written with `pg_logical_emit_message`.
    LogicalMessage {
        /// Whether the message belongs to a transaction (else it was sent at once).
        transactional: bool,
        /// LSN of the message.
        lsn: u64,
        /// The prefix given by the writer.
        prefix: String,
        /// The content, uninterpreted.
        content: Vec<u8>,
    },
    /// `S`: a block of a large transaction's changes follows, sent before the
    /// transaction ends (protocol version 2). Blocks of several transactions may take
    /// turns, with whole transactions between them.
    StreamStart {
        /// The top-level transaction the block belongs to.
        xid: u32,
        /// The transaction's first block.
        first_segment: bool,
    },
    /// `E`: the block started by the last `StreamStart` ends.
    StreamStop,
    /// `c`: a streamed transaction committed: its changes are final.
    StreamCommit {
        /// The top-level transaction.
        xid: u32,
        /// Unused by Postgres so far; always 0.
        flags: u8,
        /// LSN of the commit record.
        commit_lsn: u64,
        /// LSN just past the commit record.
        end_lsn: u64,
        /// Commit time in microseconds since 2000-01-01 00:00:00 UTC.
        commit_ts_us: i64,
    },
    /// `A`: a streamed transaction, or one of its subtransactions, rolled back.
    StreamAbort {
        /// The top-level transaction.
        xid: u32,
        /// The transaction that rolled back: `xid` itself, or a subtransaction whose
        /// changes (and only those) are void.
        subxid: u32,
    },
    /// A message type this decoder does not know (e.g. the two-phase messages of
    /// protocol version 3). Skipping it is the caller's choice.
    Unknown(u8),
}

/// The shape of a table, from a `R` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    /// Relation OID; changes refer to the table by it.
    pub oid: u32,
    /// Schema name; empty for `pg_catalog` (see [`Relation::schema`]).
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// `pg_class.relreplident`: `b'd'` default (primary key), `b'n'` nothing,
    /// `b'f'` full, `b'i'` index.
    pub replica_identity: u8,
    /// The columns, in the order of the datums of every tuple of this relation.
    pub columns: Vec<Column>,
}

impl Relation {
    /// The schema name, with the empty namespace the protocol uses for `pg_catalog`
    /// spelled out.
    pub fn schema(&self) -> &str {
        if self.namespace.is_empty() {
            "pg_catalog"
        } else {
            &self.namespace
        }
    }

    /// `schema.table`, unquoted, as written in the config's `tables` list.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema(), self.name)
    }
}

/// One column of a [`Relation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// Whether the column is part of the replica identity (flags bit 1). With
    /// REPLICA IDENTITY FULL Postgres flags every column.
    pub key: bool,
    /// Column name.
    pub name: String,
    /// OID of the column's type.
    pub type_oid: u32,
    /// `atttypmod`, e.g. the length of a `varchar(n)`; -1 when there is none.
    pub type_modifier: i32,
}

/// The old row of an update or delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OldTuple<'a> {
    /// `K`: only the replica identity columns carry values; the others are
    /// [`Datum::Null`] placeholders and mean "not sent", not NULL.
    Key(Tuple<'a>),
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full(Tuple<'a>),
}

impl<'a> OldTuple<'a> {
    /// The datums, whichever kind of old tuple this is.
    pub fn tuple(&self) -> &Tuple<'a> {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// The datums of one row, one per column of its [`Relation`], in column order. Values
/// borrow from the message they were decoded from: a row costs one allocation, not one
/// per column.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tuple<'a>(pub Vec<Datum<'a>>);

/// One column value of a [`Tuple`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datum<'a> {
    /// `n`: SQL NULL.
    Null,
    /// `u`: an unchanged value stored out of line (TOAST) that Postgres did not send.
    /// The value is unknown, not NULL.
    Unchanged,
    /// `t`: the value in the type's text output format.
    Text(&'a str),
    /// `b`: the value in the type's binary format (only with the `binary` option).
    Binary(&'a [u8]),
}

/// Why a pgoutput message could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The XLogData payload had no bytes at all.
    #[error("empty pgoutput message; the replication stream is corrupt or not pgoutput")]
    Empty,
    /// The message ended before a field was complete.
    #[error(
        "pgoutput {message} message is truncated in {field}; check that the slot uses the \
         pgoutput plugin with proto_version '1' or '2'"
    )]
    Truncated {
        /// The message kind, e.g. `Relation`.
        message: &'static str,
        /// The field that was cut short, e.g. `column 2 name`.
        field: String,
    },
    /// A field held a value the protocol does not allow.
    #[error(
        "pgoutput {message} message has an invalid {field}: {detail}; check that the slot \
         uses the pgoutput plugin with proto_version '1' or '2'"
    )]
    Invalid {
        /// The message kind, e.g. `Insert`.
        message: &'static str,
        /// The offending field.
        field: String,
        /// What was wrong with it.
        detail: String,
    },
    /// A string or text value was not UTF-8.
    #[error(
        "pgoutput {message} message has {field} that is not UTF-8; switchyard needs a \
         database with ENCODING 'UTF8'"
    )]
    NotUtf8 {
        /// The message kind.
        message: &'static str,
        /// The field holding the bytes.
        field: String,
    },
    /// The message was complete but more bytes followed.
    #[error(
        "pgoutput {message} message has {count} unexpected trailing bytes; check that the \
         slot uses the pgoutput plugin with proto_version '1' or '2'"
    )]
    TrailingBytes {
        /// The message kind.
        message: &'static str,
        /// How many bytes were left over.
        count: usize,
    },
}

/// Decodes one pgoutput (protocol version 1) message: the payload of an XLogData.
///
/// Never panics. An unknown message type is [`Message::Unknown`], not an error, so a
/// caller can skip what it does not need; a known type with a malformed body is an
/// error naming the message and field.
pub fn decode(buf: &[u8]) -> Result<Message<'_>, DecodeError> {
    decode_inner(buf, false).map(|(_, message)| message)
}

/// Decodes one message of a stream block (between [`Message::StreamStart`] and
/// [`Message::StreamStop`]), returning the xid of the (sub)transaction it belongs to
/// with it. The block's own control messages carry none: their xid is `None`.
pub fn decode_streamed(buf: &[u8]) -> Result<(Option<u32>, Message<'_>), DecodeError> {
    decode_inner(buf, true)
}

fn decode_inner(buf: &[u8], streamed: bool) -> Result<(Option<u32>, Message<'_>), DecodeError> {
    let (&tag, body) = buf.split_first().ok_or(DecodeError::Empty)?;
    let message = match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        b'S' => "Stream Start",
        b'E' => "Stream Stop",
        b'c' => "Stream Commit",
        b'A' => "Stream Abort",
        other => return Ok((None, Message::Unknown(other))),
    };
    let mut r = Reader { buf: body, message };
    // Inside a stream block the data messages name their (sub)transaction first.
    let xid = if streamed && matches!(tag, b'R' | b'Y' | b'I' | b'U' | b'D' | b'T' | b'M') {
        Some(r.u32("xid")?)
    } else {
        None
    };
    let decoded = match tag {
        b'B' => Message::Begin {
            final_lsn: r.u64("final LSN")?,
            commit_ts_us: r.i64("commit timestamp")?,
            xid: r.u32("xid")?,
        },
        b'C' => Message::Commit {
            flags: r.u8("flags")?,
            commit_lsn: r.u64("commit LSN")?,
            end_lsn: r.u64("end LSN")?,
            commit_ts_us: r.i64("commit timestamp")?,
        },
        b'O' => Message::Origin {
            commit_lsn: r.u64("commit LSN")?,
            name: r.cstr("origin name")?,
        },
        b'R' => Message::Relation(r.relation()?),
        b'Y' => Message::Type {
            oid: r.u32("type OID")?,
            namespace: r.cstr("namespace")?,
            name: r.cstr("type name")?,
        },
        b'I' => {
            let relation = r.u32("relation OID")?;
            match r.u8("tuple tag")? {
                b'N' => {}
                other => {
                    return Err(r.invalid("tuple tag", format!("expected 'N', got {other:#04x}")));
                }
            }
            Message::Insert {
                relation,
                new: r.tuple("new tuple")?,
            }
        }
        b'U' => {
            let relation = r.u32("relation OID")?;
            let (old, new_tag) = match r.u8("tuple tag")? {
                b'K' => (
                    Some(OldTuple::Key(r.tuple("old key tuple")?)),
                    r.u8("new tuple tag")?,
                ),
                b'O' => (
                    Some(OldTuple::Full(r.tuple("old tuple")?)),
                    r.u8("new tuple tag")?,
                ),
                other => (None, other),
            };
            if new_tag != b'N' {
                return Err(r.invalid(
                    "tuple tag",
                    format!("expected 'K', 'O' or 'N', got {new_tag:#04x}"),
                ));
            }
            Message::Update {
                relation,
                old,
                new: r.tuple("new tuple")?,
            }
        }
        b'D' => {
            let relation = r.u32("relation OID")?;
            let old = match r.u8("tuple tag")? {
                b'K' => OldTuple::Key(r.tuple("old key tuple")?),
                b'O' => OldTuple::Full(r.tuple("old tuple")?),
                other => {
                    return Err(r.invalid(
                        "tuple tag",
                        format!("expected 'K' or 'O', got {other:#04x}"),
                    ));
                }
            };
            Message::Delete { relation, old }
        }
        b'T' => {
            let count = r.u32("relation count")?;
            let options = r.u8("options")?;
            // Each OID takes four bytes, so the remaining length bounds the allocation
            // whatever count claims.
            let mut relations = Vec::with_capacity((count as usize).min(r.buf.len() / 4));
            for i in 0..count {
                relations.push(r.u32_with(|| format!("relation OID {i}"))?);
            }
            Message::Truncate {
                relations,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
            }
        }
        b'M' => {
            let flags = r.u8("flags")?;
            let lsn = r.u64("LSN")?;
            let prefix = r.cstr("prefix")?;
            let len = r.length("content length")?;
            Message::LogicalMessage {
                transactional: flags & 1 != 0,
                lsn,
                prefix,
                content: r.take(len, || "content".to_owned())?.to_vec(),
            }
        }
        b'S' => Message::StreamStart {
            xid: r.u32("xid")?,
            first_segment: r.u8("first segment")? == 1,
        },
        b'E' => Message::StreamStop,
        b'c' => Message::StreamCommit {
            xid: r.u32("xid")?,
            flags: r.u8("flags")?,
            commit_lsn: r.u64("commit LSN")?,
            end_lsn: r.u64("end LSN")?,
            commit_ts_us: r.i64("commit timestamp")?,
        },
        b'A' => Message::StreamAbort {
            xid: r.u32("xid")?,
            subxid: r.u32("subtransaction xid")?,
        },
        // Every tag with a name is decoded above.
        other => Message::Unknown(other),
    };
    if !r.buf.is_empty() {
        return Err(DecodeError::TrailingBytes {
            message,
            count: r.buf.len(),
        });
    }
    Ok((xid, decoded))
}

/// A cursor over a message body that turns every short read into a [`DecodeError`].
struct Reader<'a> {
    buf: &'a [u8],
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: impl FnOnce() -> String) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                message: self.message,
                field: field(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(
        &mut self,
        field: impl FnOnce() -> String,
    ) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, field)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn invalid(&self, field: impl Into<String>, detail: String) -> DecodeError {
        DecodeError::Invalid {
            message: self.message,
            field: field.into(),
            detail,
        }
    }

    fn u8(&mut self, field: &str) -> Result<u8, DecodeError> {
        self.u8_with(|| field.to_owned())
    }

    fn u8_with(&mut self, field: impl FnOnce() -> String) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16_with(&mut self, field: impl FnOnce() -> String) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_be_bytes)
    }

    fn u32(&mut self, field: &str) -> Result<u32, DecodeError> {
        self.u32_with(|| field.to_owned())
    }

    fn u32_with(&mut self, field: impl FnOnce() -> String) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn i32_with(&mut self, field: impl FnOnce() -> String) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_be_bytes)
    }

    fn u64(&mut self, field: &str) -> Result<u64, DecodeError> {
        self.array(|| field.to_owned()).map(u64::from_be_bytes)
    }

    fn i64(&mut self, field: &str) -> Result<i64, DecodeError> {
        self.array(|| field.to_owned()).map(i64::from_be_bytes)
    }

    /// An Int32 byte count, which the protocol never sends negative here.
    fn length(&mut self, field: &str) -> Result<usize, DecodeError> {
        self.length_with(|| field.to_owned())
    }

    fn length_with(&mut self, field: impl Fn() -> String) -> Result<usize, DecodeError> {
        let len = self.i32_with(&field)?;
        usize::try_from(len).map_err(|_| self.invalid(field(), format!("negative length {len}")))
    }

    fn cstr(&mut self, field: &str) -> Result<String, DecodeError> {
        self.cstr_with(|| field.to_owned())
    }

    fn cstr_with(&mut self, field: impl Fn() -> String) -> Result<String, DecodeError> {
        let Some(nul) = self.buf.iter().position(|&b| b == 0) else {
            return Err(DecodeError::Truncated {
                message: self.message,
                field: format!("{} (no terminating NUL)", field()),
            });
        };
        let bytes = self.take(nul + 1, &field)?;
        self.utf8(&bytes[..nul], field)
    }

    fn utf8(&self, bytes: &[u8], field: impl Fn() -> String) -> Result<String, DecodeError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NotUtf8 {
            message: self.message,
            field: field(),
        })
    }

    fn relation(&mut self) -> Result<Relation, DecodeError> {
        let oid = self.u32("relation OID")?;
        let namespace = self.cstr("namespace")?;
        let name = self.cstr("relation name")?;
        let replica_identity = self.u8("replica identity")?;
        if !matches!(replica_identity, b'd' | b'n' | b'f' | b'i') {
            return Err(self.invalid(
                "replica identity",
                format!("expected 'd', 'n', 'f' or 'i', got {replica_identity:#04x}"),
            ));
        }
        let count = self.u16_with(|| "column count".to_owned())?;
        // A column takes at least 10 bytes (flags, empty name, OID, modifier).
        let mut columns = Vec::with_capacity(usize::from(count).min(self.buf.len() / 10));
        for i in 0..count {
            let flags = self.u8(&format!("column {i} flags"))?;
            columns.push(Column {
                key: flags & 1 != 0,
                name: self.cstr_with(|| format!("column {i} name"))?,
                type_oid: self.u32_with(|| format!("column {i} type OID"))?,
                type_modifier: self.i32_with(|| format!("column {i} type modifier"))?,
            });
        }
        Ok(Relation {
            oid,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }

    fn tuple(&mut self, which: &'static str) -> Result<Tuple<'a>, DecodeError> {
        let count = self.u16_with(|| format!("{which} column count"))?;
        // Every datum takes at least its one-byte tag.
        let mut datums = Vec::with_capacity(usize::from(count).min(self.buf.len()));
        for i in 0..count {
            // Field names are formatted only for an error: this runs for every column.
            let datum = match self.u8_with(|| format!("{which} column {i} tag"))? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                tag @ (b't' | b'b') => {
                    let len = self.length_with(|| format!("{which} column {i} length"))?;
                    let bytes = self.take(len, || format!("{which} column {i} value"))?;
                    if tag == b't' {
                        Datum::Text(std::str::from_utf8(bytes).map_err(|_| {
                            DecodeError::NotUtf8 {
                                message: self.message,
                                field: format!("{which} column {i} value"),
                            }
                        })?)
                    } else {
                        Datum::Binary(bytes)
                    }
                }
                other => {
                    return Err(self.invalid(
                        format!("{which} column {i} tag"),
                        format!("expected 'n', 'u', 't' or 'b', got {other:#04x}"),
                    ));
                }
            };
            datums.push(datum);
        }
        Ok(Tuple(datums))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds message bodies the way pgoutput writes them.
    #[derive(Default)]
    struct Enc(Vec<u8>);

    impl Enc {
        fn new(tag: u8) -> Self {
            Enc(vec![tag])
        }
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn u16(mut self, v: u16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i64(mut self, v: i64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn cstr(mut self, s: &str) -> Self {
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(0);
            self
        }
        fn bytes(mut self, b: &[u8]) -> Self {
            self.0.extend_from_slice(b);
            self
        }
        fn tuple(mut self, datums: &[Datum]) -> Self {
            self = self.u16(datums.len() as u16);
            for d in datums {
                self = match d {
                    Datum::Null => self.u8(b'n'),
                    Datum::Unchanged => self.u8(b'u'),
                    Datum::Text(s) => self.u8(b't').i32(s.len() as i32).bytes(s.as_bytes()),
                    Datum::Binary(b) => self.u8(b'b').i32(b.len() as i32).bytes(b),
                };
            }
            self
        }
        fn done(self) -> Vec<u8> {
            self.0
        }
    }

    fn text(s: &str) -> Datum<'_> {
        Datum::Text(s)
    }

    fn orders_relation_bytes() -> Vec<u8> {
        Enc::new(b'R')
            .u32(16385)
            .cstr("public")
            .cstr("orders")
            .u8(b'd')
            .u16(2)
            .u8(1)
            .cstr("id")
            .u32(23)
            .i32(-1)
            .u8(0)
            .cstr("note")
            .u32(1043)
            .i32(68)
            .done()
    }

    #[test]
    fn begin() {
        let buf = Enc::new(b'B')
            .u64(0x16B3748)
            .i64(817_380_000_123_456)
            .u32(741)
            .done();
        assert_eq!(
            decode(&buf).unwrap(),
            Message::Begin {
                final_lsn: 0x16B3748,
                commit_ts_us: 817_380_000_123_456,
                xid: 741
            }
        );
    }

    #[test]
    fn commit() {
        let buf = Enc::new(b'C')
            .u8(0)
            .u64(0x16B3748)
            .u64(0x16B3778)
            .i64(-5)
            .done();
        assert_eq!(
            decode(&buf).unwrap(),
            Message::Commit {
                flags: 0,
                commit_lsn: 0x16B3748,
                end_lsn: 0x16B3778,
                commit_ts_us: -5
            }
        );
    }

    #[test]
    fn origin() {
        let buf = Enc::new(b'O').u64(42).cstr("pg_16400").done();
        assert_eq!(
            decode(&buf).unwrap(),
            Message::Origin {
                commit_lsn: 42,
                name: "pg_16400".into()
            }
        );
    }

    #[test]
    fn relation() {
        let Message::Relation(rel) = decode(&orders_relation_bytes()).unwrap() else {
            panic!("expected a relation");
        };
        assert_eq!(rel.oid, 16385);
        assert_eq!(rel.qualified_name(), "public.orders");
        assert_eq!(rel.replica_identity, b'd');
        assert_eq!(
            rel.columns,
            vec![
                Column {
                    key: true,
                    name: "id".into(),
                    type_oid: 23,
                    type_modifier: -1
                },
                Column {
                    key: false,
                    name: "note".into(),
                    type_oid: 1043,
                    type_modifier: 68
                },
            ]
        );
    }

    #[test]
    fn relation_in_pg_catalog_has_an_empty_namespace() {
        let buf = Enc::new(b'R')
            .u32(1)
            .cstr("")
            .cstr("t")
            .u8(b'n')
            .u16(0)
            .done();
        let Message::Relation(rel) = decode(&buf).unwrap() else {
            panic!("expected a relation");
        };
        assert_eq!(rel.schema(), "pg_catalog");
        assert!(rel.columns.is_empty());
    }

    #[test]
    fn relation_with_a_bad_replica_identity_is_invalid() {
        let buf = Enc::new(b'R')
            .u32(1)
            .cstr("s")
            .cstr("t")
            .u8(b'x')
            .u16(0)
            .done();
        let err = decode(&buf).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Invalid { message: "Relation", field, .. } if field == "replica identity"),
            "{err:?}"
        );
    }

    #[test]
    fn type_message() {
        let buf = Enc::new(b'Y').u32(16390).cstr("public").cstr("mood").done();
        assert_eq!(
            decode(&buf).unwrap(),
            Message::Type {
                oid: 16390,
                namespace: "public".into(),
                name: "mood".into()
            }
        );
    }

    #[test]
    fn insert_with_every_datum_kind() {
        let datums = [
            Datum::Null,
            Datum::Unchanged,
            text("héllo"),
            Datum::Binary(&[0, 1, 255]),
        ];
        let buf = Enc::new(b'I').u32(16385).u8(b'N').tuple(&datums).done();
        assert_eq!(
            decode(&buf).unwrap(),
            Message::Insert {
                relation: 16385,
                new: Tuple(datums.to_vec())
            }
        );
    }

    #[test]
    fn insert_with_an_empty_text_value() {
        let buf = Enc::new(b'I').u32(1).u8(b'N').tuple(&[text("")]).done();
        assert_eq!(
            decode(&buf).unwrap(),
            Message::Insert {
                relation: 1,
                new: Tuple(vec![text("")])
            }
        );
    }

    #[test]
    fn update_without_old_tuple() {
        let buf = Enc::new(b'U')
            .u32(7)
            .u8(b'N')
            .tuple(&[text("1"), Datum::Unchanged])
            .done();
        assert_eq!(
            decode(&buf).unwrap(),
            Message::Update {
                relation: 7,
                old: None,
                new: Tuple(vec![text("1"), Datum::Unchanged])
            }
        );
    }

    #[test]
    fn update_with_key_and_full_old_tuples() {
        let key = Enc::new(b'U')
            .u32(7)
            .u8(b'K')
            .tuple(&[text("1"), Datum::Null])
            .u8(b'N')
            .tuple(&[text("2"), text("x")])
            .done();
        assert_eq!(
            decode(&key).unwrap(),
            Message::Update {
                relation: 7,
                old: Some(OldTuple::Key(Tuple(vec![text("1"), Datum::Null]))),
                new: Tuple(vec![text("2"), text("x")])
            }
        );
        let full = Enc::new(b'U')
            .u32(7)
            .u8(b'O')
            .tuple(&[text("1"), text("w")])
            .u8(b'N')
            .tuple(&[text("1"), text("x")])
            .done();
        let Message::Update {
            old: Some(OldTuple::Full(old)),
            ..
        } = decode(&full).unwrap()
        else {
            panic!("expected an update with a full old tuple");
        };
        assert_eq!(old, Tuple(vec![text("1"), text("w")]));
    }

    #[test]
    fn update_with_old_tuple_but_no_new_tag_is_invalid() {
        let buf = Enc::new(b'U')
            .u32(7)
            .u8(b'K')
            .tuple(&[text("1")])
            .u8(b'X')
            .tuple(&[])
            .done();
        assert!(matches!(
            decode(&buf),
            Err(DecodeError::Invalid {
                message: "Update",
                ..
            })
        ));
    }

    #[test]
    fn delete_key_and_full() {
        let buf = Enc::new(b'D')
            .u32(9)
            .u8(b'K')
            .tuple(&[text("5"), Datum::Null])
            .done();
        assert_eq!(
            decode(&buf).unwrap(),
            Message::Delete {
                relation: 9,
                old: OldTuple::Key(Tuple(vec![text("5"), Datum::Null]))
            }
        );
        let buf = Enc::new(b'D')
            .u32(9)
            .u8(b'O')
            .tuple(&[text("5"), text("a")])
            .done();
        assert_eq!(
            decode(&buf).unwrap(),
            Message::Delete {
                relation: 9,
                old: OldTuple::Full(Tuple(vec![text("5"), text("a")]))
            }
        );
    }

    #[test]
    fn delete_with_new_tuple_tag_is_invalid() {
        let buf = Enc::new(b'D').u32(9).u8(b'N').tuple(&[]).done();
        assert!(matches!(
            decode(&buf),
            Err(DecodeError::Invalid {
                message: "Delete",
                ..
            })
        ));
    }

    #[test]
    fn truncate() {
        let buf = Enc::new(b'T').u32(2).u8(3).u32(16385).u32(16390).done();
        assert_eq!(
            decode(&buf).unwrap(),
            Message::Truncate {
                relations: vec![16385, 16390],
                cascade: true,
                restart_identity: true
            }
        );
        let buf = Enc::new(b'T').u32(1).u8(2).u32(5).done();
        assert_eq!(
            decode(&buf).unwrap(),
            Message::Truncate {
                relations: vec![5],
                cascade: false,
                restart_identity: true
            }
        );
    }

    #[test]
    fn truncate_claiming_more_relations_than_sent_is_truncated() {
        let buf = Enc::new(b'T').u32(u32::MAX).u8(0).u32(5).done();
        let err = decode(&buf).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Truncated {
                message: "Truncate",
                field: "relation OID 1".into()
            }
        );
    }

    #[test]
    fn logical_message() {
        let buf = Enc::new(b'M')
            .u8(1)
            .u64(99)
            .cstr("app")
            .i32(3)
            .bytes(b"a\0b")
            .done();
        assert_eq!(
            decode(&buf).unwrap(),
            Message::LogicalMessage {
                transactional: true,
                lsn: 99,
                prefix: "app".into(),
                content: b"a\0b".to_vec()
            }
        );
    }

    #[test]
    fn unknown_message_types_are_not_errors() {
        // `P`: a two-phase Prepare of protocol version 3, never asked for.
        assert_eq!(decode(b"P\0\0\0\x01").unwrap(), Message::Unknown(b'P'));
    }

    #[test]
    fn stream_control_messages() {
        assert_eq!(
            decode(b"S\0\0\x02\x01\x01").unwrap(),
            Message::StreamStart {
                xid: 0x201,
                first_segment: true
            }
        );
        assert_eq!(decode(b"E").unwrap(), Message::StreamStop);
        let commit = Enc::new(b'c')
            .u32(77)
            .u8(0)
            .u64(0x10)
            .u64(0x18)
            .i64(5)
            .done();
        assert_eq!(
            decode(&commit).unwrap(),
            Message::StreamCommit {
                xid: 77,
                flags: 0,
                commit_lsn: 0x10,
                end_lsn: 0x18,
                commit_ts_us: 5
            }
        );
        let abort = Enc::new(b'A').u32(77).u32(78).done();
        assert_eq!(
            decode(&abort).unwrap(),
            Message::StreamAbort {
                xid: 77,
                subxid: 78
            }
        );
        // The control messages carry no xid of their own in a block either.
        assert_eq!(decode_streamed(b"E").unwrap(), (None, Message::StreamStop));
    }

    #[test]
    fn streamed_changes_name_their_subtransaction() {
        let insert = Enc::new(b'I')
            .u32(91)
            .u32(7)
            .u8(b'N')
            .tuple(&[text("1")])
            .done();
        assert_eq!(
            decode_streamed(&insert).unwrap(),
            (
                Some(91),
                Message::Insert {
                    relation: 7,
                    new: Tuple(vec![text("1")])
                }
            )
        );
        // The same bytes outside a block are not an Insert of relation 91.
        assert!(decode(&insert).is_err());
        let message = Enc::new(b'M')
            .u32(92)
            .u8(1)
            .u64(0x20)
            .cstr("p")
            .i32(2)
            .bytes(b"hi")
            .done();
        assert_eq!(
            decode_streamed(&message).unwrap(),
            (
                Some(92),
                Message::LogicalMessage {
                    transactional: true,
                    lsn: 0x20,
                    prefix: "p".into(),
                    content: b"hi".to_vec()
                }
            )
        );
        let mut relation = vec![b'R'];
        relation.extend_from_slice(&93u32.to_be_bytes());
        relation.extend_from_slice(&orders_relation_bytes()[1..]);
        let (xid, decoded) = decode_streamed(&relation).unwrap();
        assert_eq!(xid, Some(93));
        assert_eq!(decoded, decode(&orders_relation_bytes()).unwrap());
    }

    #[test]
    fn empty_payload() {
        assert_eq!(decode(&[]).unwrap_err(), DecodeError::Empty);
    }

    #[test]
    fn truncation_names_the_field() {
        let full = orders_relation_bytes();
        // Cut inside the second column's type OID.
        let cut = &full[..full.len() - 6];
        let err = decode(cut).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Truncated {
                message: "Relation",
                field: "column 1 type OID".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "pgoutput Relation message is truncated in column 1 type OID; check that the slot \
             uses the pgoutput plugin with proto_version '1' or '2'"
        );
    }

    #[test]
    fn every_strict_prefix_of_a_message_is_an_error() {
        let messages = [
            orders_relation_bytes(),
            Enc::new(b'U')
                .u32(7)
                .u8(b'O')
                .tuple(&[text("1"), Datum::Null])
                .u8(b'N')
                .tuple(&[text("2"), Datum::Unchanged])
                .done(),
            Enc::new(b'M')
                .u8(0)
                .u64(1)
                .cstr("p")
                .i32(2)
                .bytes(b"hi")
                .done(),
        ];
        for msg in messages {
            assert!(decode(&msg).is_ok());
            for len in 1..msg.len() {
                assert!(
                    decode(&msg[..len]).is_err(),
                    "prefix of length {len} decoded"
                );
            }
        }
    }

    #[test]
    fn text_value_length_beyond_the_message_is_truncated() {
        let buf = Enc::new(b'I')
            .u32(1)
            .u8(b'N')
            .u16(1)
            .u8(b't')
            .i32(1000)
            .bytes(b"abc")
            .done();
        assert_eq!(
            decode(&buf).unwrap_err(),
            DecodeError::Truncated {
                message: "Insert",
                field: "new tuple column 0 value".into()
            }
        );
    }

    #[test]
    fn negative_text_length_is_invalid() {
        let buf = Enc::new(b'I')
            .u32(1)
            .u8(b'N')
            .u16(1)
            .u8(b't')
            .i32(-1)
            .done();
        assert!(matches!(
            decode(&buf).unwrap_err(),
            DecodeError::Invalid { message: "Insert", field, .. } if field == "new tuple column 0 length"
        ));
    }

    #[test]
    fn non_utf8_text_is_an_error() {
        let buf = Enc::new(b'I')
            .u32(1)
            .u8(b'N')
            .u16(1)
            .u8(b't')
            .i32(1)
            .bytes(&[0xff])
            .done();
        assert!(matches!(
            decode(&buf).unwrap_err(),
            DecodeError::NotUtf8 {
                message: "Insert",
                ..
            }
        ));
    }

    #[test]
    fn unknown_datum_tag_is_invalid() {
        let buf = Enc::new(b'I').u32(1).u8(b'N').u16(1).u8(b'z').done();
        assert!(matches!(
            decode(&buf).unwrap_err(),
            DecodeError::Invalid {
                message: "Insert",
                ..
            }
        ));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let buf = Enc::new(b'B').u64(1).i64(2).u32(3).u8(0).done();
        assert_eq!(
            decode(&buf).unwrap_err(),
            DecodeError::TrailingBytes {
                message: "Begin",
                count: 1
            }
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&buf);
        }

        #[test]
        fn random_bodies_of_known_messages_never_panic(
            tag in proptest::sample::select(b"BCORYIUDTM".to_vec()),
            body in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let mut buf = vec![tag];
            buf.extend(body);
            let _ = decode(&buf);
        }

        #[test]
        fn inserts_round_trip(values in proptest::collection::vec(
            proptest::option::of(".{0,20}"), 0..8)
        ) {
            let datums: Vec<Datum> = values
                .iter()
                .map(|v| v.as_deref().map_or(Datum::Null, Datum::Text))
                .collect();
            let buf = Enc::new(b'I').u32(3).u8(b'N').tuple(&datums).done();
            prop_assert_eq!(decode(&buf).unwrap(), Message::Insert { relation: 3, new: Tuple(datums) });
        }
    }
}
