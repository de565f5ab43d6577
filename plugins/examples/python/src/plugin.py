"""An example hookgate transform plugin: adds one header to every request.

Config: `{"header": "X-Source", "value": "hookgate"}` (both optional).

Implements the `transformer` world of `wit/transformer.wit` (hookgate:plugin@0.2.0).
componentize-py generates the `wit_world` package from the WIT at build time: the class
`WitWorld` below implements its exports (kebab-case names become snake_case), records are
dataclasses in `wit_world.imports.types`, `list<u8>` is `bytes`, a variant case is a class
such as `Outcome_Send(value)`, an `option` is the value or `None`. A `result` export returns
its `ok` value and raises `Err(value)` to answer `err(value)`.

hookgate gives plugins no WASI: keep this free of print, files, time, random and
sockets (the build stubs WASI out; see README.md).
"""

import json

from componentize_py_types import Err
from wit_world import WitWorld as Transformer
from wit_world.imports.types import (
    ConfigError,
    Event,
    Header,
    Outcome,
    Outcome_Send,
    OutgoingRequest,
    PluginInfo,
)


def _not_json(constant: str) -> None:
    # json.loads accepts NaN, Infinity and -Infinity, which are not JSON.
    raise ValueError(f"{constant} is not JSON")


def header(config: str) -> tuple[str, str]:
    """The config, read the same way by `validate_config` and `transform`.

    Returns (name, value) or raises `Err(ConfigError)`.
    """
    try:
        parsed = json.loads(config, parse_constant=_not_json)
    except ValueError:  # json.JSONDecodeError is a ValueError
        raise Err(ConfigError(pointer="", message="is not JSON"))
    name, value = "X-Source", "hookgate"
    if parsed is None:
        return name, value
    if not isinstance(parsed, dict):
        raise Err(ConfigError(pointer="", message="must be an object"))
    # Keys in sorted order, like the Rust example, so a config with several faults is refused
    # for the same one.
    for key in sorted(parsed):
        field = parsed[key]
        pointer = "/" + key.replace("~", "~0").replace("/", "~1")
        if key not in ("header", "value"):
            raise Err(ConfigError(pointer=pointer, message="is not a field (header, value)"))
        if not isinstance(field, str):
            raise Err(ConfigError(pointer=pointer, message="must be a string"))
        if key == "header":
            name = field
        else:
            value = field
    return name, value


class WitWorld(Transformer):
    def describe(self) -> PluginInfo:
        return PluginInfo(
            name="my_plugin",
            version="0.1.0",
            description="Adds one header to every request.",
            config_schema=None,
        )

    def validate_config(self, config: str) -> None:
        header(config)

    def transform(self, event: Event, request: OutgoingRequest, config: str) -> Outcome:
        try:
            name, value = header(config)
        except Err as error:
            raise Err(error.value.message)
        request.headers.append(Header(name=name, value=value))
        return Outcome_Send(request)
