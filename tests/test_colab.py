"""Chapters opened the way Colab opens them: the notebook alone, the package from a wheel.

Colab opens one ``.ipynb`` with nothing beside it, installs ctxlib from its first cell, and
downloads the data into the cache. Here, for chapters 0, 2, 3 and 4 (these are their smoke
runs; the Makefile leaves them out of nbval):

- the project is built into a wheel and unpacked into an empty folder: that copy of ctxlib,
  not the checkout, is what the kernel imports (the test checks ``ctxlib.__file__``);
- each notebook is copied alone into an empty working folder;
- the network is off (any connection to another machine raises), ``CTXLIB_DATA`` is unset,
  and the data sets and course checkpoints lie only where a download would have put them:
  the cache;
- the notebook runs to the end under the smoke budget, and every image of its HTML export
  (nbconvert, as a reader's tools would show it) is embedded or at an absolute address.
"""

import gzip
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from ctxlib import data, pretrained
from ctxlib.kernel import notebook_client

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["00_setup", "02_attention", "03_elmo", "04_gpt"]

# Imported first by the kernel (sitecustomize): connections to other machines fail as with no
# network at all. The kernel's own loopback and local sockets stay usable.
NETWORK_OFF = '''
import socket

_LOOPBACK = ("127.0.0.1", "::1", "localhost", b"127.0.0.1", b"::1", b"localhost", None)
_connect, _create_connection = socket.socket.connect, socket.create_connection
_getaddrinfo = socket.getaddrinfo


def _refuse(host):
    if host not in _LOOPBACK:
        raise OSError("the network is off in this test")


def _no_network_connect(self, address):
    if isinstance(address, tuple):  # an internet address; a str is a local socket's path
        _refuse(address[0])
    return _connect(self, address)


def _no_network_create_connection(address, *args, **kwargs):
    _refuse(address[0])
    return _create_connection(address, *args, **kwargs)


def _no_network_getaddrinfo(host, *args, **kwargs):
    _refuse(host)
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _no_network_connect
socket.create_connection = _no_network_create_connection
socket.getaddrinfo = _no_network_getaddrinfo
'''


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """An installed wheel, a cache holding what downloads would, and no network."""
    root = tmp_path_factory.mktemp("colab")
    source, wheels = root / "source", root / "wheels"  # built from a copy: the build leaves
    source.mkdir()  # build/ and *.egg-info folders beside the sources it builds
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(ROOT / "ctxlib", source / "ctxlib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(source)], check=True,
                   env={**os.environ, "PIP_NO_INDEX": "1"})
    site = root / "site"
    [wheel] = wheels.glob("ctxlib-*.whl")
    with zipfile.ZipFile(wheel) as archive:  # a pure-Python wheel: unpacking installs it
        archive.extractall(site)
    (site / "sitecustomize.py").write_text(NETWORK_OFF)

    cache = root / "cache"
    cache.mkdir()
    files = [f for splits in data.DATASETS.values() for f in splits.values()]
    files += list(pretrained.COURSE_CHECKPOINTS.values())
    assert len({f.filename for f in files}) == len(files), "two files share a name in the cache"
    for file in files:  # the original bytes, where fetch() saves a download
        found = data.fetch_file(file, file.filename, first_dirs=[ROOT])
        opener = gzip.open if found.suffix == ".gz" else open
        with opener(found, "rb") as source, open(cache / file.filename, "wb") as copy:
            shutil.copyfileobj(source, copy)
    return site, cache


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_a_notebook_alone_with_the_wheel_runs_offline_and_shows_its_figures(
        chapter, colab, tmp_path, monkeypatch):
    site, cache = colab
    for name in ("CTXLIB_DATA", "CTXLIB_CHECKPOINTS", "CTXLIB_SMALL_DATA", "CTXLIB_MAX_STEPS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv("CTXLIB_CACHE", str(cache))
    monkeypatch.setenv("CTXLIB_BUDGET", "smoke")
    monkeypatch.setenv("CTXLIB_PROGRESS", "off")
    work = tmp_path / "content"  # Colab's working folder, with the notebook only
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / f"{chapter}.ipynb", work)
    nb = nbformat.read(work / f"{chapter}.ipynb", as_version=4)
    nb.cells.insert(1, nbformat.v4.new_code_cell(
        "import ctxlib, socket\nprint('ctxlib from', ctxlib.__file__)\n"
        "try:\n    socket.create_connection(('example.org', 80))\n"
        "except OSError as error:\n    print('network:', error)"))
    notebook_client(nb, timeout=600, kernel_name="python3",
                    resources={"metadata": {"path": str(work)}}).execute()

    printed = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert f"ctxlib from {site}" in printed, printed  # the wheel's copy, not the checkout
    assert "network: the network is off" in printed
    from nbconvert import HTMLExporter

    html, _ = HTMLExporter().from_notebook_node(nb)
    sources = re.findall(r"<img[^>]*\ssrc=[\"']([^\"']+)", html)
    relative = [s for s in sources if not s.startswith(("data:", "https://"))]
    assert not relative, f"{chapter}: images that need a file beside the notebook: {relative}"
    if chapter != "00_setup":  # every chapter from 2 on shows an architecture diagram
        assert any("image/svg+xml" in o.get("data", {}) for c in nb.cells
                   for o in c.get("outputs", [])), f"{chapter}: no diagram was displayed"


def test_every_chapter_runs_under_nbval_or_here():
    """The Makefile leaves these chapters out of nbval: they must be exactly the ones run here."""
    makefile = (ROOT / "Makefile").read_text()
    listed = re.search(r"^COLAB_TESTED := (.*)$", makefile, re.MULTILINE).group(1).split()
    assert listed == CHAPTERS
