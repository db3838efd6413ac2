"""The evaluation protocol: settings chosen on held-out training items, never on dev; seeds
that label different items; the 2-sd bar; results that round-trip through JSON."""

import json

import pytest
import torch

from ctxlib import protocol
from ctxlib.protocol import Arm, Curve, learning_curve


def recording_arm(calls, quality):
    """An arm whose dev score is quality[setting] plus a little seed noise; it records every
    call so that a test can see what was trained and scored on what."""

    def fit(rows, seed, setting):
        calls.append(("fit", tuple(rows), seed, setting))
        return setting, seed

    def score(predictor, rows):
        setting, seed = predictor
        calls.append(("score", None if rows is None else tuple(rows), seed, setting))
        return quality[setting] + 0.001 * seed

    return Arm(fit, score, grid=tuple(quality))


def test_the_setting_is_chosen_on_held_out_training_items_never_on_dev():
    calls = []
    curve = learning_curve("toy", {"a": recording_arm(calls, {0.1: 0.5, 0.2: 0.7})},
                           pool_size=100, sizes=[10, 40], held_out=20)
    assert curve.chosen == {"a": {10: 0.2, 40: 0.2}}
    held = [rows for kind, rows, _, _ in calls if kind == "score" and rows is not None]
    trained = [set(rows) for kind, rows, _, _ in calls if kind == "fit"]
    assert held and all(len(rows) == 20 for rows in held)
    assert all(not (set(held[0]) & rows) for rows in trained), "held-out items were trained on"
    dev_scores = [c for c in calls if c[0] == "score" and c[1] is None]
    assert [setting for *_, setting in dev_scores] == [0.2] * 6  # 2 sizes x 3 seeds, chosen only
    fits = [c for c in calls if c[0] == "fit"]
    assert len(fits) == 2 * (2 + 2)  # per size: both candidates, then seeds 1 and 2
    assert len(set(fits)) == len(fits), "a fit was made twice"
    assert curve.scores["a"][10] == pytest.approx([0.7, 0.701, 0.702])


def test_each_seed_labels_its_own_sample_and_oversized_curves_are_cut(capsys):
    calls = []
    curve = learning_curve("toy", {"a": recording_arm(calls, {None: 0.5})}, pool_size=60,
                           sizes=[5, 20, 100], held_out=10)
    assert curve.sizes == [5, 20] and "sizes [100] dropped" in capsys.readouterr().out
    samples = [rows for kind, rows, _, _ in calls if kind == "fit" and len(rows) == 5]
    assert len(samples) == 3 and len(set(samples)) == 3
    with pytest.raises(ValueError, match="nothing of a pool"):
        learning_curve("toy", {"a": recording_arm([], {None: 0.5})}, pool_size=10, sizes=[5],
                       held_out=10)


def test_gain_is_marked_on_both_sides_of_twice_the_seed_spread():
    curve = Curve("t", "accuracy", [10], [0, 1, 2],
                  {"pretrained": {10: [0.70, 0.72, 0.74]}, "scratch": {10: [0.60, 0.61, 0.62]}})
    difference, verdict = curve.gain("pretrained", "scratch", 10)
    assert difference == pytest.approx(0.11) and verdict == "better"
    # the same pair the other way round is worse beyond the bar, not merely "not better"
    difference, verdict = curve.gain("scratch", "pretrained", 10)
    assert difference == pytest.approx(-0.11) and verdict == "worse"
    noisy = Curve("t", "accuracy", [10], [0, 1, 2],
                  {"pretrained": {10: [0.60, 0.70, 0.80]}, "scratch": {10: [0.60, 0.61, 0.62]}})
    assert noisy.gain("pretrained", "scratch", 10)[1] == "within"
    assert noisy.gain("scratch", "pretrained", 10)[1] == "within"


def test_results_round_trip_and_go_where_they_should(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CTXLIB_BUDGET", "smoke")
    monkeypatch.delenv("CTXLIB_RESULTS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert protocol.results_path("09_x") == tmp_path / "results" / "smoke" / "09_x.json"
    monkeypatch.setenv("CTXLIB_RESULTS", str(tmp_path / "book"))
    curve = Curve("POS", "accuracy", [25, 100], [0, 1, 2],
                  {"pretrained": {25: [0.6, 0.7, 0.65], 100: [0.8, 0.8, 0.81]}},
                  {"pretrained": {25: 0.01, 100: 0.001}}, {"majority": 0.2})
    path = protocol.save_results("09_x", [curve], note="a test")
    assert path == tmp_path / "book" / "09_x.json"
    record = json.loads(path.read_text())
    assert record["budget"] == "smoke" and record["note"] == "a test"
    assert protocol.load_results(path) == [curve]
    protocol.print_table(curve)
    table = capsys.readouterr().out
    assert "0.650 ± 0.050" in table and "majority: 0.200" in table
    assert "numbers written to book/09_x.json" in table  # relative: no machine's paths shown


def test_a_table_compares_several_pairs_of_arms(capsys):
    curve = Curve("t", "accuracy", [10], [0, 1, 2],
                  {"a": {10: [0.80, 0.81, 0.82]}, "b": {10: [0.60, 0.61, 0.62]}})
    protocol.print_table(curve, compare=[("a", "b"), ("b", "a")])
    table = capsys.readouterr().out
    assert "+0.200  better" in table and "-0.200  worse" in table
    assert "gain 1: a minus b" in table and "gain 2: b minus a" in table
    protocol.print_table(curve, compare=[("a", "b"), ("b", "a")], by_arm=True)
    table = capsys.readouterr().out
    assert "+0.200 ▲" in table and "-0.200 ▼" in table and "worse beyond it" in table


def test_a_probe_arm_learns_separable_features_and_the_lookup_baseline_counts():
    g = torch.Generator().manual_seed(0)
    labels = [torch.randint(0, 3, (5,), generator=g) for _ in range(60)]
    centres = torch.randn(3, 8, generator=g) * 4
    features = [centres[y] + 0.1 * torch.randn(len(y), 8, generator=g) for y in labels]
    arm = protocol.probe_arm(features[:40], labels[:40], features[40:], labels[40:], 3)
    assert arm.grid == (1e-3, 1e-2, 1e-1)
    assert arm.score(arm.fit(list(range(20)), 0, 1e-2), None) == 1.0
    assert arm.score(arm.fit([0, 1], 0, 1e-2), list(range(30, 40))) > 0.5

    words = [["the", "dog"], ["the", "cat"], ["a", "dog"]]
    tags = [["DET", "NOUN"], ["DET", "NOUN"], ["DET", "VERB"]]
    lookup = protocol.most_frequent_arm(words, tags, [["the", "bird"]], [["DET", "NOUN"]])
    table = lookup.fit([0, 1, 2], 0, None)
    assert table[0]["dog"] == "NOUN" and table[1] == "DET"  # unseen words: the commonest tag
    assert lookup.score(table, None) == 0.5 and lookup.score(table, [2]) == 0.5


def test_learning_curves_plot_one_panel_per_task():
    import matplotlib

    matplotlib.use("Agg")
    from ctxlib.plots import plot_learning_curves

    curve = Curve("SST-2", "accuracy", [100, 300], [0, 1, 2],
                  {"pretrained": {100: [0.6, 0.62, 0.61], 300: [0.7, 0.7, 0.71]},
                   "naive Bayes": {100: [0.6, 0.6, 0.6], 300: [0.65, 0.65, 0.66]}},
                  lines={"majority class": 0.51})
    fig = plot_learning_curves([curve, curve], baselines=("naive Bayes",))
    visible = [ax for ax in fig.axes if ax.axison]
    assert len(visible) == 2 and visible[0].get_xscale() == "log"
    assert all(ax.get_legend() is None for ax in visible)  # no legend over the points
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "pretrained", "naive Bayes", "majority class"]


def test_a_setting_can_be_chosen_once_for_every_size():
    calls = []
    curve = learning_curve("toy", {"a": recording_arm(calls, {0.1: 0.9, 0.2: 0.7})},
                           pool_size=100, sizes=[10, 40], held_out=20, choose_at=40)
    assert curve.chosen == {"a": {10: 0.1, 40: 0.1}}
    choosing = [rows for kind, rows, _, _ in calls if kind == "fit" and len(calls) and
                rows is not None]
    # two candidates, then the two seeds the choice did not already fit with 0.1 at n=40
    assert sum(len(rows) == 40 for rows in choosing) == 2 + 2
    assert curve.scores["a"][40] == pytest.approx([0.9, 0.901, 0.902])  # seed 0's fit reused
    with pytest.raises(ValueError, match="choose_at=30"):
        learning_curve("toy", {"a": recording_arm([], {0.1: 0.9, 0.2: 0.7})}, pool_size=100,
                       sizes=[10, 40], held_out=20, choose_at=30)


def test_arms_can_be_scored_by_a_metric_of_whole_items():
    # two items of two positions each; the metric scores an item right only if all of it is
    features = [torch.tensor([[2.0, -2.0], [-3.0, 3.0], [4.0, -4.0]]),
                torch.tensor([[-2.0, 2.0], [3.0, -3.0]])]
    labels = [torch.tensor([1, 0, 1]), torch.tensor([0, 1])]

    def whole_items(predicted, gold):
        return sum(bool((p == g).all()) for p, g in zip(predicted, gold)) / len(gold)

    arm = protocol.probe_arm(features, labels, features, labels, 2, l2s=(1e-3,),
                             metric=whole_items)
    assert arm.score(arm.fit([0, 1], 0, 1e-3), None) == 1.0
    assert arm.score(arm.fit([0, 1], 0, 1e3), None) < 1.0  # all one label: no item is whole
    lookup = protocol.most_frequent_arm([["a", "b"], ["a", "a"]], [["x", "y"], ["x", "x"]],
                                        [["a", "b"]], [["x", "x"]],
                                        metric=lambda p, g: sum(map(list.__eq__, p, g)) / len(g))
    assert lookup.score(lookup.fit([0, 1], 0, None), None) == 0.0  # "b" is tagged y


def test_curves_of_separate_runs_merge_and_print_by_arm(capsys):
    def curve(arm, value):
        return Curve("t", "accuracy", [10, 20], [0, 1, 2],
                     {arm: {10: [value] * 3, 20: [value + 0.1] * 3}}, {arm: {10: 1, 20: 1}})

    merged = protocol.merge_curves([curve("a", 0.5), curve("a, random init", 0.3)])
    assert set(merged.scores) == {"a", "a, random init"}
    protocol.print_table(merged, compare=("a", "a, random init"), by_arm=True)
    shown = capsys.readouterr().out
    assert "0.600 ± 0.000" in shown and "a: gain over random init" in shown
    with pytest.raises(ValueError, match="same task"):
        protocol.merge_curves([curve("a", 0.5), Curve("u", "accuracy", [10], [0], {})])


def test_a_code_path_test_run_fits_each_arm_once(monkeypatch):
    monkeypatch.setenv("CTXLIB_MAX_STEPS", "1")
    fits = []

    def fit(rows, seed, setting):
        fits.append(setting)
        return len(rows)

    arm = Arm(fit=fit, score=lambda fitted, rows: fitted, grid=(0.1, 0.2, 0.3))
    curve = learning_curve("t", {"a": arm}, 40, [5, 100], seeds=(0, 1, 2), held_out=200,
                           choose_at=100)
    # one seed, one size, the first setting, and a held-out slice that leaves items to label
    assert curve.seeds == [0] and curve.sizes == [5] and fits == [0.1]
    assert curve.chosen == {"a": {5: 0.1}} and curve.scores == {"a": {5: [5.0]}}
    curve = learning_curve("t", {"a": arm}, 40, [100], held_out=200)
    assert curve.sizes == [30]  # what the pool leaves after its held-out slice


def test_the_gpu_checks_timing_run_fits_the_whole_design(monkeypatch):
    """The GPU check caps the loops but must time every fit the real run makes."""
    monkeypatch.setenv("CTXLIB_MAX_STEPS", "1")
    monkeypatch.setenv("CTXLIB_TIMING_RUN", "1")
    fits = []

    def fit(rows, seed, setting):
        fits.append((len(rows), seed, setting))
        return len(rows)

    arm = Arm(fit=fit, score=lambda fitted, rows: fitted, grid=(0.1, 0.2, 0.3))
    curve = learning_curve("t", {"a": arm}, 400, [5, 100], seeds=(0, 1, 2), held_out=200,
                           choose_at=100)
    assert curve.seeds == [0, 1, 2] and curve.sizes == [5, 100]
    # three settings tried at 100 (the first seed's fit reused), then 2 sizes x 3 seeds
    assert len(fits) == 3 + 2 * 3 - 1


def constant_arm(score):
    return Arm(lambda rows, seed, setting: None, lambda predictor, rows: score)


def test_a_design_that_cannot_be_read_right_is_refused():
    arm = {"a": constant_arm(0.5)}
    with pytest.raises(ValueError, match=r"sizes \[10\] are given twice"):
        learning_curve("toy", arm, pool_size=100, sizes=[10, 10], held_out=20)
    with pytest.raises(ValueError, match=r"seeds \[1\] are given twice"):
        learning_curve("toy", arm, pool_size=100, sizes=[10], seeds=[1, 1], held_out=20)
    for empty in ({"arms": {}}, {"sizes": []}, {"seeds": []}):
        kwargs = {"arms": arm, "pool_size": 100, "sizes": [10], "held_out": 20, **empty}
        with pytest.raises(ValueError, match="needs"):
            learning_curve("toy", **kwargs)
    with pytest.raises(ValueError, match="held_out must be 0 or more"):
        protocol.split_pool(100, -10)
    with pytest.raises(ValueError, match="leaves nothing"):
        protocol.split_pool(100, 100)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_score_that_is_not_a_number_is_an_error_naming_arm_size_and_seed(bad):
    with pytest.raises(ValueError, match=r"arm 'broken' scored (nan|inf) on the dev set, with "
                                         r"10 labels and seed 0"):
        learning_curve("toy", {"broken": constant_arm(bad)}, pool_size=100, sizes=[10],
                       held_out=20)
    # on the held-out slice, a NaN setting is never chosen: it is an error there too
    quality = {0.1: bad, 0.2: 0.7}
    with pytest.raises(ValueError, match="on the held-out slice with setting 0.1"):
        learning_curve("toy", {"a": recording_arm([], quality)}, pool_size=100, sizes=[10],
                       held_out=20)


def test_one_seed_never_passes_the_bar():
    curve = Curve("toy", "accuracy", [10], [0], {"a": {10: [0.9]}, "b": {10: [0.5]}})
    assert curve.gain("a", "b", 10)[1] == "within"
    assert curve.gain("b", "a", 10)[1] == "within"


def test_results_files_hold_standard_json_and_every_curve(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXLIB_RESULTS", str(tmp_path))
    curve = Curve("toy", "accuracy", [10], [0, 1], {"a": {10: [0.5, 0.6]}})
    with pytest.raises(ValueError, match="two curves of the task"):
        protocol.save_results("twice", [curve, curve])
    nan_line = Curve("toy", "accuracy", [10], [0, 1], {"a": {10: [0.5, 0.6]}},
                     lines={"majority": float("nan")})
    with pytest.raises(ValueError, match="NaN or infinite"):
        protocol.save_results("nan", [nan_line])
    assert not (tmp_path / "nan.json").exists()
    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"tasks": {"toy": {"scores": ')
    with pytest.raises(ValueError, match="damaged.json is not a results file"):
        protocol.load_results(damaged)
    damaged.write_text('{"chapter": "x"}')
    with pytest.raises(ValueError, match="damaged.json is not a results file"):
        protocol.load_results(damaged)


def test_a_table_is_html_in_a_notebook_and_aligned_text_elsewhere(capsys):
    """In a notebook a table is HTML, which wraps to the page instead of scrolling sideways;
    outside one (scripts, tests) the same cells print as aligned text."""
    table = protocol.Table("scores <dev>", ["arm", "25", "1,600"],
                           [["a & b", "0.720 ± 0.020", "0.810 ± 0.010"]], ["note: x"],
                           left_columns=1)
    html = table.html()
    assert html.startswith("<table") and "<caption>scores &lt;dev&gt;</caption>" in html
    assert '<td style="text-align:left">a &amp; b</td>' in html
    assert '<td style="text-align:right">0.720 ± 0.020</td>' in html and "note: x" in html
    table.show()  # no notebook kernel here: text
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "scores <dev>" and lines[-1] == "note: x"
    assert lines[2].startswith("a & b ") and lines[1].endswith("1,600")
    assert len(lines[1]) == len(lines[2])  # the columns line up
