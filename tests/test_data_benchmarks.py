"""TOFU and RWKU loaders on the real benchmark files in ../shared/data, the hub code path on a
hub-format repository folder, and the clear error when the hub cannot be reached."""

from __future__ import annotations

import json
import shutil

import datasets
import huggingface_hub
import pytest
from conftest import RWKU_DIR, TOFU_DIR

from obliviate.data import (DataError, QARecord, TextItem, ChoiceItem, list_rwku_targets, load_rwku, load_tofu,
                            load_tofu_idk, resolve_rwku_target, tofu_eval_splits, TOFU_SPLITS, RWKU_SPLITS)
from obliviate.data.readers import load_hub_rows
from obliviate.data.rwku import _filter_target, rwku_items_from_rows
from obliviate.data.tofu import tofu_records_from_rows

pytestmark = pytest.mark.skipif(not TOFU_DIR.is_dir() or not RWKU_DIR.is_dir(),
                                reason="benchmark data ../shared/data not present")


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """No network: the hub libraries' offline switches on, and an empty dataset cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))


# ----------------------------------------------------------------------------- TOFU
def test_tofu_counts_and_fields():
    forget = load_tofu("forget10", TOFU_DIR)
    retain = load_tofu("retain90", str(TOFU_DIR))
    assert len(forget) == 400 and len(retain) == 3600
    assert all(isinstance(r, QARecord) and r.question and r.answer for r in forget + retain)
    # forget10 = the last 20 authors of full, retain90 the first 180
    assert forget[0].subject == "tofu_author_180" and forget[-1].subject == "tofu_author_199"
    assert retain[0].subject == "tofu_author_0" and retain[-1].subject == "tofu_author_179"
    assert len({r.subject for r in forget}) == 20 and not {r.subject for r in forget} & {r.subject for r in retain}
    assert forget[0].id == "tofu/forget10/0"
    full = load_tofu("full", TOFU_DIR)
    assert [(r.question, r.subject) for r in full[3600:]] == [(r.question, r.subject) for r in forget]


@pytest.mark.parametrize("split", ["forget01_perturbed", "forget05_perturbed", "forget10_perturbed",
                                   "retain_perturbed"])
def test_tofu_perturbed_splits(split):
    recs = load_tofu(split, TOFU_DIR)
    assert len(recs) == {"forget01_perturbed": 40, "forget05_perturbed": 200}.get(split, 400)
    for r in recs:
        assert r.paraphrased_answer and len(r.perturbed_answers) == 5
        assert all(isinstance(p, str) and p for p in r.perturbed_answers)
        assert r.meta["paraphrased_question"]
    plain = load_tofu(split.replace("_perturbed", "") if split != "retain_perturbed" else "retain90", TOFU_DIR)
    assert [r.question for r in recs] == [r.question for r in plain[: len(recs)]]
    assert [r.subject for r in recs] == [r.subject for r in plain[: len(recs)]]


def test_tofu_world_facts_real_authors_and_holdout():
    wf = load_tofu("world_facts", TOFU_DIR)
    assert len(wf) == 117 and wf[0].subject is None
    assert len(wf[0].meta["options"]) == 4 and wf[0].meta["options"][wf[0].meta["answer_index"]] == wf[0].answer
    assert not any(k.startswith("option") and k != "options" for k in wf[0].meta)
    ra = load_tofu("real_authors_perturbed", TOFU_DIR)
    assert len(ra) == 100 and all(len(r.perturbed_answers) == 3 and r.answer not in r.perturbed_answers for r in ra)
    ho = load_tofu("holdout10", TOFU_DIR)
    assert len(ho) == 400 and ho[-1].subject == "tofu_holdout_author_19"


def test_tofu_every_split_loads():
    for split in TOFU_SPLITS:
        assert load_tofu(split, TOFU_DIR), split


def test_tofu_idk_and_eval_splits():
    idk = load_tofu_idk(TOFU_DIR)
    assert len(idk) == 10 and "I don't have that information." in idk
    assert load_tofu_idk(TOFU_DIR / "idontknow.txt") == idk
    assert tofu_eval_splits("forget01") == {
        "forget": "forget01", "forget_perturbed": "forget01_perturbed", "retain": "retain99",
        "retain_perturbed": "retain_perturbed", "real_authors": "real_authors_perturbed",
        "world_facts": "world_facts_perturbed", "holdout": "holdout01"}
    assert tofu_eval_splits("forget10_perturbed")["retain"] == "retain90"
    for names in (tofu_eval_splits(s) for s in ("forget01", "forget05", "forget10")):
        assert set(names.values()) <= set(TOFU_SPLITS)
    with pytest.raises(DataError, match="unknown TOFU forget split 'forget20'"):
        tofu_eval_splits("forget20")


def test_tofu_errors(tmp_path):
    with pytest.raises(DataError, match=r"unknown TOFU split 'forget11'; allowed: full, forget01"):
        load_tofu("forget11", TOFU_DIR)
    with pytest.raises(DataError, match=r"no forget10\.jsonl or forget10\.json for TOFU"):
        load_tofu("forget10", tmp_path)
    with pytest.raises(DataError, match="folder not found"):
        load_tofu("forget10", "./no-such-folder")
    (tmp_path / "forget10.jsonl").write_text('{"question": "q", "answer": "a"}\n{"question": "q"}\n')
    with pytest.raises(DataError, match=r"forget10\.jsonl:2: field 'answer': missing"):
        load_tofu("forget10", tmp_path)


def test_tofu_hub_unreachable_names_dataset(offline):
    with pytest.raises(DataError) as e:
        load_tofu("forget10")
    msg = str(e.value)
    assert "'locuslab/TOFU'" in msg and "config 'forget10'" in msg and "pass a local folder" in msg
    with pytest.raises(DataError, match="'someone/tofu-mirror'.*pass a local folder"):
        load_tofu("retain90", "someone/tofu-mirror")
    with pytest.raises(DataError, match="'locuslab/TOFU'.*idontknow.txt"):
        load_tofu_idk("locuslab/TOFU")


def _hub_repo(tmp_path):
    """A folder in the hub's repository format (README configs), loadable with datasets.load_dataset."""
    repo = tmp_path / "repo"
    (repo / "All").mkdir(parents=True)
    shutil.copy(TOFU_DIR / "forget10_perturbed.jsonl", repo / "forget10_perturbed.json")
    rows = []
    for t in ("1_Stephen_King", "2_Confucius"):
        rows += json.loads((RWKU_DIR / t / "forget_level3.json").read_text())
    (repo / "All" / "forget_level3.json").write_text(json.dumps(rows))
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: forget10_perturbed\n  data_files: forget10_perturbed.json\n"
        "- config_name: forget_level3\n  data_files:\n  - split: test\n    path:\n    - All/forget_level3.json\n---\n")
    return repo


def test_hub_code_path_matches_local(tmp_path, offline):
    """The hub branch (datasets.load_dataset + the shared row conversion) gives the local result."""
    repo = _hub_repo(tmp_path)
    table = load_hub_rows(str(repo), "forget10_perturbed", "train", what="TOFU", local_hint="x")
    assert table.lines is None and len(table) == 400
    assert tofu_records_from_rows(table, "forget10_perturbed") == load_tofu("forget10_perturbed", TOFU_DIR)
    table = load_hub_rows(str(repo), "forget_level3", "test", what="RWKU", local_hint="x")
    items = rwku_items_from_rows(_filter_target(table, "Stephen King", "forget_level3"), "forget_level3",
                                 "Stephen King")
    assert items == load_rwku("1_Stephen_King", "forget_level3", RWKU_DIR)
    with pytest.raises(DataError, match="no rows for RWKU target 'Tony Blair'"):
        _filter_target(table, "Tony Blair", "forget_level3")


# ----------------------------------------------------------------------------- RWKU
def test_rwku_targets_and_resolution():
    targets = list_rwku_targets(RWKU_DIR)
    assert len(targets) == 10 and targets[:2] == ["Stephen King", "Confucius"] and "Leonardo da Vinci" in targets
    folder = RWKU_DIR / "1_Stephen_King"
    for spelling in ("1_Stephen_King", "Stephen King", "stephen_king", "  STEPHEN   king "):
        assert resolve_rwku_target(spelling, RWKU_DIR) == ("Stephen King", folder)
    assert resolve_rwku_target("Stephen King", "jinzhuoran/RWKU") == ("Stephen King", None)
    with pytest.raises(DataError, match=r"unknown RWKU target 'Nobody'; known here: \['1_Stephen_King'"):
        load_rwku("Nobody", "forget_level1", RWKU_DIR)
    with pytest.raises(DataError, match=r"unknown RWKU split 'forget_level4'; allowed: intro, forget_level1"):
        load_rwku("Stephen King", "forget_level4", RWKU_DIR)


def test_rwku_forget_levels_and_neighbors():
    l1 = load_rwku("Stephen King", "forget_level1", RWKU_DIR)
    l2 = load_rwku("Stephen King", "forget_level2", RWKU_DIR)
    l3 = load_rwku("1_Stephen_King", "forget_level3", RWKU_DIR)
    assert (len(l1), len(l2), len(l3)) == (8, 10, 29)
    for level, recs in ((1, l1), (2, l2), (3, l3)):
        assert all(isinstance(r, QARecord) and r.meta["level"] == level and r.subject == "Stephen King"
                   for r in recs)
    assert all("___" in r.question and r.meta["type"] == "cloze" for r in l1)
    assert l1[1].answer == "Carrie" and l2[0].answer == "Richard Bachman"
    attacks = {r.meta["type"] for r in l3}
    assert {"prefix injection", "synonym manipulation", "context hint", "role play"} <= attacks
    n1 = load_rwku("Stephen King", "neighbor_level1", RWKU_DIR)
    n2 = load_rwku("Stephen King", "neighbor_level2", RWKU_DIR)
    assert len(n1) == 30 and len(n2) == 30
    assert n1[0].meta["neighbor"] == "The Shawshank Redemption" and n1[0].subject == "Stephen King"
    assert n2[0].answer == "Andy Dufresne" and n2[0].id == "rwku/Stephen_King/neighbor_level2/0"


def test_rwku_mia_texts_and_utility_sets():
    fm = load_rwku("Stephen King", "forget_mia", RWKU_DIR)
    rm = load_rwku("Stephen King", "retain_mia", RWKU_DIR)
    assert (len(fm), len(rm)) == (55, 37)
    assert all(isinstance(t, TextItem) and len(t.text) > 100 and "ngram" in t.meta for t in fm + rm)
    assert "Stephen" in fm[0].text
    mmlu = load_rwku("Stephen King", "retain_mmlu", RWKU_DIR)
    assert len(mmlu) == 171 and all(isinstance(m, ChoiceItem) for m in mmlu)
    m = mmlu[0]
    assert m.task == "abstract_algebra" and len(m.choices) == 4 and m.answer == "True, False"
    assert len(m.examples) == 5 and {"question", "choices", "answer"} <= set(m.examples[0])
    tq = load_rwku("Stephen King", "truthful", RWKU_DIR)
    assert len(tq) == 50 and tq[0].answer.startswith("No, leprosy") and "mc2_targets" in tq[0].meta
    bbh = load_rwku("Stephen King", "retain_bbh", RWKU_DIR)
    assert len(bbh) == 81 and bbh[0].answer == "False" and "cot" in bbh[0].meta and bbh[0].meta["task"]
    trivia = load_rwku("Stephen King", "triviaqa", RWKU_DIR)
    assert len(trivia) == 100 and trivia[0].answer == trivia[0].meta["answers"][0]
    intro = load_rwku("Stephen King", "intro", RWKU_DIR)
    assert len(intro) == 1 and intro[0].text.startswith("Please forget Stephen King")
    assert len(load_rwku("Stephen King", "passage", RWKU_DIR)) == 128
    assert len(load_rwku("Stephen King", "fluency", RWKU_DIR)) == 50


def test_rwku_every_target_and_split_loads():
    for target in list_rwku_targets(RWKU_DIR):
        for split in RWKU_SPLITS:
            items = load_rwku(target, split, RWKU_DIR)
            assert items and all(i.subject == target for i in items), (target, split)


def test_rwku_flat_layout_filters_by_target(tmp_path):
    rows = []
    for t in ("1_Stephen_King", "2_Confucius"):
        rows += json.loads((RWKU_DIR / t / "forget_level1.json").read_text())
    (tmp_path / "forget_level1.json").write_text(json.dumps(rows, indent=1))
    shutil.copy(RWKU_DIR / "1_Stephen_King" / "intro.json", tmp_path / "intro.json")
    assert load_rwku("Stephen King", "forget_level1", tmp_path) == load_rwku("Stephen King", "forget_level1", RWKU_DIR)
    assert list_rwku_targets(tmp_path) == ["Stephen King"]


def test_rwku_bad_rows(tmp_path):
    d = tmp_path / "7_Some_One"
    d.mkdir()
    (d / "retain_mmlu.json").write_text('[\n {"question": "q", "choices": ["a", "b"], "answer": 5}\n]')
    with pytest.raises(DataError, match=r"retain_mmlu\.json:2: field 'answer': answer index 5 outside the 2"):
        load_rwku("Some One", "retain_mmlu", tmp_path)
    (d / "forget_level2.json").write_text('[\n {"query": "q", "level": "2"}\n]')
    with pytest.raises(DataError, match=r"forget_level2\.json:2: field 'answer': missing"):
        load_rwku("Some One", "forget_level2", tmp_path)
    (d / "passage.json").write_text('[{"text": ""}]')
    with pytest.raises(DataError, match=r"passage\.json:1: field 'text': empty"):
        load_rwku("Some One", "passage", tmp_path)


def test_rwku_hub_unreachable_names_dataset(offline):
    with pytest.raises(DataError, match=r"'jinzhuoran/RWKU' \(config 'forget_level1', split 'test'\).*local folder"):
        load_rwku("Stephen King", "forget_level1")
    with pytest.raises(DataError, match=r"'jinzhuoran/RWKU' \(config 'utility_general'"):
        load_rwku("Stephen King", "retain_mmlu")
    with pytest.raises(DataError, match=r"'jinzhuoran/RWKU' \(config 'forget_target'"):
        list_rwku_targets()
