"""An `nn.LSTM` whose gradients also flow in eval mode on CUDA.

cuDNN's RNN backward refuses eval mode ("cudnn RNN backward can only be called in training mode"),
which breaks every gradient explanation of an eval-mode LSTM on a GPU (the seed notebook crashes
there). When a forward pass records a graph in eval mode on CUDA, this LSTM runs PyTorch's native
kernel instead, whose backward has no such restriction. Training and no-grad inference keep cuDNN.
"""
from __future__ import annotations

import torch
from torch import nn


class EvalGradLSTM(nn.LSTM):
    """Drop-in `nn.LSTM` (same parameters and state dict) that is differentiable in eval mode on CUDA."""

    def forward(self, input, hx=None):  # noqa: A002 - nn.LSTM's own signature
        needs_native = (not self.training and torch.is_grad_enabled()
                        and (input.data if hasattr(input, "data") else input).is_cuda)
        if needs_native:
            with torch.backends.cudnn.flags(enabled=False):
                return super().forward(input, hx)
        return super().forward(input, hx)
