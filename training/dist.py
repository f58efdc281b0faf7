"""Synchronous data-parallel training over MXNet's parameter server (kvstore dist_sync).

Gradients are summed by the servers (no optimizer there) and every worker applies the same update, so the
optimizer state stays on the workers and goes into their checkpoints. All traffic goes through plain
(default-layout) buffers. Observed with mxnet 1.9.1 (MKLDNN): Gluon's own Trainer on dist_sync
(update_on_kvstore=False), which pushes and pulls the gradient arrays themselves, let two workers drift apart
(one convolution weight differed by 4.1 after 3 steps); with MXNET_MKLDNN_ENABLED=0 they stayed equal. With the
copies made here they stay bit-identical with MKLDNN on (tests/training/test_dist.py checks it), provided that the
training network never runs in inference mode (MKLDNN then reorders its weights in place, asynchronously; workers
were seen to drift apart right after an evaluation pass): train.py evaluates and exports a copy of the network.

Keys. MXNet 1.9.1's dist kvstore (src/kvstore/kvstore_dist.h, EncodeDefaultKey) sends an int key k to server
(k * 9973) % num_servers and, for arrays of a million elements or more, a part to every server under
ps-lite key krs[i].begin() + k. The product is computed in a C int: from k = 215,330 on it overflows, the server
index can come out negative, and with two or more servers the worker fails with `Check failed: ps_key <
krs[server].end()` (and then waited forever at exit for the others); with one server x % 1 == 0 hid it. So the keys
here are small and consecutive, laid out from the network's parameters (the same on every worker): 0 for the
resume agreement, then the parameter broadcast, the gradient sums and the BatchNorm statistics, one key per array.
9973 is prime, so consecutive keys spread evenly over any number of servers. String keys would work too (MXNet
numbers them 0, 1, ... in the order of init), but a kvstore takes only one kind of key.
"""
from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator

import mxnet as mx

try:
    from training.compat import zip_strict
except ImportError:  # flat layout (SageMaker's code folder): the package's files side by side
    from compat import zip_strict

KEY_LIMIT = (2**31 - 1) // 9973 + 1  # 215,330: from this int key on, MXNet's choice of server overflows (see above)
RESUME_KEY = 0  # key for agreeing on the resume epoch


def key_layout(num_trainable: int, num_stats: int) -> dict[str, range]:
    """The kvstore keys of each collective: parameter broadcast (trainable, then statistics), gradient sums, and
    BatchNorm statistic sums; consecutive after RESUME_KEY, one key per array."""
    num_params = num_trainable + num_stats
    layout = {"param": range(RESUME_KEY + 1, RESUME_KEY + 1 + num_params)}
    layout["grad"] = range(layout["param"].stop, layout["param"].stop + num_trainable)
    layout["stat"] = range(layout["grad"].stop, layout["grad"].stop + num_stats)
    if layout["stat"].stop > KEY_LIMIT:
        raise ValueError(f"{num_params} parameters need kvstore keys up to {layout['stat'].stop - 1}; MXNet's dist "
                         f"kvstore maps int keys to servers correctly only below {KEY_LIMIT}")
    return layout


@contextlib.contextmanager
def fail_fast(on_failure: Callable[[BaseException], None] | None = None) -> Iterator[None]:
    """Around a worker's run: when it fails after this process made a dist kvstore, report and exit at once.

    A normal exit would run the kvstore's destructor, which waits for the other workers (and for pushes that may
    never be answered): the failed worker stayed alive, so the launcher never saw it fail and the job hung.
    on_failure(err) runs first (train.py writes SageMaker's failure file there).
    """
    try:
        yield
    except BaseException as err:
        if not DistSync.created or (isinstance(err, SystemExit) and not err.code):
            raise
        if on_failure is not None:
            with contextlib.suppress(Exception):
                on_failure(err)
        if isinstance(err, SystemExit):
            code = err.code if isinstance(err.code, int) else 1
            if not isinstance(err.code, int):
                print(err.code, file=sys.stderr)
        else:
            code = 130 if isinstance(err, KeyboardInterrupt) else 1
            traceback.print_exc()
        print(f"worker: exiting with {code}, without waiting for the other workers", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class DistSync:
    """Collective operations of one worker. All workers must make the same calls in the same order."""

    created = False  # whether this process has made a dist kvstore (see fail_fast)

    def __init__(self, kvstore: str, ctx: list[mx.Context]):
        self.kv = mx.kv.create(kvstore)
        DistSync.created = True
        self.rank, self.num_workers = self.kv.rank, self.kv.num_workers
        self.ctx = ctx
        self.trainable: list[mx.gluon.Parameter] = []
        self.stats: list[mx.gluon.Parameter] = []
        self.keys = key_layout(0, 0)
        self._ready: set[str] = set()

    def attach(self, params: mx.gluon.ParameterDict) -> None:
        """The network's parameters: trainable ones get gradients summed, the others (BatchNorm statistics) averaged."""
        self.trainable = [p for p in params.values() if p.grad_req != "null"]
        self.stats = [p for p in params.values() if p.grad_req == "null"]
        self.keys = key_layout(len(self.trainable), len(self.stats))

    def _buffers(self, arrays: list[mx.nd.NDArray]) -> list[mx.nd.NDArray]:
        return [mx.nd.zeros(a.shape, ctx=self.ctx[0], dtype=a.dtype) for a in arrays]

    def _sum(self, block: str, buffers: list[mx.nd.NDArray]) -> None:
        """buffers <- sum over workers of buffers, under the keys of block ("grad" or "stat")."""
        keys = list(self.keys[block])
        if len(keys) != len(buffers):
            raise ValueError(f"{block}: {len(buffers)} arrays for {len(keys)} keys; call attach() first")
        if block not in self._ready:
            self.kv.init(keys, buffers)
            self._ready.add(block)
        self.kv.push(keys, buffers)
        self.kv.pull(keys, out=buffers)

    def agree_min(self, value: int) -> list[int]:
        """Every worker's value, in rank order (for agreeing on a resume point)."""
        slots = mx.nd.zeros((self.num_workers,))
        if "resume" not in self._ready:
            self.kv.init(RESUME_KEY, slots)
            self._ready.add("resume")
        mine = mx.nd.zeros((self.num_workers,))
        mine[self.rank] = value
        self.kv.push(RESUME_KEY, mine)
        self.kv.pull(RESUME_KEY, out=slots)
        return [int(v) for v in slots.asnumpy()]

    def broadcast_params(self) -> None:
        """Every worker takes worker 0's parameters (the servers keep the value that worker 0 initialises)."""
        params = self.trainable + self.stats
        buffers = self._buffers([p.data(self.ctx[0]) for p in params])
        for p, buf in zip_strict(params, buffers):
            p.data(self.ctx[0]).copyto(buf)
        keys = list(self.keys["param"])
        if len(keys) != len(params):
            raise ValueError(f"param: {len(params)} arrays for {len(keys)} keys; call attach() first")
        self.kv.init(keys, buffers)
        self.kv.pull(keys, out=buffers)
        for p, buf in zip_strict(params, buffers):
            p.set_data(buf)

    def allreduce_grads(self) -> None:
        """Sum the gradients over this worker's devices and over all workers; write the sum back everywhere."""
        if not hasattr(self, "_grad_buffers"):
            self._grad_buffers = self._buffers([p.grad(self.ctx[0]) for p in self.trainable])
        for p, buf in zip_strict(self.trainable, self._grad_buffers):
            grads = p.list_grad()
            grads[0].copyto(buf)
            for g in grads[1:]:
                buf += g.as_in_context(self.ctx[0])
        self._sum("grad", self._grad_buffers)
        for p, buf in zip_strict(self.trainable, self._grad_buffers):
            for g in p.list_grad():
                buf.copyto(g)

    def average_stats(self) -> None:
        """Average BatchNorm running statistics over the workers (they are not gradients, so not summed per step)."""
        buffers = self._buffers([p.data(self.ctx[0]) for p in self.stats])
        for p, buf in zip_strict(self.stats, buffers):
            p.data(self.ctx[0]).copyto(buf)
        self._sum("stat", buffers)
        for p, buf in zip_strict(self.stats, buffers):
            p.set_data(buf / self.num_workers)
