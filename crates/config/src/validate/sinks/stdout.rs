//! `type = "stdout"`: no keys besides `type`.

use super::super::walk::{Ctx, Table};
use crate::StdoutSinkConfig;

pub(super) fn read(_: &mut Ctx<'_>, _: &Table<'_>) -> StdoutSinkConfig {
    StdoutSinkConfig {}
}
