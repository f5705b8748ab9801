"""Model registry tests: shapes, parameter counts of the standard definitions, plain twins."""
import pytest
import torch
import torch.nn as nn

from trainables.models import build_model, count_parameters, init_weights, list_models, model_family

# Published parameter counts at width 1.0, 10 classes, 3 input channels:
# kuangliu/pytorch-cifar (VGG with BN, ResNet18/34) and He et al. 2016 / akamaster (6n+2 ResNets).
PUBLISHED = {
    "vgg11": 9_231_114, "vgg13": 9_416_010, "vgg16": 14_728_266, "vgg19": 20_040_522,
    "resnet18": 11_173_962, "resnet34": 21_282_122,
    "resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018,
    "resnet110": 1_727_962,
}
TWINS = [(f"resnet{d}", f"plain{d}") for d in (18, 34, 20, 32, 44, 56, 110)]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_output_shape_and_finite(name, channels, size):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=channels, width=0.25)
    init_weights(model)
    out = model(torch.randn(3, channels, size, size))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_models())
def test_family_and_depth(name):
    model = build_model(name, width=0.25)
    assert model.family == model_family(name) in ("mlp", "plain", "residual")
    assert model.family == ("mlp" if name == "mlp" else "residual" if name.startswith("resnet") else "plain")
    if name != "mlp":
        assert model.depth == int("".join(c for c in name if c.isdigit()))


@pytest.mark.parametrize("name,count", PUBLISHED.items())
def test_parameter_counts_match_published(name, count):
    assert count_parameters(build_model(name)) == count


def test_vgg24_layout():
    model = build_model("vgg24")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 21
    assert [c.out_channels for c in convs] == [64] * 2 + [128] * 2 + [256] * 5 + [512] * 12
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5


def test_mlp_hidden_and_default():
    assert [m.out_features for m in build_model("mlp", in_channels=1).modules()
            if isinstance(m, nn.Linear)] == [128, 64, 10]
    model = build_model("mlp", in_channels=1, hidden=[32, 16, 8])
    assert model.depth == 4
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [32, 16, 8, 10]
    assert count_parameters(build_model("mlp", in_channels=1)) == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10


@pytest.mark.parametrize("resnet,plain", TWINS)
def test_plain_twin_differs_only_by_skips(resnet, plain):
    r, p = build_model(resnet, width=0.25), build_model(plain, width=0.25)
    r_state, p_state = r.state_dict(), p.state_dict()
    extra = set(r_state) - set(p_state)
    assert set(p_state) <= set(r_state)
    assert all(".shortcut." in k for k in extra)      # only projection shortcuts are missing
    assert all(r_state[k].shape == p_state[k].shape for k in p_state)
    # Same weights: the plain block computes relu(main(x)), the residual one relu(main(x) + skip(x)).
    p.load_state_dict({k: r_state[k] for k in p_state})
    r.eval(), p.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        hr, hp = r.stem(x), p.stem(x)
        assert torch.equal(hr, hp)
        for rb, pb in zip(r.blocks, p.blocks):
            assert torch.allclose(pb(hr), torch.relu(rb.main(hr)))
            assert torch.allclose(rb(hr), torch.relu(rb.main(hr) + rb.shortcut(hr)))
            hr = rb(hr)


def test_option_a_shortcut_is_parameter_free():
    r20 = build_model("resnet20")
    assert count_parameters(r20) == count_parameters(build_model("plain20"))
    assert not any(".shortcut." in k for k in r20.state_dict())


@pytest.mark.parametrize("name", ["vgg16", "resnet18", "resnet20", "plain56"])
def test_width_scales_every_channel(name):
    full, half = build_model(name), build_model(name, width=0.5)
    full_convs = [m for m in full.modules() if isinstance(m, nn.Conv2d)]
    half_convs = [m for m in half.modules() if isinstance(m, nn.Conv2d)]
    assert [round(c.out_channels * 0.5) for c in full_convs] == [c.out_channels for c in half_convs]
    ratio = count_parameters(half) / count_parameters(full)
    assert 0.2 < ratio < 0.3   # conv weights scale with width squared


@pytest.mark.parametrize("name", [n for n in list_models() if n != "mlp"])
def test_batchnorm_false_removes_every_batchnorm(name):
    with_bn = build_model(name, width=0.25)
    without = build_model(name, width=0.25, batchnorm=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules())
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in without.modules())
    assert all(c.bias is not None for c in without.modules() if isinstance(c, nn.Conv2d))


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match=r"unknown model 'resnet19'.*resnet18.*plain110"):
        build_model("resnet19")


def test_hidden_only_for_mlp():
    with pytest.raises(ValueError, match="hidden"):
        build_model("vgg11", hidden=[10])


def test_bad_width():
    with pytest.raises(ValueError, match="width"):
        build_model("mlp", width=0)
