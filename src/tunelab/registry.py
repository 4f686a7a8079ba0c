"""A named set of interchangeable parts: fine-tuning strategies, deployment methods.

Each part is registered once, beside its code; everything that lists or picks one (config
checks, stages, benchmarks, tests) asks the registry, so a new part touches one module and
one conf file.
"""

from typing import Generic, Iterator, Protocol, TypeVar

from tunelab.errors import TunelabError


class Named(Protocol):
    name: str


Part = TypeVar("Part", bound=Named)


class Registry(Generic[Part]):
    def __init__(self, key: str):
        self.key = key  # the config key that names a part, for errors
        self._parts: dict[str, Part] = {}

    def register(self, part: Part) -> Part:
        if part.name in self._parts:
            raise ValueError(f"{self.key}: {part.name!r} is registered twice")
        self._parts[part.name] = part
        return part

    def __getitem__(self, name: str) -> Part:
        if name not in self._parts:
            raise TunelabError(f"config key {self.key}: unknown value {name!r}; expected one of {self.names()}")
        return self._parts[name]

    def __contains__(self, name: object) -> bool:
        return name in self._parts

    def __iter__(self) -> Iterator[Part]:
        return iter(self._parts.values())

    def names(self) -> list[str]:
        return list(self._parts)

    def unregister(self, name: str) -> None:
        """For tests that register a toy part."""
        del self._parts[name]
