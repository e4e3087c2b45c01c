//! `type = "stdout"`: only `format` besides `type`.

use super::super::walk::{Ctx, Table};
use super::format;
use crate::StdoutSinkConfig;

pub(super) fn read(cx: &mut Ctx<'_>, table: &Table<'_>) -> StdoutSinkConfig {
    StdoutSinkConfig {
        format: format(cx, table),
    }
}
