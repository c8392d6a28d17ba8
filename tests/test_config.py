"""Settings from the environment: every boolean takes 0/1/true/false/yes/no, anything else and
any value of the wrong type is refused with the variable's name."""

from __future__ import annotations

import pytest

from omniloom.config import Settings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0", False), ("1", True), ("true", True), ("False", False), ("yes", True), (" no ", False)],
)
def test_booleans_from_the_environment(monkeypatch, raw, expected):
    monkeypatch.setenv("OMNILOOM_SCAN_MEDIA_TEXT", raw)
    assert Settings.from_env().scan_media_text is expected


@pytest.mark.parametrize(
    ("name", "raw"),
    [("OMNILOOM_SCAN_MEDIA_TEXT", "maybe"), ("OMNILOOM_LIMITS_MAX_N", "eight")],
)
def test_bad_values_are_refused_with_the_variable(monkeypatch, name, raw):
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValueError, match=name):
        Settings.from_env()


def test_nested_numbers_from_the_environment(monkeypatch):
    monkeypatch.setenv("OMNILOOM_LIMITS_HEADER_TIMEOUT_S", "2.5")
    assert Settings.from_env().limits.header_timeout_s == 2.5
