"""An independent client of ZITADEL's v2 user API (the TOTP part): Python grpcio with stubs
generated from proto/zitadel/user/v2 by grpcio-tools, and pyotp for the codes. Run by
tests/api/python.rs; prints one line per step.

usage: user_v2_client.py HOST:PORT USER_TOKEN ADMIN_TOKEN USER_ID NOW_UNIX_SECS
"""
import sys
import tempfile

import grpc
import pyotp

from common import error_id, generate


FILES = ["zitadel/object.proto", "zitadel/object/v2/object.proto",
         "zitadel/user/v2/user_service.proto", "google/rpc/status.proto"]


def main():
    target, token, admin_token, user_id, now = sys.argv[1:6]
    now = int(now)
    with tempfile.TemporaryDirectory() as out:
        generate(out, FILES)
        from zitadel.user.v2 import user_service_pb2 as pb, user_service_pb2_grpc as rpc

        user = [("authorization", f"Bearer {token}")]
        admin = [("authorization", f"Bearer {admin_token}")]
        with grpc.insecure_channel(target) as channel:
            users = rpc.UserServiceStub(channel)
            registered = users.RegisterTOTP(pb.RegisterTOTPRequest(user_id=user_id), metadata=user)
            print(f"registered sequence={registered.details.sequence} owner={registered.details.resource_owner}")
            totp = pyotp.parse_uri(registered.uri)
            pending = users.ListAuthenticationFactors(pb.ListAuthenticationFactorsRequest(
                user_id=user_id, states=[pb.AUTH_FACTOR_STATE_NOT_READY]), metadata=user)
            print(f"pending states={[pb.AuthFactorState.Name(f.state) for f in pending.result]}")
            verified = users.VerifyTOTPRegistration(pb.VerifyTOTPRegistrationRequest(
                user_id=user_id, code=totp.at(now)), metadata=user)
            print(f"verified sequence={verified.details.sequence}")
            methods = users.ListAuthenticationMethodTypes(
                pb.ListAuthenticationMethodTypesRequest(user_id=user_id), metadata=admin)
            names = [pb.AuthenticationMethodType.Name(m) for m in methods.auth_method_types]
            print(f"methods {names} total={methods.details.total_result}")
            ready = users.ListAuthenticationFactors(pb.ListAuthenticationFactorsRequest(user_id=user_id), metadata=user)
            print(f"ready states={[pb.AuthFactorState.Name(f.state) for f in ready.result]} otp={[f.HasField('otp') for f in ready.result]}")
            try:
                users.UnlockUser(pb.UnlockUserRequest(user_id=user_id), metadata=admin)
                print("unlocked")
            except grpc.RpcError as error:
                print(f"unlock code={error.code().name} id={error_id(error)}")
            try:
                users.UnlockUser(pb.UnlockUserRequest(user_id=user_id), metadata=user)
                print("unlocked by the user")
            except grpc.RpcError as error:
                print(f"self unlock code={error.code().name} id={error_id(error)}")
            removed = users.RemoveTOTP(pb.RemoveTOTPRequest(user_id=user_id), metadata=admin)
            print(f"removed sequence={removed.details.sequence}")
            after = users.ListAuthenticationMethodTypes(
                pb.ListAuthenticationMethodTypesRequest(user_id=user_id), metadata=user)
            print(f"methods after {list(after.auth_method_types)}")


if __name__ == "__main__":
    main()
