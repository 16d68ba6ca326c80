"""Where the variables of a team's files get their values (``proxy/imagefiles/
variables.py``, ``envfile.py``): a Dockerfile's ``ARG``s before the first ``FROM`` with
``--build-arg`` over their defaults and the automatic platform ARGs, as buildkit reads
them; a Compose file's ``${VAR}`` from the process environment over the ``.env`` (or
the ``--env-file``s), as Compose ranks them; hostile inputs refused with a reason,
never guessed. Pure parsing; ``tests/test_warm_files.py`` runs the CLI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from proxy.imagefiles import Found, Inputs, Problem, scan
from proxy.imagefiles.dockerfile import dockerfile_images
from proxy.imagefiles.envfile import compose_values, parse_env, read_env_files
from proxy.imagefiles.refs import Unresolved
from proxy.imagefiles.variables import MAX_DEPTH, MAX_LENGTH, expand, parse_build_args
from proxy.oci.platform import Platform

AMD, ARM = Platform("linux", "amd64"), Platform("linux", "arm64")
ARMV7 = Platform("linux", "arm", "v7")


def found(items: Sequence[Found | Problem]) -> list[tuple[str, str | None]]:
    return [(i.text, i.platform) for i in items if isinstance(i, Found)]


def problems(items: Sequence[Found | Problem]) -> dict[str, str]:
    return {i.text: i.reason for i in items if isinstance(i, Problem)}


# ------------------------------------------------------------ expand

VALUES = {"SET": "x", "EMPTY": "", "TAG": "7.2"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis:${TAG}", "redis:7.2"),
        ("redis:$TAG", "redis:7.2"),
        ("${SET:-d}${EMPTY:-d}${GONE:-d}", "xdd"),
        ("${SET-d}${EMPTY-d}${GONE-d}", "xd"),  # set but empty stays empty
        ("${SET:+alt}${EMPTY:+alt}${GONE:+alt}", "alt"),
        ("${SET+alt}${EMPTY+alt}${GONE+alt}", "altalt"),
        ("${SET:?no}${EMPTY?no}", "x"),  # ? accepts set-but-empty, :? does not
        ("${GONE:-${ALSO_GONE:-${SET}}}", "x"),  # nested defaults
        ("${GONE:-a:${TAG}-b}", "a:7.2-b"),
        ("${GONE:-}", ""),
        ("$$SET and $SET", "$SET and x"),  # Compose's escaped dollar
        ("price: $5 and $-", "price: $5 and $-"),  # not a variable: a dollar
        ("trailing $", "trailing $"),
        ("${SET-NAME}", "x"),  # "-NAME" is the default, not part of the name
    ],
)
def test_substitution_table(text: str, expected: str) -> None:
    assert expand(text, VALUES) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("img:${GONE}", r"\$GONE is not set and has no default"),
        ("img:$GONE", r"\$GONE is not set and has no default"),
        ("${EMPTY:?must be set}", "required variable EMPTY is missing a value: must be set"),
        ("${GONE?}", "required variable GONE is missing a value$"),
        ("${GONE:?${SET}}", r"missing a value: \$\{SET\}"),  # the message is not expanded
        ("img:${TAG", "unclosed"),  # unterminated
        ("img:${GONE:-${TAG}", "unclosed"),
        ("${}", "unsupported substitution"),
        ("${ TAG}", "unsupported substitution"),
        ("${TAG.MINOR}", "unsupported substitution"),  # odd characters in a name
        ("${1TAG}", "unsupported substitution"),
        ("${TÄG}", "unsupported substitution"),
        ("${TAG#7.}", "unsupported substitution"),  # shell patterns: not guessed
        ("${TAG/7/8}", "unsupported substitution"),
        ("${GONE:-" * (MAX_DEPTH + 2) + "x" + "}" * (MAX_DEPTH + 2), "nested more than"),
        ("x" * (MAX_LENGTH + 1), "longer than"),
        ("${HUGE}", "longer than"),  # a value too long to be a reference
        ("${GONE:-" + "y" * (MAX_LENGTH + 1) + "}", "longer than"),
    ],
)
def test_refusals_say_why(text: str, reason: str) -> None:
    with pytest.raises(Unresolved, match=reason):
        expand(text, {**VALUES, "HUGE": "z" * 1_000_000})


def test_deep_nesting_is_refused_without_recursing_through_it() -> None:
    text = "${A:-" * 50_000 + "x" + "}" * 50_000  # a RecursionError before the limit
    with pytest.raises(Unresolved, match="nested more than"):
        expand(text, {})


def test_gitlab_forms_and_dockerfile_dollars() -> None:
    with pytest.raises(Unresolved, match="unsupported"):
        expand("${GONE:-d}", {}, defaults=False)
    assert expand("$$SET", VALUES, dollar_escape=False) == "$x"  # a Dockerfile has no $$


# ------------------------------------------------------------ Dockerfile ARGs

DOCKERFILE = """\
ARG REGISTRY=docker.io/library
ARG BASE=${REGISTRY}/debian:12
ARG TOOLS
ARG ALT
ARG ARCH_IMAGE=registry.local/base-${TARGETARCH}:1
FROM ${BASE} AS build
FROM $BASE
FROM ${TOOLS:-alpine:3.20}
FROM ${ALT:+busybox:1.36}
FROM ${TOOLS}
FROM --platform=$BUILDPLATFORM golang:1.22 AS compile
FROM build
ARG LATE=1
FROM busybox:${LATE}
"""


DEBIAN = "docker.io/library/debian:12"
NO_TOOLS = {"${TOOLS}": "ARG TOOLS has no default (it is given with --build-arg)"}
NO_ALT = {"${ALT:+busybox:1.36}": "the image name is empty once substituted"}


@pytest.mark.parametrize(
    ("build_args", "images", "unresolved"),
    [
        (  # the defaults: TOOLS has none, so the FROM naming it alone is unresolved
            {},
            [DEBIAN, DEBIAN, "alpine:3.20", "golang:1.22"],
            {**NO_TOOLS, **NO_ALT},
        ),
        (  # --build-arg replaces a default; BASE's own default is not used then
            {"BASE": "debian:13", "TOOLS": "ghcr.io/org/tools:2", "ALT": "yes"},
            ["debian:13", "debian:13", "ghcr.io/org/tools:2", "busybox:1.36",
             "ghcr.io/org/tools:2", "golang:1.22"],
            {},
        ),
        (  # an ARG a later default reads: the override flows into BASE's default
            {"REGISTRY": "mirror.local/hub", "TOOLS": "t:1"},
            ["mirror.local/hub/debian:12"] * 2 + ["t:1", "t:1", "golang:1.22"],
            NO_ALT,
        ),
        (  # empty is a value: ${TOOLS:-...} takes the default, ${TOOLS} is blank, and
            # ${ALT:+...} is set-but-empty: blank too
            {"TOOLS": "", "ALT": ""},
            [DEBIAN, DEBIAN, "alpine:3.20", "golang:1.22"],
            {"${TOOLS}": "the image name is empty once substituted", **NO_ALT},
        ),
        (  # a build arg for a name no ARG declares does not reach FROM (buildkit)
            {"LATE": "2", "TOOLS": "t:1"},
            [DEBIAN, DEBIAN, "t:1", "t:1", "golang:1.22"],
            NO_ALT,
        ),
    ],
)  # fmt: skip
def test_build_args_override_arg_defaults(
    build_args: Mapping[str, str], images: list[str], unresolved: dict[str, str]
) -> None:
    items = dockerfile_images(DOCKERFILE, "Dockerfile", Inputs((AMD,), AMD, build_args))
    assert [text for text, _ in found(items)] == images
    late = "busybox:${LATE}"
    expected_late = (
        "--build-arg LATE is given, but no ARG LATE before the first FROM"
        if "LATE" in build_args
        else "$LATE is not an ARG declared before the first FROM"
    )
    assert problems(items) == {**unresolved, late: expected_late}


@pytest.mark.parametrize(
    ("targets", "build", "build_args", "expected"),
    [
        # building on amd64 for arm64: $BUILDPLATFORM is the builder's, as docker's
        ((ARM,), AMD, {}, [("golang:1.22", "linux/amd64"), ("base-arm64:1", None)]),
        ((AMD,), AMD, {}, [("golang:1.22", None), ("base-amd64:1", None)]),
        # --build-arg overrides an automatic ARG without declaring it (defaultArgs)
        (
            (AMD,),
            AMD,
            {"BUILDPLATFORM": "linux/arm64"},
            [("golang:1.22", "linux/arm64"), ("base-amd64:1", None)],
        ),
        ((ARMV7,), AMD, {}, [("golang:1.22", "linux/amd64"), ("base-arm-v7:1", None)]),
        # two targets: what differs by platform is found for that platform only (the
        # builder's golang, for amd64; each target's base)
        (
            (AMD, ARM),
            AMD,
            {},
            [
                ("golang:1.22", "linux/amd64"),
                ("base-amd64:1", "linux/amd64"),
                ("base-arm64:1", "linux/arm64"),
            ],
        ),
        ((AMD, ARM), AMD, {"SUFFIX": "x"}, [("golang:1.22", "linux/amd64"), ("base-x:1", None)]),
    ],
)
def test_platform_args_as_docker_reads_them(
    targets: tuple[Platform, ...],
    build: Platform,
    build_args: Mapping[str, str],
    expected: list[tuple[str, str | None]],
) -> None:
    text = """\
ARG SUFFIX=${TARGETARCH}${TARGETVARIANT:+-$TARGETVARIANT}
FROM --platform=$BUILDPLATFORM golang:1.22 AS compile
FROM base-${SUFFIX}:1
"""
    items = dockerfile_images(text, "Dockerfile", Inputs(targets, build, build_args))
    assert found(items) == expected
    assert problems(items) == {}


def test_dockerfile_platform_flag_problems() -> None:
    text = """\
ARG PLAT
FROM --platform=$PLAT alpine:3
FROM --platform=${GONE} alpine:3
FROM --platform=linux debian:12
"""
    items = dockerfile_images(text, "Dockerfile", Inputs((AMD,), AMD))
    assert found(items) == []
    reasons = [i.reason for i in items if isinstance(i, Problem)]
    assert reasons == [
        "--platform=$PLAT: ARG PLAT has no default (it is given with --build-arg)",
        "--platform=${GONE}: $GONE is not an ARG declared before the first FROM",
        "platform 'linux' is not os/arch[/variant]",
    ]
    given = Inputs((AMD,), AMD, {"PLAT": "linux/arm64"})
    assert found(dockerfile_images(text, "Dockerfile", given)) == [("alpine:3", "linux/arm64")]


def test_arg_defaults_that_cannot_be_known_say_why() -> None:
    text = 'ARG A="${B:?set B}"\nARG C=x${UNDECLARED}\nFROM img:${A}\nFROM img:${C}\n'
    assert problems(dockerfile_images(text, "Dockerfile")) == {
        "img:${A}": "ARG A's default: required variable B is missing a value: set B",
        "img:${C}": "ARG C's default: $UNDECLARED is not set and has no default",
    }
    huge = (
        "ARG A=xxxxxxxxxxxxxxxx\n"
        + "".join(f"ARG A{n + 1}=${{A{n if n else ''}}}${{A{n if n else ''}}}\n" for n in range(40))
        + "FROM img:${A40}\n"
    )  # doubling 40 times: 16 TiB if nothing stopped it
    (reason,) = problems(dockerfile_images(huge, "Dockerfile")).values()
    assert "longer than" in reason


@pytest.mark.parametrize(
    ("items", "environ", "expected"),
    [
        (["A=1", "B=x=y", "C=", "A=2"], {}, {"A": "2", "B": "x=y", "C": ""}),
        (["HTTP_PROXY", "UNSET"], {"HTTP_PROXY": "http://p:3128"}, {"HTTP_PROXY": "http://p:3128"}),
    ],
)
def test_build_arg_flags(
    items: list[str], environ: dict[str, str], expected: dict[str, str]
) -> None:
    assert parse_build_args(items, environ) == expected


@pytest.mark.parametrize("bad", ["=x", "", "A B=1"])
def test_bad_build_arg_flags(bad: str) -> None:
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        parse_build_args([bad], {})


# ------------------------------------------------------------ Compose


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("A=1\nB=2\n", {}, {"A": "1", "B": "2"}),
        ("export A=1\n# c\n\nB: 2\n", {}, {"A": "1", "B": "2"}),
        ("A = spaced  \n", {}, {"A": "spaced"}),
        ("A=v # comment\nB=v# kept\n", {}, {"A": "v", "B": "v# kept"}),
        ("A='${X}'\nB=\"${X}\"\nC=${X}\n", {"X": "e"}, {"A": "${X}", "B": "e", "C": "e"}),
        ("A=\"a\\tb\\\"c\"\nB='it\\'s'\n", {}, {"A": 'a\tb"c', "B": "it's"}),
        ("A='line1\nline2'\nB=after\n", {}, {"A": "line1\nline2", "B": "after"}),
        ("A=1\nB=${A}-${HOME}\n", {"HOME": "/h"}, {"A": "1", "B": "1-/h"}),
        ("A=1\nB=${A}\n", {"A": "env"}, {"A": "1", "B": "env"}),  # the shell first
        ("A=${GONE}\nB=${GONE:?x}\nC=ok\n", {}, {"C": "ok"}),  # unknown: left unset
        ('A="unterminated\nB=2\n', {}, {}),
        ("=novalue\n  \nnot a line\n", {}, {}),
        ("A=" + "$B" * 10 + "\n", {"B": "x" * 10_000}, {}),  # over 64 KiB: unset
    ],
)
def test_env_file_syntax(text: str, environ: dict[str, str], expected: dict[str, str]) -> None:
    assert parse_env(text, environ) == expected


def test_compose_precedence_environment_then_env_files_or_dotenv(tmp_path: Path) -> None:
    compose = tmp_path / "compose.yaml"
    (tmp_path / ".env").write_text("TAG=dotenv\nONLY_DOTENV=d\n")
    first, second = tmp_path / "one.env", tmp_path / "two.env"
    first.write_text("TAG=one\nREG=ghcr.io/one\n")
    second.write_text("TAG=two\nIMG=${REG}/app\n")  # reads the earlier file's REG
    env = {"TAG": "shell", "PATH": "/bin"}
    assert compose_values(compose, {}, None)["TAG"] == "dotenv"
    assert compose_values(compose, env, None)["TAG"] == "shell"  # the environment wins
    files = read_env_files([first, second], {})
    assert files == {"TAG": "two", "REG": "ghcr.io/one", "IMG": "ghcr.io/one/app"}
    values = compose_values(compose, {}, files)
    assert "ONLY_DOTENV" not in values  # --env-file replaces the .env, as Compose does
    assert compose_values(compose, env, files)["TAG"] == "shell"
    with pytest.raises(ValueError, match=r"missing\.env: cannot read it"):
        read_env_files([tmp_path / "missing.env"], {})


def test_compose_images_from_environment_and_env_files(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TAG=7.2\n")
    (tmp_path / "compose.yaml").write_text("""
services:
  cache: {image: "redis:${TAG}"}
  app: {image: "${REGISTRY:-ghcr.io/org}/app:${APP_TAG:?set APP_TAG for the release}"}
  db: {image: "postgres:${PG}"}
  odd: {image: "x:${TAG"}
""")
    plain = scan([tmp_path])
    assert [f.text for f in plain.found] == ["redis:7.2"]
    assert problems(plain.problems) == {
        "${REGISTRY:-ghcr.io/org}/app:${APP_TAG:?set APP_TAG for the release}":
            "required variable APP_TAG is missing a value: set APP_TAG for the release",
        "postgres:${PG}": "$PG is not set and has no default (in the environment or env file)",
        "x:${TAG": "unclosed ${ in 'x:${TAG'",
    }  # fmt: skip
    environ = {"TAG": "7.4", "APP_TAG": "1.0", "PG": "16"}
    given = scan([tmp_path], Inputs(environ=environ))
    assert [f.text for f in given.found] == ["redis:7.4", "ghcr.io/org/app:1.0", "postgres:16"]
    files = scan([tmp_path], Inputs(environ={"PG": "15"}, env_files={"APP_TAG": "2"}))
    assert [f.text for f in files.found] == ["ghcr.io/org/app:2", "postgres:15"]  # no .env


def test_big_hostile_files_stay_linear() -> None:
    """An unterminated quote before 200,000 lines (rescanned per line: ~10^11 steps)
    and 20,000 FROMs read for two platforms (compared pairwise: ~10^9)."""
    assert parse_env('A="open\n' + "B=1\n" * 200_000, {}) == {}
    assert parse_env("A='x\ny'\n" * 100_000, {}) == {"A": "x\ny"}
    text = "ARG V=1\n" + "".join(f"FROM img{n}:${{V}}\n" for n in range(20_000))
    items = dockerfile_images(text, "Dockerfile", Inputs((AMD, ARM), AMD))
    assert len(found(items)) == 20_000 and all(p is None for _, p in found(items))
