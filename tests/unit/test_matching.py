from __future__ import annotations

from apitwin.matching import MatchKind, Router
from apitwin.spec.model import Operation


def op(method: str, path: str) -> Operation:
    return Operation(method, path, f"{method}{path}", "", (), (), None, {}, ())


ROUTER = Router(
    [
        op("get", "/pets"),
        op("post", "/pets"),
        op("get", "/pets/{petId}"),
        op("delete", "/pets/{petId}"),
        op("get", "/pets/mine"),
        op("get", "/files/{name}.{ext}"),
        op("get", "/users/{id}/posts/{postId}"),
    ]
)


def test_concrete_segments_beat_templated_ones() -> None:
    found = ROUTER.match("GET", "/pets/mine")
    assert found.kind is MatchKind.FULL
    assert found.operation is not None and found.operation.path == "/pets/mine"


def test_templated_route_still_serves_methods_the_concrete_one_lacks() -> None:
    found = ROUTER.match("DELETE", "/pets/mine")
    assert found.kind is MatchKind.FULL
    assert found.operation is not None and found.operation.path == "/pets/{petId}"
    assert found.path_params == {"petId": "mine"}


def test_known_path_with_wrong_method_is_partial_with_allowed_methods() -> None:
    found = ROUTER.match("PUT", "/pets/7")
    assert found.kind is MatchKind.PARTIAL
    assert found.allowed == ("DELETE", "GET", "HEAD")


def test_unknown_path_is_no_match() -> None:
    assert ROUTER.match("GET", "/owners").kind is MatchKind.NONE
    assert ROUTER.match("GET", "/pets/1/2").kind is MatchKind.NONE


def test_partial_segment_templates_capture_each_name() -> None:
    found = ROUTER.match("GET", "/files/report.pdf")
    assert found.path_params == {"name": "report", "ext": "pdf"}


def test_path_parameters_stay_percent_encoded_for_style_decoding() -> None:
    found = ROUTER.match("GET", "/users/a%2Fb/posts/9")
    assert found.path_params == {"id": "a%2Fb", "postId": "9"}


def test_head_is_served_by_get() -> None:
    found = ROUTER.match("HEAD", "/pets")
    assert found.operation is not None and found.operation.method == "get"


def test_trailing_slash_matches_the_same_route() -> None:
    assert ROUTER.match("GET", "/pets/").kind is MatchKind.FULL


def test_a_repeated_request_line_gets_the_kept_answer_and_the_kept_answers_stay_bounded() -> None:
    import apitwin.matching as matching

    router = Router([op("get", "/pets/{petId}"), op("get", "/pets/mine")])
    first = router.match("GET", "/pets/7")
    assert router.match("GET", "/pets/7") is first
    assert router.match("DELETE", "/pets/7").kind is MatchKind.PARTIAL  # not the GET's answer
    for n in range(matching._MATCHES_KEPT + 10):
        found = router.match("GET", f"/pets/{n}")
        assert found.path_params == {"petId": str(n)}
    assert len(router._kept) == matching._MATCHES_KEPT
    # The oldest went first; a path asked again is matched afresh, and alike.
    again = router.match("GET", "/pets/7")
    assert again is not first and again == first
    assert router.match("GET", "/pets/mine").operation is not None
    assert router.match("GET", "/pets/mine").path_params == {}
