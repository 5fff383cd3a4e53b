"""prepare-data through the CLI: each source, the split, and bad input failing with nothing written."""

import json
from pathlib import Path

import pytest

from conftest import read_jsonl, run_looper
from looper.answers import is_correct

SHARED_GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"

GSM8K_ROWS = [
    {
        "question": f"Tom has {i} apples and buys 2 more. How many?",
        "answer": f"{i} + 2 = <<{i}+2={i + 2}>>{i + 2}\n#### {i + 2:,}",
    }
    for i in range(998, 1010)
]


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_local_folder_source(tmp_path):
    write_jsonl(tmp_path / "src" / "train.jsonl", GSM8K_ROWS[:10])
    write_jsonl(tmp_path / "src" / "test.jsonl", GSM8K_ROWS[10:])
    run_looper(
        "prepare-data",
        "configs/demo.yaml",
        f"runs_dir={tmp_path}/runs",
        "data.source=local",
        f"data.path={tmp_path}/src",
        cwd=Path(__file__).resolve().parents[1],
    )
    data = tmp_path / "runs" / "demo" / "data"
    train, dev, test = (read_jsonl(data / f"gsm8k_{s}.jsonl") for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (8, 2, 2)  # 80/20
    assert {r["id"] for r in train}.isdisjoint({r["id"] for r in dev})
    for record in train + dev + test:
        assert set(record) >= {"id", "question", "answer", "gold"}
        assert is_correct(record["answer"], record["gold"])
    assert test[0]["gold"] == "1010"  # "1,010" parsed as a number
    info = json.loads((data / "prepare_data.json").read_text())
    assert info["dev_ids"] == [r["id"] for r in dev]  # the split is recorded


def test_split_is_deterministic_and_seeded(tmp_path):
    from looper.baseline_sft.prepare_data import split_train_dev

    records = [{"id": i} for i in range(100)]
    a = split_train_dev(records, 0.2, seed=1)
    assert a == split_train_dev(records, 0.2, seed=1)
    assert a != split_train_dev(records, 0.2, seed=2)
    assert len(a[1]) == 20


def test_gsm_symbolic_source(tmp_path):
    run_looper(
        "prepare-data",
        "configs/demo.yaml",
        f"runs_dir={tmp_path}",
        "data.symbolic_train_size=20",
        "data.symbolic_test_size=5",
        cwd=Path(__file__).resolve().parents[1],
    )
    train = read_jsonl(tmp_path / "demo" / "data" / "gsm_symbolic_train.jsonl")
    test = read_jsonl(tmp_path / "demo" / "data" / "gsm_symbolic_test.jsonl")
    assert not (tmp_path / "demo" / "data" / "gsm8k_train.jsonl").exists()  # files are named for what they hold
    assert len(train) == 16 and len(test) == 5
    assert all(r["answer"].rstrip().splitlines()[-1].startswith("####") for r in train)
    assert not any("Do not include units" in r["question"] for r in train)
    assert {r["question"] for r in train}.isdisjoint({r["question"] for r in test})


def test_platinum_local_keeps_cleaning_status_and_drops_rejected_rows(tmp_path):
    """A local copy of the full Platinum table holds rows its authors rejected (the Hub copy has them removed):
    they are dropped, counted, and the ids of the rest match the Hub copy's numbering."""
    statuses = ["consensus", "rejected", "revised", "REJECTED "]
    rows = [dict(r, cleaning_status=s) for r, s in zip(GSM8K_ROWS, statuses)]
    rows[1]["answer"] = "the authors rejected this row: no marker"  # a rejected row is not validated
    write_jsonl(tmp_path / "plat" / "test.jsonl", rows)
    proc = run_looper(
        "prepare-data",
        "configs/demo.yaml",
        f"runs_dir={tmp_path}",
        "data.symbolic_train_size=10",
        "data.symbolic_test_size=2",
        "data.platinum.source=local",
        f"data.platinum.path={tmp_path}/plat",
        cwd=Path(__file__).resolve().parents[1],
    )
    plat = read_jsonl(tmp_path / "demo" / "data" / "gsm8k_platinum_test.jsonl")
    assert [r["cleaning_status"] for r in plat] == ["consensus", "revised"]
    assert [r["question"] for r in plat] == [GSM8K_ROWS[0]["question"].strip(), GSM8K_ROWS[2]["question"].strip()]
    assert [r["id"] for r in plat] == ["gsm8k_platinum-test-00000", "gsm8k_platinum-test-00001"]
    assert "2 rows marked cleaning_status=rejected dropped, 2 kept" in proc.stdout


@pytest.mark.parametrize(
    "bad_line,message",
    [
        ('{"question": "q"', "train.jsonl:3: not valid JSON"),
        ('{"question": "q"}', "train.jsonl:3: missing field 'answer'"),
        ('{"question": "q", "answer": "no marker"}', "train.jsonl:3: field 'answer' has no parseable"),
        ('{"question": "", "answer": "#### 1"}', "train.jsonl:3: field 'question' must be a non-empty string"),
    ],
)
@pytest.mark.long
def test_bad_input_fails_naming_file_line_field(tmp_path, bad_line, message):
    src = tmp_path / "src"
    write_jsonl(src / "train.jsonl", GSM8K_ROWS[:2])
    with (src / "train.jsonl").open("a") as f:
        f.write(bad_line + "\n")
    write_jsonl(src / "test.jsonl", GSM8K_ROWS[:2])
    proc = run_looper(
        "prepare-data",
        "configs/demo.yaml",
        f"runs_dir={tmp_path}/runs",
        "data.source=local",
        f"data.path={src}",
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_empty_source_is_an_error(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.jsonl").write_text("")
    write_jsonl(tmp_path / "src" / "test.jsonl", GSM8K_ROWS[:2])
    proc = run_looper(
        "prepare-data",
        "configs/demo.yaml",
        f"runs_dir={tmp_path}/runs",
        "data.source=local",
        f"data.path={tmp_path}/src",
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    assert proc.returncode != 0 and "holds no rows" in proc.stderr


@pytest.mark.skipif(not SHARED_GSM8K.is_dir(), reason="real GSM8K copy not present")
def test_real_gsm8k_local(tmp_path):
    run_looper(
        "prepare-data",
        "configs/demo.yaml",
        f"runs_dir={tmp_path}",
        "data.source=local",
        f"data.path={SHARED_GSM8K}",
        cwd=Path(__file__).resolve().parents[1],
    )
    counts = json.loads((tmp_path / "demo" / "data" / "prepare_data.json").read_text())["counts"]
    assert counts == {"gsm8k_train": 5978, "gsm8k_dev": 1495, "gsm8k_test": 1319}
