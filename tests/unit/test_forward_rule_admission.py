"""Forwarding rules in force (issue 32): the settings file's rules first, then those added at run
time that still read as rules and whose names the settings file has not taken; a destination must
be reachable and not another tenant's."""

from __future__ import annotations

from archive.config.peers import AEEntry
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

    def refusal_(rule: ForwardRule, table: dict[str, AEEntry]) -> str | None:
        return refusal(rule, table, known_tenants=())

    assert refusal_(_rule("ok"), table) is None
    assert refusal_(_rule("own", to={"ae": "T1_PACS"}), table) is None
    assert "no host and port" in (refusal_(_rule("x", to={"ae": "CALLER"}), table) or "")
    assert "no host and port" in (refusal_(_rule("x", to={"ae": "UNKNOWN"}), table) or "")
    assert "belongs to tenant 't2'" in (refusal_(_rule("x", to={"ae": "B_PACS"}), table) or "")


def test_a_copy_goes_from_one_tenant_into_another_it_knows() -> None:
    import pytest
    from pydantic import ValidationError

    from archive.config.settings import Settings
    from archive.routing.admission import named_tenants, target_refusal

    copy = ForwardRule.model_validate({"name": "copy", "tenant": "a", "to": {"tenant": "b"}})
    assert (copy.to.kind, copy.to.destination) == ("tenant", "tenant:b")
    for refused in (
        {"name": "self", "tenant": "a", "to": {"tenant": "a"}},  # into itself
        {"name": "every", "to": {"tenant": "b"}},  # from every tenant: b into b too
        {"name": "bad", "tenant": "a", "to": {"tenant": "../b"}},
        {"name": "two", "tenant": "a", "to": {"tenant": "b", "ae": "PACS"}},
    ):
        with pytest.raises(ValidationError):
            ForwardRule.model_validate(refused)
    settings = Settings(
        default_tenant="d",
        ae_table={"WS": AEEntry(tenant="b")},
        forward_rules=[copy],  # a copy rule is data like any other; whether "b" is known is up's to check
    )
    assert named_tenants(settings.default_tenant, settings.dimse, settings.routing) == {"d", "b", "a"}
    assert target_refusal(copy, named_tenants(settings.default_tenant, settings.dimse, settings.routing)) is None
    assert "does not know" in (target_refusal(copy, {"a", "d"}) or "")
