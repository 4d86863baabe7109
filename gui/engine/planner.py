"""Planning a job: what to send, what the target already has, which transport.

Orthanc IDs are derived from the DICOM UIDs, so an instance has the same ID
on every server: an instance the target already holds with the same MD5 need
not travel again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Set, Tuple, TypeVar

from gui.client.errors import OrthancError
from gui.client.orthanc_client import LEVEL_PATHS, KeptListings, OrthancClient
from gui.engine.events import TransferMode
from gui.engine.retry import with_retries
from gui.engine.source_md5 import PENDING
from gui.engine.target_md5 import ASK, SMALL_GET_CONCURRENCY, held_below, md5s_on
from gui.protocol import wire
from gui.protocol.wire import InstanceInfo

T = TypeVar("T")
# Called with the count of instances found so far while planning (progress).
FoundHook = Optional[Callable[[int], None]]
R = TypeVar("R")

MODE_NAMES = ("auto", "push", "pull", "plain", "delegate")


class PlanningError(Exception):
    """The job cannot be planned; the text is shown to the user."""


@dataclass
class Plan:
    instances: List[InstanceInfo]                 # everything the job covers, sorted by ID
    to_send: List[InstanceInfo]                    # what must travel
    present: List[InstanceInfo] = field(default_factory=list)  # already on the target, same MD5

    @property
    def bytes_to_send(self) -> int:
        return sum(i.size for i in self.to_send)


@dataclass
class PreparedPlan:
    """A transfer between two peers planned once: the mode chosen, what each
    end speaks and what will travel. The confirmation shows it and hands it
    to ``TransferEngine.submit``, whose first run uses it as it is."""
    requested_mode: str
    force: bool
    resources: List[Dict[str, Any]]
    mode: TransferMode
    reason: str
    plan: Plan
    source_speaks: bool
    target_speaks: bool
    # What the planning's listings said of each instance (the audit record's
    # names): handed to the job's client so the source is not listed twice.
    listings: KeptListings = field(default_factory=dict)


async def gather_bounded(items: Sequence[T], worker: Callable[[T], Awaitable[R]], concurrency: int) -> List[R]:
    """``worker(item)`` for every item, at most ``concurrency`` at a time, results in order."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(item: T) -> R:
        async with gate:
            return await worker(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


def check_resources(resources: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    try:
        return wire.parse_resources(list(resources))
    except wire.WireFormatError as exc:
        raise PlanningError(f"invalid resource list: {exc}") from None


async def resolve_instances(source: OrthancClient, resources: Sequence[Dict[str, Any]], *,
                            use_protocol: bool, concurrency: int, retries: int = 0,
                            headers: Optional[Dict[str, str]] = None,
                            on_found: FoundHook = None,
                            md5s_of: Optional[Callable[[Set[str]], Awaitable[Set[str]]]] = None
                            ) -> List[InstanceInfo]:
    """Instance infos (ID, size, MD5) of everything below ``resources`` on the source.
    Each query is retried up to ``retries`` times on retryable errors; ``on_found``
    hears the count of instances listed so far. Without the protocol,
    ``md5s_of`` (given the IDs listed) names the only instances whose MD5 is
    asked now; the others get ``source_md5.PENDING``, fetched later."""
    resources = check_resources(resources)
    listed: Dict[str, int] = {}

    async def below(part: Dict[str, Any]) -> None:
        listed.update(await with_retries(lambda: _instances_below(source, part), retries))
        if on_found is not None:
            on_found(len(listed))

    async def list_all() -> None:
        parts: List[Dict[str, Any]] = []
        for resource in resources:
            if on_found is not None and resource["Level"] in ("Patient", "Study"):
                # Series by series, so that a large patient's count grows as it is listed.
                parts.extend(await with_retries(lambda: _series_below(source, resource), retries))
            else:
                parts.append(resource)
        await gather_bounded(parts, below, concurrency)

    listing = list_all()
    if use_protocol:
        # The lookup does not need the listing: both at once.
        lookup = asyncio.ensure_future(
            with_retries(lambda: source.transfers.lookup(resources, headers=headers), retries))
        try:
            await listing
        except BaseException:
            lookup.cancel()
            await asyncio.gather(lookup, return_exceptions=True)
            raise
        found = await lookup
        _check_lookup_against_listing(source, found, listed)
        return found
    await listing
    ids = sorted(listed)
    wanted = sorted(await md5s_of(set(ids))) if md5s_of is not None else ids
    # Tiny answers: the round trip limits, so more of them in flight.
    md5s = await gather_bounded(wanted, lambda i: with_retries(lambda: source.instance_md5(i), retries),
                                max(concurrency, SMALL_GET_CONCURRENCY))
    asked = dict(zip(wanted, md5s))
    return [InstanceInfo(i, listed[i], asked.get(i, PENDING)) for i in ids]


def _check_lookup_against_listing(source: OrthancClient, found: Sequence[InstanceInfo],
                                  listed: Dict[str, int]) -> None:
    """The lookup's sizes drive the plan (bucket count, memory): a peer whose
    lookup disagrees with its own REST listing is refused before anything is
    planned or allocated from those numbers."""
    claimed = {i.id: i.size for i in found}
    for instance_id, size in claimed.items():
        if listed.get(instance_id) != size:
            actual = listed.get(instance_id)
            what = "does not list it" if actual is None else f"stores {actual} bytes"
            raise PlanningError(f"{source.peer.name}: its transfers lookup gives instance {instance_id} "
                                f"{size} bytes but its REST API {what}; refusing the plan")
    missing = sorted(set(listed) - set(claimed))
    if missing:
        raise PlanningError(f"{source.peer.name}: its transfers lookup omits {len(missing)} instance(s), "
                            f"e.g. {missing[0]}; refusing the plan")


async def _series_below(source: OrthancClient, resource: Dict[str, Any]) -> List[Dict[str, Any]]:
    path = f"/{LEVEL_PATHS[resource['Level']]}/{wire.check_orthanc_id(resource['ID'])}/series"
    try:
        items = await source.get_json(path)
    except OrthancError as exc:
        if exc.status == 404:
            raise PlanningError(f"{resource['Level'].lower()} {resource['ID']} is not on "
                                f"{source.peer.name}") from None
        raise
    if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("ID"), str)
                                              for i in items):
        raise PlanningError(f"{source.peer.name}: unexpected answer to GET {path}")
    return [{"Level": "Series", "ID": i["ID"]} for i in items]


async def _instances_below(source: OrthancClient, resource: Dict[str, Any]) -> Dict[str, int]:
    try:
        items = await source.instances_of(resource["Level"], resource["ID"], keep=True)
    except OrthancError as exc:
        if exc.status == 404:
            raise PlanningError(f"{resource['Level'].lower()} {resource['ID']} is not on "
                                f"{source.peer.name}") from None
        raise
    out: Dict[str, int] = {}
    for item in items:
        size = item.get("FileSize")
        if not isinstance(size, int):
            # Older servers do not list sizes; the attachment info has it.
            info = await source.get_json(f"/instances/{item['ID']}/attachments/dicom/info")
            size = int(info["UncompressedSize"])
        out[str(item["ID"])] = size
    return out


async def present_on_target(target: OrthancClient, instances: Sequence[InstanceInfo],
                            concurrency: int, retries: int = 0, *, bulk: bool = False,
                            resources: Optional[Sequence[Dict[str, Any]]] = None,
                            held: object = ASK) -> Dict[str, Optional[str]]:
    """The target's MD5 of each instance, None when absent; the first error
    met is raised. ``bulk``: the target speaks the protocol (one lookup);
    ``resources``: the job's, which hold every instance (see ``target_md5``)."""
    found = await md5s_on(target, [i.id for i in instances], bulk=bulk, concurrency=concurrency,
                          retries=retries, resources=resources, held=held)
    for value in found.values():
        if isinstance(value, OrthancError):
            raise value
    return {i.id: found.get(i.id) for i in instances}  # type: ignore[misc]


async def make_plan(source: OrthancClient, target: OrthancClient, resources: Sequence[Dict[str, Any]], *,
                    use_protocol: bool, concurrency: int, force: bool = False,
                    keep: Optional[Set[str]] = None, retries: int = 0,
                    headers: Optional[Dict[str, str]] = None, target_speaks: bool = False,
                    on_found: FoundHook = None, defer_md5s: bool = False) -> Plan:
    """Resolve, then drop what the target already has with the same MD5.

    With ``force`` everything is sent again, except the instances named in
    ``keep`` (already sent by an earlier run of this very job).
    ``defer_md5s`` (plain mode from a stock source): the source MD5s of
    instances the target does not hold are left ``PENDING`` for the
    transport to fetch beside the transfer (source_md5.py); the plan
    compares only the others.
    """
    checked = check_resources(resources)
    # What the target holds below the job's resources is asked while the
    # source lists its instances (one round trip to the target fewer).
    held = None if force else asyncio.ensure_future(held_below(target, checked, retries, None))
    md5s_of: Optional[Callable[[Set[str]], Awaitable[Set[str]]]] = None
    if defer_md5s and not use_protocol and held is not None:
        holding = held

        async def md5s_of(ids: Set[str]) -> Set[str]:
            # Only what the target holds can be skipped, so only those MD5s
            # are compared now; held unknown (None, or an error raised
            # below): every MD5 now, as without deferral.
            await asyncio.wait({holding})
            found = holding.result() if holding.exception() is None else None
            return ids if found is None else ids & found
    try:
        instances = await resolve_instances(source, resources, use_protocol=use_protocol,
                                            concurrency=concurrency, retries=retries, headers=headers,
                                            on_found=on_found, md5s_of=md5s_of)
    except BaseException:
        if held is not None:
            held.cancel()
            await asyncio.gather(held, return_exceptions=True)
        raise
    return await split_present(target, instances, concurrency=concurrency, force=force, keep=keep,
                               retries=retries, target_speaks=target_speaks,
                               resources=checked, held=await held if held is not None else ASK)


async def split_present(target: OrthancClient, instances: Sequence[InstanceInfo], *,
                        concurrency: int, force: bool = False,
                        keep: Optional[Set[str]] = None, retries: int = 0,
                        target_speaks: bool = False,
                        resources: Optional[Sequence[Dict[str, Any]]] = None, held: object = ASK) -> Plan:
    instances = sorted(instances, key=lambda i: i.id)
    candidates = [i for i in instances if not force or (keep and i.id in keep)]
    on_target = await present_on_target(target, candidates, concurrency, retries, bulk=target_speaks,
                                        resources=resources, held=held) if candidates else {}
    present = [i for i in candidates if on_target.get(i.id) == i.md5]
    present_ids = {i.id for i in present}
    to_send = [i for i in instances if i.id not in present_ids]
    return Plan(list(instances), to_send, present)


def choose_mode(requested: str, *, source_speaks: bool, target_speaks: bool,
                available: Dict[TransferMode, bool], delegable: bool = False) -> Tuple[TransferMode, str]:
    """The transport for a job and a one-line why.

    auto: delegate when ``delegable`` (the source's plugin can send to the
    target as one of its peers, and this desk is far from both servers, so
    the bytes would otherwise cross its link twice: see
    ``delegated_mode.should_delegate``); else push if the target speaks the
    protocol; pull if only the source does; else plain. A transport whose
    module is not installed is skipped by auto and refused when asked for.
    """
    if requested not in MODE_NAMES:
        raise PlanningError(f"unknown mode {requested!r} (use {', '.join(MODE_NAMES)})")
    if requested == "auto":
        if delegable and source_speaks and available.get(TransferMode.DELEGATE):
            return TransferMode.DELEGATE, ("both servers are far from this computer and the source can "
                                           "send to the target itself")
        if target_speaks and available.get(TransferMode.PUSH):
            return TransferMode.PUSH, "the target speaks the transfers protocol"
        if source_speaks and available.get(TransferMode.PULL):
            return TransferMode.PULL, "the source speaks the transfers protocol"
        return TransferMode.PLAIN, "stock Orthanc REST API"
    mode = TransferMode(requested)
    if mode is not TransferMode.PLAIN and not available.get(mode):
        raise PlanningError(f"{mode.value} mode is not available in this installation")
    if mode is TransferMode.PUSH and not target_speaks:
        raise PlanningError("push mode needs the transfers accelerator on the target, "
                            "which does not answer /transfers/lookup")
    if mode is TransferMode.PULL and not source_speaks:
        raise PlanningError("pull mode needs the transfers accelerator on the source, "
                            "which does not answer /transfers/lookup")
    if mode is TransferMode.DELEGATE and not source_speaks:
        raise PlanningError("delegate mode needs the transfers plugin on the source")
    return mode, f"{mode.value} mode requested"
