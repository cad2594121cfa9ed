"""An independent client of tessera's audit trail: Python grpcio with stubs generated from
proto/ by grpcio-tools. Run by tests/api/python.rs; prints one line per step.

usage: audit_client.py HOST:PORT ADMIN_TOKEN USER_ID
"""
import sys
import tempfile
import time

import grpc

from common import error_id, generate


FILES = ["zitadel/object.proto", "zitadel/user.proto", "tessera/otp/v1/admin.proto",
         "google/rpc/status.proto"]


def main():
    target, token, user = sys.argv[1], sys.argv[2], sys.argv[3]
    with tempfile.TemporaryDirectory() as out:
        generate(out, FILES)
        from tessera.otp.v1 import admin_pb2, admin_pb2_grpc

        metadata = [("authorization", f"Bearer {token}")]
        with grpc.insecure_channel(target) as channel:
            audit = admin_pb2_grpc.AuditServiceStub(channel)
            # One user's events, page by page, newest first.
            kinds, token_, pages = [], "", 0
            while True:
                page = audit.ListUserEvents(admin_pb2.ListUserEventsRequest(
                    user_id=user, page_size=2, page_token=token_), metadata=metadata)
                kinds += [event.type for event in page.result]
                pages += 1
                if not page.next_page_token:
                    break
                token_ = page.next_page_token
            print(f"user events {list(reversed(kinds))} pages={pages}")
            first = audit.ListUserEvents(admin_pb2.ListUserEventsRequest(user_id=user, page_size=1),
                                         metadata=metadata).result[0]
            print(f"newest by={first.actor_user_id}/{first.actor_org_id} "
                  f"address={first.client_address} dated={first.creation_date.seconds > 0}")
            # The organization's feed, filtered: it follows within a second.
            deadline = time.monotonic() + 2
            while True:
                feed = audit.ListEvents(admin_pb2.ListEventsRequest(
                    user_id=user, types=["check_invalid", "verified"]), metadata=metadata)
                if len(feed.result) == 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            print(f"feed {[event.type for event in feed.result]}")
            try:
                audit.ListEvents(admin_pb2.ListEventsRequest(types=["nope"]), metadata=metadata)
                print("unknown type accepted")
            except grpc.RpcError as error:
                print(f"unknown type={error.code().name} id={error_id(error)}")


if __name__ == "__main__":
    main()
