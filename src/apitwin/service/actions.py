"""Workflow actions from apitwin.yaml: named, typed steps that read like the partner's domain.

```yaml
actions:
  shortlist_expert:
    description: Shortlist an expert submitted to a project
    inputs:
      project_id: {type: string, required: true}
      expert_id: {type: string, required: true}
    steps:
      - action: {resource: experts, id: "{expert_id}", name: shortlist,
                 parent: {projects: "{project_id}"}}
```

Step kinds: ``create``, ``update``, ``action``, ``delete`` and ``emit``. Strings may name inputs as
``{input}`` and the record of the previous step as ``{last.<field>}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from apitwin.errors import ConfigError, InvalidInputError

if TYPE_CHECKING:
    from apitwin.service.control import ControlService

STEP_KINDS = ("create", "update", "action", "delete", "emit")
INPUT_TYPES = ("string", "integer", "number", "boolean", "object", "array")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


@dataclass(frozen=True, slots=True)
class ActionInput:
    name: str
    type: str = "string"
    required: bool = False
    description: str = ""
    enum: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    description: str
    inputs: tuple[ActionInput, ...]
    steps: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "inputs": {
                i.name: {
                    "type": i.type,
                    "required": i.required,
                    "enum": list(i.enum),
                    "description": i.description,
                }
                for i in self.inputs
            },
        }


def parse_actions(raw: Mapping[str, Any]) -> tuple[Action, ...]:
    actions = []
    for name, spec in raw.items():
        if not re.match(r"^[a-z][a-z0-9_]{0,63}$", name) or not isinstance(spec, Mapping):
            raise ConfigError(f"action {name!r}: names are lower_snake_case, values mappings")
        inputs = tuple(
            _input(name, key, value) for key, value in (spec.get("inputs") or {}).items()
        )
        steps = tuple(spec.get("steps") or ())
        for index, step in enumerate(steps):
            kinds = [k for k in step if k in STEP_KINDS] if isinstance(step, Mapping) else []
            if len(kinds) != 1:
                raise ConfigError(f"action {name!r} step {index + 1}: one of {STEP_KINDS}")
        actions.append(Action(name, str(spec.get("description") or name), inputs, steps))
    return tuple(actions)


def _input(action: str, name: str, raw: Any) -> ActionInput:
    spec = raw if isinstance(raw, Mapping) else {"type": raw}
    kind = spec.get("type", "string")
    if kind not in INPUT_TYPES:
        raise ConfigError(f"action {action!r} input {name!r}: type must be one of {INPUT_TYPES}")
    return ActionInput(
        name,
        kind,
        bool(spec.get("required")),
        str(spec.get("description", "")),
        tuple(spec.get("enum") or ()),
    )


async def run(
    control: ControlService, connection_id: str, action: Action, given: Mapping[str, Any]
) -> dict[str, Any]:
    """Run the steps in order; the answer lists each step's result."""
    values = _inputs(action, given)
    results: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    for step in action.steps:
        kind = next(k for k in step if k in STEP_KINDS)
        args = _fill(step[kind], {**values, "last": last})
        result = await _step(control, connection_id, kind, args)
        results.append({"step": kind, **result})
        last = dict(result.get("record") or {})
    return {"action": action.name, "steps": results}


async def _step(control: ControlService, cid: str, kind: str, args: Any) -> dict[str, Any]:
    if kind == "create":
        return await control.create_record(
            cid, args["resource"], args.get("data") or {}, parent=args.get("parent")
        )
    if kind == "update":
        return await control.update_record(
            cid, args["resource"], str(args["id"]), args.get("changes") or {}
        )
    if kind == "action":
        return await control.record_action(
            cid,
            args["resource"],
            str(args["id"]),
            args["name"],
            args.get("body"),
            parent=args.get("parent"),
        )
    if kind == "delete":
        return await control.delete_record(cid, args["resource"], str(args["id"]))
    return await control.trigger_event(
        cid, args["event"], record=args.get("record"), overrides=args.get("overrides")
    )


def _inputs(action: Action, given: Mapping[str, Any]) -> dict[str, Any]:
    known = {i.name: i for i in action.inputs}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise InvalidInputError(
            f"{action.name}: unknown input(s) {unknown}; inputs: {sorted(known)}", field=unknown[0]
        )
    for spec in action.inputs:
        if spec.required and given.get(spec.name) is None:
            raise InvalidInputError(
                f"{action.name}: input {spec.name!r} is required", field=spec.name
            )
        if spec.enum and spec.name in given and given[spec.name] not in spec.enum:
            raise InvalidInputError(
                f"{action.name}: {spec.name} must be one of {list(spec.enum)}", field=spec.name
            )
    return {k: v for k, v in given.items() if v is not None}


def _fill(value: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return _lookup(whole.group(1), values)  # keeps the value's own type
        return _PLACEHOLDER.sub(lambda m: str(_lookup(m.group(1), values)), value)
    if isinstance(value, Mapping):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


def _lookup(path: str, values: Mapping[str, Any]) -> Any:
    current: Any = values
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            raise InvalidInputError(f"{{{path}}} has no value in this action run", field=path)
        current = current[part]
    return current
