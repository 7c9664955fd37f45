"""The inference base: the background reader, batch-norm folding, loading, device and precision."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from mitoscope.inference.base import (
    InferenceModel,
    find_checkpoint,
    fold_batchnorm_for,
    load_checkpoint,
    prefetch,
    read_ahead,
)
from mitoscope.models.checkpoint import ModelContract, save_checkpoint
from mitoscope.models.registry import create_model, list_models, register_model
from mitoscope.utils.errors import InputError

ARCH = "test_inference_base_tiny"

if ARCH not in list_models():

    @register_model(ARCH)
    def _tiny() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_read_ahead_keeps_job_order_with_several_threads() -> None:
    def load(k: int) -> int:
        time.sleep(0.002 * (5 - k % 5))  # later jobs finish first
        return k * 10

    assert list(read_ahead(load, range(23), threads=4, depth=2)) == [k * 10 for k in range(23)]
    assert list(read_ahead(load, [], threads=3)) == []


def test_read_ahead_stays_bounded_ahead_of_the_consumer() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def load(k: int) -> int:
        with lock:
            started.append(k)
        return k

    seen = []
    for k in read_ahead(load, range(40), threads=3, depth=2):
        time.sleep(0.005)  # let the readers run as far ahead as they may
        with lock:
            assert max(started) <= k + 3 * 2
        seen.append(k)
    assert seen == list(range(40))


def test_read_ahead_reraises_and_cancels_what_has_not_started() -> None:
    def load(k: int) -> int:
        if k == 2:
            raise OSError("disk gone")
        return k

    it = read_ahead(load, range(10), threads=2)
    assert [next(it), next(it)] == [0, 1]
    with pytest.raises(OSError, match="disk gone"):
        next(it)
    loaded: list[int] = []
    for k in read_ahead(lambda k: loaded.append(k) or k, range(1000), threads=2, depth=2):
        if k == 3:
            break
    # leaving the loop waits for the running jobs and drops the queued ones: nothing runs afterwards
    after = len(loaded)
    time.sleep(0.05)
    assert len(loaded) == after < 20
    assert not any(t.name.startswith("mitoscope-reader") for t in threading.enumerate())


@pytest.mark.skipif(sys.platform != "linux", reason="thread priorities are a Linux feature")
def test_read_ahead_lowers_the_reader_threads_priority() -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)

    def niceness(_: int) -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    assert list(read_ahead(niceness, range(2), nice=min(19, own + 5))) == [min(19, own + 5)] * 2
    assert list(read_ahead(niceness, range(2))) == [own] * 2
    assert os.getpriority(os.PRIO_PROCESS, 0) == own  # the consumer keeps its priority


def test_prefetch_reraises_and_stops_early() -> None:
    def gen():
        yield 1
        raise OSError("disk gone")

    it = prefetch(gen())
    assert next(it) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(it)
    taken = []
    for v in prefetch(iter(range(100)), depth=1):
        taken.append(v)
        if v == 3:
            break
    assert taken == [0, 1, 2, 3]


def test_prefetch_produces_every_item_in_one_thread_and_never_past_the_end() -> None:
    threads: set[int] = set()
    calls = []

    class Counting:
        """An iterator that records every call, also those after its end."""

        def __init__(self) -> None:
            self.k = 0

        def __iter__(self) -> Counting:
            return self

        def __next__(self) -> int:
            threads.add(threading.get_ident())
            calls.append(self.k)
            if self.k >= 5:
                raise StopIteration
            self.k += 1
            return self.k

    assert list(prefetch(Counting(), depth=3)) == [1, 2, 3, 4, 5]
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert calls == [0, 1, 2, 3, 4, 5]  # asked once past the end, not once per queued pull


def test_fold_batchnorm_for_keeps_outputs() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    folded = fold_batchnorm_for(net, 16)
    assert isinstance(folded[1], nn.Identity) and isinstance(net[1], nn.BatchNorm2d)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-5)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3)).eval()
    assert fold_batchnorm_for(plain, 16) is plain  # nothing to fold: the module itself


def test_inference_model_device_precision_and_folding_hook() -> None:
    m = InferenceModel(device="cpu", precision="fp32")
    assert m.device == torch.device("cpu") and m.precision == "fp32" and not m.batchnorm_folded
    assert InferenceModel(device=torch.device("cpu"), precision="auto").precision in ("bf16", "fp32")
    with pytest.raises(ValueError, match="needs a GPU"):
        InferenceModel(device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        InferenceModel(device="cpu", precision="int8")
    with pytest.raises(NotImplementedError, match="InferenceModel"):
        m.fold_batchnorm()
    assert not m.batchnorm_folded

    class Folding(InferenceModel):
        def __init__(self) -> None:
            super().__init__(device="cpu", precision="fp32")
            self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()

        def _fold_batchnorm(self) -> None:
            self.net = fold_batchnorm_for(self.net, 8, self.device)

    f = Folding()
    f.fold_batchnorm()
    assert f.batchnorm_folded and isinstance(f.net[1], nn.Identity)


def test_load_checkpoint_finds_loads_and_checks_the_task(tmp_path: Path) -> None:
    contract = ModelContract(ARCH, {}, "classification", input_size=16)
    path = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", create_model(ARCH), contract)
    assert find_checkpoint(tmp_path / "run") == path
    model, loaded, ckpt = load_checkpoint(tmp_path / "run", task="classification")
    assert ckpt == path and loaded.task == "classification" and isinstance(model, nn.Module)
    with pytest.raises(InputError, match="'classification' model, not a detection model"):
        load_checkpoint(path, task="detection")
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt", task="detection")
    (tmp_path / "two").mkdir()
    for name in ("a.pt", "b.pt"):
        (tmp_path / "two" / name).write_bytes(b"")
    with pytest.raises(InputError, match="no checkpoint in run directory"):
        find_checkpoint(tmp_path / "two")
