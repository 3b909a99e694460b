"""One build for RPMP's native pieces: the libpmemobj pool (C) and its Cython wrappers.

`pip install .` and `pip install -e .` both run this. The Spark plugin jar is built from
shuffle_plugin/jvm (a Maven project) by shuffle_plugin/jar.py, on demand or here when a JDK, Maven
and pyspark are present.
"""

import glob
import os
import subprocess
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
CFLAGS = ["-O3", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-unreachable-code"]


def native_ext(name: str, sources: list[str], libs: list[str], depends: list[str] | None = None) -> Extension:
    return Extension(
        name,
        sources=sources,
        include_dirs=[os.path.join(HERE, "native")],
        libraries=libs,
        extra_compile_args=CFLAGS,
        depends=depends or [],
    )


extensions = [
    native_ext("rpmp._pool", ["rpmp/_pool.pyx", "native/rpmp_pool.c"], ["pmemobj", "pmem"]),
]
if os.path.exists(os.path.join(HERE, "rpmp", "_wire.pyx")):
    # one extension from rpmp/_wire.pyx and the files it includes: any of them changed rebuilds it
    wire_parts = sorted(glob.glob("rpmp/wire/*.pxi", root_dir=HERE)) + ["native/rpmp_wire.h"]
    extensions.append(native_ext("rpmp._wire", ["rpmp/_wire.pyx"], ["xxhash"], wire_parts))
if os.path.exists(os.path.join(HERE, "rpmp", "_splice.pyx")) and sys.platform.startswith("linux"):
    extensions.append(native_ext("rpmp._splice", ["rpmp/_splice.pyx"], []))


class BuildPyWithJar(build_py):
    """Build the Spark plugin jar too when a JDK, Maven and pyspark are available (never fails the install)."""

    def run(self) -> None:
        super().run()
        builder = os.path.join(HERE, "shuffle_plugin", "jar.py")
        if os.path.exists(builder) and os.path.isfile(os.path.join(HERE, "shuffle_plugin", "jvm", "pom.xml")):
            subprocess.call([sys.executable, builder, "--quiet", "--out-dir",
                             os.path.join(self.build_lib, "shuffle_plugin", "jars")])


setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "embedsignature": True},
    ),
    cmdclass={"build_py": BuildPyWithJar},
)
