"""The original project's Locust scenario: every record of traffic.json sent exactly once.

Headless, against `bandvote up` on 127.0.0.1:8080, through the gRPC path (the original's 4 users):

    locust -f load/locustfile.py --headless -u 4 -r 4 --host http://127.0.0.1:8080 --vote-path grpc

With the web UI (http://127.0.0.1:8089), choosing users and host there:

    locust -f load/locustfile.py --vote-path wasm

`--vote-path` is `grpc` (POST /grpc/votes) or `wasm` (POST /wasm/votes). The run stops by itself
once every record has been sent; the summary's request count is then 1010.
"""

import json
import pathlib

from locust import events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import StopUser

TRAFFIC = json.loads((pathlib.Path(__file__).parent / "traffic.json").read_text(encoding="utf-8"))
_pending = iter(TRAFFIC)
_answered = 0


@events.init_command_line_parser.add_listener
def _add_arguments(parser):
    parser.add_argument("--vote-path", choices=["grpc", "wasm"], default="grpc",
                        help="ingest path to vote through: grpc or wasm")


class Voter(FastHttpUser):
    """Takes the next unsent record and posts it; stops when none are left."""

    @task
    def vote(self):
        global _answered
        record = next(_pending, None)
        if record is None:
            raise StopUser()
        path = f"/{self.environment.parsed_options.vote_path}/votes"
        with self.client.post(path, json=record, name=path, catch_response=True) as response:
            if response.status_code == 202:
                response.success()
            else:
                response.failure(f"{response.status_code}: {response.text}")
        _answered += 1
        # The run ends only once every record has its answer recorded, so that Locust's count of
        # successes is exactly the number of votes accepted.
        if _answered == len(TRAFFIC):
            self.environment.runner.quit()
