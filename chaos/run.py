"""The fault suite (`make chaos`): the real processes on their own PostgreSQL and Redis,
a seeded stream of signed Stripe events with duplicates and reordering, one fault per run,
then a table of what arrived, what was lost, duplicated or stuck, and how the final state of
every account compares with a clean run of the same stream. Exits non-zero on any loss,
duplicate, stuck item or final-state difference. Every wait is bounded.

    python -m chaos.run [--customers 24] [--seed 7] [--faults kill9,redis,postgres,am503,burst]
"""

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from billing_events import samples  # noqa: E402
from billing_events.scenarios import StripeCustomer  # noqa: E402
from tests.http_peer import Peer  # noqa: E402

PG_PORT, REDIS_PORT, WEB_PORT = 55432, 56379, 58000
SECRET = "whsec_chaos"
BIN = Path(sys.executable).parent
SETTLE_TIMEOUT = 240.0
# Set on SIGTERM/SIGINT so the sender threads stop retrying and cleanup is not kept waiting.
STOPPING = threading.Event()


def say(message: str) -> None:
    """A progress line, flushed at once: a run killed from outside still shows what it did."""
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def listening(*ports: int) -> list[int]:
    """The ports among these that something already listens on (a leftover of an earlier run)."""
    busy = []
    for port in ports:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(port)
    return busy


def pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        raise SystemExit(f"no {name} under /usr/lib/postgresql/*/bin")
    return str(found[-1])


def as_postgres(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, **kwargs)


class Services:
    """PostgreSQL and Redis of our own: own ports, own data directories, removed at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pgdata = tmp / "pg"
        self.redis: subprocess.Popen | None = None

    def start(self) -> None:
        self.pgdata.mkdir()
        shutil.chown(self.tmp, "postgres")
        shutil.chown(self.pgdata, "postgres")
        as_postgres(
            pg_bin("initdb"), "-D", str(self.pgdata), "-A", "trust", stdout=subprocess.DEVNULL
        )
        self.start_pg()
        self.start_redis()

    def start_pg(self) -> None:
        opts = f"-p {PG_PORT} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
        as_postgres(
            pg_bin("pg_ctl"),
            "-D",
            str(self.pgdata),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "-l",
            str(self.tmp / "pg.log"),
            "start",
            stdout=subprocess.DEVNULL,
        )

    def restart_pg(self) -> None:
        as_postgres(
            pg_bin("pg_ctl"),
            "-D",
            str(self.pgdata),
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
            "stop",
            stdout=subprocess.DEVNULL,
        )
        time.sleep(3)
        self.start_pg()

    def start_redis(self) -> None:
        self.redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(REDIS_PORT),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=open(self.tmp / "redis.log", "ab"),  # noqa: SIM115 - lives with the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not listening(REDIS_PORT) and time.monotonic() < deadline:
            time.sleep(0.1)

    def kill_redis(self) -> None:
        if self.redis is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.redis.pid, signal.SIGKILL)
            self.redis.wait(timeout=10)
            self.redis = None

    def stop(self) -> None:
        self.kill_redis()
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                pg_bin("pg_ctl"),
                "-D",
                str(self.pgdata),
                "-m",
                "immediate",
                "-w",
                "-t",
                "30",
                "stop",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )


class Processes:
    """gunicorn, a prefork worker (2 processes) and beat on one database."""

    def __init__(self, env: dict, tmp: Path) -> None:
        self.env, self.tmp, self.procs = env, tmp, {}

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        self.procs[name] = subprocess.Popen(
            args,
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self, *names: str) -> None:
        commands = {
            "web": [
                str(BIN / "gunicorn"),
                "config.wsgi",
                "-b",
                f"127.0.0.1:{WEB_PORT}",
                "-w",
                "2",
                "--timeout",
                "30",
            ],
            "worker": [
                str(BIN / "celery"),
                "-A",
                "config",
                "worker",
                "-c",
                "2",
                "-P",
                "prefork",
                "-l",
                "warning",
            ],
            "beat": [
                str(BIN / "celery"),
                "-A",
                "config",
                "beat",
                "-l",
                "warning",
                "-s",
                str(self.tmp / "beat-schedule"),
            ],
        }
        for name in names or commands:
            self._spawn(name, commands[name])

    def kill9(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        """TERM each process group, then KILL whatever of the group is left (prefork children
        and gunicorn workers included), so nothing outlives the run."""
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        self.procs = {}


def stream(customers: int, seed: int) -> list[dict]:
    """Signed-later events of dunning stories, shuffled, one in five sent twice."""
    rng = random.Random(seed)
    now = int(time.time())
    events = []
    for i in range(customers):
        cus = StripeCustomer(id=f"cus_chaos{seed}x{i}", subscription=f"sub_chaos{seed}x{i}")
        cus.t = now - rng.choice([1, 3, 9, 20]) * 86400 - 6 * 3600
        story = i % 5
        # The written-off story (4) carries a hard decline: with a retryable one the service's
        # own retry (due at once, the failure being days old, and paid by the simulated
        # gateway) races the scripted invoice.marked_uncollectible, and either may win in any
        # run, clean included, so the final state would not be a property of the stream.
        code = [
            "insufficient_funds",
            "expired_card",
            "fraudulent",
            "insufficient_funds",
            "card_not_supported",
        ][story]
        events.append(cus.charge_event("charge.failed", f"ch_{i}a", decline_code=code))
        cus.tick(60)
        events.append(cus.invoice_event("invoice.payment_failed", attempt_count=1))
        if story == 3:
            cus.tick(3600)
            events.append(cus.invoice_event("invoice.paid", status="paid", attempt_count=2))
        if story == 4:
            cus.tick(86400)
            events.append(
                cus.invoice_event(
                    "invoice.marked_uncollectible", status="uncollectible", attempt_count=2
                )
            )
    rng.shuffle(events)
    return events + [e for e in events if rng.random() < 0.2]


def post(event: dict) -> int:
    payload, header = samples.signed(event, secret=SECRET, timestamp=int(time.time()))
    request = urllib.request.Request(
        f"http://127.0.0.1:{WEB_PORT}/webhooks/stripe/",
        data=payload,
        method="POST",
        headers={"Content-Type": "application/json", "Stripe-Signature": header},
    )
    return_code = 0
    for _ in range(30):  # the sender retries like Stripe does, bounded
        if STOPPING.is_set():
            break
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status
        except urllib.error.HTTPError as error:
            if error.code < 500:
                return error.code
            return_code = error.code
        except OSError:
            return_code = 0
        time.sleep(1)
    return return_code


READ_STATE = """
import json, django
django.setup()
from django.db.models import Count
from django.utils import timezone
from datetime import timedelta
from billing_events.models import Account, WebhookEvent
from dunning.models import AccountStanding, BadDebtPayment, DunningCase, OutboxItem
from entitlements.models import Restriction
now = timezone.now()
state = {}
for account in Account.objects.all():
    case = DunningCase.objects.filter(account=account).order_by("-pk").first()
    standing = AccountStanding.objects.filter(account=account).first()
    state[account.stripe_customer_id] = {
        "case": [case.state, case.resolution, case.level] if case else None,
        "restrictions": sorted(
            Restriction.objects.filter(account=account).values_list("code", flat=True)
        ),
        "standing": standing.requested if standing else None,
    }
events = WebhookEvent.objects
print(json.dumps({
    "state": state,
    "stored": sorted(events.values_list("stripe_event_id", flat=True).distinct()),
    "processed": events.filter(status__in=["processed", "ignored"]).count(),
    "duplicated": events.values("stripe_event_id").annotate(n=Count("pk")).filter(n__gt=1).count(),
    "events_pending": events.filter(status__in=["received", "failed", "dead"]).count(),
    "outbox_due": OutboxItem.objects.filter(status="pending", next_attempt_at__lte=now).count(),
    "outbox_dead": OutboxItem.objects.filter(status="dead").count(),
    "payments_processing": BadDebtPayment.objects.filter(status="processing").count(),
}))
"""


def read(env: dict) -> dict | None:
    done = subprocess.run(
        [sys.executable, "-c", READ_STATE],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return json.loads(done.stdout) if done.returncode == 0 else None


def settle(env: dict, started: float) -> tuple[dict, float]:
    """Wait (bounded) until nothing is due for 10 s in a row."""
    quiet_since, last = None, None
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        last = read(env) or last
        busy = last is None or last["events_pending"] or last["outbox_due"]
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 10:
            return last, quiet_since - started
        time.sleep(2)
    return last or {}, time.monotonic() - started


def one_run(
    name: str,
    events: list[dict],
    services: Services,
    base_env: dict,
    tmp: Path,
    peer: Peer,
    running: list[Processes],
) -> dict:
    db = f"chaos_{name}"
    env = {**base_env, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{PG_PORT}/{db}"}
    say(f"{name}: creating and migrating {db}")
    subprocess.run(
        [pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", db],
        check=True,
        timeout=60,
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        env=env,
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    subprocess.run(
        ["redis-cli", "-p", str(REDIS_PORT), "flushall"],
        check=False,
        stdout=subprocess.DEVNULL,
        timeout=30,
    )
    procs = Processes(env, tmp / name)
    (tmp / name).mkdir()
    running.append(procs)
    answers: list[int] = []
    half = len(events) // 2
    back_to_200: threading.Timer | None = None

    def fault() -> None:
        nonlocal back_to_200
        if name != "clean":
            say(f"{name}: injecting the fault")
        if name == "kill9":
            procs.kill9("worker")
            time.sleep(3)
            procs.start("worker")
        elif name == "redis":
            services.kill_redis()
            time.sleep(10)
            services.start_redis()
        elif name == "postgres":
            services.restart_pg()
        elif name == "am503":
            peer.status = 503
            back_to_200 = threading.Timer(120, lambda: setattr(peer, "status", 200))
            back_to_200.daemon = True
            back_to_200.start()

    try:
        procs.start()
        time.sleep(6)
        started = time.monotonic()
        say(f"{name}: sending {len(events)} deliveries")
        with ThreadPoolExecutor(4) as pool:
            answers += list(pool.map(post, events[:half]))
            fault()
            if name == "burst":
                answers += list(pool.map(post, [events[0]] * 40))
            answers += list(pool.map(post, events[half:]))
        say(f"{name}: sent ({sum(1 for c in answers if c >= 500 or c == 0)} 5xx); settling")
        final, settle_seconds = settle(env, started)
        if name == "am503":  # the standing calls wait out the outage, then settle
            time.sleep(max(0.0, 125 - (time.monotonic() - started)))
            final, settle_seconds = settle(env, started)
    finally:
        if back_to_200 is not None:
            back_to_200.cancel()
        procs.stop()
        running.remove(procs)
        peer.status = 200
    sent = {e["id"] for e in events}
    stored = set(final.get("stored", []))
    return {
        "run": name,
        "sent": len(sent),
        "stored": len(stored & sent),
        "processed": final.get("processed", 0),
        "lost": len(sent - stored),
        "duplicated": final.get("duplicated", 0),
        "stuck": final.get("events_pending", 0)
        + final.get("outbox_due", 0)
        + final.get("payments_processing", 0),
        "state": final.get("state", {}),
        "5xx": sum(1 for code in answers if code >= 500 or code == 0),
        "settle_s": round(settle_seconds, 1),
    }


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
