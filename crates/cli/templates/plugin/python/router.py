"""{{name}} — a switchyard router plugin: sends each event to the sinks listed for its
kind (insert, update, delete, message, ...), else to `default` (none = drop).
Config: {"routes": {"insert": ["orders_topic"], "message": ["audit"]}, "default": []}."""

import switchyard_plugin as switchyard


class Plugin(switchyard.Router):
    def init(self, config):
        """Runs once per instance with the `config` table of [plugins.NAME]. An exception
        stops switchyard from starting and is shown with its message: say which key is
        wrong."""
        switchyard.deny_unknown_keys(config, ["routes", "default"])
        self.routes = config.get("routes", {})
        self.default = config.get("default", [])

    def route(self, event):
        """The names of the sinks this event goes to; an empty list drops it."""
        return self.routes.get(event.kind, self.default)


WitWorld = switchyard.export_router(Plugin)
