"""The plugin's logic, natively: `python3 -m unittest` in this directory."""

import pathlib
import unittest

import switchyard_plugin as switchyard
from app import Plugin

EVENTS = switchyard.Event.from_jsonl((pathlib.Path(__file__).parent / "events.jsonl").read_text())


class PluginTest(unittest.TestCase):
    def test_tags_the_sample_changes_with_their_table(self):
        plugin = Plugin()
        plugin.init({"header": "x-table", "drop_before": True})
        out = [e for event in EVENTS for e in plugin.transform(event)]
        self.assertEqual(
            [e.header("x-table") for e in out],
            ["public.orders", "public.orders", "public.customers", None],
        )
        self.assertNotIn("before", out[0].json())

    def test_a_typo_in_the_config_is_reported(self):
        with self.assertRaisesRegex(ValueError, "unknown key `headers`"):
            Plugin().init({"headers": "x"})


if __name__ == "__main__":
    unittest.main()
