"""An independent gRPC client for tessera: Python grpcio with stubs generated from proto/ by
grpcio-tools, and pyotp for the codes. Run by tests/api/python.rs; prints one line per step.

usage: grpc_client.py HOST:PORT TOKEN NOW_UNIX_SECS
"""
import sys
import tempfile

import grpc
import pyotp

from common import error_id, generate


FILES = ["zitadel/object.proto", "zitadel/user.proto", "zitadel/auth.proto",
         "tessera/otp/v1/check.proto", "google/rpc/status.proto"]


def main():
    target, token, now = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with tempfile.TemporaryDirectory() as out:
        generate(out, FILES)
        from zitadel import auth_pb2, auth_pb2_grpc
        from tessera.otp.v1 import check_pb2, check_pb2_grpc

        metadata = [("authorization", f"Bearer {token}")]
        with grpc.insecure_channel(target) as channel:
            auth = auth_pb2_grpc.AuthServiceStub(channel)
            added = auth.AddMyAuthFactorOTP(auth_pb2.AddMyAuthFactorOTPRequest(), metadata=metadata)
            print(f"added sequence={added.details.sequence} owner={added.details.resource_owner}")
            totp = pyotp.parse_uri(added.url)
            try:
                auth.VerifyMyAuthFactorOTP(auth_pb2.VerifyMyAuthFactorOTPRequest(code="000000"), metadata=metadata)
                print("wrong code accepted")
            except grpc.RpcError as error:
                print(f"wrong code={error.code().name} id={error_id(error)}")
            verified = auth.VerifyMyAuthFactorOTP(
                auth_pb2.VerifyMyAuthFactorOTPRequest(code=totp.at(now)), metadata=metadata)
            print(f"verified sequence={verified.details.sequence} changed={verified.details.change_date.seconds}")
            listed = auth.ListMyAuthFactors(auth_pb2.ListMyAuthFactorsRequest(), metadata=metadata)
            print(f"listed states={[f.state for f in listed.result]} otp={[f.HasField('otp') for f in listed.result]}")
            checker = check_pb2_grpc.OtpCheckServiceStub(channel)
            checked = checker.CheckOTP(
                check_pb2.CheckOTPRequest(user_id="alice", code=totp.at(now + 30)), metadata=metadata)
            print(f"checked sequence={checked.details.sequence}")
            try:
                auth.ListMyAuthFactors(auth_pb2.ListMyAuthFactorsRequest())
            except grpc.RpcError as error:
                print(f"anonymous code={error.code().name} id={error_id(error)}")


if __name__ == "__main__":
    main()
