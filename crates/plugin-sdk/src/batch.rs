//! Unpacking the `batch` the host hands to a plugin (see `wit/plugin.wit`) into [`Event`]s.
//!
//! The host packs every variable-length field of a call's events into one byte list, so
//! handing a batch in costs a few copies rather than one guest allocation per field. Here
//! each event is rebuilt from it. [`unpack_into`] reuses the strings and vectors of the
//! events it is given, so a filter or router instance, which only borrows its events,
//! allocates nothing per event once its first batches have sized them.

use crate::bindings::{Batch, Event, Header};

/// Text and byte fields before the headers: id, source, kind, key, payload, content type.
const FIXED_FIELDS: usize = 6;

/// The events of `batch`, newly allocated: for a transform, which takes them by value.
pub(crate) fn unpack(batch: &Batch) -> Result<Vec<Event>, String> {
    let mut events = Vec::with_capacity(batch.timestamps_ms.len());
    unpack_into(batch, &mut events)?;
    Ok(events)
}

/// Replaces `events` with the events of `batch`, reusing what `events` already holds.
pub(crate) fn unpack_into(batch: &Batch, events: &mut Vec<Event>) -> Result<(), String> {
    let n = batch.timestamps_ms.len();
    if batch.header_counts.len() != n || batch.has_key.len() != n {
        return Err(malformed(format!(
            "{n} timestamps but {} header counts and {} key flags",
            batch.header_counts.len(),
            batch.has_key.len()
        )));
    }
    let fields: usize = batch
        .header_counts
        .iter()
        .map(|h| FIXED_FIELDS + 2 * *h as usize)
        .sum();
    if fields != batch.ends.len() {
        return Err(malformed(format!(
            "{} field ends for {fields} fields",
            batch.ends.len()
        )));
    }
    events.truncate(n);
    let mut fields = Fields {
        data: &batch.data,
        ends: batch.ends.iter(),
        start: 0,
    };
    for i in 0..n {
        if i == events.len() {
            events.push(blank());
        }
        let event = &mut events[i];
        fields.text_into(&mut event.id)?;
        fields.text_into(&mut event.source)?;
        fields.text_into(&mut event.kind)?;
        let key = fields.next()?;
        if batch.has_key[i] {
            copy_into(event.key.get_or_insert_with(Vec::new), key);
        } else {
            event.key = None;
        }
        copy_into(&mut event.payload, fields.next()?);
        fields.text_into(&mut event.content_type)?;
        let headers = batch.header_counts[i] as usize;
        event.headers.truncate(headers);
        for h in 0..headers {
            if h == event.headers.len() {
                event.headers.push(Header {
                    name: String::new(),
                    value: String::new(),
                });
            }
            let header = &mut event.headers[h];
            fields.text_into(&mut header.name)?;
            fields.text_into(&mut header.value)?;
        }
        event.timestamp_ms = batch.timestamps_ms[i];
    }
    if fields.start != fields.data.len() {
        return Err(malformed(format!(
            "the fields end at {} of {} bytes",
            fields.start,
            fields.data.len()
        )));
    }
    Ok(())
}

/// An event with nothing allocated, to be filled.
fn blank() -> Event {
    Event {
        id: String::new(),
        source: String::new(),
        kind: String::new(),
        key: None,
        payload: Vec::new(),
        content_type: String::new(),
        headers: Vec::new(),
        timestamp_ms: 0,
    }
}

fn copy_into(to: &mut Vec<u8>, from: &[u8]) {
    to.clear();
    to.extend_from_slice(from);
}

/// A batch from a host that does not follow the contract: the call fails with this.
fn malformed(what: String) -> String {
    format!(
        "the host sent a malformed batch ({what}); is this plugin built for the same switchyard:plugin version as the host?"
    )
}

/// The fields of a batch, one after the other.
struct Fields<'a> {
    data: &'a [u8],
    ends: std::slice::Iter<'a, u32>,
    start: usize,
}

impl<'a> Fields<'a> {
    fn next(&mut self) -> Result<&'a [u8], String> {
        let end = *self
            .ends
            .next()
            .ok_or_else(|| malformed("fewer field ends than fields".to_owned()))?
            as usize;
        let field = self.data.get(self.start..end).ok_or_else(|| {
            malformed(format!(
                "a field spans {}..{end} of {} bytes",
                self.start,
                self.data.len()
            ))
        })?;
        self.start = end;
        Ok(field)
    }

    fn text_into(&mut self, to: &mut String) -> Result<(), String> {
        let text = std::str::from_utf8(self.next()?)
            .map_err(|e| malformed(format!("a text field is not UTF-8: {e}")))?;
        to.clear();
        to.push_str(text);
        Ok(())
    }
}

/// Packs events the way the host does, for tests of the unpacking.
#[cfg(test)]
pub(crate) fn pack(events: &[Event]) -> Batch {
    let mut batch = Batch {
        data: Vec::new(),
        ends: Vec::new(),
        header_counts: Vec::new(),
        has_key: Vec::new(),
        timestamps_ms: Vec::new(),
    };
    let field = |batch: &mut Batch, bytes: &[u8]| {
        batch.data.extend_from_slice(bytes);
        batch.ends.push(u32::try_from(batch.data.len()).unwrap());
    };
    for e in events {
        field(&mut batch, e.id.as_bytes());
        field(&mut batch, e.source.as_bytes());
        field(&mut batch, e.kind.as_bytes());
        field(&mut batch, e.key.as_deref().unwrap_or_default());
        field(&mut batch, &e.payload);
        field(&mut batch, e.content_type.as_bytes());
        for h in &e.headers {
            field(&mut batch, h.name.as_bytes());
            field(&mut batch, h.value.as_bytes());
        }
        batch
            .header_counts
            .push(u32::try_from(e.headers.len()).unwrap());
        batch.has_key.push(e.key.is_some());
        batch.timestamps_ms.push(e.timestamp_ms);
    }
    batch
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> Vec<Event> {
        let mut a = Event::json_message(&json!({"status": "paid"}));
        a.id = "a".into();
        a.source = "orders".into();
        a.key = Some(b"k1".to_vec());
        a.add_header("trace", "t-1");
        a.add_header("trace", "t-2");
        a.timestamp_ms = 7;
        let mut b = Event::message("héllo", "text/plain");
        b.id = "b".into();
        let c = Event {
            key: Some(Vec::new()),
            ..Event::change("insert", "public", "t", json!(null), json!({"id": 1}))
        };
        vec![a, b, c]
    }

    #[test]
    fn a_packed_batch_unpacks_to_the_same_events() {
        let events = sample();
        assert_eq!(unpack(&pack(&events)), Ok(events.clone()));
        assert_eq!(unpack(&pack(&[])), Ok(Vec::new()));
    }

    #[test]
    fn unpacking_into_used_events_replaces_every_field() {
        let events = sample();
        let mut reused = sample();
        reused.reverse();
        reused.push(Event::message("extra", "text/plain"));
        unpack_into(&pack(&events), &mut reused).unwrap();
        assert_eq!(reused, events);

        // Fewer events, fewer headers, no key where there was one.
        let fewer = vec![Event::message("x", "text/plain")];
        unpack_into(&pack(&fewer), &mut reused).unwrap();
        assert_eq!(reused, fewer);
    }

    #[test]
    fn a_malformed_batch_is_an_error_not_a_panic() {
        let good = pack(&sample());
        let mut short = pack(&sample());
        short.ends.pop();
        let mut past_end = pack(&sample());
        *past_end.ends.last_mut().unwrap() += 1;
        let mut not_utf8 = pack(&sample());
        not_utf8.data[0] = 0xff;
        let mut flags = pack(&sample());
        flags.has_key.pop();
        let mut backwards = pack(&sample());
        backwards.ends[1] = 0;
        let mut trailing = pack(&sample());
        trailing.data.push(b'!');
        for bad in [short, past_end, not_utf8, flags, backwards, trailing] {
            let err = unpack(&bad).unwrap_err();
            assert!(err.starts_with("the host sent a malformed batch"), "{err}");
        }
        assert!(unpack(&good).is_ok());
    }
}
