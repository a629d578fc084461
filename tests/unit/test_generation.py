"""Behaviour of the JSON Schema value generator, checked with an independent validator."""

from __future__ import annotations

import base64
import ipaddress
import random
import re
import uuid
from collections.abc import Callable
from datetime import date, datetime, time
from pathlib import Path
from time import perf_counter
from typing import Any, Literal
from urllib.parse import urlparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from apitwin.generation import GenerationError, Generator
from apitwin.spec.loader import load_spec

SPECS = Path(__file__).resolve().parents[3] / "shared" / "specs"
SEEDS = range(8)
Direction = Literal["request", "response"]


def assert_valid(schema: dict[str, Any] | bool, value: Any) -> None:
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(value)]
    assert not errors, f"{value!r} is invalid: {errors}"


def values_for(schema: dict[str, Any] | bool, seeds: range = SEEDS, **options: Any) -> list[Any]:
    """One value per seed, each checked against the schema."""
    generator = Generator()
    found = []
    for seed in seeds:
        value = generator.generate(schema, rng=random.Random(seed), **options)
        assert_valid(schema, value)
        found.append(value)
    return found


# Determinism


PERSON: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}


def test_the_same_seed_gives_the_same_value() -> None:
    assert Generator(7).generate(PERSON) == Generator(7).generate(PERSON)


def test_different_seeds_usually_give_different_values() -> None:
    found = {repr(Generator(seed).generate(PERSON)) for seed in range(10)}
    assert len(found) >= 8


def test_a_given_rng_is_used_instead_of_the_generators_own() -> None:
    first = Generator(1).generate(PERSON, rng=random.Random(5))
    second = Generator(2).generate(PERSON, rng=random.Random(5))
    assert first == second


def test_cached_work_does_not_change_the_output() -> None:
    warm = Generator(0)
    for seed in range(3):
        warm.generate(PERSON, rng=random.Random(seed))
    assert warm.generate(PERSON, rng=random.Random(9)) == Generator(1).generate(
        PERSON, rng=random.Random(9)
    )


def test_the_generator_without_a_seed_still_produces_valid_values() -> None:
    assert_valid(PERSON, Generator().generate(PERSON))


# readOnly / writeOnly

ACCOUNT: dict[str, Any] = {
    "type": "object",
    "required": ["email"],
    "properties": {
        "id": {"type": "integer", "readOnly": True},
        "email": {"type": "string", "format": "email"},
        "password": {"type": "string", "writeOnly": True, "minLength": 8},
        "$ref_target": {"$ref": "#/$defs/Stamp"},
    },
    "$defs": {"Stamp": {"type": "string", "format": "date-time", "readOnly": True}},
}


def test_responses_leave_out_write_only_properties() -> None:
    for value in values_for(ACCOUNT, direction="response"):
        assert "password" not in value
        assert "id" in value


def test_requests_leave_out_read_only_properties_even_through_a_ref() -> None:
    for value in values_for(ACCOUNT, direction="request"):
        assert "id" not in value
        assert "$ref_target" not in value
        assert len(value["password"]) >= 8


def test_a_required_read_only_property_is_still_generated_in_requests() -> None:
    schema = {**ACCOUNT, "required": ["email", "id"]}
    for value in values_for(schema, direction="request"):
        assert isinstance(value["id"], int)


# Examples


def test_a_valid_example_is_preferred() -> None:
    schema = {"type": "string", "example": "spec example"}
    assert values_for(schema) == ["spec example"] * len(SEEDS)


def test_the_first_of_examples_is_used() -> None:
    schema = {"type": "integer", "examples": [42, 7]}
    assert set(values_for(schema)) == {42}


def test_an_example_that_does_not_validate_is_ignored() -> None:
    schema = {"type": "integer", "maximum": 10, "example": 999}
    assert all(v <= 10 for v in values_for(schema))


def test_examples_are_ignored_when_use_examples_is_false() -> None:
    schema = {"type": "string", "example": "spec example"}
    assert "spec example" not in values_for(schema, use_examples=False)


def test_property_examples_show_up_inside_generated_objects() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "example": "doggie"}}}
    assert {v["name"] for v in values_for(schema)} == {"doggie"}


def test_write_only_properties_are_removed_from_an_object_example_in_responses() -> None:
    schema = {
        "type": "object",
        "properties": {"user": {"type": "string"}, "secret": {"type": "string", "writeOnly": True}},
        "example": {"user": "jdoe", "secret": "hunter2"},
    }
    assert values_for(schema, direction="response")[0] == {"user": "jdoe"}


def test_a_returned_example_is_a_copy() -> None:
    schema = {"type": "object", "example": {"a": [1]}}
    generator = Generator(0)
    generator.generate(schema)["a"].append(2)
    assert generator.generate(schema) == {"a": [1]}


# $ref and recursion

TREE: dict[str, Any] = {
    "$ref": "#/$defs/Node",
    "$defs": {
        "Node": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                "parent": {"$ref": "#/$defs/Node"},
            },
        }
    },
}


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def test_recursive_refs_stop_at_a_bounded_depth() -> None:
    for value in values_for(TREE):
        assert depth_of(value) <= 12


def test_a_required_nullable_recursion_ends_with_null() -> None:
    schema = {
        "$ref": "#/$defs/Link",
        "$defs": {
            "Link": {
                "type": "object",
                "required": ["next"],
                "properties": {"next": {"anyOf": [{"$ref": "#/$defs/Link"}, {"type": "null"}]}},
            }
        },
    }
    for value in values_for(schema):
        assert depth_of(value) <= 12


def test_a_recursion_that_can_never_end_is_an_error() -> None:
    schema = {
        "$ref": "#/$defs/Loop",
        "$defs": {
            "Loop": {
                "type": "object",
                "required": ["me"],
                "properties": {"me": {"$ref": "#/$defs/Loop"}},
            }
        },
    }
    with pytest.raises(GenerationError, match="deeper"):
        Generator(0).generate(schema)


def test_a_recursion_through_branches_that_can_never_end_fails_quickly() -> None:
    node = {"oneOf": [{"$ref": "#/$defs/A"}, {"$ref": "#/$defs/B"}]}
    defs: dict[str, Any] = {"N": node}
    for key in "AB":
        prop = {key.lower(): {"$ref": "#/$defs/N"}}
        defs[key] = {"type": "object", "required": [key.lower()], "properties": prop}
    started = perf_counter()
    with pytest.raises(GenerationError):
        Generator(0).generate({"$ref": "#/$defs/N", "$defs": defs})
    assert perf_counter() - started < 5


def test_a_ref_to_a_missing_definition_is_an_error() -> None:
    with pytest.raises(GenerationError, match="Missing"):
        Generator(0).generate({"$ref": "#/$defs/Missing", "$defs": {}})


# allOf


def test_all_of_merges_properties_required_and_bounds() -> None:
    schema = {
        "allOf": [
            {
                "type": "object",
                "required": ["a"],
                "properties": {"a": {"type": "integer", "minimum": 5}},
            },
            {"required": ["b"], "properties": {"a": {"maximum": 6}, "b": {"type": "string"}}},
        ]
    }
    for value in values_for(schema):
        assert value["a"] in (5, 6)
        assert isinstance(value["b"], str)


def test_all_of_intersects_types() -> None:
    schema = {"allOf": [{"type": ["number", "string"]}, {"type": ["integer", "null"]}]}
    assert all(isinstance(v, int) for v in values_for(schema))


def test_all_of_respects_additional_properties_false_of_one_part() -> None:
    schema = {
        "allOf": [
            {"properties": {"a": {"type": "integer"}}, "additionalProperties": False},
            {"properties": {"b": {"type": "integer"}}},
        ]
    }
    for value in values_for(schema):
        assert "b" not in value


def test_all_of_with_conflicting_consts_is_an_error() -> None:
    with pytest.raises(GenerationError, match="const"):
        Generator(0).generate({"allOf": [{"const": 1}, {"const": 2}]})


def test_a_ref_with_sibling_keywords_applies_both() -> None:
    schema = {
        "type": "array",
        "items": {"$ref": "#/$defs/Pet"},
        "contains": {"$ref": "#/$defs/Pet", "maxProperties": 2},
        "$defs": {
            "Pet": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "a": {}, "b": {}, "c": {}},
            }
        },
    }
    for value in values_for(schema):
        assert any(len(pet) <= 2 for pet in value)


# oneOf / anyOf / discriminator


def test_one_of_produces_a_value_matching_exactly_one_branch() -> None:
    schema = {"oneOf": [{"type": "number"}, {"type": "integer"}]}
    for value in values_for(schema):
        assert isinstance(value, float)
        assert not value.is_integer()


def test_one_of_with_overlapping_object_branches_leaves_out_optional_properties() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
    }
    for value in values_for(schema):
        assert ("a" in value) != ("b" in value)


def test_any_of_prefers_a_non_null_branch() -> None:
    schema = {"anyOf": [{"type": "null"}, {"type": "string"}]}
    assert all(isinstance(v, str) for v in values_for(schema))


PETS: dict[str, Any] = {
    "oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}],
    "discriminator": {
        "propertyName": "petType",
        "mapping": {"cat": "#/$defs/Cat", "dog": "#/$defs/Dog"},
    },
    "$defs": {
        "Pet": {
            "type": "object",
            "required": ["petType", "name"],
            "properties": {"petType": {"type": "string"}, "name": {"type": "string"}},
        },
        "Cat": {
            "allOf": [
                {"$ref": "#/$defs/Pet"},
                {"required": ["meows"], "properties": {"meows": {"type": "boolean"}}},
            ]
        },
        "Dog": {
            "allOf": [
                {"$ref": "#/$defs/Pet"},
                {"required": ["barks"], "properties": {"barks": {"type": "integer"}}},
            ]
        },
    },
}


def test_the_discriminator_property_names_the_generated_branch() -> None:
    values = values_for(PETS, seeds=range(12))
    for value in values:
        assert value["petType"] == ("cat" if "meows" in value else "dog")
    assert {v["petType"] for v in values} == {"cat", "dog"}


def test_a_discriminator_without_mapping_uses_the_schema_name() -> None:
    schema = {**PETS, "discriminator": {"propertyName": "petType"}}
    for value in values_for(schema):
        assert value["petType"] == ("Cat" if "meows" in value else "Dog")


def test_a_subtype_reached_by_ref_names_itself_in_an_inherited_discriminator() -> None:
    defs: dict[str, Any] = dict(PETS["$defs"])
    defs["Pet"] = {**defs["Pet"], "discriminator": PETS["discriminator"]}
    for value in values_for({"$ref": "#/$defs/Dog", "$defs": defs}):
        assert value["petType"] == "dog"


def test_a_discriminator_value_the_branch_forbids_is_not_forced() -> None:
    schema = {
        "oneOf": [{"$ref": "#/$defs/Track"}, {"$ref": "#/$defs/Episode"}],
        "discriminator": {"propertyName": "type"},
        "$defs": {
            "Track": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"enum": ["track"]}},
            },
            "Episode": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"enum": ["episode"]}},
            },
        },
    }
    assert {v["type"] for v in values_for(schema, seeds=range(12))} == {"track", "episode"}


# not, if/then/else, enum, const, type arrays


def test_not_excludes_values() -> None:
    schema = {"type": "integer", "minimum": 1, "maximum": 5, "not": {"enum": [1, 2, 3]}}
    assert set(values_for(schema)) <= {4, 5}


def test_if_then_else_is_followed() -> None:
    schema = {
        "type": "object",
        "required": ["kind"],
        "properties": {"kind": {"enum": ["a", "b"]}},
        "if": {"properties": {"kind": {"const": "a"}}},
        "then": {"required": ["alpha"], "properties": {"alpha": {"type": "integer"}}},
        "else": {"required": ["beta"], "properties": {"beta": {"type": "string"}}},
    }
    for value in values_for(schema, seeds=range(12)):
        assert ("alpha" in value) if value["kind"] == "a" else ("beta" in value)


def test_enum_values_are_picked_and_null_is_avoided() -> None:
    schema = {"type": ["string", "null"], "enum": ["x", "y", None]}
    assert set(values_for(schema)) <= {"x", "y"}


def test_const_is_returned() -> None:
    assert values_for({"const": {"k": [1, 2]}})[0] == {"k": [1, 2]}


def test_type_arrays_prefer_the_non_null_type() -> None:
    assert all(isinstance(v, str) for v in values_for({"type": ["null", "string"]}))


def test_a_null_only_type_gives_null() -> None:
    assert values_for({"type": "null"})[0] is None


def test_the_empty_schema_and_true_give_a_simple_value() -> None:
    schemas: list[dict[str, Any] | bool] = [{}, True]
    for schema in schemas:
        for value in values_for(schema):
            assert isinstance(value, (str, int, bool))


def test_the_false_schema_is_an_error() -> None:
    with pytest.raises(GenerationError, match="false"):
        Generator(0).generate(False)


def test_generation_error_is_a_value_error() -> None:
    assert issubclass(GenerationError, ValueError)


# Strings


def parse_date_time(text: str) -> datetime:
    assert text.endswith("Z")
    return datetime.fromisoformat(text[:-1] + "+00:00")


FORMAT_CHECKS: dict[str, Callable[[str], object]] = {
    "date-time": parse_date_time,
    "date": date.fromisoformat,
    "time": lambda t: time.fromisoformat(t.removesuffix("Z")),
    "uuid": uuid.UUID,
    "guid": uuid.UUID,
    "email": lambda t: re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", t) or pytest.fail(t),
    "uri": lambda t: urlparse(t).scheme in ("http", "https") or pytest.fail(t),
    "url": lambda t: urlparse(t).netloc or pytest.fail(t),
    "uri-reference": lambda t: t.startswith("/") or pytest.fail(t),
    "hostname": lambda t: re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", t) or pytest.fail(t),
    "ipv4": ipaddress.IPv4Address,
    "ipv6": ipaddress.IPv6Address,
    "byte": lambda t: base64.b64decode(t, validate=True),
    "binary": lambda t: isinstance(t, str) or pytest.fail(t),
    "password": lambda t: len(t) >= 8 or pytest.fail(t),
    "duration": lambda t: re.fullmatch(r"P(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?", t) or pytest.fail(t),
    "phone": lambda t: re.fullmatch(r"\+\d{8,15}", t) or pytest.fail(t),
}


@pytest.mark.parametrize("fmt", sorted(FORMAT_CHECKS))
def test_string_formats_are_well_formed(fmt: str) -> None:
    for value in values_for({"type": "string", "format": fmt}):
        FORMAT_CHECKS[fmt](value)


def test_patterns_are_matched() -> None:
    schema = {"type": "string", "pattern": r"^[A-Z]{3}-\d{4}$"}
    for value in values_for(schema):
        assert re.fullmatch(r"[A-Z]{3}-\d{4}", value)


def test_patterns_with_length_bounds_satisfy_both() -> None:
    schema = {"type": "string", "pattern": "^[a-z]+$", "minLength": 4, "maxLength": 6}
    for value in values_for(schema):
        assert 4 <= len(value) <= 6


def test_length_bounds_win_over_realistic_values() -> None:
    schema = {
        "type": "object",
        "required": ["description", "email_note"],
        "properties": {
            "description": {"type": "string", "maxLength": 5},
            "email_note": {"type": "string", "minLength": 60},
        },
    }
    values_for(schema)


REALISTIC: dict[str, Any] = {
    "type": "object",
    "properties": {
        "email": {"type": "string"},
        "firstName": {"type": "string"},
        "last_name": {"type": "string"},
        "country": {"type": "string", "maxLength": 2},
        "created_at": {"type": "string"},
        "currency": {"type": "string"},
        "user_id": {"type": "string"},
        "website": {"type": "string"},
        "age": {"type": "integer"},
        "price": {"type": "number", "maximum": 10},
        "phone": {"type": "string"},
        "zip": {"type": "string"},
        "summary": {"type": "string"},
    },
}


def test_property_names_steer_values_towards_realistic_ones() -> None:
    for value in values_for(REALISTIC):
        assert "@" in value["email"]
        assert value["firstName"][0].isupper()
        assert value["firstName"].isalpha()
        assert value["last_name"][0].isupper()
        assert re.fullmatch("[A-Z]{2}", value["country"])
        parse_date_time(value["created_at"])
        assert re.fullmatch("[A-Z]{3}", value["currency"])
        uuid.UUID(value["user_id"])
        assert value["website"].startswith("https://")
        assert 18 <= value["age"] <= 90
        assert 1 <= value["price"] <= 10
        assert re.fullmatch(r"\+\d{8,15}", value["phone"])
        assert value["zip"].isdigit()
        assert value["summary"].endswith(".")


def test_a_date_time_name_with_a_short_max_length_still_fits() -> None:
    schema: dict[str, Any] = {"type": "object", "required": ["updated_at"]}
    schema["properties"] = {"updated_at": {"type": "string", "maxLength": 8}}
    for value in values_for(schema):
        assert len(value["updated_at"]) <= 8


# Numbers


@pytest.mark.parametrize(
    ("schema", "check"),
    [
        ({"type": "integer", "minimum": 3, "maximum": 3}, lambda v: v == 3),
        ({"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 5}, lambda v: v == 4),
        ({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.001}, lambda v: v > 0),
        ({"type": "integer", "multipleOf": 7, "minimum": 100}, lambda v: v % 7 == 0),
        ({"type": "integer", "multipleOf": 2.5}, lambda v: v % 5 == 0),
        ({"type": "number", "multipleOf": 0.01, "minimum": 1.5, "maximum": 2}, lambda v: v >= 1.5),
        ({"type": "number", "multipleOf": 0.1}, lambda v: isinstance(v, float)),
        ({"type": "integer", "format": "int32"}, lambda v: -(2**31) <= v < 2**31),
        ({"type": "integer", "minimum": 10**15}, lambda v: v >= 10**15),
        ({"type": "number", "maximum": -(10**9)}, lambda v: v <= -(10**9)),
        ({"type": "number", "format": "double"}, lambda v: isinstance(v, float)),
    ],
)
def test_numbers_respect_bounds_and_multiples(schema: dict[str, Any], check: Any) -> None:
    for value in values_for(schema):
        assert check(value), value


def test_contradictory_bounds_are_an_error() -> None:
    with pytest.raises(GenerationError):
        Generator(0).generate({"type": "integer", "minimum": 5, "maximum": 4})


# Arrays


def test_arrays_respect_item_counts() -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 5}
    assert all(4 <= len(v) <= 5 for v in values_for(schema))


def test_unique_items_are_distinct() -> None:
    schema = {"type": "array", "items": {"enum": [1, 2, 3]}, "minItems": 3, "uniqueItems": True}
    assert all(sorted(v) == [1, 2, 3] for v in values_for(schema))


def test_impossible_unique_items_are_an_error() -> None:
    schema = {"type": "array", "items": {"enum": [1, 2]}, "minItems": 3, "uniqueItems": True}
    with pytest.raises(GenerationError):
        Generator(0).generate(schema)


def test_prefix_items_are_followed() -> None:
    schema = {
        "type": "array",
        "prefixItems": [{"type": "string", "format": "date"}, {"type": "integer"}],
        "items": False,
    }
    for value in values_for(schema):
        assert len(value) <= 2
        date.fromisoformat(value[0])


def test_contains_is_satisfied() -> None:
    schema = {
        "type": "array",
        "items": {"type": "integer"},
        "contains": {"const": 42},
        "minContains": 2,
    }
    assert all(v.count(42) >= 2 for v in values_for(schema))


def test_array_items_take_singular_names_for_realism() -> None:
    schema: dict[str, Any] = {"type": "object", "required": ["emails"]}
    schema["properties"] = {"emails": {"type": "array", "items": {"type": "string"}, "minItems": 1}}
    for value in values_for(schema):
        assert all("@" in e for e in value["emails"])


# Objects


def test_object_property_counts_are_respected() -> None:
    props = {name: {"type": "integer"} for name in "abcdef"}
    schema = {"type": "object", "properties": props, "minProperties": 2, "maxProperties": 3}
    assert all(2 <= len(v) <= 3 for v in values_for(schema))


def test_additional_properties_false_allows_only_declared_names() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "additionalProperties": False,
        "minProperties": 1,
    }
    assert all(set(v) == {"a"} for v in values_for(schema))


def test_free_form_maps_get_entries_of_the_value_schema() -> None:
    schema = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
    values = values_for(schema)
    assert all(v and all(isinstance(x, int) for x in v.values()) for v in values)


def test_pattern_properties_name_new_properties() -> None:
    schema = {
        "type": "object",
        "patternProperties": {"^x-[a-z]+$": {"type": "string"}},
        "additionalProperties": False,
        "minProperties": 2,
    }
    for value in values_for(schema):
        assert len(value) >= 2
        assert all(re.fullmatch("x-[a-z]+", k) for k in value)


def test_property_names_constrain_new_names() -> None:
    schema = {"type": "object", "propertyNames": {"pattern": "^[A-Z]{4}$"}, "minProperties": 1}
    for value in values_for(schema):
        assert all(re.fullmatch("[A-Z]{4}", k) for k in value)


def test_dependent_required_pulls_in_dependencies() -> None:
    schema = {
        "type": "object",
        "required": ["card"],
        "properties": {"card": {"type": "string"}, "cvv": {"type": "string"}},
        "dependentRequired": {"card": ["cvv"]},
    }
    assert all("cvv" in v for v in values_for(schema, direction="request"))


def test_deep_objects_include_fewer_optional_properties() -> None:
    nested: dict[str, Any] = {"type": "object", "properties": {"x": {"type": "integer"}}}
    for _ in range(8):
        nested = {"type": "object", "properties": {"x": {"type": "integer"}, "child": nested}}
    value = Generator(0).generate(nested)
    assert depth_of(value) <= 7


# Property-based


MIXED: dict[str, Any] = {
    "type": "object",
    "required": ["id", "items"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2,4}$"},
        "items": {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": {
                "type": "object",
                "required": ["qty"],
                "properties": {
                    "qty": {"type": "integer", "minimum": 1, "maximum": 9},
                    "price": {"type": "number", "exclusiveMinimum": 0, "multipleOf": 0.05},
                    "note": {"type": ["string", "null"], "maxLength": 12},
                },
            },
        },
        "kind": {"oneOf": [{"const": "a"}, {"type": "integer", "minimum": 1}]},
    },
}


@settings(max_examples=40, deadline=None, database=None)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_any_seed_gives_a_valid_value(seed: int) -> None:
    assert_valid(MIXED, Generator(seed).generate(MIXED))


@settings(max_examples=30, deadline=None, database=None)
@given(low=st.integers(-1000, 1000), span=st.integers(0, 50), step=st.sampled_from([1, 3, 0.5]))
def test_any_satisfiable_integer_range_is_hit(low: int, span: int, step: float) -> None:
    schema = {"type": "integer", "minimum": low, "maximum": low + span + 5, "multipleOf": step}
    assert_valid(schema, Generator(0).generate(schema))


# Real specs


def corpus_paths() -> list[Path]:
    paths = sorted(p for p in SPECS.iterdir() if p.suffix in (".yaml", ".yml"))
    return [*paths, SPECS / "oai-petstore-separate.swagger20" / "spec" / "swagger.yaml"]


def operation_schemas(op: Any) -> list[tuple[str, dict[str, Any], Direction]]:
    found: list[tuple[str, dict[str, Any], Direction]] = []
    for status, response in op.responses.items():
        for media in response.media.values():
            if media.schema is not None:
                found.append((f"{op.key} {status}", media.schema.json, "response"))
    for param in op.parameters:
        if param.schema is not None:
            found.append((f"{op.key} param {param.name}", param.schema.json, "request"))
    for media in op.body.media.values() if op.body else ():
        if media.schema is not None:
            found.append((f"{op.key} body {media.name}", media.schema.json, "request"))
    for callback in op.callbacks:
        for inner in callback.operations:
            found.extend(operation_schemas(inner))
    return found


def test_every_schema_of_the_spec_corpus_gets_valid_values() -> None:
    if not SPECS.is_dir():
        pytest.skip(f"the shared spec corpus is not present at {SPECS}")
    failures: list[str] = []
    checked = 0
    for path in corpus_paths():
        spec = load_spec(path, spec_root=SPECS)
        operations = [*spec.operations, *(hook.operation for hook in spec.webhooks)]
        generator = Generator()
        for label, schema, direction in (s for op in operations for s in operation_schemas(op)):
            validator = Draft202012Validator(
                schema, format_checker=Draft202012Validator.FORMAT_CHECKER
            )
            for seed in range(5):
                where = f"{path.name} {label} seed {seed}"
                try:
                    value = generator.generate(schema, direction=direction, rng=random.Random(seed))
                except GenerationError as exc:
                    failures.append(f"{where}: {exc}")
                    continue
                checked += 1
                failures.extend(f"{where}: {e.message}" for e in validator.iter_errors(value))
    assert checked > 1000
    assert not failures, "\n".join(failures)
