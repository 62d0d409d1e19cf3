"""What is up: each component of the local stack reports its state here; /health and the console read it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

STARTING, UP, FAILED, STOPPED = "starting", "up", "failed", "stopped"
DOWN = "down"  # a supervised child that died and is about to be restarted


@dataclass(frozen=True)
class ComponentState:
    name: str
    state: str
    detail: str = ""


Listener = Callable[[ComponentState], None]


class Components:
    """A thread-safe registry of component states, in the order components were announced."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, ComponentState] = {}
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def set(self, name: str, state: str, detail: str = "") -> None:
        change = ComponentState(name, state, detail)
        with self._lock:
            if self._states.get(name) == change:
                return
            self._states[name] = change
        for listener in list(self._listeners):
            listener(change)

    def states(self) -> dict[str, str]:
        with self._lock:
            return {name: c.state for name, c in self._states.items()}

    def all_up(self) -> bool:
        states = self.states()
        return bool(states) and all(s == UP for s in states.values())
