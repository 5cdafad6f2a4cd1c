"""Small building blocks shared by heads, named as mmcv names them so released checkpoints map 1:1."""

from __future__ import annotations

from torch import Tensor, nn


class ConvModule(nn.Module):
    """Conv → optional BatchNorm → optional ReLU, with mmcv ``ConvModule``'s parameter names.

    Keys are ``conv.weight`` (+ ``conv.bias`` when there is no norm, mmcv's ``bias='auto'``) and
    ``bn.*``. Absent parts are ``nn.Identity`` so the module stays TorchScript-friendly.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        norm: bool = True,
        act: bool = True,
        bias: bool | None = None,
    ):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=(not norm) if bias is None else bias,
        )
        self.bn = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.activate = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))


def kaiming_init(module: nn.Module) -> None:
    """He-normal (fan_out, ReLU) for every conv, BN γ=1 β=0: the torchvision/mmcv default for conv nets."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
