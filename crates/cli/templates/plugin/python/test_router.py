"""The plugin's logic, natively: `python3 -m unittest` in this directory."""

import pathlib
import unittest

import switchyard_plugin as switchyard
from app import Plugin

EVENTS = switchyard.Event.from_jsonl((pathlib.Path(__file__).parent / "events.jsonl").read_text())


class PluginTest(unittest.TestCase):
    def test_routes_the_sample_events_by_kind(self):
        plugin = Plugin()
        plugin.init({"routes": {"update": ["changes"], "message": ["audit"]}})
        self.assertEqual(
            [plugin.route(e) for e in EVENTS], [["changes"], [], ["changes"], ["audit"]]
        )

    def test_a_typo_in_the_config_is_reported(self):
        with self.assertRaisesRegex(ValueError, "unknown key `route`"):
            Plugin().init({"route": {}})


if __name__ == "__main__":
    unittest.main()
