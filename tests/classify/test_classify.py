"""The classify stage: heuristic classifier on rendered frames of known condition, the CLIP
backend end to end with a tiny random CLIP, frame_conditions, and the errors users see."""
from __future__ import annotations

import json

import numpy as np
import pytest

from synthdrive import labels
from synthdrive.classify import FACTORS, cross_validate, evaluate, make_classifier
from synthdrive.classify.heuristic import HeuristicClassifier
from synthdrive.conditions import Condition, all_conditions, frame_conditions, resolve
from synthdrive.errors import UserError
from synthdrive.render import render_frame
from tests.condition_helpers import build_tiny_clip, write_rendered_dataset
from tests.helpers import assert_factory_names_params

SIZE = (64, 128)
SKY = labels.get("procedural").index("sky")


def rendered(seeds, size=SIZE):
    """(images, procedural labels, conditions): every condition once per seed."""
    frames = [(render_frame(s, c, *size), c) for s in seeds for c in all_conditions()]
    return [f.image for f, _ in frames], [f.label for f, _ in frames], [c for _, c in frames]


def truths(conditions):
    return {f: [getattr(c, f) for c in conditions] for f in FACTORS}


@pytest.fixture(scope="module")
def frames():
    return rendered(range(4)), rendered(range(1000, 1003))


def test_heuristic_tells_conditions_apart_on_unseen_rendered_frames(frames):
    (tr_images, tr_labels, tr_conds), (te_images, te_labels, te_conds) = frames
    clf = HeuristicClassifier(sky_id=SKY)
    clf.fit_features(clf.features(tr_images, tr_labels), truths(tr_conds))
    result = evaluate([c._asdict() for c in te_conds], 
                      clf.predict_features(clf.features(te_images, te_labels)))
    assert result["time_of_day"]["accuracy"] >= 0.9, result["time_of_day"]
    assert result["weather"]["accuracy"] >= 0.75, result["weather"]
    assert np.array(result["weather"]["confusion"]).sum() == len(te_conds)


def test_heuristic_fit_on_shuffled_truth_is_near_chance(frames):
    """The accuracy above comes from the images, not from the fitting procedure."""
    (tr_images, tr_labels, tr_conds), (te_images, te_labels, te_conds) = frames
    shuffled = [tr_conds[i] for i in np.random.default_rng(0).permutation(len(tr_conds))]
    clf = HeuristicClassifier(sky_id=SKY)
    clf.fit_features(clf.features(tr_images, tr_labels), truths(shuffled))
    result = evaluate([c._asdict() for c in te_conds], 
                      clf.predict_features(clf.features(te_images, te_labels)))
    assert result["time_of_day"]["accuracy"] < 0.7


def test_heuristic_json_round_trip_and_stale_fit(tmp_path, frames):
    (images, labels_, conds), _ = frames
    clf = HeuristicClassifier(sky_id=SKY)
    clf.fit_features(clf.features(images, labels_), truths(conds))
    path = clf.save(tmp_path)
    loaded = HeuristicClassifier(sky_id=SKY)
    loaded.load(path, "classify.heuristic.model")
    x = clf.features(images[:6], labels_[:6])
    assert loaded.predict_features(loaded.features(images[:6], labels_[:6])) == clf.predict_features(x)
    model = json.loads(path.read_text())
    model["features"] = model["features"][:-1]
    path.write_text(json.dumps(model))
    with pytest.raises(UserError, match="classify.heuristic.model"):
        loaded.load(path, "classify.heuristic.model")
    with pytest.raises(UserError, match="classify.heuristic.model"):
        loaded.load(tmp_path / "missing.json", "classify.heuristic.model")


def test_one_known_class_is_predicted_and_unknown_factor_is_none(frames):
    (images, labels_, conds), _ = frames
    clf = HeuristicClassifier(sky_id=SKY)
    clf.fit_features(clf.features(images, labels_),
                     {"weather": ["clear"] * len(images), "time_of_day": [None] * len(images)})
    preds = clf.predict_features(clf.features(images[:3], labels_[:3]))
    assert [p["weather"] for p in preds] == ["clear"] * 3
    assert [p["time_of_day"] for p in preds] == [None] * 3


def test_cross_validation_holds_out_every_frame_once(frames):
    (images, labels_, conds), _ = frames
    clf = HeuristicClassifier(sky_id=SKY)
    x = clf.features(images, labels_)
    preds = cross_validate(clf, x, truths(conds), folds=4)
    assert len(preds) == len(images) and all(p["weather"] in FACTORS["weather"] for p in preds)


def test_resolve_and_frame_conditions(tmp_path):
    known = {"id": "a", "weather": "rain", "time_of_day": "night"}
    unknown = {"id": "b", "weather": None, "time_of_day": None}
    pred = {"a": {"id": "a", "weather": "fog", "time_of_day": "day"},
            "b": {"id": "b", "weather": "cloudy", "time_of_day": "dusk"}}
    path = tmp_path / "conditions.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pred.values()))
    assert frame_conditions([known, unknown], path, "auto") == {
        "a": Condition("rain", "night"), "b": Condition("cloudy", "dusk")}
    assert frame_conditions([known], path, "predicted") == {"a": Condition("fog", "day")}
    assert resolve(known, pred["a"], "auto")[1] == "truth"
    assert resolve(unknown, pred["b"], "auto")[1] == "predicted"
    assert resolve({"id": "c", "weather": "rain", "time_of_day": None}, pred["a"], "auto")[1] == "mixed"
    with pytest.raises(UserError, match="classify.use"):
        frame_conditions([unknown], path, "truth")
    with pytest.raises(UserError, match="classify"):
        frame_conditions([{"id": "zzz"}], path, "auto")


def test_classify_stage_heuristic_end_to_end(workdir, capsys):
    write_rendered_dataset(workdir.path / "data" / "raw", {"train": 36, "test": 12})
    workdir.run("classify", {"classify": {"use": "auto", "heuristic": {"cv_folds": 2}}}, in_process=True)
    rows = [json.loads(line) for line in (workdir.path / "data/conditions.jsonl").read_text().splitlines()]
    assert len(rows) == 48 and {r["use"] for r in rows} == {"auto"}
    assert all(abs(sum(r["scores"]["weather"].values()) - 1) < 1e-3 for r in rows)
    assert all(r["condition"] == f"{r['truth']['weather']}-{r['truth']['time_of_day']}" for r in rows)
    metrics = json.loads((workdir.path / "metrics/classify.json").read_text())
    assert metrics["backend"] == "heuristic" and metrics["use"] == "auto"
    assert set(metrics["splits"]) == {"train", "train_cv", "test"}
    assert metrics["splits"]["test"]["time_of_day"]["accuracy"] >= 0.8
    assert (workdir.path / "metrics/classify_confusion.png").stat().st_size > 1000
    assert json.loads((workdir.path / "models/classify/heuristic.json").read_text())["factors"]
    assert "test.time_of_day_accuracy" in capsys.readouterr().out


def test_classify_stage_clip_end_to_end_with_tiny_clip(workdir, tmp_path):
    model = build_tiny_clip(tmp_path / "clip")
    write_rendered_dataset(workdir.path / "data" / "raw", {"train": 5, "test": 7},
                           unknown_split="train")
    workdir.run("classify",
                {"classify": {"backend": "clip", "use": "auto",
                              "clip": {"model_dir": str(model), "batch_size": 4}}}, in_process=True)
    rows = [json.loads(line) for line in (workdir.path / "data/conditions.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {r["backend"] for r in rows} == {"clip"}
    for r in rows:
        for factor, options in FACTORS.items():
            assert set(r["scores"][factor]) == set(options)
            assert abs(sum(r["scores"][factor].values()) - 1) < 1e-3
            assert r[factor] == max(r["scores"][factor], key=r["scores"][factor].get)
    # train frames have no truth: their condition is the prediction; test frames keep the truth
    train = [r for r in rows if r["split"] == "train"]
    assert all(r["condition_from"] == "predicted" and r["truth"] is None for r in train)
    assert all(r["condition"] == f"{r['weather']}-{r['time_of_day']}" for r in train)
    metrics = json.loads((workdir.path / "metrics/classify.json").read_text())
    assert set(metrics["splits"]) == {"test"} and metrics["backend"] == "clip"
    saved = json.loads((workdir.path / "models/classify/clip.json").read_text())
    assert saved["model_dir"] == str(model) and set(saved["prompts"]) == set(FACTORS)


def test_every_backend_implements_the_one_interface():
    """The stage, the cross-validation, the benchmarks and these tests call features,
    predict_features and save on every backend, fit_features and clone on those that need a fit;
    there is no second way in (no fit(images) / predict(images))."""
    from synthdrive.classify.base import Classifier
    from synthdrive.classify.clip import ClipClassifier
    from synthdrive.classify.probe import ProbeClassifier

    for cls in (HeuristicClassifier, ProbeClassifier, ClipClassifier):
        assert issubclass(cls, Classifier), cls
        for method in ("features", "predict_features", "save"):
            assert getattr(cls, method) is not getattr(Classifier, method), (cls, method)
        assert not hasattr(cls, "fit") and not hasattr(cls, "predict"), cls
    for cls in (HeuristicClassifier, ProbeClassifier):
        assert cls.needs_fit and cls.fit_features is not Classifier.fit_features and cls.clone is not Classifier.clone
    assert not ClipClassifier.needs_fit


def test_missing_clip_dir_names_the_param(tmp_path):
    assert_factory_names_params(make_classifier, "classify", "clip", "model_dir", "siglip", tmp_path)


# slow: all of real CamVid; test_classify_stage_heuristic_end_to_end runs the same stage path by default
@pytest.mark.slow
def test_camvid_day_dusk_cross_validated(workdir, camvid):
    """The issue's goal on real frames: CamVid day/dusk >= 90 % (blocked CV on train; val is all day)."""
    workdir.run("collect", {"collect": {
        "source": "folder", "folder": {"path": str(camvid), "layout": "split_dirs"}}}, in_process=True)
    workdir.run("classify", {"classify": {"backend": "heuristic"}}, in_process=True)
    metrics = json.loads((workdir.path / "metrics/classify.json").read_text())
    cv = metrics["splits"]["train_cv"]["time_of_day"]
    assert cv["accuracy"] >= 0.9, cv
    dusk = cv["classes"].index("dusk")
    assert cv["confusion"][dusk][dusk] >= 0.9 * sum(cv["confusion"][dusk])  # not "always day"
    assert metrics["splits"]["val"]["time_of_day"]["accuracy"] >= 0.9


# --- effnet backend: linear probes on EfficientNet-Lite ImageNet features ---------------------

def probe(**kw):
    from synthdrive.classify.probe import ProbeClassifier

    return ProbeClassifier(size=(64, 128), sky_id=SKY, **kw)


@pytest.fixture(scope="module")
def probe_features(frames):
    """The probe and the features of the module's rendered frames, computed once."""
    (tr_images, tr_labels, _), (te_images, te_labels, _) = frames
    clf = probe()
    return clf, clf.features(tr_images, tr_labels), clf.features(te_images, te_labels)


def test_effnet_probe_tells_conditions_apart_on_unseen_rendered_frames(frames, probe_features):
    (_, _, tr_conds), (_, _, te_conds) = frames
    clf, x_tr, x_te = probe_features
    assert x_tr.shape == (len(tr_conds), 1280)
    clf.fit_features(x_tr, truths(tr_conds))
    result = evaluate([c._asdict() for c in te_conds], clf.predict_features(x_te))
    assert result["time_of_day"]["accuracy"] >= 0.9, result["time_of_day"]
    # weather from these features is weak on 48 tiny frames (0.36 measured; 62.5 % on the default
    # data against the heuristic's 85 %): only its shape is checked here
    assert np.array(result["weather"]["confusion"]).sum() == len(te_conds)


def test_effnet_probe_fit_on_shuffled_truth_is_near_chance(frames, probe_features):
    (_, _, tr_conds), (_, _, te_conds) = frames
    clf, x_tr, x_te = probe_features
    shuffled = [tr_conds[i] for i in np.random.default_rng(0).permutation(len(tr_conds))]
    clf = clf.clone()
    clf.fit_features(x_tr, truths(shuffled))
    result = evaluate([c._asdict() for c in te_conds], clf.predict_features(x_te))
    assert result["time_of_day"]["accuracy"] < 0.7


def test_effnet_domain_standardisation_undoes_a_feature_shift(frames, probe_features):
    """standardise: domain z-scores the classified frames by their own statistics, so a shift
    and rescaling of every feature (a domain gap of the simplest kind) changes no prediction."""
    (_, _, tr_conds), _ = frames
    _, x_tr, _ = probe_features
    shifted = x_tr * 1.7 + 3.0
    plain, domain = probe(), probe(standardise="domain")
    for clf in (plain, domain):
        clf.fit_features(x_tr, truths(tr_conds))
    tod = lambda clf, x: [p["time_of_day"] for p in clf.predict_features(x)]  # noqa: E731
    assert tod(domain, shifted) == tod(domain, x_tr)
    assert tod(plain, shifted) != tod(plain, x_tr)
    with pytest.raises(UserError, match="classify.effnet.standardise"):
        probe(standardise="target")


def test_effnet_json_round_trip_and_stale_fit(tmp_path, frames, probe_features):
    (images, labels_, conds), _ = frames
    clf, x_tr, _ = probe_features
    clf = clf.clone()
    clf.fit_features(x_tr, truths(conds))
    path = clf.save(tmp_path)
    assert path.name == "effnet.json"
    model = json.loads(path.read_text())
    assert model["extractor"]["weights"] == "imagenet" and model["extractor"]["layer"] == "head"
    loaded = probe()
    loaded.load(path, "classify.effnet.model")
    assert loaded.predict_features(loaded.features(images[:4], labels_[:4])) == clf.predict_features(x_tr[:4])
    with pytest.raises(UserError, match="classify.effnet.model"):
        probe(layer="stages").load(path, "classify.effnet.model")  # other features: refit
    with pytest.raises(UserError, match="classify.effnet.model"):
        probe(pretrained=False).load(path, "classify.effnet.model")


def test_classify_stage_effnet_end_to_end(workdir, capsys):
    write_rendered_dataset(workdir.path / "data" / "raw", {"train": 36, "test": 12})
    workdir.run("classify",
                {"classify": {"backend": "effnet", "use": "predicted",
                              "effnet": {"cv_folds": 2, "height": 64, "width": 128, "image_stats": True}}},
                in_process=True)
    rows = [json.loads(line) for line in (workdir.path / "data/conditions.jsonl").read_text().splitlines()]
    assert len(rows) == 48 and {r["backend"] for r in rows} == {"effnet"}
    for r in rows:
        for factor, options in FACTORS.items():
            assert set(r["scores"][factor]) == set(options)
            assert r[factor] == max(r["scores"][factor], key=r["scores"][factor].get)
        assert r["condition"] == f"{r['weather']}-{r['time_of_day']}" and r["condition_from"] == "predicted"
    metrics = json.loads((workdir.path / "metrics/classify.json").read_text())
    assert metrics["backend"] == "effnet" and set(metrics["splits"]) == {"train", "train_cv", "test"}
    assert metrics["splits"]["test"]["time_of_day"]["accuracy"] >= 0.75
    model = json.loads((workdir.path / "models/classify/effnet.json").read_text())
    assert len(model["features"]) == 1280 + 36 and model["extractor"]["image_stats"] is True
    assert not (workdir.path / "models/classify/heuristic.json").exists()
