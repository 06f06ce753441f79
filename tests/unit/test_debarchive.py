"""The kernel resolver on apt-cache answers recorded from Debian's archive on 2026-11-30
(`python3 -m qemu.debarchive --record ...`), and on edits of them that play the ways the
archive moves: an ABI bump, a pinned ABI gone, a series with nothing left."""
from __future__ import annotations

import json
import pathlib

import pytest

from qemu import debarchive
from qemu.debarchive import Archive, ResolveError, compare_versions, resolve_kernel, replay

RECORDED = pathlib.Path(__file__).resolve().parents[1] / "data" / "apt-2026-11-30.json"


@pytest.fixture
def answers() -> dict[str, str]:
    return json.loads(RECORDED.read_text())


def archive(answers: dict[str, str]) -> Archive:
    return Archive(replay(answers))


def test_newest_complete_kernel_of_each_series(answers):
    kernel = resolve_kernel(archive(answers), "6.1", "cloud-amd64")
    assert (kernel.release, kernel.version, kernel.notes) == ("6.1.0-57-cloud-amd64", "6.1.192-3", ())
    assert kernel.packages == {
        "linux-image-6.1.0-57-cloud-amd64-unsigned": "6.1.192-3",
        "linux-image-6.1.0-57-cloud-amd64-dbg": "6.1.192-3",
        "linux-headers-6.1.0-57-cloud-amd64": "6.1.192-3",
        "linux-headers-6.1.0-57-common": "6.1.192-3",
        "linux-kbuild-6.1": "6.1.192-3"}
    backport = resolve_kernel(archive(answers), "6.12", "cloud-amd64")
    assert backport.release == "6.12.117+deb12-cloud-amd64"
    assert backport.packages["linux-kbuild-6.12.117+deb12"] == "6.12.117-1~deb12u1"
    # another flavour, its common headers package named by the headers' own Depends
    rt = resolve_kernel(archive(answers), "6.1", "rt-amd64")
    assert rt.packages["linux-headers-6.1.0-57-common-rt"] == "6.1.192-3"


def test_todays_case_kbuild_only_at_a_newer_revision(answers):
    """The report of issue 13: 6.1.0-56 (6.1.192-2) is there, linux-kbuild-6.1 only at -3."""
    kernel = resolve_kernel(archive(answers), "6.1", "cloud-amd64", pin="6.1.0-56")
    assert kernel.version == "6.1.192-2"
    assert kernel.packages["linux-kbuild-6.1"] == "6.1.192-3"
    assert len(kernel.notes) == 1 and "linux-kbuild-6.1 6.1.192-3" in kernel.notes[0]
    # a pin by package version means the same kernel
    assert resolve_kernel(archive(answers), "6.1", "cloud-amd64", pin="6.1.192-2") == kernel


def _add_abi(answers: dict[str, str], abi: str, version: str) -> None:
    """What the archive looks like the day Debian publishes the next ABI."""
    answers["pkgnames linux-image-6.1."] += f"linux-image-{abi}-cloud-amd64-unsigned\n"
    for package in (f"linux-image-{abi}-cloud-amd64-unsigned", f"linux-image-{abi}-cloud-amd64-dbg",
                    f"linux-headers-{abi}-cloud-amd64", f"linux-headers-{abi}-common"):
        answers[f"madison {package}"] = f"{package} | {version} | bookworm-security/main amd64 Packages\n"
    answers[f"show linux-headers-{abi}-cloud-amd64={version}"] = (
        f"Package: linux-headers-{abi}-cloud-amd64\nVersion: {version}\n"
        f"Depends: linux-headers-{abi}-common (= {version}), linux-kbuild-6.1 (>= {version}), "
        "linux-compiler-gcc-12-x86\n")
    answers["madison linux-kbuild-6.1"] = (
        f"linux-kbuild-6.1 | {version} | bookworm-security/main amd64 Packages\n"
        + answers["madison linux-kbuild-6.1"])


def test_abi_bump(answers):
    _add_abi(answers, "6.1.0-58", "6.1.195-1")
    kernel = resolve_kernel(archive(answers), "6.1", "cloud-amd64")
    assert (kernel.abi, kernel.version) == ("6.1.0-58", "6.1.195-1")
    # the ABI before it now misses its kbuild: 6.1.192 is gone from linux-kbuild-6.1
    answers["madison linux-kbuild-6.1"] = "linux-kbuild-6.1 | 6.1.195-1 | bookworm-security/main\n"
    with pytest.raises(ResolveError, match=r"6\.1\.0-57 \(6\.1\.192-3\) lacks linux-kbuild-6\.1 "
                                           r"\(>= 6\.1\.192-3\)"):
        resolve_kernel(archive(answers), "6.1", "cloud-amd64", pin="6.1.0-57")


def test_pinned_abi_image_gone(answers):
    answers["pkgnames linux-image-6.1."] = answers["pkgnames linux-image-6.1."].replace(
        "linux-image-6.1.0-56-cloud-amd64-unsigned\n", "")
    with pytest.raises(ResolveError) as raised:
        resolve_kernel(archive(answers), "6.1", "cloud-amd64", pin="6.1.0-56")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("pinned 6.1 cloud-amd64 kernel 6.1.0-56 is not in the archive; "
                              "it has now: 6.1.0-57 (6.1.192-3), 6.1.0-55 (6.1.192-1)")
    # without the pin the newest one is taken
    assert resolve_kernel(archive(answers), "6.1", "cloud-amd64").abi == "6.1.0-57"


def test_series_with_nothing_left(answers):
    for key in [k for k in answers if k.startswith("madison linux-image-6.1.") and k.endswith("-dbg")]:
        answers[key] = ""
    with pytest.raises(ResolveError) as raised:
        resolve_kernel(archive(answers), "6.1", "cloud-amd64")
    assert str(raised.value).startswith(
        "no complete 6.1 cloud-amd64 kernel in the archive: 6.1.0-57 (6.1.192-3) lacks "
        "linux-image-6.1.0-57-cloud-amd64-dbg 6.1.192-3")
    with pytest.raises(ResolveError, match=r"no linux-image-7\.0\.\*-cloud-amd64-unsigned"):
        resolve_kernel(archive(answers), "7.0", "cloud-amd64")


def test_source_of_the_same_upstream(answers):
    assert debarchive.resolve_source(archive(answers), "linux-source-6.1", "6.1.192-3") == ("6.1.192-3", "")
    version, note = debarchive.resolve_source(archive(answers), "linux-source-6.1", "6.1.192-2")
    assert version == "6.1.192-3" and "newer Debian revision" in note


@pytest.mark.parametrize("older, newer", [
    ("6.1.192-2", "6.1.192-3"), ("6.1.192-3", "6.1.195-1"), ("6.1.99-1", "6.1.100-1"),
    ("6.12.117-1~deb12u1", "6.12.117-1"), ("1.0~rc1", "1.0"), ("2.0", "1:0.1"), ("1.0", "1.0a"),
])
def test_debian_version_order(older, newer):
    assert compare_versions(older, newer) == -1
    assert compare_versions(newer, older) == 1
    assert compare_versions(newer, newer) == 0
