"""An independent client of ZITADEL's v2 user API (TOTP and recovery codes): Python grpcio with
stubs generated from proto/zitadel/user/v2 (and tessera's check, proto/tessera/otp/v1) by
grpcio-tools, and pyotp for the codes. Run by tests/api/python.rs; prints one line per step.

usage: user_v2_client.py HOST:PORT USER_TOKEN ADMIN_TOKEN USER_ID NOW_UNIX_SECS
(the admin token holds otp.admin and otp.check)
"""
import sys
import tempfile

import grpc
import pyotp

from common import error_id, generate


FILES = ["zitadel/object.proto", "zitadel/object/v2/object.proto",
         "zitadel/user/v2/user_service.proto", "tessera/otp/v1/check.proto",
         "google/rpc/status.proto"]


def main():
    target, token, admin_token, user_id, now = sys.argv[1:6]
    now = int(now)
    with tempfile.TemporaryDirectory() as out:
        generate(out, FILES)
        from zitadel.user.v2 import user_service_pb2 as pb, user_service_pb2_grpc as rpc
        from tessera.otp.v1 import check_pb2 as check_pb, check_pb2_grpc as check_rpc

        user = [("authorization", f"Bearer {token}")]
        admin = [("authorization", f"Bearer {admin_token}")]
        with grpc.insecure_channel(target) as channel:
            users = rpc.UserServiceStub(channel)
            checks = check_rpc.OtpCheckServiceStub(channel)
            counts = check_rpc.RecoveryCodeServiceStub(channel)
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
                users.GenerateRecoveryCodes(pb.GenerateRecoveryCodesRequest(user_id=user_id, count=3), metadata=user)
            except grpc.RpcError as error:
                print(f"codes without a TOTP code={error.code().name} id={error_id(error)}")
            # The next step's code: the one that verified is spent.
            codes = users.GenerateRecoveryCodes(pb.GenerateRecoveryCodesRequest(
                user_id=user_id, count=3, totp_code=totp.at(now + 30)), metadata=user)
            print(f"recovery codes {len(codes.recovery_codes)} sequence={codes.details.sequence}")
            used = checks.CheckOTP(check_pb.CheckOTPRequest(
                user_id=user_id, recovery_code=codes.recovery_codes[0].lower().replace("-", "")), metadata=admin)
            print(f"recovery code used sequence={used.details.sequence} remaining={used.recovery_codes_remaining}")
            try:
                checks.CheckOTP(check_pb.CheckOTPRequest(
                    user_id=user_id, recovery_code=codes.recovery_codes[0]), metadata=admin)
            except grpc.RpcError as error:
                print(f"used again code={error.code().name} id={error_id(error)}")
            left = counts.GetRecoveryCodes(check_pb.GetRecoveryCodesRequest(user_id=user_id), metadata=user)
            print(f"recovery codes left {left.remaining}")
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
            print(f"methods after {[pb.AuthenticationMethodType.Name(m) for m in after.auth_method_types]}")
            gone = users.RemoveRecoveryCodes(pb.RemoveRecoveryCodesRequest(user_id=user_id), metadata=user)
            print(f"recovery codes removed sequence={gone.details.sequence}")
            last = users.ListAuthenticationMethodTypes(
                pb.ListAuthenticationMethodTypesRequest(user_id=user_id), metadata=user)
            print(f"methods at last {list(last.auth_method_types)}")


if __name__ == "__main__":
    main()
