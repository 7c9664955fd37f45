"""The generic training loop: losses fall, weights apply once, early stopping, exact resume, NaN errors."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mitoscope.engine.loop import (
    NonFiniteLossError,
    fit,
    move_to_device,
    total_loss,
    train_one_epoch,
)
from mitoscope.engine.seed import seed_everything
from mitoscope.models.checkpoint import ModelContract, read_checkpoint


class TinyClassifier(nn.Module):
    """Two named losses in training, probabilities in eval (the model contract)."""

    def __init__(self, scale_aux: float = 0.0) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.scale_aux = scale_aux

    def forward(self, x, targets=None):
        logits = self.lin(x).squeeze(1)
        if not self.training:
            return {"logits": logits, "prob": torch.sigmoid(logits)}
        loss_cls = nn.functional.binary_cross_entropy_with_logits(logits, targets["label"])
        return {"loss_cls": loss_cls, "loss_aux": self.scale_aux * (logits**2).mean()}


def _separable(n: int = 64, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % 2).float()
    x = torch.randn(n, 2, generator=g) * 0.3 + (y[:, None] * 2 - 1)
    return TensorDataset(x, y)


def _collate(batch):
    x = torch.stack([b[0] for b in batch])
    y = torch.stack([b[1] for b in batch])
    return x, {"label": y}


def _loader(ds, seed=None):
    return DataLoader(ds, batch_size=8, shuffle=True, collate_fn=_collate)


def _accuracy(ds):
    def evaluate(model):
        x, y = ds.tensors
        prob = model(x)["prob"]
        return {
            "accuracy": float(((prob.detach() > 0.5).float() == y).float().mean()),
            "neg_loss": -float(prob.detach().mean()),
        }

    return evaluate


CONTRACT = ModelContract("tiny", {}, "classification", 2)


def test_total_loss_applies_weights_once_and_defaults_to_one():
    losses = {"a": torch.tensor(2.0), "b": torch.tensor(3.0)}
    assert float(total_loss(losses)) == pytest.approx(5.0)
    assert float(total_loss(losses, {"b": 0.1})) == pytest.approx(2.3)
    with pytest.raises(KeyError, match="typo"):
        total_loss(losses, {"typo": 1.0})
    with pytest.raises(ValueError):
        total_loss({})


def test_loss_weights_reach_the_gradient_once():
    """With weight w on loss_aux, the step equals lr * grad(cls + w * aux) — not w² or 2w."""
    seed_everything(0)
    model = TinyClassifier(scale_aux=1.0)
    ref = copy.deepcopy(model)
    x, y = torch.randn(4, 2), torch.tensor([0.0, 1.0, 0.0, 1.0])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = model.lin.weight.detach().clone()
    train_one_epoch(
        model, [(x, {"label": y})], opt, device="cpu", loss_weights={"loss_aux": 0.25}, progress=False
    )
    step = before - model.lin.weight.detach()
    losses = ref(x, {"label": y})
    (losses["loss_cls"] + 0.25 * losses["loss_aux"]).backward()
    assert torch.allclose(step, ref.lin.weight.grad, atol=1e-6)
    assert not torch.allclose(step, ref.lin.weight.grad * 0 + step.new_zeros(1))  # it did move


def test_move_to_device_nested():
    obj = {"a": [torch.zeros(1), (torch.ones(2), 3)], "b": "text"}
    out = move_to_device(obj, "cpu")
    assert out["b"] == "text" and out["a"][1][1] == 3 and isinstance(out["a"][1], tuple)


def test_train_one_epoch_reports_named_means_and_losses_decrease():
    seed_everything(0)
    ds = _separable()
    model = TinyClassifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    first = train_one_epoch(model, _loader(ds), opt, device="cpu", progress=False)
    for _ in range(5):
        last = train_one_epoch(model, _loader(ds), opt, device="cpu", progress=False)
    assert set(first) == {"loss", "loss_cls", "loss_aux"}
    assert last["loss"] < first["loss"] * 0.7
    assert _accuracy(ds)(model.eval())["accuracy"] > 0.95


def test_cpu_bf16_autocast_trains_in_bf16_and_keeps_float32_weights():
    seen = []

    class Spy(TinyClassifier):
        def forward(self, x, targets=None):
            seen.append(self.lin(x).dtype)
            return super().forward(x, targets)

    seed_everything(0)
    ds = _separable()
    model = Spy()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(4):
        last = train_one_epoch(model, _loader(ds), opt, device="cpu", cpu_bf16=True, progress=False)
    assert seen and set(seen) == {torch.bfloat16}
    assert model.lin.weight.dtype == torch.float32
    assert last["loss"] < 0.5 and _accuracy(ds)(model.eval())["accuracy"] > 0.9
    seen.clear()
    train_one_epoch(model, _loader(ds), opt, device="cpu", progress=False)
    assert set(seen) == {torch.float32}


def test_train_one_epoch_accepts_list_images_and_list_targets_and_max_steps():
    class Det(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, images, targets):
            assert isinstance(images, list) and isinstance(targets, list)
            return {
                "loss_box": sum(((img.mean() - self.w) ** 2) for img in images) + targets[0]["n"].sum() * 0
            }

    batch = ([torch.ones(3, 4, 4), torch.ones(3, 5, 5)], [{"n": torch.tensor(1)}, {"n": torch.tensor(2)}])
    calls = []

    def loader():
        for _ in range(5):
            calls.append(1)
            yield batch

    model = Det()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = train_one_epoch(model, loader(), opt, device="cpu", max_steps=2, progress=False)
    assert "loss_box" in out and len(calls) == 3  # the third batch is fetched, then the loop stops


def test_non_finite_loss_raises_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x, targets):
            return {"loss_cls": self.w * float("nan")}

    model = Bad()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss at step 0 \(loss_cls=nan"):
        train_one_epoch(model, [(torch.ones(1), {})], opt, device="cpu", progress=False)


def _run_fit(
    tmp_path,
    *,
    epochs=4,
    callbacks=(),
    patience=None,
    resume=True,
    monitor="accuracy",
    mode="max",
    ema_decay=None,
):
    seed_everything(123)
    ds = _separable()
    model = TinyClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * 8)
    return model, fit(
        model,
        _loader(ds),
        optimizer=opt,
        scheduler=sched,
        epochs=epochs,
        evaluate=_accuracy(ds),
        monitor=monitor,
        mode=mode,
        patience=patience,
        out_dir=tmp_path,
        contract=CONTRACT,
        device="cpu",
        resume=resume,
        callbacks=callbacks,
        progress=False,
        ema_decay=ema_decay,
    )


def test_fit_writes_history_last_and_best(tmp_path):
    def set_threshold(state):
        state.contract.thresholds = {"default": 0.1 * (state.epoch + 1)}
        state.metrics["extra_metric"] = 1.0

    _, res = _run_fit(tmp_path, epochs=3, callbacks=[set_threshold])
    assert res.epochs_run == 3 and res.best_path == tmp_path / "best.pt"
    hist = pd.read_csv(tmp_path / "history.csv")
    assert list(hist["epoch"]) == [0, 1, 2]
    assert {"train_loss", "train_loss_cls", "accuracy", "extra_metric", "lr", "best"} <= set(hist.columns)
    best = read_checkpoint(tmp_path / "best.pt")
    assert best["extra"]["epoch"] == res.best_epoch
    assert best["contract"]["thresholds"]["default"] == pytest.approx(0.1 * (res.best_epoch + 1))
    last = read_checkpoint(tmp_path / "last.pt")
    assert last["extra"]["epoch"] == 2 and "optimizer" in last["extra"] and "rng" in last["extra"]
    assert not any(k.startswith("module.") for k in last["state_dict"])


def test_fit_early_stopping(tmp_path):
    # "neg_loss" keeps changing; monitoring a constant metric means no improvement after epoch 0
    def constant(state):
        state.metrics["const"] = 1.0

    _, res = _run_fit(tmp_path, epochs=10, callbacks=[constant], patience=2, monitor="const")
    assert res.stopped_early and res.epochs_run == 3 and res.best_epoch == 0


@pytest.mark.parametrize("ema_decay", [None, 0.9], ids=["raw", "weight_average"])
def test_fit_resume_after_interruption_gives_identical_weights_and_history(tmp_path, ema_decay):
    ref_model, ref = _run_fit(tmp_path / "ref", epochs=4, ema_decay=ema_decay)

    class Interrupt(Exception):
        pass

    def crash_at_2(state):
        if state.epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        _run_fit(tmp_path / "run", epochs=4, callbacks=[crash_at_2], ema_decay=ema_decay)
    assert read_checkpoint(tmp_path / "run" / "last.pt")["extra"]["epoch"] == 1
    # a fresh process would start with another global RNG state: scramble it
    torch.manual_seed(999)
    model, res = _run_fit(tmp_path / "run", epochs=4, ema_decay=ema_decay)
    assert res.epochs_run == 4
    for a, b in zip(ref_model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for name in ("best.pt", "last.pt"):  # the averaged weights too
        ref_ckpt, ckpt = read_checkpoint(tmp_path / "ref" / name), read_checkpoint(tmp_path / "run" / name)
        for key, value in ref_ckpt["state_dict"].items():
            assert torch.equal(value, ckpt["state_dict"][key]), (name, key)
    cols = ["epoch", "train_loss", "accuracy", "lr"]
    pd.testing.assert_frame_equal(ref.history[cols], res.history[cols])
    # a finished run resumes to a no-op with the same result
    _, again = _run_fit(tmp_path / "run", epochs=4, ema_decay=ema_decay)
    assert again.epochs_run == 4 and again.best_epoch == res.best_epoch


def test_fit_with_weight_average_evaluates_and_keeps_the_average(tmp_path):
    seen = {}

    def record(state):
        seen[state.epoch] = {k: v.clone() for k, v in state.model.state_dict().items()}

    model, res = _run_fit(tmp_path, epochs=3, callbacks=[record], ema_decay=0.9)
    last = read_checkpoint(tmp_path / "last.pt")
    average = last["extra"]["weight_average"]
    assert average["updates"] == 3 * 8  # one per optimiser step
    # the callbacks saw the average, best.pt holds it, last.pt keeps the raw model to resume from
    for key, value in average["module"].items():
        assert torch.equal(value, seen[2][key])
    best = read_checkpoint(tmp_path / "best.pt")["state_dict"]
    for key, value in best.items():
        assert torch.equal(value, seen[res.best_epoch][key])
    for key, value in model.state_dict().items():
        assert torch.equal(value, last["state_dict"][key])
    assert not torch.equal(model.lin.weight, seen[2]["lin.weight"])
    with pytest.raises(ValueError, match="decay must be in"):
        _run_fit(tmp_path / "bad", ema_decay=1.0)


def test_fit_without_resume_starts_over(tmp_path):
    _run_fit(tmp_path, epochs=2)
    _, res = _run_fit(tmp_path, epochs=1, resume=False)
    assert res.epochs_run == 1
    assert read_checkpoint(tmp_path / "last.pt")["extra"]["epoch"] == 0


def test_fit_missing_monitor_metric(tmp_path):
    with pytest.raises(KeyError, match="no 'auroc' metric"):
        _run_fit(tmp_path, epochs=1, monitor="auroc")
