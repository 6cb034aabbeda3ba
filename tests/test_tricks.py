"""The speedrun's tricks, each turned on by its run setting and doing what it says, on real data."""

import pytest
import torch
import torch.nn.functional as F

from fmnist_core.analysis.metrics import TTA_VIEWS, batched_outputs, classifier_logits, translated
from fmnist_core.data.fashion import load_data
from fmnist_core.models import create_model
from fmnist_core.runs.trained import get_or_train
from fmnist_core.store.cache import RunCache
from fmnist_core.training import tricks
from fmnist_core.training.config import RunConfig
from fmnist_core.training.loop import make_optimizer
from fmnist_core.training.splits import make_splits

LAYERS = (
    "conv:12:3:same:relu",
    "maxpool:2",
    "bn",
    "conv:16:3:same:relu",
    "bn",
    "conv:16:3:same:relu",
    "maxpool:2",
    "bn",
)
# Every trick at once, small: what the speedrun's last rung turns on.
TRICKS = dict(whiten=True, dirac=True, bn_bias_lr=4.0, ema=0.9, augment="alt_flip_shift", tta="flip_shift")


def small_cnn(seed: int = 0):
    return create_model("cnn", generator=torch.Generator().manual_seed(seed), layers=LAYERS)


def test_the_whitened_first_conv_gives_its_training_patches_a_covariance_near_the_identity():
    images = load_data().train_images[:3000]
    model = small_cnn()
    tricks.prepare(model, RunConfig.for_model("cnn", {"layers": LAYERS}, whiten=True), images)
    conv = tricks.convs(model)[0]
    assert not conv.weight.requires_grad and conv.bias.requires_grad  # the filters are frozen
    patches = F.unfold(images, 3, padding=1).transpose(1, 2).reshape(-1, 9).double()
    outputs = patches @ conv.weight.reshape(12, 9).T.double() + conv.bias.double()
    covariance = torch.cov(outputs[:, :9].T).detach()  # nine directions; filters 9-11 are three negated
    variances = torch.linalg.eigvalsh(torch.cov(patches.T)).flip(0)  # largest first, as the filters
    shrunk = variances / (variances + tricks.WHITENING_EPS)  # what the eps leaves of each direction
    assert torch.allclose(covariance, torch.diag(shrunk), atol=1e-6), covariance
    assert shrunk[:3].min() > 0.99 and shrunk[:6].min() > 0.9  # near the identity where patches vary
    assert outputs.mean(0).abs().max() < 1e-6  # the bias centres them
    assert torch.allclose(conv.weight[9:12], -conv.weight[0:3])
    plain = small_cnn()
    assert not torch.allclose(tricks.convs(plain)[0].weight, conv.weight)  # off by default: as drawn


def test_whiten_refuses_more_filters_than_twice_a_patch_and_models_without_a_first_conv():
    with pytest.raises(
        ValueError, match="^whiten: the first conv has 32 filters; its 3x3 patches give at most 18"
    ):
        RunConfig.for_model("cnn", {"layers": ("conv:32:3:same:relu",)}, whiten=True)
    with pytest.raises(ValueError, match="^whiten: the first layer is 'maxpool:2', not a conv"):
        RunConfig.for_model("cnn", {"layers": ("maxpool:2", "conv:8:3:same:relu")}, whiten=True)
    wide = create_model("cnn", layers=("conv:32:3:same:relu",))  # the model refuses too, whatever asks
    with pytest.raises(ValueError, match="^whiten: the first conv has 32 filters"):
        tricks.prepare(wide, RunConfig.for_model("cnn", {"layers": LAYERS}, whiten=True), torch.empty(0))
    with pytest.raises(ValueError, match="^dirac: this mlp has no conv after its first"):
        RunConfig.for_model("mlp", dirac=True)
    with pytest.raises(ValueError, match="^dirac: this cnn has no conv after its first"):
        RunConfig.for_model("cnn", {"layers": ("conv:8:3:same:relu", "maxpool:2")}, dirac=True)
    assert RunConfig.for_model("conv_autoencoder", dirac=True).dirac  # its convs can
    with pytest.raises(ValueError, match="^whiten: only a cnn"):
        RunConfig.for_model("mlp", whiten=True)
    with pytest.raises(ValueError, match="^whiten: 1 is not true or false"):
        RunConfig.for_model("cnn", whiten=1)
    with pytest.raises(ValueError, match=r"^bn_bias_lr: 0.0 is outside"):
        RunConfig.for_model("cnn", bn_bias_lr=0.0)
    with pytest.raises(ValueError, match=r"^ema: 1.0 is outside"):
        RunConfig.for_model("cnn", ema=1.0)


def test_dirac_makes_each_later_conv_start_as_the_identity_on_its_inputs():
    model = small_cnn()
    tricks.prepare(model, RunConfig.for_model("cnn", {"layers": LAYERS}, dirac=True), torch.empty(0))
    first, second, third = tricks.convs(model)
    x = torch.rand(4, 12, 14, 14)
    out = second(x) - second.bias[None, :, None, None]
    assert torch.allclose(out[:, :12], x, atol=1e-6)  # (x + bias) - bias: to the last bits
    assert second.weight[12:].abs().sum() > 0  # the filters past the inputs keep their draws
    y = torch.rand(4, 16, 7, 7)
    assert torch.allclose(third(y) - third.bias[None, :, None, None], y, atol=1e-6)
    assert torch.equal(first.weight, small_cnn().features[0].weight)  # the first conv: as drawn


def test_batchnorm_biases_learn_at_their_own_rate_under_onecycle_too():
    model = small_cnn()
    config = RunConfig.for_model("cnn", {"layers": LAYERS}, bn_bias_lr=4.0, lr=1e-3)
    groups = tricks.parameter_groups(model, config)
    biases = {id(m.bias) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert {id(p) for p in groups[1]["params"]} == biases and groups[1]["lr"] == 4e-3
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    optimizer = make_optimizer(config, groups)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=10
    )
    for _ in range(4):
        optimizer.step()
        schedule.step()
        assert optimizer.param_groups[1]["lr"] == pytest.approx(4 * optimizer.param_groups[0]["lr"])


def test_alternating_flips_show_each_image_both_ways_every_two_epochs():
    config = RunConfig.for_model("cnn", augment="alt_flip", seed=3)
    parity = tricks.flip_parity(config, 1000)
    assert torch.equal(parity, tricks.flip_parity(config, 1000))  # from the seed alone
    assert 400 < int(parity.sum()) < 600 and not torch.equal(
        parity, tricks.flip_parity(config.replace(seed=4), 1000)
    )
    images = load_data().train_images[:8]
    odd = tricks.alternating_flip(images, parity[:8], epoch=1)
    even = tricks.alternating_flip(images, parity[:8], epoch=2)
    for i in range(8):
        ways = {odd[i].flip(2).equal(images[i]), even[i].flip(2).equal(images[i])}
        assert ways == {True, False}  # mirrored in exactly one of the two epochs
        assert odd[i].equal(images[i].flip(2)) == bool(parity[i])


def test_multi_crop_tta_averages_the_six_views_it_names():
    images = load_data().test_images[:200]
    shifted = translated(images, 1, -1)
    assert torch.equal(shifted[:, :, 1:, :-1], images[:, :, :-1, 1:])  # down one, left one
    assert shifted[:, :, 0].abs().sum() == 0 and shifted[:, :, :, -1].abs().sum() == 0  # zeros come in
    model = small_cnn().eval()
    views = [images.flip(3) if mirrored else images for mirrored, _, _ in TTA_VIEWS["flip_shift"]]
    views = [translated(v, r, c) for v, (_, r, c) in zip(views, TTA_VIEWS["flip_shift"], strict=True)]
    assert len(views) == 6 and len({(r, c) for _, r, c in TTA_VIEWS["flip_shift"]}) == 3
    expected = torch.stack([batched_outputs(model, v) for v in views]).mean(0)
    got = classifier_logits(model, images, "flip_shift")
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, classifier_logits(model, images, "flip"), atol=1e-3)


def test_the_moving_average_follows_its_formula():
    model = small_cnn()
    average = tricks.moving_average(model, 0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    average.update_parameters(model)  # the first update copies the weights
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update_parameters(model)
    weight = average.module.features[0].weight
    assert torch.allclose(weight, 0.9 * before["features.0.weight"] + 0.1 * (before["features.0.weight"] + 1))


def test_a_run_with_every_trick_trains_and_keeps_the_averaged_weights_it_was_tested_with(tmp_path):
    from fmnist_core.analysis import test_metrics

    config = RunConfig.for_model(
        "cnn", {"layers": LAYERS}, epochs=2, train_subset=2000, test_subset=500, **TRICKS
    )
    plain = config.replace(**{k: RunConfig.__dataclass_fields__[k].default for k in TRICKS})
    assert config.run_id != plain.run_id
    run = get_or_train(config, cache=RunCache(tmp_path))
    assert run.completed and run.metrics["test_accuracy"] > 0.6
    splits = make_splits(config)
    again = test_metrics(run.model, splits.test_images, splits.test_labels, "cross_entropy", "flip_shift")
    assert again["accuracy"] == pytest.approx(run.metrics["test_accuracy"], abs=0.0041)  # 2 near-ties
    # Each epoch validated on the test subset with one view; the six views at the test, once, after.
    once = test_metrics(run.model, splits.test_images, splits.test_labels, "cross_entropy", "none")
    assert run.history["val_loss"][-1] == pytest.approx(once["loss"], rel=1e-4)
    assert run.history["val_loss"][-1] != pytest.approx(run.metrics["test_loss"], rel=1e-3)
    first = tricks.convs(run.model)[0]
    whitened = small_cnn()
    tricks.prepare(whitened, config, splits.train_images)
    assert torch.allclose(first.weight, tricks.convs(whitened)[0].weight)  # frozen through training
