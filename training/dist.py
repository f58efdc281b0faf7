"""Synchronous data-parallel training over MXNet's parameter server (kvstore dist_sync).

Gradients are summed by the servers (no optimizer there) and every worker applies the same update, so the
optimizer state stays on the workers and goes into their checkpoints. All traffic goes through plain
(default-layout) buffers. Observed with mxnet 1.9.1 (MKLDNN): Gluon's own Trainer on dist_sync
(update_on_kvstore=False), which pushes and pulls the gradient arrays themselves, let two workers drift apart
(one convolution weight differed by 4.1 after 3 steps); with MXNET_MKLDNN_ENABLED=0 they stayed equal. With the
copies made here they stay bit-identical with MKLDNN on (tests/training/test_dist.py checks it), provided that the
training network never runs in inference mode (MKLDNN then reorders its weights in place, asynchronously; workers
were seen to drift apart right after an evaluation pass): train.py evaluates and exports a copy of the network.
"""
from __future__ import annotations

import mxnet as mx

RESUME_KEY = 1 << 30  # key for agreeing on the resume epoch: far above anything else used here
PARAM_BASE = RESUME_KEY + 1  # keys PARAM_BASE + i: broadcast of parameter i from worker 0
GRAD_BASE = RESUME_KEY + 100_000  # keys GRAD_BASE + i: sum of gradient i over the workers
STAT_BASE = RESUME_KEY + 200_000  # keys STAT_BASE + i: sum of BatchNorm running statistic i over the workers


class DistSync:
    """Collective operations of one worker. All workers must make the same calls in the same order."""

    def __init__(self, kvstore: str, ctx: list[mx.Context]):
        self.kv = mx.kv.create(kvstore)
        self.rank, self.num_workers = self.kv.rank, self.kv.num_workers
        self.ctx = ctx
        self.trainable: list[mx.gluon.Parameter] = []
        self.stats: list[mx.gluon.Parameter] = []
        self._ready: set[int] = set()

    def attach(self, params: mx.gluon.ParameterDict) -> None:
        """The network's parameters: trainable ones get gradients summed, the others (BatchNorm statistics) averaged."""
        self.trainable = [p for p in params.values() if p.grad_req != "null"]
        self.stats = [p for p in params.values() if p.grad_req == "null"]

    def _buffers(self, arrays: list[mx.nd.NDArray]) -> list[mx.nd.NDArray]:
        return [mx.nd.zeros(a.shape, ctx=self.ctx[0], dtype=a.dtype) for a in arrays]

    def _sum(self, base: int, arrays: list[mx.nd.NDArray], buffers: list[mx.nd.NDArray]) -> None:
        """buffers <- sum over workers of arrays (each already in a default-layout buffer)."""
        keys = [base + i for i in range(len(arrays))]
        if base not in self._ready:
            self.kv.init(keys, buffers)
            self._ready.add(base)
        self.kv.push(keys, buffers)
        self.kv.pull(keys, out=buffers)

    def agree_min(self, value: int) -> list[int]:
        """Every worker's value, in rank order (for agreeing on a resume point)."""
        slots = mx.nd.zeros((self.num_workers,))
        if RESUME_KEY not in self._ready:
            self.kv.init(RESUME_KEY, slots)
            self._ready.add(RESUME_KEY)
        mine = mx.nd.zeros((self.num_workers,))
        mine[self.rank] = value
        self.kv.push(RESUME_KEY, mine)
        self.kv.pull(RESUME_KEY, out=slots)
        return [int(v) for v in slots.asnumpy()]

    def broadcast_params(self) -> None:
        """Every worker takes worker 0's parameters (the servers keep the value that worker 0 initialises)."""
        params = self.trainable + self.stats
        buffers = self._buffers([p.data(self.ctx[0]) for p in params])
        for p, buf in zip(params, buffers, strict=True):
            p.data(self.ctx[0]).copyto(buf)
        keys = [PARAM_BASE + i for i in range(len(params))]
        self.kv.init(keys, buffers)
        self.kv.pull(keys, out=buffers)
        for p, buf in zip(params, buffers, strict=True):
            p.set_data(buf)

    def allreduce_grads(self) -> None:
        """Sum the gradients over this worker's devices and over all workers; write the sum back everywhere."""
        if not hasattr(self, "_grad_buffers"):
            self._grad_buffers = self._buffers([p.grad(self.ctx[0]) for p in self.trainable])
        for p, buf in zip(self.trainable, self._grad_buffers, strict=True):
            grads = p.list_grad()
            grads[0].copyto(buf)
            for g in grads[1:]:
                buf += g.as_in_context(self.ctx[0])
        self._sum(GRAD_BASE, self.trainable, self._grad_buffers)
        for p, buf in zip(self.trainable, self._grad_buffers, strict=True):
            for g in p.list_grad():
                buf.copyto(g)

    def average_stats(self) -> None:
        """Average BatchNorm running statistics over the workers (they are not gradients, so not summed per step)."""
        buffers = self._buffers([p.data(self.ctx[0]) for p in self.stats])
        for p, buf in zip(self.stats, buffers, strict=True):
            p.data(self.ctx[0]).copyto(buf)
        self._sum(STAT_BASE, self.stats, buffers)
        for p, buf in zip(self.stats, buffers, strict=True):
            p.set_data(buf / self.num_workers)
