//! `type = "file"`.

use serde_json::Value;

use super::super::walk::{Ctx, Table, kind};
use super::format;
use crate::FileSinkConfig;

pub(super) fn read(cx: &mut Ctx<'_>, table: &Table<'_>) -> FileSinkConfig {
    FileSinkConfig {
        path: table
            .required_string(cx, "path", "the file to append JSON lines to")
            .unwrap_or_default(),
        mode: mode(cx, table).unwrap_or(FileSinkConfig::DEFAULT_MODE),
        format: format(cx, table),
    }
}

/// `mode = "0640"`: octal permission bits of a file the sink creates. A string, because a
/// TOML or YAML number would be read as decimal; the owner must be able to read and write
/// (the sink reopens the file after a restart); no set-id or sticky bits.
fn mode(cx: &mut Ctx<'_>, table: &Table<'_>) -> Option<u32> {
    let value = table.get("mode")?;
    let path = table.child("mode");
    let Value::String(text) = value else {
        cx.issue(
            &path,
            format!(
                "expected the permission bits as a string of octal digits, such as mode = \"0640\", found {}",
                kind(value)
            ),
        );
        return None;
    };
    let digits = text.trim().trim_start_matches("0o");
    let mode = (!digits.is_empty() && digits.len() <= 4)
        .then(|| u32::from_str_radix(digits, 8).ok())
        .flatten()
        .filter(|mode| *mode <= 0o777);
    let Some(mode) = mode else {
        cx.issue(
            &path,
            format!(
                "invalid mode {text:?}: write octal permission bits such as \"0600\" (owner only) or \"0640\" (owner and group read)"
            ),
        );
        return None;
    };
    if mode & 0o600 != 0o600 {
        cx.issue(
            &path,
            format!(
                "mode \"{mode:04o}\" does not let switchyard read and write its own file; keep the owner's rw, e.g. \"0600\" or \"0640\""
            ),
        );
        return None;
    }
    Some(mode)
}
