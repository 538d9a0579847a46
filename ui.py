"""The single place where Streamlit meets lifecycle: the store, the current user, the model, shared widgets."""

from __future__ import annotations

import re
import threading
from datetime import datetime

import streamlit as st

from lifecycle.demo import build_demo
from lifecycle.identity import GroupRoles, TeamConfigError, User, claim_groups, demo_users, load_group_roles, user_for
from lifecycle.models import CheckResult, Model, short
from lifecycle.store import Store, db_path, shared_store

_OK, _BAD, _WAIT = ":green[:material/check_circle:]", ":red[:material/cancel:]", ":orange[:material/hourglass_top:]"
ICONS = {"pass": _OK, "fail": _BAD, "warn": ":orange[:material/warning:]", "inconclusive": ":gray[:material/help:]",
         "pending": _WAIT, "waived": ":blue[:material/verified:]", "present": _OK,
         "missing": ":gray[:material/radio_button_unchecked:]", "failing check": _BAD, "awaiting decision": _WAIT,
         "blocked": ":violet[:material/block:]", "go": ":green[:material/play_circle:]",
         "stop": ":red[:material/stop_circle:]", "wait": ":orange[:material/pause_circle:]"}
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~$:])")


@st.cache_resource(show_spinner=False)
def _build_lock(path: str) -> threading.Lock:
    return threading.Lock()


def store() -> Store:
    """Return the process-wide store over SEAMLINE_DB (a cursor per call inside)."""
    return shared_store(db_path())


def now() -> datetime:
    """Return the store's time (the wall clock, or a demo store's own clock); pages pass it to lifecycle."""
    return store().now()


def clock_notice() -> None:
    """Say so when the store keeps its own clock (the demo), and what it reads."""
    clock = store().clock()
    if clock is not None:
        st.caption(f":material/schedule: **Store clock** {now():%Y-%m-%d %H:%M} UTC — {plain(clock[2])}")


def plain(text: object) -> str:
    """Escape user text so Markdown shows it literally: no links, no HTML, no formatting."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", "  \n")


def ensure_demo() -> None:
    """Build the demo on first start with an empty store, showing progress; other sessions wait."""
    s = store()
    if not s.is_empty():
        return
    with _build_lock(db_path()):
        if not s.is_empty():
            return
        st.title("Seamline")
        st.info("First start: building the demo store by generating data, training scikit-learn models and "
                "running them through the pipeline. This takes under a minute.")
        bar = st.progress(0.0, text="starting")
        build_demo(s, progress=lambda f, text: bar.progress(min(max(f, 0.0), 1.0), text=text))
        bar.empty()
    st.rerun()


@st.cache_resource(show_spinner=False)
def group_roles() -> GroupRoles:
    """Return the groups -> roles mapping of config/team.yaml (read once per process; same for every user)."""
    return load_group_roles()


def auth_configured() -> bool:
    """Tell whether .streamlit/secrets.toml has an [auth] section (real sign-in)."""
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001 - no secrets file at all
        return False


def current_user() -> User:
    """Return the signed-in user, or the picked demo identity when no sign-in is configured."""
    s = store()
    if auth_configured():
        if not st.user.get("is_logged_in", False):
            # Register only the sign-in page: a deep link then lands here too, never on a page file.
            st.navigation([st.Page(_sign_in, title="Sign in", url_path="sign-in", default=True)],
                          position="hidden").run()
            st.stop()
        email = str(st.user.get("email") or st.user.get("sub"))
        try:
            mapping = group_roles()
        except TeamConfigError as exc:
            st.error(f"Sign-in is configured but the team file cannot be used: {plain(exc)}")
            st.stop()
        user = user_for(s, email, str(st.user.get("name") or email), groups=claim_groups(st.user.to_dict(), mapping),
                        mapping=mapping)
        with st.sidebar:
            st.caption(f"Signed in as **{plain(user.name)}** ({plain(user.email)}) · "
                       f"{plain(user.role_summary())}")
            if st.button("Log out", key="logout"):
                st.logout()
        return user
    users = {u.email: u for u in demo_users(s)}
    if not users:
        st.error("The team directory is empty: nobody to act as.")
        st.stop()
    emails = list(users)
    remembered = st.session_state.get("_demo_email")
    with st.sidebar:
        email = st.selectbox("Demo identity", emails, key="demo_user",
                             index=emails.index(remembered) if remembered in emails else 0,
                             on_change=_remember_identity,
                             format_func=lambda e: f"{users[e].name} — {_all_roles(users[e])}")
    st.session_state["_demo_email"] = email
    with st.sidebar:
        st.caption(":material/science: **Demo identity** — no sign-in is configured; pick who you act as.")
    return users[email]


def _sign_in() -> None:
    st.title("Seamline")
    st.write("Sign in to review releases.")
    if st.button("Log in", key="login"):
        st.login()


def _remember_identity() -> None:
    st.session_state["_demo_email"] = st.session_state["demo_user"]


def _all_roles(user: User) -> str:
    labels = sorted({r.label for roles in user.roles.values() for r in roles})
    return ", ".join(labels) or "no role"


def select_model() -> Model:
    """Show the model selector every page respects and return the chosen model."""
    models = {m.id: m for m in store().models()}
    ids = list(models)
    remembered = st.session_state.get("_model_id", st.query_params.get("model"))
    with st.sidebar:
        model_id = st.selectbox("Model", ids, key="model", index=ids.index(remembered) if remembered in ids else 0,
                                on_change=_remember_model, format_func=lambda m: models[m].name)
    st.session_state["_model_id"] = model_id
    return models[model_id]


def _remember_model() -> None:
    st.session_state["_model_id"] = st.session_state["model"]


def user() -> User:
    """Return the current user as set by app.py for this run; a page run without app.py stops here."""
    if "_user" not in st.session_state:
        st.warning("Open Seamline from its start page: this page needs the identity it sets.")
        st.stop()
    return st.session_state["_user"]


def model() -> Model:
    """Return the selected model as set by app.py for this run; a page run without app.py stops here."""
    if "_model" not in st.session_state:
        user()
        st.stop()
    return st.session_state["_model"]


def show_check(result: CheckResult | object, title: str | None = None) -> None:
    """Show a result that explains itself: icon, name, reason, and its evidence on demand."""
    status = getattr(result, "status")
    status = getattr(status, "value", status)
    name = title or getattr(result, "name", "")
    st.markdown(f"{ICONS.get(status, '•')} **{plain(name)}** — {plain(result.reason)}")
    evidence = getattr(result, "evidence", None)
    thresholds = getattr(result, "thresholds", None)
    if evidence or thresholds:
        with st.expander("evidence", expanded=False):
            if thresholds:
                st.json(thresholds)
            if evidence:
                st.json(evidence)


def digest_label(digest: str | None) -> str:
    """Return a short digest for display."""
    return short(digest)


def error(exc: Exception) -> None:
    """Show a domain error as a message, never a traceback."""
    st.error(plain(str(exc)))
