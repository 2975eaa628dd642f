"""agents-spec/ agrees with itself: every conformance vector is accepted or refused by the
published JSON Schemas exactly as it says (the Rust tests hold loopsy to the same vectors)."""

import json
import pathlib

import jsonschema

SPEC = pathlib.Path(__file__).resolve().parents[2] / "agents-spec"


def load(rel):
    return json.loads((SPEC / rel).read_text())


def test_envelope_vectors_match_the_schema():
    schema = load("schemas/envelope.schema.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    vectors = load("vectors/envelopes.json")["vectors"]
    assert len(vectors) >= 10
    for v in vectors:
        errors = list(validator.iter_errors(v["envelope"]))
        assert (not errors) == v["valid"], (v["name"], [e.message for e in errors])


def test_task_schema_and_transition_vectors_are_well_formed():
    schema = load("schemas/task.schema.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    statuses = set(schema["$defs"]["status"]["enum"])
    for v in load("vectors/task_transitions.json")["vectors"]:
        assert v["status"] in statuses, v["name"]
        assert v["expect"] in {"ok", "conflict", "denied", "not_claimed", "invalid"}, v["name"]
        assert v["change"].get("claim") is True or v["change"].get("status") in statuses, v["name"]
