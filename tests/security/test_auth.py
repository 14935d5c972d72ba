"""Authentication and sessions (issue 18, items 2-5 and the login lows), against the real server.

Each test runs on uvicorn on 127.0.0.1 (``live``), on SQLite and on PostgreSQL.
On the code before the fix: the API kept the one-time password as the new one;
logout left the cookie and the bearer token valid; a password change left the
account's other tokens valid; a cookie-only ``POST /api/studies`` from a foreign
Origin without a CSRF token stored a study; a planted form token was accepted;
``aaaaaaaaaaaa`` was a valid password; padding the name with spaces bought more
login attempts; a failed login stored the typed name.
"""

from __future__ import annotations

import time

import httpx
import pytest

from meddx.service.security import RateLimiter
from meddx.storage.users import PasswordPolicyError, check_password_policy, trivial_password
from tests.security.conftest import FOREIGN, Live, bearer, form_csrf
from tests.service.conftest import png_bytes


def _upload(client: httpx.Client, headers: dict[str, str], seed: int = 3) -> httpx.Response:
    return client.post("/api/studies", headers=headers, data={"patient_id": f"SEC-{seed}"},
                       files={"file": ("x.png", png_bytes(seed=seed), "image/png")})


# --- item 2: the one-time password cannot be kept ------------------------------------------------------------


def test_api_password_change_refuses_the_current_password(live: Live) -> None:
    name, otp = live.add_user(one_time=True, prefix="otp")
    token = live.token(name, otp)
    with live.client() as c:
        kept = c.post("/api/me/password", headers=bearer(token), json={"current_password": otp, "new_password": otp})
        assert kept.status_code == 422 and "differ" in kept.text
        # still on the one-time password: nothing else opens
        assert c.get("/api/models", headers=bearer(token)).status_code == 403
        # the same for an ordinary password: "changing" it to itself is refused too
        other, password = live.add_user(prefix="same")
        token = live.token(other, password)
        same = c.post("/api/me/password", headers=bearer(token),
                      json={"current_password": password, "new_password": password})
        assert same.status_code == 422


# --- item 3: logout ends the session, cookie and bearer -------------------------------------------------------


def test_web_logout_ends_the_cookie_and_the_same_token_as_bearer(live: Live) -> None:
    name, password = live.add_user(prefix="out")
    with live.client() as browser:
        cookie = live.web_login(browser, name, password)
        assert browser.get("/api/me").status_code == 200
        csrf = form_csrf(browser.get("/"))
        assert browser.post("/logout", data={"csrf": csrf}).status_code == 303
    with live.client(cookies={"meddx_session": cookie}) as replay:
        assert replay.get("/api/me").status_code == 401
        assert replay.get("/").headers.get("location") == "/login"
    with live.client() as c:
        refused = c.get("/api/me", headers=bearer(cookie))
        assert refused.status_code == 401 and "ended" in refused.json()["detail"]


def test_api_logout_ends_the_bearer_token_only(live: Live) -> None:
    name, password = live.add_user(prefix="apiout")
    first, second = live.token(name, password), live.token(name, password)
    with live.client() as c:
        assert c.post("/api/auth/logout", headers=bearer(first)).status_code == 204
        assert c.get("/api/me", headers=bearer(first)).status_code == 401
        assert c.post("/api/auth/logout", headers=bearer(first)).status_code == 401
        assert c.get("/api/me", headers=bearer(second)).status_code == 200  # another device stays logged in


# --- item 4: a password change ends every other session -------------------------------------------------------


def test_password_change_revokes_the_accounts_other_tokens(live: Live) -> None:
    name, password = live.add_user(prefix="chg")
    mine, laptop = live.token(name, password), live.token(name, password)
    with live.client() as browser, live.client() as c:
        cookie = live.web_login(browser, name, password)
        new = "seven orange kites drifting"
        assert c.post("/api/me/password", headers=bearer(mine),
                      json={"current_password": password, "new_password": new}).status_code == 204
        assert c.get("/api/me", headers=bearer(mine)).status_code == 200  # the session that changed it stays
        assert c.get("/api/me", headers=bearer(laptop)).status_code == 401
        assert c.get("/api/me", headers=bearer(cookie)).status_code == 401
        assert browser.get("/api/me").status_code == 401
        assert c.post("/api/auth/token", data={"username": name, "password": password}).status_code == 401
        assert c.post("/api/auth/token", data={"username": name, "password": new}).status_code == 200


def test_web_password_change_keeps_its_own_session_and_ends_the_others(live: Live) -> None:
    name, otp = live.add_user(one_time=True, prefix="webchg")
    api_token = live.token(name, otp)  # say the one-time password leaked and was used elsewhere
    with live.client() as browser:
        live.web_login(browser, name, otp)
        page = browser.get("/password")
        new = "quiet lantern meadow eleven"
        done = browser.post("/password", data={"csrf": form_csrf(page), "current_password": otp,
                                               "new_password": new, "confirm_password": new})
        assert done.status_code == 303
        assert browser.get("/api/me").status_code == 200
    with live.client() as c:
        assert c.get("/api/me", headers=bearer(api_token)).status_code == 401


# --- item 5: CSRF on cookie-authenticated /api routes, session-bound form tokens ------------------------------


def _study_count(live: Live, token: str) -> int:
    with live.client() as c:
        listed = c.get("/api/studies", headers=bearer(token), params={"limit": 500})
        assert listed.status_code == 200
        return len(listed.json())


def test_cookie_only_api_writes_need_the_sessions_csrf_token(live: Live) -> None:
    name, password = live.add_user(prefix="csrf")
    audit_token = live.token(name, password)
    with live.client() as browser:
        live.web_login(browser, name, password)
        before = _study_count(live, audit_token)
        # the probe: a foreign page posts with the victim's cookie and no token
        assert _upload(browser, {"Origin": FOREIGN}).status_code == 403
        assert _upload(browser, {}).status_code == 403  # no Origin at all: still needs the token
        assert _upload(browser, {"X-CSRF-Token": "0" * 48}).status_code == 403  # a wrong token
        token = form_csrf(browser.get("/"))
        wrong_site = {"X-CSRF-Token": token, "Origin": FOREIGN}  # the right token from another site
        assert _upload(browser, wrong_site).status_code == 403
        assert _study_count(live, audit_token) == before  # nothing was stored
        assert _upload(browser, {"X-CSRF-Token": token, "Origin": live.url}).status_code == 201  # the page's own call
        assert browser.post("/api/stream/alerts/1/ack").status_code == 403  # every cookie-only /api write
        assert browser.get("/api/studies").status_code == 200  # reads need no token
    with live.client() as c:  # bearer calls need no CSRF token (a browser never adds the header by itself)
        assert _upload(c, bearer(audit_token), seed=4).status_code == 201


def test_form_tokens_are_bound_to_the_session_and_rotated_at_login(live: Live) -> None:
    name, password = live.add_user(prefix="form")
    with live.client() as browser:
        pre_login = form_csrf(browser.get("/login"))
        live.web_login(browser, name, password)
        first = form_csrf(browser.get("/"))
        assert first != pre_login
        # a planted token (cookie and field set by an attacker) is refused
        browser.cookies.set("meddx_csrf", "planted-token-value-0123")
        planted = browser.post("/upload", data={"csrf": "planted-token-value-0123"},
                               files={"file": ("x.png", png_bytes(seed=5), "image/png")})
        assert planted.status_code == 403
        assert browser.post("/logout", data={"csrf": pre_login}).status_code == 403  # the pre-login token is spent
        # a second login in the same browser rotates the token and ends the old session
        old_cookie = str(browser.cookies["meddx_session"])
        live.web_login(browser, name, password)
        second = form_csrf(browser.get("/"))
        assert second != first
        assert browser.post("/logout", data={"csrf": first}).status_code == 403
        with live.client() as c:
            assert c.get("/api/me", headers=bearer(old_cookie)).status_code == 401
        assert browser.post("/logout", data={"csrf": second}).status_code == 303


def test_forms_posted_from_another_site_are_refused(live: Live) -> None:
    name, password = live.add_user(prefix="origin")
    with live.client() as browser:
        csrf = form_csrf(browser.get("/login"))
        creds = {"username": name, "password": password, "csrf": csrf}
        assert browser.post("/login", data=creds, headers={"Origin": FOREIGN}).status_code == 403
        assert browser.post("/login", data=creds, headers={"Origin": "null"}).status_code == 403
        assert browser.post("/login", data=creds, headers={"Origin": live.url}).status_code == 303


# --- lows: passwords, rate limit, failed-login names -------------------------------------------------------


@pytest.mark.parametrize("password", ["aaaaaaaaaaaa", "123456789012", "abcdefghijkl", "qwertyuiopas", "qwertyqwerty",
                                      "abcabcabcabc", "password1234", "Monkey!123456", "098765432109"])
def test_trivial_passwords_are_refused(password: str) -> None:
    assert trivial_password(password)
    with pytest.raises(PasswordPolicyError, match="too easy to guess"):
        check_password_policy(password, "someone")


@pytest.mark.parametrize("password", ["violet tractor harbour 1f2e3d", "correct horse battery staple 9x",
                                      "a-long-test-password-1", "Zq8#mW2!vL5@"])
def test_ordinary_passwords_pass(password: str) -> None:
    assert trivial_password(password) is None
    check_password_policy(password, "someone")


def test_trivial_passwords_are_refused_by_the_server(live: Live) -> None:
    name, password = live.add_user(prefix="weak")
    token = live.token(name, password)
    with live.client() as c:
        for weak in ("aaaaaaaaaaaa", "123456789012"):
            refused = c.post("/api/me/password", headers=bearer(token),
                             json={"current_password": password, "new_password": weak})
            assert refused.status_code == 422 and "guess" in refused.text, weak


def test_login_rate_limit_counts_padded_and_recased_names_as_one(live: Live) -> None:
    name, password = live.add_user(prefix="rate")
    with live.client() as c:
        for typed in (f" {name}", f"{name} ", f"\t{name}", name.upper(), f"  {name.upper()}  "):
            assert c.post("/api/auth/token", data={"username": typed, "password": "wrong password!"}
                          ).status_code == 401
        sixth = c.post("/api/auth/token", data={"username": f"   {name}", "password": password})
        assert sixth.status_code == 429 and int(sixth.headers["retry-after"]) >= 1


def test_failed_logins_do_not_store_the_typed_name(live: Live) -> None:
    admin, admin_password = live.add_user("admin", prefix="adm")
    typed = "Winter-Solstice-Pass-77"  # a password typed into the name field
    with live.client() as c:
        assert c.post("/api/auth/token", data={"username": typed, "password": "x" * 12}).status_code == 401
        audit = c.get("/api/admin/audit", headers=bearer(live.token(admin, admin_password)),
                      params={"limit": 1000}).json()
    failed = [e["user"] for e in audit if e["action"] == "auth.login_failed"]
    assert failed and all(typed.lower() not in u.lower() for u in failed)
    assert any(u.startswith("unknown:") for u in failed)
    if live.backend == "sqlite":  # nothing in the database file either (WAL included)
        for path in live.home.glob("meddx.db*"):
            assert typed.encode() not in path.read_bytes() and typed.lower().encode() not in path.read_bytes()


def test_the_login_rate_limiter_forgets_stale_names() -> None:
    limiter = RateLimiter(limit=2, window=0.05, max_keys=100)
    for i in range(101):
        assert limiter.hit(f"127.0.0.1|sprayed-{i}")
    time.sleep(0.06)
    assert limiter.hit("127.0.0.1|doc") and limiter.hit("127.0.0.1|doc") and not limiter.hit("127.0.0.1|doc")
    assert len(limiter._events) == 1  # the sprayed names are gone
