"""Forwarding rules in force (issue 32): the settings file's rules first, then those added at run
time that still read as rules and whose names the settings file has not taken; a destination must
be reachable and not another tenant's."""

from __future__ import annotations

from archive.config.settings import AEEntry
from archive.routing.admission import refusal
from archive.routing.registry import merged
from archive.routing.rules import ForwardRule


def _rule(name: str, **extra: object) -> ForwardRule:
    return ForwardRule.model_validate({"name": name, "tenant": "t1", "to": {"ae": "PACS"}, **extra})


def test_the_settings_file_wins_and_a_broken_row_is_skipped() -> None:
    seed = [_rule("a")]
    rows = [
        ("a", {"name": "a", "tenant": "t2", "to": {"ae": "OTHER"}}),  # shadowed by the seed
        ("b", {"name": "b", "to": {"ae": "PACS"}, "no_such_field": 1}),  # no longer a rule
        ("c", {"name": "c", "tenant": "t1", "to": {"ae": "PACS"}}),
    ]
    rules = merged(seed, rows)
    assert [(r.name, r.to.ae) for r in rules] == [("a", "PACS"), ("c", "PACS")]


def test_a_destination_must_be_reachable_and_not_another_tenants() -> None:
    table = {
        "PACS": AEEntry(host="127.0.0.1", port=104),
        "CALLER": AEEntry(),
        "B_PACS": AEEntry(host="127.0.0.1", port=104, tenant="t2"),
        "T1_PACS": AEEntry(host="127.0.0.1", port=104, tenant="t1"),
    }
    assert refusal(_rule("ok"), table) is None
    assert refusal(_rule("own", to={"ae": "T1_PACS"}), table) is None
    assert "no host and port" in (refusal(_rule("x", to={"ae": "CALLER"}), table) or "")
    assert "no host and port" in (refusal(_rule("x", to={"ae": "UNKNOWN"}), table) or "")
    assert "belongs to tenant 't2'" in (refusal(_rule("x", to={"ae": "B_PACS"}), table) or "")
