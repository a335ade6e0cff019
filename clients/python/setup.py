"""Builds the custops package: the hand-written layer in src/custops, plus modules generated
from the repository's proto/ at build time (never committed, never edited by hand).

Everything is in pyproject.toml but this one build step: `build_py` copies src/ as usual,
then runs `codegen.generate` into the build tree, so the wheel (and `pip install
clients/python`) carries the generated `_pb2` / `_pb2.pyi` / `_pb2_grpc` modules and the typed
service clients of `custops._services`.
"""

import os
import shutil
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import codegen  # noqa: E402  (lives beside this file; not part of the package)


class BuildPyWithProtos(build_py):
    """build_py that also generates the protobuf, gRPC and service-client modules."""

    def run(self) -> None:
        # A reused build tree (clients/python/build) may hold modules since renamed or
        # removed, hand-written or generated: the package is rebuilt from nothing.
        shutil.rmtree(os.path.join(self.build_lib, "custops"), ignore_errors=True)
        super().run()
        if not self.dry_run:
            codegen.generate(codegen.find_proto_root(), self.build_lib)


setup(cmdclass={"build_py": BuildPyWithProtos})
