"""The fault suite (`make chaos`): the real processes on their own PostgreSQL and Redis,
a seeded stream of signed Stripe events with duplicates and reordering, one fault per run,
then a table of what arrived, what was lost, duplicated or stuck, and how the final state of
every account compares with a clean run of the same stream. Exits non-zero on any loss,
duplicate, stuck item or final-state difference. Every wait is bounded.

    python -m chaos.run [--customers 24] [--seed 7] [--faults kill9,redis,postgres,am503,burst]
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from chaos.processes import (  # noqa: E402
    PG_PORT,
    REDIS_PORT,
    SECRET,
    STOPPING,
    WEB_PORT,
    Processes,
    Services,
    listening,
    say,
)
from chaos.scenarios import one_run, stream  # noqa: E402
from tests.http_peer import Peer  # noqa: E402

HEADER = (
    "run",
    "sent",
    "stored",
    "processed",
    "lost",
    "duplicated",
    "stuck",
    "state_diffs",
    "5xx",
    "settle_s",
)


def state_diffs(row: dict, clean: dict) -> int:
    """Accounts whose final state differs from the clean run's, plus accounts it never had."""
    diffs = sum(1 for cus, value in clean["state"].items() if row["state"].get(cus) != value)
    return diffs + len(set(row["state"]) - set(clean["state"]))


def _stop_on_signal(signum: int, _frame: object) -> None:
    # Unwinds through the finally blocks, which stop every process group, PostgreSQL and Redis.
    STOPPING.set()
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--faults", default="kill9,redis,postgres,am503,burst")
    options = parser.parse_args()
    busy = listening(PG_PORT, REDIS_PORT, WEB_PORT)
    if busy:
        print(f"ports {busy} are in use (a leftover chaos run?): stop it first", flush=True)
        return 2
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    events = stream(options.customers, options.seed)
    tmp = Path(tempfile.mkdtemp(prefix="dunning-chaos-"))
    say(f"logs in {tmp}")
    services = Services(tmp)
    peer = Peer().start()
    base_env = {
        **os.environ,
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "ACCOUNT_MANAGEMENT_URL": peer.url,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "STRIPE_API_KEY": "",
        "SENTRY_DSN": "",
        "LOG_LEVEL": "WARNING",
        "DUNNING_TEST_CLOCK": "0",
    }
    rows: list[dict] = []
    running: list[Processes] = []
    began = time.monotonic()
    failed = False
    try:
        services.start()
        clean: dict | None = None
        for name in ["clean", *(f.strip() for f in options.faults.split(","))]:
            row = one_run(name, events, services, base_env, tmp, peer, running)
            clean = clean or row
            row["state_diffs"] = state_diffs(row, clean)
            failed |= bool(row["lost"] or row["duplicated"] or row["stuck"] or row["state_diffs"])
            rows.append(row)
            say("row: " + " | ".join(str(row[column]) for column in HEADER))
            for cus in sorted(set(clean["state"]) | set(row["state"])):
                if row["state"].get(cus) != clean["state"].get(cus):
                    say(
                        f"  {cus}: clean {clean['state'].get(cus)} / {name} {row['state'].get(cus)}"
                    )
    except BaseException:
        failed = True
        raise
    finally:
        # Each step on its own, so one failing does not leave the others running.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for procs in list(running):
            procs.stop()
        peer.stop()
        services.stop()
        say(f"stopped everything after {time.monotonic() - began:.0f} s")
        print(" | ".join(HEADER), flush=True)
        for row in rows:
            print(" | ".join(str(row[column]) for column in HEADER), flush=True)
        if failed:
            print(f"FAILED (logs kept in {tmp})", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
