"""NeuEdge's activity penalty: how a penalty on the spikes reaches an unchanged loss."""

from __future__ import annotations

import torch as th
from torch.autograd.function import FunctionCtx


class AddPenalty(th.autograd.Function):
    """``q`` unchanged forward; backward adds the gradient of a scalar ``penalty`` once.

    Backpropagating any loss ``L(q)`` through the output therefore gives the gradient of
    ``L(q) + penalty``, without the loss's code knowing of the penalty: this is how the
    activity penalty reaches SB3's unchanged ``DQN.train`` (tested against autograd's
    gradient of ``loss + penalty``). The loss value SB3 logs does not include it; the
    network keeps it in ``last_activity_penalty``.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, q: th.Tensor, penalty: th.Tensor) -> th.Tensor:  # type: ignore[override]
        ctx.set_materialize_grads(False)
        ctx.penalty_like = (penalty.shape, penalty.dtype, penalty.device)  # type: ignore[attr-defined]
        return q.view_as(q)

    @staticmethod
    def backward(ctx: FunctionCtx, grad_q: th.Tensor | None) -> tuple[th.Tensor | None, th.Tensor]:  # type: ignore[override]
        shape, dtype, device = ctx.penalty_like  # type: ignore[attr-defined]
        return grad_q, th.ones(shape, dtype=dtype, device=device)
