"""The recipe card beside the paper recipe: a deviation is marked exactly where a run's value differs from its job
Config's default (the paper's; expected defaults written out below from the Configs' sources), None shows as None,
and run_metadata.json, the report index and summary.md hold a card per table."""
import json
import re

from vlpt_lib.jobs import finetune, pretrain, prompt
from vlpt_lib.workbook import metadata, paths, recipe, report

DEVIATES = recipe.DEVIATES


def _deviating(card):
    return set(card.index[card["deviates"] != ""])


def test_a_deviation_is_marked_exactly_where_a_value_differs_from_the_config_default():
    # pretrain.py: Optim.epochs Field(300), Student.drop_path Field(0.0), Mask.ratio Field(0.3827)
    run = pretrain.Config.model_validate({"optim": {"epochs": 2}, "student": {"drop_path": 0.1},
                                          "mask": {"ratio": 0.3827}, "data": {"root": "/data", "max_images": 64}})
    card = recipe.paper_card({"clip": run})
    assert list(card.columns) == ["clip", "paper", "deviates", "source"]
    assert _deviating(card) == {"optim.epochs", "student.drop_path"}  # ratio set to its default: no deviation
    assert card.loc["optim.epochs"].tolist()[:3] == ["2", "300", DEVIATES]
    assert card.loc["student.drop_path", "paper"] == "0" and card.loc["mask.ratio", "paper"] == "0.3827"
    # workbook parameters (data root, image cap) are the notebook's to set: no paper value, never a deviation
    assert card.loc["data.root", "paper"] == "" and card.loc["data.max_images", "deviates"] == ""
    # every other row: the run's value is the paper's
    same = card[(card["deviates"] == "") & (card["paper"] != "")]
    assert len(same) > 20 and (same["clip"] == same["paper"]).all()


def test_labels_name_their_own_deviations_and_the_column_key_is_not_one():
    runs = {"clip": pretrain.Config.model_validate({"target": "clip", "optim": {"epochs": 2}}),
            "pixel": pretrain.Config.model_validate({"target": "pixel"})}
    card = recipe.paper_card(runs)
    assert _deviating(card) == {"optim.epochs"} and card.loc["optim.epochs", "deviates"] == f"{DEVIATES}: clip"
    assert card.loc["target", "paper"] == ""  # the pixel baseline's target defines its column, no deviation


def test_prompt_methods_are_compared_with_their_own_recipes():
    def cfg(method, **diff):
        return prompt.Config.model_validate({"method": method, "data_root": "/data", "dataset": "ImageNet", **diff})
    # CoOp: 50 epochs on ImageNet (vit_b16_ep50_ctxv1.yaml), CoCoOp: 10 (vit_b16_c4_ep10_batch1_ctxv1.yaml)
    card = recipe.paper_card({"CoOp": cfg("CoOp"), "CoCoOp": cfg("CoCoOp", epochs=2), "CLIP": cfg("CLIP")})
    assert card.loc["epochs", "paper"] == "CoOp: 50; CoCoOp: 10"
    assert card.loc["epochs", "deviates"] == f"{DEVIATES}: CoCoOp" and card.loc["epochs", "CLIP"] == ""  # no key
    assert _deviating(card) == {"epochs"}


def test_none_shows_as_none():
    card = recipe.recipe_card(finetune.Config())
    assert card.loc["init.checkpoint", "value"] == "None" and card.loc["optim.clip_grad", "value"] == "None"
    assert recipe.paper_card(finetune.Config()).loc["optim.clip_grad", "paper"] == "None"


def _run(profile, name, job, cfg):
    run_dir = paths.runs_dir(profile) / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"job": job, "cfg": cfg}))
    return {"run_dir": f"/elsewhere/runs/{name}", "result": "x"}  # a moved results folder: found by its name


def _record(profile, notebook, runs):
    paths.executed_dir(profile).mkdir(parents=True, exist_ok=True)
    (paths.executed_dir(profile) / f"{notebook}.run.json").write_text(json.dumps({"status": "ok", "runs": runs}))


def test_run_metadata_holds_a_card_per_table_and_the_report_shows_it(results_root, tmp_path):
    p = "mini"
    _record(p, "10_mvp_pretrain", [_run(p, "clip_train-a", "clip_train", {}),  # no paper recipe: left out
                                   _run(p, "pretrain-a", "pretrain", {"target": "clip", "optim": {"epochs": 2}}),
                                   _run(p, "pretrain-b", "pretrain", {"target": "pixel", "optim": {"epochs": 2}})])
    _record(p, "11_imagenet_finetune", [_run(p, f"finetune-{seed}", "finetune", {"method": "MVP", "seed": seed,
                                                                                 "optim": {"epochs": 2}})
                                        for seed in (1, 0)])
    meta = json.loads(metadata.write_run_metadata(p).read_text())
    cards = meta["recipes"]
    assert set(cards) == {"imagenet_finetune", "ade20k_segmentation"}  # notebook 10 is upstream of both
    assert list(cards["imagenet_finetune"]) == ["pretrain", "finetune"]
    rows = {r["key"]: r for r in cards["imagenet_finetune"]["finetune"]}
    # the first seed's config; finetune.py Optim.epochs Field(100)
    assert rows["optim.epochs"] == {"key": "optim.epochs", "values": {"MVP": "2"}, "paper": "100",
                                    "deviates": DEVIATES, "source": rows["optim.epochs"]["source"]}
    assert rows["optim.epochs"]["source"].startswith("beit2 get_started")
    assert rows["init.checkpoint"]["values"] == {"MVP": "None"} and rows["seed"]["values"] == {"MVP": "0"}
    assert list(cards["ade20k_segmentation"]) == ["pretrain"]
    pre = {r["key"]: r for r in cards["ade20k_segmentation"]["pretrain"]}
    assert pre["optim.epochs"]["values"] == {"clip": "2", "pixel": "2"} and pre["optim.epochs"]["paper"] == "300"

    index = report.render_report(p)
    page, summary = index.read_text(), (results_root / p / "summary.md").read_text()
    note = report.deviation_note(p, meta)
    assert note.startswith(f"{DEVIATES}: this run's value differs from the paper recipe") and "CPU" in note
    for text in (page, summary):
        assert "Recipe of the finetune runs (MVP" in text and "Recipe of the pretrain runs (clip, pixel" in text
        assert note.replace("'", "&#39;") in text or note in text
        assert "other values equal the paper recipe" in text
    # compact: only the deviating rows, each once, with its paper value
    frame, line = report.recipe_compact(cards["imagenet_finetune"]["finetune"])
    assert frame["key"].tolist() == ["optim.epochs"] and frame["this run"].tolist() == ["2"]
    equal = sum(1 for r in cards["imagenet_finetune"]["finetune"] if r["paper"] != "" and not r["deviates"])
    assert line.startswith(f"{equal} other values equal the paper recipe")
    assert re.search(r"\| optim\.epochs +\| 2 +\| 100 +\| ≠ paper +\|", summary)
    assert "class='vlpt recipe'" in page  # left-aligned cells and headers


def test_a_label_whose_runs_differ_in_their_recipe_gets_a_column_per_recipe():
    runs = [{"job": "prompt", "cfg": {"method": "CoOp", "data_root": "/d", "dataset": d, "seed": seed}}
            for d in ("Caltech101", "DTD", "ImageNet") for seed in (2, 1)]
    card = metadata.job_cards(runs)["prompt"]
    epochs = {r["key"]: r for r in card}["epochs"]
    assert epochs["values"] == {"CoOp (Caltech101 +1)": "200", "CoOp (ImageNet)": "50"}
    assert epochs["paper"] == "CoOp (Caltech101 +1): 200; CoOp (ImageNet): 50" and epochs["deviates"] == ""
