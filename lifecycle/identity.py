"""Say who the current user is and which roles they hold per model; demo and real sign-in share it."""

from __future__ import annotations

from pydantic import Field

from .models import Frozen, Name, Role
from .store import Store


class User(Frozen):
    email: Name
    name: Name
    roles: dict[str, frozenset[Role]] = Field(default_factory=dict, description="model id -> roles held")
    demo: bool = Field(False, description="a demo identity picked without sign-in")

    def roles_for(self, model: str) -> set[Role]:
        """Return the roles this user holds on a model."""
        return set(self.roles.get(model, frozenset()))

    def holds(self, model: str, role: Role) -> bool:
        """Tell whether this user holds a role on a model."""
        return role in self.roles.get(model, frozenset())

    def role_labels(self, model: str) -> str:
        """Return the user's roles on a model as readable text."""
        held = sorted(self.roles_for(model), key=list(Role).index)
        return ", ".join(r.label for r in held) or "no role"


def user_for(store: Store, email: str, name: str | None = None, demo: bool = False) -> User:
    """Return the user with the roles the team directory gives them."""
    people = {p.email: p.name for p in store.people()}
    roles = {m: frozenset(rs) for m, rs in store.roles_of(email).items()}
    return User(email=email, name=name or people.get(email, email), roles=roles, demo=demo)


def demo_users(store: Store) -> list[User]:
    """Return everyone in the team directory as a demo identity."""
    return [user_for(store, p.email, p.name, demo=True) for p in store.people()]
