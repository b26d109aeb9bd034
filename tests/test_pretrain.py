"""Unsupervised and auxiliary-task pretraining (graftnet.pretrain): greedy autoencoders and
RBMs, siamese pairs, real-vs-corrupted, contrastive; the bases graft, save and plug into a study."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import graftnet as gn
from graftnet.cache import FeatureCache
from graftnet.errors import ConfigError, DataError, ShapeError
from graftnet.layers import DepthwiseConv2d
from graftnet.pretrain import Siamese, _pair_head, cd_gradient, corrupt, decoder_for, make_pairs, nt_xent


@pytest.fixture(scope="module")
def mnist_small():
    """2,000 real MNIST training digits and 300 validation digits, pixels in [0, 1]."""
    return gn.datasets.mnist(download=False).head(train=2000, valid=300, test=300)


@pytest.fixture(scope="module")
def digits():
    return gn.datasets.digits()


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# ----------------------------------------------------------------- greedy: autoencoders
def test_autoencoder_reconstruction_error_drops_below_the_mean_image_on_real_digits(mnist_small):
    history = gn.History()
    data = mnist_small.head(train=1000)
    base = gn.pretrain.greedy([gn.Flatten(), gn.Dense(64, "elu")], data, "autoencoder", epochs=4,
                              batch_size=32, optimizer=gn.Adam(lr=1e-2), seed=0, history=history, verbose=False)
    x = data.valid.x.reshape(len(data.valid), -1)
    mean_image_mse = float(((x - data.train.x.reshape(1000, -1).mean(0)) ** 2).mean())
    losses = history["val_loss"]
    assert history["stage"] == ["hidden1"] * 4
    assert losses[-1] < losses[0]
    assert losses[-1] < 0.5 * mean_image_mse  # far better than predicting the average digit
    assert base.layer_names == ["flatten", "hidden1", "outputs"]
    assert base.info["pretrain"]["final"]["hidden1"]["val_loss"] == losses[-1]


def test_tied_decoder_shares_storage_with_the_encoder_and_stays_tied_when_trained():
    enc = gn.Network([gn.Dense(3, "elu")], (5,)).layer("dense1")
    tied, untied = decoder_for(enc, tied=True), decoder_for(enc, tied=False)
    assert tied.weight.data_ptr() == enc.weight.data_ptr()
    assert untied.weight.data_ptr() != enc.weight.data_ptr()
    # the tied autoencoder trains one matrix: its parameters are the encoder's plus one visible bias
    params = list(dict.fromkeys([*enc.parameters(), *tied.parameters()]))
    assert sum(p.numel() for p in params) == 3 * 5 + 3 + 5
    opt = torch.optim.SGD(params, lr=0.5)
    before = enc.weight.detach().clone()
    x = torch.rand(8, 5)
    F.mse_loss(tied(enc(x)), x).backward()
    opt.step()
    assert not torch.equal(enc.weight, before)
    assert torch.equal(tied.weight, enc.weight.t())  # still one matrix after the update


def test_denoising_trains_and_records_its_noise(mnist_small):
    for noise in ("mask", "gaussian"):
        base = gn.pretrain.greedy([gn.Flatten(), gn.Dense(32, "sigmoid")], mnist_small.train.x[:500], "denoising",
                                  noise=noise, tied=False, epochs=2, seed=0, verbose=False)
        info = base.info["pretrain"]
        assert info["noise"] == noise and info["tied"] is False
        assert info["noise_level"] == (0.3 if noise == "mask" else 0.1)
        rows = info["history"]["epochs"]
        assert rows[-1]["loss"] < rows[0]["loss"]


def test_greedy_freezes_and_caches_the_layers_below(mnist_small):
    """Each layer after the first trains on the cached output of the frozen ones below; the
    same seed twice gives the same first layer, so the second run finds its features cached."""
    cache = FeatureCache(memory_budget=2**28)
    tower = [gn.Flatten(), gn.Dense(32, "elu"), gn.Dense(16, "elu"), gn.Dense(8, "elu")]
    first = gn.pretrain.greedy(tower, mnist_small.train.x[:600], epochs=1, seed=3, cache=cache, verbose=False)
    # the inputs of hidden1 (flatten), hidden2 and hidden3: each computed once
    assert cache.stats()["misses"] == 3 and cache.stats()["hits"] == 0
    second = gn.pretrain.greedy(tower, mnist_small.train.x[:600], epochs=1, seed=3, cache=cache, verbose=False)
    assert cache.stats()["hits"] == 3 and cache.stats()["misses"] == 3
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert first.frozen == []  # the returned base is trainable


def test_greedy_base_grafts_saves_and_loads(mnist_small, tmp_path):
    base = gn.pretrain.greedy([gn.Flatten(), gn.Dense(32, "elu"), gn.Dense(16, "elu")], mnist_small, epochs=1,
                              seed=0, verbose=False)
    model = gn.graft(base, head=gn.Dense(10), freeze=True)
    assert model.layer_names == ["flatten", "hidden1", "hidden2", "outputs"]
    assert torch.equal(model.layer("hidden2").weight, base.layer("hidden2").weight)
    gn.save_model(base, tmp_path / "base")
    loaded = gn.load_model(tmp_path / "base")
    assert torch.equal(loaded.layer("hidden1").weight, base.layer("hidden1").weight)
    meta = json.loads((tmp_path / "base" / "metadata.json").read_text())
    assert meta["pretrain"]["method"] == "autoencoder"
    assert [r["stage"] for r in meta["pretrain"]["history"]["epochs"]] == ["hidden1", "hidden2"]


def test_greedy_report_has_reconstruction_pictures(mnist_small, tmp_path):
    gn.pretrain.greedy([gn.Flatten(), gn.Dense(32, "elu"), gn.Dense(16, "elu")], mnist_small, epochs=1, seed=0,
                       report=tmp_path / "report", verbose=False)
    png = (tmp_path / "report" / "reconstructions.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "report" / "report.md").read_text()
    assert "![reconstructions](reconstructions.png)" in text and "| hidden2 |" in text
    assert (tmp_path / "report" / "history.csv").read_text().splitlines()[0].startswith("epoch,stage")


# ----------------------------------------------------------------- greedy: RBM
def test_rbm_cd1_gradient_equals_the_hand_computed_one_on_3_visible_2_hidden():
    weight = torch.tensor([[0.5, -1.0, 0.25], [1.5, 0.5, -0.5]])  # (hidden 2, visible 3)
    b = torch.tensor([0.1, -0.2, 0.3])
    c = torch.tensor([-0.4, 0.2])
    v0 = torch.tensor([[1.0, 0.0, 1.0]])
    w = weight.numpy().astype(np.float64)
    ph0 = _sigmoid(v0.numpy() @ w.T + c.numpy())  # [[0.5866, 0.7311]]
    # mean-field CD-1: h = p(h|v0)
    v1 = _sigmoid(ph0 @ w + b.numpy())
    ph1 = _sigmoid(v1 @ w.T + c.numpy())
    want = (ph0.T @ v0.numpy() - ph1.T @ v1, (v0.numpy() - v1).mean(0), (ph0 - ph1).mean(0))
    got = cd_gradient(weight, b, c, v0, k=1, sample=False)
    for g, e in zip(got[:3], want):
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-5, atol=1e-6)
    # sampled CD-1: one uniform per hidden unit from the generator; h = (u < p)
    u = torch.rand((1, 2), generator=torch.Generator().manual_seed(7)).numpy()
    h = (u < ph0).astype(np.float64)
    v1 = _sigmoid(h @ w + b.numpy())
    ph1 = _sigmoid(v1 @ w.T + c.numpy())
    got = cd_gradient(weight, b, c, v0, k=1, generator=torch.Generator().manual_seed(7))
    np.testing.assert_allclose(got[0].numpy(), ph0.T @ v0.numpy() - ph1.T @ v1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[3].numpy(), v1, rtol=1e-5, atol=1e-6)


def test_rbm_layers_learn_to_reconstruct_real_digits(mnist_small):
    history = gn.History()
    gn.pretrain.greedy([gn.Flatten(), gn.Dense(64, "sigmoid"), gn.Dense(32, "sigmoid")], mnist_small.head(train=1000),
                       "rbm", epochs=3, seed=0, history=history, verbose=False)
    for layer in ("hidden1", "hidden2"):
        val = [r["val_loss"] for r in history.epochs if r["stage"] == layer]
        assert val[-1] < val[0]


def test_rbm_refuses_inputs_outside_0_1_and_non_sigmoid_units(mnist_small):
    x = mnist_small.train.x[:50] * 2 - 1  # [-1, 1]
    with pytest.raises(DataError, match=r"inputs in \[0, 1\].*range over \[-1, 1\]"):
        gn.pretrain.greedy([gn.Flatten(), gn.Dense(8, "sigmoid")], x, "rbm")
    with pytest.raises(ConfigError, match="layer 'hidden1' is Dense with activation 'elu'.*sigmoid"):
        gn.pretrain.greedy([gn.Flatten(), gn.Dense(8, "elu")], mnist_small.train.x[:50], "rbm")


# ----------------------------------------------------------------- greedy: bad input
def test_greedy_refuses_layers_it_cannot_pretrain_by_name_and_says_what_is_supported(mnist_small):
    x = mnist_small.train.x[:20]
    with pytest.raises(ConfigError, match="cannot pretrain layer 'conv1': it is a conv2d layer; method='rbm' trains "
                                          "Dense layers.*Supported: dense.*pretrain.contrastive"):
        gn.pretrain.greedy([gn.Conv2d(4, 3, name="conv1"), gn.Flatten(), gn.Dense(8, "sigmoid")], x, "rbm")
    with pytest.raises(ConfigError, match="cannot pretrain layer 'dw': it is a depthwise_conv2d layer"):
        gn.pretrain.greedy([DepthwiseConv2d(3, name="dw"), gn.Flatten(), gn.Dense(8)], x)
    with pytest.raises(ConfigError, match="cannot pretrain layer 'bn': it is a batchnorm layer with weights"):
        gn.pretrain.greedy([gn.Flatten(), gn.Dense(8), gn.BatchNorm(name="bn")], x)


def test_conv_decoder_is_the_adjoint_of_the_convolution():
    """<conv(x), h> = <x, decoder(h)> for the tied decoder without bias: the transposed conv is exact,
    with TensorFlow's asymmetric 'same' padding at stride 2 as well as 'valid'."""
    torch.manual_seed(0)
    for padding, stride, size in (("same", 2, 7), ("valid", 2, 8), ("same", 1, 6)):
        net = gn.Network([gn.Conv2d(4, 3, stride=stride, padding=padding, name="conv")], (2, size, size))
        conv = net.layer("conv")
        dec = decoder_for(conv, in_shape=(2, size, size))
        assert dec.weight.data_ptr() == conv.weight.data_ptr()
        with torch.no_grad():
            conv.bias.zero_()
        x = torch.randn(3, 2, size, size)
        y = net(x)
        h = torch.randn_like(y)
        assert torch.allclose((y * h).sum(), (x * dec.linear(h)).sum(), rtol=1e-4, atol=1e-4), padding


def test_convolutional_autoencoder_layers_learn_on_real_digits(mnist_small, tmp_path):
    history = gn.History()
    tower = [gn.Conv2d(8, 3, stride=2, padding="same", activation="elu"), gn.Conv2d(8, 3, padding="same",
             activation="elu"), gn.MaxPool(2), gn.Flatten(), gn.Dense(16, "elu")]
    base = gn.pretrain.greedy(tower, mnist_small.head(train=500), "autoencoder", epochs=3,
                              optimizer=gn.Adam(lr=3e-3), seed=0, history=history, report=tmp_path, verbose=False)
    assert sorted(set(history["stage"])) == ["conv1", "conv2", "hidden1"]
    for layer in ("conv1", "conv2", "hidden1"):
        val = [r["val_loss"] for r in history.epochs if r["stage"] == layer]
        assert val[-1] < val[0], layer
    assert (tmp_path / "reconstructions.png").read_bytes()[:4] == b"\x89PNG"
    assert gn.graft(base, head=gn.Dense(10)).output_shape == (10,)


def test_unlabeled_data_of_the_wrong_shape_is_named(mnist_small):
    net = gn.Network([gn.Flatten(), gn.Dense(8, "elu")], (1, 28, 28))
    with pytest.raises(ShapeError, match=r"shape \(64,\) but network 'network' expects \(1, 28, 28\)"):
        gn.pretrain.greedy(net, torch.rand(10, 64))
    with pytest.raises(ShapeError, match=r"shape \(1, 28, 28\), which the tower cannot take.*Flatten"):
        gn.pretrain.greedy([gn.Dense(8, "elu")], mnist_small.train.x[:10])
    with pytest.raises(DataError, match=r"examples of shape \(N, \.\.\.\).*got shape \(10,\)"):
        gn.pretrain.greedy([gn.Dense(8)], torch.rand(10))
    with pytest.raises(DataError, match="expected float inputs, got torch.int64"):
        gn.pretrain.greedy([gn.Dense(8)], torch.ones(10, 4, dtype=torch.long))
    with pytest.raises(ConfigError, match="unknown greedy method 'autoencodr'.*Did you mean 'autoencoder'"):
        gn.pretrain.greedy([gn.Dense(8)], torch.rand(10, 4), "autoencodr")


# ----------------------------------------------------------------- siamese
def test_make_pairs_are_half_same_class_never_self_pairs():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    first, second, same = make_pairs(labels, 101, torch.Generator().manual_seed(0))
    assert len(same) == 101 and same.sum().item() == 50
    assert torch.equal((labels[first] == labels[second]).float(), same)
    assert bool((first[same > 0] != second[same > 0]).all())


def test_pairs_from_a_single_class_are_refused(digits):
    with pytest.raises(DataError, match="every example has class 3.*at least 2 classes"):
        make_pairs(torch.full((10,), 3), 4, torch.Generator())
    sevens = digits.train.x[digits.train.y == 7]
    with pytest.raises(DataError, match="the training data: every example has class 7"):
        gn.pretrain.siamese([gn.Flatten(), gn.Dense(8, "elu")], sevens, labels=torch.full((len(sevens),), 7), epochs=1)
    with pytest.raises(DataError, match="no class has 2 examples"):
        make_pairs(torch.tensor([0, 1, 2]), 4, torch.Generator())


def test_siamese_towers_share_weights():
    tower = gn.Network([gn.Flatten(), gn.Dense(6, "elu")], (1, 4, 4))
    model = Siamese(tower, _pair_head(6, 3))
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == tower.count_params() + model.head.count_params()  # one tower's weights, not two
    a, b = torch.rand(5, 1, 4, 4), torch.rand(5, 1, 4, 4)
    want = model.head(torch.cat([tower(a), tower(b)], 1)).squeeze(1)
    assert torch.allclose(model(a, b), want)
    # the gradient from the second image lands on the same weights as the first's
    model(torch.zeros_like(a), b).sum().backward()
    assert tower.layer("dense1").weight.grad.abs().sum() > 0


def test_siamese_learns_same_digit_pairs_and_returns_a_graftable_base(digits):
    history = gn.History()
    base = gn.pretrain.siamese([gn.Flatten(), gn.Dense(32, "elu", init="he_normal"),
                                gn.Dense(32, "elu", init="he_normal")], digits, epochs=6, steps_per_epoch=20,
                               batch_size=200, optimizer=gn.Adam(lr=3e-3), seed=0, history=history, verbose=False)
    assert history["val_accuracy"][-1] > 0.7  # chance is 0.5
    assert base.layer_names == ["flatten", "hidden1", "hidden2", "outputs"]
    assert base.info["pretrain"]["shared_towers"] is True
    model = gn.graft(base, head=gn.Dense(10), freeze=True)
    assert model.frozen == ["flatten", "hidden1", "hidden2"]


def test_separate_towers_are_two_sets_of_weights(digits):
    base = gn.pretrain.siamese([gn.Flatten(), gn.Dense(8, "elu")], digits, epochs=1, steps_per_epoch=2,
                               batch_size=50, share=False, seed=0, verbose=False)
    assert base.info["pretrain"]["shared_towers"] is False


# ----------------------------------------------------------------- real vs corrupted
def test_built_in_corruptions_do_what_they_say():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(1, 4 * 100 + 1, dtype=torch.float32).reshape(4, 100)
    masked = corrupt(x, "mask", 0.5, g)
    assert 0.3 < (masked == 0).float().mean() < 0.7 and bool(((masked == 0) | (masked == x)).all())
    swapped = corrupt(x, "swap", 0.5, g)
    changed = swapped != x
    assert 0.3 < changed.float().mean() < 0.7
    for row, col in changed.nonzero().tolist():  # each swapped value comes from the same feature of another row
        assert swapped[row, col] in x[:, col] and swapped[row, col] != x[row, col]
    images = torch.stack([torch.full((1, 8, 8), float(i)) for i in range(3)])
    patched = corrupt(images, "patch", 0.5, g)
    for i in range(3):
        foreign = patched[i] != i
        assert foreign.sum() == 16  # one 4 x 4 square from another image
    with pytest.raises(ShapeError, match="patch.*use 'swap', 'mask' or 'noise'"):
        corrupt(x, "patch", 0.5, g)
    with pytest.raises(ConfigError, match="unknown corruption 'shuffle'; built in: swap, mask, noise, patch"):
        corrupt(x, "shuffle", 0.5, g)


def test_discriminate_learns_real_vs_corrupted_with_either_cost(digits):
    for loss in ("bce", "margin"):
        history = gn.History()
        base = gn.pretrain.discriminate([gn.Flatten(), gn.Dense(32, "elu")], digits, corruption="mask", rate=0.5,
                                        loss=loss, epochs=8, batch_size=64, seed=0, history=history, verbose=False)
        assert history["val_accuracy"][-1] > 0.75, loss  # chance: 0.5
        assert base.info["pretrain"]["head"] == "trained by the pretraining task"
        score = gn.predict(base, digits.valid.x[:200]).squeeze(1)
        fake = gn.predict(base, corrupt(digits.valid.x[:200], "mask", 0.5, torch.Generator().manual_seed(1))).squeeze(1)
        assert (score > fake).float().mean() > 0.75  # the saved head is the trained discriminator


def test_discriminate_takes_a_callable_and_checks_its_shape(digits):
    flip = lambda x, g: x.flip(-1)  # noqa: E731
    gn.pretrain.discriminate([gn.Flatten(), gn.Dense(8, "elu")], digits, corruption=flip, epochs=1, verbose=False)
    with pytest.raises(ShapeError, match="corruption returned .*same shape"):
        gn.pretrain.discriminate([gn.Flatten(), gn.Dense(8, "elu")], digits, corruption=lambda x, g: x[:, :, :4],
                                 epochs=1, verbose=False)


# ----------------------------------------------------------------- contrastive
def test_nt_xent_equals_the_hand_computed_loss():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z2 = torch.tensor([[1.0, 1.0], [-1.0, 1.0]])
    t = 0.5
    z = np.concatenate([z1.numpy(), z2.numpy()])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T / t
    total = 0.0
    for i, pos in enumerate([2, 3, 0, 1]):
        others = [j for j in range(4) if j != i]
        total += -sim[i, pos] + np.log(np.exp(sim[i, others]).sum())
    loss, accuracy = nt_xent(z1, z2, t)
    assert loss.item() == pytest.approx(total / 4, rel=1e-5)
    assert 0.0 <= accuracy.item() <= 1.0


def test_contrastive_pretraining_lowers_its_loss_and_refuses_flat_data_without_augment(digits):
    history = gn.History()
    base = gn.pretrain.contrastive([gn.Flatten(), gn.Dense(32, "elu")], digits,
                                   augment=gn.Augment(shift=1, rotate=10.0), epochs=3, batch_size=128, seed=0,
                                   history=history, verbose=False)
    assert history["loss"][-1] < history["loss"][0]
    assert base.info["pretrain"]["objective"] == "nt-xent"
    with pytest.raises(ShapeError, match="needs images.*augment=callable"):
        gn.pretrain.contrastive([gn.Dense(8)], torch.rand(20, 4), epochs=1)


# ----------------------------------------------------------------- recipes, CLI and study
RECIPE = """
[pretrain]
method = "{method}"
epochs = 1
batch_size = 64
seed = 0
[pretrain.options]
{options}
[tower]
hidden = [16, 16]
[data]
source = "digits"
"""


def test_cli_pretrain_writes_a_base_that_a_study_takes(tmp_path):
    from graftnet import study
    from graftnet.cli import main

    recipe = tmp_path / "ae.toml"
    recipe.write_text(RECIPE.format(method="denoising", options='noise = "gaussian"'))
    assert main(["pretrain", str(recipe), "--out", str(tmp_path / "ae"), "--quiet"]) == 0
    assert (tmp_path / "ae" / "report" / "reconstructions.png").is_file()
    base = gn.load_model(tmp_path / "ae" / "model")
    assert base.layer_names == ["flatten", "hidden1", "hidden2", "outputs"]
    assert base.info["pretrain"]["noise"] == "gaussian"
    result = study.run(tmp_path / "ae" / "model", "digits", seeds=2, variants=["scratch", "frozen"], epochs=2,
                       head_epochs=1,
                       report=False, progress=lambda line: None)
    assert [v.name for v in result.variants] == ["scratch", "frozen"]
    assert "hidden1, hidden2" in result.summary("frozen").description


def test_pretrained_bases_plug_into_graftnet_study_from_the_command_line(tmp_path, capsys):
    """`graftnet pretrain` twice, then one `graftnet study --recipe` comparing both bases (one the
    study's [base], one a variant's base) with scratch: the command-line path of issue 13."""
    from graftnet.cli import main

    for method, options in (("autoencoder", "tied = true"), ("discriminate", 'loss = "margin"')):
        (tmp_path / f"{method}.toml").write_text(RECIPE.format(method=method, options=options))
        assert main(["pretrain", str(tmp_path / f"{method}.toml"), "--out", str(tmp_path / method), "--quiet"]) == 0
    (tmp_path / "study.toml").write_text(f"""
[study]
seeds = 2
variants = ["scratch", "ae-frozen", "disc-frozen", "disc-fine-tuned"]
primary = "disc-frozen"
epochs = 2
head_epochs = 1
[task]
data = "digits"
train_size = 50
sampling = "balanced"
[base]
path = "{tmp_path / 'autoencoder' / 'model'}"
[variants.ae-frozen]
unfreeze = 0
[variants.disc-frozen]
base = "{tmp_path / 'discriminate' / 'model'}"
[variants.disc-fine-tuned]
base = "{tmp_path / 'discriminate' / 'model'}"
unfreeze = "all"
""")
    out = tmp_path / "study"
    assert main(["study", "--recipe", str(tmp_path / "study.toml"), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "disc-fine-tuned" in printed and "Holm" in printed
    saved = json.loads((out / "results.json").read_text())
    assert sorted({r["variant"] for r in saved["runs"]}) == ["ae-frozen", "disc-fine-tuned", "disc-frozen", "scratch"]
    described = {r["variant"]: r["description"] for r in saved["runs"]}
    assert described["disc-frozen"] == "reusing base 'discriminate-base': hidden1, hidden2 frozen"
    assert described["ae-frozen"] == "reusing hidden1, hidden2 frozen"
    assert (out / "report.md").is_file()


def test_siamese_on_epoch_sees_the_base_so_far_without_changing_the_training(digits):
    seen = {}

    def snapshot(epoch, base):
        seen[epoch] = base
        torch.rand(100)  # the callback's own draws do not move the training's

    kwargs = dict(epochs=3, steps_per_epoch=3, batch_size=40, seed=0, verbose=False)
    tower = [gn.Flatten(), gn.Dense(8, "elu")]
    plain = gn.pretrain.siamese(tower, digits, **kwargs)
    watched = gn.pretrain.siamese(tower, digits, on_epoch=snapshot, **kwargs)
    assert sorted(seen) == [1, 2, 3] and seen[1].info["pretrain"]["epochs"] == 1
    for a, b in zip(plain.state_dict().values(), watched.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(seen[3].state_dict().values(), watched.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(seen[1].layer("hidden1").weight, watched.layer("hidden1").weight)


def test_siamese_names_the_pair_data_and_a_tower_that_is_not_flat(digits):
    net = gn.Network([gn.Flatten(), gn.Dense(8, "elu")], (1, 28, 28))
    with pytest.raises(ShapeError, match=r"the pair data has examples of shape \(1, 8, 8\) but network 'network' "
                                         r"expects \(1, 28, 28\)"):
        gn.pretrain.siamese(net, digits, epochs=1)
    with pytest.raises(ShapeError, match=r"the tower's output has shape \(4, 6, 6\); it must be flat"):
        gn.pretrain.siamese([gn.Conv2d(4, 3)], digits, epochs=1)
    with pytest.raises(DataError, match=r"labels must be \(N,\) with N = 1197 examples, got shape \(3,\)"):
        gn.pretrain.siamese([gn.Flatten(), gn.Dense(8)], digits.train.x, labels=torch.zeros(3), epochs=1)


def test_mnist_split2_is_exercise_10s_split_2_apart_from_split_1():
    from graftnet.data import load

    task, full = load("mnist:split2"), gn.datasets.mnist(download=False)
    assert (len(task.train), len(task.valid), len(task.test)) == (4000, 1000, 10000)
    assert torch.equal(torch.cat([task.train.x, task.valid.x]), full.valid.x)  # the 5,000 validation images
    assert torch.equal(task.test.y, full.test.y) and task.name == "mnist:split2"
    assert len(full.train) == 55000  # split #1, which pretraining uses


def test_recipe_errors_name_the_key(tmp_path):
    from graftnet.cli import main

    recipe = tmp_path / "bad.toml"
    recipe.write_text(RECIPE.format(method="siamese", options="").replace("epochs = 1", "epoch = 1"))
    assert main(["pretrain", str(recipe)]) == 2
    with pytest.raises(ConfigError, match="unknown key 'epoch' in \\[pretrain\\].*Did you mean 'epochs'"):
        gn.pretrain.run_recipe(recipe)
    recipe.write_text(RECIPE.format(method="rbn", options=""))
    with pytest.raises(ConfigError, match="unknown method 'rbn'.*Did you mean 'rbm'"):
        gn.pretrain.run_recipe(recipe)
    recipe.write_text(RECIPE.format(method="rbm", options="temperature = 0.5"))
    with pytest.raises(ConfigError, match="does not fit method 'rbm'.*temperature"):
        gn.pretrain.run_recipe(recipe, out=tmp_path / "x")


def test_pretrain_help_lists_methods_and_examples(capsys):
    from graftnet.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["pretrain", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "graftnet pretrain examples/recipes/pretrain_mnist_siamese.toml" in out
    for method in gn.pretrain.METHODS:
        assert method in out
