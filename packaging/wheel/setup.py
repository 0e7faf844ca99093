"""packaging/wheel/setup.py - the libgreen wheel, made by scripts/build-wheel
from objects `make` already built (nothing is compiled here).

One wheel, tagged py3-none-linux_x86_64, carries the server module of
every CPython the build found (libgreen_py310.so ... libgreen_py313.so)
rather than one wheel per version: those modules are not extension
modules the import system picks by an ABI tag in their file name;
libgreen.so opens the one matching the running interpreter itself. So one
file installs into a venv of any of those versions, and Requires-Python
says which versions it has modules for.

Not manylinux: libgreen.so links Debian's shared libev (libev.so.4) and
opens libunwind (libunwind.so.8) at run time, neither of which manylinux
allows a wheel to assume or lets us vendor honestly here, and it was built
against Debian 12's glibc. The host needs libev4 (and libunwind8 for the
C stacks in debugging dumps); the `libgreen` command says so when libev is
missing.

Run by scripts/build-wheel in a staging directory holding this file,
libgreen.py (the stub), and libgreen_command/ with the objects; the
version comes from LIBGREEN_VERSION (debian/changelog's).
"""
import os
import re
from pathlib import Path

from setuptools import setup
from wheel.bdist_wheel import bdist_wheel

HERE = Path(__file__).resolve().parent


class PlatformWheel(bdist_wheel):
    """A wheel for linux_x86_64 and any Python 3: it holds no extension
    module, only objects the `libgreen` command loads."""

    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        return "py3", "none", "linux_x86_64"


def python_versions():
    """The minor versions (10, 11, ...) this wheel has a server module for."""
    found = sorted(int(m.group(1)) for p in (HERE / "libgreen_command").glob("libgreen_py3*.so")
                   if (m := re.fullmatch(r"libgreen_py3(\d+)\.so", p.name)))
    if not found:
        raise SystemExit("setup.py: no libgreen_py3XY.so in libgreen_command/: run `make` first")
    return found


def requires_python(minors):
    spec = [">=3.%d" % minors[0], "<3.%d" % (minors[-1] + 1)]
    spec += ["!=3.%d.*" % m for m in range(minors[0], minors[-1]) if m not in minors]
    return ", ".join(spec)


MINORS = python_versions()

setup(
    name="libgreen",
    version=os.environ["LIBGREEN_VERSION"],
    description="Cooperative concurrency for unmodified Python WSGI apps, at the libc level",
    long_description=(HERE / "README.txt").read_text(),
    long_description_content_type="text/plain",
    license="unpublished",
    python_requires=requires_python(MINORS),
    classifiers=["Operating System :: POSIX :: Linux",
                 "Programming Language :: C",
                 "Topic :: Internet :: WWW/HTTP :: WSGI :: Server"]
                + ["Programming Language :: Python :: 3.%d" % m for m in MINORS],
    py_modules=["libgreen"],
    packages=["libgreen_command"],
    package_data={"libgreen_command": ["libgreen", "*.so"]},
    entry_points={"console_scripts": ["libgreen = libgreen_command:main"]},
    cmdclass={"bdist_wheel": PlatformWheel},
    zip_safe=False,
)
