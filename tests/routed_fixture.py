"""A small model for the routed-optimizer tests: a matrix for the structured optimizer, a norm and
biases for Adam, and a convolution kernel (routed with conv="matrix")."""

import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 3, kernel_size=3)
        self.hidden = nn.Linear(12, 8)
        self.norm = nn.LayerNorm(8)
        self.out = nn.Linear(8, 4)

    def forward(self, x):
        return self.out(self.norm(torch.tanh(self.hidden(self.conv(x).flatten(1)))))
