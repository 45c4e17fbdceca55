"""The object every command receives: the settings, built once at the edge and passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from agent.settings import Settings, load_settings


@dataclass
class AppState:
    config_file: str | None

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_file)


def app_state(config_file: str | None) -> AppState:
    return AppState(config_file)
