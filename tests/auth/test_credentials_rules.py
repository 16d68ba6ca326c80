"""htpasswd and tokens parsing (bcrypt only), rule matching, and the start-up checks."""

from __future__ import annotations

import base64
from pathlib import Path

import bcrypt
import pytest

from proxy.auth.credentials import Authenticator, CredentialsError, parse_htpasswd, parse_tokens
from proxy.auth.middleware import Access
from proxy.auth.rules import ANONYMOUS, Rules, RulesError
from proxy.cli import main
from proxy.commands.serve import warn_if_anonymous
from proxy.config import ConfigError, load_settings


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_htpasswd_takes_bcrypt_in_every_prefix(tmp_path: Path) -> None:
    lines = [f"alice:{hashed('a')}", "# comment", "", f"bob:{hashed('b').replace('$2b$', '$2y$')}"]
    (tmp_path / "htpasswd").write_text("\n".join(lines) + "\n")
    assert sorted(parse_htpasswd(tmp_path / "htpasswd")) == ["alice", "bob"]


@pytest.mark.parametrize(
    "entry",
    [
        "carol:$apr1$abcdefgh$0123456789abcdefghijkl",  # htpasswd -m (MD5)
        "carol:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=",  # htpasswd -s
        "carol:abJnggxhB/yWI",  # crypt
        "carol:plaintext",
    ],
)
def test_htpasswd_refuses_other_hash_kinds_naming_the_line(tmp_path: Path, entry: str) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{hashed('a')}\n{entry}\n")
    with pytest.raises(CredentialsError, match=r"line 2: user 'carol' .*only bcrypt"):
        parse_htpasswd(path)


def test_a_line_without_a_colon_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("ci-token-without-name\n")
    with pytest.raises(CredentialsError, match="line 1: expected NAME:SECRET"):
        parse_tokens(tmp_path / "tokens")


async def test_authenticator_basic_bearer_and_token_as_password() -> None:
    auth = Authenticator({"alice": hashed("s3cret").encode()}, {"tok-1": "ci"})
    assert await auth.identify(basic("alice", "s3cret")) == "alice"
    assert await auth.identify(basic("alice", "s3cret")) == "alice"  # remembered
    assert await auth.identify(basic("alice", "wrong")) is None
    assert await auth.identify(basic("alice", "x" * 100)) is None  # bcrypt 5 would raise
    assert await auth.identify(basic("mallory", "s3cret")) is None
    assert await auth.identify("Bearer tok-1") == "ci"
    assert await auth.identify(basic("ci", "tok-1")) == "ci"  # docker login -u ci -p TOKEN
    assert await auth.identify(basic("alice", "tok-1")) is None  # a token is its owner's only
    assert await auth.identify("Basic %%%") is None
    assert await auth.identify("Digest x") is None


def test_rules_match_whole_segments_and_fall_back_to_star() -> None:
    rules = Rules.parse(
        {
            "identities": {
                "ci": {"pull": ["*"], "push": ["p/builds"]},
                "alice": {"pull": ["p/team"], "push": [], "admin": True},
                "*": {"pull": ["p/public"]},
                ANONYMOUS: {"pull": ["p/public/base"]},
            }
        }
    )
    assert rules.allows("ci", "pull", "any/thing/at/all")
    assert rules.allows("ci", "push", "p/builds/app") and rules.allows("ci", "push", "p/builds")
    assert not rules.allows("ci", "push", "p/builds-old/app")
    assert rules.allows("alice", "pull", "p/team/web") and not rules.allows("alice", "pull", "p/x")
    assert rules.is_admin("alice") and not rules.is_admin("ci")
    assert rules.allows("bob", "pull", "p/public/x") and not rules.allows("bob", "push", "p/public")
    # Clients without credentials get the anonymous entry, never the "*" one.
    assert rules.allows(ANONYMOUS, "pull", "p/public/base")
    assert not rules.allows(ANONYMOUS, "pull", "p/public/other")
    assert Rules.load(None).allows("anyone", "push", "p/r/i")
    assert not Rules.load(None).is_admin("anyone")


def test_rules_file_errors_say_where(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[identities.ci]\npull = ["p"]\npsuh = ["p"]\n')
    with pytest.raises(RulesError, match=r"identities.ci: unknown key 'psuh'"):
        Rules.load(path)
    path.write_text('[identities.ci]\npull = "p"\n')
    with pytest.raises(RulesError, match=r"identities.ci.pull: expected a list"):
        Rules.load(path)


def _settings(tmp_path: Path, **overrides: str) -> object:
    return load_settings(None, env={"HOME": str(tmp_path)}, overrides=overrides)


def test_a_non_loopback_listen_needs_client_auth_or_anonymous(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"0.0.0.0:5000\) is not loopback .* access.anonymous"):
        _settings(tmp_path, **{"server.listen": "0.0.0.0:5000"})
    _settings(tmp_path, **{"server.listen": "127.0.0.2:5000"})
    _settings(tmp_path, **{"server.listen": "0.0.0.0:5000", "access.anonymous": "true"})
    tokens = tmp_path / "tokens"
    tokens.write_text("ci:t\n")
    _settings(tmp_path, **{"server.listen": "[::]:5000", "access.tokens_file": str(tokens)})


def test_a_bad_credentials_file_stops_start_up_with_one_line(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:$apr1$x$y\n")
    settings = load_settings(
        None, env={"HOME": str(tmp_path)}, overrides={"access.htpasswd_file": str(htpasswd)}
    )
    with pytest.raises(ConfigError, match=r"^access: .*htpasswd line 1: .*bcrypt"):
        Access.load(settings.access)


def test_serve_refuses_a_public_listen_in_one_line_and_warns_about_anonymous(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GAR_PROXY_SERVER_LISTEN", "0.0.0.0:0")
    assert main(["serve"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "access.anonymous = true" in error
    monkeypatch.setenv("GAR_PROXY_ACCESS_ANONYMOUS", "true")
    warn_if_anonymous(load_settings())
    assert "ANONYMOUS ACCESS" in caplog.text and "pull and push" in caplog.text
