"""The training step loop without per-step host syncs gives the results of the plain loop."""

import copy

import pytest
import torch
import torch.nn as nn

from dfpipe.core.seeding import mix_seed
from dfpipe.training.engine import random_hflip, to_device, train_one_epoch
from dfpipe.training.losses import build_loss

from helpers import loss_config


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return {"logits": self.fc(self.bn(self.conv(x)).relu().mean((2, 3)))}


def _batches(n=5, b=6, size=12):
    g = torch.Generator().manual_seed(1)
    return [{"image": torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g),
             "label": torch.randint(0, 3, (b,), generator=g), "index": torch.arange(b)} for _ in range(n)]


def _reference_epoch(model, batches, loss_fn, opt, epoch, seed):
    """The former loop: ``loss.item()`` and the accuracy count read every step."""
    gen = torch.Generator().manual_seed(mix_seed(seed, epoch, stream=1))
    total = correct = images = 0
    for batch in batches:
        batch = random_hflip(to_device(batch, torch.device("cpu")), gen)
        out = model(batch["image"])
        loss, _ = loss_fn(out, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        b = batch["label"].shape[0]
        total += loss.item() * b
        correct += int((out["logits"].argmax(1) == batch["label"]).sum())
        images += b
    return total / images, correct / images


def test_device_accumulation_equals_per_step_reads():
    torch.manual_seed(0)
    model = Tiny()
    ref_model = copy.deepcopy(model)
    loss_fn = build_loss(loss_config(), 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for epoch in range(2):
        got = train_one_epoch(model, _batches(), loss_fn, opt, scaler, torch.device("cpu"), epoch=epoch,
                              seed=4, progress=False, log_every=2)
        want_loss, want_acc = _reference_epoch(ref_model, _batches(), loss_fn, ref_opt, epoch, 4)
        assert got["loss"] == want_loss and got["acc"] == want_acc and got["steps"] == 5
    for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("log_every", [0, 2])
def test_non_finite_loss_is_reported_with_its_step(log_every):
    batches = _batches()

    class Poison(Tiny):
        calls = 0

        def forward(self, x):
            out = super().forward(x)
            Poison.calls += 1
            if Poison.calls == 4:
                out["logits"] = out["logits"] * float("nan")
            return out

    model = Poison()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(FloatingPointError, match="epoch 0 step 3"):
        train_one_epoch(model, batches, build_loss(loss_config(), 3), opt, torch.amp.GradScaler("cpu", enabled=False),
                        torch.device("cpu"), progress=False, log_every=log_every)
