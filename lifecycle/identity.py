"""Say who the current user is and which roles they hold per model; demo and real sign-in share it."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from .models import Frozen, Name, Role
from .store import Store

TEAM_FILE = Path(__file__).resolve().parent.parent / "config" / "team.yaml"


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

    def role_summary(self) -> str:
        """Return every role held, per model: 'card-fraud: Model owner; churn: Product owner'."""
        parts = [f"{m}: {self.role_labels(m)}" for m in sorted(self.roles) if self.roles[m]]
        return "; ".join(parts) or "no role"

    def role_labels(self, model: str) -> str:
        """Return the user's roles on a model as readable text."""
        held = sorted(self.roles_for(model), key=list(Role).index)
        return ", ".join(r.label for r in held) or "no role"


class GroupRoles(Frozen):
    """Roles that an ID-token claim grants: group name -> model id -> roles."""

    claim: Name = Field("groups", description="the ID-token claim that lists the user's groups")
    groups: dict[Name, dict[Name, list[Role]]] = Field(default_factory=dict)

    def roles(self, groups: list[str]) -> dict[str, set[Role]]:
        out: dict[str, set[Role]] = {}
        for group in groups:
            for model, roles in self.groups.get(group, {}).items():
                out.setdefault(model, set()).update(roles)
        return out


class TeamConfigError(ValueError):
    """The team file cannot be used; names the file and the field."""


def load_group_roles(path: str | Path | None = None) -> GroupRoles:
    """Read the groups -> roles mapping from $SEAMLINE_TEAM or config/team.yaml; no file means no mapping."""
    path = Path(path or os.environ.get("SEAMLINE_TEAM") or TEAM_FILE)
    if not path.is_file():
        return GroupRoles()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return GroupRoles.model_validate(data)
    except yaml.YAMLError as exc:
        raise TeamConfigError(f"{path.name}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise TeamConfigError(f"{path.name}: {where}: {err['msg']}") from None


def claim_groups(claims: dict, mapping: GroupRoles) -> list[str]:
    """Return the group names an ID token's claim carries (a list or one string)."""
    value = claims.get(mapping.claim)
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return []


def user_for(store: Store, email: str, name: str | None = None, demo: bool = False,
             groups: list[str] | None = None, mapping: GroupRoles | None = None) -> User:
    """Return the user with the roles the team directory gives their email plus those their groups map to."""
    people = {p.email: p.name for p in store.people()}
    roles = {m: set(rs) for m, rs in store.roles_of(email).items()}
    if groups and mapping is not None:
        for model, extra in mapping.roles(groups).items():
            roles.setdefault(model, set()).update(extra)
    return User(email=email, name=name or people.get(email, email),
                roles={m: frozenset(rs) for m, rs in roles.items() if rs}, demo=demo)


def demo_users(store: Store) -> list[User]:
    """Return everyone in the team directory as a demo identity."""
    return [user_for(store, p.email, p.name, demo=True) for p in store.people()]
