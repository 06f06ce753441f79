"""Which Debian kernel packages a lab kernel is, resolved from the archive's metadata.

Debian's archive moves: a new kernel ABI (6.1.0-57, 6.12.117+deb12, ...) appears every few
weeks, older ABIs' packages vanish after a while, and packages without the ABI in their name
(linux-kbuild-6.1, linux-source-6.1) keep only their newest versions. So a lab kernel is a
*series* and a *flavour* ("6.1", "cloud-amd64"), and which packages that means is decided
here, at fetch time, from what `apt-cache` says now:

    the newest ABI whose image, -dbg and headers exist at one version V, and whose headers'
    own dependencies (linux-headers-<abi>-common, linux-kbuild-*) can be met at V or at a
    newer Debian revision of the same upstream version.

Nothing downloads here: `Archive` asks apt-cache, and the tests give it recorded outputs.
"""
from __future__ import annotations

import dataclasses
import re
import subprocess
from typing import Callable, Iterable

__all__ = ["Archive", "ResolveError", "Resolved", "compare_versions", "upstream",
           "resolve_kernel", "resolve_source"]


class ResolveError(RuntimeError):
    """The archive has no complete kernel of a series (or no pinned one); one line."""


# -- Debian version strings (deb-version(7)) ---------------------------------------------------

def _order(char: str) -> int:
    """dpkg's character order in the non-digit parts: ~ before everything, letters first."""
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a: str, b: str) -> int:
    while a or b:
        text_a = re.match(r"[^0-9]*", a).group()
        text_b = re.match(r"[^0-9]*", b).group()
        for i in range(max(len(text_a), len(text_b))):
            ca = _order(text_a[i]) if i < len(text_a) else 0
            cb = _order(text_b[i]) if i < len(text_b) else 0
            if ca != cb:
                return -1 if ca < cb else 1
        a, b = a[len(text_a):], b[len(text_b):]
        num_a = re.match(r"[0-9]*", a).group()
        num_b = re.match(r"[0-9]*", b).group()
        if int(num_a or 0) != int(num_b or 0):
            return -1 if int(num_a or 0) < int(num_b or 0) else 1
        a, b = a[len(num_a):], b[len(num_b):]
    return 0


def _split(version: str) -> tuple[int, str, str]:
    epoch, _, rest = version.rpartition(":") if ":" in version else ("0", "", version)
    upstream_part, dash, revision = rest.rpartition("-")
    if not dash:
        upstream_part, revision = rest, ""
    return int(epoch or 0), upstream_part, revision


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian orders two package versions (`dpkg --compare-versions`)."""
    epoch_a, up_a, rev_a = _split(a)
    epoch_b, up_b, rev_b = _split(b)
    if epoch_a != epoch_b:
        return -1 if epoch_a < epoch_b else 1
    return _compare_part(up_a, up_b) or _compare_part(rev_a, rev_b)


def upstream(version: str) -> str:
    """The upstream part of a Debian version: 6.1.192-3 -> 6.1.192, 6.12.117-1~deb12u1 -> 6.12.117."""
    return _split(version)[1]


class _VersionKey:
    """Sort key in Debian version order."""

    def __init__(self, version: str) -> None:
        self.version = version

    def __lt__(self, other: "_VersionKey") -> bool:
        return compare_versions(self.version, other.version) < 0


def newest_first(versions: Iterable[str]) -> list[str]:
    return sorted(set(versions), key=_VersionKey, reverse=True)


def satisfies(version: str, relation: str, wanted: str) -> bool:
    """Does `version` meet a Depends relation such as `(>= 6.1.192-3)`?"""
    order = compare_versions(version, wanted)
    return {"=": order == 0, ">=": order >= 0, "<=": order <= 0, ">>": order > 0,
            "<<": order < 0}[relation]


# -- the archive, as apt-cache shows it -------------------------------------------------------

Runner = Callable[[list[str]], str]


def run_apt_cache(args: list[str]) -> str:
    """apt-cache's standard output (empty when it finds nothing)."""
    return subprocess.run(["apt-cache", *args], capture_output=True, text=True).stdout


class Archive:
    """What the package lists say: package names, their versions, one version's fields.

    `runner` runs `apt-cache ARGS` and returns its output; the tests pass recorded outputs.
    """

    def __init__(self, runner: Runner = run_apt_cache) -> None:
        self._run = runner
        self._versions: dict[str, list[str]] = {}

    def package_names(self, prefix: str) -> list[str]:
        return sorted(set(self._run(["pkgnames", prefix]).split()))

    def versions(self, package: str) -> list[str]:
        """Every version the lists offer, newest first (`apt-cache madison`)."""
        if package not in self._versions:
            found = []
            for line in self._run(["madison", package]).splitlines():
                fields = [f.strip() for f in line.split("|")]
                # a foreign architecture's package is listed as NAME:ARCH (arm64 kernels
                # after `dpkg --add-architecture arm64`)
                if len(fields) >= 3 and fields[0].partition(":")[0] == package:
                    found.append(fields[1])
            self._versions[package] = newest_first(found)
        return self._versions[package]

    def fields(self, package: str, version: str) -> dict[str, str]:
        """One version's control fields (`apt-cache show PACKAGE=VERSION`)."""
        record: dict[str, str] = {}
        key = None
        for line in self._run(["show", f"{package}={version}"]).splitlines():
            if not line.strip():
                if record:
                    break                       # first record only
                continue
            if line[0].isspace() and key:
                record[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                record[key] = value.strip()
        return record


# -- resolution ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Resolved:
    """One kernel, as the archive offers it now: every package at the version to download."""

    series: str                      # "6.1"
    flavour: str                     # "cloud-amd64"
    abi: str                         # "6.1.0-57"
    version: str                     # the image's Debian version, "6.1.192-3"
    packages: dict[str, str]         # package -> version: image, dbg, headers, common, kbuild
    notes: tuple[str, ...] = ()      # what was accepted that is not exactly `version`

    @property
    def release(self) -> str:
        """`uname -r` of the kernel: 6.1.0-57-cloud-amd64."""
        return f"{self.abi}-{self.flavour}"

    @property
    def image(self) -> str:
        return f"linux-image-{self.release}-unsigned"

    @property
    def dbg(self) -> str:
        return f"linux-image-{self.release}-dbg"

    @property
    def headers(self) -> str:
        return f"linux-headers-{self.release}"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Resolved":
        return cls(**{**data, "notes": tuple(data.get("notes", ()))})


_DEPENDENCY = re.compile(r"^\s*([a-z0-9][a-z0-9+.-]*)(?:\s*\(\s*(<<|<=|=|>=|>>)\s*([^)\s]+)\s*\))?")


def _build_dependencies(depends: str) -> list[tuple[str, str | None, str | None]]:
    """The headers package's Depends that the lab unpacks beside it: linux-headers-* (the
    common tree) and linux-kbuild-* (the host tools). linux-compiler-* is a metapackage for
    the compiler, which the lab installs itself (gcc-12)."""
    wanted = []
    for alternative in depends.split(","):
        match = _DEPENDENCY.match(alternative.split("|")[0])
        if match and match[1].startswith(("linux-headers-", "linux-kbuild-")):
            wanted.append((match[1], match[2], match[3]))
    return wanted


def _abis(archive: Archive, series: str, flavour: str) -> list[tuple[str, str]]:
    """(abi, image package) of every ABI of the series and flavour in the lists."""
    pattern = re.compile(rf"linux-image-({re.escape(series)}\.[0-9][^-]*(?:-[0-9]+)?)-"
                         rf"{re.escape(flavour)}-unsigned")
    found = []
    for name in archive.package_names(f"linux-image-{series}."):
        if match := pattern.fullmatch(name):
            found.append((match[1], name))
    return found


def _complete(archive: Archive, series: str, flavour: str, abi: str,
              version: str) -> tuple[Resolved | None, str]:
    """The kernel of one ABI at one image version, or (None, what is missing)."""
    probe = Resolved(series, flavour, abi, version, {})
    packages = {probe.image: version}
    for package in (probe.dbg, probe.headers):
        if version not in archive.versions(package):
            return None, f"{package} {version}"
        packages[package] = version
    notes = []
    depends = archive.fields(probe.headers, version).get("Depends", "")
    for package, relation, wanted in _build_dependencies(depends):
        candidates = [v for v in archive.versions(package)
                      if upstream(v) == upstream(version)
                      and (relation is None or satisfies(v, relation, wanted))]
        if not candidates:
            need = f" ({relation} {wanted})" if relation else ""
            return None, f"{package}{need}"
        packages[package] = candidates[0]
        if candidates[0] != version:
            notes.append(f"{package} {candidates[0]} (the archive no longer has {version}; "
                         f"a newer Debian revision of the same upstream {upstream(version)})")
    return Resolved(series, flavour, abi, version, packages, tuple(notes)), ""


def resolve_kernel(archive: Archive, series: str, flavour: str,
                   pin: str | None = None) -> Resolved:
    """The newest complete kernel of `series`/`flavour`; with `pin` (an ABI such as 6.1.0-56,
    or a package version such as 6.1.192-2) that one only. ResolveError names what is missing."""
    candidates = []
    for abi, image in _abis(archive, series, flavour):
        for version in archive.versions(image):
            candidates.append((abi, version))
    candidates.sort(key=lambda c: _VersionKey(c[1]), reverse=True)
    if not candidates:
        raise ResolveError(f"the package lists have no linux-image-{series}.*-{flavour}-unsigned "
                           "(run apt-get update; is the series or flavour right?)")
    offered = ", ".join(f"{abi} ({version})" for abi, version in candidates[:8])
    if pin:
        pinned = [c for c in candidates if pin in c]
        if not pinned:
            raise ResolveError(f"pinned {series} {flavour} kernel {pin} is not in the archive; "
                               f"it has now: {offered}")
        candidates = pinned
    missing = []
    for abi, version in candidates:
        resolved, lacking = _complete(archive, series, flavour, abi, version)
        if resolved:
            return resolved
        missing.append(f"{abi} ({version}) lacks {lacking}")
    raise ResolveError(f"no complete {series} {flavour} kernel in the archive: "
                       + "; ".join(missing[:4]))


def resolve_source(archive: Archive, package: str, like: str | None = None) -> tuple[str, str]:
    """(version, note) of a linux-source package: the newest revision of the upstream version
    `like` when the archive has it, else the newest there is (and the note says so)."""
    versions = archive.versions(package)
    if not versions:
        raise ResolveError(f"the package lists have no {package} (run apt-get update)")
    if like:
        same = [v for v in versions if upstream(v) == upstream(like)]
        if same:
            note = "" if same[0] == like else (f"{package} {same[0]}, a newer Debian revision "
                                               f"than the Debian kernel's {like}")
            return same[0], note
        return versions[0], (f"{package} {versions[0]}: the archive has no source of "
                             f"{upstream(like)}, the Debian kernel's upstream version")
    return versions[0], ""



# -- recording the archive's answers (for the resolver's unit tests) ----------------------------

class Recorder:
    """A runner that asks apt-cache and keeps every answer: `replay()` serves them again."""

    def __init__(self, runner: Runner = run_apt_cache) -> None:
        self._run = runner
        self.answers: dict[str, str] = {}

    def __call__(self, args: list[str]) -> str:
        output = self._run(args)
        kept = output
        if args[0] == "madison":      # it names the mirror of each version: keep the suite only
            kept = re.sub(r"\S+://\S+ ", "", output)
        elif args[0] == "show":       # only the fields the resolver reads
            kept = "".join(line for line in output.splitlines(keepends=True)
                           if line.startswith(("Package:", "Version:", "Depends:", "Size:")))
        self.answers[" ".join(args)] = kept
        return output


def replay(answers: dict[str, str]) -> Runner:
    """A runner serving recorded answers; a question never asked gets apt-cache's empty one."""
    return lambda args: answers.get(" ".join(args), "")


def main(argv: list[str]) -> int:
    """`python3 -m qemu.debarchive --record FILE SERIES/FLAVOUR ...`: resolve each kernel and
    its linux-source from the live package lists and write every apt-cache answer to FILE."""
    import json
    import sys
    if len(argv) < 3 or argv[0] != "--record":
        print(main.__doc__, file=sys.stderr)
        return 2
    recorder = Recorder()
    archive = Archive(recorder)
    for spec in argv[2:]:
        series, _, flavour = spec.partition("/")
        for abi, image in _abis(archive, series, flavour):
            for version in archive.versions(image):
                _complete(archive, series, flavour, abi, version)
        archive.versions(f"linux-source-{series}")
    with open(argv[1], "w", encoding="utf-8") as out:
        json.dump(recorder.answers, out, indent=1, sort_keys=True)
        out.write("\n")
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1:]))
