from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any, cast

import pytest

from apitwin.params import (
    MISSING,
    ParamProblem,
    coerce,
    deserialize_cookie,
    deserialize_header,
    deserialize_path,
    deserialize_query,
    split_query,
)
from apitwin.spec.model import Parameter, ParamLocation, Schema

STRING = {"type": "string"}
ARRAY = {"type": "array", "items": {"type": "string"}}
OBJECT = {
    "type": "object",
    "properties": {"R": {"type": "integer"}, "G": {"type": "integer"}, "B": {"type": "integer"}},
}
BLUE = "blue"
COLORS = ["blue", "black", "brown"]
RGB = {"R": 100, "G": 200, "B": 150}
DEFAULT_STYLE = {"path": "simple", "header": "simple", "query": "form", "cookie": "form"}


class _Compiler:
    """Stands in for SchemaCompiler: the test schemas are already bundled 2020-12."""

    def bundle(self, uri: str, raw: Any, direction: str) -> Any:
        return raw


def make(
    location: ParamLocation,
    schema: Any = None,
    *,
    style: str | None = None,
    explode: bool | None = None,
    name: str = "color",
    required: bool = False,
    allow_empty_value: bool = False,
    media_type: str | None = None,
) -> Parameter:
    style = style or DEFAULT_STYLE[location]
    return Parameter(
        name=name,
        location=location,
        required=required or location == "path",
        schema=None
        if schema is None
        else Schema(cast(Any, _Compiler()), "test.yaml#/x", schema, "request"),
        style=style,
        explode=style == "form" if explode is None else explode,
        allow_empty_value=allow_empty_value,
        media_type=media_type,
    )


def run(param: Parameter, raw: str) -> Any:
    if param.location == "path":
        return deserialize_path(param, raw)
    if param.location == "query":
        return deserialize_query(param, raw)
    if param.location == "header":
        return deserialize_header(param, raw)
    return deserialize_cookie(param, raw)


# One case per cell of the OpenAPI "Style Examples" table (3.0.x and 3.1.x variants), plus the
# cookie and header locations that reuse the form and simple rows.
STYLE_TABLE = [
    # matrix
    ("path", "matrix", False, STRING, ";color", ""),
    ("path", "matrix", False, STRING, ";color=blue", BLUE),
    ("path", "matrix", False, ARRAY, ";color=blue,black,brown", COLORS),
    ("path", "matrix", False, OBJECT, ";color=R,100,G,200,B,150", RGB),
    ("path", "matrix", True, STRING, ";color", ""),
    ("path", "matrix", True, STRING, ";color=blue", BLUE),
    ("path", "matrix", True, ARRAY, ";color=blue;color=black;color=brown", COLORS),
    ("path", "matrix", True, OBJECT, ";R=100;G=200;B=150", RGB),
    # label (3.1.1 joins non-exploded values with ',', 3.0.0-3.1.0 with '.')
    ("path", "label", False, STRING, ".", ""),
    ("path", "label", False, STRING, ".blue", BLUE),
    ("path", "label", False, ARRAY, ".blue,black,brown", COLORS),
    ("path", "label", False, ARRAY, ".blue.black.brown", COLORS),
    ("path", "label", False, OBJECT, ".R,100,G,200,B,150", RGB),
    ("path", "label", False, OBJECT, ".R.100.G.200.B.150", RGB),
    ("path", "label", True, STRING, ".", ""),
    ("path", "label", True, STRING, ".blue", BLUE),
    ("path", "label", True, ARRAY, ".blue.black.brown", COLORS),
    ("path", "label", True, OBJECT, ".R=100.G=200.B=150", RGB),
    # simple
    ("path", "simple", False, STRING, "blue", BLUE),
    ("path", "simple", False, ARRAY, "blue,black,brown", COLORS),
    ("path", "simple", False, OBJECT, "R,100,G,200,B,150", RGB),
    ("path", "simple", True, STRING, "blue", BLUE),
    ("path", "simple", True, ARRAY, "blue,black,brown", COLORS),
    ("path", "simple", True, OBJECT, "R=100,G=200,B=150", RGB),
    ("header", "simple", False, STRING, "", ""),
    ("header", "simple", False, STRING, "blue", BLUE),
    ("header", "simple", False, ARRAY, "blue,black,brown", COLORS),
    ("header", "simple", False, OBJECT, "R,100,G,200,B,150", RGB),
    ("header", "simple", True, STRING, "blue", BLUE),
    ("header", "simple", True, ARRAY, "blue,black,brown", COLORS),
    ("header", "simple", True, OBJECT, "R=100,G=200,B=150", RGB),
    # form
    ("query", "form", False, STRING, "color=", ""),
    ("query", "form", False, STRING, "color=blue", BLUE),
    ("query", "form", False, ARRAY, "color=blue,black,brown", COLORS),
    ("query", "form", False, OBJECT, "color=R,100,G,200,B,150", RGB),
    ("query", "form", True, STRING, "color=", ""),
    ("query", "form", True, STRING, "color=blue", BLUE),
    ("query", "form", True, ARRAY, "color=blue&color=black&color=brown", COLORS),
    ("query", "form", True, OBJECT, "R=100&G=200&B=150", RGB),
    ("cookie", "form", False, STRING, "blue", BLUE),
    ("cookie", "form", False, ARRAY, "blue,black,brown", COLORS),
    ("cookie", "form", False, OBJECT, "R,100,G,200,B,150", RGB),
    ("cookie", "form", True, STRING, "blue", BLUE),
    ("cookie", "form", True, ARRAY, "blue,black,brown", COLORS),
    ("cookie", "form", True, OBJECT, "R=100&G=200&B=150", RGB),
    # spaceDelimited, pipeDelimited (raw and percent-encoded delimiters)
    ("query", "spaceDelimited", False, ARRAY, "color=blue%20black%20brown", COLORS),
    ("query", "spaceDelimited", False, ARRAY, "color=blue+black+brown", COLORS),
    ("query", "spaceDelimited", False, OBJECT, "color=R%20100%20G%20200%20B%20150", RGB),
    ("query", "pipeDelimited", False, ARRAY, "color=blue|black|brown", COLORS),
    ("query", "pipeDelimited", False, ARRAY, "color=blue%7Cblack%7Cbrown", COLORS),
    ("query", "pipeDelimited", False, OBJECT, "color=R|100|G|200|B|150", RGB),
    ("query", "pipeDelimited", False, OBJECT, "color=R%7C100%7CG%7C200%7CB%7C150", RGB),
    # deepObject
    ("query", "deepObject", True, OBJECT, "color[R]=100&color[G]=200&color[B]=150", RGB),
    (
        "query",
        "deepObject",
        True,
        OBJECT,
        "color%5BR%5D=100&color%5BG%5D=200&color%5BB%5D=150",
        RGB,
    ),
]


@pytest.mark.parametrize(
    ("location", "style", "explode", "schema", "raw", "expected"),
    STYLE_TABLE,
    ids=[f"{c[0]}-{c[1]}-{'explode' if c[2] else 'flat'}-{c[4]}" for c in STYLE_TABLE],
)
def test_each_style_example_deserializes_to_the_typed_value(
    location: ParamLocation,
    style: str,
    explode: bool,
    schema: dict[str, Any],
    raw: str,
    expected: Any,
) -> None:
    assert run(make(location, schema, style=style, explode=explode), raw) == expected


# ---------------------------------------------------------------- path


def test_path_text_is_percent_decoded_after_splitting_so_an_encoded_comma_is_data() -> None:
    assert deserialize_path(make("path", ARRAY), "a%2Cb,c") == ["a,b", "c"]


def test_path_list_with_every_delimiter_encoded_is_still_split() -> None:
    param = make("path", {"type": "array", "items": {"type": "integer"}})
    assert deserialize_path(param, "1%2C2%2C3") == [1, 2, 3]


def test_path_primitive_is_decoded_whole_and_keeps_plus_signs() -> None:
    assert deserialize_path(make("path", STRING), "caf%C3%A9+1,2") == "café+1,2"


def test_path_integer_is_coerced_and_bad_text_is_left_for_the_validator() -> None:
    param = make("path", {"type": "integer"})
    assert deserialize_path(param, "42") == 42
    assert deserialize_path(param, "abc") == "abc"


def test_matrix_with_another_name_or_no_semicolon_is_a_problem() -> None:
    param = make("path", STRING, style="matrix")
    assert isinstance(deserialize_path(param, ";size=3"), ParamProblem)
    assert isinstance(deserialize_path(param, "blue"), ParamProblem)


def test_label_without_leading_dot_is_a_problem() -> None:
    problem = deserialize_path(make("path", STRING, style="label"), "blue")
    assert problem == ParamProblem("expected label style '.value', got 'blue'")


def test_object_with_an_odd_number_of_items_is_a_problem() -> None:
    problem = deserialize_path(make("path", OBJECT), "R,100,G")
    assert isinstance(problem, ParamProblem)
    assert "pairs" in problem.message


def test_empty_array_and_object_values_become_empty_containers() -> None:
    assert deserialize_path(make("path", ARRAY, style="matrix"), ";color=") == []
    assert deserialize_path(make("path", OBJECT), "") == {}


def test_path_without_schema_keeps_the_decoded_string() -> None:
    assert deserialize_path(make("path"), "a%20b,c") == "a b,c"


# ---------------------------------------------------------------- query


def test_absent_query_parameter_is_missing() -> None:
    assert deserialize_query(make("query", STRING), "other=1") is MISSING
    assert deserialize_query(make("query", ARRAY), "") is MISSING
    assert deserialize_query(make("query", OBJECT, style="deepObject", explode=True), "") is MISSING
    assert deserialize_query(make("query", OBJECT), "x=1") is MISSING


def test_query_accepts_a_string_pairs_or_a_mapping_of_raw_values() -> None:
    param = make("query", {"type": "array", "items": {"type": "integer"}})
    assert deserialize_query(param, "?color=1&color=2") == [1, 2]
    assert deserialize_query(param, [("color", "1"), ("color", "2")]) == [1, 2]
    assert deserialize_query(param, {"color": ["1", "2"]}) == [1, 2]


def test_split_query_keeps_text_encoded_and_treats_a_bare_key_as_empty() -> None:
    assert split_query("?a=1%2C2&&b&c=x=y") == [("a", "1%2C2"), ("b", ""), ("c", "x=y")]


def test_query_decodes_plus_as_space_and_percent_escapes() -> None:
    param = make("query", STRING, name="q")
    assert deserialize_query(param, "q=a+b%2Bc%26d") == "a b+c&d"


def test_query_comma_lists_split_on_literal_commas_before_decoding() -> None:
    param = make("query", ARRAY, explode=False)
    assert deserialize_query(param, "color=a%2Cb,c") == ["a,b", "c"]
    assert deserialize_query(param, "color=a%2Cb") == ["a", "b"]


def test_non_exploded_list_given_twice_keeps_every_item() -> None:
    param = make("query", ARRAY, explode=False)
    assert deserialize_query(param, "color=a,b&color=c") == ["a", "b", "c"]


def test_repeated_primitive_takes_the_first_value() -> None:
    assert deserialize_query(make("query", {"type": "integer"}), "color=1&color=2") == 1


def test_optional_allow_empty_value_parameter_given_empty_is_unused() -> None:
    param = make("query", {"type": "integer"}, allow_empty_value=True)
    assert deserialize_query(param, "color=") is MISSING
    assert deserialize_query(param, "color") is MISSING


def test_required_or_plain_empty_query_value_is_kept_for_the_validator() -> None:
    required = make("query", {"type": "integer"}, allow_empty_value=True, required=True)
    assert deserialize_query(required, "color=") == ""
    assert deserialize_query(make("query", STRING), "color=") == ""
    assert deserialize_query(make("query", {"type": ["integer", "null"]}), "color=") is None


def test_exploded_empty_array_is_empty() -> None:
    assert deserialize_query(make("query", ARRAY), "color=") == []


def test_exploded_object_takes_properties_from_refs_and_all_of() -> None:
    schema = {
        "allOf": [
            {"$ref": "#/$defs/Page"},
            {"properties": {"sort": {"type": "string"}}},
        ],
        "$defs": {"Page": {"type": "object", "properties": {"limit": {"type": "integer"}}}},
    }
    param = make("query", schema, name="page")
    assert deserialize_query(param, "limit=5&sort=name&other=x") == {"limit": 5, "sort": "name"}


def test_exploded_free_form_object_takes_every_key_but_the_reserved_ones() -> None:
    param = make("query", {"type": "object", "additionalProperties": {"type": "integer"}}, name="f")
    assert deserialize_query(param, "a=1&b=2&page=x", reserved={"page"}) == {"a": 1, "b": 2}


def test_exploded_object_property_given_twice_becomes_a_list() -> None:
    schema = {
        "type": "object",
        "properties": {"id": {"type": "array", "items": {"type": "integer"}}},
    }
    param = make("query", schema, name="filter")
    assert deserialize_query(param, "id=1&id=2") == {"id": [1, 2]}
    assert deserialize_query(param, "id=3") == {"id": [3]}


def test_deep_object_nests_brackets_and_collects_lists() -> None:
    schema = {
        "type": "object",
        "properties": {
            "price": {"type": "object", "properties": {"gte": {"type": "number"}}},
            "tags": {"type": "array", "items": {"type": "string"}},
            "ids": {"type": "array", "items": {"type": "integer"}},
        },
    }
    param = make("query", schema, style="deepObject", explode=True, name="filter")
    query = "filter[price][gte]=9.5&filter[tags][]=a&filter[tags][]=b&filter[ids]=1&filter[ids]=2"
    assert deserialize_query(param, query) == {
        "price": {"gte": 9.5},
        "tags": ["a", "b"],
        "ids": [1, 2],
    }


def test_deep_object_ignores_keys_of_other_parameters() -> None:
    param = make("query", OBJECT, style="deepObject", explode=True)
    assert deserialize_query(param, "colors[R]=1&color=2&color[G]=3") == {"G": 3}


# ---------------------------------------------------------------- header and cookie


def test_absent_header_and_cookie_are_missing() -> None:
    assert deserialize_header(make("header", STRING), None) is MISSING
    assert deserialize_cookie(make("cookie", STRING), None) is MISSING


def test_header_list_items_are_trimmed_and_not_percent_decoded() -> None:
    param = make("header", ARRAY)
    assert deserialize_header(param, "a, b%20c ,d") == ["a", "b%20c", "d"]


def test_cookie_value_is_percent_decoded() -> None:
    param = make("cookie", {"type": "array", "items": {"type": "integer"}}, explode=False)
    assert deserialize_cookie(param, "1%2C2") == [1, 2]
    assert deserialize_cookie(make("cookie", STRING), "a%3Bb") == "a;b"


# ---------------------------------------------------------------- content parameters


def test_json_content_parameter_is_parsed_as_json() -> None:
    param = make("query", {"type": "object"}, name="filter", media_type="application/json")
    assert deserialize_query(param, 'filter={"a":%20[1,2]}') == {"a": [1, 2]}


def test_bad_json_content_parameter_is_a_problem() -> None:
    param = make("header", {"type": "object"}, media_type="application/json")
    problem = deserialize_header(param, "{nope")
    assert isinstance(problem, ParamProblem)
    assert problem.message.startswith("not valid JSON: ")


def test_non_json_content_parameter_is_coerced_like_text() -> None:
    param = make("path", {"type": "integer"}, media_type="text/plain")
    assert deserialize_path(param, "7") == 7


# ---------------------------------------------------------------- coerce


@pytest.mark.parametrize(
    ("text", "schema", "expected"),
    [
        ("5", {"type": "integer"}, 5),
        ("-12", {"type": "integer"}, -12),
        ("+5", {"type": "integer"}, "+5"),
        (" 5", {"type": "integer"}, " 5"),
        ("1.5", {"type": "integer"}, "1.5"),
        ("abc", {"type": "integer"}, "abc"),
        ("1.5", {"type": "number"}, 1.5),
        ("3", {"type": "number"}, 3),
        ("1e3", {"type": "number"}, 1000.0),
        ("nan", {"type": "number"}, "nan"),
        ("1e999", {"type": "number"}, "1e999"),
        ("true", {"type": "boolean"}, True),
        ("false", {"type": "boolean"}, False),
        ("True", {"type": "boolean"}, "True"),
        ("1", {"type": "boolean"}, "1"),
        ("", {"type": ["integer", "null"]}, None),
        ("null", {"type": ["integer", "null"]}, None),
        ("", {"type": ["string", "null"]}, ""),
        ("null", {"type": ["null", "string"]}, "null"),
        ("", {"type": "null"}, None),
        ("", {"type": "string"}, ""),
        ("7", {"type": "string"}, "7"),
        ("7", {"type": ["string", "integer"]}, 7),
        ("7", {}, "7"),
        ("2", {"enum": [1, 2, 3]}, 2),
        ("x", {"const": "x"}, "x"),
        ("9" * 5000, {"type": "integer"}, "9" * 5000),
    ],
)
def test_coerce_converts_text_to_the_schema_type_or_leaves_it(
    text: str, schema: dict[str, Any], expected: Any
) -> None:
    result = coerce(text, schema, schema)
    assert result == expected
    assert type(result) is type(expected)


def test_coerce_follows_refs_into_defs() -> None:
    root = {
        "$ref": "#/$defs/Id",
        "$defs": {"Id": {"$ref": "#/$defs/Int"}, "Int": {"type": "integer"}},
    }
    assert coerce("5", root, root) == 5


def test_coerce_of_nullable_ref_reads_empty_as_null() -> None:
    root = {"anyOf": [{"$ref": "#/$defs/N"}, {"type": "null"}], "$defs": {"N": {"type": "number"}}}
    assert coerce("", root, root) is None
    assert coerce("2.5", root, root) == 2.5


def test_coerce_prefers_the_branch_whose_type_parses() -> None:
    schema = {"oneOf": [{"type": "string", "format": "date"}, {"type": "integer"}]}
    assert coerce("12", schema, schema) == 12
    assert coerce("2024-01-01", schema, schema) == "2024-01-01"
    assert coerce("x", {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}, {}) == "x"


def test_coerce_object_values_per_property_pattern_and_additional_schemas() -> None:
    schema = {
        "properties": {"n": {"type": "integer"}},
        "patternProperties": {"^f_": {"type": "boolean"}},
        "additionalProperties": {"type": "number"},
    }
    value = {"n": "1", "f_x": "true", "z": "2.5"}
    assert coerce(value, schema, schema) == {"n": 1, "f_x": True, "z": 2.5}


def test_coerce_object_finds_properties_of_polymorphic_branches() -> None:
    schema = {
        "oneOf": [
            {"type": "object", "properties": {"age": {"type": "integer"}}},
            {"type": "object", "properties": {"lives": {"type": "integer"}}},
        ]
    }
    assert coerce({"lives": "9"}, schema, schema) == {"lives": 9}


def test_coerce_array_uses_prefix_items_then_items() -> None:
    schema = {"prefixItems": [{"type": "boolean"}], "items": {"type": "integer"}}
    assert coerce(["true", "2", "x"], schema, schema) == [True, 2, "x"]


def test_coerce_array_of_objects_reads_json_items() -> None:
    schema = {"type": "array", "items": {"type": "object", "properties": {"a": {}}}}
    assert coerce(['{"a": "1"}', "junk"], schema, schema) == [{"a": "1"}, "junk"]


def test_coerce_nested_array_text_splits_on_commas_or_reads_json() -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    assert coerce("1,2", schema, schema) == [1, 2]
    assert coerce("[1, 2]", schema, schema) == [1, 2]
    assert coerce("", schema, schema) == []


def test_coerce_survives_recursive_and_malformed_schemas() -> None:
    root = {"$ref": "#/$defs/A", "$defs": {"A": {"allOf": [{"$ref": "#/$defs/A"}]}}}
    assert coerce("1", root, root) == "1"
    loop = {"anyOf": [{"$ref": "#"}]}
    assert coerce("1", loop, loop) == "1"
    for schema in ({"type": 42}, {"properties": 5}, {"$ref": "#/$defs/nope"}, {"anyOf": "x"}):
        assert coerce("1", schema, schema) == "1"
    assert coerce("1", None) == "1"


def test_coerce_leaves_json_typed_values_alone() -> None:
    assert coerce(5, {"type": "string"}, {}) == 5


def test_coerce_of_self_referencing_any_of_ends_quickly() -> None:
    twice = {"anyOf": [{"$ref": "#"}, {"$ref": "#"}]}
    assert coerce("1", twice, twice) == "1"
    json_value = {
        "$ref": "#/$defs/V",
        "$defs": {
            "V": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "number"},
                    {"type": "array", "items": {"$ref": "#/$defs/V"}},
                    {"type": "object", "additionalProperties": {"$ref": "#/$defs/V"}},
                ]
            }
        },
    }
    assert coerce("a", json_value, json_value) == "a"
    assert coerce("2", json_value, json_value) == 2
    assert coerce({"k": "3", "l": ["x", "4"]}, json_value, json_value) == {"k": 3, "l": ["x", 4]}


def test_coerce_prefers_text_over_a_comma_split_guess_but_not_over_json() -> None:
    schema = {"type": ["array", "string"], "items": {"type": "integer"}}
    assert coerce("1,2", schema, schema) == "1,2"
    assert coerce("[1, 2]", schema, schema) == [1, 2]
    assert coerce("1,2", {"type": ["array", "null"], "items": {"type": "integer"}}, {}) == [1, 2]
    assert coerce("", {"type": ["array", "null"]}, {}) is None


def test_missing_is_a_falsy_singleton_that_survives_copying() -> None:
    assert not MISSING
    assert copy.deepcopy(MISSING) is MISSING
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING


def test_a_parameters_shape_is_worked_out_once_and_is_not_part_of_its_identity() -> None:
    first = make("query", ARRAY, explode=False)
    assert run(first, "color=blue,black") == ["blue", "black"]
    assert first.memo == {"shape": "array"}
    second = dataclasses.replace(first)
    assert first == second and not second.memo


_SCALAR_TEXTS = [
    "", "0", "-7", "42", "007", "1.5", "-.5", "1e3", "1E-2", "nan", "inf", "true", "false",
    "True", "null", " 1", "1 ", "0x10", "1_000", "9" * 5000, "a,b", "[1]", "{}", "héllo",
]  # fmt: skip


@pytest.mark.parametrize("kind", ["string", "integer", "number", "boolean"])
@pytest.mark.parametrize("text", _SCALAR_TEXTS)
def test_a_scalar_parameter_reads_its_text_as_the_full_search_would(kind: str, text: str) -> None:
    schema = {"type": kind, "format": "int64", "minimum": 0}
    param = make("path", schema, name="id")
    # A schema with an allOf is never read the short way: it stands for the full search here.
    searched = make("path", {"allOf": [schema]}, name="id")
    got, expected = deserialize_path(param, text), deserialize_path(searched, text)
    assert got == expected and type(got) is type(expected)
    assert param.memo["scalar"] is not None and searched.memo["scalar"] is None
