"""Small, faithful replicas of the batch-norm patterns of timm 1.0 and torchvision.

CI cannot import timm (it needs torchvision, whose wheel for the pinned torch is a CUDA build), so
these copy the code that matters, forward for forward:

* ``BatchNormAct2d`` -- timm.layers.norm_act.BatchNormAct2d: a BatchNorm2d subclass whose forward
  is a cut-and-paste of torch's (``F.batch_norm`` inside its own forward, with the ndim
  ``_assert``), then ``self.drop`` (drop-path) and ``self.act``;
* ``BNActSuper`` -- the other common way to write one: ``act(super().forward(x))``;
* ``EfficientBlock`` -- timm's InvertedResidual (pointwise, depthwise 3x3, squeeze-excite,
  pointwise-linear with a norm+act without activation, residual through drop-path);
* ``DenseLayer`` / ``DenseBlock`` / ``DenseTransition`` -- timm's densenet: norm+act on a
  concatenation, and the transition ``nn.Sequential`` (norm+act ReLU, 1x1 conv, avg pool) whose
  norm must not be folded into the conv past its ReLU;
* ``ScaledStdConv2d`` -- timm's weight-standardised conv (nf_resnet): a ``batch_norm`` call on
  the WEIGHT inside a Conv2d subclass's forward;
* ``TvFrozenBatchNorm2d`` -- torchvision.ops.misc.FrozenBatchNorm2d, under that name;
* ``FrozenBatchNormAct2d`` -- timm's frozen norm+act: the affine as arithmetic, then the act;
* ``Conv2dSame`` / ``SameBlock`` -- timm's TensorFlow-'same' conv, whose padding fx cannot
  trace, inside a tf_efficientnet block;
* ``UntraceableBN`` -- a BatchNorm2d subclass with a data-dependent branch fx cannot trace;
* ``PreActReplica`` -- timm's resnetv2 pre-activation blocks: a norm+act on the block input
  (the stem's output, or the previous block's sum), whose batch norm cannot fold;
* ``CachedBiasAttention`` -- timm's efficientvit_msra ``CascadedGroupAttention``: a value
  computed in the forward and cached in a dict keyed by ``str(device)``.

Import inside a test that has the ``torch`` fixture: this module imports torch.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class DropPath(nn.Module):
    """timm.layers.DropPath: drop whole samples in training, identity in eval."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.drop_prob)
        return x * keep / (1 - self.drop_prob)


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's norm + act layer (its forward, verbatim up to comments)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, apply_act=True, act_layer=nn.ReLU, drop_layer=None):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats)
        self.drop = drop_layer() if drop_layer is not None else nn.Identity()
        self.act = act_layer() if apply_act else nn.Identity()

    def forward(self, x):
        torch._assert(x.ndim == 4, f"expected 4D input (got {x.ndim}D input)")
        if self.momentum is None:
            exponential_average_factor = 0.0
        else:
            exponential_average_factor = self.momentum
        if self.training and self.track_running_stats:
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
                if self.momentum is None:
                    exponential_average_factor = 1.0 / float(self.num_batches_tracked)
                else:
                    exponential_average_factor = self.momentum
        if self.training:
            bn_training = True
        else:
            bn_training = (self.running_mean is None) and (self.running_var is None)
        x = F.batch_norm(
            x,
            self.running_mean if not self.training or self.track_running_stats else None,
            self.running_var if not self.training or self.track_running_stats else None,
            self.weight, self.bias, bn_training, exponential_average_factor, self.eps)
        x = self.drop(x)
        x = self.act(x)
        return x


class BNActSuper(nn.BatchNorm2d):
    """A norm + act layer that calls the base class's forward."""

    def __init__(self, num_features, act_layer=nn.SiLU):
        super().__init__(num_features)
        self.act = act_layer()

    def forward(self, x):
        return self.act(super().forward(x))


class Conv2dSame(nn.Conv2d):
    """timm.layers.Conv2dSame (tf_efficientnet_*): TensorFlow 'SAME' padding computed from the
    input size with Python math, which fx cannot trace."""

    def forward(self, x):
        ih, iw = x.size()[-2:]
        pads = [max((math.ceil(i / s) - 1) * s + (k - 1) * d + 1 - i, 0) for i, k, s, d in
                zip((ih, iw), self.kernel_size, self.stride, self.dilation, strict=True)]
        x = F.pad(x, (pads[1] // 2, pads[1] - pads[1] // 2, pads[0] // 2, pads[0] - pads[0] // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, (0, 0), self.dilation,
                        self.groups)


class SameBlock(nn.Module):
    """A tf_efficientnet depthwise-separable block: 1x1 conv, norm+act, 'same' depthwise conv,
    norm+act, 1x1 conv, norm."""

    def __init__(self, c):
        super().__init__()
        self.conv_pw = nn.Conv2d(c, 2 * c, 1, bias=False)
        self.bn1 = BatchNormAct2d(2 * c, act_layer=nn.SiLU)
        self.conv_dw = Conv2dSame(2 * c, 2 * c, 3, stride=2, groups=2 * c, bias=False)
        self.bn2 = BatchNormAct2d(2 * c, act_layer=nn.SiLU)
        self.conv_pwl = nn.Conv2d(2 * c, c, 1, bias=False)
        self.bn3 = BatchNormAct2d(c, apply_act=False)

    def forward(self, x):
        return self.bn3(self.conv_pwl(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))


class UntraceableBN(nn.BatchNorm2d):
    """Adds a data-dependent sign flip: fx cannot trace ``if tensor``."""

    def forward(self, x):
        y = super().forward(x)
        return y if float(y.sum()) >= 0 else -y


def conv_bn_act(c_in, c_out, k=3, stride=1, groups=1, act=nn.SiLU, apply_act=True):
    """timm's ConvNormAct: conv (no bias) then BatchNormAct2d."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
        bn=BatchNormAct2d(c_out, act_layer=act, apply_act=apply_act)))


class SqueezeExcite(nn.Module):
    def __init__(self, c, rd):
        super().__init__()
        self.conv_reduce = nn.Conv2d(c, rd, 1)
        self.act1 = nn.SiLU()
        self.conv_expand = nn.Conv2d(rd, c, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.conv_expand(self.act1(self.conv_reduce(s))))


class EfficientBlock(nn.Module):
    """timm's InvertedResidual with BatchNormAct2d norms and drop-path on the residual."""

    def __init__(self, c, expand=2, drop_path=0.0):
        super().__init__()
        mid = c * expand
        self.conv_pw = nn.Conv2d(c, mid, 1, bias=False)
        self.bn1 = BatchNormAct2d(mid, act_layer=nn.SiLU)
        self.conv_dw = nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False)
        self.bn2 = BatchNormAct2d(mid, act_layer=nn.SiLU)
        self.aa = nn.Identity()
        self.se = SqueezeExcite(mid, max(1, mid // 4))
        self.conv_pwl = nn.Conv2d(mid, c, 1, bias=False)
        self.bn3 = BatchNormAct2d(c, apply_act=False)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        shortcut = x
        x = self.bn1(self.conv_pw(x))
        x = self.aa(self.bn2(self.conv_dw(x)))
        x = self.bn3(self.conv_pwl(self.se(x)))
        return self.drop_path(x) + shortcut


class EfficientNetReplica(nn.Module):
    def __init__(self, c=8, classes=5, drop_path=0.0):
        super().__init__()
        self.conv_stem = nn.Conv2d(3, c, 3, 2, 1, bias=False)
        self.bn1 = BatchNormAct2d(c, act_layer=nn.SiLU, drop_layer=lambda: DropPath(drop_path))
        self.blocks = nn.Sequential(EfficientBlock(c, drop_path=drop_path),
                                    EfficientBlock(c, drop_path=drop_path))
        self.conv_head = nn.Conv2d(c, 2 * c, 1, bias=False)
        self.bn2 = BNActSuper(2 * c)
        self.classifier = nn.Linear(2 * c, classes)

    def forward(self, x):
        x = self.bn1(self.conv_stem(x))
        x = self.bn2(self.conv_head(self.blocks(x)))
        return self.classifier(x.mean((2, 3)))


class DenseLayer(nn.Module):
    """timm's densenet DenseLayer: norm+act on the concatenation of every earlier output."""

    def __init__(self, c_in, growth=4):
        super().__init__()
        self.norm1 = BatchNormAct2d(c_in)
        self.conv1 = nn.Conv2d(c_in, 2 * growth, 1, bias=False)
        self.norm2 = BatchNormAct2d(2 * growth)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, xs):
        x = torch.cat(xs, 1) if isinstance(xs, list) else xs
        return self.conv2(self.norm2(self.conv1(self.norm1(x))))


class DenseBlock(nn.ModuleDict):
    def __init__(self, layers, c_in, growth=4):
        super().__init__()
        for i in range(layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(c_in + i * growth, growth))

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseTransition(nn.Sequential):
    """timm's transition: an nn.Sequential of norm+act (ReLU), 1x1 conv, 2x2 average pool."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.add_module("norm", BatchNormAct2d(c_in))
        self.add_module("conv", nn.Conv2d(c_in, c_out, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, 2))


def densenet_features(c=8, growth=4):
    """timm's ``densenet121.features`` in small: an nn.Sequential."""
    c1 = c + 2 * growth
    return nn.Sequential(OrderedDict(
        conv0=nn.Conv2d(3, c, 3, padding=1, bias=False),
        norm0=BatchNormAct2d(c),
        pool0=nn.MaxPool2d(2),
        denseblock1=DenseBlock(2, c, growth),
        transition1=DenseTransition(c1, c1 // 2),
        denseblock2=DenseBlock(2, c1 // 2, growth),
        norm5=BatchNormAct2d(c1 // 2 + 2 * growth)))


class ScaledStdConv2d(nn.Conv2d):
    """timm.layers.ScaledStdConv2d: the weight standardised by a batch_norm call per forward."""

    def __init__(self, c_in, c_out, k, padding=0, eps=1e-6):
        super().__init__(c_in, c_out, k, padding=padding, bias=True)
        self.gain = nn.Parameter(torch.full((c_out, 1, 1, 1), 1.0))
        self.scale = (c_in * k * k) ** -0.5
        self.eps = eps

    def forward(self, x):
        weight = F.batch_norm(
            self.weight.reshape(1, self.out_channels, -1), None, None,
            weight=(self.gain * self.scale).view(-1), training=True, momentum=0.,
            eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


def _frozen_buffers(module: nn.Module, num_features: int) -> None:
    module.register_buffer("weight", torch.ones(num_features))
    module.register_buffer("bias", torch.zeros(num_features))
    module.register_buffer("running_mean", torch.zeros(num_features))
    module.register_buffer("running_var", torch.ones(num_features))


def _frozen_affine(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The forward of torchvision's FrozenBatchNorm2d (and the start of timm's norm+act one)."""
    w = module.weight.reshape(1, -1, 1, 1)
    b = module.bias.reshape(1, -1, 1, 1)
    rv = module.running_var.reshape(1, -1, 1, 1)
    rm = module.running_mean.reshape(1, -1, 1, 1)
    scale = w * (rv + module.eps).rsqrt()
    bias = b - rm * scale
    return x * scale + bias


class TvFrozenBatchNorm2d(nn.Module):
    """torchvision.ops.misc.FrozenBatchNorm2d (its name too, below)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        _frozen_buffers(self, num_features)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        num_batches_tracked_key = prefix + "num_batches_tracked"
        if num_batches_tracked_key in state_dict:
            del state_dict[num_batches_tracked_key]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x):
        return _frozen_affine(self, x)


class FrozenBatchNormAct2d(nn.Module):
    """timm.layers.FrozenBatchNormAct2d (what timm's freeze_batch_norm_2d makes of a
    BatchNormAct2d): the frozen affine as arithmetic, then drop and act."""

    def __init__(self, num_features: int, eps: float = 1e-5, act_layer=nn.ReLU):
        super().__init__()
        self.eps = eps
        _frozen_buffers(self, num_features)
        self.drop = nn.Identity()
        self.act = act_layer()

    def forward(self, x):
        return self.act(self.drop(_frozen_affine(self, x)))


# what torchvision's / timm's classes are called where they live; normlab knows them by name
TvFrozenBatchNorm2d.__module__ = "torchvision.ops.misc"
TvFrozenBatchNorm2d.__qualname__ = TvFrozenBatchNorm2d.__name__ = "FrozenBatchNorm2d"
FrozenBatchNormAct2d.__module__ = "timm.layers.norm_act"


class OtherFrozenNormAct(nn.Module):
    """A frozen norm + ReLU of someone else's, with BatchNorm's buffers: not recognised."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        _frozen_buffers(self, num_features)

    def forward(self, x):
        scale = self.weight / (self.running_var + self.eps).sqrt()
        return torch.relu(x * scale[:, None, None] + (self.bias - self.running_mean * scale)
                          [:, None, None])


def tv_freeze(module: nn.Module) -> nn.Module:
    """timm.layers.freeze_batch_norm_2d for plain BatchNorm2d: torchvision's frozen BN."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            frozen = TvFrozenBatchNorm2d(child.num_features, child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            tv_freeze(child)
    return module


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (the norm layer as an argument, as there)."""

    def __init__(self, c_in, c_out, stride=1, norm=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = norm(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = norm(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            norm(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetReplica(nn.Module):
    def __init__(self, c=8, classes=5, norm=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(3, c, 3, 1, 1, bias=False)
        self.bn1 = norm(c)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(c, c, norm=norm), BasicBlock(c, 2 * c, 2, norm))
        self.fc = nn.Linear(2 * c, classes)

    def forward(self, x):
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(x.mean((2, 3), keepdim=True), 1))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters in every BN-like module."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            rm = getattr(m, "running_mean", None)
            if not isinstance(rm, torch.Tensor) or rm.dim() != 1:
                continue
            c = rm.shape[0]
            m.running_mean.copy_(torch.randn(c, generator=gen))
            m.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.05)
            for name in ("weight", "bias"):
                t = getattr(m, name, None)
                if isinstance(t, torch.Tensor):
                    t.copy_(torch.randn(c, generator=gen) * 0.5 + (name == "weight"))
    return model


class PreActBlock(nn.Module):
    """timm.models.resnetv2.PreActBasicBlock (no downsampling): norm1 reads the block input,
    which the shortcut reads too."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm1 = BatchNormAct2d(c)
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.norm2 = BatchNormAct2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv2(self.norm2(self.conv1(self.norm1(x)))) + x


class PreActReplica(nn.Module):
    """stem conv, two pre-activation blocks, the final norm+act (on the last block's sum)."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.stages = nn.Sequential(PreActBlock(c), PreActBlock(c))
        self.norm = BatchNormAct2d(c)

    def forward(self, x):
        return self.norm(self.stages(self.stem(x))).mean((2, 3))


class CachedBiasAttention(nn.Module):
    """The caching of timm's CascadedGroupAttention.get_attention_biases, around conv -> BN."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)
        self.bn = nn.BatchNorm2d(c)
        self.attention_biases = nn.Parameter(torch.randn(c, 3))
        self.register_buffer("attention_bias_idxs", torch.tensor([0, 2, 1, 1]),
                             persistent=False)
        self.attention_bias_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def train(self, mode=True):
        super().train(mode)
        if mode and self.attention_bias_cache:
            self.attention_bias_cache = {}
        return self

    def get_attention_biases(self, device):
        if torch.jit.is_tracing() or self.training:
            return self.attention_biases[:, self.attention_bias_idxs]
        key = str(device)
        if key not in self.attention_bias_cache:
            self.attention_bias_cache[key] = self.attention_biases[:, self.attention_bias_idxs]
        return self.attention_bias_cache[key]

    def forward(self, x):
        return self.bn(self.conv(x)) + self.get_attention_biases(x.device)[:, :, None].sum(1,
                                                                                     True)
