//! `[pipelines.NAME]`.

use serde_json::Value;

use super::walk::{Ctx, Table, check_name};
use crate::PipelineConfig;

pub(super) fn pipeline(cx: &mut Ctx<'_>, path: &str, value: &Value) -> Option<PipelineConfig> {
    let table = Table::of::<PipelineConfig>(cx, path, value)?;
    let from = table.strings(cx, "from");
    if from.is_none() && table.get("from").is_none() {
        table.missing(cx, "from", "the sources to read, e.g. [\"api\"]");
    } else if from.as_ref().is_some_and(Vec::is_empty) {
        cx.issue(
            &table.child("from"),
            "`from` is empty: name at least one source",
        );
    }
    let pipeline = PipelineConfig {
        from: from.unwrap_or_default(),
        filters: table.strings(cx, "filters").unwrap_or_default(),
        transforms: table.strings(cx, "transforms").unwrap_or_default(),
        router: table.non_empty_string(cx, "router"),
        to: table.strings(cx, "to").unwrap_or_default(),
        dead_letter: table.non_empty_string(cx, "dead_letter"),
        max_in_flight: table
            .positive_usize(
                cx,
                "max_in_flight",
                "; a pipeline must be able to read one event",
            )
            .unwrap_or(PipelineConfig::DEFAULT_MAX_IN_FLIGHT),
    };
    if pipeline.to.is_empty() && pipeline.router.is_none() && table.get("to").is_none() {
        cx.issue(
            path,
            "pipeline has neither `to` nor `router`: add `to = [\"SINK\"]` or a router plugin, or events go nowhere",
        );
    } else if pipeline.to.is_empty() && pipeline.router.is_none() {
        cx.issue(
            &table.child("to"),
            "`to` is empty and there is no `router`: name at least one sink",
        );
    }
    if let Some(dead_letter) = &pipeline.dead_letter {
        check_name(cx, &table.child("dead_letter"), "queue", dead_letter);
    }
    table.finish(cx);
    Some(pipeline)
}
