"""{{name}} — a switchyard transform plugin: tags each Postgres change with a header
naming its table and, if asked, drops the `before` image from the payload.
Config: {"header": "x-table", "drop_before": true}."""

import switchyard_plugin as switchyard


class Plugin(switchyard.Transform):
    def init(self, config):
        """Runs once per instance with the `config` table of [plugins.NAME]. An exception
        stops switchyard from starting and is shown with its message: say which key is
        wrong."""
        switchyard.deny_unknown_keys(config, ["header", "drop_before"])
        self.header = config.get("header", "x-table")
        self.drop_before = config.get("drop_before", False)

    def transform(self, event):
        """The events replacing this one: [] drops it, several split it. Keep the `id` so
        consumers can still deduplicate."""
        table = event.table()
        if table:
            event.set_header(self.header, ".".join(table))
        change = event.json()
        if self.drop_before and isinstance(change, dict) and "before" in change:
            del change["before"]
            event.set_json(change)
        return [event]


WitWorld = switchyard.export_transform(Plugin)
