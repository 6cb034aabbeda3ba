"""People and permissions: who a visitor is to the job queue, whether they may stop a job, and
their requests to it (refusals shown in one line).

Who a visitor is, first that applies: the person signed in with st.login (their email, else their
subject); the name a trusted reverse proxy puts in FMNIST_TRUSTED_HEADER; else a name the lab
issues, signed with the cache folder's key, that the browser keeps in a cookie (a reload, a second
tab and a restarted server all find the same person; store/identity.py)."""

from __future__ import annotations

import logging

import streamlit as st
import streamlit.components.v2 as components

from fmnist_core.base import environment
from fmnist_core.runs.jobs import LAB
from fmnist_core.store import identity
from ui import keys
from ui.jobs import job_queue
from ui.resources import run_cache

log = logging.getLogger("fmnist_lab")
LOCAL_ADDRESSES = {"", "localhost", "127.0.0.1", "::1"}
COOKIE_DAYS = 180

# Sets the lab's cookie in this browser: the only way the server can leave a name a reload finds
# (st.context.cookies reads cookies, nothing in Streamlit writes them).
_remember = components.component(
    "fmnist_lab.remember",
    html="<span></span>",
    js="""
export default function ({ data }) {
  if (data && data.cookie && !document.cookie.split("; ").includes(data.pair)) {
    document.cookie = data.cookie;
  }
}
""",
)


def class_mode() -> bool:
    """A lab served to others (its server.address is not this machine's own, or FMNIST_CLASS=1):
    each job is then its askers' to stop. On a person's own machine everyone may stop anything."""
    forced = environment.optional_flag("FMNIST_CLASS")
    if forced is not None:
        return forced
    return str(st.get_option("server.address") or "").strip() not in LOCAL_ADDRESSES


def _signed_in() -> str | None:
    if not getattr(st.user, "is_logged_in", False):
        return None
    name = st.user.get("email") or st.user.get("sub")
    return f"user:{name}" if isinstance(name, str) and name.strip() else None


def _from_proxy() -> str | None:
    header = environment.trusted_header()
    if not header:
        return None
    value = (st.context.headers or {}).get(header, "")
    value = value.strip() if isinstance(value, str) else ""
    return f"proxy:{value[:200]}" if value else None


def me() -> str:
    """Who this visitor is to the queue (see the module's docstring)."""
    person = _signed_in() or _from_proxy()
    if person:
        return person
    known = st.session_state.get(keys.OWNER)
    if known:
        return known
    key = identity.signing_key(run_cache().root)
    token = (st.context.cookies or {}).get(identity.COOKIE)
    name = identity.verify(key, token)
    if name is None:
        token = identity.issue(key)
        name = identity.verify(key, token)
        st.session_state[keys.OWNER_TOKEN] = token  # remember_me hands it to the browser
    st.session_state[keys.OWNER] = f"person:{name}"
    return st.session_state[keys.OWNER]


def arrive() -> None:
    """Every run of a page: who this visitor is, kept by the browser where the lab just named them;
    an admin token taken out of the address is checked."""
    take_admin_token()
    is_admin()  # kept in the session: a reload or a second tab of an admin is one at once
    _remember_me()


def _remember_me() -> None:
    me()
    token = st.session_state.get(keys.OWNER_TOKEN)
    if not token:
        return
    pair = f"{identity.COOKIE}={token}"
    base = "/" + (st.get_option("server.baseUrlPath") or "").strip("/")
    cookie = f"{pair}; path={base}; max-age={COOKIE_DAYS * 86400}; SameSite=Strict"
    with st.container(height=1, border=False):  # nothing to see
        _remember(data={"cookie": cookie, "pair": pair}, key="people:remember")
    if token in (st.context.cookies or {}).values():
        st.session_state.pop(keys.OWNER_TOKEN, None)


@st.cache_resource
def _admins() -> set[str]:
    """The people (me()) who showed the admin token on this server: an admin stays one after a
    reload and in a second tab, as the person does, until the server restarts."""
    return set()


def take_admin_token() -> None:
    """Check a ?admin= value navigation.take_admin_link took out of the address; say the verdict
    (a teacher with a typo would otherwise see nothing happen)."""
    given = st.session_state.pop(keys.ADMIN_GIVEN, None)
    if given is None or not class_mode():
        return
    if identity.same_secret(given, environment.admin_token()):
        _admins().add(me())
        st.session_state[keys.ADMIN] = True
        st.toast("Admin: you may stop any job on this server (in this browser, until the server restarts).")
    else:
        log.warning("admin: a wrong token was given")  # never the token itself
        st.toast("That admin link's token is not this lab's: nothing changed.", icon=":material/block:")


def is_admin() -> bool:
    """Whether this visitor may stop any job: always on a person's own machine; in a class, once
    they opened the lab as ?admin=FMNIST_ADMIN_TOKEN (this person on this server), or signed in as
    one of FMNIST_ADMINS (emails)."""
    if not class_mode():
        return True
    if st.session_state.get(keys.ADMIN):
        return True
    signed_in = getattr(st.user, "is_logged_in", False) and str(st.user.get("email", "")).lower() in (
        environment.admins()
    )
    if signed_in or me() in _admins():
        st.session_state[keys.ADMIN] = True
    return bool(st.session_state.get(keys.ADMIN))


def whose(job) -> str:
    """A job's askers as this visitor sees them: you, the lab, or someone (never another's name)."""
    mine = me() in job.owners
    others = len([o for o in job.owners if o != me()])
    if not job.owners or job.owners == [LAB]:
        return "the lab"
    if mine:
        return "you" + (f" and {others} other{'s' if others > 1 else ''}" if others else "")
    return "someone else" if others == 1 else f"{others} others"


def may_stop(job) -> bool:
    return is_admin() or me() in job.owners


def enqueue(configs) -> bool:
    """Queue `configs` in order for this visitor; a refusal (a limit, a config that cannot train
    here) shown in one line on the page. True when all are queued."""
    queue = job_queue()
    try:
        for config in configs:
            queue.submit(config, owner=me())
    except ValueError as error:
        st.error(" ".join(str(error).split()))
        return False
    return True


def stop_job(run_id: str) -> None:
    """This visitor no longer wants the job (an admin stops it outright)."""
    try:
        job_queue().stop(run_id, None if is_admin() else me())
    except PermissionError as error:
        st.warning(str(error))
