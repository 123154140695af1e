"""Reading a nested mapping field by field, with errors that name the field's full path."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from torchyard.api.errors import SpecError
from torchyard_spec.catalog import MODULE_REF

_MISSING = object()


class Fields:
    """A view of one mapping inside a resource, at a dotted ``path``."""

    def __init__(self, data: Any, path: str):
        if data is not None and not isinstance(data, Mapping):
            raise SpecError(path, f"must be an object, got {type(data).__name__}")
        self.present = data is not None
        self.data: Mapping[str, Any] = data or {}
        self.path = path

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def _get(self, key: str, required: bool) -> Any:
        value = self.data.get(key, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise SpecError(self._at(key), "is required")
            return _MISSING
        return value

    def child(self, key: str, required: bool = False) -> "Fields":
        value = self._get(key, required)
        return Fields(None if value is _MISSING else value, self._at(key))

    def string(self, key: str, required: bool = False) -> str | None:
        value = self._get(key, required)
        if value is _MISSING:
            return None
        if not isinstance(value, str) or (required and not value):
            raise SpecError(self._at(key), f"must be a non-empty string, got {value!r}")
        return value

    def enum(self, key: str, allowed: Iterable[str], default: str) -> str:
        value = self._get(key, False)
        if value is _MISSING:
            return default
        allowed = tuple(allowed)
        if value not in allowed:
            raise SpecError(self._at(key), f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    def integer(self, key: str, default: Any, minimum: int | None = None, maximum: int | None = None) -> Any:
        value = self._get(key, False)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(self._at(key), f"must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise SpecError(self._at(key), f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise SpecError(self._at(key), f"must be <= {maximum}, got {value}")
        return value

    def number(
        self,
        key: str,
        default: Any,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: bool = False,
    ) -> Any:
        value = self._get(key, False)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(self._at(key), f"must be a number, got {value!r}")
        if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
            relation = ">" if exclusive_minimum else ">="
            raise SpecError(self._at(key), f"must be {relation} {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise SpecError(self._at(key), f"must be <= {maximum}, got {value}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, False)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise SpecError(self._at(key), f"must be true or false, got {value!r}")
        return value

    def mapping(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, False)
        if value is _MISSING:
            return {} if default is _MISSING else default
        if not isinstance(value, Mapping):
            raise SpecError(self._at(key), f"must be an object, got {type(value).__name__}")
        return dict(value)

    def string_list(self, key: str) -> list[str]:
        value = self._get(key, False)
        if value is _MISSING:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SpecError(self._at(key), "must be a list of strings")
        return list(value)

    def list_of_mappings(self, key: str, default: Any) -> Any:
        value = self._get(key, False)
        if value is _MISSING:
            return default
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise SpecError(self._at(key), "must be a list of objects")
        return tuple(dict(v) for v in value)

    def module_ref(self, key: str, required: bool = False) -> str | None:
        value = self.string(key, required)
        if value is not None and not MODULE_REF.match(value):
            raise SpecError(self._at(key), f"must look like 'package.module:function', got {value!r}")
        return value
