"""The training core both tasks share: optimiser and schedule, loader, model set-up, threshold, recipe sections."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import DataLoader

from mitoscope.engine.config import OptimConfig, TrainConfig, load_config
from mitoscope.engine.detector_training import DetectorConfig, load_detector_config
from mitoscope.engine.training import (
    build_optimizer,
    build_scheduler,
    prepare_model,
    start_run,
    train_loader,
)

CPU = torch.device("cpu")


def test_scheduler_warmup_then_cosine():
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    sched = build_scheduler(OptimConfig(warmup_epochs=1, min_lr_ratio=0.0), opt, steps_per_epoch=4, epochs=3)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert (
        lrs[4] == pytest.approx(1.0) and lrs[-1] < 0.1 and all(a >= b for a, b in itertools.pairwise(lrs[3:]))
    )


def test_constant_schedule_keeps_the_learning_rate():
    opt = build_optimizer(
        OptimConfig(name="adam", lr=3e-4, scheduler="none"), torch.nn.Linear(1, 1).parameters()
    )
    sched = build_scheduler(OptimConfig(scheduler="none"), opt, steps_per_epoch=3, epochs=2)
    for _ in range(6):
        assert opt.param_groups[0]["lr"] == 3e-4
        opt.step()
        sched.step()


@pytest.mark.parametrize(
    ("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_build_optimizer_names(name, cls):
    assert isinstance(build_optimizer(OptimConfig(name=name), torch.nn.Linear(1, 1).parameters()), cls)


def test_train_loader_shuffles_as_a_seeded_dataloader_and_drops_a_last_batch_of_one():
    data = list(range(9))
    ours = [b.tolist() for b in train_loader(data, batch_size=4, device=CPU, seed=5)]
    plain = DataLoader(
        data, batch_size=4, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(5)
    )
    assert ours == [b.tolist() for b in plain] and len(ours) == 2
    assert [len(b) for b in train_loader(data[:3], batch_size=4, device=CPU, seed=0)] == [3]


def test_prepare_model_channels_last_and_no_wrapper_in_one_process():
    conv = torch.nn.Conv2d(3, 4, 3)
    net = prepare_model(conv, CPU, TrainConfig(channels_last=True))
    assert net is conv and conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_start_run_seeds_and_sets_threads():
    before = torch.get_num_threads()
    try:
        start_run(TrainConfig(seed=7, threads=1), "cpu")
        a = torch.rand(2)
        assert torch.get_num_threads() == 1
        start_run(TrainConfig(seed=7), "cpu")
        assert torch.equal(a, torch.rand(2))
    finally:
        torch.set_num_threads(before)


def test_detector_recipe_shares_the_sections_with_its_own_defaults():
    cfg = load_detector_config(None, ["optim.lr=3e-4"])
    assert isinstance(cfg.optim, OptimConfig) and isinstance(cfg.train, TrainConfig)
    # a partial section keeps the detector's defaults (Adam, constant), not the classifier's (AdamW, cosine)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.scheduler) == (
        "adam",
        3e-4,
        0.0,
        "none",
    )
    assert (cfg.train.monitor, cfg.train.epochs, cfg.train.patience) == ("val_f1", 50, 10)
    assert load_config({"optim": {"lr": 1e-3}}, DetectorConfig).optim.name == "adam"
    # the classifier's choices are the detector's too
    assert (
        load_detector_config(None, ["optim.name=adamw", "optim.scheduler=cosine"]).optim.scheduler == "cosine"
    )


def test_detector_zero_means_off():
    zeros = ["train.patience=0", "train.max_steps_per_epoch=0", "train.grad_clip=0", "train.threads=0"]
    cfg = load_detector_config(None, [*zeros, "data.max_val_regions=0"])
    assert (
        cfg.train.patience is None and cfg.train.max_steps_per_epoch is None and cfg.train.grad_clip is None
    )
    assert cfg.train.threads is None and cfg.data.max_val_regions is None
    cpu = load_detector_config("detector-cpu")
    assert (cpu.optim.name, cpu.optim.lr, cpu.optim.scheduler, cpu.train.grad_clip, cpu.train.patience) == (
        "adam",
        3e-4,
        "none",
        10.0,
        None,
    )
    assert cpu.train.threads == 2 and load_detector_config("detector-zhang2022").train.threads is None
