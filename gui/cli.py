"""``orthanc-transfers``: the command line on the transfer engine.

    orthanc-transfers peers
    orthanc-transfers send --from PEER --to PEER --study ID [...] [--json]
    orthanc-transfers jobs
    orthanc-transfers resume JOB
    orthanc-transfers cancel JOB

``send --json`` prints only the final report on stdout (one JSON object);
progress goes to stderr. Exit status: 0 only on Success, 1 on Failure,
2 for bad arguments, peers or IDs, 130 when interrupted with Ctrl-C (the
job is cancelled and rolled back first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import functools
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, TextIO, Tuple

from gui import __version__
from gui.client.errors import OrthancError, redact_url
from gui.client.orthanc_client import OrthancClient
from gui.client.peer import Peer, PeerConfigError
from gui.config.settings import AppConfig, ConfigError, TransferOptions, load_config
from gui.formatting import human_bytes

if TYPE_CHECKING:  # the engine loads only for the commands that need it
    from gui.engine import TransferEngine
    from gui.engine.events import JobPhase, JobState

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

LEVEL_FLAGS = (("patient", "Patient"), ("study", "Study"), ("series", "Series"),
               ("instance", "Instance"))


class CliError(Exception):
    """A one-line error for the user; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# --- arguments ------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orthanc-transfers",
        description="Fast, verified, all-or-nothing transfers of DICOM between Orthanc servers.")
    parser.add_argument("--version", action="version", version=f"orthanc-transfers {__version__}")
    parser.add_argument("--config", metavar="FILE", help="configuration file (default: the user's)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    peers = commands.add_parser("peers", help="list the configured peers and their status")
    peers.add_argument("--json", action="store_true", help="machine-readable output")

    send = commands.add_parser("send", help="transfer patients/studies/series/instances")
    send.add_argument("--from", dest="source", required=True, metavar="PEER",
                      help="source: a configured peer name or http://user:password@host:port/")
    send.add_argument("--to", dest="target", required=True, metavar="PEER",
                      help="target: a configured peer name or a URL, as --from")
    for flag, level in LEVEL_FLAGS:
        send.add_argument(f"--{flag}", action="append", default=[], metavar="ID",
                          help=f"{level.lower()} to send: Orthanc ID or DICOM "
                               f"{'PatientID' if level == 'Patient' else level + ' UID'} (repeatable)")
    send.add_argument("--mode", default="auto", choices=["auto", "push", "pull", "plain", "delegate"],
                      help="auto (default): push when the target has the transfers accelerator, pull when "
                           "only the source has it, plain REST otherwise; delegate: the source's C++ "
                           "plugin does the transfer")
    send.add_argument("--compression", choices=["gzip", "none", "auto"],
                      help="bucket compression (default: the configuration's, normally auto: measured "
                           "on the first bucket against the link speed)")
    send.add_argument("--import-as-it-arrives", action="store_true", default=None,
                      help="push to a target with this project's plugin: import each instance as soon as it is"
                           " verified (visible before the end; still removed again if the transfer fails)")
    send.add_argument("--threads", type=int, metavar="N", help="buckets moved at the same time (Threads)")
    send.add_argument("--bucket-size", type=int, metavar="KB",
                      help="size of a bucket in KB: small instances are grouped, large ones split (BucketSize)")
    send.add_argument("--retries", type=int, metavar="N",
                      help="tries again of a failed HTTP request before the job fails (MaxHttpRetries)")
    send.add_argument("--timeout", type=int, metavar="S",
                      help="seconds without an answer before a request fails (HttpTimeout)")
    send.add_argument("--limit-rate", type=parse_rate, metavar="RATE",
                      help="most bytes per second this job moves, all its connections together: a number "
                           "of bytes with K, M or G (e.g. 500K, 2M; 0 for no limit) (MaxRate)")
    send.add_argument("--force", action="store_true",
                      help="resend instances the target already has with the same MD5")
    send.add_argument("--new", action="store_true",
                      help="start a new job even if an unfinished identical one exists")
    send.add_argument("--config", dest="sub_config", metavar="FILE", help=argparse.SUPPRESS)
    send.add_argument("--json", action="store_true", help="print only the final report, as JSON")

    jobs = commands.add_parser("jobs", help="list the jobs stored on this computer")
    jobs.add_argument("--json", action="store_true", help="machine-readable output")

    commands.add_parser("demo", help="run two local demo Orthanc servers with sample studies "
                                     "until Ctrl-C (prints a config file naming them)")

    for name, text in (("resume", "resume an unfinished (paused or interrupted) job"),
                       ("cancel", "cancel an unfinished job and roll back what it did")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("job", metavar="JOB", help="job ID (or its first characters)")
        sub.add_argument("--from", dest="source", metavar="PEER",
                         help="source with credentials, if it is not a configured peer")
        sub.add_argument("--to", dest="target", metavar="PEER", help="target likewise")
        sub.add_argument("--json", action="store_true",
                         help="print only the final report, as JSON" if name == "resume"
                         else "machine-readable output")
    return parser


# --- peers, options, IDs -----------------------------------------------------------------

def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def resolve_peer(text: str, config: AppConfig) -> Peer:
    if not is_url(text) and "://" not in text and all(p.name != text for p in config.peers) \
            and (":" in text or text.startswith(("localhost", "127."))):
        # "host:8042" or "localhost/...": a URL without its scheme, not a peer name.
        raise CliError(f"{text!r} is not a configured peer; if it is a server's address, "
                       f"write it as a URL: http://{text}")
    if is_url(text):
        try:
            return Peer.from_url(redact_url(text).rstrip("/"), text)
        except PeerConfigError as exc:
            raise CliError(f"bad peer URL: {exc}") from None
    try:
        return config.peer(text)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def parse_rate(text: str) -> int:
    """'500K', '2M', '1G' or a byte count, per second: the cap in KB/s (MaxRate)."""
    units = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
    raw = text.strip().upper().removesuffix("/S").removesuffix("B")
    unit = raw[-1:] if raw[-1:] in units else ""
    try:
        value = float(raw[:-1] if unit else raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate such as 500K or 2M") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a rate cannot be negative")
    rate = value * units[unit]
    return 0 if rate == 0 else max(1, round(rate / 1024))


def transfer_options(config: AppConfig, args: argparse.Namespace) -> TransferOptions:
    values = config.transfers.to_json()
    for attr, name in (("threads", "Threads"), ("bucket_size", "BucketSize"),
                       ("retries", "MaxHttpRetries"), ("timeout", "HttpTimeout"),
                       ("compression", "Compression"), ("import_as_it_arrives", "ImportAsItArrives"),
                       ("limit_rate", "MaxRate")):
        value = getattr(args, attr, None)
        if value is not None:
            values[name] = value
    try:
        return TransferOptions.from_json(values)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


async def resolve_resources(client: OrthancClient, args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Orthanc IDs are checked on the source; DICOM UIDs / PatientIDs are looked up."""
    from gui.protocol.wire import is_orthanc_id
    resources: List[Dict[str, Any]] = []
    for flag, level in LEVEL_FLAGS:
        for value in getattr(args, flag):
            value = value.strip()
            if is_orthanc_id(value.lower()):
                try:
                    await client.resource(level, value.lower())
                except OrthancError as exc:
                    if exc.status == 404:
                        raise CliError(f"no {level.lower()} {value} on {client.peer.name}") from None
                    raise
                resources.append({"Level": level, "ID": value.lower()})
                continue
            found = await client.lookup_uid(value, level)
            if not found:
                raise CliError(f"no {level.lower()} with {'PatientID' if level == 'Patient' else 'UID'} "
                               f"{value!r} on {client.peer.name}")
            resources.extend(found)
    unique = {(r["Level"], r["ID"]): r for r in resources}
    return list(unique.values())


async def describe(source: Peer, resources: List[Dict[str, Any]], timeout: float) -> str:
    """What a job moves, the way the desktop app names it: patient name, study description…"""
    async def one(client: OrthancClient, item: Dict[str, Any]) -> str:
        fallback = f"{item['Level']} {item['ID'][:8]}"
        try:
            data = await client.resource(item["Level"], item["ID"])
        except OrthancError:
            return fallback
        tags = {**(data.get("PatientMainDicomTags") or {}), **(data.get("MainDicomTags") or {})}
        name = " ".join(p for p in str(tags.get("PatientName", "")).split("^") if p)
        detail = {"Study": tags.get("StudyDescription"), "Series": tags.get("SeriesDescription")}.get(
            item["Level"])
        parts = [name or tags.get("PatientID", ""), detail or "", tags.get("AccessionNumber", "")]
        return " · ".join(str(p) for p in parts if p) or fallback
    async with OrthancClient(source, timeout=timeout) as client:
        labels = [await one(client, r) for r in resources[:3]]
    more = f" and {len(resources) - 3} more" if len(resources) > 3 else ""
    return ", ".join(labels) + more


def load(args: argparse.Namespace) -> AppConfig:
    path = getattr(args, "sub_config", None) or args.config
    try:
        config = load_config(Path(path) if path else None)
    except ConfigError as exc:
        raise CliError(f"configuration: {exc}") from None
    if path and not Path(path).exists():
        raise CliError(f"configuration file {path} does not exist")
    if config.recovered_from:
        print(f"warning: the configuration was unreadable and was moved to {config.recovered_from}",
              file=sys.stderr)
    return config


# --- progress on stderr -------------------------------------------------------------------

class ProgressPrinter:
    """A live one-line bar on a terminal, a line every few seconds otherwise."""

    def __init__(self, stream: TextIO, job_id: str) -> None:
        self.stream = stream
        self.job_id = job_id
        self.tty = stream.isatty()
        self.last = 0.0
        self.last_state: Optional[Tuple[JobState, Optional[JobPhase]]] = None
        self.drawn = False
        self.planning_said = False

    def __call__(self, event: Any) -> None:
        from gui.engine.events import JobProgress
        if not isinstance(event, JobProgress) or event.job_id != self.job_id:
            return
        now = time.monotonic()
        changed = (event.state, event.phase) != self.last_state
        interval = 0.2 if self.tty else 2.0
        if not changed and now - self.last < interval:
            return
        self.last, self.last_state = now, (event.state, event.phase)
        line = self.format(event)
        if line.startswith("planning"):
            if self.planning_said and not event.instances_found:
                return   # pending, then running, both still planning: once is enough
            self.planning_said = True
        if self.tty:
            self.stream.write("\r" + line[:150] + "\x1b[K")
            self.drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    @staticmethod
    def format(event: Any) -> str:
        from gui.engine.events import JobState
        if event.state in (JobState.FAILURE, JobState.CANCELED):
            verb = "failed" if event.state is JobState.FAILURE else "canceled"
            sent = (f" after {event.instances_done} of {event.instances_total} instances"
                    if event.instances_total else " before any instance was sent")
            return f"{verb}{sent}" + (f": {event.error}" if event.error else "")
        if not event.instances_total and not event.state.finished:
            if event.instances_found:
                return f"planning... {event.instances_found} instances found"
            return "planning (listing instances, checking the target)..."
        if event.phase is not None and event.phase.value in ("committing", "verifying"):
            what = ("the target imports and commits the buckets" if event.phase.value == "committing"
                    else "reading every instance's MD5 back from the target")
            return f"{event.phase.value}: {event.instances_done}/{event.instances_total} instances sent, {what}..."
        width = 24
        filled = int(width * min(1.0, event.fraction))
        bar = "#" * filled + "-" * (width - filled)
        mode = event.mode.value if event.mode else "?"
        eta = f" ETA {event.eta:.0f}s" if event.eta is not None else ""
        return (f"[{bar}] {event.fraction * 100:5.1f}% {event.state.value.lower()} {mode} "
                f"{event.instances_done}/{event.instances_total} instances "
                f"{human_bytes(event.raw_done)}/{human_bytes(event.raw_total)} "
                f"{human_bytes(event.raw_rate)}/s{eta}")

    def end(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()


# --- commands ------------------------------------------------------------------------------

def failure_report_json(source: str, target: str, error: str) -> Dict[str, Any]:
    from gui.engine.events import CommitmentReport, JobState
    return CommitmentReport(job_id="", state=JobState.FAILURE, mode=None, source=source,
                            target=target, error=error).to_json()


def print_summary(report: Any, out: TextIO) -> None:
    data = report.to_json()
    if data["state"] != "Success" and not data["instances"]:
        out.write(f"{data['state']}: nothing was sent to {data['target']}, job {data['job'] or '-'}\n")
        if data["error"]:
            out.write(f"error: {data['error']}\n")
        return
    out.write(f"{data['state']}: {data['verified']}/{data['instances']} instances verified on "
              f"{data['target']} ({data['transferred']} transferred, {data['skipped']} already "
              f"present), {human_bytes(data['bytes'])} in {data['seconds']:.1f} s, mode "
              f"{data['mode'] or '-'}, job {data['job']}\n")
    if data["error"]:
        out.write(f"error: {data['error']}\n")
    for failure in data["failures"][:10]:
        out.write(f"  {failure['instance']}: {failure['reason']}\n")
    if len(data["failures"]) > 10:
        out.write(f"  ... and {len(data['failures']) - 10} more\n")


@dataclass
class Cli:
    args: argparse.Namespace
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    interrupted: bool = False
    # When ``send`` began (after start-up) and how long the planning it did
    # before submitting took: the JSON report counts both, since the job's
    # own clock starts only at the submission (see _print_report).
    started: Optional[float] = None
    planned_for: Optional[float] = None

    async def run(self) -> int:
        command = self.args.command
        if command == "peers":
            return await self.peers()
        if command == "send":
            return await self.send()
        if command == "jobs":
            return await self.jobs()
        if command in ("resume", "cancel"):
            return await self.control(command)
        raise CliError("missing command (peers, send, jobs, resume, cancel); see --help")

    # peers ------------------------------------------------------------------------------

    async def peers(self) -> int:
        config = load(self.args)
        rows = await asyncio.gather(*(self._peer_status(p) for p in config.peers))
        if self.args.json:
            self.stdout.write(json.dumps(rows, indent=2) + "\n")
            return EXIT_OK
        if not rows:
            self.stdout.write(f"no peers configured in {config.path}\n"
                              "add one with the desktop app (File > Settings), or there as "
                              "\"OrthancPeers\": {\"NAME\": [\"http://host:8042/\", \"user\", \"password\"]}\n")
            return EXIT_OK
        self.stdout.write(f"{'NAME':<20} {'URL':<40} STATUS\n")
        for row in rows:
            if row["error"]:
                status = f"error: {row['error']}"
            else:
                status = (f"Orthanc {row['version']}, accelerator "
                          f"{'yes (' + row['accelerator'] + ')' if row['accelerator'] else 'no'}")
            self.stdout.write(f"{row['name']:<20} {row['url']:<40} {status}\n")
        return EXIT_OK

    async def _peer_status(self, peer: Peer) -> Dict[str, Any]:
        row: Dict[str, Any] = {"name": peer.name, "url": peer.url, "version": None,
                               "accelerator": None, "error": None}
        try:
            async with OrthancClient(peer, timeout=10) as client:
                row["version"] = (await client.system()).version
                info = await client.accelerator()
                row["accelerator"] = info.flavour if info.available else None
        except OrthancError as exc:
            row["error"] = exc.reason
        return row

    # send / resume -------------------------------------------------------------------------

    def _engine(self, config: AppConfig, options: TransferOptions,
                extra_peers: Sequence[Peer] = ()) -> "TransferEngine":
        from gui.engine import TransferEngine
        return TransferEngine(options, max_concurrent_jobs=1,
                              peer_resolver=functools.partial(config.peer_for, extra=tuple(extra_peers)))

    async def _plan_and_warn(self, engine: "TransferEngine", source: Peer, target: Peer,
                             resources: List[Dict[str, Any]], options: TransferOptions) -> Optional[Any]:
        """Plan first (the job then starts from this plan) to say on stderr what
        the confirmation would, e.g. that the target would recycle patients.
        A plan that fails here is left to the job, which reports it as usual."""
        began = time.monotonic()
        try:
            plan = await engine.plan(source, target, resources, options, mode=self.args.mode,
                                     force=self.args.force)
        except Exception as exc:  # noqa: BLE001 - the job plans again and reports the failure
            logging.getLogger(__name__).debug("planning before the job failed (%s); the job plans itself", exc)
            return None
        self.planned_for = time.monotonic() - began
        for warning in plan.warnings:
            self.stderr.write(f"warning: {warning}\n")
        return plan

    async def send(self) -> int:
        # The engine's modules load before the clock starts: the app loads
        # them once, at its start-up, and so does this process (its start-up
        # is measured apart: the benchmark's process time). Without bytecode
        # caches (PYTHONDONTWRITEBYTECODE) that load is 0.1 s of compiling.
        import gui.engine  # noqa: F401
        self.started = time.monotonic()
        args = self.args
        config = load(args)
        if not any(getattr(args, flag) for flag, _ in LEVEL_FLAGS):
            raise CliError("nothing to send: give at least one --patient, --study, --series or --instance")
        source = resolve_peer(args.source, config)
        target = resolve_peer(args.target, config)
        options = transfer_options(config, args)
        async with OrthancClient(source, timeout=float(options.HttpTimeout)) as client:
            try:
                resources = await resolve_resources(client, args)
            except OrthancError as exc:
                raise CliError(f"cannot reach the source: {exc}", EXIT_FAILURE) from None
        engine = self._engine(config, options, (source, target))
        await engine.start()
        try:
            job = None if args.new else engine.find_unfinished(source.url, target.url, resources,
                                                                args.mode)
            if job is not None:
                self.stderr.write(f"resuming unfinished job {job.id}\n")
                await engine.resume(job.id, source=source, target=target)
            else:
                description = await describe(source, resources, float(options.HttpTimeout))
                plan = await self._plan_and_warn(engine, source, target, resources, options)
                job = await engine.submit(source, target, resources, options, mode=args.mode,
                                          compression=args.compression, force=args.force,
                                          description=description, plan=plan)
                self.stderr.write(f"job {job.id}\n")
            return await self._follow(engine, job)
        finally:
            await engine.close()

    async def control(self, command: str) -> int:
        config = load(self.args)
        extra = [resolve_peer(p, config) for p in (self.args.source, self.args.target) if p]
        engine = self._engine(config, config.transfers, extra)
        await engine.start()
        try:
            from gui.engine.transfer_engine import EngineError
            try:
                job = engine.job(self.args.job)
            except EngineError as exc:
                raise CliError(str(exc)) from None
            if job.state.finished:
                raise CliError(f"job {job.id} is already finished ({job.state.value})")
            source = resolve_peer(self.args.source, config) if self.args.source else None
            target = resolve_peer(self.args.target, config) if self.args.target else None
            if command == "cancel":
                await engine.cancel(job.id)
                report = await job.wait()
                self._print_report(report)
                return EXIT_OK if report.state.value == "Canceled" else EXIT_FAILURE
            self.stderr.write(f"resuming job {job.id}\n")
            await engine.resume(job.id, source=source, target=target)
            return await self._follow(engine, job)
        finally:
            await engine.close()

    async def _follow(self, engine: Any, job: Any) -> int:
        """Show progress until the job ends; Ctrl-C cancels (with rollback)."""
        printer = ProgressPrinter(self.stderr, job.id)
        unsubscribe = engine.subscribe(printer)
        loop = asyncio.get_running_loop()

        def interrupt(signame: str) -> None:
            if self.interrupted:
                return
            self.interrupted = True
            printer.end()
            self.stderr.write(f"{signame}: cancelling job {job.id} and rolling back...\n")
            asyncio.ensure_future(engine.cancel(job.id))

        installed = []
        for sig, name in ((signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated")):
            try:
                loop.add_signal_handler(sig, interrupt, name)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            report = await job.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            unsubscribe()
            printer.end()
        self._print_report(report)
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if report.state.value == "Success" else EXIT_FAILURE

    def _print_report(self, report: Any) -> None:
        if self.args.json:
            data = report.to_json()
            if self.started is not None:
                # From the command's request (its look-ups, description and
                # planning included) to the verified report: what a user
                # waits for, where "seconds" is the job's time from submission.
                data["command_seconds"] = round(time.monotonic() - self.started, 3)
            if self.planned_for is not None:
                data["planning_seconds"] = round(self.planned_for + (report.planning_seconds or 0.0), 3)
            self.stdout.write(json.dumps(data) + "\n")
        else:
            print_summary(report, self.stdout)
        self.stdout.flush()

    # jobs ------------------------------------------------------------------------------------

    async def jobs(self) -> int:
        from gui.engine import TransferEngine
        engine = TransferEngine(load(self.args).transfers)
        await engine.start()
        try:
            jobs = engine.jobs()
        finally:
            await engine.close()
        if self.args.json:
            rows = [{"job": j.id, "state": j.state.value, "mode": j.mode.value if j.mode else None,
                     "source": j.source_name, "target": j.target_name, "description": j.description,
                     "created": j.created, "report": j.report.to_json() if j.report else None}
                    for j in jobs]
            self.stdout.write(json.dumps(rows, indent=2) + "\n")
            return EXIT_OK
        if not jobs:
            self.stdout.write("no jobs\n")
        for j in jobs:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(j.created))
            result = ""
            if j.report is not None:
                result = f" {j.report.verified}/{j.report.planned} verified"
            self.stdout.write(f"{j.id}  {when}  {j.state.value:<8} {(j.mode.value if j.mode else '-'):<8} "
                              f"{j.source_name} -> {j.target_name}  {j.description}{result}\n")
        return EXIT_OK


def run_demo(out: TextIO = sys.stdout) -> int:
    """Start the demo servers, say how to use them, and keep them until interrupted."""
    from gui.sandbox.demo import LOCAL_NAME, REMOTE_NAME, DemoServers

    def stop_on_term(*_: object) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop_on_term)
    demo = DemoServers()
    try:
        config = demo.start()
        local = demo.servers[0]
        studies = local.request("GET", "/studies?expand") or []
        out.write(f"demo servers running, {demo.accelerator_summary()}; configuration: {config.path}\n")
        for peer in config.peers:
            out.write(f"  {peer.name}: {peer.url}\n")
        out.write(f"studies on {LOCAL_NAME}:\n")
        for study in studies:
            tags = study.get("MainDicomTags", {})
            out.write(f"  {study['ID']}  {tags.get('StudyDescription', '')}\n")
        if studies:
            out.write(f"try: orthanc-transfers --config '{config.path}' send --from '{LOCAL_NAME}' "
                      f"--to '{REMOTE_NAME}' --study {studies[0]['ID']} --json\n")
        out.write("press Ctrl-C to stop them\n")
        out.flush()
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        # A second Ctrl-C must not leave servers running half-stopped.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=os.environ.get("ORTHANC_TRANSFERS_LOG", "WARNING").upper(),
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command == "demo":
        try:
            return run_demo()
        except Exception as exc:  # noqa: BLE001 - e.g. Orthanc not installed
            print(f"orthanc-transfers: error: {exc}".splitlines()[0], file=sys.stderr)
            return EXIT_FAILURE
    cli = Cli(args)
    wants_json = getattr(args, "json", False) and args.command == "send"
    try:
        return asyncio.run(cli.run())
    except CliError as exc:
        message = str(exc)
        code = exc.code
    except OrthancError as exc:
        message, code = str(exc), EXIT_FAILURE
    except KeyboardInterrupt:
        message, code = "interrupted", EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the user gets one line, not a traceback
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        message, code = f"internal error: {type(exc).__name__}: {exc}", EXIT_FAILURE
    print(f"orthanc-transfers: error: {message}", file=sys.stderr)
    if wants_json:
        peers = [redact_url(p or "") for p in (getattr(args, "source", ""), getattr(args, "target", ""))]
        print(json.dumps(failure_report_json(peers[0], peers[1], message)))
    return code


if __name__ == "__main__":
    sys.exit(main())
