"""{{name}} — a switchyard filter plugin: keeps the events whose JSON field equals a value
and drops the rest. Config: {"field": "after.status", "equals": "paid"}."""

import switchyard_plugin as switchyard


class Plugin(switchyard.Filter):
    def init(self, config):
        """Runs once per instance with the `config` table of [plugins.NAME]. An exception
        stops switchyard from starting and is shown with its message: say which key is
        wrong."""
        switchyard.deny_unknown_keys(config, ["field", "equals"])
        self.field = config.get("field", "after.status")
        self.equals = config.get("equals", "paid")
        switchyard.info(f"keeping events whose {self.field} is {self.equals!r}")

    def keep(self, event):
        """True keeps the event. Events without the field (or not JSON) are dropped. An
        exception fails the batch, which then follows the plugin's `on_error`, with its
        message logged."""
        return event.lookup(self.field) == self.equals


WitWorld = switchyard.export_filter(Plugin)
