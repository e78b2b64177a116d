"""The three patch formats of the API simulation."""

from __future__ import annotations

from typing import Any

import pytest

from k8s.apisim.errors import ApiError
from k8s.apisim.patch import JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, apply_patch

POD: dict[str, Any] = {
    "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
    "spec": {
        "schedulingGates": [{"name": "g1"}, {"name": "g2"}],
        "containers": [{"name": "main", "image": "v1", "env": [{"name": "A", "value": "1"}]}],
        "tolerations": [{"key": "t", "operator": "Exists"}],
    },
}


def test_json_patch_add_remove_replace_test_move_copy() -> None:
    out = apply_patch(
        POD,
        JSON_PATCH,
        [
            {"op": "test", "path": "/spec/schedulingGates/1/name", "value": "g2"},
            {"op": "remove", "path": "/spec/schedulingGates/1"},
            {"op": "add", "path": "/metadata/labels/c~1d", "value": "3"},
            {"op": "replace", "path": "/spec/containers/0/image", "value": "v2"},
            {"op": "copy", "from": "/metadata/labels/a", "path": "/metadata/labels/e"},
            {"op": "move", "from": "/metadata/labels/b", "path": "/metadata/labels/f"},
            {"op": "add", "path": "/metadata/finalizers/-", "value": "y"},
        ],
    )
    assert out["spec"]["schedulingGates"] == [{"name": "g1"}]
    assert out["metadata"]["labels"] == {"a": "1", "c/d": "3", "e": "1", "f": "2"}
    assert out["spec"]["containers"][0]["image"] == "v2"
    assert out["metadata"]["finalizers"] == ["x", "y"]
    assert POD["spec"]["schedulingGates"] == [{"name": "g1"}, {"name": "g2"}]  # untouched


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "remove", "path": "/spec/schedulingGates/5"}],
        [{"op": "remove", "path": "/spec/nodeSelector"}],
        [{"op": "test", "path": "/spec/schedulingGates/0/name", "value": "other"}],
        [{"op": "replace", "path": "/spec/missing/x", "value": 1}],
    ],
)
def test_json_patch_that_cannot_apply_is_422(ops: list[dict[str, Any]]) -> None:
    with pytest.raises(ApiError) as err:
        apply_patch(POD, JSON_PATCH, ops)
    assert err.value.code == 422


def test_malformed_json_patch_is_400() -> None:
    with pytest.raises(ApiError) as err:
        apply_patch(POD, JSON_PATCH, [{"op": "frobnicate", "path": "/a"}])
    assert err.value.code == 400
    with pytest.raises(ApiError) as err:
        apply_patch(POD, JSON_PATCH, {"op": "add"})
    assert err.value.code == 400


def test_merge_patch_replaces_lists_and_deletes_nulls() -> None:
    out = apply_patch(
        POD,
        MERGE_PATCH,
        {
            "metadata": {"labels": {"a": None, "z": "9"}},
            "spec": {"schedulingGates": [{"name": "g2"}]},
        },
    )
    assert out["metadata"]["labels"] == {"b": "2", "z": "9"}
    assert out["spec"]["schedulingGates"] == [{"name": "g2"}]
    assert out["spec"]["containers"] == POD["spec"]["containers"]


def test_strategic_merge_merges_keyed_lists_and_deletes_elements() -> None:
    out = apply_patch(
        POD,
        STRATEGIC_MERGE_PATCH,
        {
            "spec": {
                "schedulingGates": [{"name": "g1", "$patch": "delete"}],
                "containers": [
                    {"name": "main", "image": "v3", "env": [{"name": "B", "value": "2"}]},
                    {"name": "side", "image": "s"},
                ],
                "tolerations": [{"key": "u", "operator": "Exists"}],
            },
        },
    )
    assert out["spec"]["schedulingGates"] == [{"name": "g2"}]
    main, side = out["spec"]["containers"]
    assert main["image"] == "v3"
    assert main["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert side == {"name": "side", "image": "s"}
    # tolerations carry no merge key: the list is replaced
    assert out["spec"]["tolerations"] == [{"key": "u", "operator": "Exists"}]


def test_strategic_merge_directives() -> None:
    out = apply_patch(
        POD,
        STRATEGIC_MERGE_PATCH,
        {
            "metadata": {
                "labels": {"$patch": "replace", "only": "this"},
                "$deleteFromPrimitiveList/finalizers": ["x"],
            },
            "spec": {
                "containers": [{"$patch": "replace"}, {"name": "new", "image": "n"}],
                "$retainKeys": ["containers", "schedulingGates"],
                "$setElementOrder/schedulingGates": [{"name": "g2"}, {"name": "g1"}],
            },
        },
    )
    assert out["metadata"]["labels"] == {"only": "this"}
    assert out["metadata"]["finalizers"] == []
    assert out["spec"]["containers"] == [{"name": "new", "image": "n"}]
    assert set(out["spec"]) == {"containers", "schedulingGates"}


def test_strategic_merge_refuses_unknown_directive_and_missing_merge_key() -> None:
    with pytest.raises(ApiError) as err:
        apply_patch(POD, STRATEGIC_MERGE_PATCH, {"spec": {"$frob": 1}})
    assert err.value.code == 400
    with pytest.raises(ApiError) as err:
        apply_patch(POD, STRATEGIC_MERGE_PATCH, {"spec": {"containers": [{"image": "x"}]}})
    assert err.value.code == 400
