"""The configuration reference is generated from the settings table; the table and the Settings
value name the same settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tornado_bundle import settings

ROOT = Path(__file__).resolve().parents[2]


def test_docs_configuration_md_is_generated_from_the_table() -> None:
    # Regenerate with `make docs` after changing an entry of tornado_bundle/settings.py TABLE.
    assert (ROOT / "docs" / "configuration.md").read_text() == settings.reference()


def test_every_entry_is_a_field_of_settings_and_the_other_way_round() -> None:
    fields = [field.name for field in dataclasses.fields(settings.Settings)]
    assert sorted(fields) == sorted(setting.field for setting in settings.TABLE)


def test_every_default_is_allowed_by_its_own_entry() -> None:
    for setting in settings.TABLE:
        setting.parse(setting.default)
    assert settings.defaults().app == settings.BY_NAME["APP"].default


def test_the_readme_links_the_reference_and_repeats_no_default_table() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/configuration.md" in readme
    assert "| `WORKERS` | `2` |" not in readme


def test_settings_survive_the_file_every_process_reads() -> None:
    parsed = settings.parse({"REAL_IP_FROM": "10.0.0.0/8", "LB_METHOD": "weighted",
                             "LB_WEIGHTS": "3,7", "INSTANCE_MAX_MEMORY": "300m"})  # fmt: skip
    assert settings.from_json(settings.to_json(parsed)) == parsed
