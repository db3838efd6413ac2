"""Chapter 7's head to head: every contender is its chapter's model (imported, not rebuilt),
the context layers are matched in size, and the layers are read the way each model defines
them (a causal model's vector never depends on later tokens, a blank is never read)."""

import ast
from pathlib import Path

import nbformat
import pytest
import torch

from ctxlib import bert, elmo, gpt, xlnet
from ctxlib import head_to_head as h2h
from ctxlib.batches import encode_words
from ctxlib.tokenizers import BPETokenizer

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("The cat sat on the mat. The dog sat on the log. A bird sang in the tree. "
        "The play was staged in the theatre. The team won the game. ") * 40


@pytest.fixture(scope="module")
def text():
    tok = BPETokenizer.train(TEXT, vocab_size=300, progress_bar=False)
    sentences = [s.strip() + "." for s in TEXT.split(".") if s.strip()]
    docs = [tok.encode_batch(sentences[i : i + 10]) for i in range(0, len(sentences), 10)]

    def stream(d):
        return torch.tensor([t for doc in d for s in doc for t in s])

    return h2h.SharedText(tok, docs[:-2], docs[-2:], stream(docs[:-2]), stream(docs[-2:]))


SMALL = h2h.Sizes(d_model=32, n_head=2, context=32, batch=4, valid_batches=1)


@pytest.fixture(scope="module")
def contenders(text):
    return {key: h2h.build(key, text, SMALL) for key in h2h.OBJECTIVES}


def test_each_contender_is_its_chapters_model(contenders):
    expected = {"bilm": elmo.BiLM, "causal": gpt.GPT, "mlm_nsp": bert.BertForPreTraining,
                "mlm": bert.BertForPreTraining, "plm": xlnet.XLNetLM}
    for key, contender in contenders.items():
        assert type(contender.model) is expected[key], key


def test_the_head_to_head_imports_its_models_and_builds_no_layer_of_its_own():
    """No module, layer or forward pass is defined in the library file or the notebook: the
    models, their batches and their losses come from the chapters' modules."""
    sources = {"ctxlib/head_to_head.py": (ROOT / "ctxlib" / "head_to_head.py").read_text()}
    nb = nbformat.read(ROOT / "notebooks" / "07_head_to_head.ipynb", as_version=4)
    sources["notebook"] = "\n".join(
        "\n".join(line for line in c.source.splitlines() if not line.startswith(("%", "!")))
        for c in nb.cells if c.cell_type == "code")
    for name, source in sources.items():
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b) for b in node.bases}
                assert not bases & {"nn.Module", "torch.nn.Module", "Module"}, (name, node.name)
            if isinstance(node, ast.FunctionDef):
                assert node.name != "forward", name
            if isinstance(node, ast.Call):
                called = ast.unparse(node.func)
                # a ModuleDict only holds a chapter's model and ctxlib's probe together
                assert called == "nn.ModuleDict" or not called.startswith(
                    ("nn.", "torch.nn.")), (name, called)
    imported = {alias.name for node in ast.walk(ast.parse(sources["ctxlib/head_to_head.py"]))
                if isinstance(node, ast.ImportFrom) and node.module == "ctxlib"
                for alias in node.names}
    assert {"bert", "elmo", "gpt", "xlnet"} <= imported
    assert "head_to_head as h2h" in sources["notebook"]


@pytest.mark.parametrize("width,heads", [(128, 4), (256, 8)])
def test_the_context_layers_hold_the_same_weights_within_ten_percent(text, width, heads):
    sizes = h2h.Sizes(d_model=width, n_head=heads)
    context = {key: h2h.parameter_counts(h2h.build(key, text, sizes))["context layers"]
               for key in h2h.OBJECTIVES}
    for key, count in context.items():
        assert abs(count / context["causal"] - 1) <= 0.10, (key, count, context["causal"])


def test_parameter_groups_add_up_and_count_a_tied_matrix_once(contenders):
    causal = contenders["causal"]
    counts = h2h.parameter_counts(causal)
    assert counts["output and heads"] == 0  # the output matrix is the token embedding
    assert counts["token encoder"] + counts["context layers"] == counts["total"]
    assert counts["total"] == sum(p.numel() for p in causal.model.parameters())


def test_every_objective_trains_one_step_and_reports_its_validation_loss(contenders, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("CTXLIB_CHECKPOINTS", str(tmp_path))
    for key, contender in contenders.items():
        history = h2h.pretrain(contender, steps=2, lr=1e-3, warmup_steps=1, name=f"t_{key}",
                               progress=False)
        assert torch.isfinite(torch.tensor(history.loss)).all(), key
        assert contender.valid_key in history.last_eval(), key
        assert h2h.tokens_per_step(contender, samples=2) > 0


def test_a_changed_setting_starts_a_new_run(text, tmp_path, monkeypatch):
    monkeypatch.setenv("CTXLIB_CHECKPOINTS", str(tmp_path))
    first = h2h.pretrain(h2h.build("causal", text, SMALL), steps=2, lr=1e-3, warmup_steps=1,
                         name="same", progress=False)
    wider = h2h.Sizes(d_model=64, n_head=2, context=32, batch=4, valid_batches=1)
    second = h2h.pretrain(h2h.build("causal", text, wider), steps=2, lr=1e-3, warmup_steps=1,
                          name="same", progress=False)
    assert first.run["id"] != second.run["id"]


def test_word_layers_are_the_mean_of_each_words_tokens(contenders, text):
    words = ["The", "cathedral", "sat"]
    for key, contender in contenders.items():
        ids, word_ids = encode_words(text.tokenizer, words)
        tokens = h2h.token_layers(contender, [ids])[0]  # (L+1, T, D)
        by_word = h2h.word_layers(contender, text.tokenizer, [words])[0]
        depth = SMALL.bilm_layers if key == "bilm" else SMALL.n_layer
        assert by_word.shape[:2] == (depth + 1, 3), key
        second = [t for t, w in enumerate(word_ids) if w == 1]
        assert torch.allclose(by_word[:, 1], tokens[:, second].mean(1), atol=1e-6), key


def test_padding_does_not_change_a_sentences_layers(contenders, text):
    short = text.tokenizer.encode("The cat sat")
    long = text.tokenizer.encode("The dog sat on the log in the tree")
    for key, contender in contenders.items():
        alone = h2h.token_layers(contender, [short])[0]
        batched = h2h.token_layers(contender, [short, long])[0]
        assert torch.allclose(alone, batched, atol=1e-5), key


def test_a_causal_layer_never_reads_later_tokens(contenders, text):
    a = text.tokenizer.encode("The cat sat on the mat")
    b = a[:3] + text.tokenizer.encode(" tree game log")
    first, second = h2h.token_layers(contenders["causal"], [a, b])
    assert torch.allclose(first[:, :3], second[:, :3], atol=1e-5)
    assert not torch.allclose(first[:, 3], second[:, 3])


def test_all_layers_end_with_the_usual_output():
    model = gpt.GPT(gpt.GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2,
                                  n_embd=16)).eval()
    ids = torch.randint(0, 50, (2, 7))
    layers = model(ids, all_layers=True).hidden_states
    assert len(layers) == 3 and torch.equal(layers[-1], model(ids).last_hidden_state)
    net = xlnet.XLNet(xlnet.XLNetConfig(vocab_size=50, n_layer=2, n_head=2, d_model=16)).eval()
    assert torch.equal(net(ids, all_layers=True).hidden_states[-1], net(ids).last_hidden_state)
    with pytest.raises(ValueError, match="target_mapping"):
        net(ids, target_mapping=torch.nn.functional.one_hot(torch.tensor([[1]] * 2), 7).float(),
            all_layers=True)


def test_a_blank_is_never_read(contenders, text):
    left, right = text.tokenizer.encode("The cat"), text.tokenizer.encode(" on the mat")
    for key in ("bilm", "mlm", "plm"):
        guesses = h2h.fill_in(contenders[key], left, right, k=5)
        probabilities = [p for _, p in guesses]
        assert len(guesses) == 5 and all(0 < p <= 1 for p in probabilities), key
        assert probabilities == sorted(probabilities, reverse=True), key
    # XLNet and the biLM put a placeholder in the blank: any token there gives the same guess
    contender = contenders["plm"]
    model = contender.model.eval()
    T = len(left) + 1 + len(right)
    mask = torch.zeros(1, T, T)
    mask[:, :, len(left)] = 1
    mapping = torch.nn.functional.one_hot(torch.tensor([[len(left)]]), T).float()
    outs = [model(torch.tensor([left + [blank] + right]), perm_mask=mask,
                  target_mapping=mapping).logits for blank in (5, 77)]
    assert torch.allclose(*outs, atol=1e-5)


def test_sentence_scores_follow_their_definitions(contenders, text):
    ids = text.tokenizer.encode("The cat sat on the mat.")
    causal = contenders["causal"]
    logits = causal.model.eval()(torch.tensor([ids])).logits[0].log_softmax(-1)
    by_hand = logits[:-1].gather(1, torch.tensor(ids[1:])[:, None]).mean().item()
    assert h2h.sentence_log_prob(causal, ids) == pytest.approx(by_hand, abs=1e-5)
    for key in h2h.OBJECTIVES:
        assert h2h.sentence_log_prob(contenders[key], ids) < 0, key
    with pytest.raises(ValueError, match="at least 2 tokens"):
        h2h.sentence_log_prob(causal, ids[:1])


def test_generation_continues_the_prompt_and_a_masked_lm_refuses(contenders, text):
    prompt = text.tokenizer.encode("The cat")
    for key in ("causal", "plm", "bilm"):
        out = h2h.generate(contenders[key], prompt, 4, torch.Generator().manual_seed(0), top_k=5)
        assert out[: len(prompt)] == prompt and len(out) == len(prompt) + 4, key
    with pytest.raises(ValueError, match="masked LM"):
        h2h.generate(contenders["mlm"], prompt, 4, torch.Generator())


def test_bad_input_is_refused_with_a_clear_error(contenders, text):
    with pytest.raises(ValueError, match="longer than the context"):
        h2h.token_layers(contenders["causal"], [[5] * 40])
    with pytest.raises(ValueError, match="empty"):
        h2h.token_layers(contenders["causal"], [[]])
    with pytest.raises(ValueError, match="unknown objective"):
        h2h.build("electra", text, SMALL)
    with pytest.raises(ValueError, match="left of the blank"):
        h2h.fill_in(contenders["causal"], [], [5, 6])


@pytest.mark.parametrize("key", sorted(h2h.OBJECTIVES))
def test_ids_outside_the_vocabulary_or_the_context_are_refused(contenders, key):
    contender = contenders[key]
    size, limit = h2h.vocab_size(contender), contender.sizes.context - 2
    for bad in (-1, size):
        with pytest.raises(ValueError, match=f"the id {bad}, outside the vocabulary of {size}"):
            h2h.sentence_log_prob(contender, [5, bad, 6])
        with pytest.raises(ValueError, match="outside the vocabulary"):
            h2h.fill_in(contender, [5, bad], [6])
        with pytest.raises(ValueError, match="outside the vocabulary"):
            h2h.token_layers(contender, [[5, bad]])
    with pytest.raises(ValueError, match=f"more than the {limit}"):
        h2h.sentence_log_prob(contender, [5] * (limit + 1))
    with pytest.raises(ValueError, match=f"more than the {limit}"):
        h2h.fill_in(contender, [5] * limit, [6])
    for k in (0, size + 1):
        with pytest.raises(ValueError, match="k must be between 1"):
            h2h.fill_in(contender, [5], [6], k=k)
    with pytest.raises(ValueError, match="no token lists"):
        h2h.token_layers(contender, [])
    if key not in ("mlm", "mlm_nsp"):
        for top_k in (0, size + 1):
            with pytest.raises(ValueError, match="top_k must be between 1"):
                h2h.generate(contender, [5, 6], 2, torch.Generator().manual_seed(0),
                             top_k=top_k)
        with pytest.raises(ValueError, match="outside the vocabulary"):
            h2h.generate(contender, [5, -1], 2, torch.Generator().manual_seed(0))


KINDS = {"bilm": "bilm", "causal": "gpt", "mlm_nsp": "bert_pretraining",
         "mlm": "bert_pretraining", "plm": "xlnet_lm"}


def saved_course(key, text, tmp_path, token_order=None):
    """A course checkpoint of ``key`` as scripts/pretrain.py writes one, from weights that
    are not the ones ``build`` starts from."""
    from dataclasses import asdict

    from ctxlib import pretrained

    trained = h2h.build(key, text, SMALL, seed=7, token_order=token_order)
    info = {"sizes": asdict(SMALL)}
    if token_order is not None:
        info["token_order"] = list(token_order)
    path = pretrained.save(tmp_path / f"{key}.pt", f"h2h_{key}", KINDS[key], trained.model,
                           text.tokenizer, info)
    return trained, pretrained.read(path)


def test_a_course_checkpoint_loads_as_the_contender_it_was_pretrained_as(text, tmp_path):
    words = [["The", "cat", "sat"], ["A", "bird", "sang", "in", "the", "tree"]]
    for key in h2h.OBJECTIVES:
        # the biLM's course checkpoint brings its own token order (here: reversed ranks)
        order = (list(reversed(h2h.build("bilm", text, SMALL).token_order()))
                 if key == "bilm" else None)
        trained, course = saved_course(key, text, tmp_path, order)
        loaded = h2h.from_course(key, course, text)
        assert type(loaded.model) is type(trained.model), key
        trained.model.load_state_dict(  # what half precision keeps of the weights
            {k: v.half().float() for k, v in trained.model.state_dict().items()})
        for ours, theirs in zip(h2h.word_layers(loaded, text.tokenizer, words),
                                h2h.word_layers(trained, text.tokenizer, words)):
            torch.testing.assert_close(ours, theirs, msg=key)
        if key == "bilm":
            assert loaded.token_order() == order


def test_a_course_checkpoint_of_another_model_or_vocabulary_is_refused(text, tmp_path):
    _, course = saved_course("causal", text, tmp_path)
    with pytest.raises(ValueError, match="not the course checkpoint of 'plm'"):
        h2h.from_course("plm", course, text)
    other = BPETokenizer.train(TEXT, vocab_size=290, progress_bar=False)
    with pytest.raises(ValueError, match="another vocabulary"):
        h2h.from_course("causal", course, text._replace(tokenizer=other))
    course.info["sizes"] = {**course.info["sizes"], "d_model": 64}
    with pytest.raises(ValueError, match="another shape"):
        h2h.from_course("causal", course, text)
    with pytest.raises(ValueError, match="each of the"):
        h2h.build("bilm", text, SMALL, token_order=[0, 0, 1])
    with pytest.raises(ValueError, match="only the biLM"):
        h2h.build("causal", text, SMALL, token_order=range(text.tokenizer.vocab_size))
    with pytest.raises(ValueError, match="either bpe_vocab"):
        h2h.shared_text(300, tokenizer=text.tokenizer)


def test_fine_tuning_learns_a_task_and_gives_the_contender_its_weights_back(text, contenders):
    sentences = [s.strip() + "." for s in TEXT.split(".") if s.strip()][:60]
    labels = [int("sat" in s) for s in sentences]  # a cue any model can learn to read
    for key in ("causal", "bilm", "mlm"):
        contender = contenders[key]
        before = {k: v.clone() for k, v in contender.model.state_dict().items()}
        arm = h2h.fine_tune_arm(contender, text.tokenizer, sentences[:40], labels[:40],
                                sentences[40:], labels[40:], 2, steps=30, batch=8,
                                lrs=(3e-3,))
        tuned = arm.fit(list(range(40)), 0, 3e-3)
        assert any(not torch.equal(tuned[f"model.{k}"], v) for k, v in before.items()), key
        accuracy = arm.score(tuned, None)
        majority = max(sum(labels[40:]), 20 - sum(labels[40:])) / 20
        assert accuracy > majority, (key, accuracy, majority)
        for k, v in contender.model.state_dict().items():  # its own weights are back
            assert torch.equal(v, before[k]), (key, k)
