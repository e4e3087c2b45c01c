"""The plugin's logic, natively: `python3 -m unittest` in this directory."""

import pathlib
import unittest

import switchyard_plugin as switchyard
from app import Plugin

EVENTS = switchyard.Event.from_jsonl((pathlib.Path(__file__).parent / "events.jsonl").read_text())


class PluginTest(unittest.TestCase):
    def test_keeps_the_paid_order_of_the_sample_events(self):
        plugin = Plugin()
        plugin.init({"field": "after.status", "equals": "paid"})
        self.assertEqual([plugin.keep(e) for e in EVENTS], [True, False, False, False])

    def test_a_typo_in_the_config_is_reported(self):
        with self.assertRaisesRegex(ValueError, "unknown key `equal`"):
            Plugin().init({"equal": "paid"})


if __name__ == "__main__":
    unittest.main()
