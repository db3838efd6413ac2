"""The simulated accelerator (ctxlib.devicecheck) fails where a GPU would, and the library's
functions that take a model and inputs put the inputs on the model's device."""

import pytest
import torch

from ctxlib import devicecheck
from ctxlib.gpt import GPT, GPTConfig
from ctxlib.runtime import device_of, to_device
from ctxlib.train import TrainConfig, train

TINY = GPTConfig(vocab_size=40, block_size=16, n_layer=1, n_head=2, n_embd=16)


def test_a_host_tensor_fed_to_a_model_on_the_device_fails_as_on_a_gpu():
    with devicecheck.simulated_accelerator() as device:
        model = GPT(TINY).to(device)
        ids = torch.randint(0, 40, (2, 8))
        assert device_of(model) == device
        with pytest.raises(RuntimeError, match="same device"):
            model(ids)
        logits = model(ids.to(device)).logits  # moved: fine
        assert logits.device == device and ids.device == torch.device("cpu")
        with pytest.raises(RuntimeError, match="cpu"):
            logits.detach().numpy()
        assert logits.detach().cpu().numpy().shape == (2, 8, 40)
        with pytest.raises(RuntimeError, match="same device"):
            logits + torch.ones(40)  # a host tensor (not a scalar) joins a device one
        logits + torch.tensor(1.0)  # a host scalar may, as on CUDA
        with pytest.raises(RuntimeError, match="generator"):
            torch.multinomial(logits[0].softmax(-1), 1, generator=torch.Generator())
    assert GPT(TINY)(torch.randint(0, 40, (1, 4))).logits.shape == (1, 4, 40)  # back to normal


def test_a_move_with_copy_as_transformers_writes_it_lands_on_the_device():
    with devicecheck.simulated_accelerator() as device:
        moved = torch.ones(3).to(device, copy=True)
        assert moved.device == device
        assert moved.to("cpu", copy=True).device == torch.device("cpu")


def test_train_moves_nested_batches_to_the_model_and_generation_takes_a_host_prompt():
    seen = []

    def batches(generator):
        ids = torch.randint(0, 40, (4, 9), generator=generator)
        return {"inputs": ids[:, :-1], "rest": [ids[:, 1:], (ids[:, 1:],)]}

    def loss_fn(model, batch):
        seen.append(devicecheck.on_device(batch["rest"][1][0]))
        return model(batch["inputs"], targets=batch["rest"][0]).loss

    with devicecheck.simulated_accelerator() as device:
        model = GPT(TINY)
        train(model, batches, loss_fn, TrainConfig(steps=2, lr=1e-3, progress=False),
              device=device)
        prompt = torch.tensor([[1, 2, 3]])
        sampled = model.generate(prompt, 4, temperature=1.0,
                                 generator=torch.Generator().manual_seed(0))
        assert not devicecheck.on_device(sampled)  # back where the prompt was
    assert seen == [True, True]
    on_cpu = model.cpu().generate(prompt, 4, temperature=1.0,
                                  generator=torch.Generator().manual_seed(0))
    assert torch.equal(sampled, on_cpu)  # the same seed samples the same tokens anywhere


def test_to_device_keeps_the_structure():
    batch = {"a": torch.zeros(2), "b": [torch.ones(1), (torch.ones(1), 3)], "c": "text"}
    moved = to_device(batch, "cpu")
    assert moved.keys() == batch.keys() and moved["c"] == "text" and moved["b"][1][1] == 3
    assert isinstance(moved["b"], list) and isinstance(moved["b"][1], tuple)


def test_skipgram_trains_on_the_device_and_hands_back_vectors_on_the_cpu():
    from ctxlib.static import SkipGramConfig, train_skipgram

    text = "the cat sat on the mat . the dog sat on the log .\n" * 20
    config = SkipGramConfig(dim=8, epochs=1, min_count=1, batch_size=64, subsample_threshold=1.0)
    with devicecheck.simulated_accelerator() as device:
        _, model, losses = train_skipgram(text, config, progress_bar=False, device=device)
        assert device_of(model) == device and losses
        assert not devicecheck.on_device(model.vectors())
    _, _, cpu_losses = train_skipgram(text, config, progress_bar=False, device="cpu")
    assert losses == cpu_losses  # the pairs and negatives are drawn the same way anywhere
