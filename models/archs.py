"""Architectures for 32x32 inputs. Each builder returns a feature extractor mapping images to an
M-dim vector; ``Classifier`` adds the normalisation in front and the (optional BN) linear head.

Models return raw logits z. The temperature is not inside the model: it lives in the training
loss and in the attacks' view of the model (attacks/views.py).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.registry import ModelSpec, register_arch

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    """First layer of every model, so attacks work in [0,1] pixel space and eps is in pixels."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """normalize -> features (M-dim) -> [BatchNorm1d(M), the claim-B "BN head"] -> linear."""

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int, bn_head: bool,
                 mean=CIFAR10_MEAN, std=CIFAR10_STD):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.features = features
        self.feature_dim = feature_dim
        self.head_bn = nn.BatchNorm1d(feature_dim) if bn_head else nn.Identity()
        self.fc = nn.Linear(feature_dim, num_classes)

    def forward(self, x):
        return self.fc(self.head_bn(self.features(self.normalize(x))))


def build_model(spec: ModelSpec, num_classes: int = 10) -> Classifier:
    width = spec.width or spec.info.default_width
    features = spec.info.build(width, num_classes)
    return Classifier(features, spec.feature_dim, num_classes, spec.bn_head)


# --- ResNet-18, CIFAR variant (3x3 stem, no max-pool) ------------------------------------------
# torchvision's ResNet has a fixed 64-channel base, and the width variants of claim B need other
# bases, so the (standard, kuangliu-style) CIFAR ResNet is written out here.

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        short = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + short


class ResNetFeatures(nn.Module):
    def __init__(self, block, width, blocks=(2, 2, 2, 2), preact=False):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.stem_bn = nn.Identity() if preact else nn.BatchNorm2d(width)
        layers, cin = [], width
        for i, n in enumerate(blocks):
            cout = width * 2 ** i
            for j in range(n):
                layers.append(block(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        # Pre-activation nets end on a sum, so they need one more BN-ReLU before pooling.
        self.final = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU()) if preact else nn.Identity()

    def forward(self, x):
        x = self.stem_bn(self.stem(x))
        if isinstance(self.stem_bn, nn.BatchNorm2d):
            x = F.relu(x)
        x = self.final(self.layers(x))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


@register_arch("resnet18", description="ResNet-18, CIFAR variant (3x3 stem, no max-pool); w<base width>",
               default_width=64, feature_dim=lambda w: 8 * w)
def _resnet18(width, num_classes):
    return ResNetFeatures(BasicBlock, width)


@register_arch("preactresnet18", description="Pre-activation ResNet-18 (He et al. 2016), CIFAR variant",
               default_width=64, feature_dim=lambda w: 8 * w)
def _preactresnet18(width, num_classes):
    return ResNetFeatures(PreActBlock, width, preact=True)


# --- WideResNet-28-10: pre-activation blocks, widths 16 / 160 / 320 / 640 -----------------------

class WideResNetFeatures(nn.Module):
    def __init__(self, depth=28, widen=10):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        layers, cin = [], widths[0]
        for g, cout in enumerate(widths[1:]):
            for j in range(n):
                layers.append(PreActBlock(cin, cout, 2 if (g > 0 and j == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers, nn.BatchNorm2d(cin), nn.ReLU())

    def forward(self, x):
        return F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1)


@register_arch("wrn28_10", description="WideResNet-28-10 (Zagoruyko & Komodakis 2016)",
               feature_dim=lambda w: 640)
def _wrn28_10(width, num_classes):
    return WideResNetFeatures(28, 10)


# --- VGG-16 with BN: torchvision's feature stack, CIFAR head (the 512-d pooled vector) ----------

class VGGFeatures(nn.Module):
    def __init__(self):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers  # torchvision costs ~2 s to import: only here
        self.body = make_layers(cfgs["D"], batch_norm=True)

    def forward(self, x):
        return self.body(x).flatten(1)  # five 2x2 pools take 32x32 to 1x1


@register_arch("vgg16_bn", description="VGG-16 with BatchNorm (torchvision layers), 512-d CIFAR head",
               feature_dim=lambda w: 512)
def _vgg16_bn(width, num_classes):
    return VGGFeatures()


# --- A small ViT for 32x32 inputs: torchvision's VisionTransformer, patch 4 ---------------------

class ViTFeatures(nn.Module):
    def __init__(self, dim):
        super().__init__()
        from torchvision.models import VisionTransformer
        self.vit = VisionTransformer(image_size=32, patch_size=4, num_layers=6, num_heads=6,
                                     hidden_dim=dim, mlp_dim=4 * dim, num_classes=1)
        self.vit.heads = nn.Identity()  # the class-token embedding is the feature vector

    def forward(self, x):
        return self.vit(x)


@register_arch("vit_small", description="ViT for 32x32 (torchvision VisionTransformer, patch 4, 6 layers, "
               "6 heads); w<embedding dim>, a multiple of 6", default_width=384, feature_dim=lambda w: w,
               width_multiple=6)
def _vit_small(width, num_classes):
    return ViTFeatures(width)


# --- fastnet: an airbench-style CNN ---------------------------------------------------------------
# After airbench (Jordan 2024): a 2x2 stem, three conv groups of conv-pool-BN-GELU-conv-BN-GELU,
# a global max-pool. airbench94 uses group widths (64, 256, 256); fastnet's default is a quarter
# of that so that the CPU profiles train in seconds, and fastnetw64 is airbench94's width.

class ConvGroup(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding="same", bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding="same", bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = F.gelu(self.bn1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.bn2(self.conv2(x)))


class FastNetFeatures(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 2, bias=True)
        self.groups = nn.Sequential(ConvGroup(24, width), ConvGroup(width, 4 * width),
                                    ConvGroup(4 * width, 4 * width))

    def forward(self, x):
        x = self.groups(F.gelu(self.stem(x)))
        return F.adaptive_max_pool2d(x, 1).flatten(1)


@register_arch("fastnet", description="airbench-style CNN for fast sweeps (CPU and GPU); w<first group "
               "width>, groups (w, 4w, 4w); fastnetw64 = airbench94 widths", default_width=16,
               feature_dim=lambda w: 4 * w)
def _fastnet(width, num_classes):
    return FastNetFeatures(width)
