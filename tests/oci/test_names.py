from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import (
    KNOWN_LOCATIONS,
    ImageReference,
    Repository,
    gar_host,
    location_of_host,
)

projects = st.from_regex(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", fullmatch=True)
repos = st.from_regex(r"[a-z][a-z0-9]{0,20}(-[a-z0-9]{1,10})?", fullmatch=True)
images = st.from_regex(r"[a-z][a-z0-9]{0,15}([._][a-z0-9]{1,8})?(/[a-z0-9]{1,10})?", fullmatch=True)
tags = st.from_regex(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,40}", fullmatch=True)
locations = st.sampled_from(sorted(KNOWN_LOCATIONS))


@given(location=locations)
def test_location_round_trips_through_the_host_name(location: str) -> None:
    assert location_of_host(gar_host(location)) == location


@given(project=projects, repo=repos, image=images, tag=tags, location=locations)
def test_host_qualified_references_round_trip(
    project: str, repo: str, image: str, tag: str, location: str
) -> None:
    text = f"{location}-docker.pkg.dev/{project}/{repo}/{image}:{tag}"
    parsed = ImageReference.parse(text)
    assert parsed.repository == Repository(f"{project}/{repo}/{image}", location)
    assert str(parsed) == text
    assert ImageReference.parse(str(parsed)) == parsed


@given(project=projects, repo=repos, image=images, data=st.binary(max_size=16))
def test_short_references_by_digest_round_trip(
    project: str, repo: str, image: str, data: bytes
) -> None:
    text = f"{project}/{repo}/{image}@{Digest.of(data)}"
    parsed = ImageReference.parse(text)
    assert parsed.repository.location is None
    assert str(parsed) == text


@given(project=projects, repo=repos, image=images, tag=tags, location=locations)
def test_containerd_ns_form_names_the_location(
    project: str, repo: str, image: str, tag: str, location: str
) -> None:
    path = f"{project}/{repo}/{image}"
    via_ns = ImageReference.parse(f"{path}:{tag}", ns=gar_host(location))
    assert via_ns == ImageReference.parse(f"{gar_host(location)}/{path}:{tag}")


def test_tag_defaults_to_latest() -> None:
    assert ImageReference.parse("p/r/i").reference == "latest"
    assert ImageReference.parse("p/r/i:5000").reference == "5000"


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "p/../x",
        "Upper/r/i",
        "p//i",
        "/p/r/i",
        "p/r/i/",
        "p/r/" + "a" * 300,
        "p r/i",
        "p/r/i..",
        "no-where-docker.pkg.dev/p/r/i",  # not location-shaped; "nowhere" is refused later
        "",
    ],
)
def test_invalid_names_are_name_invalid(name: str) -> None:
    with pytest.raises(RegistryError) as raised:
        Repository.parse(name)
    assert raised.value.code is ErrorCode.NAME_INVALID
    assert raised.value.status == 400


def test_gar_shape_needs_three_segments() -> None:
    with pytest.raises(RegistryError) as raised:
        Repository.parse("p/r").require_gar_shape()
    assert raised.value.code is ErrorCode.NAME_INVALID


# --------------------------------------------------------------- GAR's own spellings (N5, N6)


@given(project=projects, repo=repos, image=images, location=locations)
def test_a_regional_endpoint_names_the_same_location(
    project: str, repo: str, image: str, location: str
) -> None:
    path = f"{project}/{repo}/{image}"
    regional = Repository.parse(f"docker.{location}.rep.pkg.dev/{path}")
    via_ns = Repository.parse(path, ns=f"docker.{location}.rep.pkg.dev")
    assert regional == via_ns == Repository(path, location, regional=True)
    assert str(regional) == str(Repository.parse(f"{gar_host(location)}/{path}"))  # one cache key
    assert location_of_host(f"docker.{location}.rep.pkg.dev") == location


@given(project=projects, repo=repos, image=images, location=locations)
def test_a_domain_scoped_project_keeps_its_colon_for_the_apis(
    project: str, repo: str, image: str, location: str
) -> None:
    parsed = Repository.parse(f"{gar_host(location)}/example.com/{project}/{repo}/{image}")
    assert (parsed.project, parsed.repository, parsed.image) == (
        f"example.com:{project}",
        repo,
        image,
    )
    assert parsed.project_path == f"example.com/{project}"
    assert parsed.resource_name == (
        f"projects/example.com:{project}/locations/{location}/repositories/{repo}"
    )
    parsed.require_gar_shape()


def test_a_domain_scoped_name_needs_four_parts() -> None:
    with pytest.raises(RegistryError) as refused:
        Repository.parse("us-docker.pkg.dev/example.com/proj/repo").require_gar_shape()
    assert refused.value.code is ErrorCode.NAME_INVALID
    assert "DOMAIN/PROJECT/REPOSITORY/IMAGE" in refused.value.message
    plain = Repository.parse("proj/repo/app")
    assert (plain.project, plain.repository, plain.image, plain.domain_scoped) == (
        "proj",
        "repo",
        "app",
        False,
    )
