"""Identity: roles from the team directory and from an ID token's groups; sign-in gates every page (AppTest)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lifecycle.identity import TEAM_FILE, GroupRoles, TeamConfigError, claim_groups, load_group_roles, user_for
from lifecycle.models import Role

APP = str(Path(__file__).resolve().parent.parent / "app.py")
AUTH = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "x" * 32, "client_id": "seamline",
        "client_secret": "s", "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}


def test_the_repository_team_file_maps_groups_to_roles_per_model():
    mapping = load_group_roles(TEAM_FILE)

    assert mapping.claim == "groups"
    assert mapping.roles(["fraud-model-owners", "release-managers"]) == {
        "card-fraud": {Role.MODEL, Role.PRODUCT}, "churn": {Role.PRODUCT}}
    assert mapping.roles(["nobody-knows-this-group"]) == {}


@pytest.mark.parametrize("text, message", [
    ("groups: [", "not valid YAML"),
    ("groups:\n  g:\n    card-fraud: [wizard]\n", "groups.g.card-fraud.0"),
    ("claim: groups\nextra: 1\n", "extra"),
])
def test_a_bad_team_file_is_refused_naming_the_field(tmp_path, text, message):
    path = tmp_path / "team.yaml"
    path.write_text(text)

    with pytest.raises(TeamConfigError, match=message):
        load_group_roles(path)


def test_no_team_file_means_no_roles_from_groups(tmp_path):
    assert load_group_roles(tmp_path / "absent.yaml") == GroupRoles()


def test_a_claim_may_be_a_list_or_one_string():
    mapping = GroupRoles(claim="roles")

    assert claim_groups({"roles": ["a", "b"]}, mapping) == ["a", "b"]
    assert claim_groups({"roles": "a"}, mapping) == ["a"]
    assert claim_groups({"groups": ["a"]}, mapping) == []


def test_a_signed_in_user_holds_directory_roles_plus_group_roles(demo_store):
    mapping = load_group_roles(TEAM_FILE)

    stranger = user_for(demo_store, "alice@example.com", "Alice", groups=["fraud-model-owners"], mapping=mapping)
    paul = user_for(demo_store, "paul@seamline.example", groups=["ml-platform"], mapping=mapping)

    assert stranger.roles == {"card-fraud": frozenset({Role.MODEL})}
    assert stranger.role_summary() == "card-fraud: Model owner"
    assert paul.holds("card-fraud", Role.PRODUCT) and paul.holds("card-fraud", Role.PLATFORM)
    assert not user_for(demo_store, "alice@example.com", "Alice").roles


@pytest.fixture
def signed(demo_copy, monkeypatch):
    monkeypatch.setenv("SEAMLINE_DB", str(demo_copy))
    monkeypatch.chdir(Path(APP).parent)

    def run(user: dict | None) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=60)
        at.secrets["auth"] = AUTH
        if user is not None:
            at.user = {"is_logged_in": True, **user}
        return at.run()
    return run


def test_with_sign_in_configured_an_anonymous_visitor_sees_only_the_sign_in(signed):
    at = signed(None)  # deep links are refused in the browser journey: AppTest runs a page file without app.py

    assert not at.exception
    assert [b.key for b in at.button] == ["login"]
    assert "Sign in to review releases." in [m.value for m in at.markdown]
    assert not at.dataframe and "demo_user" not in [s.key for s in at.selectbox]


def test_a_signed_in_user_sees_their_name_and_the_roles_their_groups_give(signed):
    at = signed({"email": "alice@example.com", "name": "Alice Example", "groups": ["fraud-model-owners"]})

    assert not at.exception
    captions = " ".join(c.value for c in at.sidebar.caption).replace("\\", "")
    assert "Signed in as **Alice Example** (alice@example.com) · card-fraud: Model owner" in captions
    assert "Demo identity" not in captions and "demo_user" not in [s.key for s in at.selectbox]
    assert "logout" in [b.key for b in at.button]


def test_with_sign_in_configured_an_anonymous_visitor_builds_no_demo(tmp_path, monkeypatch):
    from lifecycle.store import Store

    db = tmp_path / "empty" / "seamline.duckdb"
    monkeypatch.setenv("SEAMLINE_DB", str(db))
    monkeypatch.chdir(Path(APP).parent)
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["auth"] = AUTH

    at.run()

    assert not at.exception and [b.key for b in at.button] == ["login"]
    store = Store(db)
    try:
        assert store.is_empty() and store.clock() is None
    finally:
        store.close()
