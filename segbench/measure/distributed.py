"""One process per rank under torchrun: its place, its own cores or GPU, the process group, and the
few collectives segbench needs to coordinate ranks (everything else stays per process).

torchrun tells each process its place through the environment (RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR/PORT). `start` reads it and, before torch starts a thread pool (threads
created earlier keep the old CPU mask), gives the rank a disjoint slice of the cores this process may
use (``os.sched_getaffinity``, so taskset, cgroups and Slurm cpusets are honoured) with
``torch.set_num_threads`` to match: ranks on one machine then do not disturb each other's timings. On
CUDA each rank makes ``cuda:LOCAL_RANK`` its current device, so ``--device cuda`` means the rank's own
GPU and rows still say ``cuda``. The process group is gloo on CPU and nccl on CUDA, with a gloo group
beside nccl for the control messages (the run id, the rows at the end), which need no GPU.

Every collective and message has a timeout, ``SEGBENCH_DIST_TIMEOUT`` seconds (default
`DEFAULT_TIMEOUT_S`): it bounds the wait for a rank that is alive but stuck, and must exceed what one
rank may wait for the others at the end of a sweep. A rank that dies costs no timeout: gloo sees the closed connection and
the others' collectives fail within about a second (and torchrun stops the remaining ranks).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import math
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from segbench.errors import UserError

#: Two hours: longer than the imbalance of any sweep tried here, short enough to end a stuck job.
DEFAULT_TIMEOUT_S = 7200.0
TIMEOUT_VARIABLE = "SEGBENCH_DIST_TIMEOUT"
#: The timeouts accepted: a second to a week.
TIMEOUT_RANGE_S = (1.0, 7 * 24 * 3600.0)


@dataclass(frozen=True)
class Place:
    """This process's place in a torchrun job, once `start` has set it up.

    :param device: the device this rank measures on (``cpu``, or ``cuda``: its own GPU is the current one).
    :param cores: the CPU cores this rank is pinned to; None where the OS cannot pin.
    :param control: the gloo group of the control collectives (the default group when it is gloo).
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: str
    cores: tuple[int, ...] | None
    control: Any
    timeout_s: float


def launched() -> bool:
    """Whether torchrun (or another launcher speaking its environment) started this process: RANK or
    WORLD_SIZE is set (`torchrun_environment` then checks that the whole environment is there)."""
    return "RANK" in os.environ or "WORLD_SIZE" in os.environ


#: What torchrun sets for every process, and what segbench needs of it.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def torchrun_environment() -> tuple[int, int, int, int]:
    """(rank, world size, local rank, local world size) from torchrun's variables, every one checked
    (UserError naming the variable): a partial or inconsistent environment is one line and exit 2 on
    every rank, never a traceback inside torch or a rank that waits for ranks that do not exist."""
    missing = [name for name in TORCHRUN_VARIABLES if not os.environ.get(name)]
    if missing:
        raise UserError(
            f"{', '.join(missing)} not set while {'RANK' if 'RANK' in os.environ else 'WORLD_SIZE'} is: start "
            f"segbench with torchrun (which sets {', '.join(TORCHRUN_VARIABLES)}), or unset it"
        )
    world_size = _integer("WORLD_SIZE", 1)
    rank = _integer("RANK", 0)
    if rank >= world_size:
        raise UserError(f"bad RANK={rank}: expected 0 to WORLD_SIZE - 1 = {world_size - 1}")
    local_world_size = _integer("LOCAL_WORLD_SIZE", 1, default=world_size)
    local_rank = _integer("LOCAL_RANK", 0, default=rank)
    if local_world_size > world_size:
        raise UserError(f"bad LOCAL_WORLD_SIZE={local_world_size}: more than WORLD_SIZE={world_size}")
    if local_rank >= local_world_size:
        raise UserError(f"bad LOCAL_RANK={local_rank}: expected 0 to LOCAL_WORLD_SIZE - 1 = {local_world_size - 1}")
    port = _integer("MASTER_PORT", 1)
    if port > 65535:
        raise UserError(f"bad MASTER_PORT={port}: expected a TCP port, 1 to 65535")
    return rank, world_size, local_rank, local_world_size


def _integer(name: str, least: int, default: int | None = None) -> int:
    """The environment variable ``name`` as an integer >= ``least`` (``default`` when unset)."""
    text = os.environ.get(name)
    if text is None and default is not None:
        return default
    try:
        value = int(str(text).strip())
    except ValueError:
        value = least - 1
    if value < least:
        raise UserError(f"bad {name}={text!r}: expected an integer >= {least}")
    return value


def start(device: str) -> Place:
    """Pin this rank's cores, pick its GPU and join the process group (UserError on an impossible setup)."""
    rank, world_size, local_rank, local_world_size = torchrun_environment()
    timeout_s = timeout_seconds()
    backend, device_id, near = "gloo", None, None
    if device.startswith("cuda"):
        device, index = _own_gpu(device, local_rank, local_world_size)
        backend, device_id = "nccl", torch.device("cuda", index)
        count = torch.cuda.device_count()
        near = None if count < local_world_size else gpu_near_cpus(local_world_size)
    cores = pin_cores(local_rank, local_world_size, near)
    if not dist.is_initialized():  # device_id: NCCL's communicator bound to the rank's GPU from the start
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), device_id=device_id)
        atexit.register(_leave)
    control = None if backend == "gloo" else dist.new_group(backend="gloo")
    return Place(rank, world_size, local_rank, local_world_size, device, cores, control, timeout_s)


def timeout_seconds() -> float:
    """``SEGBENCH_DIST_TIMEOUT`` (seconds, `TIMEOUT_RANGE_S`), or `DEFAULT_TIMEOUT_S`.

    A timeout under a second fails the first collective of a healthy job; one beyond a week (or inf)
    is beyond what ``datetime.timedelta`` and the process group take, and never ends a stuck job.
    """
    text = os.environ.get(TIMEOUT_VARIABLE)
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    low, high = TIMEOUT_RANGE_S
    if not low <= value <= high:
        raise UserError(f"bad {TIMEOUT_VARIABLE}={text!r}: expected seconds from {low:g} to {high:g}, e.g. 600")
    return value


def pin_cores(
    local_rank: int, local_world_size: int, near: list[frozenset[int]] | None = None
) -> tuple[int, ...] | None:
    """Restrict this process to its share of the usable cores (`rank_cores`), set torch's threads."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    usable = sorted(os.sched_getaffinity(0))
    mine = rank_cores(usable, local_rank, local_world_size, physical_core, near)
    os.sched_setaffinity(0, mine)
    torch.set_num_threads(len(mine))
    return mine


def rank_cores(
    usable: list[int],
    local_rank: int,
    local_world_size: int,
    core_of: Callable[[int], Any],
    near: list[frozenset[int]] | None = None,
) -> tuple[int, ...]:
    """This rank's logical CPUs: one per physical core (hyperthread siblings of two ranks would
    disturb each other's timings), the cores split evenly among the ranks, leftovers unused.

    ``near``: per local rank, the CPUs on its GPU's NUMA node; ranks whose GPUs share a node split
    that node's cores among themselves (when every such group has a core per rank), so no rank
    works from the far socket. ``core_of(cpu)``: the physical core a logical CPU belongs to.
    """
    firsts: dict[Any, int] = {}
    for cpu in sorted(usable):
        firsts.setdefault(core_of(cpu), cpu)
    cores = sorted(firsts.values())
    if near is not None and len(near) == local_world_size:
        group = [rank for rank in range(local_world_size) if near[rank] == near[local_rank]]
        local = [cpu for cpu in cores if cpu in near[local_rank]]
        groups = {frozenset(n) for n in near}
        if all(len([c for c in cores if c in n]) >= near.count(n) for n in groups):
            per_rank = len(local) // len(group)
            index = group.index(local_rank)
            return tuple(local[index * per_rank : (index + 1) * per_rank])
    if len(cores) < local_world_size:  # fewer physical cores than ranks: share them rather than refuse
        cores = sorted(usable)
    per_rank = len(cores) // local_world_size
    if per_rank == 0:
        raise UserError(
            f"{local_world_size} ranks on this machine but only {len(cores)} usable CPU cores: "
            f"use --nproc-per-node {len(cores)} or fewer"
        )
    return tuple(cores[local_rank * per_rank : (local_rank + 1) * per_rank])


def physical_core(cpu: int) -> tuple[str, str] | int:
    """(package, core id) of a logical CPU from sysfs (the CPU itself where sysfs does not say)."""
    topology = f"/sys/devices/system/cpu/cpu{cpu}/topology"
    try:
        with open(f"{topology}/physical_package_id") as package, open(f"{topology}/core_id") as core:
            return package.read().strip(), core.read().strip()
    except OSError:
        return cpu


def gpu_near_cpus(count: int) -> list[frozenset[int]] | None:
    """Per visible GPU, the CPUs of its NUMA node (sysfs ``local_cpulist`` of its PCI device); None
    where torch or sysfs cannot say."""
    sets = []
    for index in range(count):
        props: Any = torch.cuda.get_device_properties(index)  # pci_*_id: torch >= 2.5 (checked below)
        if not all(hasattr(props, f"pci_{n}_id") for n in ("domain", "bus", "device")):
            return None
        address = f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
        try:
            with open(f"/sys/bus/pci/devices/{address}/local_cpulist") as listed:
                sets.append(frozenset(parse_cpulist(listed.read())))
        except OSError:
            return None
    return sets


def parse_cpulist(text: str) -> list[int]:
    """``"0-3,8"`` -> [0, 1, 2, 3, 8] (the inverse of `core_list`)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if part:
            low, _, high = part.partition("-")
            cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def core_list(cores: tuple[int, ...] | None) -> str | None:
    """``(0, 1, 2, 3, 8)`` -> ``"0-3,8"`` (the notation of taskset and /proc/self/status)."""
    if not cores:
        return None
    runs: list[list[int]] = []
    for core in sorted(cores):
        if runs and core == runs[-1][1] + 1:
            runs[-1][1] = core
        else:
            runs.append([core, core])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _own_gpu(device: str, local_rank: int, local_world_size: int) -> tuple[str, int]:
    """Make the rank's GPU current: ``cuda:LOCAL_RANK``, or the one GPU a launcher (Slurm's
    ``--gpus-per-task=1``) left visible to each rank."""
    if device != "cuda" and local_world_size > 1:
        raise UserError(
            f"--device {device} under torchrun: each rank uses its own GPU (cuda:LOCAL_RANK); pass --device cuda"
        )
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = (
        int(device.partition(":")[2])
        if device != "cuda"
        else gpu_index(local_rank, local_world_size, count, "CUDA_VISIBLE_DEVICES" in os.environ)
    )
    torch.cuda.set_device(index)
    return "cuda", index


def gpu_index(local_rank: int, local_world_size: int, count: int, narrowed: bool) -> int:
    """The rank's GPU among the ``count`` it sees (``narrowed``: CUDA_VISIBLE_DEVICES is set)."""
    if count >= local_world_size:
        return local_rank
    if count == 1 and narrowed:  # one GPU per task: each rank's own
        return 0
    raise UserError(
        f"{local_world_size} ranks on this machine but {count} CUDA device(s): "
        f"use --nproc-per-node {count} or fewer, or --device cpu"
    )


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast(place: Place, value: Any) -> Any:
    """Rank 0's ``value``, on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0, group=place.control)
    return box[0]


# The end of a sweep is point to point, not a collective (gather, barrier): a collective fails as a
# whole when one rank is gone, and gloo's message then names an address, not the rank. Rank 0 waits
# for each other rank in turn, so it knows which rank failed and still gets the others' rows.


def hand_over(place: Place, value: Any, timeout_s: float) -> str | None:
    """Rank k > 0: send ``value`` to rank 0 and wait for its receipt; None once rank 0 has it, else why not."""
    try:
        payload = torch.frombuffer(bytearray(pickle.dumps(value)), dtype=torch.uint8)
        dist.send(torch.tensor([payload.numel()], dtype=torch.int64), dst=0, group=place.control)
        dist.send(payload, dst=0, group=place.control)
        receipt = torch.zeros(1, dtype=torch.int64)
        _receive(receipt, 0, place).wait(datetime.timedelta(seconds=timeout_s))
    except RuntimeError as exc:  # DistBackendError included
        return _first_line(exc)
    return None


def take_over(place: Place, timeout_s: float, receive: Callable[[int, Any], None]) -> dict[int, str]:
    """Rank 0: each other rank's value, passed to ``receive(rank, value)`` before the rank gets its
    receipt; waits at most ``timeout_s`` in all. Returns {rank: why it failed} for the ranks that did not send."""
    deadline = time.monotonic() + timeout_s
    sizes = {k: torch.zeros(1, dtype=torch.int64) for k in range(1, place.world_size)}
    pending, failed = {}, {}
    for rank, size in sizes.items():
        try:  # posting the receive fails at once when the rank is already gone
            pending[rank] = _receive(size, rank, place)
        except RuntimeError as exc:
            failed[rank] = _first_line(exc)
    for rank, work in pending.items():
        try:
            work.wait(datetime.timedelta(seconds=max(deadline - time.monotonic(), 1.0)))
            payload = torch.empty(int(sizes[rank]), dtype=torch.uint8)
            dist.recv(payload, src=rank, group=place.control)
        except RuntimeError as exc:
            failed[rank] = _first_line(exc)
            continue
        receive(rank, pickle.loads(payload.numpy().tobytes()))
        with contextlib.suppress(RuntimeError):  # that rank keeps its journal, as after any failure
            dist.send(torch.ones(1, dtype=torch.int64), dst=rank, group=place.control)
    return failed


def _receive(tensor: torch.Tensor, src: int, place: Place) -> dist.Work:
    """Post a receive from ``src`` on the control group (torch gives None only to a rank outside the group)."""
    work = dist.irecv(tensor, src=src, group=place.control)
    if work is None:
        raise RuntimeError(f"rank {place.rank} is not in the control group")
    return work


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
