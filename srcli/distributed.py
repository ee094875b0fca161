"""torchrun's ranks, for upscale sharding and DDP training alike: who this process is, and the process group.

torchrun describes a process with RANK, WORLD_SIZE and LOCAL_RANK; without them (or with a world of 1) a
process runs alone and every call here is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Ranks:
    """This process's place among torchrun's ranks; world 1 when run alone."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files and reports, so several processes never race on the same output."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank gets here (nothing to wait for alone)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def environment() -> Ranks:
    """The ranks torchrun's environment describes; a lone process when RANK or WORLD_SIZE say so."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return Ranks()
    return Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def start(ranks: Ranks, backend: str = "gloo") -> bool:
    """Join the process group when there are several ranks; True when this call created it (and should stop it)."""
    if ranks.world <= 1:
        return False
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    dist.init_process_group(backend)
    return True


def stop(finished: bool) -> None:
    """Leave the process group, if there is one.

    `finished`: every rank got here the normal way, with no collective outstanding. Then all ranks meet first,
    so none closes its connections while a peer still reads from them, and the group's worker threads are
    freed now rather than during interpreter shutdown (where gloo can abort the process after a run that
    succeeded). After a failure a peer may never arrive, so the group is left without meeting.
    """
    import gc

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished:
        with contextlib.suppress(RuntimeError):  # a peer that failed has left: nobody to wait for
            dist.barrier()
    dist.destroy_process_group()
    gc.collect()
