"""Build-time code generation for the custops package (run by setup.py; not shipped).

1. `grpc_tools.protoc` compiles every .proto under the repository's proto/ into the build
   tree: `custops/<svc>/v1/*_pb2.py` with `.pyi` type stubs, and `*_pb2_grpc.py`. The
   well-known types (google/protobuf/*.proto) come from grpcio-tools' own copy; their Python
   modules from the protobuf runtime, so nothing is vendored.
2. From the same compilation's descriptor set, `custops/_services.py`: one typed class per
   gRPC service, one method per RPC with the request and response types and the RPC's doc
   comment from proto/, all calling through `custops.calls.ServiceClient` (deadlines, token,
   request ids, retries, decoded errors).
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from typing import Dict, Iterable, List, Tuple

PROTO_DIR_VAR = "CUSTOPS_PROTO_DIR"


def find_proto_root() -> str:
    """The directory holding `custops/**.proto`: $CUSTOPS_PROTO_DIR, else the checkout's
    proto/ two levels up (clients/python lives in the repository)."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.environ.get(PROTO_DIR_VAR, ""), os.path.join(here, "..", "..", "proto")]
    for candidate in candidates:
        if candidate and os.path.isdir(os.path.join(candidate, "custops")):
            return os.path.abspath(candidate)
    raise RuntimeError(
        "custops: cannot find the .proto files to generate the client from; build from the "
        f"repository checkout (clients/python) or set {PROTO_DIR_VAR} to its proto/ directory"
    )


def proto_files(root: str) -> List[str]:
    """Every .proto under `root`, as import paths relative to it, sorted."""
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            if name.endswith(".proto"):
                found.append(os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/"))
    return sorted(found)


def generate(proto_root: str, out_dir: str) -> None:
    """Generates every module into `out_dir` (the build tree's package root)."""
    import grpc_tools
    from grpc_tools import protoc
    from google.protobuf import descriptor_pb2

    files = proto_files(proto_root)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        descriptor_set = os.path.join(tmp, "custops.pb")
        args = [
            "grpc_tools.protoc",
            f"--proto_path={proto_root}",
            f"--proto_path={well_known}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--descriptor_set_out={descriptor_set}",
            "--include_imports",
            "--include_source_info",
            *files,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("custops: protoc failed on proto/ (see its messages above)")
        with open(descriptor_set, "rb") as f:
            fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())

    generated_dirs = {os.path.dirname(name) for name in files}
    for directory in generated_dirs:
        # Packages, not namespace packages: type checkers and setuptools both want them.
        parts = directory.split("/")
        for depth in range(1, len(parts) + 1):
            init = os.path.join(out_dir, *parts[:depth], "__init__.py")
            if not os.path.exists(init):
                with open(init, "w", encoding="utf-8") as f:
                    f.write('"""Generated from proto/ at build time; do not edit."""\n')

    ours = [f for f in fds.file if f.name in set(files)]
    with open(os.path.join(out_dir, "custops", "_services.py"), "w", encoding="utf-8") as f:
        f.write(render_services(fds.file, ours))


def module_of(proto_name: str) -> str:
    """`custops/profiles/v1/customer.proto` -> `custops.profiles.v1.customer_pb2`."""
    return proto_name[: -len(".proto")].replace("/", ".") + "_pb2"


def alias_of(module: str) -> str:
    return "_" + module.replace(".", "_")


def message_index(all_files: Iterable) -> Dict[str, Tuple[str, str]]:
    """Full message name (`.custops.x.v1.Outer.Inner`) -> (module, `Outer.Inner`)."""
    index: Dict[str, Tuple[str, str]] = {}

    def walk(module: str, prefix: str, local: str, messages: Iterable) -> None:
        for message in messages:
            full = f"{prefix}.{message.name}"
            name = f"{local}{message.name}"
            index[full] = (module, name)
            walk(module, full, name + ".", message.nested_type)

    for file in all_files:
        package = f".{file.package}" if file.package else ""
        walk(module_of(file.name), package, "", file.message_type)
    return index


def comment(file, path: List[int]) -> str:
    for location in file.source_code_info.location:
        if list(location.path) == path:
            return location.leading_comments.strip()
    return ""


def docstring(text: str, indent: str) -> str:
    if not text:
        return ""
    text = textwrap.dedent(text).strip().replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    lines = text.splitlines()
    body = "\n".join((indent + line) if line.strip() else "" for line in lines[1:])
    rest = f"\n{body}\n{indent}" if len(lines) > 1 else ""
    return f'{indent}"""{lines[0]}{rest}"""\n'


def render_services(all_files: Iterable, ours: List) -> str:
    index = message_index(all_files)
    used_modules = set()
    classes: List[str] = []
    for file in ours:
        for s_index, service in enumerate(file.service):
            full_service = f"{file.package}.{service.name}"
            out = [f"class {service.name}(ServiceClient):\n"]
            out.append(docstring(comment(file, [6, s_index]) or f"Client of {full_service}.", "    "))
            out.append(f'    SERVICE = "{full_service}"\n')
            for m_index, method in enumerate(service.method):
                req_mod, req_name = index[method.input_type]
                resp_mod, resp_name = index[method.output_type]
                used_modules.update([req_mod, resp_mod])
                req = f"{alias_of(req_mod)}.{req_name}"
                resp = f"{alias_of(resp_mod)}.{resp_name}"
                doc = docstring(comment(file, [6, s_index, 2, m_index]), "        ")
                if method.client_streaming and method.server_streaming:
                    kind, arg_t, ret_t = "stream_stream", f"Iterable[{req}]", f"Iterator[{resp}]"
                elif method.client_streaming:
                    kind, arg_t, ret_t = "stream_unary", f"Iterable[{req}]", resp
                elif method.server_streaming:
                    kind, arg_t, ret_t = "unary_stream", req, f"Iterator[{resp}]"
                else:
                    kind, arg_t, ret_t = "unary_unary", req, resp
                out.append(
                    f"\n    def {method.name}(\n"
                    f"        self,\n"
                    f"        request: {arg_t},\n"
                    f"        *,\n"
                    f"        timeout: Optional[float] = None,\n"
                    f"        metadata: Metadata = (),\n"
                    f"        retry: Optional[RetryPolicy] = None,\n"
                    f"    ) -> {ret_t}:\n"
                    f"{doc}"
                    f"        return self._{kind}(\n"
                    f'            "{method.name}", request, {resp}, timeout=timeout, metadata=metadata, retry=retry\n'
                    f"        )\n"
                )
            classes.append("".join(out))
    imports = "".join(f"import {m} as {alias_of(m)}\n" for m in sorted(used_modules))
    names = ", ".join(f'"{s.name}"' for f in ours for s in f.service)
    return (
        '"""Typed clients of every custops gRPC service, generated from proto/ at build time\n'
        "(clients/python/codegen.py). Do not edit: change proto/ and rebuild.\n"
        '"""\n\n'
        "from typing import Iterable, Iterator, Optional\n\n"
        f"{imports}\n"
        "from custops.calls import Metadata, ServiceClient\n"
        "from custops.retry import RetryPolicy\n\n"
        f"__all__ = [{names}]\n\n\n" + "\n\n".join(classes)
    )
