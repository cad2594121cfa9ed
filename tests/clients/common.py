"""What tessera's independent Python clients share: stubs generated from proto/ by
grpcio-tools, and the ErrorDetail id of a failed call."""
import os
import sys

from grpc_tools import protoc


def generate(out, files):
    """Generates the stubs of `files` (paths under proto/) into `out` and makes them importable."""
    proto_dir = os.path.join(os.path.dirname(__file__), "..", "..", "proto")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + files) != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, out)


def error_id(error):
    """The zitadel.v1.ErrorDetail id packed in grpc-status-details-bin."""
    from google.rpc import status_pb2
    from zitadel import object_pb2
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            detail = object_pb2.ErrorDetail()
            status.details[0].Unpack(detail)
            return detail.id
    return None
