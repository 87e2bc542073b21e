"""dfpipe.models.resnets builds torchvision's ResNet-18/50 without importing torchvision: same
state-dict keys, bit-identical weights and outputs from the same seed, same random numbers drawn."""

from __future__ import annotations

import pytest
import torch

from dfpipe.models import resnets

torchvision = pytest.importorskip("torchvision")


def _assert_same(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(ours.eval()(x), theirs.eval()(x))


@pytest.mark.parametrize("num_classes", [3, 1000])
@pytest.mark.parametrize("depth", [18, 50])
def test_same_as_torchvision(depth, num_classes):
    ours_fn, theirs_fn = {18: (resnets.resnet18, torchvision.models.resnet18),
                          50: (resnets.resnet50, torchvision.models.resnet50)}[depth]
    torch.manual_seed(depth)
    theirs = theirs_fn(weights=None, num_classes=num_classes)
    after_theirs = torch.rand(4)
    torch.manual_seed(depth)
    ours = ours_fn(num_classes)
    after_ours = torch.rand(4)
    _assert_same(ours, theirs)
    assert torch.equal(after_ours, after_theirs)  # the same number of random draws


def test_narrow_widths_change_the_network():
    """The control: a different width or seed does give other weights (the check above can fail)."""
    torch.manual_seed(0)
    full = resnets.resnet18(3)
    torch.manual_seed(0)
    narrow = resnets.resnet18(3, (32, 64, 128, 256))
    assert narrow.fc.in_features == 256 and full.fc.in_features == 512
    torch.manual_seed(1)
    other = resnets.resnet18(3)
    assert not torch.equal(full.conv1.weight, other.conv1.weight)


@pytest.mark.parametrize("in_chans", [3, 12])
def test_xception_backbone_same_as_timm(in_chans):
    """XceptionBackbone at width 1 is timm's legacy Xception without classifier: same keys, same
    weights from the same seed, the same random draws, the same features."""
    timm_xception = pytest.importorskip("timm.models.xception")
    from dfpipe.models.xception import XceptionBackbone

    torch.manual_seed(in_chans)
    theirs = timm_xception.Xception(num_classes=0, in_chans=in_chans)
    after_theirs = torch.rand(4)
    torch.manual_seed(in_chans)
    ours = XceptionBackbone(in_chans=in_chans)
    after_ours = torch.rand(4)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(after_ours, after_theirs)
    x = torch.rand(1, in_chans, 71, 71)
    assert torch.equal(ours.eval()(x), theirs.eval().forward_features(x))
