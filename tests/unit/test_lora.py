"""LoRA invariants through peft: B starts at zero, only adapters train, merge is exact and free."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from models.imagebind import ImageBind, ImageBindConfig
from models.lora import (
    add_imagebind_lora,
    add_text_lora,
    build_caption_classifier,
    build_lora_classifier,
    count_parameters,
    merge_lora,
    tokenize_captions,
    train_classifier,
)
from tests.unit.params_support import classifier_training, lora_settings

CAPTIONS = ["a handwritten seven", "die Ziffer Drei", "un cinq écrit à la main", "el número dos"]
DIGITS = [7, 3, 5, 2]
N_CLASSES = 10  # the digits example's classes


@pytest.fixture(scope="module")
def base_classifier() -> nn.Module:
    return build_caption_classifier(seed=0, num_classes=N_CLASSES).eval()


@pytest.fixture(scope="module")
def captions() -> dict[str, torch.Tensor]:
    return tokenize_captions(CAPTIONS)


def _randomise_b(model: nn.Module) -> None:
    # Stands in for training: with B = 0 every merge would be trivially exact.
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(param, std=0.05)


def _imagebind_inputs() -> dict[str, torch.Tensor]:
    torch.manual_seed(2)
    return {"vision": torch.randn(3, 1, 16, 16), "audio": torch.randn(3, 100, 40)}


# --- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [
        ("r", 0, "integer rank >= 1"),
        ("r", 4.0, "integer rank >= 1"),
        ("alpha", 0, "finite number > 0"),
        ("alpha", float("nan"), "finite number > 0"),
        ("dropout", 1.0, r"probability in \[0, 1\)"),
        ("target_modules", "query", "tuple of module names"),
        ("target_modules", (), "non-empty tuple"),
        ("target_modules", ("query", ""), "non-empty tuple"),
        ("train_heads", "yes", "True or False"),
    ],
)
def test_bad_settings_fail_naming_the_value_and_what_is_accepted(field: str, value: object, accepted: str) -> None:
    with pytest.raises(ValueError, match=rf"{field}=.*{accepted}"):
        lora_settings(**{field: value})


def test_unknown_text_target_names_the_linear_layers_that_exist(base_classifier: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"'q_proj' matches no module.*'query'.*'value'"):
        add_text_lora(copy.deepcopy(base_classifier), lora_settings(target_modules=("q_proj",)))


def test_imagebind_refuses_out_proj_alone_and_external_towers() -> None:
    with pytest.raises(ValueError, match="out_proj.*would be ignored.*'attn'"):
        add_imagebind_lora(ImageBind(), lora_settings(target_modules=("attn.out_proj",)))
    with pytest.raises(ValueError, match=r"\['text'\].*native transformer trunks \['vision', 'audio'\]"):
        add_imagebind_lora(ImageBind(), lora_settings(), modalities=["text"])  # the demo's MiniLM tower
    with pytest.raises(ValueError, match="'qkv' matches no module.*'attn'.*'mlp.fc1'"):
        add_imagebind_lora(ImageBind(), lora_settings(target_modules=("qkv",)))


# --- MiniLM text encoder --------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [3, 25])
def test_the_head_has_one_output_per_class(captions: dict, num_classes: int) -> None:
    model = build_caption_classifier(seed=0, num_classes=num_classes).eval()
    with torch.no_grad():
        assert model(**captions).shape == (len(CAPTIONS), num_classes)


@pytest.mark.parametrize("num_classes", [1, 0, 2.0, True])
def test_a_head_without_two_classes_is_refused(num_classes: object) -> None:
    with pytest.raises(ValueError, match=rf"num_classes={num_classes!r}: expected an integer >= 2"):
        build_caption_classifier(seed=0, num_classes=num_classes)



def test_text_adapters_start_as_the_identity(base_classifier: nn.Module, captions: dict) -> None:
    adapted = add_text_lora(copy.deepcopy(base_classifier), lora_settings()).eval()
    b_weights = [p for n, p in adapted.named_parameters() if "lora_B" in n]
    assert len(b_weights) == 12  # query and value in each of MiniLM's 6 layers
    assert all(torch.count_nonzero(b) == 0 for b in b_weights)
    with torch.no_grad():
        torch.testing.assert_close(adapted(**captions), base_classifier(**captions), rtol=0, atol=0)


@pytest.mark.parametrize("train_heads", [True, False])
def test_only_adapters_and_asked_for_heads_require_grad(base_classifier: nn.Module, train_heads: bool) -> None:
    adapted = add_text_lora(copy.deepcopy(base_classifier), lora_settings(train_heads=train_heads))
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if ".lora_A." in n or ".lora_B." in n}
    heads = trainable - lora
    assert len(lora) == 24  # A and B on 12 projections
    assert heads == ({"base_model.model.head.modules_to_save.default.weight",
                      "base_model.model.head.modules_to_save.default.bias"} if train_heads else set())
    n_trainable, n_total = count_parameters(adapted)
    share = n_trainable / n_total
    print(f"MiniLM LoRA r=8 q/v, train_heads={train_heads}: {n_trainable:,} of {n_total:,} trainable ({share:.3%})")
    assert share < 0.005  # 0.34 % with the head, 0.32 % without


def test_text_merge_then_unmerge_restores_base_weights(base_classifier: nn.Module) -> None:
    adapted = add_text_lora(copy.deepcopy(base_classifier), lora_settings())
    _randomise_b(adapted)
    query = adapted.base_model.model.encoder.encoder.layer[0].attention.self.query.base_layer
    base_query = base_classifier.encoder.encoder.layer[0].attention.self.query
    adapted.merge_adapter()
    assert not torch.allclose(query.weight, base_query.weight)  # the update went into the weight
    adapted.unmerge_adapter()
    torch.testing.assert_close(query.weight, base_query.weight, rtol=0, atol=1e-6)


def test_merged_text_model_matches_adapted_and_has_base_structure(base_classifier: nn.Module, captions: dict) -> None:
    adapted = add_text_lora(copy.deepcopy(base_classifier), lora_settings()).eval()
    _randomise_b(adapted)
    with torch.no_grad():
        expected = adapted(**captions)
        merged = merge_lora(adapted)
        got = merged(**captions)
        base = base_classifier(**captions)
    assert not torch.allclose(expected, base, atol=1e-3)  # the adapters changed the output...
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)  # ...and merging kept that change
    assert type(merged) is type(base_classifier)
    assert [(n, type(m)) for n, m in merged.named_modules()] == [(n, type(m)) for n, m in base_classifier.named_modules()]
    assert count_parameters(merged) == (0, count_parameters(base_classifier)[1])


def test_a_few_steps_lower_the_loss(base_classifier: nn.Module, captions: dict) -> None:
    adapted = add_text_lora(copy.deepcopy(base_classifier), lora_settings())
    losses = train_classifier(adapted, captions, torch.tensor(DIGITS), classifier_training(steps=4, batch_size=4))
    assert losses[-1] < 0.8 * losses[0]


def test_training_is_reproducible_with_a_fixed_seed(base_classifier: nn.Module, captions: dict) -> None:
    training = classifier_training(steps=2, batch_size=2, seed=3)
    runs = [train_classifier(build_lora_classifier(lora_settings(), N_CLASSES, seed=3), captions, torch.tensor(DIGITS), training)
            for _ in range(2)]
    assert runs[0] == runs[1]


# --- ImageBind trunks (nn.MultiheadAttention) -----------------------------------------------------


def test_imagebind_adapters_start_as_the_identity_and_only_they_and_heads_train() -> None:
    torch.manual_seed(0)
    base = ImageBind().eval()
    adapted = add_imagebind_lora(copy.deepcopy(base), lora_settings(r=4)).eval()
    inputs = _imagebind_inputs()
    with torch.no_grad():
        got, expected = adapted(inputs), base(inputs)
    for modality in inputs:
        torch.testing.assert_close(got[modality], expected[modality], rtol=0, atol=0)
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    # vision and audio: 2 blocks each, adapters on the packed in-projection and on out_proj
    assert sum(".lora_B." in n for n in trainable) == 8
    assert all(".lora_" in n or ".modality_heads." in n for n in trainable)
    assert {n.split(".")[3] for n in trainable if ".modality_heads." in n} == {"vision", "audio"}


# peft visits the MHA wrapper and then its out_proj, which the wrapper already (un)merged: harmless notes.
@pytest.mark.filterwarnings("ignore:All adapters are already merged:UserWarning")
@pytest.mark.filterwarnings("ignore:Already unmerged:UserWarning")
def test_imagebind_merge_unmerge_and_merged_outputs() -> None:
    torch.manual_seed(0)
    base = ImageBind().eval()
    adapted = add_imagebind_lora(copy.deepcopy(base), lora_settings(r=4, train_heads=False), modalities=["audio"]).eval()
    _randomise_b(adapted)
    attn = adapted.base_model.model.modality_trunks.audio.blocks[0].attn
    adapted.merge_adapter()
    assert not torch.allclose(attn.in_proj_weight, base.modality_trunks.audio.blocks[0].attn.in_proj_weight)
    adapted.unmerge_adapter()
    for name, weight in adapted.base_model.model.state_dict().items():
        if "lora_" not in name:
            torch.testing.assert_close(weight, base.state_dict()[name.replace(".base_layer", "")], rtol=0, atol=1e-6)

    inputs = _imagebind_inputs()
    with torch.no_grad():
        expected = adapted(inputs)
        merged = merge_lora(adapted)
        got = merged(inputs)
        unchanged = base(inputs)
    torch.testing.assert_close(got["audio"], expected["audio"], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got["audio"], unchanged["audio"], atol=1e-3)
    torch.testing.assert_close(got["vision"], unchanged["vision"], rtol=0, atol=0)  # not adapted
    # Same keys and shapes as the base, so a merged fine-tune of imagebind_huge loads as an official checkpoint.
    assert {k: v.shape for k, v in merged.state_dict().items()} == {k: v.shape for k, v in base.state_dict().items()}
    assert type(merged.modality_trunks.audio.blocks[0].attn) is nn.MultiheadAttention


def test_imagebind_lora_on_the_mlp_linears() -> None:
    adapted = add_imagebind_lora(ImageBind(ImageBindConfig()), lora_settings(target_modules=("mlp.fc1", "mlp.fc2")))
    adapted_names = {n.rsplit(".lora_", 1)[0] for n, _ in adapted.named_parameters() if ".lora_A." in n}
    assert len(adapted_names) == 8 and all(n.endswith(("mlp.fc1", "mlp.fc2")) for n in adapted_names)
