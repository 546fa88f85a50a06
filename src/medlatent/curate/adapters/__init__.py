"""Dataset adapters: how one dataset publishes its labels, splits and exclusions.

Curation itself is generic (scan, decode, filter, split, shard); an adapter only reads the
dataset's own label files into one table keyed by the item's path under the raw root.
"""

from __future__ import annotations

import importlib

from medlatent.core.errors import ConfigError
from medlatent.curate.adapters.base import Adapter
from medlatent.curate.adapters.generic import GenericAdapter

_ADAPTERS: dict[str, type[Adapter]] = {"generic": GenericAdapter}


def register(name: str):
    """Class decorator for dataset-specific adapters."""

    def decorate(cls: type[Adapter]) -> type[Adapter]:
        _ADAPTERS[name] = cls
        return cls

    return decorate


def get_adapter(curation: dict) -> Adapter:
    name = curation.get("adapter", "generic")
    if name not in _ADAPTERS:
        raise ConfigError(
            f"curation.adapter={name!r} is not implemented; available: {sorted(_ADAPTERS)}. "
            "Meanwhile use adapter: generic with a labels.csv (columns file, patient_id, label columns)."
        )
    return _ADAPTERS[name](curation)


# Each module registers its adapter when imported, so they are imported once `register` exists.
for _module in (
    "amos",
    "cmmd",
    "cq500",
    "embed",
    "grazpedwri_dx",
    "mimic_cxr",
    "mrnet",
    "rsna_bone_age",
    "rsna_screening_mammo",
    "verse19",
    "vindr_mammo",
):
    importlib.import_module(f"medlatent.curate.adapters.{_module}")

__all__ = ["Adapter", "get_adapter", "register"]
