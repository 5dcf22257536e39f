"""Debian packages without root: ``apt-get download`` + ``dpkg -x`` into a cache folder, the dependency closure of
a tool that is not installed, and a private prefix of unpacked tools to run with ``LD_LIBRARY_PATH``.

Every speech, music and tool package of the demo corpus comes through here; the ``.deb`` files live in
:func:`default_cache_dir` (``~/.cache/dino-speech/debs``), are downloaded once and unpacked once.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from .files import file_lock

__all__ = [
    "INSTALL_HINT",
    "DemoCorpusUnavailable",
    "cached_deb",
    "default_cache_dir",
    "dependency_closure",
    "download_debs",
    "fetch_debian_packages",
    "local_prefix",
    "parse_apt_depends",
    "run_tool",
]


class DemoCorpusUnavailable(RuntimeError):
    """The corpus cannot be built on this machine (no apt / dpkg, no network and no cached packages, or the
    speech synthesisers are missing and cannot be fetched). The message says what to install."""


def default_cache_dir() -> Path:
    """``$DINO_SPEECH_DEB_CACHE``, else ``$XDG_CACHE_HOME/dino-speech/debs``, else ``~/.cache/dino-speech/debs``."""
    if os.environ.get("DINO_SPEECH_DEB_CACHE"):
        return Path(os.environ["DINO_SPEECH_DEB_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "dino-speech" / "debs"


INSTALL_HINT = (
    "The demo corpus is assembled from Debian/Ubuntu packages and synthesised with espeak-ng and flite.\n"
    "  * with root:    sudo apt-get update && sudo apt-get install -y espeak-ng flite\n"
    "  * without root: the builder fetches them itself with `apt-get download` + `dpkg -x` into the cache\n"
    "                  folder (--cache) and runs them with LD_LIBRARY_PATH / --path set; this needs apt-get,\n"
    "                  dpkg-deb and access to a Debian/Ubuntu mirror (or the .deb files already in --cache).\n"
    "  * the speech packages (asterisk-core-sounds-{en,es,fr,it,ru}[-wav], asterisk-moh-opsound-wav, and the\n"
    "    recorded voices ktuberling-data, fillets-ng-data-cs, asterisk-prompt-es-co, asterisk-prompt-fr-armelle,\n"
    "    asterisk-prompt-it-menardi-wav, alsa-utils; their file table was verified against Debian 12's versions)\n"
    "    are always fetched with `apt-get download`; copy their .deb files into --cache on a machine without a\n"
    "    mirror."
)


def run_tool(cmd: Sequence[str], cwd: Path | None = None, env: dict | None = None, what: str = "") -> str:
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True)
    except FileNotFoundError:
        raise DemoCorpusUnavailable(f"`{cmd[0]}` is not installed ({what or 'needed'}).\n{INSTALL_HINT}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise DemoCorpusUnavailable(
            f"`{' '.join(cmd)}` failed with exit code {proc.returncode}: {tail}\n{INSTALL_HINT}"
        )
    return proc.stdout


def cached_deb(cache: Path, package: str) -> Path | None:
    found = sorted(cache.glob(f"{package}_*.deb"))
    return found[-1] if found else None


def download_debs(packages: Sequence[str], cache: Path) -> None:
    """``apt-get download`` the packages not yet in ``cache`` (into a scratch folder, then moved: a killed
    download never leaves a partial ``.deb`` under its final name)."""
    missing = [p for p in packages if cached_deb(cache, p) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise DemoCorpusUnavailable(
            f"Debian packages {', '.join(missing)} are not in {cache} and apt-get is not available to fetch them.\n"
            + INSTALL_HINT
        )
    scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
    try:
        # apt-get download needs no root; as root it warns that the _apt user cannot write here (harmless).
        try:
            run_tool(["apt-get", "download", *missing], cwd=scratch, what="fetching Debian packages")
        except DemoCorpusUnavailable as err:
            raise DemoCorpusUnavailable(
                f"{err}\nIf apt-get reports 'Unable to locate package', run `apt-get update` first (as root)."
            ) from None
        for deb in scratch.glob("*.deb"):
            os.replace(deb, cache / deb.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    still = [p for p in missing if cached_deb(cache, p) is None]
    if still:
        raise DemoCorpusUnavailable(f"apt-get download did not produce {', '.join(still)} in {cache}.\n{INSTALL_HINT}")


def _extract_deb(deb: Path, dest: Path) -> None:
    """``dpkg -x`` into ``dest`` through a temporary folder renamed at the end (atomic)."""
    if shutil.which("dpkg-deb") is None and shutil.which("dpkg") is None:
        raise DemoCorpusUnavailable(f"dpkg is needed to unpack {deb}.\n{INSTALL_HINT}")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tool = ["dpkg-deb", "-x"] if shutil.which("dpkg-deb") else ["dpkg", "-x"]
    run_tool([*tool, str(deb), str(tmp)], what="unpacking Debian packages")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def fetch_debian_packages(packages: Sequence[str], cache: str | os.PathLike | None = None) -> dict[str, Path]:
    """Download (once) and unpack (once) Debian packages without root.

    Returns:
        ``{package: folder}``, each folder holding the package's files as ``dpkg -x`` lays them out
        (``<folder>/usr/share/...``).

    Raises:
        DemoCorpusUnavailable: apt-get / dpkg missing, or the download failed; the message says what to do.
    """
    cache = Path(cache) if cache is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with file_lock(cache / ".lock"):
        download_debs(packages, cache)
        out = {}
        for package in packages:
            deb = cached_deb(cache, package)
            dest = cache / "extracted" / deb.stem
            if not (dest / ".complete").exists():
                _extract_deb(deb, dest)
                (dest / ".complete").write_text(deb.name + "\n")
            out[package] = dest
    return out


def installed_packages() -> dict[str, str]:
    """``{package: source package}`` of the installed packages."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev} ${source:Package}\n"],
            capture_output=True,
            text=True,
        ).stdout
    except FileNotFoundError:
        return {}
    fields = [line.split() for line in out.splitlines()]
    return {f[0]: f[2] if len(f) > 2 else f[0] for f in fields if len(f) > 1 and f[1] == "ii"}


def dependency_closure(roots: Sequence[str], refetch_sources: Iterable[str] = ()) -> list[str]:
    """The packages (roots and their recursive Depends / Pre-Depends) that are not installed, plus the
    installed ones built from ``refetch_sources`` (to run a private copy of an installed tool).

    An OR-group or a virtual package counts as satisfied when any of its alternatives / providers is
    installed; otherwise its first alternative is taken.
    """
    refetch = set(refetch_sources)
    installed = {p for p, src in installed_packages().items() if src not in refetch}
    wanted: list[str] = []
    queue = list(roots)
    seen: set[str] = set()
    while queue:
        batch = [p for p in queue if p not in seen]
        queue = []
        if not batch:
            break
        seen.update(batch)
        text = run_tool(
            ["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
             "--no-replaces", "--no-enhances", *batch],
            what="resolving dependencies",
        )  # fmt: skip
        for package, groups in parse_apt_depends(text).items():
            if package not in installed and package not in wanted:
                wanted.append(package)
            for group in groups:  # one group = alternatives, each alternative = [name, *providers]
                options = [name for alt in group for name in alt]
                if any(name in installed for name in options):
                    continue
                first = group[0]
                choice = first[0] if not first[0].startswith("<") else (first[1] if len(first) > 1 else None)
                if choice and choice not in seen:
                    queue.append(choice)
    return wanted


def parse_apt_depends(text: str) -> dict[str, list[list[list[str]]]]:
    result: dict[str, list[list[list[str]]]] = {}
    current: list[list[list[str]]] | None = None
    pending_or = False
    for line in text.splitlines():
        if not line.startswith(" "):
            current = result.setdefault(line.strip(), [])
            pending_or = False
            continue
        match = re.match(r"^ (\|| )(Pre)?Depends: (\S+)", line)
        if match and current is not None:
            alt = [match.group(3)]
            if pending_or and current:
                current[-1].append(alt)
            else:
                current.append([alt])
            pending_or = match.group(1) == "|"
        elif line.startswith("    ") and current:
            current[-1][-1].append(line.strip())  # a provider of the virtual package just listed
        else:
            pending_or = False
    return result


def local_prefix(cache: Path, need: Sequence[str]) -> tuple[Path, dict]:
    """Fetch ``need`` (espeak-ng and/or flite, with their own libraries and data) plus any missing system
    library as .deb files and unpack them all into one prefix. Returns (prefix, environment)."""
    tools_dir = cache / "tools"
    root = tools_dir / ("root-" + "-".join(sorted(need)))
    tools_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(cache / ".lock"):
        if not (root / ".complete").exists():
            if shutil.which("apt-cache") is None or shutil.which("apt-get") is None:
                raise DemoCorpusUnavailable(f"{' and '.join(need)} not found and apt is not available.\n{INSTALL_HINT}")
            # The tools' own source packages are always fetched (espeak-ng -> libespeak-ng1, espeak-ng-data),
            # so that "local" is a private copy even where the tools are also installed.
            packages = dependency_closure(need, refetch_sources=need)
            download_debs(packages, tools_dir)
            tmp = root.with_name(root.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for package in packages:
                run_tool(["dpkg-deb", "-x", str(cached_deb(tools_dir, package)), str(tmp)], what="unpacking")
            (tmp / ".complete").write_text("\n".join(packages) + "\n")
            shutil.rmtree(root, ignore_errors=True)
            os.replace(tmp, root)
    libdirs = sorted({str(p.parent) for p in root.glob("usr/lib/**/*.so*")})
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libdirs, env.get("LD_LIBRARY_PATH", "")]).strip(os.pathsep)
    return root, env
