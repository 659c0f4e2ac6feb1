"""export-crate --agent without --agent-id: the person's local @id is a valid URI reference for
any name (a space or non-ASCII letters are percent-encoded), and a plain name is unchanged.
Unit level: the graph of no jobs, and the CLI with the export itself replaced, so no run is
needed."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest

from abmseg import cli
from abmseg.provenance import crate
from abmseg.provenance.crate_graph import build_graph, person_agent

# RFC 3986, written out from the grammar (not from the code's safe set): a same-document
# reference "#" fragment, fragment = *( pchar / "/" / "?" ), pchar = unreserved / pct-encoded /
# sub-delims / ":" / "@".
UNRESERVED = r"A-Za-z0-9\-._~"
SUB_DELIMS = r"!$&'()*+,;="
FRAGMENT_REFERENCE = re.compile(rf"#(?:[{UNRESERVED}{SUB_DELIMS}:@/?]|%[0-9A-Fa-f]{{2}})*")


def _agent_entity(name: str) -> tuple[str, dict]:
    graph = build_graph([], None, [], name="test", agent=person_agent(name))
    people = [e for e in graph.entities.values() if e["@type"] == "Person"]
    assert len(people) == 1
    actions = [e for e in graph.entities.values() if "agent" in e]
    assert {a["@id"] for a in actions} == {"#run", "#engine-run"}
    assert all(a["agent"] == {"@id": people[0]["@id"]} for a in actions)
    return people[0]["@id"], people[0]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Jane Doe", "#agent-Jane%20Doe"),
        ("Zoë Łukasiewicz-Ørsted", "#agent-Zo%C3%AB%20%C5%81ukasiewicz-%C3%98rsted"),
        ("O'Brien #2 50%", "#agent-O'Brien%20%232%2050%25"),
    ],
)
def test_a_name_that_is_not_uri_safe_becomes_a_valid_fragment(name, expected):
    identifier, person = _agent_entity(name)
    assert identifier == expected  # hand-encoded UTF-8 bytes
    assert FRAGMENT_REFERENCE.fullmatch(identifier), identifier
    assert person["name"] == name
    assert unquote(identifier.removeprefix("#agent-")) == name


def test_a_plain_name_is_unchanged_and_an_orcid_is_kept():
    assert _agent_entity("JaneDoe")[0] == "#agent-JaneDoe"
    orcid = "https://orcid.org/0000-0002-1825-0097"
    assert person_agent("Jane Doe", orcid) == {"name": "Jane Doe", "id": orcid}


def test_the_raw_name_would_not_be_a_uri_reference():
    """The check above can fail: the id the CLI used to make is refused by it."""
    assert not FRAGMENT_REFERENCE.fullmatch("#agent-Jane Doe")
    assert not FRAGMENT_REFERENCE.fullmatch("#agent-Zoë")


def test_the_cli_passes_the_encoded_agent(monkeypatch, tmp_path):
    seen = {}

    def fake_export(results, out, *, workflow, agent, name):
        seen["agent"] = agent
        raise SystemExit(0)

    monkeypatch.setattr(crate, "export_crate", fake_export)
    with pytest.raises(SystemExit):
        cli.main(["export-crate", str(tmp_path / "results"), str(tmp_path / "c"), "--agent", "A B"])
    assert seen["agent"] == {"name": "A B", "id": "#agent-A%20B"}
