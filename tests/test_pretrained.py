"""Course checkpoints: written and read back exactly, found by name, verified, and the shipped
ones the model and sizes that chapter 4 says they are."""

import sys
from pathlib import Path

import pytest
import torch

from ctxlib import pretrained
from ctxlib.data import ChecksumMismatch, RemoteFile, sha256_of
from ctxlib.gpt import GPT, GPTConfig
from ctxlib.tokenizers import BPETokenizer
from ctxlib.train import History

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from pretrain import H2H_LRS, RECIPES, Run, export_course_checkpoint, mean_tokens_per_step

INFO_FIELDS = {"data", "command", "steps", "batch", "block_size", "tokens_seen", "lr",
               "warmup_steps", "wall_seconds", "machine", "torch", "valid_steps", "valid_loss",
               "valid_loss_half_precision"}  # and, since the BERT checkpoint, "valid_loss_is"


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    bpe = BPETokenizer.train("the cat sat on the mat. the dog sat on the log. " * 20, 270)
    config = GPTConfig(vocab_size=bpe.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)
    return GPT(config), bpe


def test_export_writes_a_file_that_reads_back_as_the_same_model_in_half_precision(tiny, tmp_path):
    model, bpe = tiny
    history = History(steps=[1, 2, 3], seconds=[0.5, 0.5, 0.5], eval_steps=[3],
                      evals={"valid_loss": [4.25]}, run={"device": "cpu"})

    def evaluate(m):
        ids = torch.tensor([bpe.encode(" the cat sat on the mat.")])
        return {"valid_loss": m(ids[:, :-1], targets=ids[:, 1:]).loss.item()}

    path = export_course_checkpoint(Run(model, bpe, history, evaluate, None), "smoke", "gpt",
                                    tmp_path)
    loaded = pretrained.read(path)
    assert set(loaded.info) == INFO_FIELDS | {"valid_loss_is"}
    assert loaded.info["steps"] == 3 and loaded.info["wall_seconds"] == 1.5
    assert loaded.tokenizer.merges == bpe.merges
    assert loaded.model.config == model.config and not loaded.model.training
    for name, weight in model.state_dict().items():  # equal up to half precision's rounding
        torch.testing.assert_close(loaded.model.state_dict()[name], weight.half().float())
    # the stored half-precision loss is the loss of the model that was read back
    assert loaded.info["valid_loss_half_precision"] == pytest.approx(
        evaluate(loaded.model)["valid_loss"], abs=1e-4)
    assert "course checkpoint 'gpt'" in loaded.describe()


def test_a_file_that_is_not_a_course_checkpoint_is_refused(tmp_path):
    torch.save({"state": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a course checkpoint"):
        pretrained.read(tmp_path / "other.pt")


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="known: gpt"):
        pretrained.find("gtp")


def test_a_damaged_copy_is_never_loaded(tiny, tmp_path, monkeypatch):
    model, bpe = tiny
    good = pretrained.save(tmp_path / "good" / "pretrained" / "x.pt", "x", "gpt", model, bpe,
                           {})
    entry = RemoteFile("pretrained/x.pt", "https://example.invalid/x.pt", sha256_of(good),
                       sha256_of(good), good.stat().st_size)
    monkeypatch.setitem(pretrained.COURSE_CHECKPOINTS, "x", entry)
    monkeypatch.setattr(pretrained, "REPOSITORY_ROOT", tmp_path / "good")
    assert pretrained.find("x") == good
    good.write_bytes(good.read_bytes()[:-100])  # a cut copy
    with pytest.raises(ChecksumMismatch, match="damaged"):
        pretrained.find("x")


@pytest.mark.parametrize("name", sorted(pretrained.COURSE_CHECKPOINTS))
def test_the_shipped_checkpoint_is_the_chapters_model_pretrained_longer(name):
    recipe = RECIPES[name]
    entry = pretrained.COURSE_CHECKPOINTS[name]
    assert entry.stored_path == f"pretrained/{recipe.course_file}"
    assert entry.url.endswith(entry.stored_path) and "/main/" not in entry.url  # pinned
    path = pretrained.find(name)  # verified against its sha256
    assert path.stat().st_size == entry.size < 10_000_000
    loaded = pretrained.load(name)
    cpu = recipe.budgets["cpu"]
    if recipe.chapter == "07_head_to_head":  # a contender: the shared sizes, its own rate
        key = name.removeprefix("h2h_")
        assert {k: loaded.info["sizes"][k] for k in cpu["sizes"]} == cpu["sizes"]
        width = {"bilm": "dim", "causal": "n_embd"}.get(key, "d_model")
        assert getattr(loaded.model.config, width) == cpu["sizes"]["d_model"]
        assert loaded.info["lr"] == H2H_LRS[key]
        assert ("token_order" in loaded.info) == (key == "bilm")
    else:
        config = {k: getattr(loaded.model.config, k) for k in cpu[recipe.model_key]}
        assert config == cpu[recipe.model_key]
        train = cpu[recipe.train_key]
        assert loaded.info["lr"] == train["lr"]
        assert loaded.info["batch"] == cpu[recipe.batch_key]
    if "bpe_vocab" in cpu:
        assert loaded.tokenizer.vocab_size == cpu["bpe_vocab"]
    else:  # ELMo predicts WikiText-2's words
        assert len(loaded.tokenizer) == loaded.model.config.vocab_size
    assert set(loaded.info) >= INFO_FIELDS and loaded.info["steps"] == recipe.course_steps
    curve = loaded.info["valid_loss"]
    assert curve[-1] < curve[0] and abs(loaded.info["valid_loss_half_precision"] - curve[-1]) < 0.01


def test_a_bert_checkpoint_reads_back_with_its_heads_and_its_nsp_curve(tmp_path):
    from ctxlib.bert import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    bpe = BPETokenizer.train("the cat sat on the mat. the dog sat on the log. " * 20, 270)
    model = BertForPreTraining(BertConfig(vocab_size=bpe.vocab_size, n_layer=1, n_head=2,
                                          d_model=16, max_position=32))
    history = History(steps=[1, 2], seconds=[0.5, 0.5], eval_steps=[2],
                      evals={"mlm_loss": [5.5], "nsp_accuracy": [0.5]}, run={"device": "cpu"})
    ids = torch.tensor([bpe.encode("the cat sat on the mat.")])

    def evaluate(m):
        return {"mlm_loss": m(ids).logits.float().logsumexp(-1).mean().item()}

    path = export_course_checkpoint(Run(model, bpe, history, evaluate, None), "smoke", "bert",
                                    tmp_path, tokens_per_step=2 * 20.5)
    loaded = pretrained.read(path)
    assert isinstance(loaded.model, BertForPreTraining) and path.name == RECIPES["bert"].course_file
    assert loaded.info["valid_loss"] == [5.5] and loaded.info["valid_nsp_accuracy"] == [0.5]
    assert loaded.info["tokens_seen"] == round(2 * 2 * 20.5)
    assert "masked-LM loss 5.500" in loaded.describe()
    for name, weight in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], weight.half().float())


def test_an_elmo_checkpoint_reads_back_with_its_word_vocabulary(tmp_path):
    from ctxlib.elmo import BiLM, ELMoConfig
    from ctxlib.static import Vocab

    torch.manual_seed(0)
    vocab = Vocab.from_text("the cat sat on the mat and the dog sat on the log", min_count=1)
    model = BiLM(ELMoConfig(vocab_size=len(vocab), dim=8, hidden=8, max_chars=8,
                            filters=((1, 4), (2, 4)), cutoffs=(4,)))
    history = History(steps=[1, 2], seconds=[0.5, 0.5], eval_steps=[2],
                      evals={"valid_loss": [2.0], "forward_ppl": [7.0]}, run={"device": "cpu"})

    def evaluate(m):
        return {"valid_loss": sum(p.float().abs().sum() for p in m.parameters()).item()}

    path = export_course_checkpoint(Run(model, vocab, history, evaluate, None), "smoke", "elmo",
                                    tmp_path)
    loaded = pretrained.read(path)
    assert isinstance(loaded.model, BiLM) and loaded.model.config == model.config
    assert loaded.tokenizer.itos == vocab.itos  # the same words in the same order
    assert torch.equal(loaded.tokenizer.counts, vocab.counts)
    assert loaded.info["valid_forward_ppl"] == [7.0] and "biLM loss" in loaded.describe()


def test_a_head_to_head_run_exports_a_checkpoint_that_loads_as_its_contender(tmp_path,
                                                                            monkeypatch):
    """The whole path, at the smoke budget: the script's pretraining, its export (with the
    sizes and the biLM's token order) and the chapter's loader give back the model that was
    trained, with the validation loss the file records."""
    from ctxlib import head_to_head as h2h

    monkeypatch.setenv("CTXLIB_CHECKPOINTS", str(tmp_path))
    recipe = RECIPES["h2h_bilm"]
    run = recipe.pretrain("smoke", 2)
    path = export_course_checkpoint(run, "smoke", "h2h_bilm", tmp_path,
                                    tokens_per_step=mean_tokens_per_step(recipe, run))
    course = pretrained.read(path)
    assert course.info["sizes"]["d_model"] == 32 and course.info["lr"] == H2H_LRS["bilm"]
    assert course.info["tokens_seen"] == 2 * 8 * 32  # 2 steps of 8 windows of 32 tokens
    text = h2h.shared_text(tokenizer=course.tokenizer, articles=40)
    contender = h2h.from_course("bilm", course, text)
    assert contender.evaluate(contender.model)["valid_loss"] == pytest.approx(
        course.info["valid_loss_half_precision"], abs=1e-4)


def flip_a_weight_byte(path):
    """The file with one byte of its last tensor's data changed (the pickle still loads)."""
    raw = bytearray(path.read_bytes())
    blob = torch.load(path, weights_only=True)
    last = list(blob["weights"].values())[-1].numpy().tobytes()
    at = bytes(raw).rfind(last[:16])  # where that tensor's bytes begin in the zip archive
    assert at > 0
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_read_never_loads_a_damaged_empty_or_foreign_file(tiny, tmp_path):
    model, bpe = tiny
    path = pretrained.save(tmp_path / "x.pt", "gpt", "gpt", model, bpe, {"steps": 1})
    assert pretrained.read(path, "gpt").name == "gpt"
    with pytest.raises(ValueError, match="holds the course checkpoint 'gpt', not 'bert'"):
        pretrained.read(path, "bert")
    flip_a_weight_byte(path)
    with pytest.raises(ValueError, match="x.pt is damaged"):
        pretrained.read(path)
    for content in (b"", b"a text file\n"):
        (tmp_path / "bad.pt").write_bytes(content)
        with pytest.raises(ValueError, match="bad.pt cannot be read as a course checkpoint"):
            pretrained.read(tmp_path / "bad.pt")


def test_a_published_checkpoint_is_verified_against_its_published_bytes(tmp_path):
    path = pretrained.find("gpt")
    copy = tmp_path / "gpt_wikitext2.pt"
    copy.write_bytes(path.read_bytes())
    assert pretrained.read(copy, "gpt").name == "gpt"  # saved before files carried a checksum
    flip_a_weight_byte(copy)
    with pytest.raises(ValueError, match="not the published course checkpoint 'gpt'"):
        pretrained.read(copy)
