"""Published checkpoints load into ctxlib's classes by path and give the reference's outputs.

No test downloads anything: each builds a small random Hugging Face model and a tokenizer of
the published kind (byte-level BPE, WordPiece, a SentencePiece-style unigram), saves both to a
folder as the Hub stores them, loads the folder with ``ctxlib.published.load``, and matches
logits, hidden states and generated ids with the Hugging Face model to float32 tolerance.
"""

import pytest
import torch
import transformers

from ctxlib import published

TEXTS = ["The game was released in Japan in 2011 and in Europe a year later .",
         "It is a sequel to the first game , and the third in the series ."] * 20
SENTENCE = "The game was released in Europe ."


def _bpe_tokenizer():
    return published.stand_in_tokenizer("gpt2", TEXTS)


def _wordpiece_tokenizer():
    return published.stand_in_tokenizer("bert", TEXTS)


def _unigram_tokenizer():
    return published.stand_in_tokenizer("xlnet", TEXTS)


def _save(folder, model, tokenizer):
    folder.mkdir(exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def gpt2_folder(tmp_path):
    tokenizer = _bpe_tokenizer()
    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=48, n_layer=2, n_head=4,
        bos_token_id=eos, eos_token_id=eos))
    return _save(tmp_path / "gpt2", model.eval(), tokenizer), model.eval()


def test_gpt2_from_a_folder_equals_the_reference(gpt2_folder):
    folder, reference = gpt2_folder
    gpt2 = published.load(folder)
    assert gpt2.model_type == "gpt2" and not gpt2.model.training
    ids = torch.tensor([gpt2.tokenizer.encode(SENTENCE)])
    assert gpt2.tokenizer.decode(ids[0]) == SENTENCE
    with torch.no_grad():
        expected = reference(ids, output_hidden_states=True)
        torch.testing.assert_close(gpt2.model(ids).logits, expected.logits, atol=1e-5, rtol=1e-4)
        layers = gpt2.model(ids, all_layers=True).hidden_states
        assert len(layers) == len(expected.hidden_states) == 3
        for ours, theirs in zip(layers, expected.hidden_states):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    ours = gpt2.model.generate(ids, max_new_tokens=12, temperature=0)
    theirs = reference.generate(ids, max_new_tokens=12, do_sample=False,
                                pad_token_id=gpt2.tokenizer.eos_token_id)
    assert torch.equal(ours, theirs)


def test_bert_from_a_folder_equals_the_reference(tmp_path):
    tokenizer = _wordpiece_tokenizer()
    torch.manual_seed(0)
    reference = transformers.BertForPreTraining(transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=96, max_position_embeddings=64)).eval()
    bert = published.load(_save(tmp_path / "bert", reference, tokenizer))
    batch = bert.tokenizer(SENTENCE, "It is a sequel .", return_tensors="pt")
    assert bert.tokenizer.decode(batch["input_ids"][0]).startswith("[CLS] the game was")
    with torch.no_grad():
        expected = reference(**batch)
        ours = bert.model(batch["input_ids"], batch["token_type_ids"],
                          batch["attention_mask"])
    torch.testing.assert_close(ours.logits, expected.prediction_logits, atol=1e-5,
                               rtol=1e-4)
    torch.testing.assert_close(ours.nsp_logits, expected.seq_relationship_logits, atol=1e-5,
                               rtol=1e-4)


@pytest.mark.parametrize("head", ["lm", "classification"])
def test_xlnet_from_a_folder_equals_the_reference(tmp_path, head):
    tokenizer = _unigram_tokenizer()
    config = transformers.XLNetConfig(vocab_size=len(tokenizer), d_model=48, n_layer=2,
                                      n_head=4, d_inner=96, num_labels=3)
    torch.manual_seed(0)
    reference = (transformers.XLNetLMHeadModel(config) if head == "lm" else
                 transformers.XLNetForSequenceClassification(config)).eval()
    xlnet = published.load(_save(tmp_path / "xlnet", reference, tokenizer), head=head,
                           num_labels=3)
    ids = torch.tensor([xlnet.tokenizer.encode(SENTENCE)])  # ends in <sep> <cls>
    assert xlnet.tokenizer.convert_ids_to_tokens(ids[0, -1].item()) == "<cls>"
    with torch.no_grad():
        expected = reference(ids).logits
        ours = xlnet.model(ids).logits
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


def test_a_name_not_in_the_cache_says_the_network_is_needed_and_what_to_do(tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache" / "hub"))
    with pytest.raises(published.NeedsTheNetwork, match="huggingface-cli download gpt2"):
        published.load("gpt2", offline=True)


def test_a_folder_without_a_checkpoint_or_of_another_model_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        published.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no folder"):
        published.load(tmp_path / "missing")
    torch.manual_seed(0)
    other = transformers.DistilBertModel(transformers.DistilBertConfig(
        vocab_size=50, dim=32, n_layers=1, n_heads=2, hidden_dim=64))
    other.save_pretrained(tmp_path / "distilbert")
    with pytest.raises(ValueError, match="'distilbert' model; the course builds"):
        published.load(tmp_path / "distilbert")
    tokenizer = _bpe_tokenizer()
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(tokenizer), n_positions=32, n_embd=32, n_layer=1, n_head=2,
        bos_token_id=0, eos_token_id=0))
    with pytest.raises(ValueError, match="not 'classification'"):
        published.load(_save(tmp_path / "gpt2", gpt2, tokenizer), head="classification")


@pytest.mark.parametrize("name", sorted(published.STAND_IN_CONFIGS))
def test_a_stand_in_loads_like_the_published_checkpoint_and_matches_its_reference(
        tmp_path, name):
    folder = published.save_stand_in(name, tmp_path / name, TEXTS)
    loaded = published.load(folder, keep_reference=True)
    assert loaded.model_type == published.STAND_IN_CONFIGS[name][0]
    ids = torch.tensor([loaded.tokenizer.encode(SENTENCE)])
    with torch.no_grad():
        ours, theirs = loaded.model(ids), loaded.reference(ids)
    ours = ours.logits
    theirs = (theirs.prediction_logits if hasattr(theirs, "prediction_logits")
              else theirs.logits)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="no stand-in tokenizer"):
        published.stand_in_tokenizer("t5", TEXTS)


@pytest.mark.parametrize("make", [_bpe_tokenizer, _wordpiece_tokenizer])
def test_encode_words_reads_a_published_tokenizer_without_its_special_tokens(make):
    from ctxlib.batches import encode_words

    tokenizer = make()
    words = SENTENCE.split()
    ids, owner = encode_words(tokenizer, words)
    assert ids == tokenizer.encode(SENTENCE, add_special_tokens=False)  # no [CLS] / [SEP]
    assert owner == sorted(owner) and set(owner) == set(range(len(words)))
    for k, word in enumerate(words):  # each word's tokens spell it again
        pieces = [i for i, o in zip(ids, owner) if o == k]
        assert tokenizer.decode(pieces).strip().lower() == word.lower()
